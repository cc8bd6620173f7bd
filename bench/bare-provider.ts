// The reference: oidc-provider alone, with its in-memory adapter and none of Tessera's code, configured
// for the same protocol work as Tessera (the bench client's ES256 ID tokens, ES256 JWT access tokens for
// the bench API, RS256 JWTs and opaque tokens for the others, rotating refresh tokens, client_credentials,
// introspection). Prints the refresh tokens it seeded, then serves.
import '../src/runtime-notice.js';
import { generateKeyPairSync } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import { CLAIMS_BY_SCOPE } from '../src/oidc/account.js';
import { API, APIS, CLIENT } from './lib/fixtures.js';

const port = Number(process.env.PORT ?? 4000);
const issuer = `http://127.0.0.1:${port}`;
const jwk = (type: 'rsa' | 'ec', alg: string) => ({
  ...(generateKeyPairSync(type as 'rsa', type === 'rsa' ? { modulusLength: 2048 } : ({ namedCurve: 'P-256' } as never)).privateKey.export({ format: 'jwk' }) as Record<string, unknown>),
  kid: `bare-${alg}`, alg, use: 'sig',
});

const provider = new Provider(issuer, {
  clients: [{
    client_id: CLIENT.id, client_secret: CLIENT.secret,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'], response_types: ['code'],
    redirect_uris: [CLIENT.redirectUri], scope: 'openid profile email offline_access', id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [jwk('rsa', 'RS256') as never, jwk('ec', 'ES256') as never] },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  cookies: { keys: ['bare-provider-cookie-key'] },
  claims: CLAIMS_BY_SCOPE,
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  features: {
    devInteractions: { enabled: false }, clientCredentials: { enabled: true }, introspection: { enabled: true }, revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: async (_ctx, identifier) => {
        const api = Object.values(APIS).find((a) => a.identifier === identifier);
        if (!api) throw new errors.InvalidTarget();
        return api.alg
          ? { scope: api.scope, audience: api.identifier, accessTokenTTL: api.ttlSeconds, accessTokenFormat: 'jwt', jwt: { sign: { alg: api.alg } } }
          : { scope: api.scope, audience: api.identifier, accessTokenTTL: api.ttlSeconds, accessTokenFormat: 'opaque' };
      },
    },
  },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub, email: `${sub}@bench.test`, email_verified: true }) }),
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  pkce: { required: () => true },
  ttl: { AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600, ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600, RefreshToken: 30 * 24 * 3600, Grant: 30 * 24 * 3600, IdToken: 3600, Interaction: 3600, Session: 14 * 24 * 3600 },
});

const count = Number(process.env.REFRESH_TOKENS ?? 16);
const client = await provider.Client.find(CLIENT.id);
const now = Math.floor(Date.now() / 1000);
const refreshTokens: string[] = [];
for (let i = 0; i < count; i++) {
  const accountId = `bare-user-${i}`;
  const grant = new provider.Grant({ accountId, clientId: CLIENT.id });
  grant.addOIDCScope('openid email offline_access');
  grant.addResourceScope(API.identifier, API.scope);
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    accountId, client: client!, grantId, scope: `openid email offline_access ${API.scope}`, resource: API.identifier, gty: 'authorization_code',
    authTime: now, iiat: now, acr: 'urn:tessera:acr:mfa', amr: ['pwd', 'otp', 'mfa'], expiresWithSession: false,
  } as never);
  refreshTokens.push(await token.save());
}
provider.listen(port, '127.0.0.1');
console.log(JSON.stringify({ refreshTokens }));
