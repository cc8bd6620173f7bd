import Router from '@koa/router';
import type { Context } from 'koa';
import * as oidc from 'openid-client';
import type { Logger } from '../log.js';
import { renderPage } from '../http/views.js';

import { DEMO_API, DEMO_CLIENT_ID } from './accounts.js';

const PENDING = 'tessera.demo.pending';
const SIGNED_IN = 'tessera.demo.session';

interface Pending { verifier: string; state: string; nonce: string; payments?: boolean }
interface SignedIn {
  claims: Record<string, unknown>;
  userinfo: Record<string, unknown> | null;
  /** With "payments": what the access token for the demo API says (scope, acr, amr, auth_time). */
  apiToken: Record<string, unknown> | null;
  idToken: string;
}

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
    renderPage(ctx, 'demo/index', { title: 'Demo app', claims: session?.claims ?? null, userinfo: session?.userinfo ?? null, apiToken: session?.apiToken ?? null, api: DEMO_API, error });
  });

  router.get('/login', async (ctx) => {
    const config = await configuration();
    // ?payments asks for the demo API too, whose payments:write scope is protected: the consent screen steps up.
    const payments = ctx.query.payments !== undefined;
    const pending: Pending = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce(), payments };
    writeCookie(ctx, PENDING, pending, secure);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: `${issuer}/demo/callback`,
      scope: payments ? `openid profile email phone ${DEMO_API.read} ${DEMO_API.write}` : 'openid profile email phone',
      ...(payments ? { resource: DEMO_API.identifier } : {}),
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
      }, pending.payments ? { resource: DEMO_API.identifier } : undefined);
      const claims: Record<string, unknown> = { ...tokens.claims() };
      // A token for the API is no token for UserInfo: the page shows what the API would read in it instead.
      const userinfo = pending.payments ? null : await oidc.fetchUserInfo(config, tokens.access_token, String(claims.sub));
      const apiToken = pending.payments ? (JSON.parse(Buffer.from(tokens.access_token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>) : null;
      writeCookie(ctx, SIGNED_IN, { claims, userinfo, apiToken, idToken: tokens.id_token ?? '' } satisfies SignedIn, secure);
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
