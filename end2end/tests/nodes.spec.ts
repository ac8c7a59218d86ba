import { test, expect, Page } from '@playwright/test';
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADMIN } from '../playwright.config';
import { hydrated, logIn } from './session';

let agent: ChildProcess | undefined;
test.afterEach(() => { agent?.kill('SIGKILL'); });

test('an owner adds a node, and an admin watches it go from active to dead live', async ({ page, baseURL }) => {
  await logIn(page, ADMIN.email, ADMIN.password);

  // Add a node from the web app: the one-time command appears.
  await page.goto('/nodes');
  await hydrated(page);
  const name = `e2e-node-${Date.now()}`;
  await page.fill('#node-name', name);
  await page.getByRole('button', { name: 'Add node' }).click();
  // The one line to paste, and the agent's own command behind "Run it by hand".
  await expect(page.getByTestId('install-command')).toContainText(/^curl -fsSL http:\/\/\S+\/install\.sh \| sudo sh -s -- --token aiedge_reg_\S+ --name '/);
  const command = await page.getByTestId('agent-command').textContent();
  expect(command).toContain('node-agent run --server');
  const token = /--token (\S+)/.exec(command ?? '')?.[1];
  expect(token).toBeTruthy();

  // Start the real agent with that token.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aiedge-e2e-agent-'));
  agent = spawn(process.env.AIEDGE_AGENT_BIN!, [
    'run', '--server', baseURL!, '--token', token!, '--name', name,
    '--state-file', path.join(dir, 'state.json'), '--work-dir', path.join(dir, 'work'),
    '--heartbeat-interval', '500ms', '--benchmark-interval', '1h',
  ], { stdio: 'ignore' });

  await page.goto('/admin');
  await hydrated(page);
  // Mark this page; a reload would lose the mark.
  await page.evaluate(() => { (window as any).__noReload = true; });
  const row = page.locator(`tr[data-node="${name}"]`);
  await expect(row.getByTestId('node-status')).toHaveText('active', { timeout: 20_000 });
  await expect(row).toContainText('cores');
  // Live updates rebuild the whole row, its charts and admin buttons too (a release build once
  // lost them after the first update).
  await expect(row.locator('svg.spark')).toHaveCount(4);
  await expect(row.getByRole('button', { name: 'Disable' })).toBeVisible();
  await expect(row.getByTestId('node-status')).toHaveText('active');

  await page.screenshot({ path: 'test-results/admin-live-active.png', fullPage: true });
  agent.kill('SIGKILL');
  await expect(row.getByTestId('node-status')).toHaveText('dead', { timeout: 15_000 });
  expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);

  // The node's page, from its row: facts, charts, and the death at the top of the timeline.
  await row.getByTestId('node-link').click();
  await expect(page).toHaveURL(/\/nodes\/[0-9a-f-]+$/);
  await expect(page.getByRole('heading', { level: 1 })).toContainText(name);
  await expect(page.getByTestId('node-status')).toHaveText('dead');
  await expect(page.getByTestId('node-facts')).toContainText('cores');
  await expect(page.getByTestId('node-charts').locator('figure')).toHaveCount(4);
  const transitions = page.getByTestId('transitions').locator('li');
  await expect(transitions.first()).toHaveAttribute('data-to', 'dead');
  await expect(transitions.first()).toContainText('no heartbeat for 3 s');
  await expect(transitions.nth(1)).toHaveAttribute('data-from', 'waiting');

  // Back to life, live on this page: a new agent process with the same state file.
  await page.evaluate(() => { (window as any).__noReload = true; });
  agent = spawn(process.env.AIEDGE_AGENT_BIN!, [
    'run', '--server', baseURL!,
    '--state-file', path.join(dir, 'state.json'), '--work-dir', path.join(dir, 'work'),
    '--heartbeat-interval', '500ms', '--benchmark-interval', '1h',
  ], { stdio: 'ignore' });
  await expect(transitions.first()).toHaveAttribute('data-to', 'active', { timeout: 20_000 });
  await expect(transitions.first()).toContainText('heartbeats resumed');
  await expect(page.getByTestId('node-status')).toHaveText('active');
  expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);

  // Another window, by link: the 24-hour charts.
  await page.getByRole('link', { name: '24 h' }).click();
  await expect(page).toHaveURL(/window=24h$/);
  await expect(page.getByRole('link', { name: '24 h' })).toHaveAttribute('aria-current', 'page');
  await expect(page.getByTestId('node-charts').locator('figure')).toHaveCount(4);
  await page.screenshot({ path: 'test-results/node-page.png', fullPage: true });
});

test('an owner shares a node with named accounts from its page; an unknown address is refused', async ({ page }) => {
  await logIn(page, ADMIN.email, ADMIN.password);
  await page.goto('/nodes');
  await hydrated(page);
  const name = `e2e-share-${Date.now()}`;
  await page.fill('#node-name', name);
  await page.getByRole('button', { name: 'Add node' }).click();
  await expect(page.getByTestId('install-command')).toBeVisible();
  await page.goto('/nodes');
  await page.getByRole('link', { name, exact: true }).click();
  await hydrated(page);

  const sharing = page.getByTestId('node-sharing');
  await expect(sharing.getByTestId('sharing-now')).toContainText('private');
  await sharing.getByLabel('The jobs of these accounts:').check();
  await sharing.locator('#share-users').fill('nobody@e2e.example.org');
  await sharing.getByRole('button', { name: 'Save sharing' }).click();
  await expect(sharing.getByTestId('form-alert')).toContainText('no account has the address nobody@e2e.example.org');
  await expect(sharing.getByTestId('sharing-now')).toContainText('private');

  await sharing.locator('#share-users').fill(ADMIN.email.toUpperCase());
  await sharing.getByRole('button', { name: 'Save sharing' }).click();
  await expect(sharing.getByTestId('sharing-now')).toHaveText(`shared with ${ADMIN.email}`);
  await page.screenshot({ path: 'test-results/node-sharing.png', fullPage: true });

  // Everyone's: the same form, another choice.
  await sharing.getByLabel("Everyone's jobs").check();
  await sharing.getByRole('button', { name: 'Save sharing' }).click();
  await expect(sharing.getByTestId('sharing-now')).toHaveText('shared with everyone');
});
