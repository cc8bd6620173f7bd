import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent } from './support/agent.js';
import { signIn } from './support/journey.js';
import { createClient } from '../src/clients/clients.js';
import { createUser, setStatus } from '../src/directory/users.js';
import { rotateKeys } from '../src/oidc/keys.js';
import { ACR } from '../src/oidc/assurance.js';

const REDIRECT = 'http://127.0.0.1:9/callback';
const SECRET = 'rp-secret-0123456789abcdef';

describe('OpenID Connect over HTTP with an independent relying party (openid-client)', () => {
  let tessera: TestTessera;
  let config: oidc.Configuration;
  let userId: string;

  before(async () => {
    // Reuse detection at once (the reuse window has its own test below).
    tessera = await startTestTessera({ REFRESH_TOKEN_REUSE_SECONDS: '0' });
    await createClient(tessera.db, tessera.box, {
      clientId: 'rp', secret: SECRET, redirectUris: [REDIRECT], postLogoutRedirectUris: ['http://127.0.0.1:9/bye'],
      grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'], name: 'Relying Party',
    });
    userId = (await createUser(tessera.db, { username: 'alice', password: 'correct horse battery', email: 'alice@example.com', emailVerified: true, phone: '+447700900123', givenName: 'Alice', familyName: 'Liddell' })).id;
    config = await oidc.discovery(new URL(tessera.issuer), 'rp', undefined, oidc.ClientSecretBasic(SECRET), { execute: [oidc.allowInsecureRequests] });
  });
  after(async () => tessera.stop());

  async function login(scope = 'openid profile email phone offline_access') {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT, scope, state, nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const agent = new Agent();
    const callback = await signIn(agent, url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
    return { tokens, agent };
  }

  /** The token endpoint, asked directly (for bursts of the same request). */
  async function tokenPost(form: Record<string, string>): Promise<{ status: number; body: { error?: string; error_description?: string; refresh_token?: string; access_token?: string } }> {
    const r = await fetch(`${tessera.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`rp:${SECRET}`).toString('base64')}` },
      body: new URLSearchParams(form),
    });
    return { status: r.status, body: (await r.json()) as { error?: string; refresh_token?: string; access_token?: string } };
  }
  const refreshWith = (token: string, extra: Record<string, string> = {}) => tokenPost({ grant_type: 'refresh_token', refresh_token: token, ...extra });

  /** Waits until the wall clock is `ms` before the next second: PostgreSQL's and Node's seconds then differ across a burst. */
  async function nearSecondBoundary(ms = 15): Promise<void> {
    const wait = (1000 - ms - (Date.now() % 1000) + 1000) % 1000;
    await new Promise((resolve) => setTimeout(resolve, wait));
  }

  it('discovery advertises the endpoints, PKCE S256 and the acr values', () => {
    const m = config.serverMetadata();
    assert.equal(m.issuer, tessera.issuer);
    assert.deepEqual(m.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(m.acr_values_supported, [ACR.password, ACR.mfa, ACR.phr]);
    for (const endpoint of ['introspection_endpoint', 'revocation_endpoint', 'userinfo_endpoint', 'end_session_endpoint', 'jwks_uri', 'pushed_authorization_request_endpoint'] as const) {
      assert.ok(m[endpoint], `${endpoint} is advertised`);
    }
    // Only what a client can be registered with (README "Protocol"); no DPoP.
    assert.deepEqual(m.token_endpoint_auth_methods_supported, ['client_secret_basic', 'none']);
    assert.equal(m.dpop_signing_alg_values_supported, undefined);
  });

  it('a pushed authorization request (RFC 9126) signs in like a plain one', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = await oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: REDIRECT, scope: 'openid', state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    assert.ok(url.searchParams.get('request_uri')?.startsWith('urn:ietf:params:oauth:request_uri:'));
    const callback = await signIn(new Agent(), url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true });
    assert.equal(tokens.claims()!.sub, userId);
  });

  it('code + PKCE: the ID token validates and carries auth_time, amr and acr', async () => {
    const before = Math.floor(Date.now() / 1000) - 1;
    const { tokens } = await login();
    const claims = tokens.claims()!;
    assert.equal(claims.sub, userId);
    assert.deepEqual(claims.amr, ['pwd']);
    assert.equal(claims.acr, ACR.password);
    assert.ok(typeof claims.auth_time === 'number' && claims.auth_time >= before);
    // Verified once more, independently, against the published JWKS.
    const jwks = createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri!));
    const { payload } = await jwtVerify(tokens.id_token!, jwks, { issuer: tessera.issuer, audience: 'rp' });
    assert.equal(payload.sub, userId);
    assert.ok(tokens.refresh_token, 'a refresh token is issued');
  });

  it('userinfo releases the claims of the granted scopes', async () => {
    const { tokens } = await login('openid email');
    const info = await oidc.fetchUserInfo(config, tokens.access_token, userId);
    assert.equal(info.email, 'alice@example.com');
    assert.equal(info.email_verified, true);
    assert.equal(info.phone_number, undefined, 'phone was not granted');
    const full = await login();
    const all = await oidc.fetchUserInfo(config, full.tokens.access_token, userId);
    assert.equal(all.phone_number, '+447700900123');
    assert.equal(all.given_name, 'Alice');
    assert.equal(all.preferred_username, 'alice');
  });

  it('refresh tokens rotate; replaying a used one revokes the whole grant', async () => {
    const { tokens } = await login();
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    assert.ok(refreshed.access_token);
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
    const again = await oidc.refreshTokenGrant(config, refreshed.refresh_token!);
    assert.ok(again.access_token);
    // The replay of a rotated token means it leaked: everything in its grant stops working.
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
    await assert.rejects(oidc.refreshTokenGrant(config, again.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
    assert.equal((await oidc.tokenIntrospection(config, again.access_token)).active, false);
  });

  it('50 refreshes of one token at once, across a second boundary: one rotates it, the others are reuse and revoke the grant; another grant is untouched', async () => {
    const { tokens: other } = await login();
    for (let burst = 0; burst < 3; burst++) {
      const { tokens } = await login();
      await nearSecondBoundary();
      const answers = await Promise.all(Array.from({ length: 50 }, () => refreshWith(tokens.refresh_token!)));
      const rotated = answers.filter((a) => a.status === 200);
      assert.ok(rotated.length <= 1, `at most one refresh rotated the token (${rotated.length})`);
      assert.ok(answers.filter((a) => a.status === 400).every((a) => a.body.error === 'invalid_grant'), JSON.stringify(answers.find((a) => a.status === 400 && a.body.error !== 'invalid_grant')));
      assert.equal(answers.filter((a) => a.status !== 200 && a.status !== 400).length, 0, JSON.stringify(answers.find((a) => a.status !== 200 && a.status !== 400)));
      // Presented more than once: the grant is revoked, the rotated token and the access tokens with it.
      for (const a of rotated) {
        assert.equal((await refreshWith(a.body.refresh_token!)).body.error, 'invalid_grant');
        assert.equal((await oidc.tokenIntrospection(config, a.body.access_token!)).active, false);
      }
      assert.equal((await refreshWith(tokens.refresh_token!)).body.error, 'invalid_grant', 'and a later try with the token');
    }
    // The right answer last: another grant's token still refreshes.
    assert.equal((await refreshWith(other.refresh_token!)).status, 200);
  });

  it('50 exchanges of one authorization code at once: one gets tokens, and the grant is revoked with them', async () => {
    const { tokens: other } = await login();
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid offline_access', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const callback = await signIn(new Agent(), url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
    const code = new URL(callback).searchParams.get('code')!;
    const revokedBefore = await tessera.db.selectFrom('audit_events').select('id').where('type', '=', 'token.revoked').execute();
    const answers = await Promise.all(Array.from({ length: 50 }, () => tokenPost({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier })));
    const issued = answers.filter((a) => a.status === 200);
    assert.ok(issued.length <= 1, `at most one exchange got tokens (${issued.length})`);
    assert.ok(answers.filter((a) => a.status !== 200).every((a) => a.status === 400 && a.body.error === 'invalid_grant'), JSON.stringify(answers.find((a) => a.status !== 200 && a.body.error !== 'invalid_grant')));
    for (const a of issued) {
      assert.equal((await refreshWith(a.body.refresh_token!)).body.error, 'invalid_grant', 'the winner\'s refresh token went with the grant');
      assert.equal((await oidc.tokenIntrospection(config, a.body.access_token!)).active, false, 'and its access token');
    }
    // Audit rows are written in batches, shortly after.
    let revoked = 0;
    for (let i = 0; i < 50 && revoked <= revokedBefore.length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      revoked = (await tessera.db.selectFrom('audit_events').select('id').where('type', '=', 'token.revoked').execute()).length;
    }
    assert.ok(revoked > revokedBefore.length, 'the revocation is in the audit log');
    // The right answer last: another grant's token still refreshes.
    assert.equal((await refreshWith(other.refresh_token!)).status, 200);
  });

  it('a refresh refused after its new token was made (an unknown resource) leaves the token unused', async () => {
    const { tokens } = await login();
    const refused = await refreshWith(tokens.refresh_token!, { resource: 'https://unknown.example/api' });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, 'invalid_target');
    const refreshed = await refreshWith(tokens.refresh_token!);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await refreshWith(refreshed.body.refresh_token!)).status, 200);
  });

  it('within the reuse window a rotated refresh token may be retried (its answer was lost); after it, reuse revokes the grant', async () => {
    const windowed = await startTestTessera({ REFRESH_TOKEN_REUSE_SECONDS: '1' }, tessera.testDb);
    try {
      const rpConfig = await oidc.discovery(new URL(windowed.issuer), 'rp', undefined, oidc.ClientSecretBasic(SECRET), { execute: [oidc.allowInsecureRequests] });
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(rpConfig, { redirect_uri: REDIRECT, scope: 'openid offline_access', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', prompt: 'consent' });
      const callback = await signIn(new Agent(), url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
      const tokens = await oidc.authorizationCodeGrant(rpConfig, new URL(callback), { pkceCodeVerifier: verifier, idTokenExpected: true });
      const first = await oidc.refreshTokenGrant(rpConfig, tokens.refresh_token!);
      const retried = await oidc.refreshTokenGrant(rpConfig, tokens.refresh_token!);
      assert.ok(retried.refresh_token, 'the retry within the window gets tokens');
      const next = await oidc.refreshTokenGrant(rpConfig, retried.refresh_token!);
      assert.ok(next.refresh_token, 'the retry\'s token goes on');
      // The retry replaced the first answer: only a second holder of the token could present that one.
      await assert.rejects(oidc.refreshTokenGrant(rpConfig, first.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
      await assert.rejects(oidc.refreshTokenGrant(rpConfig, next.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant', 'which revoked the grant');

      const again = await oidc.authorizationCodeGrant(rpConfig, new URL(await signIn(new Agent(), url.href.replace(/state=[^&]*/, ''), { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT })), { pkceCodeVerifier: verifier, idTokenExpected: true });
      const rotated = await oidc.refreshTokenGrant(rpConfig, again.refresh_token!);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await assert.rejects(oidc.refreshTokenGrant(rpConfig, again.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
      await assert.rejects(oidc.refreshTokenGrant(rpConfig, rotated.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant', 'reuse after the window revoked the whole grant');
    } finally {
      await windowed.close();
    }
  });

  it('a database dump holds no usable token: what is stored does not work at UserInfo, the tokens are not in it', async () => {
    const { tokens } = await login();
    const rows = await tessera.db.selectFrom('oidc_models').select(['id', 'payload']).execute();
    const dump = JSON.stringify(rows);
    assert.ok(!dump.includes(tokens.access_token), 'no access token');
    assert.ok(!dump.includes(tokens.refresh_token!), 'no refresh token');
    for (const row of rows.filter((r) => r.id.startsWith('h:')).slice(0, 20)) {
      const r = await fetch(`${tessera.issuer}/me`, { headers: { authorization: `Bearer ${row.id}` } });
      assert.equal(r.status, 401, 'a stored id is not a token');
    }
    assert.equal((await fetch(`${tessera.issuer}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 200);
  });

  it('introspection and revocation', async () => {
    const { tokens } = await login();
    const active = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(active.active, true);
    assert.equal(active.sub, userId);
    assert.equal(active.client_id, 'rp');
    await oidc.tokenRevocation(config, tokens.access_token);
    const revoked = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(revoked.active, false);
    await oidc.tokenRevocation(config, tokens.refresh_token!);
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!));
  });

  it('client credentials', async () => {
    const tokens = await oidc.clientCredentialsGrant(config);
    assert.ok(tokens.access_token);
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.client_id, 'rp');
    await assert.rejects(
      oidc.clientCredentialsGrant(await oidc.discovery(new URL(tessera.issuer), 'rp', undefined, oidc.ClientSecretBasic('wrong-secret-xxxxxxxx'), { execute: [oidc.allowInsecureRequests] })),
      (e: unknown) => JSON.stringify((e as { cause?: unknown }).cause).includes('invalid_client'),
    );
  });

  it('RP-initiated logout ends the session', async () => {
    const { tokens, agent } = await login();
    const url = oidc.buildEndSessionUrl(config, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'http://127.0.0.1:9/bye', state: 'st' });
    const page = await agent.get(url.href);
    assert.equal(page.status, 200);
    assert.match(page.body, /Sign out/);
    const form = /<form[^>]*action="([^"]+)"[\s\S]*?name="xsrf" value="([^"]+)"/.exec(page.body);
    assert.ok(form, 'logout form with its xsrf token');
    const done = await agent.post(new URL(form[1]!, tessera.issuer).href, { xsrf: form[2]!, logout: 'yes' });
    const landed = await agent.follow(done, (u) => u.startsWith('http://127.0.0.1:9/'));
    assert.equal(landed.location, 'http://127.0.0.1:9/bye?state=st');
    // The session is gone: a new authorization asks for the password again.
    const verifier = oidc.randomPKCECodeVerifier();
    const again = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const loginPage = await agent.follow(await agent.get(again.href));
    assert.match(loginPage.body, /name="password"/);
    await tessera.audit.flush();
    const events = await tessera.db.selectFrom('audit_events').select('type').where('type', '=', 'logout').execute();
    assert.ok(events.length >= 1);
  });

  it('a returning user with a session and a grant is not asked again', async () => {
    const { agent } = await login();
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid profile', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const first = await agent.follow(await agent.get(url.href), (u) => u.startsWith(REDIRECT));
    assert.ok(first.location?.startsWith(REDIRECT), 'straight back to the client');
    assert.ok(new URL(first.location!).searchParams.get('code'));
  });

  it('PKCE is required, also for confidential clients', async () => {
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid', state: 'x' });
    const res = await new Agent().get(url.href);
    assert.equal(res.status, 303);
    const back = new URL(res.location!);
    assert.equal(back.searchParams.get('error'), 'invalid_request');
    assert.match(back.searchParams.get('error_description') ?? '', /PKCE/);
  });

  it('an authorization code can be used once; its replay revokes what it issued', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const callback = await signIn(new Agent(), url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier });
    await assert.rejects(oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier }), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, false, 'tokens from a replayed code are revoked');
  });

  it('key rotation publishes new signing keys and keeps the old ones for verification', async () => {
    const { tokens: oldTokens } = await login();
    const oldKid = decodeProtectedHeader(oldTokens.id_token!).kid;
    const { kids } = await rotateKeys(tessera.db, tessera.box);
    // A restarted instance on the same database signs with the new key.
    const restarted = await startTestTessera({}, tessera.testDb);
    try {
      const jwks = (await (await fetch(`${restarted.issuer}/jwks`)).json()) as { keys: { kid: string }[] };
      const published = jwks.keys.map((k) => k.kid);
      assert.ok(published.includes(oldKid!), 'old key still published');
      for (const kid of kids) assert.ok(published.includes(kid), 'new key published');
      await jwtVerify(oldTokens.id_token!, createRemoteJWKSet(new URL(`${restarted.issuer}/jwks`)), { audience: 'rp' });
      await createClient(tessera.db, tessera.box, { clientId: 'rp2', secret: SECRET, redirectUris: [REDIRECT] });
      const verifier = oidc.randomPKCECodeVerifier();
      const rp2 = await oidc.discovery(new URL(restarted.issuer), 'rp2', undefined, oidc.ClientSecretBasic(SECRET), { execute: [oidc.allowInsecureRequests] });
      const url = oidc.buildAuthorizationUrl(rp2, { redirect_uri: REDIRECT, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
      const callback = await signIn(new Agent(), url.href, { username: 'alice', password: 'correct horse battery', redirectUri: REDIRECT });
      const fresh = await oidc.authorizationCodeGrant(rp2, new URL(callback), { pkceCodeVerifier: verifier });
      const newKid = decodeProtectedHeader(fresh.id_token!).kid;
      assert.ok(kids.includes(newKid!), 'signed with a new key');
    } finally {
      await restarted.stop();
    }
  });

  it('a disabled user: refresh refused, UserInfo refused, the session no longer signs in', async () => {
    await createUser(tessera.db, { username: 'mallory', password: 'mallory-password-1' });
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid offline_access', prompt: 'consent', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const agent = new Agent();
    const callback = await signIn(agent, url.href, { username: 'mallory', password: 'mallory-password-1', redirectUri: REDIRECT });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier });
    const sub = tokens.claims()!.sub;
    await setStatus(tessera.db, 'mallory', 'disabled');
    await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token!), (e: unknown) => (e as { error?: string }).error === 'invalid_grant');
    await assert.rejects(oidc.fetchUserInfo(config, tokens.access_token, sub));
    const again = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const page = await agent.follow(await agent.get(again.href), (u) => u.startsWith(REDIRECT));
    assert.match(page.body, /name="password"/, 'asked to sign in again rather than sent back with a code');
  });

  it('the audit log records logins, consent and token issuance', async () => {
    await tessera.audit.flush();
    const rows = await tessera.db.selectFrom('audit_events').select(['type', 'subject', 'client_id']).execute();
    const types = new Set(rows.map((r) => r.type));
    for (const t of ['login.success', 'consent.given', 'token.issued']) assert.ok(types.has(t), `${t} recorded`);
    assert.ok(rows.some((r) => r.type === 'login.success' && r.subject === userId && r.client_id === 'rp'));
  });
});
