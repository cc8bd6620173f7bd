import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Scopes an administrator protected with a second factor. resource '' is an OpenID scope;
  // otherwise the API's identifier. factors null: any factor the user may use.
  await db.schema
    .createTable('scope_rules')
    .addColumn('resource', 'text', (c) => c.notNull())
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('factors', sql`text[]`)
    .addColumn('max_age_seconds', 'integer', (c) => c.notNull().check(sql`max_age_seconds >= 0`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('scope_rules_pk', ['resource', 'scope'])
    .execute();

  // The factor ledger: which factors a browser session passed, and when (the latest pass of each).
  await db.schema
    .createTable('session_factors')
    .addColumn('session_uid', 'text', (c) => c.notNull())
    .addColumn('factor', 'text', (c) => c.notNull())
    .addColumn('account_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('passed_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addPrimaryKeyConstraint('session_factors_pk', ['session_uid', 'factor'])
    .execute();
  await db.schema.createIndex('session_factors_expires').on('session_factors').column('expires_at').execute();

  // The factor each protected scope of a grant was granted with, so a refresh (and a later
  // authorization) can hold it against the scope's current rule. grant_id is the stored (hashed) id.
  await db.schema
    .createTable('grant_step_ups')
    .addColumn('grant_id', 'text', (c) => c.notNull())
    .addColumn('resource', 'text', (c) => c.notNull())
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('factor', 'text', (c) => c.notNull())
    .addColumn('factor_age_seconds', 'integer', (c) => c.notNull())
    // Passed on that consent screen itself (what a window of 0, "every time", asks for).
    .addColumn('at_consent', 'boolean', (c) => c.notNull())
    .addColumn('granted_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addPrimaryKeyConstraint('grant_step_ups_pk', ['grant_id', 'resource', 'scope'])
    .execute();
  await db.schema.createIndex('grant_step_ups_expires').on('grant_step_ups').column('expires_at').execute();

  // The requirement is computed once per interaction and kept with its progress; the step it is at
  // (login or consent) says which page a factor passed there leads back to.
  await db.schema
    .alterTable('interaction_progress')
    .addColumn('requirement', 'jsonb')
    .addColumn('step', 'text', (c) => c.notNull().defaultTo('login'))
    .execute();

  // A pending authenticator app belongs to the sign-in that showed its QR code: another sign-in
  // (someone else holding the password) never sees the same secret.
  await db.schema.alterTable('authenticators').addColumn('enrolment_uid', 'text').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('authenticators').dropColumn('enrolment_uid').execute();
  await db.schema.alterTable('interaction_progress').dropColumn('requirement').dropColumn('step').execute();
  for (const table of ['grant_step_ups', 'session_factors', 'scope_rules']) await db.schema.dropTable(table).execute();
}
