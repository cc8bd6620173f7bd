import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { generate } from 'otplib';
import { codeFromOutbox, launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { DEMO_ADMIN, DEMO_PORTAL_ALIAS, DEMO_TOKEN_SEED } from '../src/demo/accounts.js';

const now = () => Math.floor(Date.now() / 1000);
const demoHotp = (counter: number) => generate({ strategy: 'hotp', secret: DEMO_TOKEN_SEED, counter });

/**
 * The self-service portal in Chromium with JavaScript off: every action of the demo app's portal
 * (all thirteen enabled in dev mode), email-code sign-in for an account without a password, and
 * the restore-access round trip with the administrator in a second browser context.
 */
describe('self-service portal, in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;
  const portal = `/selfservice/${DEMO_PORTAL_ALIAS}`;

  before(async () => {
    tessera = await startTestTessera();
    browser = await launchBrowser();
    await createUser(tessera.db, { username: 'pia', password: 'pia-password-1', email: 'pia@example.test', emailVerified: true, phone: '+14155550177', phoneVerified: true, givenName: 'Pia' });
    await createUser(tessera.db, { username: 'noel', email: 'noel@example.test', emailVerified: true });
  });
  after(async () => {
    await browser?.close();
    await tessera?.stop();
  });

  const newPage = async () => (await browser.newContext({ javaScriptEnabled: false })).newPage();
  const code = (to: string) => codeFromOutbox(browser, tessera.issuer, to);
  const notice = (page: Page) => page.getByRole('status').textContent();

  /** The second factor by email, as Tessera asks for it at sign-in or before a change. */
  async function passEmailCode(page: Page, email: string): Promise<void> {
    await page.getByRole('button', { name: /Email a code to/ }).click();
    await page.getByLabel('Code').fill(await code(email));
    await page.getByRole('button', { name: 'Verify' }).click();
  }

  async function signIn(page: Page, username: string, password: string): Promise<void> {
    await page.goto(`${tessera.issuer}${portal}`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  const action = (page: Page, name: string) => page.getByRole('link', { name, exact: true }).click();

  it('every action of the demo portal, each from its link, in the configured order', async () => {
    const page = await newPage();
    await signIn(page, 'pia', 'pia-password-1');
    await page.getByRole('heading', { name: /Tessera demo app/ }).waitFor();
    const offered = async () => page.locator('.portal-actions a').allTextContents();
    // Applicable ones only: no token yet (nothing to unassign, resync or protect by PIN), a password already.
    assert.deepEqual(await offered(), ['Register a new token', 'Register an existing token', 'Change password', 'Change email', 'Change phone number', 'Change login', 'Change name']);

    await action(page, 'Change name');
    await page.getByLabel('First name').fill('Pia');
    await page.getByLabel('Last name').fill('Park');
    await page.getByRole('button', { name: 'Save' }).click();
    assert.equal(await notice(page), 'Your name is changed.');
    assert.match(await page.textContent('dl.claims') ?? '', /Pia Park/);

    // A change of factors waits for a fresh second factor: Tessera asks, then the change is confirmed.
    await action(page, 'Register a new token');
    await page.getByRole('button', { name: 'Show the QR code' }).click();
    await passEmailCode(page, 'pia@example.test');
    await page.getByRole('heading', { name: 'Confirm the change' }).waitFor();
    await page.getByRole('button', { name: 'Confirm' }).click();
    const secret = (await page.locator('#totp-secret').textContent())!;
    assert.ok(await page.getByRole('img', { name: 'QR code for your authenticator app' }).isVisible());
    await page.getByLabel('Token name').fill('Pia’s phone');
    await page.getByLabel('Code from the app').fill(await generate({ secret, epoch: now() - 30 }));
    await page.getByRole('button', { name: 'Save' }).click();
    assert.equal(await notice(page), 'The token is registered: sign-ins ask for its code from now on.');

    await action(page, 'Register an existing token');
    await page.getByLabel('Serial number').fill('demo-hotp-1');
    await page.getByLabel('Code the token shows').fill('000000' === (await demoHotp(0)) ? '111111' : '000000');
    await page.getByRole('button', { name: 'Register' }).click();
    assert.match(await page.locator('.field-problem').first().textContent() ?? '', /code/i, 'a wrong code is refused on the form');
    await page.getByLabel('Code the token shows').fill(await demoHotp(0));
    await page.getByRole('button', { name: 'Register' }).click();
    assert.equal(await notice(page), 'The token is registered: sign-ins ask for its code from now on.');
    assert.match(await page.textContent('ul.tokens') ?? '', /hardware HOTP, serial DEMO-HOTP-1/);

    // Pressed forty times away from the server's count: beyond the look-ahead, within the resync window.
    await action(page, 'Resynchronize a token');
    await page.getByRole('radio', { name: /DEMO-HOTP-1/ }).check();
    await page.getByLabel('First code').fill(await demoHotp(40));
    await page.getByLabel('The next code').fill(await demoHotp(42));
    await page.getByRole('button', { name: 'Resynchronize' }).click();
    assert.match(await page.locator('.field-problem').first().textContent() ?? '', /./, 'two codes that do not follow each other are refused');
    await page.getByRole('radio', { name: /DEMO-HOTP-1/ }).check();
    await page.getByLabel('First code').fill(await demoHotp(40));
    await page.getByLabel('The next code').fill(await demoHotp(41));
    await page.getByRole('button', { name: 'Resynchronize' }).click();
    assert.equal(await notice(page), 'The token is in step again: sign in with its next code.');

    await action(page, 'Set a PIN');
    await page.getByRole('radio', { name: /DEMO-HOTP-1/ }).check();
    await page.getByLabel('PIN', { exact: true }).fill('4711');
    await page.getByLabel('PIN again').fill('4711');
    await page.getByRole('radio', { name: 'after the code' }).check();
    await page.getByRole('button', { name: 'Set PIN' }).click();
    assert.equal(await notice(page), 'The PIN is set: type it with the code from now on.');
    assert.match(await page.textContent('ul.tokens') ?? '', /DEMO-HOTP-1, with PIN/);

    // The app is exchanged for the demo TOTP token from the stock.
    await action(page, 'Re-assign a token');
    await page.getByRole('radio', { name: 'Pia’s phone' }).first().check();
    await page.getByLabel('Serial number of the new token').fill('DEMO-TOTP-1');
    await page.getByLabel('Code the new token shows').fill(await generate({ secret: DEMO_TOKEN_SEED }));
    await page.getByLabel('Name of the new token (optional)').fill('Key fob');
    await page.getByRole('button', { name: 'Exchange' }).click();
    assert.equal(await notice(page), 'The token is exchanged: the old one no longer signs you in.');
    const tokens = await page.textContent('ul.tokens') ?? '';
    assert.match(tokens, /Key fob hardware TOTP, serial DEMO-TOTP-1/);
    assert.doesNotMatch(tokens, /Pia’s phone/);

    await action(page, 'Remove a PIN');
    await page.getByRole('button', { name: 'Remove PIN' }).click();
    assert.equal(await notice(page), 'The PIN is removed: the code alone signs you in.');

    await action(page, 'Unassign a token');
    await page.getByRole('radio', { name: /Key fob/ }).check();
    await page.getByRole('button', { name: 'Unassign' }).click();
    assert.equal(await notice(page), 'The token is taken off your account: it no longer signs you in.');
    assert.doesNotMatch(await page.textContent('ul.tokens') ?? '', /DEMO-TOTP-1/);

    await action(page, 'Change password');
    await page.getByLabel('New password', { exact: true }).fill('pia-password-2');
    await page.getByLabel('New password again').fill('pia-password-3');
    await page.getByRole('button', { name: 'Change password' }).click();
    assert.ok(await page.locator('[aria-invalid="true"]').count() > 0, 'passwords that differ are refused');
    await page.getByLabel('New password', { exact: true }).fill('pia-password-2');
    await page.getByLabel('New password again').fill('pia-password-2');
    await page.getByRole('button', { name: 'Change password' }).click();
    assert.equal(await notice(page), 'Your password is changed.');

    await action(page, 'Change email');
    await page.getByLabel('New email address').fill('pia.new@example.test');
    await page.getByRole('button', { name: 'Send a code' }).click();
    await page.getByRole('heading', { name: 'Confirm your new email address' }).waitFor();
    await page.getByLabel('Code').fill(await code('pia.new@example.test'));
    await page.getByRole('button', { name: 'Confirm' }).click();
    assert.equal(await notice(page), 'Your email address is changed and verified. Your old address was told.');

    await action(page, 'Change phone number');
    await page.getByLabel('New phone number').fill('+14155550188');
    await page.getByRole('button', { name: 'Send a code' }).click();
    await page.getByLabel('Code').fill(await code('+14155550188'));
    await page.getByRole('button', { name: 'Confirm' }).click();
    assert.equal(await notice(page), 'Your phone number is changed and verified. Your old number was told.');

    await action(page, 'Change login');
    assert.match(await page.getByRole('note').textContent() ?? '', /may no longer recognise you/);
    await page.getByLabel('New login').fill('pia.park');
    await page.getByRole('button', { name: 'Change login' }).click();
    assert.equal(await notice(page), 'Your login is changed: sign in with the new one from now on.');
    assert.match(await page.textContent('dl.claims') ?? '', /pia\.park[\s\S]*pia\.new@example\.test verified[\s\S]*\+14155550188 verified/);

    // The new login and password sign in, with the HOTP token (its PIN removed) as the second factor.
    const again = await newPage();
    await signIn(again, 'pia.park', 'pia-password-2');
    await again.getByRole('button', { name: /authenticator app or token/ }).click();
    await again.getByLabel('Code').fill(await demoHotp(42));
    await again.getByRole('button', { name: 'Verify' }).click();
    await again.getByRole('heading', { name: /Tessera demo app/ }).waitFor();
    // Every change is audited with pia as the actor (the audit log is written in batches: wait for it).
    const pia = (await findUserByUsername(tessera.db, 'pia.park'))!;
    const audited = ['account.name_changed', 'account.token_registered', 'account.token_resynced', 'account.pin_set', 'account.token_reassigned', 'account.pin_removed', 'account.token_unassigned', 'account.password_changed', 'account.email_changed', 'account.phone_changed', 'account.login_changed'];
    let events: { type: string; actor: string | null }[] = [];
    for (let i = 0; i < 50 && !audited.every((t) => events.some((e) => e.type === t)); i++) {
      await new Promise((r) => setTimeout(r, 100));
      events = await tessera.db.selectFrom('audit_events').select(['type', 'actor']).where('subject', '=', pia.id).where('type', 'in', audited as never[]).execute();
    }
    assert.deepEqual(audited.filter((t) => !events.some((e) => e.type === t)), [], 'every action is audited');
    assert.ok(events.every((e) => e.actor === 'pia' || e.actor === 'pia.park'), 'with the acting user');
  });

  it('an account without a password signs in with an emailed code and creates a password', async () => {
    const page = await newPage();
    await page.goto(`${tessera.issuer}${portal}`);
    await page.getByLabel('Username').fill('noel');
    await page.getByRole('button', { name: 'No password? Email me a sign-in code' }).click();
    await page.getByLabel('Code').fill(await code('noel@example.test'));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: /Tessera demo app/ }).waitFor();
    assert.ok((await page.locator('.portal-actions a').allTextContents()).includes('Create a password'));
    assert.ok(!(await page.locator('.portal-actions a').allTextContents()).includes('Change password'));
    await action(page, 'Create a password');
    await page.getByLabel('New password', { exact: true }).fill('noel-password-1');
    await page.getByLabel('New password again').fill('noel-password-1');
    await page.getByRole('button', { name: 'Create password' }).click();
    assert.equal(await notice(page), 'Your password is created: you can sign in with it now.');
  });

  it('restore access: the user asks, an administrator approves in another browser, the user signs in and sets up a new token', async () => {
    const quinn = await createUser(tessera.db, { username: 'quinn', password: 'quinn-password-1', email: 'quinn@example.test', emailVerified: true });
    const lost = await beginEnrolment(tessera.db, tessera.box, quinn, 'Tessera', 'e2e-restore');
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, (await loadSettings(tessera.db, tessera.box)).mfa.totp, quinn.id, lost.authenticatorId, await generate({ secret: lost.secret })));

    const user = await newPage();
    await user.goto(`${tessera.issuer}${portal}`);
    await user.getByRole('link', { name: 'Restore access' }).click();
    await user.getByLabel('Username').fill('quinn');
    await user.getByRole('checkbox', { name: /I lost my token/ }).check();
    await user.getByRole('button', { name: 'Continue' }).click();
    await user.getByRole('heading', { name: 'Prove it is you' }).waitFor();
    await user.getByLabel('Your password').fill('quinn-password-1');
    await user.getByLabel('The code we emailed you').fill(await code('quinn@example.test'));
    await user.getByRole('button', { name: 'Continue' }).click();
    await user.getByRole('heading', { name: 'Send your request' }).waitFor();
    assert.match(await user.textContent('dl.claims') ?? '', /your token[\s\S]*your password, the code we emailed you/);
    await user.getByRole('button', { name: 'Send the request' }).click();
    await user.getByRole('heading', { name: 'Request sent' }).waitFor();

    const admin = await (await browser.newContext()).newPage();
    await admin.goto(`${tessera.issuer}/admin/user-issues`);
    await admin.getByLabel('Username').fill(DEMO_ADMIN.username);
    await admin.getByLabel('Password').fill(DEMO_ADMIN.password);
    await admin.getByRole('button', { name: 'Sign in' }).click();
    await passEmailCode(admin, 'demo-admin@example.com');
    await admin.getByRole('heading', { name: 'User issues' }).waitFor();
    const row = admin.locator('tr', { hasText: 'quinn' });
    assert.equal(await row.locator('.proof.unproved').textContent(), 'Token ✗');
    assert.deepEqual(await row.locator('.proof.proved').allTextContents(), ['Password ✓', 'Email ✓']);
    await row.getByRole('button', { name: 'Verify identity and approve' }).click();
    assert.match(await admin.getByRole('status').textContent() ?? '', /approved/i);

    // The old token no longer works; the next sign-in sets up a new one.
    // Whoever has the password (perhaps whoever has the lost token) cannot attach an app alone: a code to quinn's email first.
    const back = await newPage();
    await signIn(back, 'quinn', 'quinn-password-1');
    assert.match(await back.textContent('main') ?? '', /Your administrator restored your access/);
    await passEmailCode(back, 'quinn@example.test');
    await back.getByRole('heading', { name: 'Set up your authenticator app' }).waitFor();
    assert.match(await back.textContent('main') ?? '', /Your administrator restored your access/);
    const secret = (await back.locator('#totp-secret').textContent())!.replace(/\s+/g, '');
    await back.getByLabel('Code from your app').fill(await generate({ secret }));
    await back.getByRole('button', { name: 'Confirm and continue' }).click();
    await back.getByRole('heading', { name: /Tessera demo app/ }).waitFor();
    const after = await findUserByUsername(tessera.db, 'quinn');
    const factors = await tessera.db.selectFrom('authenticators').select(['id', 'disabled_at', 'confirmed_at']).where('user_id', '=', after!.id).execute();
    assert.equal(factors.find((f) => f.id === lost.authenticatorId)?.disabled_at instanceof Date, true, 'the lost token is disabled');
    assert.equal(factors.filter((f) => f.confirmed_at && !f.disabled_at).length, 1, 'one new token');
  });
});
