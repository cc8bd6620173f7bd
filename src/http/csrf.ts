import { createHmac, randomBytes } from 'node:crypto';
import { secretsEqual } from '../crypto/equal.js';
import type { Context, Next } from 'koa';
import { HttpError } from './errors.js';

// Over https the __Host- prefix binds the cookie to this exact host: no subdomain can plant its own.
const cookieName = (secure: boolean) => (secure ? '__Host-tessera.csrf' : 'tessera.csrf');

/**
 * Double-submit CSRF protection: a random HttpOnly cookie, and in every form an HMAC of it under
 * a server key. A form posted from another site has neither the cookie's value nor the key.
 */
export function csrf(key: Buffer, secureCookies: boolean) {
  const tokenFor = (nonce: string) => createHmac('sha256', key).update(nonce).digest('base64url');
  const name = cookieName(secureCookies);
  return async (ctx: Context, next: Next) => {
    let nonce = ctx.cookies.get(name);
    if (!nonce || !/^[A-Za-z0-9_-]{43}$/.test(nonce)) {
      nonce = randomBytes(32).toString('base64url');
      ctx.cookies.set(name, nonce, { httpOnly: true, sameSite: 'lax', secure: secureCookies, path: '/', overwrite: true });
    }
    ctx.state.csrfToken = tokenFor(nonce);
    ctx.state.csrfNonce = nonce;
    await next();
  };
}

/** Throws a 403 unless the submitted token matches this browser's CSRF cookie. */
export function assertCsrf(ctx: Context, submitted: unknown): void {
  const expected = ctx.state.csrfToken as string | undefined;
  const ok =
    expected !== undefined && secretsEqual(submitted, expected);
  if (!ok) {
    throw new HttpError(403, 'This form has expired or was not sent from this site. Go back, reload the page and try again.', 'Request refused');
  }
}
