import type { Context, Next } from 'koa';

const CSP = [
  "default-src 'none'",
  "style-src 'self'",
  "img-src 'self' data:",
  "script-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * Headers for every response, set before anything runs so that error responses have them too.
 * Synchronous: the protocol endpoints pass through it on every token request.
 */
export function securityHeaders(ctx: Context, next: Next): Promise<void> {
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.set('X-Frame-Options', 'DENY');
  ctx.set('Cross-Origin-Opener-Policy', 'same-origin');
  // Tessera's pages use no scripts and are never framed; the one page that runs a script
  // (self-submitting.ts) replaces this with a policy that allows that script by hash.
  ctx.set('Content-Security-Policy', CSP);
  return next();
}

/** A page that lost its policy on the way (a handler that reset the response's headers) gets it back. */
export async function pagePolicy(ctx: Context, next: Next): Promise<void> {
  await next();
  if (ctx.respond !== false && !ctx.response.get('Content-Security-Policy') && ctx.response.is('html')) ctx.set('Content-Security-Policy', CSP);
}

/** Pages that run a passkey ceremony load Tessera's own scripts (and fetch from Tessera), nothing else. */
export const PASSKEY_CSP = CSP.replace("script-src 'none'", "script-src 'self'; connect-src 'self'");

export function strictCsp(): string {
  return CSP;
}
