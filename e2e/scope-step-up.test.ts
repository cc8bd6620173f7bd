import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { generate } from 'otplib';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser } from '../src/directory/users.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';

/** The demo app's "ask for payments:write": its payments API has that scope protected (dev mode). */
describe('scope step-up on the consent screen, in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;
  let totpSecret: string;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    browser = await launchBrowser();
    for (const name of ['ana', 'bo', 'cat', 'dan']) {
      await createUser(tessera.db, { username: name, password: `${name}-password-1`, email: `${name}@example.test`, emailVerified: true });
    }
    const eli = await createUser(tessera.db, { username: 'eli', password: 'eli-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, eli, 'Tessera', 'e2e');
    totpSecret = enrolment.secret;
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    await confirmEnrolment(tessera.db, tessera.box, drift, eli.id, enrolment.authenticatorId, await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) - 30 }));
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  async function consentFor(page: Page, username: string): Promise<void> {
    await page.goto(`${tessera.issuer}/demo`);
    await page.getByRole('link', { name: /Sign in and ask for payments:write/ }).click();
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(`${username}-password-1`);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  const writeScope = (page: Page) => page.locator('li[data-scope="payments:write"]');

  it('the lock, then unlocking with an email code: the scope is granted and the API token says MFA', async () => {
    const page = await (await browser.newContext()).newPage();
    await consentFor(page, 'ana');
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    assert.match(await writeScope(page).textContent() ?? '', /Make payments in your name[\s\S]*needs verification/);
    await page.getByRole('button', { name: /Email a code to a•+@example\.test/ }).click();
    await page.getByText(/We sent a 6-digit code to/).waitFor();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, 'ana@example.test'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    assert.match(await writeScope(page).textContent() ?? '', /verified/);
    assert.equal(await page.getByRole('checkbox', { name: /payments:write/ }).isChecked(), true);
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('[data-api-claim="scope"]'), 'payments:read payments:write');
    assert.equal(await page.textContent('[data-api-claim="acr"]'), 'urn:tessera:acr:mfa');
    assert.equal(await page.textContent('[data-api-claim="amr"]'), '["pwd","otp","mfa"]');
    // Within the window, asking again goes straight through: no consent page.
    await page.getByRole('link', { name: /Ask for payments:write/ }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('[data-api-claim="scope"]'), 'payments:read payments:write');
  });

  it('partial grant: allowing without verifying leaves the protected scope out', async () => {
    const page = await (await browser.newContext()).newPage();
    await consentFor(page, 'bo');
    await page.getByText(/payments:write stays locked and is left out/).waitFor();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('[data-api-claim="scope"]'), 'payments:read');
    assert.equal(await page.textContent('[data-api-claim="acr"]'), 'urn:tessera:acr:password');
  });

  it('unlocked, then unticked: the user may still leave it out', async () => {
    const page = await (await browser.newContext()).newPage();
    await consentFor(page, 'cat');
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, 'cat@example.test'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('checkbox', { name: /payments:write/ }).uncheck();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('[data-api-claim="scope"]'), 'payments:read');
  });

  it('deny: back at the app with access_denied', async () => {
    const page = await (await browser.newContext()).newPage();
    await consentFor(page, 'dan');
    await page.getByRole('button', { name: 'Deny' }).click();
    await page.waitForURL(/\/demo\?error=/);
    assert.match(await page.getByRole('alert').textContent() ?? '', /denied/);
  });

  it('the authenticator app: passed at login, it unlocks the scope on arrival; at phone width the page still fits', async () => {
    const context = await browser.newContext({ viewport: { width: 375, height: 740 } });
    const page = await context.newPage();
    await consentFor(page, 'eli');
    await page.getByText('Enter the code from your authenticator app or token', { exact: false }).waitFor();
    await page.getByLabel('Code').fill(await generate({ secret: totpSecret }));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    assert.match(await writeScope(page).textContent() ?? '', /verified/);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 375px (${overflow}px)`);
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('[data-api-claim="scope"]'), 'payments:read payments:write');
    assert.equal(await page.textContent('[data-api-claim="amr"]'), '["pwd","otp","mfa"]');
  });
});
