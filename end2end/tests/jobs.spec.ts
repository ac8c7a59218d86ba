import { test, expect, Page } from '@playwright/test';
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const fixtures = path.resolve(__dirname, '../../runner/fixtures');

async function hydrated(page: Page) {
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached({ timeout: 20_000 });
}

let agent: ChildProcess | undefined;
test.afterEach(() => { agent?.kill('SIGKILL'); });

test('a user uploads a model, runs it, watches it succeed live and downloads the predictions', async ({ page, baseURL }) => {
  // A fresh account.
  const email = `ml-${Date.now()}@e2e.example.org`;
  await page.goto('/register');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', 'a long enough password');
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page).toHaveURL(/\/home$/);

  // A node of their own, with a real agent.
  await page.goto('/nodes');
  await hydrated(page);
  await page.fill('#node-name', 'e2e-worker');
  await page.getByRole('button', { name: 'Add node' }).click();
  const command = await page.getByTestId('agent-command').textContent();
  const token = /--token (\S+)/.exec(command ?? '')?.[1];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aiedge-e2e-agent-'));
  agent = spawn(process.env.AIEDGE_AGENT_BIN!, [
    'run', '--server', baseURL!, '--token', token!, '--name', 'e2e-worker',
    '--work-dir', path.join(dir, 'work'), '--heartbeat-interval', '500ms', '--benchmark-interval', '1h',
  ], { stdio: 'ignore' });

  // Upload the model: the page shows its inputs and outputs.
  await page.goto('/apps');
  await hydrated(page);
  await page.fill('#app-name', 'iris');
  await page.setInputFiles('#app-file', path.join(fixtures, 'iris_logreg.onnx'));
  await page.getByRole('button', { name: 'Upload' }).click();
  await expect(page).toHaveURL(/\/apps\/[0-9a-f-]+$/);
  await expect(page.getByTestId('app-name')).toHaveText('iris');
  await expect(page.getByTestId('model-io')).toContainText('[N, 4]');

  // Run it on a CSV; the job page follows the status live until it succeeded.
  await hydrated(page);
  await page.setInputFiles('#job-input', path.join(fixtures, 'iris.csv'));
  await page.getByRole('button', { name: 'Run' }).click();
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]+$/);
  await hydrated(page);
  await page.evaluate(() => { (window as any).__noReload = true; });
  await expect(page.getByTestId('job-status')).toHaveText('succeeded', { timeout: 30_000 });
  expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);
  await expect(page.getByTestId('timeline')).toContainText('running');
  await expect(page.getByTestId('decision')).toContainText('e2e-worker');
  // One attempt, on that node, succeeded (the live feed brings the row without a reload).
  await expect(page.getByTestId('attempts').locator('tbody tr')).toHaveCount(1);
  await expect(page.getByTestId('attempts')).toContainText('e2e-worker');
  await expect(page.getByTestId('attempts')).toContainText('succeeded');
  await page.screenshot({ path: 'test-results/job-succeeded.png', fullPage: true });

  // Download the CSV and check it against onnxruntime's answers.
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download').click()]);
  expect(download.suggestedFilename()).toMatch(/^iris-[0-9a-f]{8}-predictions\.csv$/);
  const got = fs.readFileSync(await download.path(), 'utf8').trim().split('\n');
  const expected = fs.readFileSync(path.join(fixtures, 'iris_logreg.expected.csv'), 'utf8').trim().split('\n');
  expect(got.length).toBe(expected.length);
  expect(got[0]).toBe('row,label,prob_0,prob_1,prob_2');
  for (let i = 1; i < got.length; i++) {
    const [g, e] = [got[i].split(','), expected[i].split(',')];
    expect(g[1]).toBe(e[1]);
    for (let c = 2; c < g.length; c++) expect(Math.abs(Number(g[c]) - Number(e[c]))).toBeLessThan(1e-5);
  }

  // The jobs list shows it too.
  await page.goto('/jobs');
  await expect(page.getByTestId('jobs')).toContainText('succeeded');
});
