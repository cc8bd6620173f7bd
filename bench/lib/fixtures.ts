// What the bench seeds and its load client presents, shared with the bare reference (which loads none of Tessera).
export const BENCH_SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
export const BENCH_PASSWORD = 'bench-password-1';
export const TOTP_SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
export const CLIENT = { id: 'bench-rp', secret: 'bench-rp-secret-0123456789abcdef', redirectUri: 'http://127.0.0.1:9/callback' };
/** The API the client gets tokens for: JWTs, ES256, as a throughput-minded operator would register it. */
export const API = { identifier: 'https://api.bench.test', scope: 'bench:read', ttlSeconds: 300 };
