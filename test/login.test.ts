import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor } from './support/agent.js';
import { openLoginPage, signIn, demoAuthorizationUrl } from './support/journey.js';
import { createUser, findUserByUsername, setStatus } from '../src/directory/users.js';

describe('password login, lockout and audit', () => {
  let tessera: TestTessera;
  before(async () => {
    tessera = await startTestTessera({ LOCKOUT_THRESHOLD: '5', LOCKOUT_BASE_SECONDS: '60', LOCKOUT_MAX_SECONDS: '600' });
    await createUser(tessera.db, { username: 'bob', password: 'bob-password-1' });
    await createUser(tessera.db, { username: 'carol', password: 'carol-password-1' });
    await createUser(tessera.db, { username: 'dave', password: 'dave-password-1' });
    await createUser(tessera.db, { username: 'Émile', password: 'emile-password-1' });
  });
  after(async () => tessera.stop());

  async function attempt(agent: Agent, username: string, password: string) {
    const page = await openLoginPage(agent, tessera.issuer);
    const form = formFor(page, '/login');
    return agent.post(form.action, { ...form.fields, username, password });
  }

  it('wrong password and unknown user give the same answer', async () => {
    const wrong = await attempt(new Agent(), 'bob', 'not-the-password');
    const unknown = await attempt(new Agent(), 'nobody-here', 'not-the-password');
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    const message = (html: string) => /<p class="error" role="alert">([^<]*)<\/p>/.exec(html)?.[1];
    assert.equal(message(wrong.body), 'Invalid username or password.');
    assert.equal(message(unknown.body), message(wrong.body));
    assert.match(wrong.body, /value="bob"/, 'the username is kept in the form');
  });

  it('20 parallel wrong passwords are counted as exactly 20 failures', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, () => attempt(new Agent(), 'carol', 'wrong-password')));
    for (const r of results) assert.equal(r.status, 401);
    const carol = await findUserByUsername(tessera.db, 'carol');
    assert.equal(carol?.failed_logins, 20);
    const failures = await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', carol!.id).execute();
    assert.equal(failures.filter((f) => f.type === 'login.failure' || f.type === 'login.locked').length, 20);
    assert.ok(failures.some((f) => f.type === 'account.locked'), 'the lockout is audited');
  });

  it('locks after the threshold, answers like a wrong password, with growing waits', async () => {
    for (let i = 0; i < 5; i++) await attempt(new Agent(), 'dave', 'wrong-password');
    let dave = await findUserByUsername(tessera.db, 'dave');
    assert.ok(dave?.locked_until && dave.locked_until > new Date(), 'locked');
    const firstLock = (dave!.locked_until!.getTime() - Date.now()) / 1000;
    assert.ok(firstLock > 50 && firstLock <= 60, `first lock ~60 s (was ${firstLock})`);
    // The right password does not get in while locked, and the answer gives nothing away.
    const locked = await attempt(new Agent(), 'dave', 'dave-password-1');
    assert.equal(locked.status, 401);
    assert.match(locked.body, /Invalid username or password\./);
    for (let i = 0; i < 4; i++) await attempt(new Agent(), 'dave', 'wrong-password');
    dave = await findUserByUsername(tessera.db, 'dave');
    const secondLock = (dave!.locked_until!.getTime() - Date.now()) / 1000;
    assert.ok(secondLock > 110 && secondLock <= 120, `second lock is twice as long (was ${secondLock})`);
    // When the lock has passed, the right password works and resets the count.
    await tessera.db.updateTable('users').set({ locked_until: new Date(Date.now() - 1000) }).where('id', '=', dave!.id).execute();
    const agent = new Agent();
    const callback = await signIn(agent, await demoAuthorizationUrl(tessera.issuer), { username: 'dave', password: 'dave-password-1', redirectUri: `${tessera.issuer}/demo/callback` });
    assert.ok(new URL(callback).searchParams.get('code'));
    assert.equal((await findUserByUsername(tessera.db, 'dave'))?.failed_logins, 0);
  });

  it('a disabled user cannot sign in and is told nothing more', async () => {
    await createUser(tessera.db, { username: 'erin', password: 'erin-password-1' });
    await setStatus(tessera.db, 'erin', 'disabled');
    const r = await attempt(new Agent(), 'erin', 'erin-password-1');
    assert.equal(r.status, 401);
    assert.match(r.body, /Invalid username or password\./);
  });

  it('usernames match case-insensitively and in Unicode normal form', async () => {
    const decomposed = 'E\u0301mile'.toUpperCase(); // "ÉMILE" typed with a combining accent
    const callback = await signIn(new Agent(), await demoAuthorizationUrl(tessera.issuer), { username: decomposed.normalize('NFD'), password: 'emile-password-1', redirectUri: `${tessera.issuer}/demo/callback` });
    assert.ok(new URL(callback).searchParams.get('code'));
  });

  it('Deny on the consent page sends access_denied back to the client and is audited', async () => {
    const agent = new Agent();
    const callback = await signIn(agent, await demoAuthorizationUrl(tessera.issuer), { username: 'bob', password: 'bob-password-1', consent: 'deny', redirectUri: `${tessera.issuer}/demo/callback` });
    const params = new URL(callback).searchParams;
    assert.equal(params.get('error'), 'access_denied');
    assert.equal(params.get('state'), 'state-1234');
    const bob = await findUserByUsername(tessera.db, 'bob');
    const denied = await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', bob!.id).where('type', '=', 'consent.denied').execute();
    assert.equal(denied.length, 1);
  });

  it('Cancel on the login page sends access_denied back to the client', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, tessera.issuer);
    const form = formFor(page, '/abort');
    const back = await agent.follow(await agent.post(form.action, form.fields), (u) => u.includes('/demo/callback'));
    assert.equal(new URL(back.location!).searchParams.get('error'), 'access_denied');
  });
});
