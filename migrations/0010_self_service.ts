import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // The console's sessions become the sessions of Tessera's own web apps: the admin console and the
  // account portal. An account session may have no second factor yet (a user who has none).
  await sql`alter table admin_sessions rename to app_sessions`.execute(db);
  await sql`alter index admin_sessions_user rename to app_sessions_user`.execute(db);
  await db.schema
    .alterTable('app_sessions')
    .addColumn('app', 'text', (c) => c.notNull().defaultTo('admin').check(sql`app in ('admin', 'account')`))
    .addColumn('auth_at', 'timestamptz')
    .execute();
  await sql`update app_sessions set auth_at = factor_at`.execute(db);
  await sql`alter table app_sessions alter column auth_at set not null, alter column factor_at drop not null`.execute(db);

  // A self-service portal per application, at /selfservice/<alias>, with the actions an administrator chose, in order.
  await db.schema
    .createTable('portals')
    .addColumn('client_id', 'text', (c) => c.primaryKey().references('clients.client_id').onDelete('cascade'))
    .addColumn('alias', 'text', (c) => c.notNull().unique())
    .addColumn('actions', sql`text[]`, (c) => c.notNull())
    // Who may use it; removing the group closes the portal rather than opening it to everyone.
    .addColumn('group_id', 'uuid', (c) => c.references('groups.id').onDelete('cascade'))
    .addColumn('token_types', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{totp}'`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Tokens: authenticator apps (TOTP) and hardware tokens (TOTP or HOTP) imported by serial number.
  // An imported token has no user until someone registers it; a lost one is disabled, not deleted.
  await sql`alter table authenticators drop constraint if exists authenticators_type_check`.execute(db);
  await sql`alter table authenticators add constraint authenticators_type_check check (type in ('totp', 'hotp'))`.execute(db);
  await sql`alter table authenticators alter column user_id drop not null`.execute(db);
  await db.schema
    .alterTable('authenticators')
    .addColumn('kind', 'text', (c) => c.notNull().defaultTo('app').check(sql`kind in ('app', 'hardware')`))
    .addColumn('serial', 'text', (c) => c.unique())
    // HOTP: the next counter value the server accepts; it only moves forward.
    .addColumn('counter', 'bigint')
    // TOTP: the clock offset in time steps learnt by a resync.
    .addColumn('drift_steps', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('pin_hash', 'text')
    .addColumn('pin_position', 'text', (c) => c.check(sql`pin_position in ('before', 'after')`))
    .addColumn('disabled_at', 'timestamptz')
    .execute();

  // A user told to enrol a new factor at the next sign-in (after an approved access restore).
  await db.schema.alterTable('users').addColumn('must_enrol', 'boolean', (c) => c.notNull().defaultTo(false)).execute();

  // "Restore access": what the user lost, how they proved who they are, and the new data they gave;
  // an administrator approves or deletes it.
  await db.schema
    .createTable('restore_requests')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('portal', 'text')
    .addColumn('lost', sql`text[]`, (c) => c.notNull())
    .addColumn('proofs', 'jsonb', (c) => c.notNull())
    .addColumn('new_password_hash', 'text')
    .addColumn('new_email', 'text')
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('open').check(sql`status in ('open', 'approved', 'deleted', 'withdrawn')`))
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('decided_at', 'timestamptz')
    .addColumn('decided_by', 'text')
    .execute();
  await sql`create unique index restore_requests_open on restore_requests (user_id) where status = 'open'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('restore_requests').execute();
  await db.schema.alterTable('users').dropColumn('must_enrol').execute();
  await sql`delete from authenticators where user_id is null or type <> 'totp'`.execute(db);
  await db.schema
    .alterTable('authenticators')
    .dropColumn('kind').dropColumn('serial').dropColumn('counter').dropColumn('drift_steps').dropColumn('pin_hash').dropColumn('pin_position').dropColumn('disabled_at')
    .execute();
  await sql`alter table authenticators alter column user_id set not null`.execute(db);
  await db.schema.dropTable('portals').execute();
  await sql`delete from app_sessions where app <> 'admin'`.execute(db);
  await sql`alter table app_sessions drop column app, drop column auth_at, alter column factor_at set not null`.execute(db);
  await sql`alter index app_sessions_user rename to admin_sessions_user`.execute(db);
  await sql`alter table app_sessions rename to admin_sessions`.execute(db);
}
