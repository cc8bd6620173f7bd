import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { ACCOUNT_CLIENT_ID } from '../portal/registration.js';
import { admitAttempt, findUserByUsername, passedAttempt } from '../directory/users.js';
import { verifyPassword } from '../directory/passwords.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { seeOther } from '../http/redirect.js';
import { loadSettings } from '../settings/settings.js';
import { loginRequirement } from '../policy/policies.js';
import { sendCode } from '../factors/index.js';
import { verifyChallenge } from '../factors/challenges.js';
import { fillTemplate } from '../factors/delivery/types.js';
import { now } from '../sessions/ledger.js';
import { codeField } from '../factors/index.js';
import { clientOf, loadInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { completeLogin } from './complete-login.js';
import { saveProgress } from './progress.js';
import { INVALID_CREDENTIALS, showLogin, throttleSignIn, usernameField } from './login.js';
import { isSharedAccount } from '../jit/shared-accounts.js';

const COOKIE = 'tessera.email-sign-in';
const PURPOSE = 'email-sign-in';
const NO_ACCOUNT = '00000000-0000-0000-0000-000000000000';

const pendingSchema = z.object({ uid: z.string(), username: z.string(), userId: z.string().nullable(), challengeId: z.string().nullable() });
type Pending = z.infer<typeof pendingSchema>;


/**
 * Signing in to the account portal with a code sent to the email on record, for users who have no
 * password (as the seed's self-service portals do): the code is the first factor; a token, where the
 * user has one, is asked after it as at any sign-in. Someone with a password signs in with it: for
 * them, as for unknown names, nothing is sent, and the pages read the same.
 */
export function emailSignInRoutes(deps: FlowDeps): Router {
  const { db, box, config, audit, provider } = deps;
  const router = new Router({ prefix: '/interaction/:uid/login/email' });
  const secure = deps.issuer.startsWith('https://');

  async function accountInteraction(ctx: Context): Promise<InteractionDetails> {
    const details = await loadInteraction(ctx, provider);
    if (details.params.client_id !== ACCOUNT_CLIENT_ID) throw new HttpError(404, 'Signing in with an emailed code is for your account page only.', 'Not found');
    if (details.prompt.name !== 'login') {
      seeOther(ctx, `/interaction/${details.uid}`);
      throw new EndOfStep();
    }
    return details;
  }
  function readPending(ctx: Context, uid: string): Pending | null {
    const sealed = ctx.cookies.get(COOKIE);
    if (!sealed || sealed.length > 4096) return null;
    try {
      const pending = pendingSchema.parse(JSON.parse(box.open(sealed, PURPOSE)));
      return pending.uid === uid ? pending : null;
    } catch {
      return null;
    }
  }
  const codePage = (ctx: Context, details: InteractionDetails, pending: Pending, error: string | null = null, status = 200) =>
    renderPage(ctx, 'flows/email-sign-in', { title: 'Enter your code', uid: details.uid, username: pending.username, error }, status);

  const step = (handler: (ctx: Context, details: InteractionDetails) => Promise<void>) => async (ctx: Context) => {
    try {
      await handler(ctx, await accountInteraction(ctx));
    } catch (error) {
      if (!(error instanceof EndOfStep)) throw error;
    }
  };

  router.post('/', step(async (ctx, details) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const client = await clientOf(deps, details);
    const parsed = usernameField.safeParse(form.username ?? '');
    if (!parsed.success) return showLogin(ctx, deps, details, { error: parsed.error.issues[0]?.message ?? INVALID_CREDENTIALS, status: 400 });
    const username = parsed.data;
    const meta = requestMeta(ctx);
    const found = await findUserByUsername(db, username);
    // The login's own limits: per address and per name, before anything is sent.
    const throttled = await throttleSignIn(deps, username, found?.id ?? null, meta.ip);
    if (throttled) {
      await audit.record({ type: 'login.throttled', actor: username, clientId: ACCOUNT_CLIENT_ID, ...meta, details: { scope: throttled.scope, retry_at: throttled.retryAt, with: 'email code' } });
      return showLogin(ctx, deps, details, { error: 'Too many sign-in attempts. Try again later.', username, status: 429 });
    }
    // A shared account never signs in to the account page (it has no page of its own): nothing is sent, as for a name with a password.
    const eligible = found && found.status === 'active' && found.source === 'local' && !found.password_hash && found.email && found.email_verified;
    const user = eligible && !(await isSharedAccount(db, found.id)) ? found : null;
    let challengeId: string | null = null;
    if (user) {
      const settings = await loadSettings(db, box);
      const { templates } = settings.mfa;
      const outcome = await sendCode({ db, box, otpKey: deps.otpKey, delivery: deps.delivery, settings, user, interactionUid: details.uid, ip: meta.ip, purpose: 'sign-in' }, 'email', user.email!, (values) => ({
        subject: fillTemplate(templates.emailSubject, values),
        text: fillTemplate(templates.emailBody, values),
      }));
      if (outcome.kind === 'sent') challengeId = outcome.challengeId;
      else if (outcome.kind === 'refused' && outcome.refusal.kind === 'cooldown') challengeId = readPending(ctx, details.uid)?.challengeId ?? null;
    }
    const pending: Pending = { uid: details.uid, username, userId: user?.id ?? null, challengeId };
    ctx.cookies.set(COOKIE, box.seal(JSON.stringify(pending), PURPOSE), { httpOnly: true, sameSite: 'lax', secure, path: `/interaction/${details.uid}`, overwrite: true, maxAge: 15 * 60 * 1000 });
    seeOther(ctx, `/interaction/${details.uid}/login/email`);
  }));

  router.get('/', step(async (ctx, details) => {
    const pending = readPending(ctx, details.uid);
    if (!pending) return seeOther(ctx, `/interaction/${details.uid}`);
    codePage(ctx, details, pending);
  }));

  router.post('/code', step(async (ctx, details) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const pending = readPending(ctx, details.uid);
    if (!pending) return seeOther(ctx, `/interaction/${details.uid}`);
    const code = codeField.safeParse(form.code ?? '');
    if (!code.success) return codePage(ctx, details, pending, 'Enter the code: digits only.', 400);
    const meta = requestMeta(ctx);
    // Admitted and counted toward the lockout before it is checked, as a password is.
    const admission = await admitAttempt(db, pending.userId ?? NO_ACCOUNT, config.lockout);
    const user = pending.userId ? await findUserByUsername(db, pending.username) : null;
    let right = false;
    // Shared since the code was sent: it no longer signs in here.
    if (admission.admitted && user && user.id === pending.userId && pending.challengeId && !(await isSharedAccount(db, user.id))) {
      right = (await verifyChallenge(db, deps.otpKey, pending.challengeId, user.id, code.data)).ok;
    } else {
      await verifyPassword(null, code.data);
    }
    if (!right || !user || !admission.admitted) {
      await audit.record({ type: 'login.failure', actor: pending.username, subject: pending.userId, clientId: ACCOUNT_CLIENT_ID, ...meta, details: { reason: admission.admitted ? 'wrong_email_code' : 'locked', with: 'email code' } });
      return codePage(ctx, details, pending, 'That code is not right, or it has expired. Check the latest email, or go back and ask for a new one.', 401);
    }
    await passedAttempt(db, user.id, admission);
    ctx.cookies.set(COOKIE, null, { path: `/interaction/${details.uid}`, secure });
    const client = await clientOf(deps, details);
    // The email was the first factor: a second one, where the sign-in needs it, is something else (loginRequirement knows).
    const need = await loginRequirement(db, await loadSettings(db, box), config.mode, user, client.mfaRequired, details.params);
    const progress = { uid: details.uid, accountId: user.id, step: 'login' as const, methods: [{ factor: 'email' as const, at: now() }], requirement: need, challengeId: null };
    if (!need.mfaRequired) return completeLogin(ctx, deps, details, user, progress);
    await saveProgress(db, progress);
    await audit.record({ type: 'login.password_verified', actor: user.username, subject: user.id, clientId: ACCOUNT_CLIENT_ID, ...meta, details: { with: 'email code', mfa: need.reasons, policy: need.policy } });
    seeOther(ctx, `/interaction/${details.uid}/mfa`);
  }));

  return router;
}

/** The step already answered (sent the browser on): nothing more to do. */
class EndOfStep extends Error {}
