import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, formsOf } from './support/agent.js';
import { pageText as text, portalDriver, type PortalDriver } from './support/portal.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { sql } from 'kysely';
import { createUser, setPassword } from '../src/directory/users.js';
import { addGroupMember, createGroup } from '../src/directory/groups.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { createClientOp } from '../src/admin/system.js';
import { disablePortalOp, enablePortalOp } from '../src/admin/portals.js';

describe('account portal: every user’s /account and the per-application /selfservice/<alias>', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    for (const [username, email] of [['ann', 'ann@example.test'], ['bob', 'bob@example.test'], ['eve', 'eve@example.test']] as const) {
      await createUser(tessera.db, { username, password: `${username}-password-1`, email, emailVerified: true, givenName: username.toUpperCase() });
    }
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  const url = (path: string) => `${tessera.issuer}${path}`;
  const portal = () => portalDriver(tessera, admin);
  const through: PortalDriver['through'] = (...args) => portal().through(...args);
  const signIn: PortalDriver['signIn'] = (...args) => portal().signIn(...args);
  const lastCode: PortalDriver['lastCode'] = (to) => portal().lastCode(to);
  const events: PortalDriver['events'] = (type) => portal().events(type);

  it('a user signs in to /account through Tessera and sees their data and the default actions that apply to them', async () => {
    const { page } = await signIn('ann');
    assert.equal(page.status, 200);
    assert.equal(new URL(page.url).pathname, '/account');
    const shown = [...page.body.matchAll(/<a class="button" href="\/account([^"]*)">([^<]+)<\/a>/g)].map((m) => m[2]);
    // No token yet (nothing to unassign) and a password already (nothing to create).
    assert.deepEqual(shown, ['Register a new token', 'Change password', 'Change email', 'Change phone number', 'Change name']);
    assert.match(text(page), /ann@example\.test verified/);
    assert.equal((await events('account.signed_in')).at(-1)!.actor, 'ann');
  });

  it('change name: saved and audited with the user as actor; bad input comes back on the form', async () => {
    const { agent } = await signIn('ann');
    const form = formFor(await agent.get(url('/account/name')), '/account/name');
    const long = await agent.post(form.action, { ...form.fields, givenName: 'x'.repeat(101), familyName: 'Lee' });
    assert.equal(long.status, 400);
    assert.match(long.body, /id="f-givenName"[^>]*aria-invalid="true"/);
    const nul = await agent.post(form.action, { ...form.fields, givenName: 'A\u0000', familyName: 'Lee' });
    assert.equal(nul.status, 400);
    const saved = await agent.post(form.action, { ...form.fields, givenName: ' Ann ', familyName: 'Lee' });
    assert.equal(saved.location, url('/account?done=name-changed'));
    const user = await tessera.db.selectFrom('users').selectAll().where('username', '=', 'ann').executeTakeFirstOrThrow();
    assert.deepEqual([user.given_name, user.family_name], ['Ann', 'Lee']);
    const event = (await events('account.name_changed')).at(-1)!;
    assert.equal(event.actor, 'ann');
    assert.equal(event.subject, user.id);
    const missingCsrf = await agent.post(form.action, { givenName: 'X', familyName: 'Y' });
    assert.equal(missingCsrf.status, 403);
  });

  it('change email: a fresh factor first, a code to the new address, the old one told; a wrong code counts', async () => {
    const { agent } = await signIn('bob');
    const form = formFor(await agent.get(url('/account/email')), '/account/email');
    // Signed in with the password alone: the change waits for a second factor.
    const held = await agent.post(form.action, { ...form.fields, email: 'bob.new@example.test' });
    assert.equal(held.location, url('/account/verify'));
    const confirm = await through(agent, await agent.get(held.location!), 'bob', { factor: 'email' });
    assert.equal(new URL(confirm.url).pathname, '/account/confirm');
    assert.match(text(confirm), /bob\.new@example\.test/);
    const replay = formsOf(confirm).find((f) => new URL(f.action).pathname === '/account/email')!;
    const sent = await agent.post(replay.action, replay.fields);
    assert.match(sent.location!, /\/account\/email\/confirm\?c=[0-9a-f-]{36}$/);
    const codePage = await agent.get(sent.location!);
    assert.match(text(codePage), /b•+@example\.test/);
    const codeForm = formFor(codePage, '/account/email/confirm');
    const wrong = await agent.post(codeForm.action, { ...codeForm.fields, code: '000000' === (await lastCode('bob.new@example.test')) ? '111111' : '000000' });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /the code is wrong \(4 tries left\)/);
    const before = await tessera.db.selectFrom('users').select('email').where('username', '=', 'bob').executeTakeFirstOrThrow();
    assert.equal(before.email, 'bob@example.test');
    const ok = await agent.post(codeForm.action, { ...codeForm.fields, code: await lastCode('bob.new@example.test') });
    assert.equal(ok.location, url('/account?done=email-changed'));
    const after = await tessera.db.selectFrom('users').selectAll().where('username', '=', 'bob').executeTakeFirstOrThrow();
    assert.deepEqual([after.email, after.email_verified], ['bob.new@example.test', true]);
    const told = await tessera.db.selectFrom('dev_outbox').select(['subject', 'body']).where('recipient', '=', 'bob@example.test').orderBy('id', 'desc').executeTakeFirstOrThrow();
    assert.match(told.subject ?? '', /email address was changed/);
    // The code is single use: sending it again changes nothing and says so.
    const again = await agent.post(codeForm.action, { ...codeForm.fields, code: await lastCode('bob.new@example.test') });
    assert.equal(again.location, url('/account/email'), 'a used change goes back to the form');
  });

  it('register a new token by QR code, then sign-ins ask for it; a token of someone else cannot be unassigned', async () => {
    const { agent } = await signIn('eve');
    const start = formFor(await agent.get(url('/account/tokens/new')), '/account/tokens/new');
    const held = await agent.post(start.action, start.fields);
    assert.equal(held.location, url('/account/verify'));
    const confirm = await through(agent, await agent.get(held.location!), 'eve', { factor: 'email' });
    const replay = formsOf(confirm).find((f) => new URL(f.action).pathname === '/account/tokens/new')!;
    const qr = await agent.post(replay.action, replay.fields);
    assert.equal(qr.status, 200);
    const secret = /id="totp-secret">([A-Z2-7]+)</.exec(qr.body)![1]!;
    const save = formFor(qr, '/account/tokens/new/confirm');
    const wrong = await agent.post(save.action, { ...save.fields, label: 'Phone', code: '123456' === (await generate({ secret })) ? '654321' : '123456' });
    assert.equal(wrong.status, 400);
    assert.equal(/id="totp-secret">([A-Z2-7]+)</.exec(wrong.body)![1], secret, 'the same secret is shown again');
    // The code of the previous time step (within the drift window), so the current one is left for the next sign-in.
    const saved = await agent.post(save.action, { ...save.fields, label: 'Phone', code: await generate({ secret, epoch: Math.floor(Date.now() / 1000) - 30 }) });
    assert.equal(saved.location, url('/account?done=token-registered'));
    const home = await agent.get(url('/account'));
    assert.match(text(home), /Phone authenticator app \(TOTP\)/);
    assert.match(text(home), /Unassign a token/);

    // Ann's token, and eve's forged form naming it.
    const ann = await tessera.db.selectFrom('users').selectAll().where('username', '=', 'ann').executeTakeFirstOrThrow();
    const settings = await loadSettings(tessera.db, tessera.box);
    const enrolment = await beginEnrolment(tessera.db, tessera.box, ann, 'Tessera', 'test-enrolment');
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, settings.mfa.totp, ann.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    const unassign = formFor(await agent.get(url('/account/tokens/unassign')), '/account/tokens/unassign');
    const forged = await agent.post(unassign.action, { ...unassign.fields, token: enrolment.authenticatorId });
    assert.equal(forged.status, 400);
    assert.match(forged.body, /choose one of your tokens/);
    assert.ok(await tessera.db.selectFrom('authenticators').select('id').where('id', '=', enrolment.authenticatorId).executeTakeFirst(), 'ann keeps her token');
    const garbage = await agent.post(unassign.action, { ...unassign.fields, token: 'x'.repeat(5000) });
    assert.equal(garbage.status, 400);

    // A new sign-in to the account asks for the app's code.
    const next = await signIn('eve', { factor: 'totp', secret });
    assert.equal(new URL(next.page.url).pathname, '/account');
    const own = await tessera.db.selectFrom('authenticators').select('id').where('label', '=', 'Phone').executeTakeFirstOrThrow();
    const mine = await agent.post(unassign.action, { ...unassign.fields, token: own.id });
    assert.equal(mine.location, url('/account?done=token-unassigned'));
    assert.equal(await tessera.db.selectFrom('authenticators').select('id').where('id', '=', own.id).executeTakeFirst(), undefined);
    assert.equal((await events('account.token_unassigned')).at(-1)!.actor, 'eve');
  });

  it('change password: after a fresh factor; a user without any factor types the current one, and a wrong one counts toward lockout', async () => {
    const { agent } = await signIn('ann', { factor: 'email' });
    const form = formFor(await agent.get(url('/account/password')), '/account/password');
    const short = await agent.post(form.action, { ...form.fields, current: '', password: 'short', confirm: 'short' });
    assert.equal(short.status, 400);
    assert.match(short.body, /at least 8/);
    const differ = await agent.post(form.action, { ...form.fields, current: '', password: 'ann-password-2', confirm: 'ann-password-3' });
    assert.match(differ.body, /the two new passwords differ/);
    const changed = await agent.post(form.action, { ...form.fields, current: '', password: 'ann-password-2', confirm: 'ann-password-2' });
    assert.equal(changed.location, url('/account?done=password-changed'));
    assert.equal((await events('account.password_changed')).at(-1)!.actor, 'ann');
    await setPassword(tessera.db, 'ann', 'ann-password-1');

    // Dan has no email, phone or app: his password, typed again, is all there is.
    await createUser(tessera.db, { username: 'dan', password: 'dan-password-1' });
    const dan = await signIn('dan');
    const own = formFor(await dan.agent.get(url('/account/password')), '/account/password');
    const wrong = await dan.agent.post(own.action, { ...own.fields, current: 'not-it', password: 'dan-password-2', confirm: 'dan-password-2' });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /the current password is wrong/);
    assert.equal((await tessera.db.selectFrom('users').select('failed_logins').where('username', '=', 'dan').executeTakeFirstOrThrow()).failed_logins, 1);
    const right = await dan.agent.post(own.action, { ...own.fields, current: 'dan-password-1', password: 'dan-password-2', confirm: 'dan-password-2' });
    assert.equal(right.location, url('/account?done=password-changed'));
    // After the re-verification window, the change asks for the password again at Tessera.
    await sql`update app_sessions set auth_at = now() - interval '10 minutes' where user_id = (select id from users where username = 'dan')`.execute(tessera.db);
    const stale = await dan.agent.post(own.action, { ...own.fields, current: 'dan-password-2', password: 'dan-password-3', confirm: 'dan-password-3' });
    assert.equal(stale.location, url('/account/verify'));
    const verify = await dan.agent.get(stale.location!);
    assert.equal(new URL(verify.location!).searchParams.get('prompt'), 'login');
  });

  it('an application’s portal: its actions in its order, only for its group; disabled, it is gone', async () => {
    await perform(admin, createClientOp, { clientId: 'payroll', name: 'Payroll', redirectUris: ['https://payroll.example.test/cb'] });
    await createGroup(tessera.db, 'payroll-users');
    await addGroupMember(tessera.db, 'payroll-users', 'ann');
    await assert.rejects(perform(admin, enablePortalOp, { clientId: 'payroll', alias: 'Pay Roll', actions: ['change-name'] }), /lower-case letters/);
    await assert.rejects(perform(admin, enablePortalOp, { clientId: 'payroll', alias: 'payroll', actions: ['change-name', 'fly'] }), /unknown action "fly"/);
    await assert.rejects(perform(admin, enablePortalOp, { clientId: 'tessera-account', alias: 'mine', actions: ['change-name'] }), /part of Tessera/);
    await perform(admin, enablePortalOp, { clientId: 'payroll', alias: 'payroll', actions: ['change-name', 'change-email', 'register-token'], group: 'payroll-users' });
    const { agent, page } = await signIn('ann', { factor: 'email' }, '/selfservice/payroll');
    assert.equal(new URL(page.url).pathname, '/selfservice/payroll');
    assert.match(text(page), /Payroll/);
    const shown = [...page.body.matchAll(/<a class="button" href="\/selfservice\/payroll([^"]*)">([^<]+)<\/a>/g)].map((m) => m[2]);
    assert.deepEqual(shown, ['Change name', 'Change email', 'Register a new token']);
    assert.equal((await agent.get(url('/selfservice/payroll/password'))).status, 404, 'an action the portal does not offer has no page');
    const form = formFor(await agent.get(url('/selfservice/payroll/name')), '/selfservice/payroll/name');
    const saved = await agent.post(form.action, { ...form.fields, givenName: 'Ann', familyName: 'Payroll' });
    assert.equal(saved.location, url('/selfservice/payroll?done=name-changed'));
    assert.equal((await events('account.name_changed')).at(-1)!.client_id, 'payroll');
    // Bob is not in the group; nobody gets an unknown portal.
    const bob = await signIn('bob', { factor: 'email' }, '/selfservice/payroll');
    assert.equal(bob.page.status, 403);
    assert.match(text(bob.page), /members of the group payroll-users/);
    assert.equal((await agent.get(url('/selfservice/nothing-here'))).status, 404);
    assert.equal((await new Agent().get(url('/selfservice/nothing-here/name'))).status, 404, 'said before any sign-in');
    await perform(admin, disablePortalOp, { clientId: 'payroll' });
    assert.equal((await agent.get(url('/selfservice/payroll'))).status, 404);
  });

  it('an account without a password signs in with a code sent to its email, then its token; a password account gets nothing sent', async () => {
    await createUser(tessera.db, { username: 'rue', email: 'rue@example.test', emailVerified: true });
    const emailSignIn = async (agent: Agent, username: string) => {
      const login = await agent.follow(await agent.get(url('/account')));
      assert.match(login.body, /No password\? Email me a sign-in code/);
      const form = formFor(login, '/login');
      const sent = await agent.post(form.action.replace(/\/login$/, '/login/email'), { ...form.fields, username });
      return agent.follow(sent);
    };
    const agent = new Agent();
    const codePage = await emailSignIn(agent, 'rue');
    assert.match(text(codePage), /If rue signs in with an emailed code/);
    const codeForm = formFor(codePage, '/login/email/code');
    const wrong = await agent.post(codeForm.action, { ...codeForm.fields, code: '000000' === (await lastCode('rue@example.test')) ? '111111' : '000000' });
    assert.equal(wrong.status, 401);
    const home = await agent.follow(await agent.post(codeForm.action, { ...codeForm.fields, code: await lastCode('rue@example.test') }));
    assert.equal(new URL(home.url).pathname, '/account');
    assert.match(text(home), /Create a password/);
    assert.doesNotMatch(text(home), /Change password/);
    // With a phone as well, a re-verification asks for the phone: the email was rue's first factor and cannot be her second.
    await tessera.db.updateTable('users').set({ phone: '+14155550199', phone_verified: true }).where('username', '=', 'rue').execute();
    await sql`update app_sessions set auth_at = now() - interval '10 minutes', factor_at = null where user_id = (select id from users where username = 'rue')`.execute(tessera.db);
    const nameForm = formFor(await agent.get(url('/account/email')), '/account/email');
    const held = await agent.post(nameForm.action, { ...nameForm.fields, email: 'rue.new@example.test' });
    assert.equal(held.location, url('/account/verify'));
    const choice = await agent.follow(await agent.get(held.location!));
    assert.match(text(choice), /Text a code to/);
    assert.doesNotMatch(text(choice), /Email a code to/);
    const confirm = await through(agent, choice, 'rue', { factor: 'sms' });
    assert.equal(new URL(confirm.url).pathname, '/account/confirm', 'the SMS code counts: no loop back to "Verify it’s you"');
    await tessera.db.updateTable('users').set({ phone: null, phone_verified: false }).where('username', '=', 'rue').execute();
    // The emailed code is all rue has: passed moments ago, it is enough to create a password.
    const create = formFor(await agent.get(url('/account/password/new')), '/account/password/new');
    assert.equal((await agent.post(create.action, { ...create.fields, password: 'rue-password-1', confirm: 'rue-password-1' })).location, url('/account?done=password-created'));

    // Ann has a password: asking for a code sends nothing, and the page reads the same.
    const before = await tessera.db.selectFrom('dev_outbox').select('id').where('recipient', '=', 'ann@example.test').execute();
    const other = new Agent();
    const annPage = await emailSignIn(other, 'ann');
    assert.match(text(annPage), /If ann signs in with an emailed code/);
    assert.equal((await tessera.db.selectFrom('dev_outbox').select('id').where('recipient', '=', 'ann@example.test').execute()).length, before.length);
    const annForm = formFor(annPage, '/login/email/code');
    assert.equal((await other.post(annForm.action, { ...annForm.fields, code: '123456' })).status, 401);

    // Only the account portal signs in this way.
    await perform(admin, createClientOp, { clientId: 'notes', name: 'Notes', redirectUris: ['https://notes.example.test/cb'] });
    const elsewhere = new Agent();
    const auth = new URL(url('/auth'));
    for (const [k, v] of Object.entries({ client_id: 'notes', response_type: 'code', scope: 'openid', redirect_uri: 'https://notes.example.test/cb', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) auth.searchParams.set(k, v);
    const notesLogin = await elsewhere.follow(await elsewhere.get(auth.href));
    assert.match(notesLogin.url, /\/interaction\//);
    assert.doesNotMatch(notesLogin.body, /Email me a sign-in code/);
    const notesForm = formFor(notesLogin, '/login');
    assert.equal((await elsewhere.post(notesForm.action.replace(/\/login$/, '/login/email'), { ...notesForm.fields, username: 'rue' })).status, 404);
  });

  it('without a session the portal sends the browser to sign in; a form says the session ended', async () => {
    const agent = new Agent();
    const page = await agent.get(url('/selfservice/demo/name?x=1'));
    assert.equal(page.location, url(`/account/login?next=${encodeURIComponent('/selfservice/demo/name?x=1')}`));
    const post = await agent.post(url('/account/name'), { givenName: 'x' });
    assert.equal(post.status, 401);
    // The portal's sign-in names its application: Tessera's login page says which one.
    const login = await agent.follow(await agent.get(page.location!));
    assert.match(login.url, /\/interaction\//);
    assert.match(text(login), /Tessera demo app/);
    assert.match(login.body, /href="\/account\/restore\?portal=demo"/);
    for (const evil of ['https://evil.example', '//evil.example', '/admin', '/account/../admin']) {
      await agent.get(url(`/account/login?next=${encodeURIComponent(evil)}`));
      const cookie = agent.cookies.get('tessera.account.signin')!;
      assert.equal(JSON.parse(Buffer.from(decodeURIComponent(cookie), 'base64url').toString()).next, '/account', evil);
    }
  });
});
