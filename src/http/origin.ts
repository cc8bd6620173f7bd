import type { Context, Next } from 'koa';
import { HttpError } from './errors.js';

/** Paths a load balancer or monitor calls directly, over plain HTTP. */
const OPERATIONS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * Every URL Tessera builds (form actions, redirects, the audience it checks) comes from ISSUER,
 * never from the request's Host or X-Forwarded-Host, which anyone can forge. An https issuer
 * needs a TLS-terminating proxy that says so (X-Forwarded-Proto, TRUST_PROXY=true): a request
 * that arrives as plain HTTP gets a page that says what to fix, not a failed secure cookie.
 */
export function issuerOrigin(issuer: string) {
  const url = new URL(issuer);
  const https = url.protocol === 'https:';
  // Synchronous: nothing to do after the response, and every token request passes through it.
  return (ctx: Context, next: Next): Promise<void> => {
    // An absolute-form request target ("GET https://evil.example/… HTTP/1.1") would become ctx.href
    // as given: only its path and query are kept.
    if (!ctx.originalUrl.startsWith('/')) {
      const target = URL.canParse(ctx.originalUrl) ? new URL(ctx.originalUrl) : null;
      const local = target ? `${target.pathname}${target.search}` : '/';
      ctx.req.url = local;
      ctx.url = local;
      ctx.originalUrl = local;
      ctx.request.originalUrl = local;
    }
    ctx.req.headers.host = url.host;
    if (ctx.app.proxy) ctx.req.headers['x-forwarded-host'] = url.host;
    if (https && !ctx.secure && !OPERATIONS.has(ctx.path)) {
      throw new HttpError(
        400,
        `Tessera serves ${url.origin}, but this request reached it as plain HTTP. Behind a TLS-terminating proxy, set TRUST_PROXY=true and have the proxy send X-Forwarded-Proto: https.`,
        'Not over HTTPS',
      );
    }
    return next();
  };
}
