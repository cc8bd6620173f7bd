import { sql, type Selectable } from 'kysely';
import { preparedLookup, type Db } from '../db/index.js';
import type { InteractionProgressTable, User } from '../db/schema.js';
import type { FactorId } from '../settings/settings.js';
import type { Requirement } from '../policy/requirement.js';
import { isPass, type Pass } from '../sessions/ledger.js';

/**
 * What an interaction has proven so far and what it needs, kept between its pages: computed once
 * when the interaction learns who the user is, then read by every step.
 */
export interface Progress {
  uid: string;
  accountId: string;
  /** The step the interaction is at: a factor passed there leads back to it; approval: waiting for the manager. */
  step: 'login' | 'approval' | 'consent';
  /** Proofs passed in this interaction (moved to the session's ledger when it ends). */
  methods: Pass[];
  /** What this login needs beyond the password (null at consent, where each scope has its rule). */
  requirement: Requirement | null;
  challengeId: string | null;
  /** The user asked to set up an authenticator app once they have passed a code. */
  enrolAfterFactor?: boolean;
  /** The second factor passed in this interaction (while it goes on to enrolment). */
  factorPassed?: FactorId | null;
  /** A sign-in as a shared account: the reservation it spends; the reserving member answers its factors. */
  reservationId?: string | null;
}

/** A sign-in that starts the session's proofs over: what the session proved before does not count. */
export function startsOver(progress: Pick<Progress, 'methods' | 'reservationId'>): boolean {
  return Boolean(progress.reservationId) || progress.methods.some((p) => p.factor === 'password');
}

const TTL_SECONDS = 3600;

/** Saves the progress; it lives an hour, or `ttlSeconds` (while a manager's link is open). */
export async function saveProgress(db: Db, progress: Progress, ttlSeconds = TTL_SECONDS): Promise<void> {
  await saveProgressStatement(db, progress, ttlSeconds).execute();
}

export function saveProgressStatement(db: Db, progress: Progress, ttlSeconds = TTL_SECONDS) {
  const values = {
    uid: progress.uid,
    account_id: progress.accountId,
    step: progress.step,
    methods: JSON.stringify(progress.methods),
    requirement: progress.requirement ? JSON.stringify(progress.requirement) : null,
    challenge_id: progress.challengeId,
    enrol_after_factor: progress.enrolAfterFactor ?? false,
    factor_passed: progress.factorPassed ?? null,
    reservation_id: progress.reservationId ?? null,
    expires_at: new Date(Date.now() + ttlSeconds * 1000),
  };
  return db
    .insertInto('interaction_progress')
    .values(values)
    .onConflict((oc) => oc.column('uid').doUpdateSet({ ...values, updated_at: sql`now()` }));
}

type ProgressRow = Selectable<InteractionProgressTable>;

function progressOf(row: Pick<ProgressRow, 'uid' | 'account_id' | 'step' | 'methods' | 'requirement' | 'challenge_id' | 'enrol_after_factor' | 'factor_passed' | 'reservation_id'>): Progress | null {
  const methods = row.methods as unknown[];
  // A row written before the ledger (or tampered with) is not trusted: the sign-in starts over.
  if (!Array.isArray(methods) || !methods.every(isPass)) return null;
  return {
    uid: row.uid,
    accountId: row.account_id,
    step: row.step,
    methods,
    requirement: (row.requirement as Requirement | null) ?? null,
    challengeId: row.challenge_id,
    enrolAfterFactor: row.enrol_after_factor,
    factorPassed: row.factor_passed as FactorId | null,
    reservationId: row.reservation_id,
  };
}

const PROGRESS = preparedLookup((db, uid: string) => db.selectFrom('interaction_progress').selectAll().where('uid', '=', uid).where('expires_at', '>', sql<Date>`now()`));

export async function loadProgress(db: Db, uid: string): Promise<Progress | null> {
  const row = await PROGRESS(db, uid);
  return row ? progressOf(row) : null;
}

const PROGRESS_AND_USER = preparedLookup((db, uid: string) =>
  db
    .selectFrom('interaction_progress as p')
    .leftJoin('users as u', 'u.id', 'p.account_id')
    .selectAll('u')
    .select(['p.uid', 'p.account_id', 'p.step', 'p.methods', 'p.requirement', 'p.challenge_id', 'p.enrol_after_factor', 'p.factor_passed', 'p.reservation_id'])
    .where('p.uid', '=', uid)
    .where('p.expires_at', '>', sql<Date>`now()`));

/** The progress and the user it is about, in one query (every step of a login reads both). */
export async function loadProgressAndUser(db: Db, uid: string): Promise<{ progress: Progress; user: User | undefined } | null> {
  const row = await PROGRESS_AND_USER(db, uid);
  const progress = row && progressOf(row);
  if (!row || !progress) return null;
  const { uid: _uid, account_id: _account, step: _step, methods: _methods, requirement: _requirement, challenge_id: _challenge, enrol_after_factor: _enrol, factor_passed: _factor, reservation_id: _reservation, ...user } = row;
  return { progress, user: user.id === null ? undefined : (user as User) };
}

export async function clearProgress(db: Db, uid: string): Promise<void> {
  await db.deleteFrom('interaction_progress').where('uid', '=', uid).execute();
}

export async function purgeExpiredProgress(db: Db): Promise<void> {
  await db.deleteFrom('interaction_progress').where('expires_at', '<', sql<Date>`now()`).execute();
}
