import { sql } from 'kysely';
import { generateSecret, generateSync, generateURI } from 'otplib';
import type { Db } from '../db/index.js';
import type { Authenticator } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { MfaSettings } from '../settings/settings.js';
import { secretsEqual } from '../crypto/equal.js';
import { verifyPassword } from '../directory/passwords.js';

/**
 * A user's tokens: authenticator apps (TOTP, RFC 6238) enrolled by QR code, and hardware tokens
 * (TOTP or HOTP, RFC 4226) imported by serial number. Secrets are sealed at rest; a token counts
 * only after one correct code; a time step or counter once used is refused again; a token may have
 * a PIN typed with its code.
 */
const PURPOSE = (id: string) => `totp:${id}`;
export const TOTP_DIGITS = 6;
export const TOTP_PERIOD = 30;

/** Seals a token's secret, bound to its row. */
export function sealTokenSecret(box: SecretBox, authenticatorId: string, secret: string): string {
  return box.seal(secret, PURPOSE(authenticatorId));
}

export function isWellFormedTotp(code: string): boolean {
  return new RegExp(`^\\d{${TOTP_DIGITS}}$`).test(code);
}

export interface Enrolment {
  authenticatorId: string;
  secret: string;
  uri: string;
  qrDataUrl: string;
}

/**
 * Starts (or resumes) an enrolment in one sign-in: the pending authenticator belongs to that
 * interaction, so two sign-ins (say, the owner and someone holding the password) never see the
 * same secret. Pending authenticators older than 15 minutes are dropped.
 */
export async function beginEnrolment(db: Db, box: SecretBox, user: { id: string; username: string }, appName: string, interactionUid: string): Promise<Enrolment> {
  await db
    .deleteFrom('authenticators')
    .where('user_id', '=', user.id)
    .where('confirmed_at', 'is', null)
    .where('created_at', '<', sql<Date>`now() - interval '15 minutes'`)
    .execute();
  let pending = await db
    .selectFrom('authenticators')
    .selectAll()
    .where('user_id', '=', user.id)
    .where('confirmed_at', 'is', null)
    .where('enrolment_uid', '=', interactionUid)
    .executeTakeFirst();
  let secret: string;
  if (pending) {
    secret = box.open(pending.secret, PURPOSE(pending.id));
  } else {
    secret = generateSecret();
    const id = crypto.randomUUID();
    pending = await db
      .insertInto('authenticators')
      .values({ id, user_id: user.id, type: 'totp', label: 'Authenticator app', secret: sealTokenSecret(box, id, secret), digits: TOTP_DIGITS, period: TOTP_PERIOD, enrolment_uid: interactionUid })
      .returningAll()
      .executeTakeFirstOrThrow();
  }
  const uri = generateURI({ issuer: appName, label: user.username, secret, digits: TOTP_DIGITS, period: TOTP_PERIOD });
  // Loaded on first use: only enrolment draws a QR code.
  const { default: QRCode } = await import('qrcode');
  const qrDataUrl = await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 2, width: 220 });
  return { authenticatorId: pending.id, secret, uri, qrDataUrl };
}

/** How far ahead of its stored counter an HOTP token is accepted (presses nobody used). */
export const HOTP_LOOK_AHEAD = 10;
/** How far a resync searches, in time steps either way or HOTP presses ahead. */
export const RESYNC_WINDOW = 1000;
/** A hardware token's serial number as imported and typed. */
export const SERIAL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const PIN_MIN = 4;
export const PIN_MAX = 8;

/** Where a code matched: a TOTP time step (the token's own time) or an HOTP counter value. */
type Match = { step: number } | { counter: number };

function secretOf(box: SecretBox, authenticator: Authenticator): string {
  return box.open(authenticator.secret, PURPOSE(authenticator.id));
}

/** The current time step of a TOTP token, on its own clock (the drift a resync learnt). */
function tokenStep(authenticator: Authenticator, nowMs = Date.now()): number {
  return Math.floor(nowMs / 1000 / authenticator.period) + authenticator.drift_steps;
}

function otpAt(authenticator: Authenticator, secret: string, at: number): string {
  const common = { secret, digits: authenticator.digits as 6, algorithm: authenticator.algorithm as 'sha1' };
  return authenticator.type === 'hotp'
    ? generateSync({ ...common, strategy: 'hotp', counter: at })
    : generateSync({ ...common, strategy: 'totp', period: authenticator.period, epoch: at * authenticator.period });
}

/**
 * Where an OTP matches inside the normal window: TOTP within the configured drift steps of the
 * token's clock and after its last used step; HOTP from its counter up to HOTP_LOOK_AHEAD ahead.
 */
