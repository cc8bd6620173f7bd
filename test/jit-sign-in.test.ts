import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { decodeJwt } from 'jose';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, formsOf, type AgentResponse } from './support/agent.js';
import { pageText, portalDriver } from './support/portal.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import type { ServiceContext } from '../src/admin/service.js';
import { createClient } from '../src/clients/clients.js';
import { allowClient, createResourceServer } from '../src/resource-servers/resource-servers.js';
import { createUser, setPassword } from '../src/directory/users.js';
import { addGroupMember } from '../src/directory/groups.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings, setSetting } from '../src/settings/settings.js';
import { protectScope } from '../src/scopes/rules.js';
import { enableSharedAccount, reserve } from '../src/jit/shared-accounts.js';
import { perform } from '../src/admin/service.js';
import { disableJitOp } from '../src/admin/jit.js';
import { INVALID_CREDENTIALS } from '../src/flows/login.js';
import { startAppSession } from '../src/web/sessions.js';

const REDIRECT = 'http://127.0.0.1:9/callback';
const SECRET = 'rp-secret-0123456789abcdef';
const API = 'https://orders.example.test';

/** Signing in as a just-in-time shared account with the reserving member's own code, and the tokens that say who did. */
describe('just-in-time shared accounts: the sign-in and who really did it', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let config: oidc.Configuration;
  let shared: string;
  let jsmith: string;
  let totpSecret: string;

  before(async () => {
    // Scope rules and clients changed by the tests are read at once, not after the cache's 10 seconds.
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    const db = tessera.db;
    admin = { db, box: tessera.box, audit: createAudit(db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    await createClient(db, tessera.box, { clientId: 'rp', secret: SECRET, redirectUris: [REDIRECT], grantTypes: ['authorization_code', 'refresh_token'], name: 'Server room' });
    await createResourceServer(db, { identifier: API, name: 'Orders API', scopes: ['orders:read'] });
    await allowClient(db, API, 'rp', ['orders:read']);
    shared = (await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin' })).account.userId;
    for (const username of ['jsmith', 'mary', 'eve']) {
      const user = await createUser(db, { username, password: `${username}-password-1`, email: `${username}@example.test`, emailVerified: true });
      if (username !== 'eve') await addGroupMember(db, 'JIT_acmeadmin', username);
      if (username === 'jsmith') jsmith = user.id;
    }
    const enrolment = await beginEnrolment(db, tessera.box, { id: jsmith, username: 'jsmith' }, 'Tessera', 'test-enrolment');
    totpSecret = enrolment.secret;
    const drift = (await loadSettings(db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(db, tessera.box, drift, jsmith, enrolment.authenticatorId, await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    // Every code of this suite is asked for from 127.0.0.1 by a handful of users.
    for (const [key, value] of [['mfa.otp.perUserPerHour', 500], ['mfa.otp.perDestinationPerHour', 500], ['mfa.otp.perIpPerHour', 1000], ['mfa.otp.resendCooldownSeconds', 0]] as const) await setSetting(db, tessera.box, key, value);
    config = await oidc.discovery(new URL(tessera.issuer), 'rp', undefined, oidc.ClientSecretBasic(SECRET), { execute: [oidc.allowInsecureRequests] });
  });
  after(async () => {
    await admin?.audit.flush();
    await tessera?.stop();
  });

  const url = (path: string) => `${tessera.issuer}${path}`;
  const portal = () => portalDriver(tessera, admin);
  const liveCount = async () => Number((await sql<{ n: string }>`select count(*) as n from jit_reservations where status = 'live' and expires_at > now()`.execute(tessera.db)).rows[0]!.n);

  /** An authorization request of the relying party; returns its login page and the PKCE verifier. */
  async function authorize(agent: Agent, extra: Record<string, string> = {}): Promise<{ page: AgentResponse; verifier: string; state: string }> {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const authorization = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT, scope: 'openid profile offline_access orders:read', resource: API, state, prompt: 'consent',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra,
    });
    const page = await agent.follow(await agent.get(authorization.href), (u) => u.startsWith(REDIRECT));
    return { page, verifier, state };
  }

  /** "Shared account? Sign in with your own code" on the login page. */
  async function sharedStep(agent: Agent, login: AgentResponse, username = 'acmeadmin', password = ''): Promise<AgentResponse> {
    const form = formFor(login, '/login');
    assert.match(login.body, /formaction="\/interaction\/[^/]+\/login\/shared"/, 'the sign-in page offers the shared-account way in');
    return agent.follow(await agent.post(`${form.action}/shared`, { ...form.fields, username, password }), (u) => u.startsWith(REDIRECT));
  }

  /** From the shared step's method choice through the member's TOTP code and consent, to the callback. */
  async function memberTotp(agent: Agent, choice: AgentResponse, code?: string): Promise<AgentResponse> {
    assert.match(pageText(choice), /You are signing in as acmeadmin/);
    const pick = formFor(choice, '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'totp' }));
    const form = formFor(codePage, '/shared/code');
    return agent.follow(await agent.post(form.action, { ...form.fields, code: code ?? (await generate({ secret: totpSecret })) }), (u) => u.startsWith(REDIRECT));
  }

  /** The same with the member's emailed code (an app's code is good once per 30 seconds). */
  async function memberEmail(agent: Agent, choice: AgentResponse, address: string): Promise<AgentResponse> {
    const pick = formFor(choice, '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'email' }));
    const form = formFor(codePage, '/shared/code');
    return agent.follow(await agent.post(form.action, { ...form.fields, code: await portal().lastCode(address) }), (u) => u.startsWith(REDIRECT));
  }

  async function allow(agent: Agent, consent: AgentResponse): Promise<string> {
    const form = formFor(consent, '/consent');
    const done = await agent.follow(await agent.post(form.action, { ...form.fields, decision: 'allow' }), (u) => u.startsWith(REDIRECT));
    assert.ok(done.location?.startsWith(REDIRECT), `back at the application: ${pageText(done).slice(0, 200)}`);
    return done.location!;
  }

  /** Reserve on /account as the member (signed in with their email code). */
  async function reserveAs(username: string): Promise<AgentResponse> {
    const { agent, page } = await portal().signIn(username, { factor: 'email' });
    const reserve = formsOf(page).find((f) => f.action.endsWith('/account/jit/reserve'));
    assert.ok(reserve, `${username} sees a Reserve button: ${pageText(page).slice(0, 400)}`);
    assert.match(page.body, /<button type="submit">Reserve<\/button>/);
    return agent.follow(await agent.post(reserve.action, reserve.fields));
  }

  it('without a live reservation the shared username cannot sign in: the same answer as a wrong password, on both buttons', async () => {
    const agent = new Agent();
    const { page } = await authorize(agent);
    const viaShared = await sharedStep(agent, page);
    assert.equal(viaShared.status, 401);
    assert.ok(pageText(viaShared).includes(INVALID_CREDENTIALS));
    const form = formFor(page, '/login');
    const viaPassword = await agent.post(form.action, { ...form.fields, username: 'acmeadmin', password: 'anything' });
    assert.equal(viaPassword.status, 401);
    assert.ok(pageText(viaPassword).includes(INVALID_CREDENTIALS));
    const unknown = await sharedStep(agent, page, 'nobody-here');
    assert.equal(unknown.status, 401);
    assert.ok(pageText(unknown).includes(INVALID_CREDENTIALS));
  });

  it('a member reserves on /account, signs in as acmeadmin with their own authenticator app; the tokens name them in act; no refresh token', async () => {
    const reserved = await reserveAs('jsmith');
    assert.match(pageText(reserved), /Reserved for you/);
    assert.match(pageText(reserved), /acmeadmin reserved by you until \d\d:\d\d UTC/);
    // Another member sees who holds it and until when, and has no Reserve button for it.
    const { page: marys } = await portal().signIn('mary', { factor: 'email' });
    assert.match(pageText(marys), /acmeadmin reserved by jsmith until \d\d:\d\d UTC/);
    assert.ok(!formsOf(marys).some((f) => f.action.endsWith('/jit/reserve')));

    const agent = new Agent();
    const { page, verifier, state } = await authorize(agent);
    const choice = await sharedStep(agent, page);
    assert.equal(choice.status, 200, pageText(choice).slice(0, 300));
    // The member's own factors, without their addresses: anyone who types the shared name reaches this page.
    assert.match(pageText(choice), /Email a code to your own email address/);
    assert.match(pageText(choice), /authenticator app/i);
    assert.doesNotMatch(choice.body, /@example\.test/);
    const consent = await memberTotp(agent, choice);
    assert.match(pageText(consent), /Server room/);
    const callback = await allow(agent, consent);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true }, { resource: API });
    const claims = tokens.claims()!;
    assert.equal(claims.sub, shared);
    assert.deepEqual(claims.act, { sub: jsmith, preferred_username: 'jsmith' });
    assert.deepEqual(claims.amr, ['otp']);
    assert.equal(tokens.refresh_token, undefined, 'a shared account gets no refresh token');
    const access = decodeJwt(tokens.access_token);
    assert.equal(access.sub, shared);
    assert.deepEqual(access.act, { sub: jsmith, preferred_username: 'jsmith' });

    // The reservation is spent by that sign-in and knows the session it made.
    const row = await tessera.db.selectFrom('jit_reservations').selectAll().where('shared_user_id', '=', shared).orderBy('reserved_at', 'desc').executeTakeFirstOrThrow();
    assert.equal(row.status, 'spent');
    assert.ok(row.session_uid);

    // Audit: the member as actor, the shared account as subject, for the reservation, the sign-in and after.
    for (const type of ['jit.reserved', 'login.success', 'consent.given', 'token.issued']) {
      const event = (await portal().events(type)).filter((e) => e.subject === shared).at(-1);
      assert.ok(event, `a ${type} event for acmeadmin`);
      assert.equal(event.actor, 'jsmith', `${type} names the member`);
    }
  });

  it('opaque tokens carry act through introspection and UserInfo', async () => {
    await reserveAs('jsmith');
    const agent = new Agent();
    const verifier = oidc.randomPKCECodeVerifier();
    const authorization = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid profile', state: 's', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const page = await agent.follow(await agent.get(authorization.href));
    const consent = await memberEmail(agent, await sharedStep(agent, page), 'jsmith@example.test');
    const tokens = await oidc.authorizationCodeGrant(config, new URL(await allow(agent, consent)), { pkceCodeVerifier: verifier, expectedState: 's' });
    const introspected = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(introspected.active, true);
    assert.equal(introspected.sub, shared);
    assert.deepEqual(introspected.act, { sub: jsmith, preferred_username: 'jsmith' });
    const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, shared);
    assert.deepEqual(userinfo.act, { sub: jsmith, preferred_username: 'jsmith' });
    assert.deepEqual(tokens.claims()!.act, { sub: jsmith, preferred_username: 'jsmith' });
  });

  it('a second sign-in needs a new reservation: single sign-on never reuses the session; prompt=none hears login_required', async () => {
    const agent = new Agent();
    await reserveAs('mary');
    const { page } = await authorize(agent);
    const choice = await sharedStep(agent, page);
    const codePick = formFor(choice, '/shared');
    const codePage = await agent.follow(await agent.post(codePick.action, { ...codePick.fields, factor: 'email' }));
    const code = await portal().lastCode('mary@example.test');
    const consent = await agent.follow(await agent.post(formFor(codePage, '/shared/code').action, { ...formFor(codePage, '/shared/code').fields, code }), (u) => u.startsWith(REDIRECT));
    await allow(agent, consent);
    assert.equal(await liveCount(), 0, 'spent');

    // The same browser asks again: the sign-in page, not a silent code; and no reservation now.
    const again = await authorize(agent);
    assert.ok(again.page.body.includes('name="password"'), 'asked to sign in again');
    const refused = await sharedStep(agent, again.page);
    assert.equal(refused.status, 401);
    assert.ok(pageText(refused).includes(INVALID_CREDENTIALS));
    const silent = await authorize(agent, { prompt: 'none' });
    assert.equal(new URL(silent.page.location!).searchParams.get('error'), 'login_required');
  });

  it('expiry: a reservation past its time signs nothing in, before the code or after it', async () => {
    await reserveAs('jsmith');
    await sql`update jit_reservations set expires_at = now() - interval '1 second' where status = 'live'`.execute(tessera.db);
    const agent = new Agent();
    const { page } = await authorize(agent);
    assert.equal((await sharedStep(agent, page)).status, 401);

    // Ran out while the member was typing the code: the right code spends nothing.
    await reserveAs('jsmith');
    const other = new Agent();
    const started = await authorize(other);
    const choice = await sharedStep(other, started.page);
    const pick = formFor(choice, '/shared');
    const codePage = await other.follow(await other.post(pick.action, { ...pick.fields, factor: 'totp' }));
    await sql`update jit_reservations set expires_at = now() - interval '1 second' where status = 'live'`.execute(tessera.db);
    const ended = await other.post(formFor(codePage, '/shared/code').action, { ...formFor(codePage, '/shared/code').fields, code: await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) + 60 }) });
    assert.equal(ended.status, 403);
    assert.match(pageText(ended), /reservation of acmeadmin ended/i);
    const last = await tessera.db.selectFrom('jit_reservations').select('status').orderBy('reserved_at', 'desc').executeTakeFirstOrThrow();
    assert.notEqual(last.status, 'spent');
  });

  it('a non-member sees no shared accounts and a forged Reserve form is refused and audited', async () => {
    const { agent, page } = await portal().signIn('eve', { factor: 'email' });
    assert.doesNotMatch(pageText(page), /Just-in-time accounts/);
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
    for (const account of [shared, jsmith, 'not-an-id', 'x'.repeat(5000)]) {
      const forged = await agent.post(url('/account/jit/reserve'), { csrf, account });
      assert.equal(forged.status, 400, `forged ${account.slice(0, 20)}: ${forged.status}`);
      assert.match(pageText(forged), /You may not reserve this account/);
    }
    const noCsrf = await agent.post(url('/account/jit/reserve'), { account: shared });
    assert.ok(noCsrf.status === 403 || noCsrf.status === 400);
    assert.equal(await liveCount(), 0);
    const refused = (await portal().events('jit.refused')).filter((e) => e.actor === 'eve');
    assert.ok(refused.length >= 4);
  });

  it('50 parallel codes at the shared step, the right one last: the shared account’s lockout holds (not the member’s), the reservation is not spent', async () => {
    await reserveAs('jsmith');
    const agent = new Agent();
    const { page } = await authorize(agent);
    const choice = await sharedStep(agent, page);
    const pick = formFor(choice, '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'totp' }));
    const form = formFor(codePage, '/shared/code');
    const right = await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) + 30 });
    const wrong = right === '000000' ? '000001' : '000000';
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => agent.post(form.action, { ...form.fields, code: i === 49 ? right : wrong })));
    assert.ok(answers.every((a) => a.status === 401 || a.status === 429), `statuses: ${[...new Set(answers.map((a) => a.status))]}`);
    const [sharedRow, member] = await Promise.all([shared, jsmith].map((id) => tessera.db.selectFrom('users').select(['failed_logins', 'locked_until']).where('id', '=', id).executeTakeFirstOrThrow()));
    assert.ok(sharedRow!.locked_until && sharedRow!.locked_until > new Date(), 'the shared account is locked');
    assert.equal(sharedRow!.failed_logins, 5, 'only the threshold were checked');
    assert.deepEqual([member!.failed_logins, member!.locked_until], [0, null], 'guesses at the shared name do not lock the member out of their own account');
    assert.equal(await liveCount(), 1, 'still live: nothing was signed in');
    await sql`update users set failed_logins = 0, locked_until = null where id = ${shared}`.execute(tessera.db);
    await sql`update jit_reservations set status = 'released' where status = 'live'`.execute(tessera.db);
  });

  it('a shared account with a password asks for it first; Tessera’s own pages refuse a shared account', async () => {
    await setPassword(tessera.db, 'acmeadmin', 'acmeadmin-password-1');
    await reserveAs('mary');
    const agent = new Agent();
    const { page } = await authorize(agent);
    assert.equal((await sharedStep(agent, page, 'acmeadmin', 'wrong')).status, 401);
    const form = formFor(page, '/login');
    const choice = await agent.follow(await agent.post(form.action, { ...form.fields, username: 'acmeadmin', password: 'acmeadmin-password-1' }));
    assert.match(pageText(choice), /You are signing in as acmeadmin/);

    // The account page: a forged shared sign-in there is refused with a clear page.
    const own = new Agent();
    const login = await own.follow(await own.get(url('/account')));
    assert.doesNotMatch(login.body, /login\/shared/, 'not offered on Tessera’s own pages');
    const ownForm = formFor(login, '/login');
    const refused = await own.follow(await own.post(`${ownForm.action}/shared`, { ...ownForm.fields, username: 'acmeadmin', password: 'acmeadmin-password-1' }));
    assert.equal(refused.status, 403);
    assert.match(pageText(refused), /acmeadmin is a shared account: it signs in to applications, not to Tessera’s own pages/);
    assert.ok(refused.body.includes('name="username"'), 'the sign-in page, to go on with one’s own account');
    await sql`update users set password_hash = null where id = ${shared}`.execute(tessera.db);
    await sql`update jit_reservations set status = 'released' where status = 'live'`.execute(tessera.db);
  });

  it('the console lists shared accounts, their groups and reservations; it shares, ends a reservation and stops sharing', async () => {
    await createUser(tessera.db, { username: 'root', password: 'root-password-1' });
    await addGroupMember(tessera.db, 'admins', 'root');
    const user = await tessera.db.selectFrom('users').select('id').where('username', '=', 'root').executeTakeFirstOrThrow();
    const agent = new Agent();
    agent.cookies.set('tessera.admin', await startAppSession(tessera.db, 'admin', user.id, { idleSeconds: 900, absoluteSeconds: 3600 }, { authAt: new Date(), factorAt: new Date() }));
    await reserveAs('mary');
    const page = await agent.get(url('/admin/shared-accounts'));
    assert.equal(page.status, 200);
    const words = pageText(page);
    assert.match(words, /acmeadmin JIT_acmeadmin 5 min active by mary until/);
    assert.match(words, /acmeadmin jsmith spent/, 'past reservations are listed');

    const end = formsOf(page).find((f) => f.action.endsWith('/shared-accounts/release'))!;
    const ended = await agent.follow(await agent.post(end.action, end.fields));
    assert.match(pageText(ended), /The reservation is ended/);
    assert.equal(await liveCount(), 0);

    const share = formFor(page, '/admin/shared-accounts');
    const bad = await agent.post(share.action, { ...share.fields, username: 'winadmin', group: 'JIT_winadmin', minutes: '0' });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /id="f-minutes"[^>]*aria-invalid="true"/);
    const shared2 = await agent.follow(await agent.post(share.action, { ...share.fields, username: 'winadmin', group: 'JIT_winadmin', minutes: '15' }));
    assert.match(pageText(shared2), /winadmin JIT_winadmin 15 min active free/);
    // The group in use cannot be removed from under the account.
    const group = await agent.follow(await agent.get(url('/admin/groups/JIT_winadmin')));
    const remove = formsOf(group).find((f) => f.action.endsWith('/groups/JIT_winadmin/remove'));
    assert.ok(remove, 'the group page offers its removal');
    const refused = await agent.post(remove.action, remove.fields);
    assert.equal(refused.status, 400);
    assert.match(pageText(refused), /decides who may reserve the shared account winadmin: stop sharing it/);
    const stop = formsOf(shared2).filter((f) => f.action.endsWith('/shared-accounts/disable')).find((f) => f.fields.username === 'winadmin')!;
    const stopped = await agent.follow(await agent.post(stop.action, stop.fields));
    assert.match(pageText(stopped), /no longer shared/);
    assert.doesNotMatch(pageText(stopped), /winadmin JIT_winadmin/);
    assert.equal((await portal().events('jit.released')).at(-1)!.actor, 'admin:root');
  });

  it('act names the member whose reservation the code was issued for, even when another member signs in in the same browser before it', async () => {
    const agent = new Agent();
    // jsmith passes their code, and the browser has not yet followed on to the application.
    await reserveAs('jsmith');
    const first = await authorize(agent, { prompt: 'login' });
    const pick = formFor(await sharedStep(agent, first.page), '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'email' }));
    const held = await agent.post(formFor(codePage, '/shared/code').action, { ...formFor(codePage, '/shared/code').fields, code: await portal().lastCode('jsmith@example.test') });
    assert.equal(held.status, 303);
    // A browser keeps one resume cookie per interaction (by path); this test agent keeps one per name.
    const resume = [...agent.cookies].filter(([name]) => name.startsWith('tessera.resume'));
    // mary reserves and signs in completely in the same browser.
    await reserveAs('mary');
    const second = await authorize(agent);
    const marysPick = formFor(await sharedStep(agent, second.page), '/shared');
    const marysCodePage = await agent.follow(await agent.post(marysPick.action, { ...marysPick.fields, factor: 'email' }));
    const marysConsent = await agent.follow(await agent.post(formFor(marysCodePage, '/shared/code').action, { ...formFor(marysCodePage, '/shared/code').fields, code: await portal().lastCode('mary@example.test') }), (u) => u.startsWith(REDIRECT));
    const marysTokens = await oidc.authorizationCodeGrant(config, new URL(await allow(agent, marysConsent)), { pkceCodeVerifier: second.verifier, expectedState: second.state }, { resource: API });
    assert.equal((marysTokens.claims()!.act as { preferred_username: string }).preferred_username, 'mary');
    await new Promise((r) => setTimeout(r, 1100));
    // Now jsmith's browser goes on: the code is jsmith's.
    for (const [name, value] of resume) agent.cookies.set(name, value);
    const jsmithsConsent = await agent.follow(await agent.get(held.location!), (u) => u.startsWith(REDIRECT));
    // The shared account's grant holds the scopes (mary consented): straight back to the application.
    assert.ok(jsmithsConsent.location?.startsWith(REDIRECT), `back at the application: ${jsmithsConsent.status}`);
    const jsmithsTokens = await oidc.authorizationCodeGrant(config, new URL(jsmithsConsent.location!), { pkceCodeVerifier: first.verifier, expectedState: first.state }, { resource: API });
    assert.deepEqual(jsmithsTokens.claims()!.act, { sub: jsmith, preferred_username: 'jsmith' });
    assert.equal((decodeJwt(jsmithsTokens.access_token).act as { preferred_username: string }).preferred_username, 'jsmith');
  });

  it('a shared account with an email address does not sign in to /account by emailed code; a member taken out of the group mid-sign-in spends nothing', async () => {
    await sql`update users set email = 'team@example.test', email_verified = true where id = ${shared}`.execute(tessera.db);
    const own = new Agent();
    const login = await own.follow(await own.get(url('/account')));
    const form = formFor(login, '/login');
    const sent = await own.follow(await own.post(`${form.action}/email`, { ...form.fields, username: 'acmeadmin' }));
    assert.equal(sent.status, 200);
    assert.equal(await tessera.db.selectFrom('dev_outbox').select('id').where('recipient', '=', 'team@example.test').executeTakeFirst(), undefined, 'no code is sent');
    await sql`update users set email = null, email_verified = false where id = ${shared}`.execute(tessera.db);

    await reserveAs('mary');
    const agent = new Agent();
    const { page } = await authorize(agent);
    const pick = formFor(await sharedStep(agent, page), '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'email' }));
    await sql`delete from group_members where user_id = (select id from users where username = 'mary')`.execute(tessera.db);
    const refused = await agent.post(formFor(codePage, '/shared/code').action, { ...formFor(codePage, '/shared/code').fields, code: await portal().lastCode('mary@example.test') });
    assert.ok(refused.status === 403 || refused.status === 303, `status ${refused.status}`);
    const after = await agent.follow(refused);
    assert.match(pageText(after), /Reservation ended/);
    assert.equal((await tessera.db.selectFrom('jit_reservations').select('status').orderBy('reserved_at', 'desc').executeTakeFirstOrThrow()).status, 'live', 'not spent');
    await addGroupMember(tessera.db, 'JIT_acmeadmin', 'mary');
    await sql`update jit_reservations set status = 'released' where status = 'live'`.execute(tessera.db);
  });

  it('stopping sharing ends the shared sessions: no single sign-on, no refresh tokens afterwards', async () => {
    await reserveAs('jsmith');
    const agent = new Agent();
    const { page } = await authorize(agent);
    await allow(agent, await memberEmail(agent, await sharedStep(agent, page), 'jsmith@example.test'));
    await perform(admin, disableJitOp, { username: 'acmeadmin' });
    const silent = await authorize(agent, { prompt: 'none' });
    assert.equal(new URL(silent.page.location!).searchParams.get('error'), 'login_required');
    await enableSharedAccount(tessera.db, { username: 'acmeadmin', group: 'JIT_acmeadmin' });
    // An administrator's account is not shared, nor is a built-in group the one that reserves.
    await assert.rejects(enableSharedAccount(tessera.db, { username: 'root', group: 'JIT_root' }), /built-in group/);
    await assert.rejects(enableSharedAccount(tessera.db, { username: 'acmeadmin', group: 'admins' }), /built in/);
    // A shared account is not made a member of its own group, and does not reserve itself.
    await assert.rejects(addGroupMember(tessera.db, 'JIT_acmeadmin', 'acmeadmin'), /cannot be a member of it/);
    await sql`insert into group_members (group_id, user_id) select shared_accounts.group_id, user_id from shared_accounts where user_id = ${shared}`.execute(tessera.db);
    await assert.rejects(reserve(tessera.db, { sharedUserId: shared, memberId: shared, ip: null }), /you may not reserve this account/);
    await sql`delete from group_members where user_id = ${shared}`.execute(tessera.db);
  });

  it('a protected scope asked for in a shared session is unlocked with the member’s own code, not the shared account’s', async () => {
    // Unlocked by an email code only, every time: the app's code passed at sign-in does not do it.
    await protectScope(tessera.db, { scope: 'orders:read', api: API, maxAgeSeconds: 0, factors: ['email'] });
    await sql`update users set email = 'team@example.test', email_verified = true where id = ${shared}`.execute(tessera.db);
    try {
      await reserveAs('jsmith');
      const agent = new Agent();
      const { page, verifier, state } = await authorize(agent);
      const consent = await memberTotp(agent, await sharedStep(agent, page), await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) + 30 }));
      assert.match(pageText(consent), /Allow access\?/);
      assert.match(pageText(consent), /Email a code to j•+@example\.test/, 'the member’s address is offered');
      const choose = formFor(consent, '/consent/verify');
      assert.doesNotMatch(consent.body, /t•*@example\.test/, 'the shared account’s own address is not offered');
      const codePage = await agent.follow(await agent.post(choose.action, { ...choose.fields, factor: 'email' }));
      const form = formFor(codePage, '/consent/verify/code');
      const unlocked = await agent.follow(await agent.post(form.action, { ...form.fields, code: await portal().lastCode('jsmith@example.test') }), (u) => u.startsWith(REDIRECT));
      assert.equal(await tessera.db.selectFrom('dev_outbox').select('id').where('recipient', '=', 'team@example.test').executeTakeFirst(), undefined);
      const key = /name="protected" value="([^"]+)"/.exec(unlocked.body)?.[1];
      assert.ok(key, 'unlocked: its box can be ticked');
      const decision = formFor(unlocked, '/consent');
      const callback = (await agent.follow(await agent.post(decision.action, { ...decision.fields, decision: 'allow', protected: key }), (u) => u.startsWith(REDIRECT))).location!;
      const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state }, { resource: API });
      assert.equal(decodeJwt(tokens.access_token).scope, 'orders:read');
      assert.deepEqual(tokens.claims()!.act, { sub: jsmith, preferred_username: 'jsmith' });
    } finally {
      await sql`update users set email = null, email_verified = false where id = ${shared}`.execute(tessera.db);
      await sql`delete from scope_rules`.execute(tessera.db);
    }
  });

  it('the sign-in’s resume raced from several tabs gives one code, with act; the others are refused, never issued without the member', async () => {
    await reserveAs('jsmith');
    const agent = new Agent();
    const { page, verifier, state } = await authorize(agent);
    const pick = formFor(await sharedStep(agent, page), '/shared');
    const codePage = await agent.follow(await agent.post(pick.action, { ...pick.fields, factor: 'email' }));
    const held = await agent.post(formFor(codePage, '/shared/code').action, { ...formFor(codePage, '/shared/code').fields, code: await portal().lastCode('jsmith@example.test') });
    // Eight tabs of one browser follow the same redirect at once.
    const tabs = Array.from({ length: 8 }, () => {
      const tab = new Agent();
      for (const [name, value] of agent.cookies) tab.cookies.set(name, value);
      return tab;
    });
    const ends = await Promise.all(tabs.map(async (tab) => {
      const reached = await tab.follow(await tab.get(held.location!), (u) => u.startsWith(REDIRECT));
      if (reached.location?.startsWith(REDIRECT)) return reached.location;
      return reached.body.includes('/consent"') ? allow(tab, reached).catch(() => null) : null;
    }));
    const codes = ends.filter((u): u is string => Boolean(u && new URL(u).searchParams.get('code')));
    assert.equal(codes.length, 1, `exactly one code is issued: ${JSON.stringify(ends)}`);
    for (const refused of ends.filter((u): u is string => Boolean(u && !codes.includes(u)))) assert.equal(new URL(refused).searchParams.get('error'), 'access_denied');
    const tokens = await oidc.authorizationCodeGrant(config, new URL(codes[0]!), { pkceCodeVerifier: verifier, expectedState: state }, { resource: API });
    assert.deepEqual(tokens.claims()!.act, { sub: jsmith, preferred_username: 'jsmith' });
  });

  it('an account that becomes shared loses what it signed in to before; a shared account joins no built-in group', async () => {
    await createUser(tessera.db, { username: 'oldacct', password: 'oldacct-password-1' });
    const agent = new Agent();
    const { page, verifier, state } = await authorize(agent);
    const form = formFor(page, '/login');
    const consent = await agent.follow(await agent.post(form.action, { ...form.fields, username: 'oldacct', password: 'oldacct-password-1' }), (u) => u.startsWith(REDIRECT));
    const tokens = await oidc.authorizationCodeGrant(config, new URL(await allow(agent, consent)), { pkceCodeVerifier: verifier, expectedState: state }, { resource: API });
    assert.ok(tokens.refresh_token, 'an ordinary account gets a refresh token');
    await enableSharedAccount(tessera.db, { username: 'oldacct', group: 'JIT_oldacct' });
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
    const silent = await authorize(agent, { prompt: 'none' });
    assert.equal(new URL(silent.page.location!).searchParams.get('error'), 'login_required');
    await assert.rejects(addGroupMember(tessera.db, 'auditors', 'oldacct'), /admin console is used with people's own accounts/);
  });
});
