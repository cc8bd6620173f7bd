import type { Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';
import type { FactorId, Settings } from '../settings/settings.js';
import type { Logger } from '../log.js';
import { createChallenge, isRefusal, markDelivered, markUndeliverable, verifyChallenge, type NewChallenge, type SendRefusal } from './challenges.js';
import { verifyAuthenticatorCode } from './authenticators.js';
import { DeliveryError, fillTemplate } from './delivery/types.js';
import type { Delivery } from './delivery/index.js';

/** What a factor needs to start or check a challenge. */
export interface FactorContext {
  db: Db;
  box: SecretBox;
  otpKey: Buffer;
  delivery: Delivery;
  settings: Settings;
  user: User;
  /** The interaction the challenge belongs to (its resend cooldown, its pending authenticator). */
  interactionUid: string;
  ip: string;
  /** login or step-up: what the challenge is for, kept with it. */
  purpose: string;
}

export type StartOutcome =
  /** A code went out; the user enters it against this challenge. */
  | { kind: 'sent'; challengeId: string; provider: string }
  /** Nothing to send: the user reads the code from their own device. */
  | { kind: 'ready' }
  | { kind: 'refused'; refusal: SendRefusal }
  | { kind: 'undeliverable'; reason: string; provider?: string };

export type Verdict =
  /** The factor that verified: for a sent code, the channel of the challenge itself, never the form's word. */
  | { ok: true; factor: FactorId }
  | { ok: false; reason: 'wrong'; attemptsLeft: number | null }
  | { ok: false; reason: 'malformed' | 'exhausted' | 'expired' | 'used' | 'unknown' };

export interface Factor {
  id: FactorId;
  /** The RFC 8176 value passing this factor proves. Email codes have none of their own: "otp". */
  amr: AuthenticationMethod;
  /** Whether the user can use it now (a verified address or number, a confirmed app). */
  usableBy(user: User, facts: { hasAuthenticator: boolean }): boolean;
  /**
   * The choice shown on the "verify it's you" page. Discreet: without the (masked) address, for a
   * page someone other than the user may reach (a shared account's sign-in).
   */
  describe(user: User, discreet?: boolean): string;
  /** What the code page says the code is and where it went. */
  prompt(user: User, settings: Settings, discreet?: boolean): string;
  codeLength(settings: Settings): number;
  start(ctx: FactorContext): Promise<StartOutcome>;
  /** Checks an answer. A sent code is checked against its challenge, which says which channel it was. */
  verify(ctx: FactorContext, answer: { code: string; challengeId: string | null }): Promise<Verdict>;
}

export function maskEmail(email: string): string {
  const [local = '', domain = ''] = email.split('@');
  return `${local.slice(0, 1)}${'•'.repeat(Math.max(2, Math.min(local.length - 1, 6)))}@${domain}`;
}

export function maskPhone(phone: string): string {
  return `${phone.slice(0, 2)}${'•'.repeat(Math.max(0, phone.length - 6))}${phone.slice(-4)}`;
}

/** The words of a code's message, from its values (code, minutes, app). */
export type CodeMessage = (values: Record<'code' | 'minutes' | 'app', string>) => { subject?: string; text: string };

/**
 * Sends a one-time code over a channel to a destination: the challenge is admitted first (cooldown
 * and send limits, atomically), then delivered. Sign-in codes go to the user's address; a change of
 * address sends one to the new address with words of its own.
 */
export async function sendCode(ctx: FactorContext, channel: 'email' | 'sms', destination: string, message: CodeMessage): Promise<StartOutcome> {
  const result = await createChallenge(ctx.db, ctx.otpKey, ctx.settings.mfa.otp, {
    userId: ctx.user.id, factor: channel, destination, ip: ctx.ip, interactionUid: ctx.interactionUid, purpose: ctx.purpose,
  });
  if (isRefusal(result)) return { kind: 'refused', refusal: result };
  return deliverCode(ctx, channel, destination, message, result);
}

/**
 * As sendCode, but the answer does not wait for the delivery (whose failure is logged and marks the
 * challenge): for pages that must take as long whether a code went out or not.
 */
export async function queueCode(ctx: FactorContext, channel: 'email' | 'sms', destination: string, message: CodeMessage, log: Logger): Promise<{ kind: 'queued'; challengeId: string } | { kind: 'refused'; refusal: SendRefusal }> {
  const result = await createChallenge(ctx.db, ctx.otpKey, ctx.settings.mfa.otp, {
    userId: ctx.user.id, factor: channel, destination, ip: ctx.ip, interactionUid: ctx.interactionUid, purpose: ctx.purpose,
  });
  if (isRefusal(result)) return { kind: 'refused', refusal: result };
  void deliverCode(ctx, channel, destination, message, result).then(
    (outcome) => { if (outcome.kind === 'undeliverable') log.warn({ purpose: ctx.purpose, reason: outcome.reason }, 'a queued code could not be delivered'); },
    (error: unknown) => log.warn({ err: error instanceof Error ? error.message : String(error) }, 'a queued code could not be delivered'),
  );
  return { kind: 'queued', challengeId: result.challenge.id };
}

async function deliverCode(ctx: FactorContext, channel: 'email' | 'sms', destination: string, message: CodeMessage, created: NewChallenge): Promise<StartOutcome> {
  const words = message({ code: created.code, minutes: String(Math.round(ctx.settings.mfa.otp.lifetimeSeconds / 60)), app: ctx.settings.mfa.appName });
  try {
    const { provider } = await ctx.delivery.send(channel, ctx.settings, channel === 'email' ? { to: destination, subject: words.subject ?? words.text, text: words.text } : { to: destination, text: words.text });
    await markDelivered(ctx.db, created.challenge.id);
    return { kind: 'sent', challengeId: created.challenge.id, provider };
  } catch (error) {
    await markUndeliverable(ctx.db, created.challenge);
    return { kind: 'undeliverable', reason: error instanceof Error ? error.message : String(error), ...(error instanceof DeliveryError ? { provider: error.provider } : {}) };
  }
}

/** A factor that sends a one-time code over a channel and checks it against the stored challenge. */
function sentCode(id: 'email' | 'sms', amr: AuthenticationMethod, channel: { destination(user: User): string | null; verified(user: User): boolean; masked(user: User): string }): Factor {
  return {
    id,
    amr,
    usableBy: (user) => Boolean(channel.destination(user)) && channel.verified(user),
    describe: (user, discreet) => `${id === 'email' ? 'Email' : 'Text'} a code to ${discreet ? `your own ${id === 'email' ? 'email address' : 'phone'}` : channel.masked(user)}`,
    prompt: (user, settings, discreet) => `We sent a ${settings.mfa.otp.length}-digit code to ${discreet ? `your own ${id === 'email' ? 'email address' : 'phone'}` : channel.masked(user)}.`,
    codeLength: (settings) => settings.mfa.otp.length,
    async start(ctx) {
      const { templates } = ctx.settings.mfa;
      return sendCode(ctx, id, channel.destination(ctx.user)!, (values) => id === 'email'
        ? { subject: fillTemplate(templates.emailSubject, values), text: fillTemplate(templates.emailBody, values) }
        : { text: fillTemplate(templates.sms, values) });
    },
    async verify(ctx, answer) {
      if (!answer.challengeId) return { ok: false, reason: 'unknown' };
      const outcome = await verifyChallenge(ctx.db, ctx.otpKey, answer.challengeId, ctx.user.id, answer.code);
      if (outcome.ok) return { ok: true, factor: outcome.challenge.factor };
      return outcome.reason === 'wrong' ? { ok: false, reason: 'wrong', attemptsLeft: outcome.attemptsLeft } : { ok: false, reason: outcome.reason };
    },
  };
}

const totp: Factor = {
  id: 'totp',
  amr: 'otp',
  usableBy: (_user, facts) => facts.hasAuthenticator,
  describe: () => 'Use your authenticator app or token',
  prompt: () => 'Enter the code from your authenticator app or token (and your PIN, if you set one, before or after it as you chose).',
  // Up to 8 digits of code and 8 of PIN.
  codeLength: () => 16,
  start: async () => ({ kind: 'ready' }),
  async verify(ctx, answer) {
    return (await verifyAuthenticatorCode(ctx.db, ctx.box, ctx.settings.mfa.totp, ctx.user.id, answer.code)) ? { ok: true, factor: 'totp' } : { ok: false, reason: 'wrong', attemptsLeft: null };
  },
};

/** Every second factor Tessera offers, in the order they are offered. */
export const FACTOR_REGISTRY: Record<FactorId, Factor> = {
  totp,
  email: sentCode('email', 'otp', { destination: (u) => u.email, verified: (u) => u.email_verified, masked: (u) => maskEmail(u.email ?? '') }),
  sms: sentCode('sms', 'sms', { destination: (u) => u.phone, verified: (u) => u.phone_verified, masked: (u) => maskPhone(u.phone ?? '') }),
};

export function factor(id: FactorId): Factor {
  return FACTOR_REGISTRY[id];
}

/**
 * The amr values of a set of passed factors (the password included), with "mfa" when two different
 * factors were passed (RFC 8176): the password and a code, or, for an account without a password,
 * the emailed sign-in code and a token.
 */
export function amrOf(passed: readonly ('password' | FactorId)[]): AuthenticationMethod[] {
  const amr = [...new Set(passed.map((p) => (p === 'password' ? 'pwd' : FACTOR_REGISTRY[p].amr)))] as AuthenticationMethod[];
  if (new Set(passed).size > 1) amr.push('mfa');
  return amr;
}

/** How a channel is named in sentences ("by email"). */
export function channelName(id: 'email' | 'sms'): string {
  return id === 'email' ? 'by email' : 'by text message';
}