function match(authenticator: Authenticator, box: SecretBox, drift: MfaSettings['totp'], otp: string): Match | null {
  if (otp.length !== authenticator.digits || !/^\d+$/.test(otp)) return null;
  const secret = secretOf(box, authenticator);
  if (authenticator.type === 'hotp') {
    const from = Number(authenticator.counter ?? 0);
    for (let c = from; c <= from + HOTP_LOOK_AHEAD; c++) if (secretsEqual(otp, otpAt(authenticator, secret, c))) return { counter: c };
    return null;
  }
  const now = tokenStep(authenticator);
  const after = authenticator.last_used_step === null ? -Infinity : Number(authenticator.last_used_step);
  for (let step = now - drift.driftStepsBefore; step <= now + drift.driftStepsAfter; step++) {
    if (step > after && secretsEqual(otp, otpAt(authenticator, secret, step))) return { step };
  }
  return null;
}

/**
 * Records a use only if it moves the token forward: a TOTP step later than the last, an HOTP
 * counter not yet passed. Of two parallel uses of one code, one wins.
 */
async function claim(db: Db, authenticatorId: string, m: Match, confirm: boolean): Promise<boolean> {
  const confirming = confirm ? { confirmed_at: sql<Date>`now()`, enrolment_uid: null } : {};
  const query = 'step' in m
    ? db.updateTable('authenticators').set({ last_used_step: m.step, last_used_at: sql`now()`, ...confirming })
      .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', sql<string>`${m.step}`)]))
    : db.updateTable('authenticators').set({ counter: m.counter + 1, last_used_at: sql`now()`, ...confirming })
      .where((eb) => eb.or([eb('counter', 'is', null), eb('counter', '<=', sql<string>`${m.counter}`)]));
  return Boolean(await query.where('id', '=', authenticatorId).returning('id').executeTakeFirst());
}

/** The OTP part of what was typed, and the PIN part when the token has one (typed before or after, as its owner chose). */
export function splitPin(authenticator: Pick<Authenticator, 'digits' | 'pin_hash' | 'pin_position'>, typed: string): { otp: string; pin: string | null } | null {
  if (!authenticator.pin_hash) return typed.length === authenticator.digits ? { otp: typed, pin: null } : null;
  const pinLength = typed.length - authenticator.digits;
  if (pinLength < PIN_MIN || pinLength > PIN_MAX) return null;
  return authenticator.pin_position === 'after'
    ? { otp: typed.slice(0, authenticator.digits), pin: typed.slice(authenticator.digits) }
    : { otp: typed.slice(pinLength), pin: typed.slice(0, pinLength) };
}

export async function confirmEnrolment(db: Db, box: SecretBox, drift: MfaSettings['totp'], userId: string, authenticatorId: string, code: string): Promise<boolean> {
  const pending = await db.selectFrom('authenticators').selectAll().where('id', '=', authenticatorId).where('user_id', '=', userId).where('confirmed_at', 'is', null).executeTakeFirst();
  if (!pending) return false;
  const m = match(pending, box, drift, code);
  if (m === null || !(await claim(db, pending.id, m, true))) return false;
  await enrolled(db, userId);
  return true;
}

/** A user told to enrol a new token (an approved access restore) has one now. */
export async function enrolled(db: Db, userId: string): Promise<void> {
  await db.updateTable('users').set({ must_enrol: false }).where('id', '=', userId).where('must_enrol', '=', true).execute();
}

/** How a typed code fared: it passed, it is the code last used on a token (sent twice), or it is wrong. */
export type CodeCheck = 'passed' | 'replayed' | 'wrong';

/**
 * Whether an OTP is the one last used on a token: its last used TOTP step, or the HOTP counter just
 * passed. Only that exact code: a form sent twice, not an older code of the window.
 */
function lastUsed(authenticator: Authenticator, box: SecretBox, otp: string): boolean {
  if (otp.length !== authenticator.digits || !/^\d+$/.test(otp)) return false;
  const at = authenticator.type === 'hotp'
    ? (authenticator.counter === null ? null : Number(authenticator.counter) - 1)
    : (authenticator.last_used_step === null ? null : Number(authenticator.last_used_step));
  return at !== null && at >= 0 && secretsEqual(otp, otpAt(authenticator, secretOf(box, authenticator), at));
}

/**
 * Checks a code (with its PIN, where the token has one) against the user's confirmed tokens that
 * are not disabled. The PIN is checked only once the OTP part matched; a wrong PIN fails the whole
 * code, so it counts toward the account lockout like a wrong code (the caller admits every attempt).
 * The code just used, sent again with its PIN (a double click, or a request that lost the race for
 * it), is told apart: it was no guess.
 */
