import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { generate } from 'otplib';
import { sql } from 'kysely';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { addGroupMember } from '../src/directory/groups.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { DEMO_SHARED } from '../src/demo/accounts.js';

/**
 * Just-in-time shared accounts in Chromium, on the demo shared account: a member reserves it on
 * /account, signs in to the demo app as it with their own authenticator app, and the app shows
 * `act`; without a new reservation, and after one ran out, the shared name does not sign in; a
 * forged Reserve form of a non-member is refused; the audit log names both.
 */
describe('just-in-time shared accounts, in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;
  let secret: string;
  let kim: string;
  let shared: string;

  before(async () => {
    tessera = await startTestTessera();
    browser = await launchBrowser();
    const db = tessera.db;
    kim = (await createUser(db, { username: 'kim', password: 'kim-password-1', email: 'kim@example.test', emailVerified: true })).id;
    await createUser(db, { username: 'lee', password: 'lee-password-1', email: 'lee@example.test', emailVerified: true });
    await createUser(db, { username: 'eve', password: 'eve-password-1', email: 'eve@example.test', emailVerified: true });
    for (const member of ['kim', 'lee']) await addGroupMember(db, DEMO_SHARED.group, member);
    const enrolment = await beginEnrolment(db, tessera.box, { id: kim, username: 'kim' }, 'Tessera', 'e2e-enrolment');
    secret = enrolment.secret;
    const drift = (await loadSettings(db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(db, tessera.box, drift, kim, enrolment.authenticatorId, await generate({ secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    shared = (await findUserByUsername(db, DEMO_SHARED.username))!.id;
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  const contexts: BrowserContext[] = [];
  const newPage = async (javaScriptEnabled = false) => {
    const context = await browser.newContext({ javaScriptEnabled });
    contexts.push(context);
    return context.newPage();
  };

  /** Signs in to /account with the password and an emailed code (the member's app is kept for the shared sign-in). */
  async function accountPage(page: Page, username: string): Promise<void> {
    await page.goto(`${tessera.issuer}/account`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(`${username}-password-1`);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    const emailCode = page.getByRole('button', { name: /Email a code to/ });
    if (await emailCode.isVisible()) {
      await emailCode.click();
      await page.getByLabel('Code').fill(await codeFromOutbox(browser, tessera.issuer, `${username}@example.test`));
      await page.getByRole('button', { name: 'Verify' }).click();
    }
    await page.getByRole('heading', { name: 'Your account' }).waitFor();
  }

  /** The demo app's sign-in page, the shared name typed, and "Shared account?" pressed. */
  async function sharedSignIn(page: Page): Promise<void> {
    await page.goto(`${tessera.issuer}/demo`);
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await page.getByLabel('Username').fill(DEMO_SHARED.username);
    await page.getByRole('button', { name: 'Shared account? Continue with your own code' }).click();
  }

  it('reserve on /account, sign in as the shared account with the member’s own authenticator app: the app receives act', async () => {
    const member = await newPage();
    await accountPage(member, 'kim');
    await member.getByRole('heading', { name: 'Just-in-time accounts' }).waitFor();
    await member.locator('.shared-accounts li', { hasText: DEMO_SHARED.username }).getByRole('button', { name: 'Reserve' }).click();
    assert.match(await member.getByRole('status').textContent() ?? '', /Reserved for you/);
    assert.match(await member.locator('.shared-accounts').textContent() ?? '', /reserved by you until \d\d:\d\d UTC/);

    // Another member sees who holds it and until when, and no Reserve button for it.
    const other = await newPage();
    await accountPage(other, 'lee');
    assert.match(await other.locator('.shared-accounts').textContent() ?? '', new RegExp(`${DEMO_SHARED.username}\\s+reserved by kim until \\d\\d:\\d\\d UTC`));
    assert.equal(await other.locator('.shared-accounts li', { hasText: DEMO_SHARED.username }).getByRole('button', { name: 'Reserve' }).count(), 0);

    const app = await newPage(true);
    await sharedSignIn(app);
    assert.match(await app.textContent('main') ?? '', new RegExp(`You are signing in as ${DEMO_SHARED.username}`));
    await app.getByRole('button', { name: /authenticator app/i }).click();
    await app.getByLabel('Code').fill(await generate({ secret }));
    await app.getByRole('button', { name: 'Verify' }).click();
    await app.getByRole('heading', { name: 'Allow access?' }).waitFor();
    await app.getByRole('button', { name: 'Allow' }).click();
    await app.waitForURL(`${tessera.issuer}/demo`);
    assert.equal(await app.textContent('#signed-in-as'), DEMO_SHARED.username);
    assert.equal(await app.textContent('#actor'), 'kim');
    assert.equal(await app.textContent('[data-claim="sub"]'), shared);
    assert.deepEqual(JSON.parse((await app.textContent('[data-claim="act"]'))!), { sub: kim, preferred_username: 'kim' });
    const claims = Object.fromEntries(
      await app.locator('[data-claim]').evaluateAll((cells) => cells.map((c) => [c.getAttribute('data-claim'), c.textContent])),
    ) as Record<string, string>;
    // The ID token as the demo app received it (for the record).
    console.log(`# ID token claims of a shared-account sign-in: ${JSON.stringify(claims)}`);

    // A second sign-in, same browser: asked again from the start, and refused without a new reservation.
    await app.goto(`${tessera.issuer}/demo/login`);
    await app.getByLabel('Username').fill(DEMO_SHARED.username);
    await app.getByRole('button', { name: 'Shared account? Continue with your own code' }).click();
    assert.equal(await app.getByRole('alert').textContent(), 'Invalid username or password.');

    // The audit log: the member as actor, the shared account as subject, from the reservation on.
    await tessera.audit.flush();
    const rows = await tessera.db.selectFrom('audit_events').select(['type', 'actor']).where('subject', '=', shared).orderBy('id').execute();
    for (const type of ['jit.reserved', 'login.success', 'consent.given', 'token.issued']) {
      assert.ok(rows.some((r) => r.type === type && r.actor === 'kim'), `${type} names kim: ${JSON.stringify(rows)}`);
    }
  });

  it('a reservation that ran out signs nothing in', async () => {
    const member = await newPage();
    await accountPage(member, 'lee');
    await member.locator('.shared-accounts li', { hasText: DEMO_SHARED.username }).getByRole('button', { name: 'Reserve' }).click();
    assert.match(await member.getByRole('status').textContent() ?? '', /Reserved for you/);
    await sql`update jit_reservations set expires_at = now() - interval '1 second' where status = 'live'`.execute(tessera.db);
    const app = await newPage();
    await sharedSignIn(app);
    assert.equal(await app.getByRole('alert').textContent(), 'Invalid username or password.');
    await member.reload();
    assert.ok(await member.locator('.shared-accounts li', { hasText: DEMO_SHARED.username }).getByRole('button', { name: 'Reserve' }).isVisible(), 'free again');
  });

  it('a non-member sees no shared accounts, and a forged Reserve form is refused', async () => {
    const page = await newPage();
    await accountPage(page, 'eve');
    assert.equal(await page.getByRole('heading', { name: 'Just-in-time accounts' }).count(), 0);
    const csrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
    const forged = await page.context().request.post(`${tessera.issuer}/account/jit/reserve`, { form: { csrf: csrf!, account: shared }, maxRedirects: 0 });
    assert.equal(forged.status(), 400);
    assert.match(await forged.text(), /You may not reserve this account/);
    const live = await tessera.db.selectFrom('jit_reservations').select('id').where('status', '=', 'live').where('expires_at', '>', new Date()).execute();
    assert.equal(live.length, 0);
  });
});
