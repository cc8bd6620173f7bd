import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { generate } from 'otplib';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { createClient } from '../src/clients/clients.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { createPolicy } from '../src/policy/policies.js';
import { allowClient, createResourceServer } from '../src/resource-servers/resource-servers.js';
import { protectScope, unprotectScope } from '../src/scopes/rules.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { ACR } from '../src/oidc/assurance.js';

const REDIRECT = 'http://127.0.0.1:9/bank/callback';
const BANK = 'https://api.bank.example';
const VERIFIER = 'step-up-verifier-'.padEnd(43, 'x');
const CHALLENGE = createHash('sha256').update(VERIFIER).digest('base64url');
const WRITE = `${BANK} payments:write`;
const TRANSFERS = 'https://transfers.bank.example';
const API_SECRET = 'transfers-api-secret-0123456789';

describe('scope step-up at consent', () => {
  let tessera: TestTessera;
  let issuer: string;
  let config: oidc.Configuration;
  let jwks: ReturnType<typeof createRemoteJWKSet>;
  const atCallback = (u: string) => u.startsWith(REDIRECT);

  before(async () => {
    // Rules and registrations are read afresh on each request, so each change applies at once.
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    issuer = tessera.issuer;
    await createResourceServer(tessera.db, { identifier: BANK, name: 'Bank API', scopes: ['payments:read', 'payments:write'], signingAlg: 'ES256' });
    await createClient(tessera.db, tessera.box, {
      clientId: 'bank', name: 'Bank app', public: true, redirectUris: [REDIRECT],
      grantTypes: ['authorization_code', 'refresh_token'], scope: 'openid profile email phone offline_access',
    });
    await allowClient(tessera.db, BANK, 'bank', ['payments:read', 'payments:write']);
    await protectScope(tessera.db, { scope: 'payments:write', api: BANK });
    await protectScope(tessera.db, { scope: 'phone', factors: ['sms', 'totp'] });
    // An API with opaque tokens, checked by introspection with its own client.
    await createResourceServer(tessera.db, { identifier: TRANSFERS, name: 'Transfers API', scopes: ['transfers:write'], accessTokenFormat: 'opaque' });
    await allowClient(tessera.db, TRANSFERS, 'bank');
    await protectScope(tessera.db, { scope: 'transfers:write', api: TRANSFERS });
    await createClient(tessera.db, tessera.box, { clientId: 'transfers-api', secret: API_SECRET, grantTypes: ['client_credentials'], scope: 'openid' });
    for (const name of ['pat', 'quin', 'ruth', 'stan', 'uli', 'vera', 'wes', 'xavi', 'yan', 'zed']) {
      await createUser(tessera.db, { username: name, password: `${name}-password-1`, email: `${name}@example.test`, emailVerified: true, phone: '+14155550199', phoneVerified: true });
    }
    await createUser(tessera.db, { username: 'nora', password: 'nora-password-1' });
    config = await oidc.discovery(new URL(issuer), 'bank', undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    jwks = createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri!));
  });
  after(async () => tessera.stop());

  function authorizationUrl(params: Record<string, string>): string {
    const url = new URL(`${issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: 'bank', response_type: 'code', redirect_uri: REDIRECT, state: 'st-1', code_challenge: CHALLENGE, code_challenge_method: 'S256',
      scope: 'openid profile payments:read payments:write', resource: BANK, ...params,
    }).toString();
    return url.href;
  }
  const authorize = async (agent: Agent, params: Record<string, string> = {}) => agent.follow(await agent.get(authorizationUrl(params)), atCallback);
  async function password(agent: Agent, page: AgentResponse, username: string): Promise<AgentResponse> {
    const form = formFor(page, '/login');
    return agent.follow(await agent.post(form.action, { ...form.fields, username, password: `${username}-password-1` }), atCallback);
  }
  async function decide(agent: Agent, page: AgentResponse, decision: 'allow' | 'deny', protectedKeys: string[] = []): Promise<AgentResponse> {
    const form = formFor(page, '/consent');
    const body = new URLSearchParams({ ...form.fields, decision });
    for (const key of protectedKeys) body.append('protected', key);
    return agent.follow(await agent.request(form.action, { method: 'POST', body: body.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }), atCallback);
  }
  async function latestCode(to: string): Promise<string> {
    const row = await tessera.db.selectFrom('dev_outbox').select('body').where('recipient', '=', to).orderBy('id', 'desc').executeTakeFirstOrThrow();
    return /\b(\d{6})\b/.exec(row.body)![1]!;
  }
  /** On the consent page: choose a factor, read the code, enter it; back on the consent page. */
  async function stepUp(agent: Agent, consent: AgentResponse, factor: 'email' | 'sms', to: string): Promise<AgentResponse> {
    const choose = formFor(consent, '/consent/verify');
    const codePage = await agent.follow(await agent.post(choose.action, { ...choose.fields, factor }));
    assert.match(codePage.body, /Enter your code/);
    const form = formFor(codePage, '/consent/verify/code');
    return agent.follow(await agent.post(form.action, { ...form.fields, code: await latestCode(to) }), atCallback);
  }
  async function exchange(callback: string, resource: string | null = BANK) {
    return oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: VERIFIER, expectedState: 'st-1', idTokenExpected: true }, resource ? { resource } : undefined);
  }
  const claimsOf = async (accessToken: string): Promise<JWTPayload & { scope?: string; acr?: string; amr?: string[] }> =>
    (await jwtVerify(accessToken, jwks, { issuer, audience: BANK })).payload;
  const isConsent = (page: AgentResponse) => /Allow access\?/.test(page.body);

  it('locked without a factor: granting the rest gives tokens without the protected scope; an earlier grant never skips the step', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'pat');
    assert.ok(isConsent(consent));
    assert.match(consent.body, /data-scope="payments:write"[\s\S]*?needs verification/);
    assert.match(consent.body, /Email a code to p•+@example\.test/);
    const callback = await decide(agent, consent, 'allow');
    const tokens = await exchange(callback.location!);
    const at = await claimsOf(tokens.access_token);
    assert.equal(at.scope, 'payments:read');
    assert.equal(at.acr, ACR.password);
    // Asked again for the protected scope: the consent step comes back, and prompt=none cannot skip it.
    assert.ok(isConsent(await authorize(agent)));
    const silent = await authorize(agent, { prompt: 'none' });
    assert.equal(new URL(silent.location!).searchParams.get('error'), 'interaction_required');
  });

  it('a code on the consent screen unlocks it: granted, in the token with acr, amr and auth_time from the ledger', async () => {
    const agent = new Agent();
    const before = Math.floor(Date.now() / 1000);
    const consent = await password(agent, await authorize(agent), 'quin');
    const unlocked = await stepUp(agent, consent, 'email', 'quin@example.test');
    assert.ok(isConsent(unlocked));
    assert.match(unlocked.body, /data-scope="payments:write"[\s\S]*?verified/);
    const tokens = await exchange((await decide(agent, unlocked, 'allow', [WRITE])).location!);
    const at = await claimsOf(tokens.access_token);
    assert.equal(at.scope, 'payments:read payments:write');
    assert.equal(at.acr, ACR.mfa);
    assert.deepEqual(at.amr, ['pwd', 'otp', 'mfa']);
    assert.ok(Number(at.auth_time) >= before, 'auth_time moved with the factor');
    const id = tokens.claims()!;
    assert.equal(id.acr, ACR.mfa);
    // Within the window: no page at all, prompt=none included, and the scope is still there.
    const again = await authorize(agent);
    assert.ok(again.location && atCallback(again.location), 'no consent page within the window');
    const silent = await authorize(agent, { prompt: 'none' });
    const second = await exchange(silent.location!);
    assert.equal((await claimsOf(second.access_token)).scope, 'payments:read payments:write');
    assert.equal((await claimsOf(second.access_token)).auth_time, at.auth_time, 'auth_time moves only when a factor is passed');
    // Stale: the factor is older than the window (15 minutes): consent again despite the grant, and prompt=none fails.
    const quin = await findUserByUsername(tessera.db, 'quin');
    await tessera.db.updateTable('session_factors').set({ passed_at: sql`now() - interval '20 minutes'` }).where('account_id', '=', quin!.id).where('factor', '=', 'email').execute();
    const stale = await authorize(agent);
    assert.ok(isConsent(stale), 'the consent step again');
    assert.match(stale.body, /needs verification/);
    assert.equal(new URL((await authorize(agent, { prompt: 'none' })).location!).searchParams.get('error'), 'interaction_required');
    // Declining it now takes it out of the grant: the next silent refresh of the old grant cannot bring it back.
    const partial = await exchange((await decide(agent, stale, 'allow')).location!);
    assert.equal((await claimsOf(partial.access_token)).scope, 'payments:read');
  });

  it('refresh never widens: tightening a rule takes the scope out of refreshed tokens until the user steps up again', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent, { scope: 'openid payments:read payments:write offline_access', prompt: 'consent' }), 'ruth');
    const tokens = await exchange((await decide(agent, await stepUp(agent, consent, 'email', 'ruth@example.test'), 'allow', [WRITE])).location!);
    assert.ok(tokens.refresh_token);
    let refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: BANK });
    assert.equal((await claimsOf(refreshed.access_token)).scope, 'payments:read payments:write');
    // Only the authenticator app counts now: the email step-up no longer satisfies the rule.
    await protectScope(tessera.db, { scope: 'payments:write', api: BANK, factors: ['totp'] });
    refreshed = await oidc.refreshTokenGrant(config, refreshed.refresh_token!, { resource: BANK });
    assert.equal((await claimsOf(refreshed.access_token)).scope, 'payments:read');
    // "Every time" is satisfied by a factor passed on that very consent screen…
    await protectScope(tessera.db, { scope: 'payments:write', api: BANK, maxAgeSeconds: 0 });
    refreshed = await oidc.refreshTokenGrant(config, refreshed.refresh_token!, { resource: BANK });
    assert.equal((await claimsOf(refreshed.access_token)).scope, 'payments:read payments:write', 'passed on that consent screen (age 0): "every time" is satisfied');
    // …and back to the default rule, the step-up it was granted with stands again.
    await protectScope(tessera.db, { scope: 'payments:write', api: BANK });
    refreshed = await oidc.refreshTokenGrant(config, refreshed.refresh_token!, { resource: BANK });
    assert.equal((await claimsOf(refreshed.access_token)).scope, 'payments:read payments:write');
  });

  it('a scope protected after it was granted is held back on refresh and asked for again at consent', async () => {
    await unprotectScope(tessera.db, 'payments:write', BANK);
    try {
      const agent = new Agent();
      const consent = await password(agent, await authorize(agent, { scope: 'openid payments:read payments:write offline_access', prompt: 'consent' }), 'stan');
      assert.doesNotMatch(consent.body, /needs verification/);
      const tokens = await exchange((await decide(agent, consent, 'allow')).location!);
      assert.equal((await claimsOf(tokens.access_token)).scope, 'payments:read payments:write');
      await protectScope(tessera.db, { scope: 'payments:write', api: BANK });
      const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: BANK });
      assert.equal((await claimsOf(refreshed.access_token)).scope, 'payments:read');
      assert.ok(isConsent(await authorize(agent)));
    } finally {
      await protectScope(tessera.db, { scope: 'payments:write', api: BANK });
    }
  });

  it('an OpenID scope (phone): only the factors its rule allows unlock it; UserInfo follows the grant', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent, { scope: 'openid phone', resource: '' }), 'uli');
    assert.match(consent.body, /data-scope="phone"[\s\S]*?needs verification/);
    assert.match(consent.body, /Text a code to/);
    assert.doesNotMatch(consent.body, /Email a code to/, 'email is not allowed for phone');
    const without = await exchange((await decide(agent, consent, 'allow')).location!, null);
    const info = await oidc.fetchUserInfo(config, without.access_token, String(without.claims()!.sub));
    assert.equal(info.phone_number, undefined);
    const again = await authorize(agent, { scope: 'openid phone', resource: '' });
    const tokens = await exchange((await decide(agent, await stepUp(agent, again, 'sms', '+14155550199'), 'allow', [' phone'])).location!, null);
    assert.deepEqual(tokens.claims()!.amr, ['pwd', 'sms', 'mfa']);
    assert.equal((await oidc.fetchUserInfo(config, tokens.access_token, String(tokens.claims()!.sub))).phone_number, '+14155550199');
  });

  it('tampered consent forms are refused: a scope never asked for, a locked scope, a replayed form', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'vera');
    const locked = await decide(agent, consent, 'allow', [WRITE]);
    assert.equal(locked.status, 403);
    assert.match(locked.body, /Verify it’s you before allowing payments:write/);
    const bogus = await decide(agent, consent, 'allow', [`${BANK} payments:admin`]);
    assert.equal(bogus.status, 400);
    assert.match(bogus.body, /not requested/);
    const huge = await decide(agent, consent, 'allow', ['x'.repeat(5000)]);
    assert.equal(huge.status, 400);
    const vera = await findUserByUsername(tessera.db, 'vera');
    const grants = await tessera.db.selectFrom('grant_step_ups').selectAll().execute();
    assert.equal(grants.length, grants.filter((g) => g.factor).length);
    assert.equal((await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', vera!.id).where('type', '=', 'consent.refused').execute()).length, 1);
    const done = await decide(agent, consent, 'allow');
    assert.ok(atCallback(done.location!));
    const replay = await decide(agent, consent, 'allow', [WRITE]);
    assert.ok(replay.status === 400 && /expired/i.test(replay.body), `a replayed form after the consent: ${replay.status}`);
  });

  it('an opaque API token: introspection says scope, acr, amr and auth_time; UserInfo says how the session signed in', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent, { scope: 'openid transfers:write', resource: TRANSFERS }), 'xavi');
    const key = `${TRANSFERS} transfers:write`;
    const tokens = await exchange((await decide(agent, await stepUp(agent, consent, 'email', 'xavi@example.test'), 'allow', [key])).location!, TRANSFERS);
    const response = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`transfers-api:${API_SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.access_token }),
    });
    const info = (await response.json()) as Record<string, unknown>;
    assert.equal(info.active, true);
    assert.equal(info.aud, TRANSFERS);
    assert.equal(info.scope, 'transfers:write');
    assert.equal(info.acr, ACR.mfa);
    assert.deepEqual(info.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(typeof info.auth_time, 'number');
    // A token for UserInfo (no resource) in the same session: acr and amr there too.
    const plain = await exchange((await authorize(agent, { scope: 'openid', resource: '' })).location!, null);
    const userinfo = await oidc.fetchUserInfo(config, plain.access_token, String(plain.claims()!.sub));
    assert.equal(userinfo.acr, ACR.mfa);
    assert.deepEqual(userinfo.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(userinfo.auth_time, info.auth_time);
  });

  it('two protected scopes unlocked together are granted together; a consent form sent again rewrites one grant', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent, { scope: 'openid phone payments:read payments:write' }), 'yan');
    assert.match(consent.body, /Unlocks with a text message code\./, 'phone says which factor unlocks it');
    const unlocked = await stepUp(agent, consent, 'sms', '+14155550199');
    assert.match(unlocked.body, /data-scope="phone"[\s\S]*?verified/);
    assert.match(unlocked.body, /data-scope="payments:write"[\s\S]*?verified/);
    // The same consent form five times (a double click, a retry) before the browser goes on.
    const form = formFor(unlocked, '/consent');
    const body = new URLSearchParams({ ...form.fields, decision: 'allow' });
    body.append('protected', ' phone');
    body.append('protected', WRITE);
    let sent: AgentResponse | null = null;
    for (let i = 0; i < 5; i++) {
      sent = await agent.request(form.action, { method: 'POST', body: body.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(sent.status, 303);
    }
    const yan = await findUserByUsername(tessera.db, 'yan');
    const grants = await tessera.db.selectFrom('oidc_models').select('id').where('model', '=', 'Grant').where(sql<boolean>`payload->>'accountId' = ${yan!.id}`).execute();
    assert.equal(grants.length, 1, 'one grant, however often the form was sent');
    const records = await tessera.db.selectFrom('grant_step_ups').selectAll().where('grant_id', '=', grants[0]!.id).orderBy('scope').execute();
    assert.deepEqual(records.map((r) => [r.resource, r.scope, r.factor, r.at_consent]), [['https://api.bank.example', 'payments:write', 'sms', true], ['', 'phone', 'sms', true]]);
    const tokens = await exchange((await agent.follow(sent!, atCallback)).location!);
    assert.equal((await claimsOf(tokens.access_token)).scope, 'payments:read payments:write');
    assert.equal((await oidc.fetchUserInfo(config, (await exchange((await authorize(agent, { scope: 'openid phone', resource: '' })).location!, null)).access_token, yan!.id)).phone_number, '+14155550199');
  });

  it('a narrowed access policy locks the scope again: an earlier email code no longer counts', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'zed');
    await exchange((await decide(agent, await stepUp(agent, consent, 'email', 'zed@example.test'), 'allow', [WRITE])).location!);
    assert.ok(atCallback((await authorize(agent)).location ?? ''), 'within the window: no page');
    await createPolicy(tessera.db, { name: 'zed sms only', subjectType: 'user', subject: 'zed', mfa: 'optional', allowedFactors: ['sms'] });
    const again = await authorize(agent);
    assert.ok(isConsent(again));
    assert.match(again.body, /data-scope="payments:write"[\s\S]*?needs verification/);
    assert.doesNotMatch(again.body, /Email a code/);
  });

  it('after a wrong code the page still says when another code may be sent', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'pat');
    const choose = formFor(consent, '/consent/verify');
    const codePage = await agent.follow(await agent.post(choose.action, { ...choose.fields, factor: 'email' }));
    assert.match(codePage.body, /This lets you allow payments:write for Bank app\./);
    assert.match(codePage.body, /available in \d+ seconds/);
    const right = await latestCode('pat@example.test');
    const form = formFor(codePage, '/consent/verify/code');
    const wrong = await agent.post(form.action, { ...form.fields, code: right === '000000' ? '000001' : '000000' });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /That code is not right\. 4 tries left\./);
    assert.match(wrong.body, /available in \d+ seconds/, 'the resend cooldown is still shown');
  });

  it('a user with no factor the rule accepts is told why, and can still grant the rest', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'nora');
    assert.match(consent.body, /none is set up for your account/);
    assert.doesNotMatch(consent.body, /consent\/verify/, 'nothing to choose');
    const tokens = await exchange((await decide(agent, consent, 'allow')).location!);
    assert.equal((await claimsOf(tokens.access_token)).scope, 'payments:read');
  });

  it('an authenticator app passed at login counts: the scope is unlocked on arrival', async () => {
    const user = await createUser(tessera.db, { username: 'tina', password: 'tina-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test');
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    const agent = new Agent();
    const codePage = await password(agent, await authorize(agent), 'tina');
    const form = formFor(codePage, '/mfa/code');
    const consent = await agent.follow(await agent.post(form.action, { ...form.fields, code: await generate({ secret: enrolment.secret }) }), atCallback);
    assert.match(consent.body, /data-scope="payments:write"[\s\S]*?verified/);
    const tokens = await exchange((await decide(agent, consent, 'allow', [WRITE])).location!);
    assert.equal((await claimsOf(tokens.access_token)).scope, 'payments:read payments:write');
  });

  it('50 parallel wrong codes on the consent screen, the right one last: the lockout admits only its threshold', async () => {
    const agent = new Agent();
    const consent = await password(agent, await authorize(agent), 'wes');
    const choose = formFor(consent, '/consent/verify');
    const codePage = await agent.follow(await agent.post(choose.action, { ...choose.fields, factor: 'email' }));
    const right = await latestCode('wes@example.test');
    const wrong = right === '000000' ? '000001' : '000000';
    const form = formFor(codePage, '/consent/verify/code');
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => agent.post(form.action, { ...form.fields, code: i === 49 ? right : wrong })));
    assert.equal(answers.filter((a) => a.status === 303).length, 0, 'the right code, last, is refused: the account locked first');
    const wes = await findUserByUsername(tessera.db, 'wes');
    const challenge = await tessera.db.selectFrom('otp_challenges').select('attempts').where('user_id', '=', wes!.id).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    assert.ok(challenge.attempts <= 5, `at most the lockout threshold checked (${challenge.attempts})`);
    assert.ok(wes!.locked_until && wes!.locked_until > new Date());
  });
});

