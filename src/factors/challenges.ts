import { UUID } from '../directory/users.js';
import { createHmac, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { ChallengeFactor, OtpChallenge } from '../db/schema.js';
import type { MfaSettings } from '../settings/settings.js';
import { addressKey, release, takeInOrder, type Limit } from '../rate-limits.js';

/**
 * One-time codes sent by email or SMS. A code is stored only as an HMAC (keyed from the master
 * secret and bound to its challenge id), compared in constant time, used once, and every guess is
 * counted in the database before it is compared, so parallel guesses cannot exceed the limit.
 */
export function generateCode(length: number): string {
  let code = '';
  for (let i = 0; i < length; i++) code += String(randomInt(10));
  return code;
}

export function hashCode(key: Buffer, challengeId: string, code: string): string {
  return createHmac('sha256', key).update(`${challengeId}:${code}`).digest('base64url');
}

export type SendRefusal =
  | { kind: 'cooldown'; retryAt: Date }
  | { kind: 'limit'; scope: 'user' | 'destination' | 'ip'; retryAt: Date };

export interface NewChallenge {
  challenge: OtpChallenge;
  code: string;
}

const HOUR = 3600;

/** Thrown inside the transaction so the allowances already taken are rolled back with it. */
class Refused extends Error {
  constructor(readonly refusal: SendRefusal) {
    super(refusal.kind);
  }
}

/** The resend cooldown is per sign-in and channel: an earlier sign-in's code never holds back a new one. */
export function cooldownKey(request: { userId: string; interactionUid: string | null; factor: ChallengeFactor }): string {
  return `otp-cooldown:${request.interactionUid ?? `user:${request.userId}`}:${request.factor}`;
}

/**
 * Creates a challenge unless the resend cooldown or a send limit stands in the way. Every allowance
 * (cooldown, per user, per destination, per IP) is taken atomically in the database before the
 * code exists, all in one transaction: parallel requests, across users and instances, cannot send
 * more than the limits, and a refusal takes nothing.
 */
export async function createChallenge(
  db: Db,
  key: Buffer,
  otp: MfaSettings['otp'],
  request: { userId: string; factor: ChallengeFactor; destination: string; ip: string | null; interactionUid: string | null; purpose: string },
): Promise<NewChallenge | SendRefusal> {
  try {
    return await db.transaction().execute(async (tx) => {
      // Codes to restore access, and a member's codes for a shared account, count apart: asking for
      // them (which needs no sign-in of the user's own) must not use up the codes the user needs to sign in.
      const quota = request.purpose.startsWith('restore') ? 'restore-' : request.purpose === 'shared-sign-in' ? 'shared-' : '';
      const limits: ['cooldown' | 'user' | 'destination' | 'ip', string | null, Limit][] = [
        ['cooldown', otp.resendCooldownSeconds > 0 ? cooldownKey(request) : null, { max: 1, seconds: otp.resendCooldownSeconds }],
        ['user', `${quota}otp-user:${request.userId}`, { max: otp.perUserPerHour, seconds: HOUR }],
        ['destination', `${quota}otp-destination:${request.destination.toLowerCase()}`, { max: otp.perDestinationPerHour, seconds: HOUR }],
        // A restore code's address limit is taken by its page, alike for names with and without an account.
        ['ip', request.ip && quota !== 'restore-' ? `otp-ip:${addressKey(request.ip)}` : null, { max: otp.perIpPerHour, seconds: HOUR }],
      ];
      const taking = limits.filter((l): l is [typeof l[0], string, Limit] => l[1] !== null);
      // All in one statement, in order; a refusal rolls back the units taken before it.
      const taken = await takeInOrder(tx, taking.map(([, key, limit]) => ({ key, ...limit })));
      if (!taken.allowed) {
        const scope = taking[taken.index]![0];
        throw new Refused(scope === 'cooldown' ? { kind: 'cooldown', retryAt: taken.retryAt } : { kind: 'limit', scope, retryAt: taken.retryAt });
      }
      const id = randomUUID();
      const code = generateCode(otp.length);
      const challenge = await tx
        .insertInto('otp_challenges')
        .values({
          id,
          user_id: request.userId,
          factor: request.factor,
          destination: request.destination,
          code_hash: hashCode(key, id, code),
          purpose: request.purpose,
          interaction_uid: request.interactionUid,
          ip: request.ip,
          max_attempts: otp.maxAttempts,
          expires_at: new Date(Date.now() + otp.lifetimeSeconds * 1000),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return { challenge, code };
    });
  } catch (error) {
    if (error instanceof Refused) return error.refusal;
    throw error;
  }
}

export function isRefusal(result: NewChallenge | SendRefusal): result is SendRefusal {
  return 'kind' in result;
}

export async function markDelivered(db: Db, challengeId: string): Promise<void> {
  await db.updateTable('otp_challenges').set({ delivered: true }).where('id', '=', challengeId).execute();
}

/** A code that could not be sent can never be used; another may be asked for at once (it still counts toward the hourly limits). */
export async function markUndeliverable(db: Db, challenge: Pick<OtpChallenge, 'id' | 'user_id' | 'interaction_uid' | 'factor'>): Promise<void> {
  await Promise.all([
    db.updateTable('otp_challenges').set({ consumed_at: sql`now()` }).where('id', '=', challenge.id).execute(),
    release(db, cooldownKey({ userId: challenge.user_id, interactionUid: challenge.interaction_uid, factor: challenge.factor })),
  ]);
}

export type VerifyOutcome =
  | { ok: true; challenge: OtpChallenge }
  | { ok: false; reason: 'wrong'; attemptsLeft: number }
  | { ok: false; reason: 'exhausted' | 'expired' | 'used' | 'unknown' };

/** Checks a code against a challenge. Each call counts one attempt, atomically, before comparing. */
export async function verifyChallenge(db: Db, key: Buffer, challengeId: string, userId: string, code: string): Promise<VerifyOutcome> {
  const row = await db
    .updateTable('otp_challenges')
    .set({ attempts: sql`attempts + 1` })
    .where('id', '=', challengeId)
    .where('user_id', '=', userId)
    .returningAll()
    .executeTakeFirst();
  if (!row) return { ok: false, reason: 'unknown' };
  if (row.consumed_at) return { ok: false, reason: 'used' };
  if (row.expires_at.getTime() <= Date.now()) return { ok: false, reason: 'expired' };
  if (row.attempts > row.max_attempts) return { ok: false, reason: 'exhausted' };
  const expected = Buffer.from(row.code_hash);
  const given = Buffer.from(hashCode(key, row.id, code));
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
    const attemptsLeft = row.max_attempts - row.attempts;
    return attemptsLeft > 0 ? { ok: false, reason: 'wrong', attemptsLeft } : { ok: false, reason: 'exhausted' };
  }
  // Single use: of two parallel right answers only one consumes the code.
  const consumed = await db
    .updateTable('otp_challenges')
    .set({ consumed_at: sql`now()` })
    .where('id', '=', row.id)
    .where('consumed_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
  return consumed ? { ok: true, challenge: consumed } : { ok: false, reason: 'used' };
}

export function findChallenge(db: Db, challengeId: string, userId: string): Promise<OtpChallenge | undefined> {
  if (!UUID.test(challengeId)) return Promise.resolve(undefined);
  return db.selectFrom('otp_challenges').selectAll().where('id', '=', challengeId).where('user_id', '=', userId).executeTakeFirst();
}
