import type { Context, Next } from 'koa';
import { errors as oidcErrors } from 'oidc-provider';
import type { Logger } from '../log.js';
import { renderPage } from './views.js';
import { isDatabaseUnavailable } from '../db/index.js';

/** An error whose message is meant for the person at the browser. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly title = 'Something went wrong',
  ) {
    super(message);
  }
}

/** Not a failure: the request is answered by sending the browser on to `location` (303). */
export class SendOn extends Error {
  constructor(readonly location: string) {
    super('sent on');
  }
}

export const SESSION_EXPIRED_MESSAGE =
  'This sign-in page has expired or was already used. Go back to the application and start signing in again.';

/** Every error becomes a page with a status and a plain sentence; stack traces only reach the log. */
export function errorPages(log: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined && ctx.respond !== false) {
        renderPage(ctx, 'error', { title: 'Not found', message: 'There is no page at this address.' }, 404);
      }
    } catch (error) {
      if (error instanceof SendOn) {
        ctx.status = 303;
        ctx.redirect(error.location);
        return;
      }
      const { status, title, message } = describe(error);
      if (isDatabaseUnavailable(error)) log.warn({ path: ctx.path, cause: String((error as Error).cause ?? error) }, 'database unavailable');
      else if (status >= 500) log.error({ err: error, path: ctx.path }, 'request failed');
      else log.debug({ err: error, path: ctx.path, status }, 'request refused');
      if (ctx.headerSent || !ctx.writable) return;
      renderPage(ctx, 'error', { title, message }, status);
    }
    // The protocol endpoints' temporarily_unavailable and Tessera's own 503 pages say when to come back.
    if (ctx.status === 503 && !ctx.response.get('Retry-After')) ctx.set('Retry-After', '5');
  };
}

function describe(error: unknown): { status: number; title: string; message: string } {
  if (error instanceof HttpError) return { status: error.status, title: error.title, message: error.message };
  if (isDatabaseUnavailable(error)) {
    return { status: 503, title: 'Temporarily unavailable', message: 'Tessera cannot reach its database just now. Please try again in a moment.' };
  }
  if (error instanceof oidcErrors.SessionNotFound || error instanceof oidcErrors.InvalidRequest) {
    return { status: 400, title: 'Sign-in expired', message: SESSION_EXPIRED_MESSAGE };
  }
  if (error instanceof oidcErrors.OIDCProviderError) {
    return { status: error.statusCode, title: 'Request refused', message: error.error_description ?? error.message };
  }
  const status = (error as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status, title: 'Request refused', message: 'The request could not be understood.' };
  }
  return { status: 500, title: 'Something went wrong', message: 'Tessera could not complete this request. Please try again in a moment.' };
}
