import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // The admin console's two built-in groups: admins change everything, auditors read everything.
  await db.schema.alterTable('groups').addColumn('builtin', 'boolean', (c) => c.notNull().defaultTo(false)).execute();
  await sql`insert into groups (name, description, builtin) values
    ('admins', 'Administrators: sign in to the admin console and change everything', true),
    ('auditors', 'Auditors: sign in to the admin console and read everything, change nothing', true)
    on conflict (name) do update set builtin = true`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('groups').dropColumn('builtin').execute();
}
