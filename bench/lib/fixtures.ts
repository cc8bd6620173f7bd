// What the bench seeds and its load client presents, shared with the bare reference (which loads none of Tessera).
export const BENCH_SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
export const BENCH_PASSWORD = 'bench-password-1';
export const TOTP_SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
export const CLIENT = { id: 'bench-rp', secret: 'bench-rp-secret-0123456789abcdef', redirectUri: 'http://127.0.0.1:9/callback' };

export interface BenchApi {
  identifier: string;
  scope: string;
  ttlSeconds: number;
  format: 'jwt' | 'opaque';
  alg: 'ES256' | 'RS256' | null;
}

/** The APIs the client gets tokens for: ES256 JWTs (Tessera's default), RS256 JWTs, and opaque tokens stored by the server. */
export const APIS = {
  es256: { identifier: 'https://api.bench.test', scope: 'bench:read', ttlSeconds: 300, format: 'jwt', alg: 'ES256' },
  rs256: { identifier: 'https://api-rs256.bench.test', scope: 'bench-rs256:read', ttlSeconds: 300, format: 'jwt', alg: 'RS256' },
  opaque: { identifier: 'https://api-opaque.bench.test', scope: 'bench-opaque:read', ttlSeconds: 300, format: 'opaque', alg: null },
} as const satisfies Record<string, BenchApi>;

/** The API logins ask for, whose refresh tokens the refresh scenario exchanges. */
export const API = APIS.es256;
