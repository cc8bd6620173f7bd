import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Where a user comes from (this database, or an LDAP directory that checks the password), and
  // their sponsor: the manager of a local user, who is told of or approves their sign-ins.
  await db.schema
    .alterTable('users')
    .addColumn('source', 'text', (c) => c.notNull().defaultTo('local'))
    .addColumn('ldap_dn', 'text')
    .addColumn('sponsor_name', 'text')
    .addColumn('sponsor_email', 'text')
    .addColumn('sponsor_phone', 'text')
    .execute();
  // Manager approval applies to an application's sign-ins, or to the users an access policy governs.
  await db.schema.alterTable('clients').addColumn('manager_approval', 'boolean', (c) => c.notNull().defaultTo(false)).execute();
  await db.schema.alterTable('access_policies').addColumn('manager_approval', 'boolean', (c) => c.notNull().defaultTo(false)).execute();

  await db.schema
    .createTable('approval_profiles')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('mode', 'text', (c) => c.notNull().check(sql`mode in ('inform', 'approve')`))
    .addColumn('base_url', 'text')
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('link_minutes', 'integer', (c) => c.notNull())
    .addColumn('delivery', 'text', (c) => c.notNull().check(sql`delivery in ('email', 'sms')`))
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('default_recipient', 'text')
    .addColumn('directories', sql`text[]`, (c) => c.notNull())
    .addColumn('factors', sql`text[]`)
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('approval_policies')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('profile', 'text', (c) => c.notNull().references('approval_profiles.name').onDelete('cascade'))
    .addColumn('attribute', 'text', (c) => c.notNull())
    .addColumn('values', sql`text[]`, (c) => c.notNull())
    .addColumn('client_id', 'text')
    .addColumn('position', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Every request to a manager: who asked, for what, what was decided, by whom and from where.
  await db.schema
    .createTable('approval_requests')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('token_hash', 'text', (c) => c.unique())
    .addColumn('profile', 'text', (c) => c.notNull())
    .addColumn('mode', 'text', (c) => c.notNull())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('interaction_uid', 'text')
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('informed', 'pending', 'approved', 'rejected', 'expired', 'undeliverable', 'cancelled')`))
    .addColumn('recipient', 'text')
    .addColumn('recipient_source', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('decided_at', 'timestamptz')
    .addColumn('decided_ip', 'text')
    .execute();
  await db.schema.createIndex('approval_requests_interaction').on('approval_requests').column('interaction_uid').execute();
  await db.schema.createIndex('approval_requests_created').on('approval_requests').column('created_at').execute();

  // An approved sign-in counts for its browser session and that application: single sign-on to the
  // same application does not ask again; another application, or a new session, does.
  await db.schema
    .createTable('session_approvals')
    .addColumn('session_uid', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('request_id', 'uuid', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addPrimaryKeyConstraint('session_approvals_pk', ['session_uid', 'client_id'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['session_approvals', 'approval_requests', 'approval_policies', 'approval_profiles']) await db.schema.dropTable(table).execute();
  await db.schema.alterTable('access_policies').dropColumn('manager_approval').execute();
  await db.schema.alterTable('clients').dropColumn('manager_approval').execute();
  await db.schema.alterTable('users').dropColumn('source').dropColumn('ldap_dn').dropColumn('sponsor_name').dropColumn('sponsor_email').dropColumn('sponsor_phone').execute();
}
