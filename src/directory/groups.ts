import { sql } from 'kysely';
import { isUniqueViolation, type Db } from '../db/index.js';
import type { Group } from '../db/schema.js';
import { DirectoryError, requireUser } from './users.js';
import { releaseOutsiders } from '../jit/shared-accounts.js';

export async function createGroup(db: Db, name: string, description: string | null = null): Promise<Group> {
  if (!/^[\p{L}\p{N} ._-]{1,128}$/u.test(name)) throw new DirectoryError(`invalid group name "${name}"`);
  const existing = await db.selectFrom('groups').select('id').where('name', '=', name).executeTakeFirst();
  if (existing) throw new DirectoryError(`group "${name}" already exists`);
  return db
    .insertInto('groups')
    .values({ name, description })
    .returningAll()
    .executeTakeFirstOrThrow()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new DirectoryError(`group "${name}" already exists`);
      throw error;
    });
}

/** Adds a member; false when they already were one (nothing changes). */
export async function addGroupMember(db: Db, groupName: string, username: string): Promise<boolean> {
  const group = await db.selectFrom('groups').select(['id', 'builtin']).where('name', '=', groupName).executeTakeFirst();
  if (!group) throw new DirectoryError(`no group "${groupName}"`);
  const user = await requireUser(db, username);
  const shared = await db.selectFrom('shared_accounts').select('group_id').where('user_id', '=', user.id).executeTakeFirst();
  if (shared?.group_id === group.id) throw new DirectoryError(`${user.username} is the shared account ${groupName} reserves: it cannot be a member of it`);
  if (shared && group.builtin) throw new DirectoryError(`${user.username} is a shared account: the admin console is used with people's own accounts`);
  const added = await db
    .insertInto('group_members')
    .values({ group_id: group.id, user_id: user.id })
    .onConflict((oc) => oc.doNothing())
    .returning('user_id')
    .executeTakeFirst();
  return added !== undefined;
}

export async function removeGroupMember(db: Db, groupName: string, username: string): Promise<void> {
  const group = await db.selectFrom('groups').select('id').where('name', '=', groupName).executeTakeFirst();
  if (!group) throw new DirectoryError(`no group "${groupName}"`);
  const user = await requireUser(db, username);
  await db.transaction().execute(async (tx) => {
    const removed = await tx.deleteFrom('group_members').where('group_id', '=', group.id).where('user_id', '=', user.id).executeTakeFirst();
    if (removed.numDeletedRows === 0n) throw new DirectoryError(`${user.username} is not a member of ${groupName}`);
    // A reservation of an account this group decides on ends with the membership.
    await releaseOutsiders(tx);
  });
}

/** Removes a group, its memberships and the access policies assigned to it. The built-in groups stay. */
export async function removeGroup(db: Db, name: string): Promise<{ members: number; policies: string[] }> {
  const group = await db.selectFrom('groups').select(['id', 'builtin']).where('name', '=', name).executeTakeFirst();
  if (!group) throw new DirectoryError(`no group "${name}"`);
  if (group.builtin) throw new DirectoryError(`"${name}" is built in: it decides who may use the admin console`);
  const sharing = await db.selectFrom('shared_accounts').innerJoin('users', 'users.id', 'shared_accounts.user_id').select('users.username').where('shared_accounts.group_id', '=', group.id).execute();
  if (sharing.length) throw new DirectoryError(`"${name}" decides who may reserve the shared account ${sharing.map((s) => s.username).join(', ')}: stop sharing it or share it with another group first`);
  return db.transaction().execute(async (tx) => {
    const members = await tx.deleteFrom('group_members').where('group_id', '=', group.id).executeTakeFirst();
    const policies = await tx.deleteFrom('access_policies').where('subject_type', '=', 'group').where('subject_id', '=', group.id).returning('name').execute();
    await tx.deleteFrom('groups').where('id', '=', group.id).execute();
    return { members: Number(members.numDeletedRows), policies: policies.map((p) => p.name) };
  });
}

export function listGroups(db: Db): Promise<(Group & { members: number })[]> {
  return db
    .selectFrom('groups')
    .leftJoin('group_members', 'group_members.group_id', 'groups.id')
    .selectAll('groups')
    .select(sql<number>`count(group_members.user_id)::int`.as('members'))
    .groupBy('groups.id')
    .orderBy('groups.name')
    .execute();
}
