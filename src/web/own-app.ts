import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import * as oidc from 'openid-client';
import type { AppSessionConfig } from '../config.js';
import type { Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Audit, AuditType } from '../audit/audit.js';
import type { Logger } from '../log.js';
import { DomainError } from '../domain-error.js';
import { assertCsrf } from '../http/csrf.js';
import { readFormFields } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { seeOther } from '../http/redirect.js';
import { renderPage, type PageData } from '../http/views.js';
import { findUserById } from '../directory/users.js';
import { SIGN_IN_CANCELLED } from '../flows/context.js';
import { ownRelyingParty } from './relying-party.js';
import { endAppSession, holdPending, refreshAuthentication, resumeAppSession, startAppSession, type AppName, type AppSession, type PendingChange } from './sessions.js';

/** What an app keeps of a sign-in: the user's access to it, decided at every request. */
export interface SignedIn<A> {
  session: AppSession;
  access: A;
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

/** How one of Tessera's own web apps differs from the other. */
export interface OwnAppSpec<A> {
  name: AppName;
  clientId: string;
  /** Where its sign-in routes live ('/admin', '/account'). */
  base: string;
  /** The session cookie's path: the app's pages must all lie under it. */
  cookiePath: string;
  /** The paths the app's pages live under: only these are followed after a sign-in. */
  homes: string[];
  times: AppSessionConfig;
  /** The app, as sentences name it ("the admin console"). */
  title: string;
  layout: string;
  /** The user's access to the app, from the session (read at every request); null: the forbidden page. */
  access(session: AppSession): A | null;
  /** Why this user may not change anything, or null. */
  refusesChange(access: A): string | null;
  /** What the ID token must show beyond the protocol (the console: a second factor just now); a message when it does not. */
  admit(claims: oidc.IDToken): string | null;
  /** Extra authorization parameters for a re-verification of this user. */
  verifyParams(user: User): Promise<Record<string, string>>;
  /** Where a cancelled change leads, from the path of its form (by default the page above it). */
  cancelledAt?(path: string): string;
  /** More parameters of the authorization request for a sign-in that goes on to `next`. */
  signInParams?(next: string): Record<string, string>;
  /** Whether the session proved enough, recently enough, for a sensitive change. */
  fresh(session: AppSession): Promise<boolean>;
  /** The page shown to a signed-in user the app does not admit. */
  forbidden(ctx: Context, username: string): void;
  /** The actor the audit log names ("admin:ann", "ann"). */
  actorOf(user: User): string;
}

export interface OwnAppDeps {
  issuer: string;
  db: Db;
  box: SecretBox;
  audit: Audit;
  log: Logger;
  /** This process as seen from itself, for the back-channel requests. */
  internalOrigin: string;
}

interface SignInPending {
  verifier: string;
  state: string;
  nonce: string;
  /** Where to go after: a path of the app. */
  next: string;
  purpose: 'sign-in' | 'verify';
}

/** PostgreSQL stores no NUL character: input holding one is refused here, with a page, not a failed query. */
const HAS_NUL = /\u0000|%00/i;

export function fieldsWithoutCsrf(fields: URLSearchParams): [string, string][] {
  return [...fields].filter(([k]) => k !== 'csrf');
}

export interface ChangeRoute<A> {
  /** What the change is, for the confirm page after a re-verification. */
  label: string | ((fields: URLSearchParams, ctx: Context) => string);
  /** Asks for a fresh factor first. */
  sensitive?: boolean | ((fields: URLSearchParams, ctx: Context) => boolean | Promise<boolean>);
  /** The page drawn again with the typed values and the problem. */
  redisplay?: (ctx: Context, redisplay: Redisplay) => Promise<void>;
  /** A form that carries a file's text (a token seed file) may be larger than the usual 16 KiB. */
  formLimitBytes?: number;
  run(ctx: Context, fields: URLSearchParams, signedIn: SignedIn<A>): Promise<void>;
}

/**
 * The frame of Tessera's own web apps (the admin console, the account portal): sign-in through
 * Tessera itself as an OIDC client, server-side sessions with idle and absolute ends, and `change`,
 * the one way a form of theirs changes something (CSRF, refusal, a fresh factor for sensitive
 * changes held sealed and confirmed after, field errors drawn next to the field).
 */
export function createOwnApp<A>(deps: OwnAppDeps, spec: OwnAppSpec<A>) {
  const { issuer, db, box, audit, log } = deps;
  const { base, times } = spec;
  const secure = issuer.startsWith('https://');
  const rp = ownRelyingParty(issuer, deps.internalOrigin, spec.clientId);
  const sessionCookie = secure ? `__Host-tessera.${spec.name}` : `tessera.${spec.name}`;
  const sessionCookieOptions = { httpOnly: true, sameSite: 'strict' as const, secure, path: secure ? '/' : spec.cookiePath, overwrite: true, signed: false };
  const pendingCookie = `tessera.${spec.name}.signin`;
  const callbackPath = `${base}/callback`;
  const signedOutPath = `${base}/signed-out`;
  const auditType = (what: 'signed_in' | 'signed_out' | 'refused' | 'reverified') => `${spec.name}.${what}` as AuditType;
  const stopped = (ctx: Context, title: string, message: string, status: number, next = base) =>
    renderPage(ctx, 'app/stopped', { title, message, base, app: spec.title, again: againFrom(next) }, status, spec.layout);
  /** Signing in again goes back to the page (a portal) the user came from. */
  const againFrom = (next: string) => `${base}/login${next === base ? '' : `?next=${encodeURIComponent(next)}`}`;

  /** Only this app's paths (and its portals') are followed after sign-in: never another site. */
  function ownPath(value: unknown): string {
    if (typeof value !== 'string' || !/^\/[A-Za-z0-9._~%/?=&+-]*$/.test(value) || value.includes('//') || value.includes('..')) return base;
    return spec.homes.some((home) => value === home || value.startsWith(`${home}/`) || value.startsWith(`${home}?`)) ? value : base;
  }

  const signIn = new Router({ prefix: base });
  // A sign-in that stops says why, with the ways on: try again, or sign in as someone else.
  signIn.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      if (!(error instanceof HttpError) || error.status >= 500) throw error;
      stopped(ctx, error.title, error.message, error.status);
    }
  });

  async function startAuthorization(ctx: Context, purpose: SignInPending['purpose'], next: string, extra: Record<string, string> = {}): Promise<void> {
    const configuration = await rp.configuration();
    const pending: SignInPending = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce(), next, purpose };
    ctx.cookies.set(pendingCookie, Buffer.from(JSON.stringify(pending)).toString('base64url'), {
      httpOnly: true, sameSite: 'lax', secure, path: base, signed: true, overwrite: true, maxAge: 10 * 60 * 1000,
    });
    const url = oidc.buildAuthorizationUrl(configuration, {
      redirect_uri: `${issuer}${callbackPath}`,
      scope: 'openid',
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
      ...spec.signInParams?.(next),
      ...extra,
    });
    ctx.redirect(url.href);
  }

  signIn.get('/login', async (ctx) => startAuthorization(ctx, 'sign-in', ownPath(ctx.query.next)));

  signIn.get('/callback', async (ctx) => {
    const raw = ctx.cookies.get(pendingCookie, { signed: true });
    ctx.cookies.set(pendingCookie, null, { path: base, secure, signed: true });
    let pending: SignInPending | null = null;
    try {
      pending = raw ? (JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as SignInPending) : null;
    } catch {
      pending = null;
    }
    if (typeof ctx.query.error === 'string') {
      // Tessera's own words only for the sign-in this browser started: a link cannot put text on this page.
      const ours = pending !== null && ctx.query.state === pending.state;
      const next = ours ? ownPath(pending!.next) : base;
      if (ours && ctx.query.error === 'access_denied' && ctx.query.error_description === SIGN_IN_CANCELLED) {
        return stopped(ctx, 'Sign-in cancelled', 'You cancelled the sign-in. Nothing was changed.', 200, next);
      }
      const said = ours && typeof ctx.query.error_description === 'string' ? `: ${ctx.query.error_description.slice(0, 200)}` : '.';
      return stopped(ctx, 'Not signed in', `Sign-in to ${spec.title} did not complete${said}`, 401, next);
    }
    if (!pending) throw new HttpError(400, `This sign-in was not started here or has expired. Open ${spec.title} again.`, 'Sign-in expired');
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
      log.warn({ err: error }, `${spec.name}: sign-in response refused`);
      throw new HttpError(400, `The sign-in response could not be verified. Open ${spec.title} again.`, 'Sign-in failed');
    }
    const refusal = spec.admit(claims);
    if (refusal) throw new HttpError(403, refusal, 'Second factor needed');
    const user = await findUserById(db, claims.sub);
    if (!user || user.status !== 'active') throw new HttpError(403, `This account cannot use ${spec.title}.`, 'Access denied');
    const authAt = new Date(Number(claims.auth_time ?? 0) * 1000);
    const amr = Array.isArray(claims.amr) ? (claims.amr as string[]) : [];
    const at = { authAt, factorAt: amr.includes('mfa') ? authAt : null };
    const meta = { ip: ctx.ip, userAgent: ctx.get('user-agent') || null, clientId: spec.clientId };
    const current = pending.purpose === 'verify' ? await resumeAppSession(db, box, spec.name, ctx.cookies.get(sessionCookie), times) : null;
    if (current && current.user.id === user.id) {
      await refreshAuthentication(db, current.idHash, at);
      await audit.record({ type: auditType('reverified'), actor: spec.actorOf(user), subject: user.id, ...meta, details: { amr } });
      return seeOther(ctx, current.pending ? `${base}/confirm` : pending.next);
    }
    const session: AppSession = { idHash: '', user, builtinGroups: await builtinGroupsOf(db, user.id), ...at, pending: null };
    if (spec.access(session) === null) {
      await audit.record({ type: auditType('refused'), actor: user.username, subject: user.id, ...meta });
      return spec.forbidden(ctx, user.username);
    }
    await endAppSession(db, ctx.cookies.get(sessionCookie));
    const id = await startAppSession(db, spec.name, user.id, times, at);
    ctx.cookies.set(sessionCookie, id, sessionCookieOptions);
    await audit.record({ type: auditType('signed_in'), actor: spec.actorOf(user), subject: user.id, ...meta, details: { amr } });
    seeOther(ctx, pending.next);
  });

  /** Tessera's sign-out, then back to the signed-out page, which offers to sign in to `next` again. */
  async function endSessionUrl(next = base): Promise<string> {
    return oidc.buildEndSessionUrl(await rp.configuration(), { client_id: spec.clientId, post_logout_redirect_uri: `${issuer}${signedOutPath}`, ...(next === base ? {} : { state: next }) }).href;
  }

  // Another account: this app's session and the Tessera session end (Tessera asks first), then sign in again.
  signIn.get('/switch', async (ctx) => {
    await endAppSession(db, ctx.cookies.get(sessionCookie));
    ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
    ctx.redirect(await endSessionUrl());
  });

  signIn.get('/signed-out', (ctx) => {
    renderPage(ctx, 'app/signed-out', { title: 'Signed out', base, app: spec.title, again: againFrom(ownPath(ctx.query.state)) }, 200, spec.layout);
  });

  /** Every page after sign-in: the session is resumed (or the browser sent to sign in). */
  const requireSession: Middleware = async (ctx: Context, next: Next) => {
    if (HAS_NUL.test(ctx.originalUrl)) throw new HttpError(400, 'The address holds a character Tessera cannot store (NUL).', 'Request refused');
    const session = await resumeAppSession(db, box, spec.name, ctx.cookies.get(sessionCookie), times);
    const access = session && spec.access(session);
    if (session && access === null) {
      await endAppSession(db, ctx.cookies.get(sessionCookie));
      ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
      return spec.forbidden(ctx, '');
    }
    if (!session || access === null) {
      if (ctx.method === 'GET' || ctx.method === 'HEAD') return seeOther(ctx, `${base}/login?next=${encodeURIComponent(ownPath(ctx.originalUrl))}`);
      return stopped(ctx, 'Session ended', `Your session has ended (signed out, or idle too long). Nothing was changed: sign in again and send the form once more.`, 401);
    }
    const signedIn: SignedIn<A> = { session, access };
    ctx.state[spec.name] = signedIn;
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } catch (error) {
      // A page about something that is not there ("no user …"): a page that says so.
      if (!(error instanceof DomainError)) throw error;
      const sentence = `${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`;
      throw new HttpError(ctx.method === 'GET' ? 404 : 400, sentence, ctx.method === 'GET' ? 'Not found' : 'Not changed');
    }
  };

  function signedInOf(ctx: Context): SignedIn<A> {
    const signedIn = ctx.state[spec.name] as SignedIn<A> | undefined;
    if (!signedIn) throw new HttpError(401, `Sign in to ${spec.title} first.`, 'Not signed in');
    return signedIn;
  }

  /** The app's own routes after sign-in: sign out, re-verify, confirm a held change. */
  const pages = new Router({ prefix: base });
  pages.use(requireSession);

  pages.post('/logout', async (ctx) => {
    const fields = await readFormFields(ctx);
    assertCsrf(ctx, fields.get('csrf'));
    const { session } = signedInOf(ctx);
    await endAppSession(db, ctx.cookies.get(sessionCookie));
    ctx.cookies.set(sessionCookie, null, sessionCookieOptions);
    await audit.record({ type: auditType('signed_out'), actor: spec.actorOf(session.user), subject: session.user.id, clientId: spec.clientId, ip: ctx.ip });
    // The Tessera session ends too, as signing out of the app should (the user confirms on Tessera's page).
    seeOther(ctx, await endSessionUrl(ownPath(fields.get('next'))));
  });

  pages.get('/verify', async (ctx) => startAuthorization(ctx, 'verify', ownPath(ctx.query.next), await spec.verifyParams(signedInOf(ctx).session.user)));

  pages.get('/confirm', (ctx) => {
    const { session } = signedInOf(ctx);
    if (!session.pending) return seeOther(ctx, base);
    renderPage(ctx, 'app/confirm', { title: 'Confirm the change', pending: session.pending, base, ...frameData(ctx) }, 200, spec.layout);
  });
  pages.post('/confirm/cancel', async (ctx) => {
    const fields = await readFormFields(ctx);
    assertCsrf(ctx, fields.get('csrf'));
    const { session } = signedInOf(ctx);
    await holdPending(db, box, spec.name, session.idHash, null);
    const from = session.pending?.path ?? base;
    seeOther(ctx, `${ownPath(spec.cancelledAt ? spec.cancelledAt(from) : from.replace(/\/[^/]*$/, '') || base)}?done=cancelled`);
  });

  let frame: (ctx: Context) => Record<string, unknown> = () => ({});
  /** What every page of the app shows around its content (who is signed in, the navigation). */
  function frameData(ctx: Context): Record<string, unknown> {
    return frame(ctx);
  }

  /** Renders a page of the app in its layout, with a form's typed values and problem when it comes back. */
  function show(ctx: Context, view: string, title: string, data: Record<string, unknown> = {}, status?: number): void {
    const redisplay = data.redisplay as Redisplay | undefined;
    const page: PageData = {
      title,
      // What the form shows: what was typed when it comes back with a problem, else the stored value.
      value: (name: string, stored: unknown) => (redisplay ? (redisplay.values.get(name) ?? '') : stored ?? ''),
      values: (name: string, stored: unknown[]) => (redisplay ? redisplay.values.getAll(name) : stored),
      problem: redisplay?.problem ?? null,
      fieldProblem: (name: string) => (redisplay?.problem?.field === name ? redisplay.problem.message : null),
      ...frameData(ctx),
      ...data,
    };
    // A form drawn again because of a problem in it is a 400.
    renderPage(ctx, view, page, status ?? (redisplay?.problem ? 400 : 200), spec.layout);
  }

  /** The one way a form of the app changes something, on the given router (which runs requireSession). */
  const formPaths = new Map<Router, string[]>();
  function change(router: Router, path: string, route: ChangeRoute<A>): void {
    formPaths.set(router, [...(formPaths.get(router) ?? []), path]);
    router.post(path, async (ctx) => {
      const fields = await readFormFields(ctx, route.formLimitBytes);
      assertCsrf(ctx, fields.get('csrf'));
      const signedIn = signedInOf(ctx);
      const { session } = signedIn;
      const refused = spec.refusesChange(signedIn.access);
      if (refused) throw new HttpError(403, refused, 'Read-only access');
      if ([...fields.values()].some((v) => v.includes('\u0000'))) {
        throw new HttpError(400, 'The form holds a character Tessera cannot store (NUL). Nothing was changed.', 'Not changed');
      }
      const sensitive = typeof route.sensitive === 'function' ? await route.sensitive(fields, ctx) : route.sensitive ?? false;
      if (sensitive && !(await spec.fresh(session))) {
        const label = typeof route.label === 'function' ? route.label(fields, ctx) : route.label;
        const held: PendingChange = { path: ctx.path, fields: fieldsWithoutCsrf(fields), label };
        await holdPending(db, box, spec.name, session.idHash, held);
        return seeOther(ctx, `${base}/verify`);
      }
      if (session.pending) await holdPending(db, box, spec.name, session.idHash, null);
      try {
        await route.run(ctx, fields, signedIn);
      } catch (error) {
        if (!(error instanceof DomainError)) throw error;
        const problem: FormProblem = { message: error.message, ...(error.field ? { field: error.field } : {}) };
        if (route.redisplay) {
          await route.redisplay(ctx, { values: fields, problem });
          // A redisplay that found nothing left to show (a used code) may send the browser on instead.
          if (ctx.status === 200) ctx.status = 400;
          return;
        }
        throw new HttpError(400, error.message, 'Not changed');
      }
    });
  }

  /**
   * After a form comes back with a problem, the address bar shows where it was sent: opening that
   * address again (a reload, a bookmark) goes to the page the form is on, not a bare 405.
   */
  function addFormFallbacks(router: Router): void {
    const prefix = router.opts.prefix ?? '';
    for (const path of formPaths.get(router) ?? []) {
      if (router.match(`${prefix}${path}`, 'GET').route) continue;
      let page = path;
      do page = page.replace(/\/[^/]+$/, '') || '/';
      while (page !== '/' && !router.match(`${prefix}${page}`, 'GET').route);
      router.get(path, (ctx) => seeOther(ctx, `${prefix}${page}`.replace(/:(\w+)/g, (_m, name: string) => encodeURIComponent(String(ctx.params[name] ?? ''))).replace(/\/$/, '')));
    }
  }

  return {
    signIn,
    pages,
    requireSession,
    signedInOf,
    show,
    change,
    addFormFallbacks,
    /** Sets what every page shows around its content. */
    setFrame(fn: (ctx: Context) => Record<string, unknown>) {
      frame = fn;
    },
    sessionCookie,
  };
}

async function builtinGroupsOf(db: Db, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('group_members')
    .innerJoin('groups', 'groups.id', 'group_members.group_id')
    .select('groups.name')
    .where('group_members.user_id', '=', userId)
    .where('groups.builtin', '=', true)
    .execute();
  return rows.map((r) => r.name);
}

export type OwnApp<A> = ReturnType<typeof createOwnApp<A>>;
