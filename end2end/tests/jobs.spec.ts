import { test, expect, Page } from '@playwright/test';
import { spawn, execFileSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADMIN } from '../playwright.config';
import { hydrated, logIn } from './session';

const fixtures = path.resolve(__dirname, '../../runner/fixtures');

const agents = new Map<string, ChildProcess>();
test.afterEach(() => { for (const a of agents.values()) a.kill('SIGKILL'); agents.clear(); });

/** A fresh account, signed in; returns its email. */
async function signUp(page: Page, prefix: string) {
  const email = `${prefix}-${Date.now()}@e2e.example.org`;
  await page.goto('/register');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', 'a long enough password');
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page).toHaveURL(/\/home$/);
  return email;
}

/** A node of the user's own, added in the web app, with a real agent running the shown command. */
async function startAgent(page: Page, baseURL: string, name: string) {
  await page.goto('/nodes');
  await hydrated(page);
  await page.fill('#node-name', name);
  await page.getByRole('button', { name: 'Add node' }).click();
  const command = await page.getByTestId('agent-command').textContent();
  const token = /--token (\S+)/.exec(command ?? '')?.[1];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aiedge-e2e-agent-'));
  // Scripts run as another user when the agent is root: it must be able to pass through.
  fs.chmodSync(dir, 0o711);
  agents.set(name, spawn(process.env.AIEDGE_AGENT_BIN!, [
    'run', '--server', baseURL, '--token', token!, '--name', name,
    '--work-dir', path.join(dir, 'work'), '--heartbeat-interval', '500ms', '--benchmark-interval', '1h',
  ], { stdio: 'ignore' }));
}

test('a user schedules a model, sees the fire times as they type, watches its runs and pauses it', async ({ page, baseURL }) => {
  await signUp(page, 'cron');
  await startAgent(page, baseURL!, 'cron-worker');
  await page.goto('/apps');
  await hydrated(page);
  await page.fill('#app-name', 'iris');
  await page.setInputFiles('#app-file', path.join(fixtures, 'iris_logreg.onnx'));
  await page.setInputFiles('#app-input', path.join(fixtures, 'iris.csv'));
  await page.getByRole('button', { name: 'Upload' }).click();
  await expect(page).toHaveURL(/\/apps\/[0-9a-f-]+$/);

  await page.goto('/schedules');
  await hydrated(page);
  await expect(page.getByTestId('no-schedules')).toBeVisible();
  // A bad expression is explained as it is typed; a good one shows its next fire times in
  // the zone chosen.
  await page.fill('#schedule-cron', '0 2 * *');
  await expect(page.getByTestId('preview-error')).toContainText('5 fields');
  await page.locator('#schedule-zone').fill('Europe/Berlin');
  await page.locator('#schedule-zone').press('Tab');
  await page.fill('#schedule-cron', '*/2 * * * * *');
  const preview = page.getByTestId('schedule-preview');
  await expect(preview.locator('ol li')).toHaveCount(5);
  await expect(preview).toContainText('CET');
  await page.fill('#schedule-name', 'every two seconds');
  await page.selectOption('#schedule-overlap', 'allow');
  await page.screenshot({ path: 'test-results/schedule-form.png', fullPage: true });
  await page.getByRole('button', { name: 'Create schedule' }).click();
  await expect(page).toHaveURL(/\/schedules\/[0-9a-f-]+$/);
  await expect(page.getByTestId('schedule-name')).toContainText('every two seconds');
  await expect(page.getByTestId('schedule-state')).toHaveText('active');
  await expect(page.getByTestId('upcoming').locator('li')).toHaveCount(5);

  // Its runs arrive on the open page, their jobs succeed on the node, and the chart draws them.
  await hydrated(page);
  await expect(page.getByTestId('runs').locator('tr[data-outcome="fired"]').first()).toBeVisible({ timeout: 20_000 });
  await expect(page.getByTestId('runs').getByTestId('job-status').filter({ hasText: 'succeeded' }).first()).toBeVisible({ timeout: 30_000 });
  await expect(page.getByTestId('run-chart')).toBeVisible();
  await page.screenshot({ path: 'test-results/schedule-page.png', fullPage: true });

  // Paused: no next runs, and the list says so.
  await page.getByTestId('pause-resume').click();
  await expect(page.getByTestId('schedule-state')).toHaveText('paused');
  await expect(page.getByTestId('upcoming-none')).toBeVisible();
  await page.goto('/schedules');
  await expect(page.getByTestId('schedules')).toContainText('paused');
});

