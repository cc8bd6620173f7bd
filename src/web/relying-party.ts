import * as oidc from 'openid-client';
import type { Db } from '../db/index.js';

/**
 * Tessera's own web apps (the admin console, the account portal) are OpenID Connect clients of this
 * Tessera (authorization code + PKCE, a certified RP library). Their back-channel requests (discovery, token, JWKS) go to this process over the
 * loopback interface: behind a TLS-terminating proxy the issuer's public address may not be
 * reachable from inside, and the request says it came over https as the proxy would.
 */
export function ownRelyingParty(issuer: string, internalOrigin: string, clientId: string) {
  const publicOrigin = new URL(issuer).origin;
  const https = issuer.startsWith('https://');
  const internalFetch: oidc.CustomFetch = (url, options) => {
    const target = new URL(url);
    const local = target.origin === publicOrigin ? `${internalOrigin}${target.pathname}${target.search}` : url;
    const headers = new Headers(options.headers);
    if (https) headers.set('x-forwarded-proto', 'https');
    return fetch(local, { ...options, body: options.body as RequestInit['body'], headers });
  };
  let discovered: Promise<oidc.Configuration> | undefined;
  return {
    configuration(): Promise<oidc.Configuration> {
      discovered ??= oidc
        .discovery(new URL(issuer), clientId, undefined, oidc.None(), {
          [oidc.customFetch]: internalFetch,
          ...(https ? {} : { execute: [oidc.allowInsecureRequests] }),
        })
        .then((config) => {
          config[oidc.customFetch] = internalFetch;
          return config;
        })
        .catch((error: unknown) => {
          discovered = undefined;
          throw error;
        });
      return discovered;
    },
  };
}

/** Where this process listens, as seen from itself. */
export function internalOriginOf(host: string, port: number): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return `http://127.0.0.1:${port}`;
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

/** One of Tessera's own web apps as a registered client. */
export interface OwnClient {
  clientId: string;
  name: string;
  /** The app's path: its callback and signed-out pages live under it. */
  base: string;
  /** The admin console requires a second factor whatever policy says; the account portal follows policy. */
  mfaRequired: boolean;
}

/**
 * Registers (or re-points, when ISSUER or PORT changed) an own app's client: public with PKCE, no
 * consent (it is Tessera's own), and a second factor, when one is asked, asked at every sign-in
 * (window 0). `builtin` keeps administrators from loosening it.
 */
export async function ensureOwnClient(db: Db, issuer: string, client: OwnClient): Promise<void> {
  const metadata = {
    client_id: client.clientId,
    client_name: client.name,
    redirect_uris: [`${issuer}${client.base}/callback`],
    post_logout_redirect_uris: [`${issuer}${client.base}/signed-out`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // Only who signed in: Tessera's own apps read the rest from the directory, and no scope rule can reach them.
    scope: 'openid',
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'ES256',
  };
  const values = { metadata: JSON.stringify(metadata), require_consent: false, mfa_required: client.mfaRequired, mfa_max_age_seconds: 0, builtin: true };
  await db
    .insertInto('clients')
    .values({ client_id: client.clientId, ...values })
    .onConflict((oc) => oc.column('client_id').doUpdateSet({ ...values, updated_at: new Date() }))
    .execute();
}
