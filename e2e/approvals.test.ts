import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser } from './browser.js';
import { startTestTessera, type TestTessera } from '../test/support/tessera.js';
import { startMailbox, type Mailbox } from '../test/support/smtp.js';
import { setSetting } from '../src/settings/settings.js';
import { createUser } from '../src/directory/users.js';
import { DEMO_APPROVAL_USER } from '../src/demo/accounts.js';

/**
 * Manager approval in Chromium: the user waits (the page looks again by itself, JavaScript off),
 * the manager opens the link from the mail the test's SMTP server caught, and decides.
 */
describe('manager-approved sign-in, in Chromium', () => {
  let tessera: TestTessera;
  let browser: Browser;
  let mailbox: Mailbox;

  before(async () => {
    tessera = await startTestTessera();
    browser = await launchBrowser();
    mailbox = await startMailbox();
    for (const [key, value] of [['smtp.host', '127.0.0.1'], ['smtp.port', mailbox.port], ['smtp.security', 'none']] as const) await setSetting(tessera.db, tessera.box, key, value);
    await createUser(tessera.db, { username: 'rex', password: 'rex-password-1', givenName: 'Rex' });
    await tessera.db.updateTable('users').set({ sponsor_email: 'boss@example.test' }).where('username', '=', 'rex').execute();
    await tessera.db.insertInto('access_policies').values({ name: 'rex needs approval', subject_type: 'user', subject_id: (await tessera.db.selectFrom('users').select('id').where('username', '=', 'rex').executeTakeFirstOrThrow()).id, mfa: 'optional', manager_approval: true }).execute();
  });
  after(async () => {
    await browser?.close();
    await mailbox?.close();
    await tessera?.stop();
  });

  async function startSignIn(username: string, password: string): Promise<Page> {
    const page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    await page.goto(`${tessera.issuer}/demo`);
    await page.getByRole('link', { name: 'Sign in with Tessera' }).click();
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Waiting for your manager’s approval' }).waitFor();
    return page;
  }

  async function linkFromMail(to: string): Promise<string> {
    const mail = await mailbox.next();
    assert.equal(mail.to && 'text' in mail.to ? mail.to.text : '', to);
    return /(http:\/\/\S+\/approval\/[A-Za-z0-9_-]{43})/.exec(mail.text ?? '')![1]!;
  }

  it('approve: the waiting page goes on by itself once the manager approves', async () => {
    const user = await startSignIn(DEMO_APPROVAL_USER.username, DEMO_APPROVAL_USER.password);
    const link = await linkFromMail(DEMO_APPROVAL_USER.manager);
    const manager = await (await browser.newContext()).newPage();
    await manager.goto(link);
    await manager.getByRole('heading', { name: 'Approve this sign-in?' }).waitFor();
    assert.match(await manager.textContent('main') ?? '', /Demo Approval \(demo-approval\)[\s\S]*Tessera demo app[\s\S]*127\.0\.0\.1/);
    await manager.getByRole('button', { name: 'Approve' }).click();
    await manager.getByRole('heading', { name: 'Sign-in approved' }).waitFor();
    // No click on the user's side: the page looks again by itself and reaches the consent screen.
    await user.getByRole('heading', { name: 'Allow access?' }).waitFor({ timeout: 20_000 });
    await user.getByRole('button', { name: 'Allow' }).click();
    await user.waitForURL(`${tessera.issuer}/demo`);
    assert.match(await user.textContent('main') ?? '', /demo-approval/);
    assert.equal(await user.textContent('[data-claim="amr"]'), '["pwd"]');
    // The link is spent.
    await manager.goto(link);
    assert.match(await manager.textContent('main') ?? '', /already approved/);
  });

  it('reject: the user’s page says so by itself, and the app hears access_denied', async () => {
    const user = await startSignIn('rex', 'rex-password-1');
    const manager = await (await browser.newContext()).newPage();
    await manager.goto(await linkFromMail('boss@example.test'));
    await manager.getByRole('button', { name: 'Reject' }).click();
    await manager.getByRole('heading', { name: 'Sign-in rejected' }).waitFor();
    await user.getByRole('heading', { name: 'Sign-in rejected' }).waitFor({ timeout: 20_000 });
    await user.getByRole('button', { name: 'Return to Tessera demo app' }).click();
    await user.waitForURL(/\/demo\?error=/);
    assert.match(await user.textContent('main') ?? '', /manager rejected the sign-in/);
  });
});
