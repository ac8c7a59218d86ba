import { defineConfig } from '@playwright/test';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';

// The server under test: the release build, on its own port and its own fresh data directory.
const port = Number(process.env.AIEDGE_E2E_PORT ?? 3100);
const root = path.resolve(__dirname, '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target');
const serverBin = process.env.AIEDGE_SERVER_BIN ?? path.join(targetDir, 'release', 'server');
const siteRoot = process.env.LEPTOS_SITE_ROOT ?? path.join(root, 'target', 'site');
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'aiedge-e2e-'));
// An admin for the tests that need one, created before the server starts.
export const ADMIN = { email: 'admin@e2e.example.org', password: 'e2e admin password' };
// Short heartbeat timings, so a dead node shows within seconds.
// Its own broker namespace, so nothing another run left on the broker gets in the way.
const namespace = `aiedge-e2e-${path.basename(dataDir)}`;
const serverArgs = `--bind 127.0.0.1:${port} --data-dir ${dataDir} --site-root ${siteRoot} --heartbeat-timeout 3s --heartbeat-interval 500ms --amqp-namespace ${namespace}`;
process.env.AIEDGE_AGENT_BIN ??= path.join(targetDir, 'release', 'node-agent');

export default defineConfig({
  testDir: './tests',
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      // Debian's Chromium; Playwright never downloads a browser here.
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
  webServer: {
    command: `sh -c "printf '%s\\n' '${ADMIN.password}' | ${serverBin} ${serverArgs} admin create --email ${ADMIN.email} --password-stdin && exec ${serverBin} ${serverArgs}"`,
    url: `http://127.0.0.1:${port}/`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: 'ignore',
    stderr: 'pipe',
    env: { RUST_LOG: 'warn', AIEDGE_E2E_DATA_DIR: dataDir },
  },
});
