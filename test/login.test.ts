import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor } from './support/agent.js';
import { openLoginPage, signIn, demoAuthorizationUrl } from './support/journey.js';
import { createUser, findUserByUsername, setStatus } from '../src/directory/users.js';

describe('password login, lockout and audit', () => {
  let tessera: TestTessera;
  before(async () => {
    tessera = await startTestTessera({ LOCKOUT_THRESHOLD: '5', LOCKOUT_BASE_SECONDS: '60', LOCKOUT_MAX_SECONDS: '600', LOGIN_ATTEMPTS_PER_USERNAME: '1000', LOGIN_ATTEMPTS_PER_IP: '1000' });
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

  it('50 parallel wrong passwords, the right one sent last: only the threshold (5) are checked, and the right one is refused', async () => {
    const carol = (await findUserByUsername(tessera.db, 'carol'))!;
    // The login pages first, so the 50 posts leave together.
    const forms = await Promise.all(Array.from({ length: 50 }, async () => {
      const agent = new Agent();
      return { agent, form: formFor(await openLoginPage(agent, tessera.issuer), '/login') };
    }));
    const results = await Promise.all(forms.map(({ agent, form }, i) => agent.post(form.action, { ...form.fields, username: 'carol', password: i === 49 ? 'carol-password-1' : 'wrong-password' })));
    for (const r of results) assert.equal(r.status, 401, 'every one, the right password included, gets "invalid"');
    const events = await tessera.db.selectFrom('audit_events').select(['type', 'details']).where('subject', '=', carol.id).execute();
    const compared = events.filter((e) => e.type === 'login.failure' && (e.details as { reason?: string }).reason === 'wrong_password');
    assert.equal(compared.length, 5, 'exactly the threshold were checked');
    assert.equal(events.filter((e) => e.type === 'login.locked').length, 45, 'the rest were refused unchecked');
    assert.equal(events.filter((e) => e.type === 'account.locked').length, 1, 'the lockout is audited once');
    const after = (await findUserByUsername(tessera.db, 'carol'))!;
    assert.equal(after.failed_logins, 5, 'refused attempts are not counted');
    assert.ok(after.locked_until && after.locked_until > new Date());
  });

  it('locks after the threshold, answers like a wrong password, is not extended by attempts while locked, and grows', async () => {
    for (let i = 0; i < 5; i++) await attempt(new Agent(), 'dave', 'wrong-password');
    let dave = await findUserByUsername(tessera.db, 'dave');
    assert.ok(dave?.locked_until && dave.locked_until > new Date(), 'locked');
    const firstUntil = dave!.locked_until!.getTime();
    const firstLock = (firstUntil - Date.now()) / 1000;
    assert.ok(firstLock > 50 && firstLock <= 60, `first lock ~60 s (was ${firstLock})`);
    // The right password does not get in while locked, and the answer gives nothing away.
    const locked = await attempt(new Agent(), 'dave', 'dave-password-1');
    assert.equal(locked.status, 401);
    assert.match(locked.body, /Invalid username or password\./);
    // Someone hammering a locked account does not keep it locked for longer.
    for (let i = 0; i < 4; i++) await attempt(new Agent(), 'dave', 'wrong-password');
    dave = await findUserByUsername(tessera.db, 'dave');
    assert.equal(dave!.locked_until!.getTime(), firstUntil, 'the lock is not extended');
    assert.equal(dave!.failed_logins, 5, 'attempts refused while locked are not counted');
    // After the lock, the next threshold of failures locks twice as long.
    await tessera.db.updateTable('users').set({ locked_until: new Date(Date.now() - 1000) }).where('id', '=', dave!.id).execute();
    for (let i = 0; i < 5; i++) await attempt(new Agent(), 'dave', 'wrong-password');
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
  it('throttles by address and by username before any password is checked, 50 at once exactly', async () => {
    const throttled = await startTestTessera({ LOGIN_ATTEMPTS_PER_IP: '1000', LOGIN_ATTEMPTS_PER_USERNAME: '10', LOCKOUT_THRESHOLD: '1000' }, tessera.testDb);
    try {
      await throttled.db.deleteFrom('rate_limits').execute();
      const forms = await Promise.all(Array.from({ length: 50 }, async () => {
        const agent = new Agent();
        return { agent, form: formFor(await openLoginPage(agent, throttled.issuer), '/login') };
      }));
      // Any name, existing or not, is throttled alike: the answer tells nothing about the account.
      for (const name of ['bob', 'no-such-person']) {
        const results = await Promise.all(forms.map(({ agent, form }) => agent.post(form.action, { ...form.fields, username: name, password: 'wrong-password' })));
        assert.equal(results.filter((r) => r.status === 401).length, 10, `${name}: exactly the limit were checked`);
        const refused = results.filter((r) => r.status === 429);
        assert.equal(refused.length, 40);
        assert.match(refused[0]!.body, /Too many sign-in attempts for this username\. Try again in 10 minutes\./);
      }
    } finally {
      await throttled.close();
    }
    const perIp = await startTestTessera({ LOGIN_ATTEMPTS_PER_IP: '7', LOGIN_ATTEMPTS_PER_USERNAME: '1000', TRUST_PROXY: 'true' }, tessera.testDb);
    try {
      await perIp.db.deleteFrom('rate_limits').execute();
      // Spraying: one password against many names from one address, which claims to forward for
      // others (X-Forwarded-For entries a client writes itself, left of what the proxy appends, do not count).
      const results = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
        const agent = new Agent();
        const form = formFor(await openLoginPage(agent, perIp.issuer), '/login');
        return agent.request(form.action, { method: 'POST', form: { ...form.fields, username: `spray-${i}`, password: 'Summer2026!' }, headers: { 'x-forwarded-for': `203.0.113.${i}, 198.51.100.7` } });
      }));
      assert.equal(results.filter((r) => r.status === 401).length, 7);
      assert.match(results.find((r) => r.status === 429)!.body, /Too many sign-in attempts from your network/);
    } finally {
      await perIp.close();
    }
  });
});
