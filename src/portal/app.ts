import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { Config } from '../config.js';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Audit } from '../audit/audit.js';
import type { Logger } from '../log.js';
import type { Delivery } from '../factors/delivery/index.js';
import type { PortalAction, User } from '../db/schema.js';
import { HttpError } from '../http/errors.js';
import { seeOther } from '../http/redirect.js';
import { renderPage } from '../http/views.js';
import { loadSettings } from '../settings/settings.js';
import { loginRequirement } from '../policy/policies.js';
import { ACR } from '../oidc/assurance.js';
import { createOwnApp, type Redisplay, type SignedIn } from '../web/own-app.js';
import type { AppSession } from '../web/sessions.js';
import { text } from '../web/form.js';
import { ACTION_LINKS, applies, type SelfTokenType } from './actions.js';
import { ACCOUNT_CLIENT_ID } from './registration.js';
import { mayUsePortal, portalByAlias } from './portals.js';
import {
  accountFacts, changeName, changePassword, confirmContactChange, confirmTokenRegistration, createPassword, ownTokens, pendingContactChange,
  startContactChange, startTokenRegistration, unassignToken, type ContactChannel, type OwnToken, type SelfContext,
} from './account.js';

export interface PortalDeps {
  config: Config;
  issuer: string;
  db: Db;
  box: SecretBox;
  audit: Audit;
  log: Logger;
  delivery: Delivery;
  otpKey: Buffer;
  internalOrigin: string;
}

/** The portal a request is in: /account (every user) or an application's /selfservice/<alias>. */
interface PortalView {
  base: string;
  title: string;
  clientId: string;
  alias: string | null;
  actions: PortalAction[];
  tokenTypes: SelfTokenType[];
}

const WITH_PAGES = new Set<PortalAction>(['register-token', 'unassign-token', 'create-password', 'change-password', 'change-email', 'change-phone', 'change-name']);

/** What a portal page works with. */
interface PortalRequest {
  session: AppSession;
  portal: PortalView;
  tokens: OwnToken[];
  self: SelfContext;
}

/**
 * The account portal: every user's /account, and the self-service portal an administrator enables
 * per application at /selfservice/<alias>, with the actions chosen for it in their order. It is one
 * of Tessera's own web apps (an OIDC client of Tessera); changes to factors, the password and
 * addresses need a second factor passed within ACCOUNT_REVERIFY_MINUTES.
 */
