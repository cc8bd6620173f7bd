import { isUniqueViolation, type Db } from '../db/index.js';
import type { Group } from '../db/schema.js';
import { DirectoryError, requireUser } from './users.js';

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

export async function addGroupMember(db: Db, groupName: string, username: string): Promise<void> {
  const group = await db.selectFrom('groups').select('id').where('name', '=', groupName).executeTakeFirst();
  if (!group) throw new DirectoryError(`no group "${groupName}"`);
  const user = await requireUser(db, username);
  await db
    .insertInto('group_members')
    .values({ group_id: group.id, user_id: user.id })
    .onConflict((oc) => oc.doNothing())
    .execute();
}


export function listGroups(db: Db): Promise<(Group & { members: number })[]> {
  return db
    .selectFrom('groups')
    .leftJoin('group_members', 'group_members.group_id', 'groups.id')
    .selectAll('groups')
    .select((eb) => eb.fn.count<number>('group_members.user_id').as('members'))
    .groupBy('groups.id')
    .orderBy('groups.name')
    .execute();
}
