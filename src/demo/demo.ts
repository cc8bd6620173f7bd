import Router from '@koa/router';
import type { Context } from 'koa';
import * as oidc from 'openid-client';
import type { Logger } from '../log.js';
import { renderPage } from '../http/views.js';

import { DEMO_CLIENT_ID } from './accounts.js';

const PENDING = 'tessera.demo.pending';
const SIGNED_IN = 'tessera.demo.session';

interface Pending { verifier: string; state: string; nonce: string }
interface SignedIn { claims: Record<string, unknown>; userinfo: Record<string, unknown>; idToken: string }

function readCookie<T>(ctx: Context, name: string): T | null {
  const raw = ctx.cookies.get(name, { signed: true });
  if (!raw) return null;
  try {
    return JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as T;
  } catch {
    return null;
  }
}

function writeCookie(ctx: Context, name: string, value: unknown, secure: boolean): void {
  ctx.cookies.set(name, value === null ? null : Buffer.from(JSON.stringify(value)).toString('base64url'), {
    signed: true, httpOnly: true, sameSite: 'lax', secure, path: '/demo', overwrite: true,
  });
}

/**
 * A small relying party built in for the newcomer: a real authorization-code + PKCE flow through
 * Tessera's own endpoints with openid-client (a certified RP library), then shows the ID token's claims.
 */
export function demoRoutes(issuer: string, log: Logger): Router {
  const router = new Router({ prefix: '/demo' });
  const secure = issuer.startsWith('https://');
  let discovered: Promise<oidc.Configuration> | undefined;
  const configuration = () => {
    discovered ??= oidc
      .discovery(new URL(issuer), DEMO_CLIENT_ID, undefined, oidc.None(), secure ? {} : { execute: [oidc.allowInsecureRequests] })
      .catch((error: unknown) => {
        discovered = undefined;
        throw error;
      });
    return discovered;
  };

  router.get('/', async (ctx) => {
    const session = readCookie<SignedIn>(ctx, SIGNED_IN);
    const error = typeof ctx.query.error === 'string' ? ctx.query.error.slice(0, 200) : null;
    renderPage(ctx, 'demo/index', { title: 'Demo app', claims: session?.claims ?? null, userinfo: session?.userinfo ?? null, error });
  });

  router.get('/login', async (ctx) => {
    const config = await configuration();
    const pending: Pending = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce() };
    writeCookie(ctx, PENDING, pending, secure);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: `${issuer}/demo/callback`,
      scope: 'openid profile email phone',
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
    });
    ctx.redirect(url.href);
  });

  router.get('/callback', async (ctx) => {
    const pending = readCookie<Pending>(ctx, PENDING);
    writeCookie(ctx, PENDING, null, secure);
    if (typeof ctx.query.error === 'string') {
      ctx.redirect(`/demo?error=${encodeURIComponent(String(ctx.query.error_description ?? ctx.query.error))}`);
      return;
    }
    if (!pending) {
      ctx.redirect(`/demo?error=${encodeURIComponent('The sign-in was not started here or has expired.')}`);
      return;
    }
    try {
      const config = await configuration();
      const tokens = await oidc.authorizationCodeGrant(config, new URL(ctx.originalUrl, issuer), {
        pkceCodeVerifier: pending.verifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
      });
      const claims: Record<string, unknown> = { ...tokens.claims() };
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, String(claims.sub));
      writeCookie(ctx, SIGNED_IN, { claims, userinfo, idToken: tokens.id_token ?? '' } satisfies SignedIn, secure);
      ctx.redirect('/demo');
    } catch (error) {
      log.warn({ err: error }, 'demo app: sign-in failed');
      ctx.redirect(`/demo?error=${encodeURIComponent('Sign-in failed: the response could not be verified.')}`);
    }
  });

  router.get('/logout', async (ctx) => {
    const session = readCookie<SignedIn>(ctx, SIGNED_IN);
    writeCookie(ctx, SIGNED_IN, null, secure);
    const config = await configuration();
    const url = oidc.buildEndSessionUrl(config, {
      post_logout_redirect_uri: `${issuer}/demo`,
      ...(session?.idToken ? { id_token_hint: session.idToken } : {}),
    });
    ctx.redirect(url.href);
  });
  return router;
}
