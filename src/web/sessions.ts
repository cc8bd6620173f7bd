import { createHash, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import type { SecretBox } from '../crypto/secret-box.js';

/** Tessera's own web apps that keep sessions: the admin console and the account portal. */
export type AppName = 'admin' | 'account';

/** A signed-in user of one of Tessera's own web apps, as each request sees them. */
export interface AppSession {
  idHash: string;
  user: User;
  /** The built-in groups the user is in (admins, auditors): read with the session, at every request. */
  builtinGroups: string[];
  /** When the user last authenticated. */
  authAt: Date;
  /** When the user last passed a second factor in this session (sign-in or re-verification); null: not yet. */
  factorAt: Date | null;
  pending: PendingChange | null;
}

/** A sensitive change held while the user passes a factor again: replayed from a confirm page, nothing retyped. */
export interface PendingChange {
  path: string;
  /** The form's fields, without its CSRF token. */
  fields: [string, string][];
  label: string;
}

export interface SessionTimes {
  idleSeconds: number;
  absoluteSeconds: number;
}

const hashOf = (id: string) => createHash('sha256').update(id).digest('base64url');
const pendingPurpose = (app: AppName) => `${app}-pending`;

/** Starts a session; the id goes to the browser, only its hash to the database. */
export async function startAppSession(db: Db, app: AppName, userId: string, times: SessionTimes, at: { authAt: Date; factorAt: Date | null }): Promise<string> {
  const id = randomBytes(32).toString('base64url');
  await db
    .insertInto('app_sessions')
    .values({ id_hash: hashOf(id), app, user_id: userId, auth_at: at.authAt, factor_at: at.factorAt, expires_at: new Date(Date.now() + times.absoluteSeconds * 1000) })
    .execute();
  return id;
}

/**
 * The session behind a cookie, if it is alive: of this app, not past its absolute end, used
 * within the idle time, its user active. Touching it is the same statement; the user and their
 * built-in groups are read at every request, so a change of either takes effect at once.
 */
export async function resumeAppSession(db: Db, box: SecretBox, app: AppName, id: string | undefined, times: SessionTimes): Promise<AppSession | null> {
  if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return null;
  const row = await db
    .updateTable('app_sessions')
    .set({ last_seen_at: sql`now()` })
    .where('id_hash', '=', hashOf(id))
    .where('app', '=', app)
    .where('expires_at', '>', sql<Date>`now()`)
    .where('last_seen_at', '>', sql<Date>`now() - make_interval(secs => ${times.idleSeconds})`)
    .returning(['id_hash', 'user_id', 'auth_at', 'factor_at', 'pending'])
    .executeTakeFirst();
  if (!row) return null;
  const found = await db
    .selectFrom('users')
    .selectAll()
    .select(sql<string[]>`array(select g.name from group_members m join groups g on g.id = m.group_id where m.user_id = users.id and g.builtin)`.as('builtin_groups'))
    .where('id', '=', row.user_id)
    .executeTakeFirst();
  if (!found || found.status !== 'active') {
    await endAppSession(db, id);
    return null;
  }
  const { builtin_groups: builtinGroups, ...user } = found;
  let pending: PendingChange | null = null;
  if (row.pending) {
    try {
      pending = JSON.parse(box.open(row.pending, pendingPurpose(app))) as PendingChange;
    } catch {
      pending = null;
    }
  }
  return { idHash: row.id_hash, user, builtinGroups, authAt: row.auth_at, factorAt: row.factor_at, pending };
}

export async function endAppSession(db: Db, id: string | undefined): Promise<void> {
  if (!id) return;
  await db.deleteFrom('app_sessions').where('id_hash', '=', hashOf(id)).execute();
}

/** Every session of a user in one app (a password change, an approved restore). */
export async function endUserAppSessions(db: Db, userId: string, except?: string): Promise<void> {
  let query = db.deleteFrom('app_sessions').where('user_id', '=', userId);
  if (except) query = query.where('id_hash', '<>', except);
  await query.execute();
}

/** After a fresh authentication: its times; the pending change is kept for its confirm page. */
export async function refreshAuthentication(db: Db, idHash: string, at: { authAt: Date; factorAt: Date | null }): Promise<void> {
  await db
    .updateTable('app_sessions')
    .set({ auth_at: at.authAt, ...(at.factorAt ? { factor_at: at.factorAt } : {}) })
    .where('id_hash', '=', idHash)
    .execute();
}

export async function holdPending(db: Db, box: SecretBox, app: AppName, idHash: string, pending: PendingChange | null): Promise<void> {
  await db
    .updateTable('app_sessions')
    .set({ pending: pending ? box.seal(JSON.stringify(pending), pendingPurpose(app)) : null })
    .where('id_hash', '=', idHash)
    .execute();
}

export async function purgeAppSessions(db: Db, idleSeconds: Record<AppName, number>): Promise<void> {
  await db
    .deleteFrom('app_sessions')
    .where((eb) => eb.or([
      eb('expires_at', '<', sql<Date>`now()`),
      eb.and([eb('app', '=', 'admin'), eb('last_seen_at', '<', sql<Date>`now() - make_interval(secs => ${idleSeconds.admin})`)]),
      eb.and([eb('app', '=', 'account'), eb('last_seen_at', '<', sql<Date>`now() - make_interval(secs => ${idleSeconds.account})`)]),
    ]))
    .execute();
}
