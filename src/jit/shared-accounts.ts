import { sql } from 'kysely';
import { isUniqueViolation, preparedLookup, type Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import { DomainError } from '../domain-error.js';
import { ExpiringCache } from '../cache.js';
import { createUser, findUserByUsername, USERNAME_PATTERN } from '../directory/users.js';
import { createGroup } from '../directory/groups.js';

export class JitError extends DomainError {}

/** When a reservation ends, as pages say it: the time, with the date when it is not today (UTC). */
export function untilText(until: Date, now = new Date()): string {
  const iso = until.toISOString();
  return iso.slice(0, 10) === now.toISOString().slice(0, 10) ? `${iso.slice(11, 16)} UTC` : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The reservation time an administrator may give a shared account, in minutes (the seed's floor is one). */
export const JIT_MINUTES = { min: 1, max: 1440, default: 5 } as const;

export interface SharedAccount {
  userId: string;
  username: string;
  group: string;
  minutes: number;
  active: boolean;
  /** The member holding it now, and until when; null when nobody does. */
  holder: { memberId: string; username: string; until: Date } | null;
}

export interface Reservation {
  id: string;
  sharedUserId: string;
  shared: string;
  memberId: string;
  member: string;
  status: 'live' | 'spent' | 'expired' | 'released';
  reservedAt: Date;
  expiresAt: Date;
  endedAt: Date | null;
}

/**
 * Marks an account as shared just in time: members of `group` reserve it. The account is created
 * (without a password: the member's own code signs it in) when it does not exist, and the group
 * when it does not exist. Enabling it again changes its group or time.
 */
export async function enableSharedAccount(db: Db, input: { username: string; group: string; minutes?: number }): Promise<{ account: SharedAccount; createdUser: boolean; createdGroup: boolean }> {
  const minutes = input.minutes ?? JIT_MINUTES.default;
  if (!Number.isInteger(minutes) || minutes < JIT_MINUTES.min || minutes > JIT_MINUTES.max) throw new JitError(`a reservation lasts ${JIT_MINUTES.min} to ${JIT_MINUTES.max} minutes`, 'minutes');
  if (!USERNAME_PATTERN.test(input.username)) throw new JitError(`invalid username "${input.username}"`, 'username');
  let user = await findUserByUsername(db, input.username);
  if (user && user.source !== 'local') throw new JitError(`the account ${user.username} comes from the LDAP directory: a shared account is a local one`, 'username');
  // The console is for people's own accounts: an administrator's account is not shared, nor do the
  // built-in groups decide who reserves one.
  if (user && (await db.selectFrom('group_members').innerJoin('groups', 'groups.id', 'group_members.group_id').select('groups.name').where('group_members.user_id', '=', user.id).where('groups.builtin', '=', true).executeTakeFirst())) {
    throw new JitError(`the account ${user.username} is a member of a built-in group (admins or auditors): the admin console is used with people's own accounts, not a shared one`, 'username');
  }
  let group = await db.selectFrom('groups').select(['id', 'name', 'builtin']).where('name', '=', input.group).executeTakeFirst();
  if (group?.builtin) throw new JitError(`the group ${group.name} is built in (it decides who may use the admin console): choose another group`, 'group');
  // A person's account (with authenticators of its own) is not turned into a shared one by a typo.
  if (user && (await db.selectFrom('authenticators').select('id').where('user_id', '=', user.id).executeTakeFirst())) {
    throw new JitError(`the account ${user.username} has authenticators of its own: a shared account is signed in to with its members' codes (remove them first, if this is really a shared account)`, 'username');
  }
  const createdUser = !user;
  user ??= await createUser(db, { username: input.username });
  const createdGroup = !group;
  if (!group) {
    try {
      group = { ...(await createGroup(db, input.group, `Members may reserve the shared account ${user.username}`)), builtin: false };
    } catch (error) {
      group = await db.selectFrom('groups').select(['id', 'name', 'builtin']).where('name', '=', input.group).executeTakeFirst();
      if (!group) throw error;
    }
  }
  if (await db.selectFrom('group_members').select('user_id').where('group_id', '=', group.id).where('user_id', '=', user.id).executeTakeFirst()) {
    throw new JitError(`the account ${user.username} is a member of ${group.name}: a shared account cannot reserve itself`, 'group');
  }
  const wasShared = await isSharedAccount(db, user.id);
  await db.transaction().execute(async (tx) => {
    // Shared from now on: what the account signed in to before (sessions, grants, refresh tokens) ends.
    if (!wasShared) await tx.deleteFrom('oidc_models').where(sql<boolean>`payload->>'accountId' = ${user.id}`).execute();
    await tx
      .insertInto('shared_accounts')
      .values({ user_id: user.id, group_id: group.id, minutes })
      .onConflict((oc) => oc.column('user_id').doUpdateSet({ group_id: group.id, minutes, updated_at: sql`now()` }))
      .execute();
    // Shared with another group now: a reservation of someone outside it ends.
    await releaseOutsiders(tx);
  });
  const [account] = await listSharedAccounts(db, { userId: user.id });
  return { account: account!, createdUser, createdGroup };
}

/**
 * The account is no longer shared: its live reservation is released and its sessions end (a shared
 * session must not live on as an ordinary one, for single sign-on and refresh tokens); the account
 * and the group stay.
 */
export async function disableSharedAccount(db: Db, username: string): Promise<{ userId: string; releasedFrom: string | null }> {
  const user = await findUserByUsername(db, username);
  if (!user) throw new JitError(`no user "${username}"`, 'username');
  return db.transaction().execute(async (tx) => {
    const row = await tx.deleteFrom('shared_accounts').where('user_id', '=', user.id).returning('user_id').executeTakeFirst();
    if (!row) throw new JitError(`${user.username} is not a shared account`, 'username');
    const released = await tx.updateTable('jit_reservations').set({ status: 'released', ended_at: sql`now()` }).where('shared_user_id', '=', user.id).where('status', '=', 'live').returning('member_id').executeTakeFirst();
    await tx.deleteFrom('oidc_models').where('model', '=', 'Session').where(sql<boolean>`payload->>'accountId' = ${user.id}`).execute();
    return { userId: user.id, releasedFrom: released?.member_id ?? null };
  });
}

/** Every shared account with its group, time, and who holds it now. */
export async function listSharedAccounts(db: Db, only?: { userId: string }): Promise<SharedAccount[]> {
  const rows = await db
    .selectFrom('shared_accounts')
    .innerJoin('users', 'users.id', 'shared_accounts.user_id')
    .innerJoin('groups', 'groups.id', 'shared_accounts.group_id')
    .leftJoin('jit_reservations as r', (join) => join.onRef('r.shared_user_id', '=', 'shared_accounts.user_id').on('r.status', '=', 'live').on('r.expires_at', '>', sql<Date>`now()`))
    .leftJoin('users as m', 'm.id', 'r.member_id')
    .select(['shared_accounts.user_id', 'users.username', 'users.status', 'groups.name as group', 'shared_accounts.minutes', 'r.member_id', 'm.username as member', 'r.expires_at'])
    .$if(only !== undefined, (q) => q.where('shared_accounts.user_id', '=', only!.userId))
    .orderBy('users.username')
    .execute();
  return rows.map((r) => ({
    userId: r.user_id, username: r.username, group: r.group, minutes: r.minutes, active: r.status === 'active',
    holder: r.member_id && r.member && r.expires_at ? { memberId: r.member_id, username: r.member, until: r.expires_at } : null,
  }));
}

/** The shared accounts a member may reserve (those of their groups), with who holds each. */
export async function reservableBy(db: Db, memberId: string): Promise<SharedAccount[]> {
  const groups = await db.selectFrom('group_members').innerJoin('groups', 'groups.id', 'group_members.group_id').select('groups.name').where('group_members.user_id', '=', memberId).execute();
  const names = new Set(groups.map((g) => g.name));
  return (await listSharedAccounts(db)).filter((a) => names.has(a.group) && a.userId !== memberId);
}

/**
 * Reserves a shared account for a member of its group: theirs alone until the reservation time runs
 * out or one sign-in spends it. Of members reserving at the same moment exactly one wins: the
 * database holds one live reservation per account; the others hear who holds it.
 */
export async function reserve(db: Db, input: { sharedUserId: string; memberId: string; ip: string | null }): Promise<Reservation> {
  if (!UUID.test(input.sharedUserId)) throw new JitError('you may not reserve this account', 'account');
  const account = await db
    .selectFrom('shared_accounts')
    .innerJoin('users', 'users.id', 'shared_accounts.user_id')
    .select(['shared_accounts.user_id', 'shared_accounts.group_id', 'shared_accounts.minutes', 'users.status', 'users.username'])
    .where('shared_accounts.user_id', '=', input.sharedUserId)
    .executeTakeFirst();
  // A forged id and an account of another group read alike.
  const member = account && (await db.selectFrom('group_members').select('user_id').where('group_id', '=', account.group_id).where('user_id', '=', input.memberId).executeTakeFirst());
  if (!account || !member || account.user_id === input.memberId) throw new JitError('you may not reserve this account', 'account');
  if (account.status !== 'active') throw new JitError(`${account.username} is disabled: ask your administrator`, 'account');
  try {
    const id = await db.transaction().execute(async (tx) => {
      // A reservation whose time ran out frees the account.
      await tx.updateTable('jit_reservations').set({ status: 'expired', ended_at: sql`expires_at` }).where('shared_user_id', '=', account.user_id).where('status', '=', 'live').where('expires_at', '<=', sql<Date>`now()`).execute();
      const row = await tx
        .insertInto('jit_reservations')
        .values({ shared_user_id: account.user_id, member_id: input.memberId, expires_at: sql`now() + make_interval(mins => ${account.minutes})`, ip: input.ip })
        .returning('id')
        .executeTakeFirstOrThrow();
      return row.id;
    });
    return (await listReservations(db, { id }))[0]!;
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
    const holder = (await listSharedAccounts(db, { userId: account.user_id }))[0]?.holder;
    throw new JitError(holder ? `already reserved: ${account.username} is held by ${holder.username} until ${untilText(holder.until)}` : `already reserved: ${account.username} was reserved a moment ago, try again`, 'account');
  }
}

/**
 * A member gives a reservation back before using it; an administrator (no `memberId`) ends
 * whoever's it is. Returns the member whose reservation ended, if one did.
 */
export async function release(db: Db, input: { sharedUserId: string; memberId?: string }): Promise<{ memberId: string } | null> {
  if (!UUID.test(input.sharedUserId)) return null;
  const row = await db
    .updateTable('jit_reservations')
    .set({ status: 'released', ended_at: sql`now()` })
    .where('shared_user_id', '=', input.sharedUserId)
    .$if(input.memberId !== undefined, (q) => q.where('member_id', '=', input.memberId!))
    .where('status', '=', 'live')
    .returning('member_id')
    .executeTakeFirst();
  return row ? { memberId: row.member_id } : null;
}

/** Reservations, newest first: for one id, one shared account, or all. */
export async function listReservations(db: Db, options: { id?: string; sharedUserId?: string; limit?: number } = {}): Promise<Reservation[]> {
  const rows = await db
    .selectFrom('jit_reservations as r')
    .innerJoin('users as s', 's.id', 'r.shared_user_id')
    .innerJoin('users as m', 'm.id', 'r.member_id')
    .select(['r.id', 'r.shared_user_id', 's.username as shared', 'r.member_id', 'm.username as member', 'r.status', 'r.reserved_at', 'r.expires_at', 'r.ended_at'])
    .$if(options.id !== undefined, (q) => q.where('r.id', '=', options.id!))
    .$if(options.sharedUserId !== undefined, (q) => q.where('r.shared_user_id', '=', options.sharedUserId!))
    .orderBy('r.reserved_at', 'desc')
    .limit(options.limit ?? 100)
    .execute();
  return rows.map((r) => ({
    id: r.id, sharedUserId: r.shared_user_id, shared: r.shared, memberId: r.member_id, member: r.member,
    // A live row whose time ran out is expired, whether or not a later reservation has tidied it yet.
    status: r.status === 'live' && r.expires_at.getTime() <= Date.now() ? 'expired' : r.status,
    reservedAt: r.reserved_at, expiresAt: r.expires_at, endedAt: r.ended_at,
  }));
}

/**
 * Whether any shared account exists: the sign-in page offers their way in only then. Kept for the
 * client cache's time (every sign-in page asks), forgotten at once after a change in this process.
 */
export class SharedAccountPresence {
  private readonly kept: ExpiringCache<boolean>;
  constructor(
    private readonly db: Db,
    ttlMs: number,
  ) {
    this.kept = new ExpiringCache(ttlMs, 1);
  }

  async any(): Promise<boolean> {
    return (await this.kept.get('any', () => anySharedAccount(this.db))) ?? false;
  }

  forget(): void {
    this.kept.clear();
  }
}

/** Whether any account is shared (read through SharedAccountPresence on the sign-in page). */
export async function anySharedAccount(db: Db): Promise<boolean> {
  return Boolean(await db.selectFrom('shared_accounts').select('user_id').limit(1).executeTakeFirst());
}

const ACCOUNT_USER = preparedLookup((db, id: string) =>
  db.selectFrom('users').selectAll().select(sql<boolean>`exists (select 1 from shared_accounts where shared_accounts.user_id = users.id)`.as('shared')).where('id', '=', id));

/** A user and whether it is a shared account, in one query: what a token request needs of its account. */
export function findAccountUser(db: Db, id: string): Promise<(User & { shared: boolean }) | undefined> {
  if (!UUID.test(id)) return Promise.resolve(undefined);
  return ACCOUNT_USER(db, id);
}

export async function isSharedAccount(db: Db, userId: string): Promise<boolean> {
  return Boolean(await db.selectFrom('shared_accounts').select('user_id').where('user_id', '=', userId).executeTakeFirst());
}

/** A reservation a sign-in as the shared account may spend: live, in time, and its member still in the group. */
export interface LiveReservation {
  id: string;
  memberId: string;
  expiresAt: Date;
}

/**
 * The live reservation of a shared account (or the one a sign-in is spending, by its id): in time,
 * and its member still in the account's group.
 */
export async function liveReservation(db: Db, of: { sharedUserId: string } | { reservationId: string }): Promise<LiveReservation | null> {
  const row = await db
    .selectFrom('jit_reservations as r')
    .innerJoin('shared_accounts as s', 's.user_id', 'r.shared_user_id')
    .innerJoin('group_members as g', (join) => join.onRef('g.group_id', '=', 's.group_id').onRef('g.user_id', '=', 'r.member_id'))
    .select(['r.id', 'r.member_id', 'r.expires_at'])
    .whereRef('r.member_id', '<>', 'r.shared_user_id')
    .$if('sharedUserId' in of, (q) => q.where('r.shared_user_id', '=', (of as { sharedUserId: string }).sharedUserId))
    .$if('reservationId' in of, (q) => q.where('r.id', '=', (of as { reservationId: string }).reservationId))
    .where('r.status', '=', 'live')
    .where('r.expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  return row ? { id: row.id, memberId: row.member_id, expiresAt: row.expires_at } : null;
}

/**
 * Spends a reservation with the sign-in it was for, in one statement: of two sign-ins racing with
 * the same reservation (two tabs), one spends it; a reservation that ran out spends nothing.
 */
export async function spendReservation(db: Db, reservationId: string): Promise<boolean> {
  const row = await db
    .updateTable('jit_reservations')
    .set({ status: 'spent', ended_at: sql`now()` })
    .where('id', '=', reservationId)
    .where('status', '=', 'live')
    .where('expires_at', '>', sql<Date>`now()`)
    // The member is still in the account's group (removed since the sign-in started: nothing is spent).
    .where(sql<boolean>`exists (select 1 from shared_accounts s join group_members g on g.group_id = s.group_id where s.user_id = jit_reservations.shared_user_id and g.user_id = jit_reservations.member_id)`)
    .returning('id')
    .executeTakeFirst();
  return Boolean(row);
}

/** RFC 8693's actor claim: who really signed in as the shared account. */
export interface Actor {
  sub: string;
  preferred_username: string;
}

/**
 * Binds the authorization code issued for a shared account's sign-in to the reservation it spent:
 * one code per reservation (a replayed resume binds nothing more).
 */
export async function bindCode(db: Db, reservationId: string, codeId: string): Promise<boolean> {
  const row = await db.updateTable('jit_reservations').set({ code_id: codeId }).where('id', '=', reservationId).where('status', '=', 'spent').where('code_id', 'is', null).returning('id').executeTakeFirst();
  return Boolean(row);
}

/**
 * The member whose reservation an authorization code was issued for, or who last signed a session
 * in as a shared account (for the audit of its sign-out); null for any other code or session.
 */
export async function actorOf(db: Db, by: { codeId: string } | { sessionUid: string }): Promise<Actor | null> {
  const row = await db
    .selectFrom('jit_reservations as r')
    .innerJoin('users as m', 'm.id', 'r.member_id')
    .select(['m.id', 'm.username'])
    .$if('codeId' in by, (q) => q.where('r.code_id', '=', (by as { codeId: string }).codeId))
    .$if('sessionUid' in by, (q) => q.where('r.session_uid', '=', (by as { sessionUid: string }).sessionUid).orderBy('r.ended_at', 'desc'))
    .limit(1)
    .executeTakeFirst();
  return row ? { sub: row.id, preferred_username: row.username } : null;
}

/**
 * Ends every live reservation whose member is no longer in its account's group (taken out of it,
 * or the account shared with another group): the others may reserve it at once.
 */
export async function releaseOutsiders(db: Db): Promise<void> {
  await db
    .updateTable('jit_reservations')
    .set({ status: 'released', ended_at: sql`now()` })
    .where('status', '=', 'live')
    .where(sql<boolean>`not exists (select 1 from shared_accounts s join group_members g on g.group_id = s.group_id where s.user_id = jit_reservations.shared_user_id and g.user_id = jit_reservations.member_id)`)
    .execute();
}

/** The member a reservation is for. */
export async function reservationMember(db: Db, reservationId: string): Promise<User | undefined> {
  return db.selectFrom('jit_reservations as r').innerJoin('users', 'users.id', 'r.member_id').selectAll('users').where('r.id', '=', reservationId).executeTakeFirst();
}
