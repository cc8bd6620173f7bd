import type { Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';
import type { FactorId, Settings } from '../settings/settings.js';
import type { Logger } from '../log.js';
import { z } from 'zod';
import type { PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import { createChallenge, isRefusal, markDelivered, markUndeliverable, verifyChallenge, type NewChallenge, type SendRefusal } from './challenges.js';
import { checkAuthenticatorCode } from './authenticators.js';
import { normaliseRecoveryCode, useRecoveryCode } from './recovery-codes.js';
import { authenticationOptions, readAssertion, relyingPartyOf, verifyPasskey } from './passkeys.js';
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
  /** The issuer: a passkey's signature must come from its origin, for its host. */
  issuer: string;
}

/** What sending a code needs (a change of address sends one outside any sign-in). */
export type SendContext = Omit<FactorContext, 'issuer'>;

export type StartOutcome =
  /** A code went out; the user enters it against this challenge. */
  | { kind: 'sent'; challengeId: string; provider: string }
  /** Nothing to send: the user reads the code from their own device. */
  | { kind: 'ready' }
  | { kind: 'refused'; refusal: SendRefusal }
  | { kind: 'undeliverable'; reason: string; provider?: string };

export type Verdict =
  /** The factor that verified: for a sent code, the channel of the challenge itself, never the form's word. */
  | { ok: true; factor: FactorId; amr?: AuthenticationMethod[]; recoveryCodesLeft?: number }
  | { ok: false; reason: 'wrong'; attemptsLeft: number | null }
  | { ok: false; reason: 'malformed' | 'exhausted' | 'expired' | 'used' | 'unknown' | 'replayed' };

export interface Factor {
  id: FactorId;
  /** The RFC 8176 value passing this factor proves. Email codes have none of their own: "otp". */
  amr: AuthenticationMethod;
  /** How the user answers: a typed code, or a signature their browser makes with a passkey. */
  answer: 'code' | 'passkey';
  /** It sends a code (by email or SMS), which is checked against its challenge. */
  sends: boolean;
  /** The answer as posted, in the form verify reads, or null when it cannot be one. */
  readAnswer(posted: string): string | null;
  /** For a passkey: the options the browser signs, kept as this sign-in's single-use challenge. */
  ceremony?(ctx: FactorContext): Promise<PublicKeyCredentialRequestOptionsJSON>;
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
export async function sendCode(ctx: SendContext, channel: 'email' | 'sms', destination: string, message: CodeMessage): Promise<StartOutcome> {
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
export async function queueCode(ctx: SendContext, channel: 'email' | 'sms', destination: string, message: CodeMessage, log: Logger): Promise<{ kind: 'queued'; challengeId: string } | { kind: 'refused'; refusal: SendRefusal }> {
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

async function deliverCode(ctx: SendContext, channel: 'email' | 'sms', destination: string, message: CodeMessage, created: NewChallenge): Promise<StartOutcome> {
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

/** A code as typed: spaces and dashes ignored, 4 to 16 digits (a token's code with its PIN). */
export const codeField = z.string().trim().transform((c) => c.replace(/[\s-]/g, '')).pipe(z.string().regex(/^\d{4,16}$/));
const readDigits = (posted: string) => {
  const parsed = codeField.safeParse(posted);
  return parsed.success ? parsed.data : null;
};

/** A factor that sends a one-time code over a channel and checks it against the stored challenge. */
function sentCode(id: 'email' | 'sms', amr: AuthenticationMethod, channel: { destination(user: User): string | null; masked(user: User): string }): Factor {
  return {
    id,
    amr,
    answer: 'code',
    sends: true,
    readAnswer: readDigits,
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
  answer: 'code',
  sends: false,
  readAnswer: readDigits,
  describe: () => 'Use your authenticator app or token',
  prompt: () => 'Enter the code from your authenticator app or token (and your PIN, if you set one, before or after it as you chose).',
  // Up to 8 digits of code and 8 of PIN.
  codeLength: () => 16,
  start: async () => ({ kind: 'ready' }),
  async verify(ctx, answer) {
    const check = await checkAuthenticatorCode(ctx.db, ctx.box, ctx.settings.mfa.totp, ctx.user.id, answer.code);
    if (check === 'passed') return { ok: true, factor: 'totp' };
    return check === 'replayed' ? { ok: false, reason: 'replayed' } : { ok: false, reason: 'wrong', attemptsLeft: null };
  },
};

/**
 * One of the user's recovery codes, each good once: the way back in without the phone or key. It is
 * a one-time code for amr ("otp"), but audited as a recovery, and the user is told by email.
 */
const recovery: Factor = {
  id: 'recovery',
  amr: 'otp',
  answer: 'code',
  sends: false,
  readAnswer: normaliseRecoveryCode,
  describe: () => 'Recovery code',
  prompt: () => 'Enter one of your recovery codes (such as 4f7k-2m9q). Each code works once.',
  codeLength: () => 9,
  start: async () => ({ kind: 'ready' }),
  async verify(ctx, answer) {
    const used = await useRecoveryCode(ctx.db, ctx.box.deriveKey('recovery-codes'), ctx.user.id, answer.code);
    if (used === 'used') return { ok: false, reason: 'used' };
    return used ? { ok: true, factor: 'recovery', recoveryCodesLeft: used.left } : { ok: false, reason: 'wrong', attemptsLeft: null };
  },
};

/** A passkey or security key (WebAuthn): phishing-resistant, the signature is bound to Tessera's origin. */
const webauthn: Factor = {
  id: 'webauthn',
  amr: 'hwk',
  answer: 'passkey',
  sends: false,
  readAnswer: (posted) => (readAssertion(posted) ? posted : null),
  describe: () => 'Passkey or security key',
  prompt: () => 'Use your passkey or security key: your browser asks for it.',
  codeLength: () => 0,
  start: async () => ({ kind: 'ready' }),
  ceremony: (ctx) => authenticationOptions(ctx.db, relyingPartyOf(ctx.issuer, ctx.settings.mfa.appName), ctx.user.id, ctx.interactionUid),
  async verify(ctx, answer) {
    const verdict = await verifyPasskey(ctx.db, relyingPartyOf(ctx.issuer, ctx.settings.mfa.appName), ctx.user.id, ctx.interactionUid, answer.code);
    if (verdict.ok) return { ok: true, factor: 'webauthn', amr: verdict.amr };
    if (verdict.reason === 'wrong') return { ok: false, reason: 'wrong', attemptsLeft: null };
    return { ok: false, reason: verdict.reason === 'replayed' ? 'replayed' : verdict.reason === 'expired' ? 'expired' : 'malformed' };
  },
};

/** Every second factor Tessera offers. */
export const FACTOR_REGISTRY: Record<FactorId, Factor> = {
  webauthn,
  totp,
  email: sentCode('email', 'otp', { destination: (u) => u.email, masked: (u) => maskEmail(u.email ?? '') }),
  sms: sentCode('sms', 'sms', { destination: (u) => u.phone, masked: (u) => maskPhone(u.phone ?? '') }),
  recovery,
};

export function factor(id: FactorId): Factor {
  return FACTOR_REGISTRY[id];
}

/**
 * The amr values of a set of passed factors (the password included), with "mfa" when two different
 * factors were passed (RFC 8176): the password and a code, or, for an account without a password,
 * the emailed sign-in code and a token.
 */
export function amrOf(passed: readonly { factor: 'password' | FactorId; amr?: readonly AuthenticationMethod[] }[]): AuthenticationMethod[] {
  const amr = [...new Set(passed.flatMap((p) => (p.factor === 'password' ? ['pwd' as const] : p.amr?.length ? p.amr : [FACTOR_REGISTRY[p.factor].amr])))];
  if (new Set(passed.map((p) => p.factor)).size > 1) amr.push('mfa');
  return amr;
}

/** How a channel is named in sentences ("by email"). */
export function channelName(id: 'email' | 'sms'): string {
  return id === 'email' ? 'by email' : 'by text message';
}
