import { Migrator, type MigrationResult } from 'kysely';
import { migrations } from '../../migrations/index.js';
import { DatabaseUnavailable, type Db } from './index.js';

/**
 * Applies pending migrations. Kysely's PostgreSQL adapter holds a transaction-scoped advisory
 * lock while it runs, so instances starting together apply each migration exactly once.
 */
export async function migrateToLatest(db: Db): Promise<MigrationResult[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'schema_migrations',
    migrationLockTableName: 'schema_migrations_lock',
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    if (failed) throw new Error(`Migration ${failed.migrationName} failed: ${messageOf(error)}`);
    throw new Error(`The database could not be opened: ${messageOf(error)}${hintFor(error)}`);
  }
  return results ?? [];
}

function messageOf(error: unknown): string {
  const inner = error instanceof DatabaseUnavailable ? error.cause : error;
  return inner instanceof Error ? inner.message : String(inner);
}

/** What to do about the usual reasons a database cannot be opened at all. */
function hintFor(error: unknown): string {
  const { code, cause } = error as { code?: unknown; cause?: unknown };
  const reason = typeof code === 'string' ? code : (cause as { code?: unknown } | undefined)?.code;
  switch (reason) {
    case '3D000':
      return ' (create it first: createdb <name>, or CREATE DATABASE <name>; then start again)';
    case '28P01':
    case '28000':
      return ' (check the user and password in DATABASE_URL)';
    case 'ECONNREFUSED':
      return ' (is PostgreSQL running, at the host and port DATABASE_URL names?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return ' (the host in DATABASE_URL could not be found: check its spelling)';
    default:
      return '';
  }
}
