import Router from '@koa/router';
import type { Context, Next } from 'koa';
import * as oidc from 'openid-client';
import type { Config } from '../../config.js';
import type { Db } from '../../db/index.js';
import type { SecretBox } from '../../crypto/secret-box.js';
import type { Audit } from '../../audit/audit.js';
import type { Logger } from '../../log.js';
import { DomainError } from '../../domain-error.js';
import { assertCsrf } from '../../http/csrf.js';
import { readFormFields } from '../../http/body.js';
import { HttpError } from '../../http/errors.js';
import { seeOther } from '../../http/redirect.js';
import { renderPage } from '../../http/views.js';
import { findUserById } from '../../directory/users.js';
import { ACR } from '../../oidc/assurance.js';
import type { ServiceContext } from '../service.js';
import { consoleRelyingParty } from './relying-party.js';
import { CONSOLE_CLIENT_ID, CONSOLE_PATHS } from './registration.js';
import {
  consoleRole, endConsoleSession, holdPending, refreshFactor, resumeConsoleSession, startConsoleSession, type ConsoleSession, type PendingChange,
} from './sessions.js';

export interface ConsoleDeps {
  config: Config;
  issuer: string;
  db: Db;
  box: SecretBox;
  audit: Audit;
  log: Logger;
  /** This process as seen from itself, for the console's back-channel requests. */
  internalOrigin: string;
  /** After a change: the running server drops what it keeps (clients, APIs, scope rules). */
  changed: () => void;
}

/** What a console page handler works with. */
export interface ConsoleRequest {
  session: ConsoleSession;
  service: ServiceContext;
}

/** A form's problem, shown above the form and next to its field. */
export interface FormProblem {
  field?: string;
  message: string;
}

/** A page drawn again with what was typed and what is wrong with it. */
export interface Redisplay {
  values: URLSearchParams;
  /** Null when the page is drawn again for another reason (a preview). */
  problem: FormProblem | null;
}

/** Short confirmations after a change, by key: a link cannot put words of its own on the page. */
const NOTICES: Record<string, string> = {
  created: 'Created.',
  saved: 'Saved.',
  'saved-secrets-forgotten': 'Saved. The server changed, so the stored password or key was forgotten: type it again for the new server.',
  removed: 'Removed.',
  unlocked: 'Unlocked: the failure count is cleared.',
  'password-set': 'Password changed.',
  'mfa-reset': 'Every authenticator app of this user was removed.',
  'authenticator-removed': 'Authenticator removed.',
  enabled: 'The account is enabled.',
  disabled: 'The account is disabled: it cannot sign in.',
  'member-added': 'Member added.',
  'already-member': 'Already a member: nothing changed.',
  'member-removed': 'Member removed.',
  protected: 'The scope is protected.',
  unprotected: 'The scope is no longer protected.',
  allowed: 'The client may now obtain tokens for this API.',
  disallowed: 'The client no longer obtains tokens for this API.',
  rotated: 'New signing keys are stored. Each instance publishes them and signs with them after its next restart; until then the keys it started with keep signing.',
  cancelled: 'Nothing was changed.',
};

const SESSION_COOKIE = (secure: boolean) => (secure ? '__Host-tessera.admin' : 'tessera.admin');
const PENDING_COOKIE = 'tessera.admin.signin';

interface SignInPending {
  verifier: string;
  state: string;
  nonce: string;
  /** Where to go after: a console path. */
  next: string;
  purpose: 'sign-in' | 'verify';
}

/** Only console paths are followed after sign-in: never another site. */
function consolePath(value: unknown): string {
  return typeof value === 'string' && /^\/admin(\/[A-Za-z0-9._~%/?=&+-]*)?$/.test(value) && !value.startsWith('/admin//') && !value.includes('..') ? value : '/admin';
}

/** PostgreSQL stores no NUL character: input holding one is refused here, with a page, not a failed query. */
const HAS_NUL = /\u0000|%00/i;

export function fieldsWithoutCsrf(fields: URLSearchParams): [string, string][] {
  return [...fields].filter(([k]) => k !== 'csrf');
}

/**
 * The admin console's frame: sign-in through Tessera itself, server-side sessions with an idle
 * timeout, the role of the signed-in administrator, and `change`, the one way a console form
 * changes something (CSRF, read-only auditors, a fresh factor for sensitive changes, field errors).
 */
