import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;
/** A JSON column with a database default: optional on insert. */
type JsonWithDefault<T> = ColumnType<T, string | undefined, string>;

export interface UsersTable {
  id: Generated<string>;
  username: string;
  email: string | null;
  email_verified: Generated<boolean>;
  phone: string | null;
  phone_verified: Generated<boolean>;
  given_name: string | null;
  family_name: string | null;
  password_hash: string | null;
  status: Generated<'active' | 'disabled'>;
  failed_logins: Generated<number>;
  locked_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  attributes: JsonWithDefault<Record<string, unknown>>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface GroupsTable {
  id: Generated<string>;
  name: string;
  description: string | null;
  created_at: Timestamp;
}

export interface GroupMembersTable {
  group_id: string;
  user_id: string;
}

export interface ClientsTable {
  client_id: string;
  metadata: Json<Record<string, unknown>>;
  require_consent: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ScopesTable {
  name: string;
  description: string;
  created_at: Timestamp;
}

export interface OidcModelsTable {
  model: string;
  id: string;
  payload: Json<Record<string, unknown>>;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  expires_at: ColumnType<Date | null, Date | null, Date | null>;
  consumed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface KeysTable {
  kid: string;
  use: 'sig' | 'cookie';
  alg: string;
  /** The private JWK (or cookie key), sealed with the master key. */
  secret: string;
  status: Generated<'active' | 'retired'>;
  created_at: Timestamp;
  retired_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface AuditEventsTable {
  id: Generated<string>;
  at: Timestamp;
  type: string;
  actor: string | null;
  subject: string | null;
  client_id: string | null;
  ip: string | null;
  user_agent: string | null;
  details: JsonWithDefault<Record<string, unknown>>;
}

export interface Database {
  users: UsersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  clients: ClientsTable;
  scopes: ScopesTable;
  oidc_models: OidcModelsTable;
  keys: KeysTable;
  audit_events: AuditEventsTable;
}

export type User = Selectable<UsersTable>;
export type NewUser = Insertable<UsersTable>;
export type UserUpdate = Updateable<UsersTable>;
export type Group = Selectable<GroupsTable>;
export type ClientRow = Selectable<ClientsTable>;
export type AuditEvent = Selectable<AuditEventsTable>;
