import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import { DomainError } from '../domain-error.js';
import { SELF_TOKEN_TYPES, type PortalAction, type SelfTokenType } from './actions.js';

const isSelfTokenType = (type: string): type is SelfTokenType => (SELF_TOKEN_TYPES as readonly string[]).includes(type);

export class PortalError extends DomainError {}

/** A self-service portal of one application, at /selfservice/<alias>. */
export interface Portal {
  clientId: string;
  clientName: string;
  alias: string;
  actions: PortalAction[];
  /** Only this group's members may use it; null: every user. */
  group: string | null;
  tokenTypes: SelfTokenType[];
}

export const ALIAS_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$/;

function portals(db: Db) {
  return db
    .selectFrom('portals')
    .innerJoin('clients', 'clients.client_id', 'portals.client_id')
    .leftJoin('groups', 'groups.id', 'portals.group_id')
    .select([
      'portals.client_id', 'portals.alias', 'portals.actions', 'portals.token_types', 'groups.name as group_name',
      sql<string>`coalesce(clients.metadata->>'client_name', clients.client_id)`.as('client_name'),
    ]);
}

type Row = Awaited<ReturnType<ReturnType<typeof portals>['executeTakeFirstOrThrow']>>;

function toPortal(row: Row): Portal {
  return { clientId: row.client_id, clientName: row.client_name, alias: row.alias, actions: row.actions, group: row.group_name, tokenTypes: row.token_types.filter(isSelfTokenType) };
}

export async function portalByAlias(db: Db, alias: string): Promise<Portal | null> {
  if (!ALIAS_PATTERN.test(alias)) return null;
  const row = await portals(db).where('portals.alias', '=', alias).executeTakeFirst();
  return row ? toPortal(row) : null;
}

export async function listPortals(db: Db): Promise<Portal[]> {
  return (await portals(db).orderBy('portals.alias').execute()).map(toPortal);
}

export interface PortalInput {
  clientId: string;
  alias: string;
  actions: PortalAction[];
  group: string | null;
  tokenTypes: SelfTokenType[];
}

/** Enables (or re-configures) an application's portal. The alias is the application's alone. */
export async function enablePortal(db: Db, input: PortalInput): Promise<Portal> {
  if (!ALIAS_PATTERN.test(input.alias)) throw new PortalError('an alias is lower-case letters, digits and hyphens (at most 64), as it is part of the address', 'alias');
  const client = await db.selectFrom('clients').select(['client_id', 'builtin']).where('client_id', '=', input.clientId).executeTakeFirst();
  if (!client) throw new PortalError(`no client "${input.clientId}"`, 'clientId');
  if (client.builtin) throw new PortalError(`"${input.clientId}" is part of Tessera: it has no portal of its own`, 'clientId');
  let groupId: string | null = null;
  if (input.group) {
    const group = await db.selectFrom('groups').select('id').where('name', '=', input.group).executeTakeFirst();
    if (!group) throw new PortalError(`no group "${input.group}"`, 'group');
    groupId = group.id;
  }
  const taken = await db.selectFrom('portals').select('client_id').where('alias', '=', input.alias).where('client_id', '<>', input.clientId).executeTakeFirst();
  if (taken) throw new PortalError(`the alias "${input.alias}" is the portal of "${taken.client_id}"`, 'alias');
  const values = { alias: input.alias, actions: sql<PortalAction[]>`${input.actions}::text[]`, group_id: groupId, token_types: sql<SelfTokenType[]>`${input.tokenTypes}::text[]` };
  await db
    .insertInto('portals')
    .values({ client_id: input.clientId, ...values })
    .onConflict((oc) => oc.column('client_id').doUpdateSet({ ...values, updated_at: sql`now()` }))
    .execute();
  return (await portalByAlias(db, input.alias))!;
}

export async function disablePortal(db: Db, clientId: string): Promise<boolean> {
  const row = await db.deleteFrom('portals').where('client_id', '=', clientId).returning('alias').executeTakeFirst();
  return Boolean(row);
}

/** Whether a user may use a portal: every user, or the members of its group. */
export async function mayUsePortal(db: Db, portal: Portal, userId: string): Promise<boolean> {
  if (!portal.group) return true;
  const row = await db
    .selectFrom('group_members')
    .innerJoin('groups', 'groups.id', 'group_members.group_id')
    .select('group_members.user_id')
    .where('groups.name', '=', portal.group)
    .where('group_members.user_id', '=', userId)
    .executeTakeFirst();
  return Boolean(row);
}
