import { sql, type Kysely } from 'kysely';

/**
 * Signing in as a shared account: the interaction remembers which reservation (and so which
 * member) it is for; a spent reservation remembers the session it signed in, so the tokens of that
 * session can name the member (the `act` claim).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('interaction_progress')
    .addColumn('reservation_id', 'uuid', (c) => c.references('jit_reservations.id').onDelete('cascade'))
    .execute();
  await db.schema.alterTable('jit_reservations').addColumn('session_uid', 'text').execute();
  await sql`create index jit_reservations_session on jit_reservations (session_uid, ended_at desc) where session_uid is not null`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index jit_reservations_session`.execute(db);
  await db.schema.alterTable('jit_reservations').dropColumn('session_uid').execute();
  await db.schema.alterTable('interaction_progress').dropColumn('reservation_id').execute();
}
