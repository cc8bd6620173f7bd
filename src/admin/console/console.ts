import type { Context } from 'koa';
import type { Config } from '../../config.js';
import { HttpError } from '../../http/errors.js';
import { renderPage } from '../../http/views.js';
import { isMultiFactorAcr } from '../../oidc/assurance.js';
import type { Actor, ServiceContext } from '../service.js';
import { CONSOLE_CLIENT_ID } from './registration.js';
import { createOwnApp, type ChangeRoute, type OwnAppDeps, type SignedIn } from '../../web/own-app.js';
import type { AppSession } from '../../web/sessions.js';

export interface ConsoleDeps extends OwnAppDeps {
  config: Config;
  /** After a change: the running server drops what it keeps (clients, APIs, scope rules). */
  changed: () => void;
}

/** What a console page handler works with: the signed-in administrator and the service layer acting as them. */
export interface ConsoleRequest {
  session: AppSession;
  actor: Actor;
  service: ServiceContext;
}

export type { FormProblem, Redisplay } from '../../web/own-app.js';

/** Short confirmations after a change, by key: a link cannot put words of its own on the page. */
const NOTICES: Record<string, string> = {
  created: 'Created.',
  saved: 'Saved.',
  'saved-secrets-forgotten': 'Saved. The server changed, so the stored password or key was forgotten: type it again for the new server.',
  removed: 'Removed.',
  'tokens-imported': 'tokens imported into the unassigned stock: users register them by serial number.',
  'restore-approved': 'Approved: lost tokens are disabled, the new details applied and the user’s sessions revoked.',
  unlocked: 'Unlocked: the failure count is cleared.',
  'password-set': 'Password changed.',
  'mfa-reset': 'Every authenticator app, passkey and the recovery codes of this user were removed.',
  'passkey-removed': 'Passkey removed.',
  'recovery-codes-removed': 'The user’s recovery codes no longer work. They can make a new set on their account page.',
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
  'jit-released': 'The reservation is ended: any member of the group may reserve the account now.',
  'jit-disabled': 'The account is no longer shared; it and its group stay.',
  cancelled: 'Nothing was changed.',
};

/** A console form's change: its handler works with the administrator's request. */
type ConsoleChange = Omit<ChangeRoute<ConsoleRequest>, 'run'> & { run(ctx: Context, fields: URLSearchParams, request: ConsoleRequest): Promise<void> };

/** Built-in groups → console role: admins change, auditors read; neither, no console. */
function roleOf(builtinGroups: string[]): Actor['role'] | null {
  return builtinGroups.includes('admins') ? 'admin' : builtinGroups.includes('auditors') ? 'auditor' : null;
}

/**
 * The admin console: one of Tessera's own web apps (`createOwnApp`) whose users are the members of
 * `admins` (who change things) and `auditors` (who read), with a second factor at every sign-in.
 */
export function createConsole(deps: ConsoleDeps) {
  const { config, db, box, audit } = deps;
  const app = createOwnApp<ConsoleRequest>(deps, {
    name: 'admin',
    clientId: CONSOLE_CLIENT_ID,
    base: '/admin',
    cookiePath: '/admin',
    homes: ['/admin'],
    times: config.admin,
    title: 'the admin console',
    layout: 'admin/layout',
    access(session) {
      const role = roleOf(session.builtinGroups);
      if (!role) return null;
      const actor: Actor = { label: `admin:${session.user.username}`, role };
      return { session, actor, service: { db, box, audit, mode: config.mode, actor, changed: deps.changed } };
    },
    refusesChange: ({ actor }) => (actor.role === 'admin' ? null : 'Auditors can see everything in the console but change nothing. Ask an administrator.'),
    // The console's client asks for a second factor at every sign-in; the token must show one, just now.
    admit: (claims) =>
      !isMultiFactorAcr(claims.acr) || Date.now() - Number(claims.auth_time ?? 0) * 1000 > 10 * 60 * 1000
        ? 'The admin console needs a second factor passed just now. Open the admin console again.'
        : null,
    // Window 0: every authorization of the console's client asks for the factor again.
    verifyParams: async () => ({}),
    fresh: async (session) => session.factorAt !== null && Date.now() - session.factorAt.getTime() <= config.admin.reverifySeconds * 1000,
    forbidden: (ctx, username) => renderPage(ctx, 'admin/forbidden', { title: 'No access to the admin console', username }, 403, 'admin/layout'),
    actorOf: (user) => `admin:${user.username}`,
  });
  // Every console request names its page in the audit records it causes.
  app.pages.use(async (ctx, next) => {
    const request = app.signedInOf(ctx).access;
    request.service = { ...request.service, via: { console: ctx.path } };
    await next();
  });
  app.setFrame((ctx) => {
    const request = (ctx.state.admin as SignedIn<ConsoleRequest> | undefined)?.access;
    let done = typeof ctx.query.done === 'string' && Object.hasOwn(NOTICES, ctx.query.done) ? NOTICES[ctx.query.done] : undefined;
    // A count is the one thing a link may add to a notice: digits only.
    if (done && typeof ctx.query.n === 'string' && /^\d{1,6}$/.test(ctx.query.n)) done = `${Number(ctx.query.n)} — ${done}`;
    return {
      me: request ? { username: request.session.user.username, role: request.actor.role } : null,
      section: ctx.path.split('/')[2] ?? '',
      notice: done ?? null,
      readOnly: request?.actor.role !== 'admin',
    };
  });

  return {
    signIn: app.signIn,
    pages: app.pages,
    show: (ctx: Context, view: string, title: string, data: Record<string, unknown> = {}, status?: number) => app.show(ctx, `admin/${view}`, title, data, status),
    change: (path: string, route: ConsoleChange) => app.change(app.pages, path, { ...route, run: (ctx, fields, signedIn) => route.run(ctx, fields, signedIn.access) }),
    addFormFallbacks: () => app.addFormFallbacks(app.pages),
  };
}

export function consoleOf(ctx: Context): ConsoleRequest {
  const request = (ctx.state.admin as SignedIn<ConsoleRequest> | undefined)?.access;
  if (!request) throw new HttpError(401, 'Sign in to the admin console first.', 'Not signed in');
  return request;
}

export type Console = ReturnType<typeof createConsole>;
