import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { unusedPort } from '../test/support/ports.js';
import { findUserByUsername } from '../src/directory/users.js';
import { listPasskeys } from '../src/factors/passkeys.js';
import { DEMO_USER } from '../src/demo/accounts.js';

/**
 * Passkeys in Chromium with a virtual authenticator (Chrome DevTools Protocol): the demo user adds
 * one on /account ("Add a passkey", after a second factor), then signs in to the demo app with it.
 * The issuer is http://localhost:<port>: WebAuthn needs a host name, not an IP address.
 */
describe('passkeys, in Chromium with a virtual authenticator', () => {
  let tessera: TestTessera;
  let browser: Browser;
  let issuer: string;
  const contexts: BrowserContext[] = [];

  before(async () => {
    const port = await unusedPort();
    issuer = `http://localhost:${port}`;
    tessera = await startTestTessera({ PORT: String(port), ISSUER: issuer });
    browser = await launchBrowser();
  });
  after(async () => {
    for (const context of contexts) await context.close();
    await browser?.close();
    await tessera?.stop();
  });

  /** A page with JavaScript and a platform authenticator that verifies the user (a fingerprint, say) without asking. */
  async function pageWithAuthenticator(): Promise<{ page: Page; cdp: CDPSession; authenticatorId: string }> {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    return { page, cdp, authenticatorId };
  }

  async function password(page: Page, username: string, secret: string): Promise<void> {
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(secret);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  }

  it('the demo user adds a passkey on /account and signs in to the demo app with it', async () => {
    const { page, cdp, authenticatorId } = await pageWithAuthenticator();
    await page.goto(`${issuer}/account`);
    await password(page, DEMO_USER.username, DEMO_USER.password);
    await page.getByRole('heading', { name: 'Your account' }).waitFor();
    await page.getByRole('heading', { name: 'Passkeys and security keys' }).waitFor();
    await page.getByLabel('Name (optional)').fill('Test laptop');

    // Adding one is a sensitive change: the first press asks for a second factor, then for a confirmation.
    await page.getByRole('button', { name: 'Add a passkey' }).click();
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, issuer, 'demo@example.com'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('button', { name: 'Confirm' }).click();
    assert.match(await page.getByRole('status').textContent() ?? '', /now press “Add a passkey”/);
    assert.equal(await page.getByLabel('Name (optional)').inputValue(), 'Test laptop', 'the name typed before the verification is kept');
    await page.getByRole('button', { name: 'Add a passkey' }).click();
    await page.waitForURL(/done=passkey-added/);
    assert.match(await page.getByRole('status').textContent() ?? '', /The passkey is added/);
    assert.match(await page.locator('.passkeys').textContent() ?? '', /Test laptop\s+\(bound to one device or key\)/);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1);
    assert.equal(credentials[0]!.rpId, 'localhost');
    const demo = (await findUserByUsername(tessera.db, DEMO_USER.username))!;
    assert.deepEqual((await listPasskeys(tessera.db, demo.id)).map((p) => p.name), ['Test laptop']);

    // A new sign-in (cookies gone, the same device): the password, then the passkey.
    await page.context().clearCookies();
    await page.goto(`${issuer}/demo`);
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await password(page, DEMO_USER.username, DEMO_USER.password);
    await page.getByRole('button', { name: 'Passkey or security key' }).click();
    await page.getByRole('button', { name: 'Use your passkey' }).click();
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${issuer}/demo`);
    const claims = Object.fromEntries(
      await page.locator('[data-claim]').evaluateAll((cells) => cells.map((c) => [c.getAttribute('data-claim'), c.textContent])),
    ) as Record<string, string>;
    assert.equal(claims.sub, demo.id);
    assert.deepEqual(JSON.parse(claims.amr!), ['pwd', 'hwk', 'user', 'mfa']);
    assert.equal(claims.acr, 'urn:tessera:acr:phr');
    // The ID token as the demo app received it (for the record).
    console.log(`# ID token claims of a passkey sign-in: ${JSON.stringify(claims)}`);
    const after = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.ok(after.credentials[0]!.signCount >= 1, 'the authenticator counted the signature');
  });

  it('without JavaScript the sign-in says a passkey needs it, and another method still works', async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${issuer}/demo`);
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await password(page, DEMO_USER.username, DEMO_USER.password);
    await page.getByRole('button', { name: 'Passkey or security key' }).click();
    assert.match(await page.textContent('main') ?? '', /Passkeys need JavaScript in your browser/);
    await page.getByRole('button', { name: 'Use your passkey' }).click();
    assert.match(await page.getByRole('alert').first().textContent() ?? '', /did not answer with a passkey/);
    await page.getByRole('link', { name: 'Use another method' }).click();
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await codeFromOutbox(browser, issuer, 'demo@example.com'));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
  });
});
