import { sql, type Kysely } from 'kysely';

/**
 * Restore requests: a user may have several open ones (one filed by someone else must not hide
 * theirs from the administrator), and each draft files at most one (a replayed draft files nothing).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`drop index restore_requests_open`.execute(db);
  await sql`create index restore_requests_user on restore_requests (user_id, status)`.execute(db);
  await db.schema.alterTable('restore_requests').addColumn('draft_id', 'uuid', (c) => c.unique()).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('restore_requests').dropColumn('draft_id').execute();
  await sql`drop index restore_requests_user`.execute(db);
  // Only the newest open request of each user stays open, as the old unique index requires.
  await sql`update restore_requests r set status = 'deleted', decided_at = now(), decided_by = 'migration'
    where status = 'open' and exists (select 1 from restore_requests o where o.user_id = r.user_id and o.status = 'open' and o.created_at > r.created_at)`.execute(db);
  await sql`create unique index restore_requests_open on restore_requests (user_id) where status = 'open'`.execute(db);
}
