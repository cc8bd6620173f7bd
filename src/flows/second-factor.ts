import type Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { User } from '../db/schema.js';
import { admitAttempt, passedAttempt, passedAttemptStatement } from '../directory/users.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { renderPage } from '../http/views.js';
import { FACTORS, type FactorId, type Settings } from '../settings/settings.js';
import type { Requirement } from '../policy/requirement.js';
import { findChallenge } from '../factors/challenges.js';
import { channelName, factor as factorOf, type Factor, type FactorContext, type Verdict } from '../factors/index.js';
import { now, type Pass } from '../sessions/ledger.js';
import { tellOwner } from '../factors/delivery/index.js';
import { PASSKEY_CSP } from '../http/security.js';
import { requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { saveProgress, type Progress } from './progress.js';
import { seeOther } from '../http/redirect.js';

/** Where a challenge runs and what it may use: the state every challenge page starts from. */
export interface ChallengeState {
  details: InteractionDetails;
  progress: Progress;
  user: User;
  settings: Settings;
  /** The factors this challenge accepts that the user can use now. */
  usable: FactorId[];
}

/**
 * A step that challenges the user for a second factor: the MFA step of a login, or the step-up on
 * the consent screen. Both run the same pages, limits, lockout and audit; each says where its
 * pages are, how to show the choice, and what passing a factor leads to.
 */
export interface ChallengeHost {
  /** Where the challenge pages hang under /interaction/:uid/: "mfa" or "consent/verify". */
  segment: string;
  /** What the challenge is for, kept with each code sent (a shared account's sign-in has its own code quota). */
  purpose: 'login' | 'step-up' | 'shared-sign-in';
  /**
   * The pages do not show the user's (masked) addresses: someone other than the user may reach
   * them (anyone who types a shared account's name while it is reserved).
   */
  discreet?: boolean;
  /** Whose lockout counts the guesses (the user's, unless the step says otherwise). */
  attemptsCountFor?(s: ChallengeState): string;
  /** The state, or null after sending a browser whose interaction is elsewhere on its way. */
  load(ctx: Context): Promise<ChallengeState | null>;
  showChoice(ctx: Context, s: ChallengeState, message: string | null, status: number): Promise<void> | void;
  /** The choice page offers something besides the usable factors (setting up an app or a passkey). */
  hasOtherWays?(s: ChallengeState): boolean;
  /** A line on the code page saying what passing it leads to, if the step has one. */
  codeNote?(s: ChallengeState): string;
  /**
   * The factor was passed. `giveBack` returns the admitted guess to the lockout count: the step runs
   * it with its own writes, or leaves it to a completed sign-in, which clears the count anyway.
   */
  passed(ctx: Context, s: ChallengeState, pass: FactorPass, giveBack: AttemptGiveBack | null): Promise<void>;
}

/** The statement that gives an admitted attempt back (see passedAttemptStatement). */
export type AttemptGiveBack = ReturnType<typeof passedAttemptStatement>;

/** A second factor passed now, with what it proved (a passkey's amr). */
export interface FactorPass extends Pass {
  factor: FactorId;
}

export function challengeBase(host: Pick<ChallengeHost, 'segment'>, uid: string): string {
  return `/interaction/${uid}/${host.segment}`;
}

const factorField = z.enum(FACTORS);

function when(date: Date): string {
  const seconds = Math.max(1, Math.ceil((date.getTime() - Date.now()) / 1000));
  if (seconds < 90) return `in ${seconds} seconds`;
  const minutes = Math.ceil(seconds / 60);
  return minutes < 90 ? `in ${minutes} minutes` : `after ${date.toISOString().slice(11, 16)} UTC`;
}

function factorContext(deps: FlowDeps, ctx: Context, s: ChallengeState, purpose: string): FactorContext {
  return { db: deps.db, box: deps.box, otpKey: deps.otpKey, delivery: deps.delivery, settings: s.settings, user: s.user, interactionUid: s.details.uid, ip: ctx.ip, purpose, issuer: deps.issuer };
}

/**
 * The page that takes the factor's answer: a code typed in, or (a passkey) a button that lets the
 * browser sign this sign-in's challenge, made anew each time the page is drawn.
 */
export async function showCode(ctx: Context, deps: FlowDeps, host: ChallengeHost, s: ChallengeState, id: FactorId, options: { error?: string | null; status?: number; resendAt?: Date | null } = {}): Promise<void> {
  const f = factorOf(id);
  // Where the only way is this factor, "another method" would lead back here.
  const others = s.usable.length > 1 || Boolean(host.hasOtherWays?.(s));
  if (f.ceremony) {
    const ceremony = await f.ceremony(factorContext(deps, ctx, s, host.purpose));
    renderPage(
      ctx,
      'flows/mfa-passkey',
      { title: 'Use your passkey', uid: s.details.uid, base: challengeBase(host, s.details.uid), factor: id, prompt: f.prompt(s.user, s.settings), options: JSON.stringify(ceremony), error: options.error ?? null, notice: host.codeNote?.(s) ?? null, others },
      options.status ?? 200,
    );
    ctx.set('Content-Security-Policy', PASSKEY_CSP);
    return;
  }
  renderPage(
    ctx,
    'flows/mfa-code',
    {
      title: 'Enter your code',
      uid: s.details.uid,
      base: challengeBase(host, s.details.uid),
      factor: id,
      prompt: f.prompt(s.user, s.settings, host.discreet),
      length: f.codeLength(s.settings),
      digits: id !== 'recovery',
      others,
      error: options.error ?? null,
      notice: host.codeNote?.(s) ?? null,
      resendAt: options.resendAt ? when(options.resendAt) : null,
    },
    options.status ?? 200,
  );
}

/**
 * The page where the user picks a factor (or learns that none of the allowed ones is theirs).
 * `lead` says what the choice is for; enrolment offers come from the login's requirement.
 */
export function showFactorChoice(
  ctx: Context,
  host: Pick<ChallengeHost, 'segment' | 'discreet'>,
  s: ChallengeState,
  need: Requirement,
  options: { message?: string | null; status?: number; lead?: string; canEnrol?: boolean; canEnrolPasskey?: boolean; enrolAfterFactor?: 'offered' | 'chosen' | 'restored' | 'no' } = {},
): void {
  if (need.noUsableMethod) {
    renderPage(ctx, 'flows/mfa-none', { title: 'Cannot complete sign-in', uid: s.details.uid, allowed: need.allowedFactors }, 403);
    return;
  }
  renderPage(
    ctx,
    'flows/mfa-choose',
    {
      title: 'Verify it’s you',
      uid: s.details.uid,
      base: challengeBase(host, s.details.uid),
      lead: options.lead ?? null,
      methods: need.usableFactors.map((id) => ({ factor: id, label: factorOf(id).describe(s.user, host.discreet) })),
      canEnrol: options.canEnrol ?? false,
      canEnrolPasskey: options.canEnrolPasskey ?? false,
      enrolAfterFactor: options.enrolAfterFactor ?? 'no',
      message: options.message ?? null,
    },
    options.status ?? 200,
  );
}

const VERDICT_MESSAGES = {
  malformed: 'Enter the 6-digit code your app shows.',
  exhausted: 'Too many wrong tries: this code no longer works. Ask for a new code.',
  expired: 'This code has expired. Ask for a new code.',
  used: 'This code was already used. Ask for a new code.',
  unknown: 'Ask for a new code.',
} as const;

/** What the answer page says when the answer is not right, in the words of the factor. */
function refusalMessage(f: Factor, verdict: Exclude<Verdict, { ok: true }>): string {
  if (f.answer === 'passkey') {
    if (verdict.reason === 'expired') return 'That took too long. Try your passkey again.';
    if (verdict.reason === 'replayed') return 'This passkey’s answer was already used, or the key may have been copied. Try again, or choose another method.';
    return 'That passkey is not one of yours, or its answer is not valid. Try again, or choose another method.';
  }
  if (f.id === 'recovery' && verdict.reason === 'used') return 'That recovery code was already used: each works once. Enter another one.';
  if (verdict.reason === 'replayed') return 'This code was just used. Wait for your app or token to show the next one.';
  if (verdict.reason === 'wrong') {
    if (f.id === 'recovery') return 'That is not one of your unused recovery codes.';
    return verdict.attemptsLeft === null
      ? 'That code is not right. Check your app and try again.'
      : `That code is not right. ${verdict.attemptsLeft} ${verdict.attemptsLeft === 1 ? 'try' : 'tries'} left.`;
  }
  return VERDICT_MESSAGES[verdict.reason];
}

/** What the answer page says when the answer cannot be read at all. */
const UNREADABLE: Record<Factor['answer'] | 'recovery', string> = {
  code: 'Enter the code: digits only.',
  recovery: 'Enter a recovery code: 8 letters and digits, such as 4f7k-2m9q.',
  passkey: 'Your browser did not answer with a passkey. Try again, or choose another method.',
};

/**
 * The challenge pages under a host's base: choose a factor (POST base), read or receive a code
 * (GET base/code), enter it (POST base/code), ask for another (POST base/resend).
 */
export function addChallengeRoutes(router: Router, deps: FlowDeps, host: ChallengeHost): void {
  const { db, config, audit, log } = deps;
  const path = (suffix: string) => `/interaction/:uid/${host.segment}${suffix}`;
  const step = (handler: (ctx: Context, s: ChallengeState) => Promise<void>) => async (ctx: Context) => {
    const s = await host.load(ctx);
    if (s) await handler(ctx, s);
  };

  /** Starts the chosen factor: sends its code (then the code page), or goes straight to the code page. */
  async function start(ctx: Context, s: ChallengeState, id: FactorId): Promise<void> {
    const meta = requestMeta(ctx);
    const clientId = String(s.details.params.client_id);
    const outcome = await factorOf(id).start(factorContext(deps, ctx, s, host.purpose));
    switch (outcome.kind) {
      case 'ready':
        return seeOther(ctx, `${challengeBase(host, s.details.uid)}/code?factor=${id}`);
      case 'sent':
        await Promise.all([
          saveProgress(db, { ...s.progress, challengeId: outcome.challengeId }),
          audit.record({ type: 'mfa.sent', subject: s.user.id, clientId, ...meta, details: { factor: id, provider: outcome.provider, challenge: outcome.challengeId, purpose: host.purpose } }),
        ]);
        return seeOther(ctx, `${challengeBase(host, s.details.uid)}/code?factor=${id}`);
      case 'refused': {
        const { refusal } = outcome;
        await audit.record({ type: 'mfa.send_refused', subject: s.user.id, clientId, ...meta, details: { factor: id, reason: refusal.kind, ...(refusal.kind === 'limit' ? { scope: refusal.scope } : {}) } });
        const message = refusal.kind === 'cooldown'
          ? `A code was sent moments ago. You can ask for a new one ${when(refusal.retryAt)}.`
          : `Too many codes have been requested. Try again ${when(refusal.retryAt)}, or choose another method.`;
        if (refusal.kind === 'cooldown' && s.progress.challengeId) return showCode(ctx, deps, host, s, id, { error: message, status: 429, resendAt: refusal.retryAt });
        return host.showChoice(ctx, s, message, 429);
      }
      case 'undeliverable':
        log.warn({ factor: id, provider: outcome.provider, reason: outcome.reason }, 'could not send a one-time code');
        await audit.record({ type: 'mfa.send_failed', subject: s.user.id, clientId, ...meta, details: { factor: id, reason: outcome.reason } });
        return host.showChoice(ctx, s, `We could not send a code ${channelName(id as 'email' | 'sms')} just now. Try again, or choose another method.`, 503);
    }
  }

  router.post(path(''), step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const id = factorField.safeParse(form.factor);
    if (!id.success || !s.usable.includes(id.data)) return host.showChoice(ctx, s, 'Choose one of the methods below.', 400);
    await start(ctx, s, id.data);
  }));

  /** When another code may be sent on this channel (null: now, or an app that sends nothing). */
  async function resendAvailableAt(s: ChallengeState, id: FactorId): Promise<Date | null> {
    if (!factorOf(id).sends || !s.progress.challengeId) return null;
    const challenge = await findChallenge(db, s.progress.challengeId, s.user.id);
    if (!challenge) return null;
    const at = new Date(challenge.created_at.getTime() + s.settings.mfa.otp.resendCooldownSeconds * 1000);
    return at > new Date() ? at : null;
  }

  router.get(path('/code'), step(async (ctx, s) => {
    const id = factorField.safeParse(ctx.query.factor);
    if (!id.success || !s.usable.includes(id.data) || (factorOf(id.data).sends && !s.progress.challengeId)) return seeOther(ctx, challengeBase(host, s.details.uid));
    // Sent here by an answer that was right but already used; had its twin finished the step, loading it sent the browser on.
    const f = factorOf(id.data);
    const error = ctx.query.used === '1' && f.answer !== 'passkey' ? refusalMessage(f, { ok: false, reason: f.sends || f.id === 'recovery' ? 'used' : 'replayed' }) : null;
    await showCode(ctx, deps, host, s, id.data, { error, resendAt: await resendAvailableAt(s, id.data) });
  }));

  router.post(path('/code'), step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const id = factorField.safeParse(form.factor);
    if (!id.success || !s.usable.includes(id.data)) return host.showChoice(ctx, s, 'Choose one of the methods below.', 400);
    const f = factorOf(id.data);
    const answer = f.readAnswer((f.answer === 'passkey' ? form.response : form.code) ?? '');
    if (answer === null) return showCode(ctx, deps, host, s, id.data, { error: UNREADABLE[f.id === 'recovery' ? 'recovery' : f.answer], status: 400 });
    if (f.sends && !s.progress.challengeId) {
      // Its code was passed in this sign-in a moment ago (a double click): the code page goes on with it.
      if (s.progress.methods.some((m) => m.factor === id.data)) return seeOther(ctx, `${challengeBase(host, s.details.uid)}/code?factor=${id.data}&used=1`);
      return host.showChoice(ctx, s, 'Ask for a code first.', 400);
    }
    const meta = requestMeta(ctx);
    const clientId = String(s.details.params.client_id);
    // Every guess at any factor is admitted and counted toward the account lockout before it is checked,
    // so a burst of guesses cannot check more than the threshold, and a locked account checks nothing.
    const lockoutId = host.attemptsCountFor?.(s) ?? s.user.id;
    const admission = await admitAttempt(db, lockoutId, config.lockout);
    if (!admission.admitted) {
      await audit.record({ type: 'mfa.failure', subject: s.user.id, clientId, ...meta, details: { factor: id.data, reason: 'locked', purpose: host.purpose } });
      return showCode(ctx, deps, host, s, id.data, { error: 'Too many wrong codes. Try again later.', status: 429 });
    }
    // A sent code is checked against the challenge this interaction asked for; the factor passed is
    // the challenge's own channel, whatever the form says.
    const verdict = await f.verify(factorContext(deps, ctx, s, host.purpose), { code: answer, challengeId: s.progress.challengeId });
    if (verdict.ok && s.usable.includes(verdict.factor)) {
      if (verdict.factor === 'recovery') await recoveryUsed(ctx, s, verdict.recoveryCodesLeft ?? 0);
      return host.passed(ctx, s, { factor: verdict.factor, at: now(), ...(verdict.amr ? { amr: verdict.amr } : {}) }, passedAttemptStatement(db, lockoutId, admission));
    }
    const reason = verdict.ok ? 'not_allowed' : verdict.reason;
    // An answer already used (a double click, a form sent twice) was no guess: its count goes back.
    const repeated = reason === 'used' || reason === 'replayed';
    await Promise.all([
      audit.record({ type: 'mfa.failure', subject: s.user.id, clientId, ...meta, details: { factor: id.data, reason, purpose: host.purpose } }),
      repeated ? passedAttempt(db, lockoutId, admission) : Promise.resolve(),
      admission.lockStarted && !repeated
        ? audit.record({ type: 'account.locked', subject: lockoutId, clientId, ...meta, details: { failed_logins: admission.failedLogins, locked_until: admission.lockedUntil } })
        : Promise.resolve(),
    ]);
    // A right code sent twice (a double click): the browser shows the answer to the last request, so
    // it is sent to the code page, which goes on with the sign-in once the first request finished it.
    if (repeated && f.answer !== 'passkey') return seeOther(ctx, `${challengeBase(host, s.details.uid)}/code?factor=${id.data}&used=1`);
    const error = verdict.ok ? 'This method cannot be used here. Choose another method.' : refusalMessage(f, verdict);
    await showCode(ctx, deps, host, s, id.data, { error, status: 401, resendAt: await resendAvailableAt(s, id.data) });
  }));

  router.post(path('/resend'), step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const id = factorField.safeParse(form.factor);
    if (!id.success || !factorOf(id.data).sends || !s.usable.includes(id.data)) return host.showChoice(ctx, s, 'Choose one of the methods below.', 400);
    await start(ctx, s, id.data);
  }));

  /**
   * A recovery code was used: audited as a recovery (not an ordinary second factor), and the user is
   * told by email, so a stolen code does not go unnoticed. The email does not hold up the sign-in.
   */
  async function recoveryUsed(ctx: Context, s: ChallengeState, left: number): Promise<void> {
    await audit.record({ type: 'mfa.recovery_used', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { left, purpose: host.purpose } });
    const app = s.settings.mfa.appName;
    // Not awaited: the sign-in does not wait for the mail.
    void tellOwner(deps.delivery, s.settings, log, s.user, {
      subject: `A recovery code of your ${app} account was used`,
      text: `A recovery code of your ${app} account ${s.user.username} was just used to sign in (from ${ctx.ip}). ${left} of your recovery codes ${left === 1 ? 'is' : 'are'} left.\n\n` +
        `If this was you, consider making a new set on your account page. If it was not, change your password and tell your administrator now.`,
    });
  }
}
