import { sql } from 'kysely';
import { generateSecret, generateURI, verify } from 'otplib';
import QRCode from 'qrcode';
import type { Db } from '../db/index.js';
import type { Authenticator } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { MfaSettings } from '../settings/settings.js';

/**
 * Authenticator apps (TOTP, RFC 6238): a secret shared at enrolment by QR code, sealed at rest;
 * the authenticator counts only after one correct code; a time step once used is refused again.
 */
const PURPOSE = (id: string) => `totp:${id}`;
export const TOTP_DIGITS = 6;
export const TOTP_PERIOD = 30;

export function isWellFormedTotp(code: string): boolean {
  return new RegExp(`^\\d{${TOTP_DIGITS}}$`).test(code);
}

export function confirmedAuthenticators(db: Db, userId: string): Promise<Authenticator[]> {
  return db.selectFrom('authenticators').selectAll().where('user_id', '=', userId).where('confirmed_at', 'is not', null).execute();
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
      .values({ id, user_id: user.id, type: 'totp', label: 'Authenticator app', secret: box.seal(secret, PURPOSE(id)), digits: TOTP_DIGITS, period: TOTP_PERIOD, enrolment_uid: interactionUid })
      .returningAll()
      .executeTakeFirstOrThrow();
  }
  const uri = generateURI({ issuer: appName, label: user.username, secret, digits: TOTP_DIGITS, period: TOTP_PERIOD });
  const qrDataUrl = await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 2, width: 220 });
  return { authenticatorId: pending.id, secret, uri, qrDataUrl };
}

async function check(authenticator: Authenticator, box: SecretBox, drift: MfaSettings['totp'], code: string): Promise<number | null> {
  if (!isWellFormedTotp(code)) return null;
  const secret = box.open(authenticator.secret, PURPOSE(authenticator.id));
  const result = await verify({
    secret,
    token: code,
    digits: TOTP_DIGITS as 6,
    period: authenticator.period,
    epochTolerance: [drift.driftStepsBefore * authenticator.period, drift.driftStepsAfter * authenticator.period],
    ...(authenticator.last_used_step !== null ? { afterTimeStep: Number(authenticator.last_used_step) } : {}),
  });
  return result.valid && 'timeStep' in result ? result.timeStep : null;
}

/** Records a used time step only if it is later than the last one: of two parallel uses one wins. */
async function claimStep(db: Db, authenticatorId: string, step: number, confirm: boolean): Promise<boolean> {
  const row = await db
    .updateTable('authenticators')
    .set({ last_used_step: step, last_used_at: sql`now()`, ...(confirm ? { confirmed_at: sql`now()`, enrolment_uid: null } : {}) })
    .where('id', '=', authenticatorId)
    .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', sql<string>`${step}`)]))
    .returning('id')
    .executeTakeFirst();
  return Boolean(row);
}

export async function confirmEnrolment(db: Db, box: SecretBox, drift: MfaSettings['totp'], userId: string, authenticatorId: string, code: string): Promise<boolean> {
  const pending = await db.selectFrom('authenticators').selectAll().where('id', '=', authenticatorId).where('user_id', '=', userId).where('confirmed_at', 'is', null).executeTakeFirst();
  if (!pending) return false;
  const step = await check(pending, box, drift, code);
  return step !== null && claimStep(db, pending.id, step, true);
}

/** Verifies a code against the user's confirmed authenticators. */
export async function verifyTotp(db: Db, box: SecretBox, drift: MfaSettings['totp'], userId: string, code: string): Promise<boolean> {
  for (const authenticator of await confirmedAuthenticators(db, userId)) {
    const step = await check(authenticator, box, drift, code);
    if (step !== null) return claimStep(db, authenticator.id, step, false);
  }
  return false;
}
