import { createHmac, randomInt } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';

/** How many codes a set holds, and what one looks like: two groups of four letters and digits (`4f7k-2m9q`). */
export const RECOVERY_CODE_COUNT = 10;
// No 0/o, 1/l/i: a code is read off paper and typed back.
const ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';
const TYPED = /^[a-z0-9]{8}$/;

export interface RecoveryCodeStatus {
  total: number;
  left: number;
  createdAt: Date;
}

function newCode(): string {
  let code = '';
  for (let i = 0; i < 8; i++) code += ALPHABET[randomInt(ALPHABET.length)];
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}

/** A code as typed (any case, spaces and dashes anywhere) in its stored form, or null when it cannot be one. */
export function normaliseRecoveryCode(typed: string): string | null {
  const plain = typed.toLowerCase().replace(/[\s-]/g, '');
  return TYPED.test(plain) ? `${plain.slice(0, 4)}-${plain.slice(4)}` : null;
}

// Keyed with the user's id: the same code of two users hashes apart, and a stolen table reveals nothing without the key.
const hashOf = (key: Buffer, userId: string, code: string) => createHmac('sha256', key).update(`${userId}:${code}`).digest('base64url');

/** Names the set a user holds (when it was made), or "none": a page that offers a new set says which one it replaces. */
export function setKey(status: RecoveryCodeStatus | null): string {
  return status ? status.createdAt.toISOString() : 'none';
}

/**
 * A new set of codes for the user, replacing the old one (used or not). The codes are returned once:
 * only their hashes are kept. Sets made at the same moment take turns on the user's row, so one set
 * is left. With `replaces` (a setKey), the set is made only if the user still holds that set: a form
 * sent again (a reload) or twice at once makes one set, not one per copy; null is returned then.
 * Sessions that passed an old code no longer count it.
 */
export async function generateRecoveryCodes(db: Db, key: Buffer, userId: string): Promise<string[]>;
export async function generateRecoveryCodes(db: Db, key: Buffer, userId: string, replaces: string): Promise<string[] | null>;
export async function generateRecoveryCodes(db: Db, key: Buffer, userId: string, replaces?: string): Promise<string[] | null> {
  const codes = new Set<string>();
  while (codes.size < RECOVERY_CODE_COUNT) codes.add(newCode());
  return db.transaction().execute(async (tx) => {
    await tx.selectFrom('users').select('id').where('id', '=', userId).forUpdate().execute();
    if (replaces !== undefined && setKey(await recoveryCodeStatus(tx, userId)) !== replaces) return null;
    await tx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
    await tx.insertInto('recovery_codes').values([...codes].map((code) => ({ user_id: userId, code_hash: hashOf(key, userId, code) }))).execute();
    await tx.deleteFrom('session_factors').where('account_id', '=', userId).where('factor', '=', 'recovery').execute();
    return [...codes];
  });
}

/**
 * Uses a code, once: the statement that marks it used is the check, so of parallel submissions of
 * the same code exactly one succeeds. Returns how many are left, or null when the code is not one
 * of the user's unused codes.
 */
export async function useRecoveryCode(db: Db, key: Buffer, userId: string, typed: string): Promise<{ left: number } | 'used' | null> {
  const code = normaliseRecoveryCode(typed);
  if (!code) return null;
  const hash = hashOf(key, userId, code);
  // Spent here, or one of the user's codes already spent (a form sent twice, a request that lost
  // the race: no guess), in one statement.
  const { rows } = await sql<{ taken: boolean; known: boolean }>`
    with taken as (
      update recovery_codes set used_at = now()
      where user_id = ${userId} and code_hash = ${hash} and used_at is null
      returning user_id)
    select exists (select 1 from taken) as taken,
           exists (select 1 from recovery_codes where user_id = ${userId} and code_hash = ${hash}) as known`.execute(db);
  const outcome = rows[0]!;
  if (!outcome.taken) return outcome.known ? 'used' : null;
  return { left: (await recoveryCodeStatus(db, userId))?.left ?? 0 };
}

/** Whether the user has a set, how many of its codes are left, and when it was made. */
export async function recoveryCodeStatus(db: Db, userId: string): Promise<RecoveryCodeStatus | null> {
  const row = await db
    .selectFrom('recovery_codes')
    .select([sql<number>`count(*)::int`.as('total'), sql<number>`count(*) filter (where used_at is null)::int`.as('left'), sql<Date>`min(created_at)`.as('created_at')])
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row && row.total > 0 ? { total: row.total, left: row.left, createdAt: row.created_at } : null;
}

/** Removes the user's set (an administrator's reset); returns how many codes it held. Sessions that passed one step up again. */
export async function removeRecoveryCodes(db: Db, userId: string): Promise<number> {
  const removed = Number((await db.deleteFrom('recovery_codes').where('user_id', '=', userId).executeTakeFirst()).numDeletedRows);
  if (removed > 0) await db.deleteFrom('session_factors').where('account_id', '=', userId).where('factor', '=', 'recovery').execute();
  return removed;
}
