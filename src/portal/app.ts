import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { Config } from '../config.js';
import type { LdapDirectory } from '../directory/ldap.js';
import type { Delivery } from '../factors/delivery/index.js';
import type { PortalAction, User } from '../db/schema.js';
import { HttpError } from '../http/errors.js';
import { seeOther } from '../http/redirect.js';
import { renderPage } from '../http/views.js';
import { loadSettings, type Settings } from '../settings/settings.js';
import { loginRequirement, userMfaFacts } from '../policy/policies.js';
import { effectivePolicy } from '../policy/requirement.js';
import { ACR } from '../oidc/assurance.js';
import { createOwnApp, type OwnAppDeps, type Redisplay, type SignedIn } from '../web/own-app.js';
import type { AppSession } from '../web/sessions.js';
import { text } from '../web/form.js';
import { ACTION_LINKS, applies, type SelfTokenType } from './actions.js';
import { ACCOUNT_CLIENT_ID } from './registration.js';
import { mayUsePortal, portalByAlias, type Portal } from './portals.js';
import { restoreRoutes } from './restore-pages.js';
import { JitError, release, reservableBy, reserve, untilText } from '../jit/shared-accounts.js';
import { requestMeta } from '../flows/context.js';
import { readFormFields } from '../http/body.js';
import { assertCsrf } from '../http/csrf.js';
import { PASSKEY_CSP } from '../http/security.js';
import { tellOwner } from '../factors/delivery/index.js';
import { addPasskey, listPasskeys, passkeyAddedNotice, PasskeyError, registrationOptions, relyingPartyOf, removePasskeys, renamePasskey } from '../factors/passkeys.js';
import { generateRecoveryCodes, recoveryCodeStatus, setKey } from '../factors/recovery-codes.js';
import {
  AccountError, accountFacts, changeLogin, changeName, changePassword, confirmContactChange, confirmTokenRegistration, createPassword, ownTokens, pendingContactChange,
  reassignToken, registerExistingToken, removeTokenPin, resyncToken, setTokenPin, startContactChange, startTokenRegistration, unassignToken,
  type ContactChannel, type OwnToken, type SelfContext,
} from './account.js';

export interface PortalDeps extends OwnAppDeps {
  config: Config;
  delivery: Delivery;
  otpKey: Buffer;
  directory: LdapDirectory;
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

  /**
   * Whether the user has a second factor they could pass now (else a re-verification asks for the
   * password, or the emailed sign-in code of an account without one: that email is then its first factor).
   */
  async function hasUsableFactor(user: User): Promise<boolean> {
    const need = await loginRequirement(db, await loadSettings(db, box), config.mode, user, false, { acr_values: ACR.mfa });
    return need.usableFactors.length > 0;
  }

  /** The session passed a second factor recently enough for a sensitive change (or, with none to pass, the password). */
  async function fresh(session: AppSession): Promise<boolean> {
    const window = config.account.reverifySeconds * 1000;
    if (session.factorAt && Date.now() - session.factorAt.getTime() <= window) return true;
    // Someone with no second factor at all proves it is them with the password, typed again.
    return Date.now() - session.authAt.getTime() <= window && !(await hasUsableFactor(session.user));
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
    // A cancelled change goes back to the portal's page, whichever action it was.
    cancelledAt: (path) => /^\/selfservice\/[a-z0-9-]{1,64}/.exec(path)?.[0] ?? '/account',
    // Tessera's sign-in page names the application whose portal the user is signing in to.
    signInParams: (next): Record<string, string> => {
      const alias = /^\/selfservice\/([a-z0-9-]{1,64})(?:[/?]|$)/.exec(next)?.[1];
      return alias ? { tessera_portal: alias } : {};
    },
    verifyParams: async (user): Promise<Record<string, string>> => ((await hasUsableFactor(user)) ? { acr_values: ACR.mfa } : { prompt: 'login' }),
    fresh,
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
    'token-reassigned': 'The token is exchanged: the old one no longer signs you in.',
    'token-resynced': 'The token is in step again: sign in with its next code.',
    'pin-set': 'The PIN is set: type it with the code from now on.',
    'pin-removed': 'The PIN is removed: the code alone signs you in.',
    'login-changed': 'Your login is changed: sign in with the new one from now on.',
    'jit-reserved': 'Reserved for you: sign in to the application as the shared account now, with its username and your own code. The reservation ends with that sign-in or when its time runs out. In this browser you are signed in as yourself: sign out here first, or use another browser.',
    'jit-released': 'The reservation is released: anyone of the group may reserve the account now.',
    'passkey-added': 'The passkey is added: sign-ins can ask for it from now on.',
    'passkey-verified': 'It’s you: now press “Add a passkey” to create it.',
    'passkey-renamed': 'The passkey is renamed.',
    'passkey-removed': 'The passkey is removed: it no longer signs you in.',
    cancelled: 'Nothing was changed.',
  };