export function createConsole(deps: ConsoleDeps) {
  const { config, issuer, db, box, audit, log } = deps;
  const secure = issuer.startsWith('https://');
  const rp = consoleRelyingParty(issuer, deps.internalOrigin);
  const times = { idleSeconds: config.admin.idleSeconds, absoluteSeconds: config.admin.absoluteSeconds };
  const sessionCookie = SESSION_COOKIE(secure);
  const sessionCookieOptions = { httpOnly: true, sameSite: 'strict' as const, secure, path: secure ? '/' : '/admin', overwrite: true, signed: false };

  const signIn = new Router({ prefix: '/admin' });
  // A sign-in that stops says why, with the ways on: try again, or sign in as someone else.
  signIn.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      if (!(error instanceof HttpError) || error.status >= 500) throw error;
      renderPage(ctx, 'admin/stopped', { title: error.title, message: error.message }, error.status);
    }
  });

  async function startAuthorization(ctx: Context, purpose: SignInPending['purpose'], next: string): Promise<void> {
    const configuration = await rp.configuration();
    const pending: SignInPending = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce(), next, purpose };
    ctx.cookies.set(PENDING_COOKIE, Buffer.from(JSON.stringify(pending)).toString('base64url'), {
      httpOnly: true, sameSite: 'lax', secure, path: '/admin', signed: true, overwrite: true, maxAge: 10 * 60 * 1000,
    });
    const url = oidc.buildAuthorizationUrl(configuration, {
      redirect_uri: `${issuer}${CONSOLE_PATHS.callback}`,
      scope: 'openid profile email',
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
    });
    ctx.redirect(url.href);
  }

  signIn.get('/login', async (ctx) => startAuthorization(ctx, 'sign-in', consolePath(ctx.query.next)));

  signIn.get('/callback', async (ctx) => {
    const raw = ctx.cookies.get(PENDING_COOKIE, { signed: true });
    ctx.cookies.set(PENDING_COOKIE, null, { path: '/admin', secure, signed: true });
    let pending: SignInPending | null = null;
    try {
      pending = raw ? (JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as SignInPending) : null;
    } catch {
      pending = null;
    }
    if (typeof ctx.query.error === 'string') {
      // Tessera's own words only for the sign-in this browser started: a link cannot put text on this page.
      const ours = pending !== null && ctx.query.state === pending.state;
      const said = ours && typeof ctx.query.error_description === 'string' ? `: ${ctx.query.error_description.slice(0, 200)}` : '.';
      throw new HttpError(401, `Sign-in to the admin console did not complete${said}`, 'Not signed in');
    }
    if (!pending) throw new HttpError(400, 'This sign-in was not started here or has expired. Open the admin console again.', 'Sign-in expired');
    let claims: oidc.IDToken;
    try {
      const tokens = await oidc.authorizationCodeGrant(await rp.configuration(), new URL(ctx.originalUrl, issuer), {
        pkceCodeVerifier: pending.verifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
      });
      claims = tokens.claims()!;
    } catch (error) {
      log.warn({ err: error }, 'admin console: sign-in response refused');
      throw new HttpError(400, 'The sign-in response could not be verified. Open the admin console again.', 'Sign-in failed');
    }
    // The console's client asks for a second factor at every sign-in; the token must show one.
    const factorAt = new Date(Number(claims.auth_time ?? 0) * 1000);
    if (claims.acr !== ACR.mfa || Date.now() - factorAt.getTime() > 10 * 60 * 1000) {
      throw new HttpError(403, 'The admin console needs a second factor passed just now. Open the admin console again.', 'Second factor needed');
    }
    const user = await findUserById(db, claims.sub);
    if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot use the admin console.', 'Access denied');
    const meta = { ip: ctx.ip, userAgent: ctx.get('user-agent') || null };
    const current = pending.purpose === 'verify' ? await resumeConsoleSession(db, box, ctx.cookies.get(sessionCookie), times) : null;
    if (current && typeof current === 'object' && current.user.id === user.id) {
      await refreshFactor(db, current.idHash, factorAt);
      await audit.record({ type: 'admin.reverified', actor: current.actor.label, subject: user.id, clientId: CONSOLE_CLIENT_ID, ...meta });
      return seeOther(ctx, current.pending ? '/admin/confirm' : pending.next);
    }
    const role = await consoleRole(db, user.id);
    if (!role) {
      await audit.record({ type: 'admin.refused', actor: user.username, subject: user.id, clientId: CONSOLE_CLIENT_ID, ...meta, details: { reason: 'not in admins or auditors' } });
      return forbidden(ctx, user.username);
    }
    await endConsoleSession(db, ctx.cookies.get(sessionCookie));
    const id = await startConsoleSession(db, user.id, factorAt, times);
    ctx.cookies.set(sessionCookie, id, sessionCookieOptions);
    await audit.record({ type: 'admin.signed_in', actor: `admin:${user.username}`, subject: user.id, clientId: CONSOLE_CLIENT_ID, ...meta, details: { role } });
    seeOther(ctx, pending.next);
  });

  // Another account: the console session and the Tessera session end (Tessera asks first), then sign in again.
  signIn.get('/switch', async (ctx) => {
    await endConsoleSession(db, ctx.cookies.get(sessionCookie));
    ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
    const url = oidc.buildEndSessionUrl(await rp.configuration(), { client_id: CONSOLE_CLIENT_ID, post_logout_redirect_uri: `${issuer}${CONSOLE_PATHS.signedOut}` });
    ctx.redirect(url.href);
  });

  signIn.get('/signed-out', (ctx) => {
    renderPage(ctx, 'admin/signed-out', { title: 'Signed out' });
  });

  function forbidden(ctx: Context, username: string): void {
    renderPage(ctx, 'admin/forbidden', { title: 'No access to the admin console', username }, 403);
  }

  /** Every console page after sign-in: the session is resumed (or the browser sent to sign in). */
  async function requireSession(ctx: Context, next: Next): Promise<void> {
    if (HAS_NUL.test(ctx.originalUrl)) throw new HttpError(400, 'The address holds a character Tessera cannot store (NUL).', 'Request refused');
    const session = await resumeConsoleSession(db, box, ctx.cookies.get(sessionCookie), times);
    if (session === 'not-admin') {
      ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
      return forbidden(ctx, '');
    }
    if (!session) {
      if (ctx.method === 'GET' || ctx.method === 'HEAD') return seeOther(ctx, `/admin/login?next=${encodeURIComponent(consolePath(ctx.originalUrl))}`);
      return renderPage(ctx, 'admin/stopped', { title: 'Session ended', message: 'Your admin console session has ended (signed out, or idle too long). Nothing was changed: sign in again and send the form once more.' }, 401);
    }
    const request: ConsoleRequest = {
      session,
      service: { db, box, audit, mode: config.mode, actor: session.actor, changed: deps.changed, via: { console: ctx.path } },
    };
    ctx.state.console = request;
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } catch (error) {
      // A page about something that is not there ("no user …"): a page that says so.
      if (!(error instanceof DomainError)) throw error;
      const sentence = `${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`;
      throw new HttpError(ctx.method === 'GET' ? 404 : 400, sentence, ctx.method === 'GET' ? 'Not found' : 'Not changed');
    }
  }

  const pages = new Router({ prefix: '/admin' });
  pages.use(requireSession);

  pages.post('/logout', async (ctx) => {
    const fields = await readFormFields(ctx);
    assertCsrf(ctx, fields.get('csrf'));
    const { session } = consoleOf(ctx);
    await endConsoleSession(db, ctx.cookies.get(sessionCookie));
    ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
    await audit.record({ type: 'admin.signed_out', actor: session.actor.label, subject: session.user.id, clientId: CONSOLE_CLIENT_ID, ip: ctx.ip });
    // The Tessera session ends too, as a console sign-out should (the user confirms on Tessera's page).
    const url = oidc.buildEndSessionUrl(await rp.configuration(), { client_id: CONSOLE_CLIENT_ID, post_logout_redirect_uri: `${issuer}${CONSOLE_PATHS.signedOut}` });
    seeOther(ctx, url.href);
  });

  pages.get('/verify', async (ctx) => startAuthorization(ctx, 'verify', consolePath(ctx.query.next)));

  pages.get('/confirm', (ctx) => {
    const { session } = consoleOf(ctx);
    if (!session.pending) return seeOther(ctx, '/admin');
    show(ctx, 'confirm', 'Confirm the change', { pending: session.pending });
  });
  pages.post('/confirm/cancel', async (ctx) => {
    const fields = await readFormFields(ctx);
    assertCsrf(ctx, fields.get('csrf'));
    const { session } = consoleOf(ctx);
    await holdPending(db, box, session.idHash, null);
    seeOther(ctx, `${consolePath(session.pending?.path.replace(/\/[^/]*$/, '') || '/admin')}?done=cancelled`);
  });

  /** Renders a console page in the console's layout, with who is signed in and any notice. */
  function show(ctx: Context, view: string, title: string, data: Record<string, unknown> = {}, status?: number): void {
    const { session } = consoleOf(ctx);
    const done = typeof ctx.query.done === 'string' ? NOTICES[ctx.query.done] : undefined;
    const redisplay = data.redisplay as Redisplay | undefined;
    // A form drawn again because of a problem in it is a 400.
    renderPage(
      ctx,
      `admin/${view}`,
      {
        title,
        me: { username: session.user.username, role: session.actor.role },
        section: ctx.path.split('/')[2] ?? '',
        notice: done ?? null,
        readOnly: session.actor.role !== 'admin',
        // What the form shows: what was typed when it comes back with a problem, else the stored value.
        value: (name: string, stored: unknown) => (redisplay ? (redisplay.values.get(name) ?? '') : stored ?? ''),
        values: (name: string, stored: unknown[]) => (redisplay ? redisplay.values.getAll(name) : stored),
        problem: redisplay?.problem ?? null,
        fieldProblem: (name: string) => (redisplay?.problem?.field === name ? redisplay.problem.message : null),
        ...data,
      },
      status ?? (redisplay?.problem ? 400 : 200),
      'admin/layout',
    );
  }

  interface ChangeRoute {
    /** What the change is, for the confirm page after a re-verification. */
    label: string | ((fields: URLSearchParams, ctx: Context) => string);
    /** Asks for a fresh factor first (policies, delivery, authenticators, administrators). */
    sensitive?: boolean | ((fields: URLSearchParams, ctx: Context) => boolean | Promise<boolean>);
    /** The page drawn again with the typed values and the problem. */
    redisplay?: (ctx: Context, redisplay: Redisplay) => Promise<void>;
    run(ctx: Context, fields: URLSearchParams, request: ConsoleRequest): Promise<void>;
  }

  const formPaths: string[] = [];

  /**
   * After a form comes back with a problem, the address bar shows where it was sent: opening that
   * address again (a reload, a bookmark) goes to the page the form is on, not a bare 405.
   */
  function addFormFallbacks(): void {
    for (const path of formPaths) {
      if (pages.match(`/admin${path}`, 'GET').route) continue;
      let page = path;
      do page = page.replace(/\/[^/]+$/, '') || '/';
      while (page !== '/' && !pages.match(`/admin${page}`, 'GET').route);
      pages.get(path, (ctx) => seeOther(ctx, `/admin${page.replace(/:(\w+)/g, (_m, name: string) => encodeURIComponent(String(ctx.params[name] ?? '')))}`.replace(/\/$/, '')));
    }
  }

  /** The one way a console form changes something. */
  function change(path: string, route: ChangeRoute): void {
    formPaths.push(path);
    pages.post(path, async (ctx) => {
      const fields = await readFormFields(ctx);
      assertCsrf(ctx, fields.get('csrf'));
      const request = consoleOf(ctx);
      const { session } = request;
      if (session.actor.role !== 'admin') {
        throw new HttpError(403, 'Auditors can see everything in the console but change nothing. Ask an administrator.', 'Read-only access');
      }
      if ([...fields.values()].some((v) => v.includes('\u0000'))) {
        throw new HttpError(400, 'The form holds a character Tessera cannot store (NUL). Nothing was changed.', 'Not changed');
      }
      const sensitive = typeof route.sensitive === 'function' ? await route.sensitive(fields, ctx) : route.sensitive ?? false;
      if (sensitive && Date.now() - session.factorAt.getTime() > config.admin.reverifySeconds * 1000) {
        const label = typeof route.label === 'function' ? route.label(fields, ctx) : route.label;
        const held: PendingChange = { path: ctx.path, fields: fieldsWithoutCsrf(fields), label };
        await holdPending(db, box, session.idHash, held);
        return seeOther(ctx, '/admin/verify');
      }
      if (session.pending) await holdPending(db, box, session.idHash, null);
      try {
        await route.run(ctx, fields, request);
      } catch (error) {
        if (!(error instanceof DomainError)) throw error;
        const problem: FormProblem = { message: error.message, ...(error.field ? { field: error.field } : {}) };
        if (route.redisplay) {
          await route.redisplay(ctx, { values: fields, problem });
          ctx.status = 400;
          return;
        }
        throw new HttpError(400, error.message, 'Not changed');
      }
    });
  }

  return { signIn, pages, show, change, addFormFallbacks };
}

export function consoleOf(ctx: Context): ConsoleRequest {
  const request = ctx.state.console as ConsoleRequest | undefined;
  if (!request) throw new HttpError(401, 'Sign in to the admin console first.', 'Not signed in');
  return request;
}

export type Console = ReturnType<typeof createConsole>;
