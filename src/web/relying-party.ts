import * as oidc from 'openid-client';

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
