// Takes the README's screenshots from a running server: node screenshots.mjs BASE_URL EMAIL PASSWORD OUT_DIR
import { chromium } from '@playwright/test';

const [base, email, password, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 860 } });
await page.goto(`${base}/`);
await page.screenshot({ path: `${out}/landing.png` });
await page.goto(`${base}/login`);
await page.locator('body[data-hydrated="true"]').waitFor({ state: 'attached', timeout: 30000 });
await page.fill('#field-email', email);
await page.fill('#field-password', password);
await page.getByRole('button', { name: 'Log in' }).click();
await page.waitForURL(/\/home$/);
await page.goto(`${base}/admin`);
await page.locator('body[data-hydrated="true"]').waitFor({ state: 'attached', timeout: 30000 });
await page.waitForTimeout(8000); // let the charts gather a few points
await page.screenshot({ path: `${out}/admin.png`, fullPage: true });
await browser.close();
