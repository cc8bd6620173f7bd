import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { formFor, type Agent } from './support/agent.js';
import { pageText as text, portalDriver, type Answer, type PortalDriver } from './support/portal.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser } from '../src/directory/users.js';
import { addGroupMember, createGroup } from '../src/directory/groups.js';
import { createPolicy } from '../src/policy/policies.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { createClientOp } from '../src/admin/system.js';
import { enablePortalOp } from '../src/admin/portals.js';
import { importTokensOp, tokenStockOp } from '../src/admin/tokens.js';
import { PORTAL_ACTIONS } from '../src/portal/actions.js';

// RFC 4226's test seed ("12345678901234567890"), as vendors ship seeds: hex.
const SEED_HEX = '3132333435363738393031323334353637383930';
const SEED = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';
const now = () => Math.floor(Date.now() / 1000);
const totpAt = (offsetSeconds: number) => generate({ secret: SEED, epoch: now() + offsetSeconds });
const hotpAt = (counter: number) => generate({ strategy: 'hotp', secret: SEED, counter });

describe('hardware tokens in the self-service portal: import, register, PIN, resync, re-assign, change login', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let d: PortalDriver;
  const base = '/selfservice/vault';

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    d = portalDriver(tessera, admin);
    // The stock starts empty here (dev mode puts two demo tokens in it).
    await tessera.db.deleteFrom('authenticators').where('serial', 'like', 'DEMO-%').execute();
    // Every sign-in asks a second factor, so a portal session starts with a fresh one.
    await createGroup(tessera.db, 'staff');
    await createPolicy(tessera.db, { name: 'staff need MFA', subjectType: 'group', subject: 'staff', mfa: 'required' });
    for (const username of ['hal', 'ivy', 'joe', 'kim']) {
      await createUser(tessera.db, { username, password: `${username}-password-1`, email: `${username}@example.test`, emailVerified: true });
      await addGroupMember(tessera.db, 'staff', username);
    }
    await perform(admin, createClientOp, { clientId: 'vault', name: 'Vault', redirectUris: ['https://vault.example.test/cb'] });
    await perform(admin, enablePortalOp, { clientId: 'vault', alias: 'vault', actions: [...PORTAL_ACTIONS] });
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  const url = (path: string) => d.url(path);
  const tokenOf = (serial: string) => tessera.db.selectFrom('authenticators').selectAll().where('serial', '=', serial).executeTakeFirstOrThrow();
  const failures = async (username: string) => (await tessera.db.selectFrom('users').select('failed_logins').where('username', '=', username).executeTakeFirstOrThrow()).failed_logins;
  async function form(agent: Agent, path: string) {
    const page = await agent.get(url(`${base}${path}`));
    assert.equal(page.status, 200, `${path}: ${text(page).slice(0, 200)}`);
    return formFor(page, `${base}${path}`);
  }
  /** A sign-in to the portal that ends on the portal (true) or is refused at the code page (false). */
  async function signsIn(username: string, typed: string): Promise<boolean> {
    try {
      const { page } = await d.signIn(username, { factor: 'totp', typed: () => typed }, base);
      return new URL(page.url).pathname === base;
    } catch {
      return false;
    }
  }

  it('token import: hex or base32 seeds into the unassigned stock, sealed; a file naming a serial in stock imports nothing', async () => {
    const csv = [
      'serial,seed,type,digits,period',
      `HW-T1,${SEED_HEX},TOTP,6,30`,
      `HW-T2,${SEED},TOTP,6,30`,
      `HW-H1,${SEED_HEX},HOTP,6,`,
      `HW-H2,${SEED_HEX},HOTP,6,`,
      `HW-H3,${SEED_HEX},HOTP,6,`,
    ].join('\n');
    assert.deepEqual(await perform(admin, importTokensOp, { csv }), { imported: 5, totp: 2, hotp: 3 });
    const stored = await tokenOf('HW-T1');
    assert.equal(stored.user_id, null);
    assert.equal(stored.kind, 'hardware');
    assert.ok(!stored.secret.includes(SEED), 'the seed is sealed');
    await assert.rejects(perform(admin, importTokensOp, { csv: `HW-X9,${SEED_HEX},totp\nhw-t1,${SEED_HEX},totp` }), /already imported: HW-T1/);
    assert.equal((await tessera.db.selectFrom('authenticators').select('id').where('serial', '=', 'HW-X9').execute()).length, 0);
    await assert.rejects(perform(admin, importTokensOp, { csv: 'HW-X9,nothex!,totp' }), /line 1: the seed of HW-X9/);
    assert.deepEqual(await perform(admin, tokenStockOp, {}), { unassigned: 5, assigned: 0, disabled: 0 });
    assert.equal((await d.events('token.imported')).at(-1)!.actor, 'cli:test');
  });

  it('register an existing token by serial and code: a wrong serial and a wrong code get one answer; then the token signs in', async () => {
    const { agent } = await d.signIn('hal', { factor: 'email' }, base);
    const home = await agent.get(url(base));
    const shown = [...home.body.matchAll(/<a class="button" href="\/selfservice\/vault([^"]*)">([^<]+)<\/a>/g)].map((m) => m[2]);
    // No token yet: nothing to re-assign, unassign, resync or protect with a PIN; a password already.
    assert.deepEqual(shown, ['Register a new token', 'Register an existing token', 'Change password', 'Change email', 'Change phone number', 'Change login', 'Change name']);
    const f = await form(agent, '/tokens/existing');
    const wrongSerial = await agent.post(f.action, { ...f.fields, serial: 'HW-NOPE', code: await totpAt(0) });
    const wrongCode = await agent.post(f.action, { ...f.fields, serial: 'HW-T1', code: (await totpAt(0)) === '000000' ? '111111' : '000000' });
    assert.equal(wrongSerial.status, 400);
    assert.equal(wrongCode.status, 400);
    const problem = (body: string) => /class="field-problem"[^>]*>([^<]+)</.exec(body)?.[1];
    assert.equal(problem(wrongSerial.body), problem(wrongCode.body));
    assert.equal(await failures('hal'), 2, 'both count toward the lockout');
    const saved = await agent.post(f.action, { ...f.fields, serial: 'hw-t1', code: await totpAt(-30), label: 'Key fob' });
    assert.equal(saved.location, url(`${base}?done=token-registered`));
    assert.equal(await failures('hal'), 2, 'a right answer gives its count back');
    const token = await tokenOf('HW-T1');
    assert.equal(token.label, 'Key fob');
    assert.ok(token.confirmed_at);
    // Ivy cannot take it: assigned tokens are not in stock.
    const ivy = await d.signIn('ivy', { factor: 'email' }, base);
    const g = await form(ivy.agent, '/tokens/existing');
    const taken = await ivy.agent.post(g.action, { ...g.fields, serial: 'HW-T1', code: await totpAt(0) });
    assert.equal(taken.status, 400);
    assert.equal((await tokenOf('HW-T1')).user_id, token.user_id);

    assert.equal(await signsIn('hal', await totpAt(0)), true);
    assert.equal(await signsIn('hal', await totpAt(0)), false, 'a used code is refused');
  });

  it('PIN typed before or after the code as chosen; the code alone and a wrong PIN fail, and a wrong PIN counts toward the lockout', async () => {
    const { agent } = await d.signIn('joe', { factor: 'email' }, base);
    const f = await form(agent, '/tokens/existing');
    assert.equal((await agent.post(f.action, { ...f.fields, serial: 'HW-H1', code: await hotpAt(0) })).location, url(`${base}?done=token-registered`));
    let counter = 1;
    const token = (await tokenOf('HW-H1')).id;
    const pin = { ...(await form(agent, '/tokens/pin')), fields: { ...(await form(agent, '/tokens/pin')).fields, token } };
    const short = await agent.post(pin.action, { ...pin.fields, pin: '12', confirm: '12', position: 'before' });
    assert.match(short.body, /a PIN is 4 to 8 digits/);
    const differ = await agent.post(pin.action, { ...pin.fields, pin: '1234', confirm: '4321', position: 'before' });
    assert.match(differ.body, /the two PINs differ/);
    assert.equal((await agent.post(pin.action, { ...pin.fields, pin: '4711', confirm: '4711', position: 'before' })).location, url(`${base}?done=pin-set`));
    assert.notEqual((await tokenOf('HW-H1')).pin_hash, '4711');

    assert.equal(await signsIn('joe', await hotpAt(counter++)), false, 'the code alone');
    const before = await failures('joe');
    assert.equal(await signsIn('joe', `0000${await hotpAt(counter++)}`), false, 'a wrong PIN');
    assert.equal(await failures('joe'), before + 1);
    assert.equal(await signsIn('joe', `${await hotpAt(counter++)}4711`), false, 'the PIN on the wrong side');
    assert.equal(await signsIn('joe', `4711${await hotpAt(counter++)}`), true);

    const replaced = await agent.post(pin.action, { ...pin.fields, pin: '88776655', confirm: '88776655', position: 'after' });
    assert.equal(replaced.location, url(`${base}?done=pin-set`), `${replaced.status} ${text(replaced).slice(0, 400)}`);
    assert.equal(await signsIn('joe', `88776655${await hotpAt(counter++)}`), false);
    assert.equal(await signsIn('joe', `${await hotpAt(counter++)}88776655`), true);

    const remove = await form(agent, '/tokens/pin/remove');
    assert.equal((await agent.post(remove.action, { ...remove.fields, token })).location, url(`${base}?done=pin-removed`));
    assert.equal(await signsIn('joe', await hotpAt(counter++)), true);
    assert.equal((await d.events('account.pin_set')).length, 2);
  });

  it('resync: two consecutive codes move an HOTP counter or a TOTP clock forward only; used codes stay refused', async () => {
    const joe = await tokenOf('HW-H1');
    const counter = Number(joe.counter);
    // Pressed 50 times in a drawer: beyond the look-ahead window.
    assert.equal(await signsIn('joe', await hotpAt(counter + 50)), false);
    const { agent } = await d.signIn('joe', { factor: 'email' }, base);
    const f = await form(agent, '/tokens/resync');
    f.fields.token = joe.id;
    const notConsecutive = await agent.post(f.action, { ...f.fields, first: await hotpAt(counter + 51), second: await hotpAt(counter + 53) });
    assert.equal(notConsecutive.status, 400);
    assert.match(notConsecutive.body, /not two consecutive codes/);
    assert.equal((await agent.post(f.action, { ...f.fields, first: await hotpAt(counter + 51), second: await hotpAt(counter + 52) })).location, url(`${base}?done=token-resynced`));
    assert.equal(Number((await tokenOf('HW-H1')).counter), counter + 53);
    const again = await agent.post(f.action, { ...f.fields, first: await hotpAt(counter + 51), second: await hotpAt(counter + 52) });
    assert.equal(again.status, 400, 'a resync never goes back');
    assert.equal(await signsIn('joe', await hotpAt(counter + 52)), false, 'a code before the counter is refused');
    assert.equal(await signsIn('joe', await hotpAt(counter + 53)), true);

    // Hal's TOTP token runs ten minutes fast.
    const hal = await d.signIn('hal', { factor: 'email' }, base);
    assert.equal(await signsIn('hal', await totpAt(600)), false);
    const g = await form(hal.agent, '/tokens/resync');
    g.fields.token = (await tokenOf('HW-T1')).id;
    const resynced = await hal.agent.post(g.action, { ...g.fields, first: await totpAt(600), second: await totpAt(630) });
    assert.equal(resynced.location, url(`${base}?done=token-resynced`));
    const token = await tokenOf('HW-T1');
    assert.equal(token.drift_steps, 21);
    assert.equal(await signsIn('hal', await totpAt(630)), false, 'the second resync code is spent');
    assert.equal(await signsIn('hal', await totpAt(660)), true);
    assert.equal((await d.events('account.token_resynced')).at(-1)!.actor, 'hal');
  });

  it('resync cannot brute-force: 50 parallel guesses check no more than the lockout threshold, and the right pair last is refused while locked', async () => {
    const { agent } = await d.signIn('joe', { factor: 'email' }, base);
    const f = await form(agent, '/tokens/resync');
    f.fields.token = (await tokenOf('HW-H1')).id;
    await sql`update users set failed_logins = 0, locked_until = null where username = 'joe'`.execute(tessera.db);
    const counter = Number((await tokenOf('HW-H1')).counter);
    const guesses = Array.from({ length: 49 }, (_, i) => agent.post(f.action, { ...f.fields, first: String(100000 + i), second: String(200000 + i) }));
    const right = agent.post(f.action, { ...f.fields, first: await hotpAt(counter + 5), second: await hotpAt(counter + 6) });
    const answers = await Promise.all([...guesses, right]);
    assert.ok(answers.every((a) => a.status === 400), 'every one is refused on the form');
    const locked = answers.filter((a) => /the account is locked/.test(a.body)).length;
    assert.ok(locked >= 45, `at most 5 were checked (${50 - locked})`);
    assert.ok(/the account is locked/.test(answers.at(-1)!.body));
    assert.equal(Number((await tokenOf('HW-H1')).counter), counter, 'nothing moved');
    await sql`update users set failed_logins = 0, locked_until = null where username = 'joe'`.execute(tessera.db);
  });

  it('a portal session never touches another user’s token: forged ids on every token form are refused', async () => {
    const halToken = await tokenOf('HW-T1');
    const { agent } = await d.signIn('kim', { factor: 'email' }, base);
    const f = await form(agent, '/tokens/existing');
    assert.equal((await agent.post(f.action, { ...f.fields, serial: 'HW-H2', code: await hotpAt(0) })).location, url(`${base}?done=token-registered`));
    for (const [path, fields] of [
      ['/tokens/unassign', {}],
      ['/tokens/resync', { first: '123456', second: '234567' }],
      ['/tokens/pin', { pin: '1234', confirm: '1234', position: 'after' }],
      ['/tokens/reassign', { serial: 'HW-H3', code: await hotpAt(0) }],
    ] as const) {
      const g = await form(agent, path);
      for (const forged of [halToken.id, 'not-a-uuid', 'x'.repeat(4000), '']) {
        const answer = await agent.post(g.action, { ...g.fields, ...fields, token: forged });
        assert.equal(answer.status, 400, `${path} ${forged.slice(0, 12)}`);
        assert.match(answer.body, /choose one of your tokens/);
      }
    }
    const unchanged = await tokenOf('HW-T1');
    assert.deepEqual([unchanged.user_id, unchanged.pin_hash, unchanged.counter, unchanged.disabled_at], [halToken.user_id, halToken.pin_hash, halToken.counter, null]);
    assert.equal((await tokenOf('HW-H3')).user_id, null, 'the reassign refused before claiming the new token');
  });

  it('re-assign: the new token works and the old one stops at once (a hardware token is disabled and taken back)', async () => {
    const { agent } = await d.signIn('kim', { factor: 'email' }, base);
    const old = await tokenOf('HW-H2');
    const f = await form(agent, '/tokens/reassign');
    const wrong = await agent.post(f.action, { ...f.fields, token: old.id, serial: 'HW-H3', code: '000000' === (await hotpAt(0)) ? '111111' : '000000' });
    assert.equal(wrong.status, 400);
    assert.equal((await tokenOf('HW-H2')).user_id, old.user_id, 'a wrong code exchanges nothing');
    assert.equal((await agent.post(f.action, { ...f.fields, token: old.id, serial: 'HW-H3', code: await hotpAt(0), label: 'New fob' })).location, url(`${base}?done=token-reassigned`));
    const retired = await tokenOf('HW-H2');
    assert.equal(retired.user_id, null);
    assert.ok(retired.disabled_at);
    assert.equal(await signsIn('kim', await hotpAt(2)), true, 'the new token signs in');
    assert.equal((await d.events('account.token_reassigned')).at(-1)!.actor, 'kim');
    assert.deepEqual(await perform(admin, tokenStockOp, {}), { unassigned: 1, assigned: 3, disabled: 1 });

    // A disabled token is never accepted, even where it is still assigned.
    await sql`update authenticators set disabled_at = now() where serial = 'HW-H3'`.execute(tessera.db);
    const page = (await d.signIn('kim', { factor: 'email' }, base)).page;
    assert.equal(new URL(page.url).pathname, base, 'with the token disabled, kim is offered her email');
    await sql`update authenticators set disabled_at = null where serial = 'HW-H3'`.execute(tessera.db);
  });

  it('change login: the seed’s warning, names stay unique (any case), the account and its tokens stay', async () => {
    const { agent } = await d.signIn('ivy', { factor: 'email' }, base);
    const page = await agent.get(url(`${base}/login-name`));
    assert.match(text(page), /may no longer recognise you/);
    const f = formFor(page, `${base}/login-name`);
    for (const [username, problem] of [['HAL', /that login is taken/], ['bad name!', /1 to 128 letters/], ['h\u0430l', /1 to 128 letters a–z/], ['\uff48\uff41\uff4c', /1 to 128 letters a–z/], ['ivy', /your login already/], ['x'.repeat(129), /1 to 128/]] as const) {
      const answer = await agent.post(f.action, { ...f.fields, username });
      assert.equal(answer.status, 400, username);
      assert.match(answer.body, problem);
    }
    const id = (await tessera.db.selectFrom('users').select('id').where('username', '=', 'ivy').executeTakeFirstOrThrow()).id;
    assert.equal((await agent.post(f.action, { ...f.fields, username: 'ivy.new' })).location, url(`${base}?done=login-changed`));
    assert.equal((await tessera.db.selectFrom('users').select('username').where('id', '=', id).executeTakeFirstOrThrow()).username, 'ivy.new');
    const event = (await d.events('account.login_changed')).at(-1)!;
    assert.deepEqual([event.subject, (event.details as { from: string }).from], [id, 'ivy']);
    const again = await d.signIn('ivy.new', { factor: 'email' }, base, 'ivy-password-1');
    assert.equal(new URL(again.page.url).pathname, base);
  });

  it('a stale factor is asked again before a token change', async () => {
    const { agent } = await d.signIn('hal', { factor: 'email' }, base);
    const f = await form(agent, '/tokens/pin');
    await sql`update app_sessions set factor_at = now() - interval '10 minutes' where user_id = (select id from users where username = 'hal')`.execute(tessera.db);
    const held = await agent.post(f.action, { ...f.fields, token: (await tokenOf('HW-T1')).id, pin: '2468', confirm: '2468', position: 'after' });
    assert.equal(held.location, url('/account/verify'));
    assert.equal((await tokenOf('HW-T1')).pin_hash, null, 'nothing changed yet');
    const answer: Answer = { factor: 'email' };
    const confirm = await d.through(agent, await agent.get(held.location!), 'hal', answer);
    assert.equal(new URL(confirm.url).pathname, '/account/confirm');
    assert.match(confirm.body, /<td>pin<\/td><td>\(hidden\)<\/td>/, 'the PIN is not shown in clear');
    assert.doesNotMatch(confirm.body, /<td>2468<\/td>/);
    // Cancelled, the change leads back to the portal's own page.
    const cancel = formFor(confirm, '/account/confirm/cancel');
    assert.equal((await agent.post(cancel.action, cancel.fields)).location, url(`${base}?done=cancelled`));
    assert.equal((await tokenOf('HW-T1')).pin_hash, null);
  });
});
