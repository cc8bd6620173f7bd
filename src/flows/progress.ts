import { sql } from 'kysely';
import { preparedFirst, type Db } from '../db/index.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';
import type { FactorId } from '../settings/settings.js';

/** What a login has proven so far (password, then a second factor), kept between the pages of one interaction. */
export interface Progress {
  uid: string;
  accountId: string;
  methods: { method: AuthenticationMethod; at: number }[];
  challengeId: string | null;
  /** The user asked to set up an authenticator app once they have passed a code. */
  enrolAfterFactor?: boolean;
  /** The second factor passed in this interaction (while it goes on to enrolment). */
  factorPassed?: FactorId | null;
}

const TTL_SECONDS = 3600;

export async function saveProgress(db: Db, progress: Progress): Promise<void> {
  const values = {
    uid: progress.uid,
    account_id: progress.accountId,
    methods: JSON.stringify(progress.methods),
    challenge_id: progress.challengeId,
    enrol_after_factor: progress.enrolAfterFactor ?? false,
    factor_passed: progress.factorPassed ?? null,
    expires_at: new Date(Date.now() + TTL_SECONDS * 1000),
  };
  await db
    .insertInto('interaction_progress')
    .values(values)
    .onConflict((oc) => oc.column('uid').doUpdateSet({ ...values, updated_at: sql`now()` }))
    .execute();
}

export async function loadProgress(db: Db, uid: string): Promise<Progress | null> {
  const row = await preparedFirst(db, db.selectFrom('interaction_progress').selectAll().where('uid', '=', uid).where('expires_at', '>', sql<Date>`now()`));
  if (!row) return null;
  return {
    uid: row.uid,
    accountId: row.account_id,
    methods: row.methods as Progress['methods'],
    challengeId: row.challenge_id,
    enrolAfterFactor: row.enrol_after_factor,
    factorPassed: row.factor_passed as FactorId | null,
  };
}

export async function clearProgress(db: Db, uid: string): Promise<void> {
  await db.deleteFrom('interaction_progress').where('uid', '=', uid).execute();
}

export async function purgeExpiredProgress(db: Db): Promise<void> {
  await db.deleteFrom('interaction_progress').where('expires_at', '<', sql<Date>`now()`).execute();
}
