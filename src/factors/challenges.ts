import { createHmac, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { ChallengeFactor, OtpChallenge } from '../db/schema.js';
import type { MfaSettings } from '../settings/settings.js';

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

const HOUR_MS = 3600_000;

/**
 * Creates a challenge unless a send limit or the resend cooldown stands in the way. The checks
 * and the insert run under a per-user advisory lock, so parallel requests cannot slip past a limit.
 */
export async function createChallenge(
  db: Db,
  key: Buffer,
  otp: MfaSettings['otp'],
  request: { userId: string; factor: ChallengeFactor; destination: string; ip: string | null; interactionUid: string | null; purpose: string },
): Promise<NewChallenge | SendRefusal> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtext(${`otp-send:${request.userId}`}))`.execute(tx);
    const since = new Date(Date.now() - HOUR_MS);
    const recent = await tx
      .selectFrom('otp_challenges')
      .select(['user_id', 'destination', 'ip', 'factor', 'created_at', 'delivered'])
      .where('created_at', '>', since)
      .where((eb) =>
        eb.or([
          eb('user_id', '=', request.userId),
          eb('destination', '=', request.destination),
          ...(request.ip ? [eb('ip', '=', request.ip)] : []),
        ]),
      )
      .orderBy('created_at', 'asc')
      .execute();

    // The resend cooldown only counts codes that were actually delivered: a failed send may be retried at once.
    const lastDelivered = recent.filter((r) => r.user_id === request.userId && r.factor === request.factor && r.delivered).at(-1);
    if (lastDelivered) {
      const retryAt = new Date(lastDelivered.created_at.getTime() + otp.resendCooldownSeconds * 1000);
      if (retryAt.getTime() > Date.now()) return { kind: 'cooldown', retryAt };
    }
    const limits: ['user' | 'destination' | 'ip', typeof recent, number][] = [
      ['user', recent.filter((r) => r.user_id === request.userId), otp.perUserPerHour],
      ['destination', recent.filter((r) => r.destination === request.destination), otp.perDestinationPerHour],
      ['ip', request.ip ? recent.filter((r) => r.ip === request.ip) : [], otp.perIpPerHour],
    ];
    for (const [scope, rows, max] of limits) {
      if (rows.length >= max) {
        // Retry when the oldest send in the window leaves it.
        const oldest = rows[rows.length - max]!;
        return { kind: 'limit', scope, retryAt: new Date(oldest.created_at.getTime() + HOUR_MS) };
      }
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
}

export function isRefusal(result: NewChallenge | SendRefusal): result is SendRefusal {
  return 'kind' in result;
}

export async function markDelivered(db: Db, challengeId: string): Promise<void> {
  await db.updateTable('otp_challenges').set({ delivered: true }).where('id', '=', challengeId).execute();
}

/** A code that could not be sent can never be used. */
export async function markUndeliverable(db: Db, challengeId: string): Promise<void> {
  await db.updateTable('otp_challenges').set({ consumed_at: sql`now()` }).where('id', '=', challengeId).execute();
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
  if (!/^[0-9a-f-]{36}$/i.test(challengeId)) return Promise.resolve(undefined);
  return db.selectFrom('otp_challenges').selectAll().where('id', '=', challengeId).where('user_id', '=', userId).executeTakeFirst();
}
