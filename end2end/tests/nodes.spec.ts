import { test, expect, Page } from '@playwright/test';
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADMIN } from '../playwright.config';

async function hydrated(page: Page) {
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached({ timeout: 20_000 });
}

async function logIn(page: Page, email: string, password: string) {
  await page.goto('/login');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL(/\/home$/);
}

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

  await page.screenshot({ path: 'test-results/admin-live-active.png', fullPage: true });
  agent.kill('SIGKILL');
  await expect(row.getByTestId('node-status')).toHaveText('dead', { timeout: 15_000 });
  expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);
});
