import { createHash, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../../db/index.js';
import type { User } from '../../db/schema.js';
import type { SecretBox } from '../../crypto/secret-box.js';
import type { Actor } from '../service.js';

/** A signed-in administrator, as each console request sees them. */
export interface ConsoleSession {
  idHash: string;
  user: User;
  actor: Actor;
  /** When the administrator last passed a second factor (sign-in or re-verification). */
  factorAt: Date;
  pending: PendingChange | null;
}

/** A sensitive change held while the administrator passes a factor again: replayed from a confirm page, nothing retyped. */
export interface PendingChange {
  path: string;
  /** The form's fields, without its CSRF token. */
  fields: [string, string][];
  label: string;
}

const hashOf = (id: string) => createHash('sha256').update(id).digest('base64url');
const PENDING_PURPOSE = 'admin-pending';

/** Built-in groups → console role: admins change, auditors read; neither, no console. */
export async function consoleRole(db: Db, userId: string): Promise<Actor['role'] | null> {
  const groups = await db
    .selectFrom('group_members')
    .innerJoin('groups', 'groups.id', 'group_members.group_id')
    .select('groups.name')
    .where('group_members.user_id', '=', userId)
    .where('groups.builtin', '=', true)
    .execute();
  return roleOf(groups.map((g) => g.name));
}

function roleOf(builtinGroups: string[]): Actor['role'] | null {
  return builtinGroups.includes('admins') ? 'admin' : builtinGroups.includes('auditors') ? 'auditor' : null;
}

export interface SessionTimes {
  idleSeconds: number;
  absoluteSeconds: number;
}

/** Starts a console session; the id goes to the browser, only its hash to the database. */
export async function startConsoleSession(db: Db, userId: string, factorAt: Date, times: SessionTimes): Promise<string> {
  const id = randomBytes(32).toString('base64url');
  await db
    .insertInto('admin_sessions')
    .values({ id_hash: hashOf(id), user_id: userId, factor_at: factorAt, expires_at: new Date(Date.now() + times.absoluteSeconds * 1000) })
    .execute();
  return id;
}

/**
 * The session behind a cookie, if it is alive: not past its absolute end, used within the idle
 * time, its user active and still an administrator or auditor (membership is read at every
 * request, so removing someone from `admins` takes effect at once). Touching it is the same statement.
 */
export async function resumeConsoleSession(db: Db, box: SecretBox, id: string | undefined, times: SessionTimes): Promise<ConsoleSession | 'not-admin' | null> {
  if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return null;
  const row = await db
    .updateTable('admin_sessions')
    .set({ last_seen_at: sql`now()` })
    .where('id_hash', '=', hashOf(id))
    .where('expires_at', '>', sql<Date>`now()`)
    .where('last_seen_at', '>', sql<Date>`now() - make_interval(secs => ${times.idleSeconds})`)
    .returning(['id_hash', 'user_id', 'factor_at', 'pending'])
    .executeTakeFirst();
  if (!row) return null;
  const found = await db
    .selectFrom('users')
    .selectAll()
    .select(sql<string[]>`array(select g.name from group_members m join groups g on g.id = m.group_id where m.user_id = users.id and g.builtin)`.as('console_groups'))
    .where('id', '=', row.user_id)
    .executeTakeFirst();
  const role = found && found.status === 'active' ? roleOf(found.console_groups) : null;
  if (!found || !role) {
    await endConsoleSession(db, id);
    return found && found.status === 'active' ? 'not-admin' : null;
  }
  const { console_groups: _groups, ...user } = found;
  let pending: PendingChange | null = null;
  if (row.pending) {
    try {
      pending = JSON.parse(box.open(row.pending, PENDING_PURPOSE)) as PendingChange;
    } catch {
      pending = null;
    }
  }
  return { idHash: row.id_hash, user, actor: { label: `admin:${user.username}`, role }, factorAt: row.factor_at, pending };
}

export async function endConsoleSession(db: Db, id: string | undefined): Promise<void> {
  if (!id) return;
  await db.deleteFrom('admin_sessions').where('id_hash', '=', hashOf(id)).execute();
}

/** After a fresh factor: the new time, and the pending change is kept for its confirm page. */
export async function refreshFactor(db: Db, idHash: string, factorAt: Date): Promise<void> {
  await db.updateTable('admin_sessions').set({ factor_at: factorAt }).where('id_hash', '=', idHash).execute();
}

export async function holdPending(db: Db, box: SecretBox, idHash: string, pending: PendingChange | null): Promise<void> {
  await db
    .updateTable('admin_sessions')
    .set({ pending: pending ? box.seal(JSON.stringify(pending), PENDING_PURPOSE) : null })
    .where('id_hash', '=', idHash)
    .execute();
}

export async function purgeConsoleSessions(db: Db, idleSeconds: number): Promise<void> {
  await db
    .deleteFrom('admin_sessions')
    .where((eb) => eb.or([eb('expires_at', '<', sql<Date>`now()`), eb('last_seen_at', '<', sql<Date>`now() - make_interval(secs => ${idleSeconds})`)]))
    .execute();
}
