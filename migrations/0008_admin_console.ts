import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // The admin console is a client Tessera registers itself; administrators cannot remove or loosen it.
  await db.schema.alterTable('clients').addColumn('builtin', 'boolean', (c) => c.notNull().defaultTo(false)).execute();
  // How old a second factor may be for this client (null: the mfa.maxAgeSeconds setting); 0 asks at every sign-in.
  await db.schema.alterTable('clients').addColumn('mfa_max_age_seconds', 'integer').execute();

  // Console sign-ins: server-side, so signing out or an idle timeout ends them for certain.
  await db.schema
    .createTable('admin_sessions')
    .addColumn('id_hash', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_seen_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('factor_at', 'timestamptz', (c) => c.notNull())
    // A sensitive change waiting for the administrator to pass a factor again (sealed: it may hold a secret).
    .addColumn('pending', 'text')
    .execute();
  await db.schema.createIndex('admin_sessions_user').on('admin_sessions').column('user_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('admin_sessions').execute();
  await db.schema.alterTable('clients').dropColumn('mfa_max_age_seconds').execute();
  await db.schema.alterTable('clients').dropColumn('builtin').execute();
}
