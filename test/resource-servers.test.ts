import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent } from './support/agent.js';
import { signIn } from './support/journey.js';
import { createClient, rotateClientSecret } from '../src/clients/clients.js';
import { createUser } from '../src/directory/users.js';
import { allowClient, createResourceServer, disallowClient, removeResourceServer } from '../src/resource-servers/resource-servers.js';
import { ACR } from '../src/oidc/assurance.js';

const REDIRECT = 'http://127.0.0.1:9/callback';
const SECRET = 'api-client-secret-0123456789';
const ORDERS = 'https://orders.example.test';
const LEDGER = 'https://ledger.example.test/v1';
const REPORTS = 'https://reports.example.test';

describe('APIs (resource servers): audience-bound access tokens', () => {
  let tessera: TestTessera;
  let config: oidc.Configuration;
  let jwks: ReturnType<typeof createRemoteJWKSet>;
  let userId: string;

  before(async () => {
    // Registrations are read afresh on each request, so removals apply at once.
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    await createResourceServer(tessera.db, { identifier: ORDERS, name: 'Orders API', scopes: ['orders:read', 'orders:write'] });
    await createResourceServer(tessera.db, { identifier: LEDGER, name: 'Ledger API', scopes: ['ledger:read'], accessTokenFormat: 'opaque' });
    await createResourceServer(tessera.db, { identifier: REPORTS, name: 'Reports API', scopes: ['reports:read'], signingAlg: 'RS256', accessTokenTtlSeconds: 120 });
    await createClient(tessera.db, tessera.box, {
      clientId: 'svc', secret: SECRET, redirectUris: [REDIRECT], name: 'Service',
      grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
      scope: 'openid email offline_access',
    });
    await createClient(tessera.db, tessera.box, { clientId: 'other', secret: SECRET, grantTypes: ['client_credentials'], scope: 'openid' });
    await allowClient(tessera.db, ORDERS, 'svc', ['orders:read']);
    await allowClient(tessera.db, LEDGER, 'svc');
    await allowClient(tessera.db, REPORTS, 'svc');
    userId = (await createUser(tessera.db, { username: 'erin', password: 'erin-password-123', email: 'erin@example.com', emailVerified: true })).id;
    config = await oidc.discovery(new URL(tessera.issuer), 'svc', undefined, oidc.ClientSecretBasic(SECRET), { execute: [oidc.allowInsecureRequests] });
    jwks = createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri!));
  });
  after(async () => tessera.stop());

  async function storedTokens(): Promise<number> {
    const row = await tessera.db.selectFrom('oidc_models').select((eb) => eb.fn.countAll<string>().as('n')).where('model', 'in', ['ClientCredentials', 'AccessToken']).executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async function tokenRequest(clientId: string, form: Record<string, string>) {
    const response = await fetch(`${tessera.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${clientId}:${SECRET}`).toString('base64')}` },
      body: new URLSearchParams(form),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  it('client_credentials for a JWT API: a signed at+jwt for that audience with the granted scopes, nothing stored', async () => {
    const stored = await storedTokens();
    const tokens = await oidc.clientCredentialsGrant(config, { resource: ORDERS, scope: 'orders:read orders:write' });
    assert.equal(tokens.scope, 'orders:read', 'the client was allowed orders:read only');
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, { issuer: tessera.issuer, audience: ORDERS, typ: 'at+jwt' });
    assert.equal(protectedHeader.alg, 'ES256', 'ES256 unless the API chose otherwise');
    assert.equal(payload.client_id, 'svc');
    assert.equal(payload.sub, 'svc');
    assert.equal(payload.scope, 'orders:read');
    assert.equal(payload.exp! - payload.iat!, 300, 'the API\'s default lifetime');
    assert.equal(await storedTokens(), stored, 'a JWT access token is not stored');
    // Asked only for scopes it may not have: refused, not a token that allows nothing.
    const none = await tokenRequest('svc', { grant_type: 'client_credentials', resource: ORDERS, scope: 'orders:write' });
    assert.equal(none.status, 400);
    assert.equal(none.body.error, 'invalid_scope');
    assert.match(String(none.body.error_description), /not allowed any of the requested scopes/);
  });

  it('the API chooses the signing algorithm and the lifetime', async () => {
    const tokens = await oidc.clientCredentialsGrant(config, { resource: REPORTS, scope: 'reports:read' });
    assert.equal(decodeProtectedHeader(tokens.access_token).alg, 'RS256');
    const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: tessera.issuer, audience: REPORTS });
    assert.equal(payload.exp! - payload.iat!, 120);
    assert.equal(tokens.expires_in, 120);
  });

  it('an opaque API: the token is stored and introspection shows its audience', async () => {
    const tokens = await oidc.clientCredentialsGrant(config, { resource: LEDGER, scope: 'ledger:read' });
    assert.equal(tokens.access_token.split('.').length, 1, 'opaque, not a JWT');
    const info = await oidc.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.aud, LEDGER);
    assert.equal(info.scope, 'ledger:read');
  });

  it('refuses unknown, malformed and unauthorised resources with invalid_target', async () => {
    for (const resource of ['https://unknown.example.test', 'not-a-uri', `${ORDERS}#frag`, `https://x.example.test/${'a'.repeat(5000)}`]) {
      const r = await tokenRequest('svc', { grant_type: 'client_credentials', resource });
      assert.equal(r.status, 400, resource.slice(0, 40));
      assert.equal(r.body.error, 'invalid_target', resource.slice(0, 40));
    }
    // "other" was never allowed the Orders API.
    const denied = await tokenRequest('other', { grant_type: 'client_credentials', resource: ORDERS });
    assert.equal(denied.status, 400);
    assert.equal(denied.body.error, 'invalid_target');
    assert.match(String(denied.body.error_description), /not allowed to use the API/);
    // At the authorization endpoint the refusal goes back to the app, as OAuth errors do there.
    const auth = new URL(`${tessera.issuer}/auth`);
    auth.search = new URLSearchParams({ client_id: 'svc', response_type: 'code', redirect_uri: REDIRECT, scope: 'openid', resource: 'https://unknown.example.test', state: 's1', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }).toString();
    const refused = await fetch(auth, { redirect: 'manual' });
    assert.equal(refused.status, 303);
    const back = new URL(refused.headers.get('location')!);
    assert.equal(back.searchParams.get('error'), 'invalid_target');
    assert.equal(back.searchParams.get('state'), 's1');
    // Two resources at once are not one audience.
    const two = await fetch(`${tessera.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}` },
      body: `grant_type=client_credentials&resource=${encodeURIComponent(ORDERS)}&resource=${encodeURIComponent(REPORTS)}`,
    });
    assert.equal(two.status, 400);
    assert.equal(((await two.json()) as { error: string }).error, 'invalid_target');
  });

  it('a user login for an API: consent names it; the token carries the user, the API scopes, acr, amr and auth_time', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT, scope: 'openid email offline_access orders:read orders:write', resource: ORDERS, prompt: 'consent',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const agent = new Agent();
    let consentPage = '';
    const callback = await signIn(agent, url.href, {
      username: 'erin', password: 'erin-password-123', redirectUri: REDIRECT,
      onPage: (body) => {
        if (body.includes('/consent"')) consentPage = body;
      },
    });
    assert.match(consentPage, /Orders API/);
    assert.match(consentPage, /orders:read/);
    assert.doesNotMatch(consentPage, /orders:write/, 'only what the client may be given is asked for');
    const before = Math.floor(Date.now() / 1000) - 60;
    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, idTokenExpected: true }, { resource: ORDERS });
    const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: tessera.issuer, audience: ORDERS, typ: 'at+jwt' });
    assert.equal(payload.sub, userId);
    assert.equal(payload.scope, 'orders:read');
    assert.equal(payload.acr, ACR.password);
    assert.deepEqual(payload.amr, ['pwd']);
    assert.ok(typeof payload.auth_time === 'number' && payload.auth_time >= before);
    assert.equal(payload.email, undefined, 'no profile claims in an access token');

    // A refresh may ask for the API again, or (without resource) for a UserInfo token.
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: ORDERS });
    const again = await jwtVerify(refreshed.access_token, jwks, { issuer: tessera.issuer, audience: ORDERS });
    assert.equal(again.payload.acr, ACR.password);
    const forUserinfo = await oidc.refreshTokenGrant(config, refreshed.refresh_token!);
    const info = await oidc.fetchUserInfo(config, forUserinfo.access_token, userId);
    assert.equal(info.email, 'erin@example.com');
    const introspected = await oidc.tokenIntrospection(config, forUserinfo.access_token);
    assert.equal(introspected.acr, ACR.password, 'opaque tokens carry how the user signed in too');

    // The granted resource bounds what the token endpoint will issue.
    const other = await tokenRequest('svc', { grant_type: 'refresh_token', refresh_token: forUserinfo.refresh_token!, resource: REPORTS });
    assert.equal(other.status, 400);
    assert.equal(other.body.error, 'invalid_target');
  });

  it('disallowing a client refuses it new tokens for the API', async () => {
    await allowClient(tessera.db, ORDERS, 'other');
    const r = await tokenRequest('other', { grant_type: 'client_credentials', resource: ORDERS, scope: 'orders:read orders:write' });
    assert.equal(r.status, 200);
    assert.equal(r.body.scope, 'orders:read orders:write');
    await disallowClient(tessera.db, ORDERS, 'other');
    const refused = await tokenRequest('other', { grant_type: 'client_credentials', resource: ORDERS });
    assert.equal(refused.body.error, 'invalid_target');
  });

  it('removing an API ends its stored tokens and refuses new ones', async () => {
    await createResourceServer(tessera.db, { identifier: 'https://gone.example.test', name: 'Gone', scopes: ['ledger:read'], accessTokenFormat: 'opaque' });
    await allowClient(tessera.db, 'https://gone.example.test', 'svc');
    const tokens = await oidc.clientCredentialsGrant(config, { resource: 'https://gone.example.test', scope: 'ledger:read' });
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).active, true);
    await removeResourceServer(tessera.db, 'https://gone.example.test');
    assert.equal((await oidc.tokenIntrospection(config, tokens.access_token)).active, false);
    const r = await tokenRequest('svc', { grant_type: 'client_credentials', resource: 'https://gone.example.test' });
    assert.equal(r.body.error, 'invalid_target');
  });

  it('a client kept by the server (and the client oidc-provider built for it) changes once read again: a rotated secret', async () => {
    const kept = await startTestTessera({ CLIENT_CACHE_SECONDS: '1' });
    try {
      await createClient(kept.db, kept.box, { clientId: 'rotating', secret: SECRET, grantTypes: ['client_credentials'], scope: 'openid' });
      await createResourceServer(kept.db, { identifier: ORDERS, name: 'Orders API', scopes: ['orders:read'] });
      await allowClient(kept.db, ORDERS, 'rotating');
      const ask = (secret: string) =>
        fetch(`${kept.issuer}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`rotating:${secret}`).toString('base64')}` },
          body: new URLSearchParams({ grant_type: 'client_credentials', resource: ORDERS }),
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
      assert.equal((await ask(SECRET)).status, 200);
      assert.equal((await ask(SECRET)).status, 200, 'the kept client');
      const rotated = await rotateClientSecret(kept.db, kept.box, 'rotating');
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.equal((await ask(SECRET)).body.error, 'invalid_client', 'the old secret, once the registration is read again');
      assert.equal((await ask(rotated)).status, 200);
      assert.equal((await ask(rotated)).status, 200);
    } finally {
      await kept.stop();
    }
  });
});
