import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser } from '../src/directory/users.js';
import { DEMO_USER } from '../src/demo/accounts.js';
import { createClient } from '../src/clients/clients.js';
import { allowClient, createResourceServer } from '../src/resource-servers/resource-servers.js';

describe('journeys in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;

  before(async () => {
    tessera = await startTestTessera({ LOCKOUT_THRESHOLD: '3' });
    browser = await launchBrowser();
    await createUser(tessera.db, { username: 'kim', password: 'kim-password-1' });
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  async function signInOnPage(page: Page, username: string, password: string) {
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  it('demo app: sign in, consent, see the ID token claims, sign out', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${tessera.issuer}/demo`);
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await page.waitForURL(/\/interaction\//);
    assert.equal(await page.title(), 'Sign in · Tessera');
    assert.match(await page.textContent('main') ?? '', /to continue to Tessera demo app/);
    await signInOnPage(page, DEMO_USER.username, DEMO_USER.password);

    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    const scopes = await page.locator('.scopes li').allTextContents();
    assert.ok(scopes.some((s) => s.includes('Read your email address')), 'scopes are described');
    await page.getByRole('button', { name: 'Allow' }).click();

    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('#signed-in-as'), 'demo');
    assert.equal(await page.textContent('[data-claim="amr"]'), '["pwd"]');
    assert.equal(await page.textContent('[data-claim="acr"]'), 'urn:tessera:acr:password');
    assert.equal(await page.textContent('[data-claim="iss"]'), tessera.issuer);
    assert.ok(await page.locator('[data-claim="auth_time"]').count());
    assert.equal(await page.textContent('[data-userinfo="email"]'), 'demo@example.com');

    await page.getByRole('link', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.ok(await page.getByRole('link', { name: 'Sign in with Tessera' }).isVisible());
    // Signed out of Tessera too: the next sign-in asks for the password again.
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await page.getByLabel('Password').waitFor();
    await context.close();
  });

  it('consent "Deny" returns to the app with access denied', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${tessera.issuer}/demo/login`);
    await signInOnPage(page, 'kim', 'kim-password-1');
    await page.getByRole('button', { name: 'Deny' }).click();
    await page.waitForURL(/\/demo\?error=/);
    assert.match(await page.textContent('.error') ?? '', /denied/i);
    await context.close();
  });

  it('a wrong password, then the lockout, show the same message', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${tessera.issuer}/demo/login`);
    for (let i = 0; i < 3; i++) {
      await signInOnPage(page, 'kim', 'wrong-password');
      assert.equal(await page.getByRole('alert').textContent(), 'Invalid username or password.');
      assert.equal(await page.getByLabel('Username').inputValue(), 'kim', 'the username stays filled in');
    }
    // Locked now: even the right password gets the same answer.
    await signInOnPage(page, 'kim', 'kim-password-1');
    assert.equal(await page.getByRole('alert').textContent(), 'Invalid username or password.');
    const audit = await tessera.db.selectFrom('audit_events').select('type').where('type', '=', 'account.locked').execute();
    assert.equal(audit.length, 1);
    await context.close();
  });

  it('works without JavaScript', async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    await page.goto(`${tessera.issuer}/demo/login`);
    await createUser(tessera.db, { username: 'lee', password: 'lee-password-1' });
    await signInOnPage(page, 'lee', 'lee-password-1');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await page.textContent('#signed-in-as'), 'lee');
    await context.close();
  });

  it('an expired or unknown sign-in link shows a clear page', async () => {
    const page = await browser.newPage();
    const response = await page.goto(`${tessera.issuer}/interaction/does-not-exist`);
    assert.equal(response?.status(), 400);
    assert.match(await page.textContent('main') ?? '', /expired or was already used/);
    await page.close();
  });

  it('an app asking for an API: consent names the API and only the scopes it may have; the token is for that API', async () => {
    const orders = 'https://orders.example.test';
    const redirectUri = 'http://127.0.0.1:9/orders-callback';
    await createResourceServer(tessera.db, { identifier: orders, name: 'Orders API', scopes: ['orders:read', 'orders:write'] });
    await createClient(tessera.db, tessera.box, { clientId: 'orders-web', secret: 'orders-web-secret-0123', name: 'Orders Web', redirectUris: [redirectUri], scope: 'openid email' });
    await allowClient(tessera.db, orders, 'orders-web', ['orders:read']);
    await createUser(tessera.db, { username: 'orla', password: 'orla-password-1' });
    const verifier = 'e2e-verifier-'.padEnd(50, 'x');
    const { createHash } = await import('node:crypto');
    const auth = new URL(`${tessera.issuer}/auth`);
    auth.search = new URLSearchParams({
      client_id: 'orders-web', response_type: 'code', redirect_uri: redirectUri, scope: 'openid orders:read orders:write', resource: orders,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', state: 'e2e-state',
    }).toString();
    const context = await browser.newContext();
    // The app's callback: answered here, so the browser has somewhere to land.
    await context.route(`${redirectUri}**`, (route) => route.fulfill({ status: 200, contentType: 'text/plain', body: 'back at the app' }));
    const page = await context.newPage();
    await page.goto(auth.href);
    await signInOnPage(page, 'orla', 'orla-password-1');
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
    assert.match(await page.textContent('.apis') ?? '', /Orders API/);
    const scopes = (await page.locator('.scope-name').allTextContents()).map((s) => s.trim());
    assert.deepEqual(scopes, ['openid', 'orders:read'], 'orders:write was not allowed to this app, so it is not asked for');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${redirectUri}**`);
    const code = new URL(page.url()).searchParams.get('code')!;
    const response = await fetch(`${tessera.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('orders-web:orders-web-secret-0123').toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, resource: orders }),
    });
    const tokens = (await response.json()) as { access_token: string; scope: string };
    assert.equal(response.status, 200);
    const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1]!, 'base64url').toString()) as { aud: string; scope: string };
    assert.equal(claims.aud, orders);
    assert.equal(claims.scope, 'orders:read');
    await context.close();
  });
  it('sign-out with no Tessera session: a Tessera page, not a blank one, with and without JavaScript', async () => {
    for (const javaScriptEnabled of [true, false]) {
      const context = await browser.newContext({ javaScriptEnabled });
      const page = await context.newPage();
      const blocked: string[] = [];
      page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) blocked.push(m.text()); });
      // As after "Sign out" in another tab: the demo app still shows a session, Tessera has none.
      await page.goto(`${tessera.issuer}/session/end?client_id=tessera-demo&post_logout_redirect_uri=${encodeURIComponent(`${tessera.issuer}/demo`)}`);
      if (javaScriptEnabled) {
        await page.waitForURL(`${tessera.issuer}/demo`);
      } else {
        assert.equal(await page.title(), 'Signing out · Tessera');
        await page.getByRole('button', { name: 'Continue' }).click();
        await page.waitForURL(`${tessera.issuer}/demo`);
      }
      assert.deepEqual(blocked, [], 'the CSP blocked nothing');
      // A plain GET /session/end, no client: ends on Tessera's own "Signed out" page.
      await page.goto(`${tessera.issuer}/session/end`);
      if (!javaScriptEnabled) await page.getByRole('button', { name: 'Continue' }).click();
      await page.getByRole('heading', { name: 'Signed out' }).waitFor();
      await context.close();
    }
  });

  it('response_mode=form_post: the code reaches the app, with and without JavaScript', async () => {
    const received: Record<string, string>[] = [];
    const { createServer } = await import('node:http');
    const app = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        if (req.method === 'POST') received.push(Object.fromEntries(new URLSearchParams(body)));
        res.writeHead(200, { 'content-type': 'text/html' }).end('<title>received</title>');
      });
    }).listen(0, '127.0.0.1');
    await new Promise((r) => app.once('listening', r));
    const callback = `http://127.0.0.1:${(app.address() as { port: number }).port}/cb`;
    await createClient(tessera.db, tessera.box, { clientId: 'form-post-app', public: true, redirectUris: [callback], requireConsent: false });
    await createUser(tessera.db, { username: 'liv', password: 'liv-password-1' });
    try {
      for (const javaScriptEnabled of [true, false]) {
        const context = await browser.newContext({ javaScriptEnabled });
        const page = await context.newPage();
        const url = new URL(`${tessera.issuer}/auth`);
        url.search = new URLSearchParams({
          client_id: 'form-post-app', response_type: 'code', response_mode: 'form_post', scope: 'openid', redirect_uri: callback,
          state: `state-${javaScriptEnabled}`, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
        }).toString();
        await page.goto(url.href);
        await signInOnPage(page, 'liv', 'liv-password-1');
        if (!javaScriptEnabled) {
          await page.getByRole('heading', { name: 'Returning to the application' }).waitFor();
          await page.getByRole('button', { name: 'Continue' }).click();
        }
        await page.waitForURL(callback);
        const last = received.at(-1)!;
        assert.equal(last.state, `state-${javaScriptEnabled}`);
        assert.ok(last.code, 'the code was posted to the app');
        await context.close();
      }
    } finally {
      app.close();
    }
  });
});
