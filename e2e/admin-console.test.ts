import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Browser, Page } from 'playwright-core';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { addGroupMember } from '../src/directory/groups.js';
import { DEMO_ADMIN } from '../src/demo/accounts.js';

/** The admin console at /admin, driven in Chromium as an administrator, an auditor and a plain user would. */
describe('admin console, in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    browser = await launchBrowser();
    await createUser(tessera.db, { username: 'audrey', password: 'audrey-password-1', email: 'audrey@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'auditors', 'audrey');
    await createUser(tessera.db, { username: 'pat', password: 'pat-password-1', email: 'pat@example.test', emailVerified: true });
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  /** Password, then the email code from the dev outbox: the console always asks for a second factor. */
  async function signIn(page: Page, username: string, password: string, email: string, path = '/admin'): Promise<void> {
    await page.goto(`${tessera.issuer}${path}`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await passEmailCode(page, email);
  }

  async function passEmailCode(page: Page, email: string): Promise<void> {
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, email));
    await page.getByRole('button', { name: 'Verify' }).click();
  }

  it('an administrator signs in with a code, creates a user and a client, protects a scope; that user meets the step-up', async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, DEMO_ADMIN.username, DEMO_ADMIN.password, 'demo-admin@example.com');
    await page.getByRole('heading', { name: 'Admin console' }).waitFor();
    assert.match(await page.textContent('.who') ?? '', /demo-admin\s+administrator/);

    // A user, with a verified email.
    await page.getByRole('link', { name: 'Users' }).first().click();
    await page.getByRole('link', { name: 'New user' }).click();
    await page.getByLabel('Username').fill('zoe');
    await page.getByLabel('Password', { exact: true }).fill('zoe-password-1');
    await page.getByLabel('Email').fill('zoe@example.test');
    await page.getByRole('checkbox', { name: /verified \(codes may be sent to it\)/ }).check();
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.getByRole('heading', { name: 'zoe' }).waitFor();
    assert.match(await page.textContent('[role=status]') ?? '', /Created/);

    // A confidential client whose redirect URI this test answers.
    await page.getByRole('link', { name: 'Clients' }).first().click();
    await page.getByRole('link', { name: 'New client' }).click();
    await page.getByLabel('client_id').fill('reports');
    await page.getByLabel('Name shown to users').fill('Reports');
    await page.getByLabel('Redirect URIs (one a line)', { exact: true }).fill('https://reports.example.test/callback');
    await page.getByRole('checkbox', { name: 'phone' }).check();
    await page.getByRole('button', { name: 'Create client' }).click();
    await page.getByRole('heading', { name: 'Client created' }).waitFor();
    const secret = await page.textContent('#client-secret');
    assert.match(secret ?? '', /^[A-Za-z0-9_-]{43}$/);

    // The phone scope protected: an email code at consent, fresh within 5 minutes.
    await page.getByRole('link', { name: 'Scope rules' }).click();
    await page.getByLabel('Scope', { exact: true }).fill('phone');
    await page.getByLabel('Freshness (minutes)').fill('5');
    await page.getByRole('checkbox', { name: 'email' }).check();
    await page.getByRole('button', { name: 'Protect', exact: true }).click();
    await page.getByText('The scope is protected.').waitFor();
    assert.match(await page.textContent('table') ?? '', /phone[\s\S]*email/);

    // zoe signs in to Reports and asks for phone: the consent screen locks it until she passes a code.
    const app = await (await browser.newContext()).newPage();
    const challenge = createHash('sha256').update('a-verifier-of-at-least-43-characters-for-pkce-0123').digest('base64url');
    await app.goto(`${tessera.issuer}/auth?client_id=reports&response_type=code&scope=${encodeURIComponent('openid phone')}&redirect_uri=${encodeURIComponent('https://reports.example.test/callback')}&state=s1&code_challenge=${challenge}&code_challenge_method=S256`);
    await app.getByLabel('Username').fill('zoe');
    await app.getByLabel('Password').fill('zoe-password-1');
    await app.getByRole('button', { name: 'Sign in' }).click();
    await app.getByRole('heading', { name: 'Allow access?' }).waitFor();
    assert.match(await app.locator('li[data-scope="phone"]').textContent() ?? '', /needs verification/);
    await passEmailCode(app, 'zoe@example.test');
    // The browser is sent back to Reports with a code (the name does not resolve here: the request is enough).
    const callback = app.waitForRequest((request) => request.url().startsWith('https://reports.example.test/callback?'));
    await app.getByRole('button', { name: 'Allow' }).click();
    assert.match((await callback).url(), /[?&]code=[^&]+/);

    // The console's audit log shows it, filtered by user.
    await page.goto(`${tessera.issuer}/admin/audit?user=zoe&type=consent`);
    assert.match(await page.textContent('table') ?? '', /consent\.given[\s\S]*reports/);
  });

  it('forms keep what was typed and say what is wrong next to the field', async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, DEMO_ADMIN.username, DEMO_ADMIN.password, 'demo-admin@example.com', '/admin/users/new');
    await page.getByRole('heading', { name: 'New user' }).waitFor();
    await page.getByLabel('Username').fill('yan');
    await page.getByLabel('Password', { exact: true }).fill('yan-password-1');
    await page.getByLabel('Phone (E.164, e.g. +15555550100)').fill('555-0100');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.getByRole('heading', { name: 'New user' }).waitFor();
    const phone = page.getByLabel('Phone (E.164, e.g. +15555550100)');
    assert.equal(await phone.getAttribute('aria-invalid'), 'true');
    assert.equal(await phone.inputValue(), '555-0100');
    assert.equal(await page.getByLabel('Username').inputValue(), 'yan');
    assert.match(await page.textContent(`#${await phone.getAttribute('aria-describedby')}`) ?? '', /E\.164/);
    assert.equal(await findUserByUsername(tessera.db, 'yan'), undefined);

    await page.goto(`${tessera.issuer}/admin/mfa`);
    await page.getByLabel('Digits').fill('12');
    await page.getByRole('button', { name: 'Save' }).click();
    assert.match(await page.locator('.field-problem').first().textContent() ?? '', /at most 10/);
  });

  it('a stale factor is asked for again before a sensitive change, which then goes ahead as typed', async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, DEMO_ADMIN.username, DEMO_ADMIN.password, 'demo-admin@example.com', '/admin/policies');
    await page.getByRole('heading', { name: 'Access policies' }).waitFor();
    // The console session's second factor is now 10 minutes old.
    await sql`update app_sessions set factor_at = now() - interval '10 minutes'`.execute(tessera.db);
    await page.getByLabel('Name').fill('pat needs MFA');
    await page.getByLabel('Applies to').selectOption('user');
    await page.getByLabel('or user').fill('pat');
    await page.getByRole('button', { name: 'Create policy' }).click();
    // Tessera's own step-up page: no password, only the second factor.
    await passEmailCode(page, 'demo-admin@example.com');
    await page.getByRole('heading', { name: 'Confirm the change' }).waitFor();
    assert.match(await page.textContent('main') ?? '', /Create the access policy pat needs MFA/);
    assert.equal((await tessera.db.selectFrom('access_policies').select('name').where('name', '=', 'pat needs MFA').execute()).length, 0);
    await page.getByRole('button', { name: 'Confirm' }).click();
    await page.getByText('Created.').waitFor();
    assert.match(await page.textContent('table') ?? '', /pat needs MFA[\s\S]*user pat[\s\S]*required/);
    const events = await tessera.db.selectFrom('audit_events').select(['type', 'actor']).where('type', 'in', ['admin.reverified', 'policy.created']).execute();
    assert.deepEqual(events.map((e) => e.actor).sort(), ['admin:demo-admin', 'admin:demo-admin']);
  });

  it('an auditor sees everything and the server refuses their changes, even a forged form', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await signIn(page, 'audrey', 'audrey-password-1', 'audrey@example.test', '/admin/users');
    await page.getByRole('heading', { name: 'Users' }).waitFor();
    assert.match(await page.textContent('.who') ?? '', /auditor \(read-only\)/);
    assert.equal(await page.getByRole('link', { name: 'New user' }).count(), 0);
    await page.goto(`${tessera.issuer}/admin/audit`);
    assert.match(await page.textContent('table') ?? '', /admin\.signed_in/);
    const csrf = await page.locator('input[name=csrf]').first().inputValue();
    const forged = await page.request.post(`${tessera.issuer}/admin/users/new`, { form: { csrf, username: 'mallory', password: 'mallory-password-1' }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
    assert.match(await forged.text(), /Auditors can see everything/);
    assert.equal(await findUserByUsername(tessera.db, 'mallory'), undefined);
    const csv = await page.request.get(`${tessera.issuer}/admin/audit.csv?type=admin`);
    assert.equal(csv.status(), 200);
    assert.match(csv.headers()['content-type'] ?? '', /text\/csv/);
    assert.match(await csv.text(), /^time,type,actor,subject,subject_name,client,ip,details\r\n.*admin\./s);
  });

  it('a user who is neither administrator nor auditor gets a clear 403, and sign-out ends the console session', async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, 'pat', 'pat-password-1', 'pat@example.test');
    await page.getByRole('heading', { name: 'No access to the admin console' }).waitFor();
    assert.match(await page.textContent('main') ?? '', /pat[\s\S]*not a member of admins or auditors/);

    const admin = await (await browser.newContext()).newPage();
    await signIn(admin, DEMO_ADMIN.username, DEMO_ADMIN.password, 'demo-admin@example.com');
    await admin.getByRole('button', { name: 'Sign out' }).click();
    await admin.getByRole('button', { name: /Yes, sign me out/ }).click();
    await admin.getByRole('heading', { name: 'Signed out of the admin console' }).waitFor();
    await admin.goto(`${tessera.issuer}/admin/users`);
    await admin.getByLabel('Username').waitFor();
  });
});
