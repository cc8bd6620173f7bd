import { sql, type Kysely } from 'kysely';

/**
 * Just-in-time shared accounts: a common username (acmeadmin) whose sign-ins are reserved, one at a
 * time, by members of its group, and signed in with the member's own code.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('shared_accounts')
    .addColumn('user_id', 'uuid', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
    // Who may reserve it; a group in use cannot be removed from under it.
    .addColumn('group_id', 'uuid', (c) => c.notNull().references('groups.id').onDelete('restrict'))
    .addColumn('minutes', 'integer', (c) => c.notNull().defaultTo(5).check(sql`minutes between 1 and 1440`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable('jit_reservations')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('shared_user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('member_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('live').check(sql`status in ('live', 'spent', 'expired', 'released')`))
    .addColumn('reserved_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('ended_at', 'timestamptz')
    .addColumn('ip', 'text')
    .execute();
  // One live reservation per shared account: of two members reserving at once, the database lets one in.
  await sql`create unique index jit_reservations_live on jit_reservations (shared_user_id) where status = 'live'`.execute(db);
  await sql`create index jit_reservations_recent on jit_reservations (reserved_at desc)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('jit_reservations').execute();
  await db.schema.dropTable('shared_accounts').execute();
}