describe('acr_values, max_age and prompt=login with the ledger', () => {
  let tessera: TestTessera;
  let issuer: string;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    issuer = tessera.issuer;
    await createClient(tessera.db, tessera.box, { clientId: 'rp', name: 'RP', public: true, redirectUris: [REDIRECT], scope: 'openid profile', requireConsent: false });
    for (const name of ['ada', 'bob', 'cy', 'dee', 'eve']) {
      await createUser(tessera.db, { username: name, password: `${name}-password-1`, email: `${name}@example.test`, emailVerified: true, phone: '+14155550123', phoneVerified: true });
    }
    await createUser(tessera.db, { username: 'fay', password: 'fay-password-1' });
    await createUser(tessera.db, { username: 'gus', password: 'gus-password-1' });
    await createPolicy(tessera.db, { name: 'gus app', subjectType: 'user', subject: 'gus', mfa: 'required', requireAuthenticatorApp: true });
  });
  after(async () => tessera.stop());

  const atCallback = (u: string) => u.startsWith(REDIRECT);
  function url(params: Record<string, string> = {}): string {
    const u = new URL(`${issuer}/auth`);
    u.search = new URLSearchParams({ client_id: 'rp', response_type: 'code', redirect_uri: REDIRECT, scope: 'openid', state: 's', code_challenge: CHALLENGE, code_challenge_method: 'S256', ...params }).toString();
    return u.href;
  }
  const open = async (agent: Agent, params: Record<string, string> = {}) => agent.follow(await agent.get(url(params)), atCallback);
  async function password(agent: Agent, page: AgentResponse, username: string) {
    const form = formFor(page, '/login');
    return agent.follow(await agent.post(form.action, { ...form.fields, username, password: `${username}-password-1` }), atCallback);
  }
  async function idToken(callback: string): Promise<Record<string, unknown>> {
    const code = new URL(callback).searchParams.get('code')!;
    const response = await fetch(`${issuer}/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, client_id: 'rp', code_verifier: VERIFIER }) });
    const body = (await response.json()) as { id_token: string };
    return JSON.parse(Buffer.from(body.id_token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
  }
  async function code(agent: Agent, page: AgentResponse, factor: 'email' | 'sms', to: string, postedFactor: string = factor) {
    const choose = formFor(page, '/mfa');
    const codePage = await agent.follow(await agent.post(choose.action, { ...choose.fields, factor }));
    const row = await tessera.db.selectFrom('dev_outbox').select('body').where('recipient', '=', to).orderBy('id', 'desc').executeTakeFirstOrThrow();
    const form = formFor(codePage, '/mfa/code');
    return agent.follow(await agent.post(form.action, { ...form.fields, factor: postedFactor, code: /\b(\d{6})\b/.exec(row.body)![1]! }), atCallback);
  }

  it('acr_values on a password-only session: the second factor only; prompt=login or max_age=0 with it: the password first, then the factor', async () => {
    const agent = new Agent();
    const first = await idToken((await password(agent, await open(agent), 'ada')).location!);
    assert.equal(first.acr, ACR.password);
    const stepUp = await open(agent, { acr_values: ACR.mfa });
    assert.match(stepUp.body, /Verify it’s you/, 'a step-up asks no password');
    const stepped = await idToken((await code(agent, stepUp, 'email', 'ada@example.test')).location!);
    assert.equal(stepped.acr, ACR.mfa);
    assert.ok(Number(stepped.auth_time) >= Number(first.auth_time));
    for (const forced of [{ prompt: 'login' }, { max_age: '0' }] as Record<string, string>[]) {
      const other = new Agent();
      await password(other, await open(other), 'bob');
      const page = await open(other, { ...forced, acr_values: ACR.mfa });
      assert.match(page.body, /name="password"/, `${JSON.stringify(forced)}: the password again`);
      const factor = await password(other, page, 'bob');
      assert.match(factor.body, /Verify it’s you/, 'then the second factor');
      const claims = await idToken((await code(other, factor, 'email', 'bob@example.test')).location!);
      assert.equal(claims.acr, ACR.mfa);
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    }
  });

  it('a forced re-authentication starts the ledger over: the earlier second factor no longer counts', async () => {
    const agent = new Agent();
    await code(agent, await password(agent, await open(agent, { acr_values: ACR.mfa }), 'eve'), 'email', 'eve@example.test');
    assert.ok(atCallback((await open(agent, { acr_values: ACR.mfa, prompt: 'none' })).location ?? ''), 'MFA fresh: a code, silently');
    const relogin = await password(agent, await open(agent, { prompt: 'login' }), 'eve');
    assert.equal((await idToken(relogin.location!)).acr, ACR.password);
    const silent = await open(agent, { acr_values: ACR.mfa, prompt: 'none' });
    assert.equal(new URL(silent.location!).searchParams.get('error'), 'interaction_required', 'the password-only re-login did not keep the earlier MFA');
  });

  it('an MFA lasts as long as mfa.maxAgeSeconds, not the whole session: an older one steps up again', async () => {
    const agent = new Agent();
    const page = await password(agent, await open(agent, { acr_values: ACR.mfa }), 'cy');
    await code(agent, page, 'email', 'cy@example.test');
    const within = await open(agent, { acr_values: ACR.mfa });
    assert.ok(within.location && atCallback(within.location), 'fresh: no step');
    const cy = await findUserByUsername(tessera.db, 'cy');
    await tessera.db.updateTable('session_factors').set({ passed_at: sql`now() - interval '13 hours'` }).where('account_id', '=', cy!.id).where('factor', '=', 'email').execute();
    const stale = await open(agent, { acr_values: ACR.mfa });
    assert.match(stale.body, /Verify it’s you/, '13 hours old: asked again');
  });

  it('the amr comes from the challenge that was verified, never from the form', async () => {
    const agent = new Agent();
    const page = await password(agent, await open(agent, { acr_values: ACR.mfa }), 'dee');
    const claims = await idToken((await code(agent, page, 'email', 'dee@example.test', 'sms')).location!);
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa'], 'an email code posted as "sms" is still an email code');
  });

  it('acr_values with the password alone cannot attach an authenticator app to an account that has no factor', async () => {
    const agent = new Agent();
    const page = await password(agent, await open(agent, { acr_values: ACR.mfa }), 'fay');
    assert.equal(page.status, 403);
    assert.match(page.body, /Cannot complete sign-in/);
    assert.doesNotMatch(page.body, /mfa\/enrol/);
    const uid = new URL(page.url).pathname.split('/')[2];
    const enrol = await agent.get(`${issuer}/interaction/${uid}/mfa/enrol`);
    assert.equal(enrol.status, 303, 'the enrolment page is closed');
    const fay = await findUserByUsername(tessera.db, 'fay');
    assert.equal((await tessera.db.selectFrom('authenticators').selectAll().where('user_id', '=', fay!.id).execute()).length, 0);
  });

  it('two sign-ins enrolling the same account never see the same authenticator secret', async () => {
    const secrets: string[] = [];
    for (let i = 0; i < 2; i++) {
      const agent = new Agent();
      const page = await password(agent, await open(agent), 'gus');
      secrets.push(/id="totp-secret">([^<]+)</.exec(page.body)![1]!);
      // The same sign-in shows the same secret again.
      assert.equal(/id="totp-secret">([^<]+)</.exec((await agent.get(page.url)).body)![1], secrets[i]);
    }
    assert.notEqual(secrets[0], secrets[1]);
  });
});
