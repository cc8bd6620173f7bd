import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { User } from '../db/schema.js';
import { admitAttempt, findUserById, passedAttempt } from '../directory/users.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { loadSettings, type FactorId, type Settings } from '../settings/settings.js';
import { loginRequirement } from '../policy/policies.js';
import type { Requirement } from '../policy/requirement.js';
import { createChallenge, findChallenge, isRefusal, markDelivered, markUndeliverable, verifyChallenge } from '../factors/challenges.js';
import { beginEnrolment, confirmEnrolment, isWellFormedTotp, verifyTotp } from '../factors/totp.js';
import { fillTemplate, DeliveryError } from '../factors/delivery/types.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';
import { clientOf, loadInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { loadProgress, saveProgress, type Progress } from './progress.js';
import { completeLogin } from './complete-login.js';

/** RFC 8176 values for each factor. Email codes have no value of their own: they are "otp". */
export const FACTOR_AMR: Record<FactorId, AuthenticationMethod> = { email: 'otp', sms: 'sms', totp: 'otp' };

export function maskEmail(email: string): string {
  const [local = '', domain = ''] = email.split('@');
  return `${local.slice(0, 1)}${'•'.repeat(Math.max(2, Math.min(local.length - 1, 6)))}@${domain}`;
}

export function maskPhone(phone: string): string {
  return `${phone.slice(0, 2)}${'•'.repeat(Math.max(0, phone.length - 6))}${phone.slice(-4)}`;
}

function destinationOf(user: User, factor: 'email' | 'sms'): string {
  return factor === 'email' ? user.email! : user.phone!;
}

function describeFactor(user: User, factor: FactorId): string {
  if (factor === 'email') return `Email a code to ${maskEmail(user.email ?? '')}`;
  if (factor === 'sms') return `Text a code to ${maskPhone(user.phone ?? '')}`;
  return 'Use your authenticator app';
}

function when(date: Date): string {
  const seconds = Math.max(1, Math.ceil((date.getTime() - Date.now()) / 1000));
  if (seconds < 90) return `in ${seconds} seconds`;
  const minutes = Math.ceil(seconds / 60);
  return minutes < 90 ? `in ${minutes} minutes` : `after ${date.toISOString().slice(11, 16)} UTC`;
}

interface MfaState {
  details: InteractionDetails;
  progress: Progress;
  user: User;
  settings: Settings;
  need: Requirement;
}

const factorField = z.enum(['email', 'sms', 'totp']);
const codeField = z.string().trim().transform((c) => c.replace(/[\s-]/g, '')).pipe(z.string().regex(/^\d{4,10}$/, 'Enter the code: digits only.'));

/**
 * The second-factor step: choose a method, receive or read a code, enter it; or enrol an
 * authenticator app when the policy requires one. Runs between the password and consent.
 */
export function mfaRoutes(deps: FlowDeps): Router {
  const { db, box, config, audit, delivery, otpKey } = deps;
  const router = new Router();
  const base = (uid: string) => `/interaction/${uid}/mfa`;

  /** This step's state, or null after redirecting a browser whose interaction is elsewhere in the pipeline. */
  async function state(ctx: Context): Promise<MfaState | null> {
    const details = await loadInteraction(ctx, deps.provider);
    const progress = await loadProgress(db, details.uid);
    if (!progress || details.prompt.name !== 'login') {
      ctx.status = 303;
      ctx.redirect(`/interaction/${details.uid}`);
      return null;
    }
    const user = await findUserById(db, progress.accountId);
    if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    const settings = await loadSettings(db, box);
    const client = await clientOf(deps.clients, details);
    const need = await loginRequirement(db, settings, config.mode, user, client.mfaRequired, details.params);
    return { details, progress, user, settings, need };
  }

  const step = (handler: (ctx: Context, s: MfaState) => Promise<void>) => async (ctx: Context) => {
    const s = await state(ctx);
    if (s) await handler(ctx, s);
  };

  function showChoice(ctx: Context, s: MfaState, message: string | null = null, status = 200): void {
    if (s.need.noUsableMethod) {
      renderPage(ctx, 'flows/mfa-none', { title: 'Cannot complete sign-in', uid: s.details.uid, allowed: s.need.allowedFactors }, 403);
      return;
    }
    renderPage(
      ctx,
      'flows/mfa-choose',
      {
        title: 'Verify it’s you',
        uid: s.details.uid,
        methods: s.need.usableFactors.map((factor) => ({ factor, label: describeFactor(s.user, factor) })),
        canEnrol: s.need.enrolAuthenticator === 'required' || s.need.enrolAuthenticator === 'offered',
        // An app may be added in this sign-in once one of the other methods is passed.
        enrolAfterFactor: s.need.enrolAuthenticator === 'after-factor' ? (s.progress.enrolAfterFactor ? 'chosen' : 'offered') : 'no',
        message,
      },
      status,
    );
  }

  async function showEnrolment(ctx: Context, s: MfaState, error: string | null = null, status = 200): Promise<void> {
    const enrolment = await beginEnrolment(db, box, s.user, s.settings.mfa.appName);
    renderPage(
      ctx,
      'flows/mfa-enrol',
      {
        title: 'Set up your authenticator app',
        uid: s.details.uid,
        qr: enrolment.qrDataUrl,
        key: enrolment.secret.replace(/(.{4})/g, '$1 ').trim(),
        uri: enrolment.uri,
        required: s.need.enrolAuthenticator === 'required',
        // After a code was passed, the app is an addition the user may skip.
        skippable: s.need.enrolAuthenticator === 'after-factor',
        error,
      },
      status,
    );
  }

  function showCode(ctx: Context, s: MfaState, factor: FactorId, options: { error?: string | null; notice?: string | null; status?: number; resendAt?: Date | null } = {}): void {
    renderPage(
      ctx,
      'flows/mfa-code',
      {
        title: 'Enter your code',
        uid: s.details.uid,
        factor,
        prompt:
          factor === 'totp'
            ? 'Enter the 6-digit code from your authenticator app.'
            : `We sent a ${s.settings.mfa.otp.length}-digit code to ${factor === 'email' ? maskEmail(s.user.email ?? '') : maskPhone(s.user.phone ?? '')}.`,
        length: factor === 'totp' ? 6 : s.settings.mfa.otp.length,
        error: options.error ?? null,
        notice: options.notice ?? null,
        resendAt: options.resendAt ? when(options.resendAt) : null,
      },
      options.status ?? 200,
    );
  }

  /** Creates and sends a code; answers with the code page, or the choice page saying why not. */
  async function sendCode(ctx: Context, s: MfaState, factor: 'email' | 'sms'): Promise<void> {
    const destination = destinationOf(s.user, factor);
    const meta = requestMeta(ctx);
    const clientId = String(s.details.params.client_id);
    const result = await createChallenge(db, otpKey, s.settings.mfa.otp, {
      userId: s.user.id, factor, destination, ip: meta.ip, interactionUid: s.details.uid, purpose: 'login',
    });
    if (isRefusal(result)) {
      await audit.record({ type: 'mfa.send_refused', subject: s.user.id, clientId, ...meta, details: { factor, reason: result.kind, ...(result.kind === 'limit' ? { scope: result.scope } : {}) } });
      const message = result.kind === 'cooldown'
        ? `A code was sent moments ago. You can ask for a new one ${when(result.retryAt)}.`
        : `Too many codes have been requested. Try again ${when(result.retryAt)}, or choose another method.`;
      if (result.kind === 'cooldown' && s.progress.challengeId) {
        showCode(ctx, s, factor, { error: message, status: 429, resendAt: result.retryAt });
      } else {
        showChoice(ctx, s, message, 429);
      }
      return;
    }
    const otp = s.settings.mfa.otp;
    const values = { code: result.code, minutes: String(Math.round(otp.lifetimeSeconds / 60)), app: s.settings.mfa.appName };
    const templates = s.settings.mfa.templates;
    try {
      const { provider } = await delivery.send(factor, s.settings, factor === 'email'
        ? { to: destination, subject: fillTemplate(templates.emailSubject, values), text: fillTemplate(templates.emailBody, values) }
        : { to: destination, text: fillTemplate(templates.sms, values) });
      await markDelivered(db, result.challenge.id);
      await saveProgress(db, { ...s.progress, challengeId: result.challenge.id });
      await audit.record({ type: 'mfa.sent', subject: s.user.id, clientId, ...meta, details: { factor, provider, challenge: result.challenge.id } });
      ctx.status = 303;
      ctx.redirect(`${base(s.details.uid)}/code?factor=${factor}`);
    } catch (error) {
      await markUndeliverable(db, result.challenge);
      const reason = error instanceof Error ? error.message : String(error);
      deps.log.warn({ factor, provider: error instanceof DeliveryError ? error.provider : undefined, reason }, 'could not send a one-time code');
      await audit.record({ type: 'mfa.send_failed', subject: s.user.id, clientId, ...meta, details: { factor, reason } });
      showChoice(ctx, s, `We could not send a code ${factor === 'email' ? 'by email' : 'by text message'} just now. Try again, or choose another method.`, 503);
    }
  }

  async function finish(ctx: Context, s: MfaState, factor: FactorId): Promise<void> {
    const meta = requestMeta(ctx);
    const success = audit.record({ type: 'mfa.success', subject: s.user.id, clientId: String(s.details.params.client_id), ...meta, details: { factor } });
    const methods = [...s.progress.methods, { method: FACTOR_AMR[factor], at: Math.floor(Date.now() / 1000) }];
    if (factor !== 'totp' && s.progress.enrolAfterFactor && s.need.enrolAuthenticator === 'after-factor') {
      // The code proved it is the user: now they may add an authenticator app, then the login completes.
      await Promise.all([success, saveProgress(db, { ...s.progress, methods, challengeId: null, factorPassed: factor })]);
      ctx.status = 303;
      ctx.redirect(`${base(s.details.uid)}/enrol`);
      return;
    }
    // Together, so both audit events go out in one write.
    await Promise.all([success, completeLogin(ctx, deps, s.details, s.user, methods.map((m) => m.method))]);
  }

  /** Enrolment is open when the policy asks for it, when nothing else is usable, or after a code was passed in this sign-in. */
  const mayEnrol = (s: MfaState) =>
    s.need.enrolAuthenticator === 'required' || s.need.enrolAuthenticator === 'offered' || (s.need.enrolAuthenticator === 'after-factor' && Boolean(s.progress.factorPassed));

  router.get('/interaction/:uid/mfa', step(async (ctx, s) => {
    if (s.need.enrolAuthenticator === 'required' || (s.progress.factorPassed && mayEnrol(s))) return showEnrolment(ctx, s);
    // An authenticator app as the only way: nothing to choose and nothing to send, so its code is asked for at once.
    if (s.need.usableFactors.length === 1 && s.need.usableFactors[0] === 'totp' && s.need.enrolAuthenticator === 'no') {
      return showCode(ctx, s, 'totp');
    }
    if (s.need.noUsableMethod) {
      await audit.record({ type: 'mfa.no_method', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { allowed: s.need.allowedFactors } });
    }
    showChoice(ctx, s);
  }));

  router.post('/interaction/:uid/mfa', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const factor = factorField.safeParse(form.factor);
    if (!factor.success || !s.need.usableFactors.includes(factor.data) || s.need.enrolAuthenticator === 'required') {
      return showChoice(ctx, s, 'Choose one of the methods below.', 400);
    }
    if (factor.data === 'totp') {
      ctx.status = 303;
      ctx.redirect(`${base(s.details.uid)}/code?factor=totp`);
      return;
    }
    await sendCode(ctx, s, factor.data);
  }));

  router.get('/interaction/:uid/mfa/code', step(async (ctx, s) => {
    const factor = factorField.safeParse(ctx.query.factor);
    if (!factor.success || !s.need.usableFactors.includes(factor.data) || (factor.data !== 'totp' && !s.progress.challengeId)) {
      ctx.status = 303;
      ctx.redirect(base(s.details.uid));
      return;
    }
    let resendAt: Date | null = null;
    if (factor.data !== 'totp') {
      const challenge = await findChallenge(db, s.progress.challengeId!, s.user.id);
      if (challenge) resendAt = new Date(challenge.created_at.getTime() + s.settings.mfa.otp.resendCooldownSeconds * 1000);
    }
    showCode(ctx, s, factor.data, { resendAt: resendAt && resendAt > new Date() ? resendAt : null });
  }));

  router.post('/interaction/:uid/mfa/code', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const factor = factorField.safeParse(form.factor);
    if (!factor.success || !s.need.usableFactors.includes(factor.data)) return showChoice(ctx, s, 'Choose one of the methods below.', 400);
    const code = codeField.safeParse(form.code ?? '');
    if (!code.success) return showCode(ctx, s, factor.data, { error: 'Enter the code: digits only.', status: 400 });
    const meta = requestMeta(ctx);
    const clientId = String(s.details.params.client_id);

    if (factor.data !== 'totp' && !s.progress.challengeId) return showChoice(ctx, s, 'Ask for a code first.', 400);
    // Every guess at any factor is admitted and counted toward the account lockout before it is checked,
    // so a burst of guesses cannot check more than the threshold, and a locked account checks nothing.
    const admission = await admitAttempt(db, s.user.id, config.lockout);
    if (!admission.admitted) {
      await audit.record({ type: 'mfa.failure', subject: s.user.id, clientId, ...meta, details: { factor: factor.data, reason: 'locked' } });
      return showCode(ctx, s, factor.data, { error: 'Too many wrong codes. Try again later.', status: 429 });
    }
    const lockStarted = () =>
      admission.lockStarted
        ? audit.record({ type: 'account.locked', subject: s.user.id, clientId, ...meta, details: { failed_logins: admission.failedLogins, locked_until: admission.lockedUntil } })
        : Promise.resolve();

    if (factor.data === 'totp') {
      if (isWellFormedTotp(code.data) && (await verifyTotp(db, box, s.settings.mfa.totp, s.user.id, code.data))) {
        await passedAttempt(db, s.user.id, admission);
        return finish(ctx, s, 'totp');
      }
      await Promise.all([audit.record({ type: 'mfa.failure', subject: s.user.id, clientId, ...meta, details: { factor: 'totp' } }), lockStarted()]);
      return showCode(ctx, s, 'totp', { error: 'That code is not right. Check your app and try again.', status: 401 });
    }

    const outcome = await verifyChallenge(db, otpKey, s.progress.challengeId!, s.user.id, code.data);
    if (outcome.ok) {
      await passedAttempt(db, s.user.id, admission);
      return finish(ctx, s, factor.data);
    }
    await Promise.all([audit.record({ type: 'mfa.failure', subject: s.user.id, clientId, ...meta, details: { factor: factor.data, reason: outcome.reason } }), lockStarted()]);
    const error = {
      wrong: `That code is not right. ${outcome.reason === 'wrong' ? `${outcome.attemptsLeft} ${outcome.attemptsLeft === 1 ? 'try' : 'tries'} left.` : ''}`,
      exhausted: 'Too many wrong tries: this code no longer works. Ask for a new code.',
      expired: 'This code has expired. Ask for a new code.',
      used: 'This code was already used. Ask for a new code.',
      unknown: 'Ask for a new code.',
    }[outcome.reason].trim();
    showCode(ctx, s, factor.data, { error, status: 401 });
  }));

  router.post('/interaction/:uid/mfa/resend', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const factor = factorField.safeParse(form.factor);
    if (!factor.success || factor.data === 'totp' || !s.need.usableFactors.includes(factor.data)) return showChoice(ctx, s, 'Choose one of the methods below.', 400);
    await sendCode(ctx, s, factor.data);
  }));

  router.post('/interaction/:uid/mfa/enrol-after', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (s.need.enrolAuthenticator !== 'after-factor') return showChoice(ctx, s, null, 400);
    await saveProgress(db, { ...s.progress, enrolAfterFactor: true });
    ctx.status = 303;
    ctx.redirect(base(s.details.uid));
  }));

  router.get('/interaction/:uid/mfa/enrol', step(async (ctx, s) => {
    if (!mayEnrol(s)) {
      ctx.status = 303;
      ctx.redirect(base(s.details.uid));
      return;
    }
    await showEnrolment(ctx, s);
  }));

  router.post('/interaction/:uid/mfa/enrol', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    // A password alone must not add authenticators to an account that has other factors.
    if (!mayEnrol(s)) return showChoice(ctx, s, null, 400);
    const code = codeField.safeParse(form.code ?? '');
    const enrolment = await beginEnrolment(db, box, s.user, s.settings.mfa.appName);
    if (!code.success || !isWellFormedTotp(code.data)) return showEnrolment(ctx, s, 'Enter the 6-digit code your app shows.', 400);
    const id = enrolment.authenticatorId;
    if (!(await confirmEnrolment(db, box, s.settings.mfa.totp, s.user.id, id, code.data))) {
      await audit.record({ type: 'mfa.failure', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: 'totp', enrolment: true } });
      return showEnrolment(ctx, s, 'That code is not right. Check that your app shows the account you just added, and try the next code.', 401);
    }
    await audit.record({ type: 'mfa.enrolled', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: 'totp', authenticator: id } });
    await finish(ctx, s, 'totp');
  }));

  // Not now: the code already passed completes the sign-in without an app.
  router.post('/interaction/:uid/mfa/enrol/skip', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (!s.progress.factorPassed || s.need.enrolAuthenticator !== 'after-factor') return showChoice(ctx, s, null, 400);
    await completeLogin(ctx, deps, s.details, s.user, s.progress.methods.map((m) => m.method));
  }));

  return router;
}
