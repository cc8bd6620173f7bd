// The reference: oidc-provider alone, with its in-memory adapter and none of Tessera's code, configured
// for the same protocol work as Tessera (RS256 ID tokens, opaque access tokens, rotating refresh tokens,
// client_credentials, introspection). Prints the refresh tokens it seeded, then serves.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';
import { CLAIMS_BY_SCOPE } from '../src/oidc/account.js';

const port = Number(process.env.PORT ?? 4000);
const issuer = `http://127.0.0.1:${port}`;
const key = { ...(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'bare', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bench-rp', client_secret: 'bench-rp-secret-0123456789abcdef',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'], response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:9/callback'], scope: 'openid profile email offline_access',
  }],
  jwks: { keys: [key as never] },
  cookies: { keys: ['bare-provider-cookie-key'] },
  claims: CLAIMS_BY_SCOPE,
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true }, introspection: { enabled: true }, revocation: { enabled: true } },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub, email: `${sub}@bench.test`, email_verified: true }) }),
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  pkce: { required: () => true },
  ttl: { AccessToken: 3600, ClientCredentials: 3600, RefreshToken: 30 * 24 * 3600, Grant: 30 * 24 * 3600, IdToken: 3600, Interaction: 3600, Session: 14 * 24 * 3600 },
});

const count = Number(process.env.REFRESH_TOKENS ?? 16);
const client = await provider.Client.find('bench-rp');
const now = Math.floor(Date.now() / 1000);
const refreshTokens: string[] = [];
for (let i = 0; i < count; i++) {
  const accountId = `bare-user-${i}`;
  const grant = new provider.Grant({ accountId, clientId: 'bench-rp' });
  grant.addOIDCScope('openid email offline_access');
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    accountId, client: client!, grantId, scope: 'openid email offline_access', gty: 'authorization_code',
    authTime: now, iiat: now, acr: 'urn:tessera:acr:mfa', amr: ['pwd', 'otp', 'mfa'], expiresWithSession: false,
  } as never);
  refreshTokens.push(await token.save());
}
provider.listen(port, '127.0.0.1');
console.log(JSON.stringify({ refreshTokens }));
