import { sql, type Kysely } from 'kysely';

/**
 * Signing in as a shared account: the interaction remembers which reservation (and so which
 * member) it is for; a spent reservation remembers the authorization code issued for it (stored
 * as the adapter stores ids: an HMAC), so that code's tokens name the member (the `act` claim),
 * and the session it signed in.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('interaction_progress')
    .addColumn('reservation_id', 'uuid', (c) => c.references('jit_reservations.id').onDelete('cascade'))
    .execute();
  await db.schema.alterTable('jit_reservations').addColumn('session_uid', 'text').addColumn('code_id', 'text').execute();
  await sql`create index jit_reservations_session on jit_reservations (session_uid, ended_at desc) where session_uid is not null`.execute(db);
  // One code per reservation, one reservation per code.
  await sql`create unique index jit_reservations_code on jit_reservations (code_id) where code_id is not null`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index jit_reservations_code`.execute(db);
  await sql`drop index jit_reservations_session`.execute(db);
  await db.schema.alterTable('jit_reservations').dropColumn('code_id').dropColumn('session_uid').execute();
  await db.schema.alterTable('interaction_progress').dropColumn('reservation_id').execute();
}