export function portalRoutes(deps: PortalDeps): Router[] {
  const { config, db, box, audit } = deps;

  /** Whether the user has a second factor they could pass now (else a re-verification asks for the password). */
  async function hasUsableFactor(user: User): Promise<boolean> {
    const need = await loginRequirement(db, await loadSettings(db, box), config.mode, user, false, { acr_values: ACR.mfa });
    return need.usableFactors.length > 0;
  }

  const app = createOwnApp<AppSession>(deps, {
    name: 'account',
    clientId: ACCOUNT_CLIENT_ID,
    base: '/account',
    cookiePath: '/',
    homes: ['/account', '/selfservice'],
    times: config.account,
    title: 'your account',
    layout: 'account/layout',
    access: (session) => session,
    refusesChange: () => null,
    admit: () => null,
    verifyParams: async (user): Promise<Record<string, string>> => ((await hasUsableFactor(user)) ? { acr_values: ACR.mfa } : { prompt: 'login' }),
    async fresh(session) {
      const window = config.account.reverifySeconds * 1000;
      if (session.factorAt && Date.now() - session.factorAt.getTime() <= window) return true;
      // Someone with no second factor at all proves it is them with the password, typed again.
      return Date.now() - session.authAt.getTime() <= window && !(await hasUsableFactor(session.user));
    },
    forbidden: (ctx) => renderPage(ctx, 'account/forbidden', { title: 'No access', portal: null }, 403, 'account/layout'),
    actorOf: (user) => user.username,
  });

  const NOTICES: Record<string, string> = {
    'name-changed': 'Your name is changed.',
    'password-changed': 'Your password is changed.',
    'password-created': 'Your password is created: you can sign in with it now.',
    'email-changed': 'Your email address is changed and verified. Your old address was told.',
    'phone-changed': 'Your phone number is changed and verified. Your old number was told.',
    'token-registered': 'The token is registered: sign-ins ask for its code from now on.',
    'token-unassigned': 'The token is taken off your account: it no longer signs you in.',
    cancelled: 'Nothing was changed.',
  };

  app.setFrame((ctx) => {
    const request = ctx.state.portal as PortalRequest | undefined;
    const done = typeof ctx.query.done === 'string' ? NOTICES[ctx.query.done] : undefined;
    const session = (ctx.state.account as SignedIn<AppSession> | undefined)?.session;
    return { me: session ? { username: session.user.username } : null, portal: request?.portal ?? { base: '/account', title: 'Your account' }, notice: done ?? null };
  });

  /** Resolves the portal of the request and who is in it, for every page below. */
  function portalContext(resolve: (ctx: Context) => Promise<PortalView>) {
    return async (ctx: Context, next: Next) => {
      const { session } = app.signedInOf(ctx);
      const portal = await resolve(ctx);
      const settings = await loadSettings(db, box);
      const tokens = await ownTokens(db, session.user.id);
      const self: SelfContext = {
        db, box, audit, config, settings, delivery: deps.delivery, otpKey: deps.otpKey, user: session.user,
        clientId: portal.clientId, portal: portal.alias, sessionKey: session.idHash, ip: ctx.ip, userAgent: ctx.get('user-agent') || null,
      };
      ctx.state.portal = { session, portal, tokens, self } satisfies PortalRequest;
      await next();
    };
  }

  const accountPortal = new Router({ prefix: '/account' });
  accountPortal.use(app.requireSession);
  accountPortal.use(portalContext(async () => {
    const { account } = await loadSettings(db, box);
    return { base: '/account', title: 'Your account', clientId: ACCOUNT_CLIENT_ID, alias: null, actions: account.actions, tokenTypes: account.tokenTypes };
  }));

  const selfService = new Router({ prefix: '/selfservice/:alias' });
  selfService.use(app.requireSession);
  selfService.use(portalContext(async (ctx) => {
    const portal = await portalByAlias(db, String(ctx.params.alias ?? ''));
    if (!portal) throw new HttpError(404, 'There is no self-service portal at this address.', 'Not found');
    const { session } = app.signedInOf(ctx);
    if (!(await mayUsePortal(db, portal, session.user.id))) {
      throw new HttpError(403, `This portal is for the users of ${portal.clientName} (members of the group ${portal.group}). Your own account page is at /account.`, 'No access');
    }
    return { base: `/selfservice/${portal.alias}`, title: portal.clientName, clientId: portal.clientId, alias: portal.alias, actions: portal.actions, tokenTypes: portal.tokenTypes };
  }));

  const requestOf = (ctx: Context) => ctx.state.portal as PortalRequest;

  /** The enabled actions that apply to this user, in the portal's order (hardware-token actions and change-login have no pages yet). */
  function offered(request: PortalRequest): PortalAction[] {
    const facts = accountFacts(request.session.user, request.tokens);
    return request.portal.actions.filter((a) => WITH_PAGES.has(a) && applies(a, facts));
  }

  /** An action's page exists only where the portal offers it and it applies. */
  function requireAction(ctx: Context, action: PortalAction): PortalRequest {
    const request = requestOf(ctx);
    if (!offered(request).includes(action)) throw new HttpError(404, 'This action is not offered here.', 'Not found');
    return request;
  }

  const show = (ctx: Context, view: string, title: string, data: Record<string, unknown> = {}) => {
    const request = requestOf(ctx);
    app.show(ctx, `account/${view}`, title, { user: request.session.user, tokens: request.tokens, ...data });
  };
  const done = (ctx: Context, notice: string) => seeOther(ctx, `${requestOf(ctx).portal.base}?done=${notice}`);

  for (const router of [accountPortal, selfService]) {
    router.get('/', (ctx) => {
      const request = requestOf(ctx);
      show(ctx, 'home', request.portal.title, { links: offered(request).map((a) => ({ action: a, ...ACTION_LINKS[a] })) });
    });

    // Names.
    router.get('/name', (ctx) => {
      requireAction(ctx, 'change-name');
      show(ctx, 'name', 'Change name');
    });
    app.change(router, '/name', {
      label: 'Change name',
      redisplay: async (ctx, r) => show(ctx, 'name', 'Change name', { redisplay: r }),
      async run(ctx, f) {
        await changeName(requireAction(ctx, 'change-name').self, { givenName: text(f, 'givenName'), familyName: text(f, 'familyName') });
        done(ctx, 'name-changed');
      },
    });

    // Passwords.
    const passwordPage = (ctx: Context, redisplay?: Redisplay) => show(ctx, 'password', 'Change password', { create: false, redisplay });
    router.get('/password', (ctx) => {
      requireAction(ctx, 'change-password');
      passwordPage(ctx);
    });
    app.change(router, '/password', {
      label: 'Change password',
      sensitive: true,
      redisplay: async (ctx, r) => passwordPage(ctx, r),
      async run(ctx, f, { session }) {
        const fresh = session.factorAt !== null && Date.now() - session.factorAt.getTime() <= config.account.reverifySeconds * 1000;
        await changePassword(requireAction(ctx, 'change-password').self, { current: f.get('current') ?? '', password: f.get('password') ?? '', confirm: f.get('confirm') ?? '' }, fresh);
        done(ctx, 'password-changed');
      },
    });
    router.get('/password/new', (ctx) => {
      requireAction(ctx, 'create-password');
      show(ctx, 'password', 'Create a password', { create: true });
    });
    app.change(router, '/password/new', {
      label: 'Create a password',
      sensitive: true,
      redisplay: async (ctx, r) => show(ctx, 'password', 'Create a password', { create: true, redisplay: r }),
      async run(ctx, f) {
        await createPassword(requireAction(ctx, 'create-password').self, { password: f.get('password') ?? '', confirm: f.get('confirm') ?? '' });
        done(ctx, 'password-created');
      },
    });

    // Email address and phone number: a code to the new one confirms it.
    for (const [channel, action, path, title] of [['email', 'change-email', '/email', 'Change email'], ['sms', 'change-phone', '/phone', 'Change phone number']] as const) {
      const entry = (ctx: Context, redisplay?: Redisplay) => show(ctx, 'contact', title, { channel, path, redisplay });
      router.get(path, (ctx) => {
        requireAction(ctx, action);
        entry(ctx);
      });
      app.change(router, path, {
        label: title,
        sensitive: true,
        redisplay: async (ctx, r) => entry(ctx, r),
        async run(ctx, f) {
          const request = requireAction(ctx, action);
          const { challengeId } = await startContactChange(request.self, channel as ContactChannel, text(f, channel === 'email' ? 'email' : 'phone'));
          seeOther(ctx, `${request.portal.base}${path}/confirm?c=${challengeId}`);
        },
      });
      const confirmPage = async (ctx: Context, challengeId: string, redisplay?: Redisplay) => {
        const request = requireAction(ctx, action);
        const masked = await pendingContactChange(request.self, channel, challengeId);
        if (!masked) return seeOther(ctx, `${request.portal.base}${path}`);
        show(ctx, 'contact-confirm', title, { channel, path, challengeId, masked, codeLength: request.self.settings.mfa.otp.length, redisplay });
      };
      router.get(`${path}/confirm`, (ctx) => confirmPage(ctx, typeof ctx.query.c === 'string' ? ctx.query.c : ''));
      app.change(router, `${path}/confirm`, {
        label: title,
        redisplay: async (ctx, r) => confirmPage(ctx, text(r.values, 'challenge'), r),
        async run(ctx, f) {
          await confirmContactChange(requireAction(ctx, action).self, channel, text(f, 'challenge'), text(f, 'code'));
          done(ctx, channel === 'email' ? 'email-changed' : 'phone-changed');
        },
      });
    }

    // A new token: an authenticator app, by QR code.
    router.get('/tokens/new', (ctx) => {
      requireAction(ctx, 'register-token');
      show(ctx, 'token-new', 'Register a new token', { enrolment: null });
    });
    const enrolmentPage = async (ctx: Context, redisplay?: Redisplay) => {
      const enrolment = await startTokenRegistration(requireAction(ctx, 'register-token').self);
      show(ctx, 'token-new', 'Register a new token', { enrolment, redisplay });
    };
    app.change(router, '/tokens/new', {
      label: 'Register a new token',
      sensitive: true,
      async run(ctx) {
        await enrolmentPage(ctx);
      },
    });
    app.change(router, '/tokens/new/confirm', {
      label: 'Register a new token',
      sensitive: true,
      redisplay: async (ctx, r) => enrolmentPage(ctx, r),
      async run(ctx, f) {
        await confirmTokenRegistration(requireAction(ctx, 'register-token').self, { authenticatorId: text(f, 'authenticator'), code: text(f, 'code'), label: text(f, 'label') });
        done(ctx, 'token-registered');
      },
    });

    // Taking a token off the account.
    const unassignPage = (ctx: Context, redisplay?: Redisplay) => show(ctx, 'token-unassign', 'Unassign a token', { redisplay });
    router.get('/tokens/unassign', (ctx) => {
      requireAction(ctx, 'unassign-token');
      unassignPage(ctx);
    });
    app.change(router, '/tokens/unassign', {
      label: 'Unassign a token',
      sensitive: true,
      redisplay: async (ctx, r) => unassignPage(ctx, r),
      async run(ctx, f) {
        await unassignToken(requireAction(ctx, 'unassign-token').self, text(f, 'token'));
        done(ctx, 'token-unassigned');
      },
    });

    app.addFormFallbacks(router);
  }

  return [app.signIn, app.pages, accountPortal, selfService];
}
