import { test, expect } from '@playwright/test';
import { hydrated, logIn } from './session';
import { ADMIN } from '../playwright.config';

const PASSWORD = 'correct horse battery';

test('register, log out, log in with a wrong then the right password, and stay out of admin', async ({ page }) => {
  const email = `pw-${Date.now()}@example.org`;

  await page.goto('/register');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-name', 'Grace Hopper');
  await page.fill('#field-password', 'short');
  await page.getByRole('button', { name: 'Create account' }).click();
  // Field errors inline, what was typed kept.
  await expect(page.locator('#field-password-error')).toHaveText('Use at least 8 characters.');
  await expect(page.locator('#field-email')).toHaveValue(email);

  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page).toHaveURL(/\/home$/);
  await expect(page.getByTestId('welcome')).toHaveText('Welcome, Grace Hopper');
  await expect(page.getByTestId('who')).toHaveText('Grace Hopper');

  await page.getByRole('button', { name: 'Log out' }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.locator('header').getByRole('link', { name: 'Log in' })).toBeVisible();

  await page.goto('/login');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', 'not my password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByTestId('form-alert')).toHaveText('Wrong email or password.');
  await expect(page).toHaveURL(/\/login/);

  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL(/\/home$/);
  await expect(page.getByTestId('welcome')).toHaveText('Welcome, Grace Hopper');

  // A non-admin cannot open the admin page, whether by URL or by link.
  const res = await page.goto('/admin');
  expect(res?.status()).toBe(403);
  await expect(page.getByTestId('forbidden')).toBeVisible();
  await expect(page.getByRole('link', { name: 'Admin' })).toHaveCount(0);
});

test('signed-out visitors are sent to log in, and come back afterwards', async ({ page }) => {
  const email = `back-${Date.now()}@example.org`;
  await page.request.post('/api/auth/register', { form: { email, password: PASSWORD } });
  await page.context().clearCookies();

  await page.goto('/home');
  await expect(page).toHaveURL(/\/login\?next=%2Fhome$/);
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL(/\/home$/);
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the forms still work and show their errors', async ({ page }) => {
    const email = `nojs-${Date.now()}@example.org`;
    await page.goto('/register');
    await page.fill('#field-email', 'nojs@');
    await page.fill('#field-password', 'short');
    await page.getByRole('button', { name: 'Create account' }).click();
    await expect(page.locator('#field-email-error')).toHaveText('That does not look like an email address.');
    await expect(page.locator('#field-email')).toHaveValue('nojs@');

    await page.fill('#field-email', email);
    await page.fill('#field-password', PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await expect(page).toHaveURL(/\/home$/);
    await expect(page.getByTestId('welcome')).toContainText('Welcome');
    // The signed-in nav is there too, rendered on the server.
    await expect(page.getByTestId('who')).toBeVisible();
  });
});

test('an admin disables an account: its session and token are refused until it is enabled again', async ({ page, browser, baseURL }) => {
  const email = `disable-${Date.now()}@example.org`;
  await page.goto('/register');
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page).toHaveURL(/\/home$/);
  const made = await page.request.post('/api/tokens/create', { form: { name: 'script', expires_in_days: '30' } });
  const token = (await made.json()).secret as string;
  const api = () => page.request.get('/api/v1/jobs', { headers: { Authorization: `Bearer ${token}` } });
  expect((await api()).status()).toBe(200);

  const adminContext = await browser.newContext({ baseURL });
  const admin = await adminContext.newPage();
  await logIn(admin, ADMIN.email, ADMIN.password);
  await admin.goto(`/admin?q=${encodeURIComponent(email)}`);
  await hydrated(admin);
  // Storage as the lease holder last measured it (a few seconds after the server started).
  await expect(admin.getByTestId('storage-measured')).toContainText(/Measured \d+ (s|min|h) ago|Not measured yet/);
  await expect(admin.getByTestId('database-bytes')).toHaveText(/\d+(\.\d)? (B|KB|MB|GB)/);
  const row = admin.getByTestId('account').filter({ hasText: email });
  await expect(row).toHaveCount(1);
  await row.getByRole('button', { name: 'Disable' }).click();
  await expect(row.locator('td').nth(3)).toHaveText('disabled');
  await admin.screenshot({ path: 'test-results/admin-accounts.png', fullPage: true });

  // The user's next page load is a signed-out one, and the token is refused.
  await page.goto('/home');
  await expect(page).toHaveURL(/\/login\?next=%2Fhome$/);
  expect((await api()).status()).toBe(401);
  // Signing in says why, to whoever knows the password.
  await hydrated(page);
  await page.fill('#field-email', email);
  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByTestId('form-alert')).toHaveText('This account is disabled. Ask an administrator to enable it.');

  await row.getByRole('button', { name: 'Enable' }).click();
  await expect(row.locator('td').nth(3)).toHaveText('enabled');
  expect((await api()).status()).toBe(200);
  await page.fill('#field-email', email);
  await page.fill('#field-password', PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page).toHaveURL(/\/home$/);
  await adminContext.close();
});