  app.setFrame((ctx) => {
    const request = ctx.state.portal as PortalRequest | undefined;
    const done = typeof ctx.query.done === 'string' && Object.hasOwn(NOTICES, ctx.query.done) ? NOTICES[ctx.query.done] : undefined;
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
        db, box, audit, config, settings, delivery: deps.delivery, otpKey: deps.otpKey, directory: deps.directory, user: session.user,
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
  // An address with no portal says so at once, before any sign-in.
  selfService.use(async (ctx, next) => {
    const portal = await portalByAlias(db, String(ctx.params.alias ?? ''));
    if (!portal) throw new HttpError(404, 'There is no self-service portal at this address.', 'Not found');
    ctx.state.portalFound = portal;
    await next();
  });
  selfService.use(app.requireSession);
  selfService.use(portalContext(async (ctx) => {
    const portal = ctx.state.portalFound as Portal;
    const { session } = app.signedInOf(ctx);
    if (!(await mayUsePortal(db, portal, session.user.id))) {
      throw new HttpError(403, `This portal is for the users of ${portal.clientName} (members of the group ${portal.group}). Your own account page is at /account.`, 'No access');
    }
    return { base: `/selfservice/${portal.alias}`, title: portal.clientName, clientId: portal.clientId, alias: portal.alias, actions: portal.actions, tokenTypes: portal.tokenTypes };
  }));

  const requestOf = (ctx: Context) => ctx.state.portal as PortalRequest;

  /** The enabled actions that apply to this user, in the portal's order. */
  function offered(request: PortalRequest): PortalAction[] {
    const facts = accountFacts(request.session.user, request.tokens);
    return request.portal.actions.filter((a) => applies(a, facts));
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

  /** One action's page: GET draws its form; POST runs it through `change` (CSRF, a fresh factor where sensitive, the form again on a refusal). */
  interface ActionPage {
    /** Under the action's own path (ACTION_LINKS), e.g. "/confirm". */
    sub?: string;
    view: string;
    sensitive?: boolean;
    /** What the page shows besides the user and their tokens; null sends the user back to the action's first page. */
    data?: (ctx: Context, request: PortalRequest, redisplay?: Redisplay) => Promise<Record<string, unknown> | null> | Record<string, unknown>;
    /** A page only reached by a POST from the one before it (its GET goes back there). */
    postOnly?: boolean;
    run(ctx: Context, fields: URLSearchParams, request: PortalRequest, signedIn: SignedIn<AppSession>): Promise<void>;
  }
  function actionPage(router: Router, action: PortalAction, page: ActionPage): void {
    const { path: first, label } = ACTION_LINKS[action];
    const path = `${first}${page.sub ?? ''}`;
    const draw = async (ctx: Context, redisplay?: Redisplay) => {
      const request = requireAction(ctx, action);
      const data = page.data ? await page.data(ctx, request, redisplay) : {};
      if (data === null) return seeOther(ctx, `${request.portal.base}${first}`);
      show(ctx, page.view, label, { path, first, redisplay, ...data });
    };
    router.get(path, async (ctx) => {
      if (page.postOnly) return seeOther(ctx, `${requireAction(ctx, action).portal.base}${first}`);
      await draw(ctx);
    });
    app.change(router, path, {
      label,
      ...(page.sensitive ? { sensitive: true } : {}),
      redisplay: draw,
      run: (ctx, fields, signedIn) => page.run(ctx, fields, requireAction(ctx, action), signedIn),
    });
  }
  const field = (f: URLSearchParams, name: string) => f.get(name) ?? '';

  /** The portal's first page: the account, its tokens, what can be done, and (on /account) the shared accounts to reserve. */
  async function home(ctx: Context, redisplay?: Redisplay): Promise<void> {
    const request = requestOf(ctx);
    const shared = request.portal.alias === null ? (await reservableBy(db, request.session.user.id)).map((a) => ({ ...a, until: a.holder ? untilText(a.holder.until) : null })) : [];
    // A passkey's name typed before a verification came in between is offered again.
    const typedName = typeof ctx.query.name === 'string' && ctx.query.name.length <= 64 && !/\p{Cc}/u.test(ctx.query.name) ? ctx.query.name : '';
    const own = request.portal.alias === null ? await ownFactors(request.self.settings, request.session.user.id, typedName) : null;
    show(ctx, 'home', request.portal.title, { links: offered(request).map((a) => ({ action: a, ...ACTION_LINKS[a] })), shared, own, redisplay });
    // The "Add a passkey" button runs the browser's ceremony with Tessera's own script.
    if (own?.passkeysOn) ctx.set('Content-Security-Policy', PASSKEY_CSP);
  }

  /** Recovery codes are offered where the system has them on and the user's policy accepts them at sign-in. */
  async function recoveryAccepted(settings: Settings, userId: string): Promise<boolean> {
    if (!settings.mfa.methods.recovery) return false;
    const allowed = effectivePolicy((await userMfaFacts(db, userId)).policies)?.allowedFactors ?? null;
    return !allowed || allowed.includes('recovery');
  }

  /** The passkeys and recovery codes /account shows, where the system offers them. */
  async function ownFactors(settings: Settings, userId: string, typedName: string) {
    const [passkeys, recovery, recoveryOn] = await Promise.all([listPasskeys(db, userId), recoveryCodeStatus(db, userId), recoveryAccepted(settings, userId)]);
    return { passkeysOn: settings.mfa.methods.webauthn, passkeys, typedName, recoveryOn, recovery };
  }

  // Passkeys: the browser creates a key for Tessera's origin; the options come by script, the answer by the form.
  const rpOf = (ctx: Context) => relyingPartyOf(deps.issuer, requestOf(ctx).self.settings.mfa.appName);
  const passkeysOn = (ctx: Context) => {
    if (!requestOf(ctx).self.settings.mfa.methods.webauthn) throw new HttpError(404, 'Passkeys are switched off on this system.', 'Not found');
  };
  accountPortal.post('/passkeys/options', async (ctx) => {
    const fields = await readFormFields(ctx);
    assertCsrf(ctx, fields.get('csrf'));
    passkeysOn(ctx);
    const { session } = app.signedInOf(ctx);
    ctx.set('Cache-Control', 'no-store');
    // Not fresh: the script falls back to the form, which asks for a second factor first.
    if (!(await fresh(session))) {
      ctx.status = 403;
      ctx.body = { error: 'verify_first' };
      return;
    }
    ctx.body = await registrationOptions(db, rpOf(ctx), session.user, session.idHash);
  });
  app.change(accountPortal, '/passkeys', {
    label: 'Add a passkey',
    sensitive: true,
    redisplay: home,
    async run(ctx, f, { session }) {
      passkeysOn(ctx);
      const response = f.get('response') ?? '';
      // The script sent the form without an answer because a second factor had to be passed first: that is done now.
      if (!response && f.get('script') === '1') return seeOther(ctx, `/account?done=passkey-verified&name=${encodeURIComponent(text(f, 'name').slice(0, 64))}#passkeys`);
      if (!response) throw new PasskeyError('your browser did not create a passkey. Adding one needs JavaScript: turn it on, then press "Add a passkey" again', 'passkey');
      const passkey = await addPasskey(db, rpOf(ctx), session.user, session.idHash, response, text(f, 'name'));
      await audit.record({ type: 'mfa.passkey_added', actor: session.user.username, subject: session.user.id, clientId: ACCOUNT_CLIENT_ID, ...requestMeta(ctx), details: { passkey: passkey.name, synced: passkey.synced, portal: 'account' } });
      const { settings } = requestOf(ctx).self;
      void tellOwner(deps.delivery, settings, deps.log, session.user, passkeyAddedNotice(settings.mfa.appName, session.user.username, passkey.name));
      done(ctx, 'passkey-added');
    },
  });
  app.change(accountPortal, '/passkeys/rename', {
    label: 'Rename a passkey',
    redisplay: home,
    async run(ctx, f, { session }) {
      if (!(await renamePasskey(db, session.user.id, text(f, 'passkey'), text(f, 'name')))) throw new PasskeyError('there is no such passkey on your account', 'passkey');
      await audit.record({ type: 'mfa.passkey_renamed', actor: session.user.username, subject: session.user.id, clientId: ACCOUNT_CLIENT_ID, ...requestMeta(ctx), details: { passkey: text(f, 'name'), portal: 'account' } });
      done(ctx, 'passkey-renamed');
    },
  });
  app.change(accountPortal, '/passkeys/remove', {
    label: 'Remove a passkey',
    sensitive: true,
    redisplay: home,
    async run(ctx, f, { session }) {
      const passkey = (await listPasskeys(db, session.user.id)).find((p) => p.id === text(f, 'passkey'));
      if (!passkey || (await removePasskeys(db, session.user.id, passkey.id)) === 0) throw new PasskeyError('there is no such passkey on your account', 'passkey');
      await audit.record({ type: 'mfa.passkey_removed', actor: session.user.username, subject: session.user.id, clientId: ACCOUNT_CLIENT_ID, ...requestMeta(ctx), details: { passkey: passkey.name, portal: 'account' } });
      done(ctx, 'passkey-removed');
    },
  });

  // Recovery codes: made on request, shown once (and downloadable as text), kept only as hashes.
  const recoveryOn = async (ctx: Context) => {
    const { settings, user } = requestOf(ctx).self;
    if (!settings.mfa.methods.recovery) throw new HttpError(404, 'Recovery codes are switched off on this system.', 'Not found');
    if (!(await recoveryAccepted(settings, user.id))) throw new HttpError(404, 'Your access policy does not accept recovery codes at sign-in: there is nothing to make here.', 'Not found');
  };
  const recoveryPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { session } = app.signedInOf(ctx);
    await recoveryOn(ctx);
    const status = await recoveryCodeStatus(db, session.user.id);
    show(ctx, 'recovery-codes', 'Recovery codes', { status, replaces: setKey(status), codes: null, redisplay });
  };
  accountPortal.get('/recovery-codes', (ctx) => recoveryPage(ctx));
  app.change(accountPortal, '/recovery-codes', {
    label: 'Make new recovery codes',
    sensitive: true,
    redisplay: recoveryPage,
    async run(ctx, f, { session }) {
      await recoveryOn(ctx);
      const codes = await generateRecoveryCodes(db, box.deriveKey('recovery-codes'), session.user.id, text(f, 'replaces'));
      // The form was sent again (a reload, a second press): the set it made stands, and is not shown again.
      if (!codes) throw new AccountError('your new set was already made, and its codes are shown only once. If you did not save them, make a new set', 'replaces');
      await audit.record({ type: 'mfa.recovery_codes_generated', actor: session.user.username, subject: session.user.id, clientId: ACCOUNT_CLIENT_ID, ...requestMeta(ctx), details: { count: codes.length, portal: 'account' } });
      const { appName } = requestOf(ctx).self.settings.mfa;
      const file = `${appName} recovery codes for ${session.user.username}\nMade ${new Date().toISOString().slice(0, 10)}. Each code works once; a new set voids this one.\n\n${codes.join('\n')}\n`;
      show(ctx, 'recovery-codes', 'Recovery codes', { status: await recoveryCodeStatus(db, session.user.id), codes, download: `data:text/plain;charset=utf-8,${encodeURIComponent(file)}` });
    },
  });

  // Just-in-time shared accounts: a member reserves one here, then signs in to it with their own code.
  app.change(accountPortal, '/jit/reserve', {
    label: 'Reserve a shared account',
    redisplay: home,
    async run(ctx, f, { session }) {
      const account = text(f, 'account');
      const meta = requestMeta(ctx);
      try {
        const reservation = await reserve(db, { sharedUserId: account, memberId: session.user.id, ip: ctx.ip });
        await audit.record({ type: 'jit.reserved', actor: session.user.username, subject: reservation.sharedUserId, clientId: ACCOUNT_CLIENT_ID, ...meta, details: { reservation: reservation.id, shared_account: reservation.shared, member_id: session.user.id, until: reservation.expiresAt } });
      } catch (error) {
        if (error instanceof JitError) {
          await audit.record({ type: 'jit.refused', actor: session.user.username, subject: account.slice(0, 64), clientId: ACCOUNT_CLIENT_ID, ...meta, details: { reason: error.message, member_id: session.user.id } });
        }
        throw error;
      }
      done(ctx, 'jit-reserved');
    },
  });
  app.change(accountPortal, '/jit/release', {
    label: 'Release a shared account',
    redisplay: home,
    async run(ctx, f, { session }) {
      const account = text(f, 'account');
      if (!(await release(db, { sharedUserId: account, memberId: session.user.id }))) throw new JitError('you hold no reservation of this account', 'account');
      await audit.record({ type: 'jit.released', actor: session.user.username, subject: account, clientId: ACCOUNT_CLIENT_ID, ...requestMeta(ctx), details: { member_id: session.user.id } });
      done(ctx, 'jit-released');
    },
  });

  for (const router of [accountPortal, selfService]) {
    router.get('/', (ctx) => home(ctx));

    actionPage(router, 'change-name', {
      view: 'name',
      async run(ctx, f, { self }) {
        await changeName(self, { givenName: text(f, 'givenName'), familyName: text(f, 'familyName') });
        done(ctx, 'name-changed');
      },
    });

    actionPage(router, 'change-login', {
      view: 'login-name',
      sensitive: true,
      async run(ctx, f, { self }) {
        await changeLogin(self, { username: text(f, 'username') });
        done(ctx, 'login-changed');
      },
    });

    actionPage(router, 'change-password', {
      view: 'password',
      sensitive: true,
      data: () => ({ create: false }),
      async run(ctx, f, { self }, { session }) {
        const fresh = session.factorAt !== null && Date.now() - session.factorAt.getTime() <= config.account.reverifySeconds * 1000;
        await changePassword(self, { current: field(f, 'current'), password: field(f, 'password'), confirm: field(f, 'confirm') }, fresh);
        done(ctx, 'password-changed');
      },
    });
    actionPage(router, 'create-password', {
      view: 'password',
      sensitive: true,
      data: () => ({ create: true }),
      async run(ctx, f, { self }) {
        await createPassword(self, { password: field(f, 'password'), confirm: field(f, 'confirm') });
        done(ctx, 'password-created');
      },
    });

    // Email address and phone number: a code to the new one confirms it.
    for (const [channel, action] of [['email', 'change-email'], ['sms', 'change-phone']] as const) {
      actionPage(router, action, {
        view: 'contact',
        sensitive: true,
        data: () => ({ channel }),
        async run(ctx, f, { self, portal }) {
          const { challengeId } = await startContactChange(self, channel as ContactChannel, text(f, channel === 'email' ? 'email' : 'phone'));
          seeOther(ctx, `${portal.base}${ACTION_LINKS[action].path}/confirm?c=${challengeId}`);
        },
      });
      actionPage(router, action, {
        sub: '/confirm',
        view: 'contact-confirm',
        async data(ctx, { self }, redisplay) {
          const challengeId = redisplay ? text(redisplay.values, 'challenge') : typeof ctx.query.c === 'string' ? ctx.query.c : '';
          const masked = await pendingContactChange(self, channel, challengeId);
          return masked ? { channel, challengeId, masked, codeLength: self.settings.mfa.otp.length } : null;
        },
        async run(ctx, f, { self }) {
          await confirmContactChange(self, channel, text(f, 'challenge'), text(f, 'code'));
          done(ctx, channel === 'email' ? 'email-changed' : 'phone-changed');
        },
      });
    }

    // A new token: an authenticator app, by QR code (also the new token of a re-assignment).
    const enrolment = (action: 'register-token' | 'reassign-token', replaces: (f: URLSearchParams) => string | undefined): ActionPage[] => [
      {
        sub: action === 'register-token' ? '' : '/app',
        view: 'token-new',
        sensitive: true,
        postOnly: action === 'reassign-token',
        data: (_ctx, _r, redisplay) => ({ enrolment: null, replaces: redisplay ? replaces(redisplay.values) : undefined }),
        async run(_ctx, f, { self }) {
          const old = replaces(f);
          show(_ctx, 'token-new', ACTION_LINKS[action].label, { path: `${ACTION_LINKS[action].path}${action === 'register-token' ? '' : '/app'}`, enrolment: await startTokenRegistration(self), replaces: old });
        },
      },
      {
        sub: action === 'register-token' ? '/confirm' : '/app/confirm',
        view: 'token-new',
        sensitive: true,
        postOnly: true,
        data: async (_ctx, { self }, redisplay) => ({ enrolment: await startTokenRegistration(self), replaces: redisplay ? replaces(redisplay.values) : undefined }),
        async run(ctx, f, { self }) {
          const old = replaces(f);
          await confirmTokenRegistration(self, { authenticatorId: text(f, 'authenticator'), code: text(f, 'code'), label: text(f, 'label'), ...(old === undefined ? {} : { replaces: old }) });
          done(ctx, old === undefined ? 'token-registered' : 'token-reassigned');
        },
      },
    ];
    for (const page of enrolment('register-token', () => undefined)) actionPage(router, 'register-token', page);

    // A hardware token from the administrator's stock, by its serial number and a code from it.
    actionPage(router, 'register-existing-token', {
      view: 'token-existing',
      sensitive: true,
      async run(ctx, f, { self }) {
        await registerExistingToken(self, { serial: text(f, 'serial'), code: text(f, 'code'), label: text(f, 'label') });
        done(ctx, 'token-registered');
      },
    });

    // Exchanging a token: for a hardware token by serial number, or for a new authenticator app.
    actionPage(router, 'reassign-token', {
      view: 'token-reassign',
      sensitive: true,
      async run(ctx, f, { self }) {
        await reassignToken(self, { token: text(f, 'token'), serial: text(f, 'serial'), code: text(f, 'code'), label: text(f, 'label') });
        done(ctx, 'token-reassigned');
      },
    });
    for (const page of enrolment('reassign-token', (f) => text(f, 'token'))) actionPage(router, 'reassign-token', page);

    actionPage(router, 'unassign-token', {
      view: 'token-unassign',
      sensitive: true,
      async run(ctx, f, { self }) {
        await unassignToken(self, text(f, 'token'));
        done(ctx, 'token-unassigned');
      },
    });

    // Two consecutive codes are the proof here: a token out of step may be the only factor the user has.
    actionPage(router, 'resync', {
      view: 'token-resync',
      async run(ctx, f, { self }) {
        await resyncToken(self, { token: text(f, 'token'), first: text(f, 'first'), second: text(f, 'second') });
        done(ctx, 'token-resynced');
      },
    });

    actionPage(router, 'set-pin', {
      view: 'token-pin',
      sensitive: true,
      async run(ctx, f, { self }) {
        await setTokenPin(self, { token: text(f, 'token'), pin: field(f, 'pin'), confirm: field(f, 'confirm'), position: text(f, 'position') });
        done(ctx, 'pin-set');
      },
    });
    actionPage(router, 'remove-pin', {
      view: 'token-pin-remove',
      sensitive: true,
      async run(ctx, f, { self }) {
        await removeTokenPin(self, { token: text(f, 'token') });
        done(ctx, 'pin-removed');
      },
    });

    app.addFormFallbacks(router);
  }

  // The restore pages are for people who cannot sign in: before the routers that ask for a session.
  return [app.signIn, restoreRoutes(deps, app.show), app.pages, accountPortal, selfService];
}
