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
import { loadSettings } from '../src/settings/settings.js';
import { enableSharedAccount } from '../src/jit/shared-accounts.js';
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
    tessera = await startTestTessera();
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
    // The member's own factors: their email (masked) and their app.
    assert.match(pageText(choice), /j•*@example\.test|authenticator app/i);
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
    for (const type of ['jit.reserved', 'jit.sign_in_started', 'login.success', 'consent.given', 'token.issued']) {
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
    const consent = await memberTotp(agent, await sharedStep(agent, page), await generate({ secret: totpSecret, epoch: Math.floor(Date.now() / 1000) + 30 }));
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

  it('50 parallel codes at the shared step, the right one last: the member’s lockout holds, the reservation is not spent', async () => {
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
    const member = await tessera.db.selectFrom('users').select(['failed_logins', 'locked_until']).where('id', '=', jsmith).executeTakeFirstOrThrow();
    assert.ok(member.locked_until && member.locked_until > new Date(), 'the member is locked');
    assert.equal(await liveCount(), 1, 'still live: nothing was signed in');
    await sql`update users set failed_logins = 0, locked_until = null where id = ${jsmith}`.execute(tessera.db);
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
    assert.match(pageText(refused), /shared account/);
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
    assert.match(words, /acmeadmin jsmith signed in/, 'past reservations are listed');

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
    assert.match(pageText(refused), /decides who may reserve winadmin/);
    const stop = formsOf(shared2).filter((f) => f.action.endsWith('/shared-accounts/disable')).find((f) => f.fields.username === 'winadmin')!;
    const stopped = await agent.follow(await agent.post(stop.action, stop.fields));
    assert.match(pageText(stopped), /no longer shared/);
    assert.doesNotMatch(pageText(stopped), /winadmin JIT_winadmin/);
    assert.equal((await portal().events('jit.released')).at(-1)!.actor, 'admin:root');
  });
});