test('a user uploads a model, runs it, watches it succeed live and downloads the predictions', async ({ page, baseURL, browser }) => {
  const email = await signUp(page, 'ml');
  await startAgent(page, baseURL!, 'e2e-worker');

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
  const jobId = page.url().split('/').pop()!;
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
  // Retention (30 days by default): the page says until when the job and its result are kept.
  await expect(page.getByTestId('kept-until')).toContainText('Kept until');
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
  // Everyone's jobs are for admins only.
  await page.goto('/jobs?scope=all');
  await expect(page.getByTestId('forbidden')).toBeVisible();
  await expect(page.getByTestId('jobs')).toHaveCount(0);

  // An admin, from the dashboard, sees everyone's jobs with their owners and a count per status.
  const adminContext = await browser.newContext({ baseURL });
  const admin = await adminContext.newPage();
  await logIn(admin, ADMIN.email, ADMIN.password);
  await admin.goto('/admin');
  await admin.getByTestId('all-jobs').click();
  await expect(admin).toHaveURL(/\/jobs\?scope=all$/);
  await expect(admin.getByRole('heading', { level: 1 })).toHaveText('All jobs');
  const row = admin.locator(`tr[data-job="${jobId}"]`);
  await expect(row.getByTestId('job-owner')).toHaveText(email);
  await expect(row.getByTestId('job-status')).toHaveText('succeeded');
  await expect(admin.getByTestId('status-summary').locator('li[data-status="succeeded"] strong')).not.toHaveText('0');
  await admin.screenshot({ path: 'test-results/admin-jobs.png', fullPage: true });

  // The Usage page shows that session: registering, uploading, running and downloading, in the
  // browser, and the job on its node; drawn on the server, then kept up to date.
  await admin.goto('/usage');
  const uses = admin.getByTestId('chart-actions');
  for (const action of ['Register', 'Upload', 'Run job', 'Download', 'Add node']) {
    const bar = uses.locator(`[data-testid="row-bar"][data-label="${action}"]`);
    await expect(bar).toHaveCount(1);
    expect(Number(await bar.getAttribute('data-value'))).toBeGreaterThanOrEqual(1);
    await expect(bar.locator('rect.s0')).toHaveCount(1);
  }
  await expect(admin.getByTestId('chart-requests').locator('rect')).not.toHaveCount(0);
  await expect(admin.getByTestId('chart-jobs').locator('rect.s0')).not.toHaveCount(0);
  await expect(admin.getByTestId('chart-node-jobs').locator('[data-label="e2e-worker"]')).not.toHaveCount(0);
  await expect(admin.getByTestId('usage-routes')).toContainText('POST /api/v1/jobs');
  await admin.getByTestId('usage-window').getByRole('link', { name: '7d' }).click();
  await expect(admin).toHaveURL(/\/usage\?window=7d$/);
  await expect(admin.getByTestId('chart-actions').locator('[data-label="Run job"]')).toHaveCount(1);
  await admin.screenshot({ path: 'test-results/usage.png', fullPage: true });
  await adminContext.close();
});

test('when the node running a job dies, the job page shows it move to another node, live', async ({ page, baseURL }) => {
  await signUp(page, 'failover');
  await startAgent(page, baseURL!, 'box-a');
  await startAgent(page, baseURL!, 'box-b');
  await expect(page.locator('tr[data-node="box-a"][data-status="active"]')).toBeVisible({ timeout: 20_000 });
  await expect(page.locator('tr[data-node="box-b"][data-status="active"]')).toBeVisible({ timeout: 20_000 });

  // A script that takes a few seconds, so it can be caught running.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aiedge-e2e-bundle-'));
  const bundle = path.join(dir, 'slow.zip');
  const manifest = 'entry = "python3 slow.py"\nruntime = "python3"\noutput = "out.csv"\n';
  const script = "import os, time\ntime.sleep(4)\nopen(os.environ['AIEDGE_OUTPUT'], 'w').write('row,done\\n0,1\\n')\n";
  execFileSync('python3', ['-c', `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("aiedge.toml", sys.argv[2]); z.writestr("slow.py", sys.argv[3])`, bundle, manifest, script]);
  await page.goto('/apps');
  await hydrated(page);
  await page.fill('#app-name', 'slow');
  await page.setInputFiles('#app-file', bundle);
  await page.getByRole('button', { name: 'Upload' }).click();
  await expect(page).toHaveURL(/\/apps\/[0-9a-f-]+$/);
  await hydrated(page);
  const input = path.join(dir, 'in.csv');
  fs.writeFileSync(input, 'x\n1\n');
  await page.setInputFiles('#job-input', input);
  await page.getByRole('button', { name: 'Run' }).click();
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]+$/);
  await hydrated(page);
  await page.evaluate(() => { (window as any).__noReload = true; });

  // Kill the agent that runs it: after the dead-node timeout (3 s here) the job runs elsewhere.
  await expect(page.getByTestId('job-status')).toHaveText('running', { timeout: 20_000 });
  const first = (await page.getByTestId('attempts').locator('tbody tr').first().locator('td').nth(1).textContent())!.trim();
  agents.get(first)!.kill('SIGKILL');
  await expect(page.getByTestId('job-status')).toHaveText('succeeded', { timeout: 30_000 });
  expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);
  const rows = page.getByTestId('attempts').locator('tbody tr');
  await expect(rows).toHaveCount(2);
  await expect(rows.nth(0)).toContainText(first);
  await expect(rows.nth(0)).toContainText('lost');
  await expect(rows.nth(0)).toContainText('node dead');
  await expect(rows.nth(1)).toContainText(first === 'box-a' ? 'box-b' : 'box-a');
  await expect(rows.nth(1)).toContainText('succeeded');
  await page.screenshot({ path: 'test-results/job-failover.png', fullPage: true });
});
