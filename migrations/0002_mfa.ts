import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // One row per settings section (mfa, smtp, twilio, sms_gateway, …), each validated by its schema in src/settings.
  await db.schema
    .createTable('settings')
    .addColumn('section', 'text', (c) => c.primaryKey())
    .addColumn('value', 'jsonb', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('authenticators')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('type', 'text', (c) => c.notNull().check(sql`type in ('totp')`))
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('secret', 'text', (c) => c.notNull())
    .addColumn('digits', 'integer', (c) => c.notNull().defaultTo(6))
    .addColumn('period', 'integer', (c) => c.notNull().defaultTo(30))
    .addColumn('algorithm', 'text', (c) => c.notNull().defaultTo('sha1'))
    .addColumn('last_used_step', 'bigint')
    .addColumn('confirmed_at', 'timestamptz')
    .addColumn('last_used_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('authenticators_user_idx').on('authenticators').column('user_id').execute();

  await db.schema
    .createTable('otp_challenges')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('factor', 'text', (c) => c.notNull().check(sql`factor in ('email', 'sms')`))
    .addColumn('destination', 'text', (c) => c.notNull())
    .addColumn('code_hash', 'text', (c) => c.notNull())
    .addColumn('purpose', 'text', (c) => c.notNull().defaultTo('login'))
    .addColumn('interaction_uid', 'text')
    .addColumn('ip', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('consumed_at', 'timestamptz')
    .addColumn('delivered', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('otp_challenges_user_idx').on('otp_challenges').columns(['user_id', 'created_at']).execute();
  await db.schema.createIndex('otp_challenges_destination_idx').on('otp_challenges').columns(['destination', 'created_at']).execute();
  await db.schema.createIndex('otp_challenges_ip_idx').on('otp_challenges').columns(['ip', 'created_at']).execute();

  await db.schema
    .createTable('access_policies')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('subject_type', 'text', (c) => c.notNull().check(sql`subject_type in ('user', 'group')`))
    .addColumn('subject_id', 'uuid', (c) => c.notNull())
    .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(100))
    .addColumn('mfa', 'text', (c) => c.notNull().check(sql`mfa in ('required', 'optional', 'off')`))
    .addColumn('allowed_factors', sql`text[]`)
    .addColumn('require_authenticator_app', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('access_policies_subject_idx').on('access_policies').columns(['subject_type', 'subject_id']).execute();

  await db.schema.alterTable('clients').addColumn('mfa_required', 'boolean', (c) => c.notNull().defaultTo(false)).execute();

  // What a login has proven so far, between the pages of one interaction.
  await db.schema
    .createTable('interaction_progress')
    .addColumn('uid', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('methods', 'jsonb', (c) => c.notNull())
    .addColumn('challenge_id', 'uuid')
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Dev mode's outbox: messages that would have been sent, shown at /dev/outbox.
  await db.schema
    .createTable('dev_outbox')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('subject', 'text')
    .addColumn('body', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dev_outbox').execute();
  await db.schema.dropTable('interaction_progress').execute();
  await db.schema.alterTable('clients').dropColumn('mfa_required').execute();
  for (const table of ['access_policies', 'otp_challenges', 'authenticators', 'settings']) await db.schema.dropTable(table).execute();
}