export async function checkAuthenticatorCode(db: Db, box: SecretBox, drift: MfaSettings['totp'], userId: string, typed: string): Promise<CodeCheck> {
  const tokens = await db.selectFrom('authenticators').selectAll().where('user_id', '=', userId).where('confirmed_at', 'is not', null).where('disabled_at', 'is', null).execute();
  let replayed = false;
  for (const token of tokens) {
    const parts = splitPin(token, typed);
    if (!parts) continue;
    const m = match(token, box, drift, parts.otp);
    const pinRight = async () => parts.pin === null || verifyPassword(token.pin_hash, parts.pin);
    if (!m) {
      if (!replayed && lastUsed(token, box, parts.otp) && (await pinRight())) replayed = true;
      continue;
    }
    if (!(await pinRight())) return 'wrong';
    return (await claim(db, token.id, m, false)) ? 'passed' : 'replayed';
  }
  return replayed ? 'replayed' : 'wrong';
}

/** Whether a code passes (checkAuthenticatorCode), for callers that need no more. */
export async function verifyAuthenticatorCode(db: Db, box: SecretBox, drift: MfaSettings['totp'], userId: string, typed: string): Promise<boolean> {
  return (await checkAuthenticatorCode(db, box, drift, userId, typed)) === 'passed';
}

/**
 * Where two consecutive codes of a token sit, searched RESYNC_WINDOW steps either way (TOTP) or
 * presses ahead (HOTP), never at or before a step or counter already used: the second code's
 * position, which becomes the token's last use.
 */
function locatePair(authenticator: Authenticator, box: SecretBox, first: string, second: string): number | null {
  if (first.length !== authenticator.digits || second.length !== authenticator.digits) return null;
  const secret = secretOf(box, authenticator);
  let from: number;
  let to: number;
  if (authenticator.type === 'hotp') {
    from = Number(authenticator.counter ?? 0);
    to = from + RESYNC_WINDOW;
  } else {
    const now = Math.floor(Date.now() / 1000 / authenticator.period);
    const used = authenticator.last_used_step === null ? -Infinity : Number(authenticator.last_used_step);
    from = Math.max(now - RESYNC_WINDOW, used + 1);
    to = now + RESYNC_WINDOW;
  }
  for (let at = from; at < to; at++) {
    if (secretsEqual(first, otpAt(authenticator, secret, at)) && secretsEqual(second, otpAt(authenticator, secret, at + 1))) return at + 1;
  }
  return null;
}

/**
 * Resynchronises a token from two consecutive codes: a TOTP token's drift is set to where its clock
 * is (the verify window keeps its size), an HOTP counter moves past the second code. The token only
 * ever moves forward, so a resync cannot bring back a used code; the update is conditional, so of
 * two parallel resyncs one wins.
 */
export async function resyncAuthenticator(db: Db, box: SecretBox, authenticator: Authenticator, first: string, second: string): Promise<boolean> {
  const at = locatePair(authenticator, box, first, second);
  if (at === null) return false;
  if (authenticator.type === 'hotp') return claim(db, authenticator.id, { counter: at }, false);
  const drift = at - Math.floor(Date.now() / 1000 / authenticator.period);
  const row = await db
    .updateTable('authenticators')
    .set({ last_used_step: at, drift_steps: drift, last_used_at: sql`now()` })
    .where('id', '=', authenticator.id)
    .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', sql<string>`${at}`)]))
    .returning('id')
    .executeTakeFirst();
  return Boolean(row);
}

/** Whether a code matches a token now (registering a hardware token by its serial): the use is claimed. */
export async function claimCode(db: Db, box: SecretBox, drift: MfaSettings['totp'], authenticator: Authenticator, otp: string): Promise<boolean> {
  const m = match(authenticator, box, drift, otp);
  return m !== null && claim(db, authenticator.id, m, false);
}

/**
 * Takes tokens off a user (all of them, or the ones named): an app's secret is deleted (it lives on
 * the phone); a hardware token goes back to the unassigned stock, its PIN and counters kept moving
 * forward, to be registered again by its serial number.
 */
export async function takeOffTokens(db: Db, userId: string, ids?: string[]): Promise<{ id: string; label: string; serial: string | null }[]> {
  if (ids && ids.length === 0) return [];
  const mine = db.selectFrom('authenticators').select('id').where('user_id', '=', userId).$if(Boolean(ids), (q) => q.where('id', 'in', ids!));
  const [apps, hardware] = await Promise.all([
    db.deleteFrom('authenticators').where('id', 'in', mine).where('kind', '=', 'app').returning(['id', 'label', 'serial']).execute(),
    db.updateTable('authenticators')
      .set({ user_id: null, confirmed_at: null, pin_hash: null, pin_position: null, enrolment_uid: null })
      .where('id', 'in', mine).where('kind', '=', 'hardware')
      .returning(['id', 'label', 'serial'])
      .execute(),
  ]);
  return [...apps, ...hardware];
}
