import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { generate } from 'otplib';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser } from '../src/directory/users.js';
import { createGroup, addGroupMember } from '../src/directory/groups.js';
import { createPolicy } from '../src/policy/policies.js';
import { setSetting } from '../src/settings/settings.js';
import { DEMO_MFA_USER } from '../src/demo/accounts.js';

describe('MFA journeys in Chromium (dev outbox delivery)', () => {
  let tessera: TestTessera;
  let browser: Browser;

  before(async () => {
    tessera = await startTestTessera();
    browser = await launchBrowser();
    await createGroup(tessera.db, 'mfa');
    await createPolicy(tessera.db, { name: 'mfa group', subjectType: 'group', subject: 'mfa', mfa: 'required' });
    for (const name of ['ada', 'ben', 'cy']) {
      await createUser(tessera.db, { username: name, password: `${name}-password-1`, email: `${name}@example.test`, emailVerified: true, phone: `+1415555010${name.length}`, phoneVerified: true });
      await addGroupMember(tessera.db, 'mfa', name);
    }
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  async function signIn(page: Page, username: string) {
    await page.goto(`${tessera.issuer}/demo/login`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(`${username}-password-1`);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  async function finish(page: Page) {
    const allow = page.getByRole('button', { name: 'Allow' });
    // When the consent page does not come, say which page came instead.
    await allow.waitFor({ timeout: 20_000 }).catch(async (error: unknown) => {
      throw new Error(`no consent page at ${page.url()}: ${(await page.textContent('body').catch(() => ''))?.replace(/\s+/g, ' ').slice(0, 600)}`, { cause: error });
    });
    await allow.click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    return page.textContent('[data-claim="amr"]');
  }

  it('email code: choose, read the mail, a wrong code first, then the right one', async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, 'ada');
    await page.getByRole('heading', { name: 'Verify it’s you' }).waitFor();
    await page.getByRole('button', { name: /Email a code to a•+@example\.test/ }).click();
    await page.getByText(/We sent a 6-digit code to/).waitFor();
    const code = await codeFromOutbox(browser, tessera.issuer, 'ada@example.test');
    await page.getByLabel('Code').fill(code === '123456' ? '654321' : '123456');
    await page.getByRole('button', { name: 'Verify' }).click();
    assert.equal(await page.getByRole('alert').textContent(), 'That code is not right. 4 tries left.');
    await page.getByLabel('Code').fill(code);
    await page.getByRole('button', { name: 'Verify' }).click();
    assert.equal(await finish(page), '["pwd","otp","mfa"]');
    assert.equal(await page.textContent('[data-claim="acr"]'), 'urn:tessera:acr:mfa');
  });

  it('SMS code, with the resend cooldown message', async () => {
    await setSetting(tessera.db, tessera.box, 'mfa.otp.resendCooldownSeconds', 60);
    try {
      const page = await (await browser.newContext()).newPage();
      await signIn(page, 'ben');
      await page.getByRole('button', { name: /Text a code to/ }).click();
      await page.getByRole('button', { name: 'Send a new code' }).click();
      assert.match(await page.getByRole('alert').textContent() ?? '', /A code was sent moments ago\. You can ask for a new one in \d+ seconds\./);
      await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, '+14155550103'));
      await page.getByRole('button', { name: 'Verify' }).click();
      assert.equal(await finish(page), '["pwd","sms","mfa"]');
    } finally {
      await setSetting(tessera.db, tessera.box, 'mfa.otp.resendCooldownSeconds', 30);
    }
  });

  it('send limit reached: a clear message with when to retry, and another method still works', async () => {
    await setSetting(tessera.db, tessera.box, 'mfa.otp.perDestinationPerHour', 1);
    await setSetting(tessera.db, tessera.box, 'mfa.otp.resendCooldownSeconds', 0);
    try {
      const page = await (await browser.newContext()).newPage();
      await signIn(page, 'cy');
      await page.getByRole('button', { name: /Email a code/ }).click();
      await page.getByRole('button', { name: 'Send a new code' }).click();
      assert.match(await page.getByRole('alert').textContent() ?? '', /Too many codes have been requested\. Try again in \d+ minutes, or choose another method\./);
      await page.getByRole('button', { name: /Text a code/ }).click();
      await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, '+14155550102'));
      await page.getByRole('button', { name: 'Verify' }).click();
      assert.equal(await finish(page), '["pwd","sms","mfa"]');
    } finally {
      await setSetting(tessera.db, tessera.box, 'mfa.otp.perDestinationPerHour', 10);
      await setSetting(tessera.db, tessera.box, 'mfa.otp.resendCooldownSeconds', 30);
    }
  });

  it('first logon with "authenticator app required": scan the QR (key as text), confirm, then sign in with the app', async () => {
    await createUser(tessera.db, { username: 'dee', password: 'dee-password-1', email: 'dee@example.test', emailVerified: true });
    await createPolicy(tessera.db, { name: 'dee needs an app', subjectType: 'user', subject: 'dee', mfa: 'required', requireAuthenticatorApp: true });
    const context = await browser.newContext();
    const page = await context.newPage();
    await signIn(page, 'dee');
    await page.getByRole('heading', { name: 'Set up your authenticator app' }).waitFor();
    const qr = page.getByRole('img', { name: 'QR code for your authenticator app' });
    assert.ok(await qr.isVisible());
    assert.ok(((await qr.evaluate((img: HTMLImageElement) => img.naturalWidth)) ?? 0) > 100, 'the QR code image renders');
    const secret = (await page.textContent('#totp-secret'))!.replace(/\s/g, '');
    // The current step's code: a slow page that crosses into the next step still has it accepted (one step of drift).
    await page.getByLabel('Code from your app').fill(await generate({ secret }));
    await page.getByRole('button', { name: 'Confirm and continue' }).click();
    assert.equal(await finish(page), '["pwd","otp","mfa"]');
    // Next time (a new browser): the app is the only method, so its code is asked for at once.
    const again = await (await browser.newContext()).newPage();
    await signIn(again, 'dee');
    await again.getByText('Enter the code from your authenticator app or token', { exact: false }).waitFor();
    // The next step's code (accepted as drift): the current one may be the step the enrolment used.
    await again.getByLabel('Code').fill(await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }));
    await again.getByRole('button', { name: 'Verify' }).click();
    assert.equal(await finish(again), '["pwd","otp","mfa"]');
  });

  it('no usable method: the page says so and what to do', async () => {
    await createUser(tessera.db, { username: 'eve', password: 'eve-password-1' });
    await createPolicy(tessera.db, { name: 'eve codes only', subjectType: 'user', subject: 'eve', mfa: 'required', allowedFactors: ['email', 'sms'] });
    const page = await (await browser.newContext()).newPage();
    await signIn(page, 'eve');
    await page.getByRole('heading', { name: 'Cannot complete sign-in' }).waitFor();
    assert.match((await page.innerText('main')).replace(/\s+/g, ' '), /Ask your administrator to verify your email address or verify your phone number, then sign in again\./);
    await page.getByRole('button', { name: 'Return to the application' }).click();
    await page.waitForURL(/\/demo\?error=/);
  });
  it('demo-mfa, as the README says: an email code first, then an authenticator app set up in the same sign-in, then the app next time', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${tessera.issuer}/demo/login`);
    await page.getByLabel('Username').fill(DEMO_MFA_USER.username);
    await page.getByLabel('Password').fill(DEMO_MFA_USER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Verify it’s you' }).waitFor();
    await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    await page.getByText('To set up an authenticator app, first confirm it’s you with one of these methods.').waitFor();
    // No QR code before a code has been passed: a password alone must not add an authenticator.
    const early = await page.request.get(`${new URL(page.url()).origin}${new URL(page.url()).pathname}/enrol`, { maxRedirects: 0 });
    assert.equal(early.status(), 303);
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, 'demo-mfa@example.com'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('heading', { name: 'Set up your authenticator app' }).waitFor();
    assert.ok(await page.getByRole('button', { name: 'Not now, continue signing in' }).isVisible(), 'the app is optional here');
    const secret = (await page.textContent('#totp-secret'))!.replace(/\s/g, '');
    await page.getByLabel('Code from your app').fill(await generate({ secret }));
    await page.getByRole('button', { name: 'Confirm and continue' }).click();
    assert.equal(await finish(page), '["pwd","otp","mfa"]');

    // Next time the app is offered beside email and SMS, and the set-up offer is gone.
    const again = await (await browser.newContext()).newPage();
    await again.goto(`${tessera.issuer}/demo/login`);
    await again.getByLabel('Username').fill(DEMO_MFA_USER.username);
    await again.getByLabel('Password').fill(DEMO_MFA_USER.password);
    await again.getByRole('button', { name: 'Sign in' }).click();
    await again.getByRole('button', { name: 'Use your authenticator app or token' }).click();
    await again.getByLabel('Code').fill(await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }));
    await again.getByRole('button', { name: 'Verify' }).click();
    assert.equal(await finish(again), '["pwd","otp","mfa"]');
  });

  it('"Not now": the email code alone completes the sign-in and no app is added', async () => {
    await createUser(tessera.db, { username: 'fay', password: 'fay-password-1', email: 'fay@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'mfa', 'fay');
    const page = await (await browser.newContext()).newPage();
    await signIn(page, 'fay');
    await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, 'fay@example.test'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('button', { name: 'Not now, continue signing in' }).click();
    assert.equal(await finish(page), '["pwd","otp","mfa"]');
    const apps = await tessera.db.selectFrom('authenticators').innerJoin('users', 'users.id', 'authenticators.user_id').select('confirmed_at').where('users.username', '=', 'fay').execute();
    assert.ok(apps.every((a) => a.confirmed_at === null), 'no confirmed authenticator');
  });
});
