import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDatabase, type DatabaseHandle } from '../../src/db/index.js';

export interface TestDatabase {
  handle: DatabaseHandle;
  /** The URL of this test's own PostgreSQL database, or null on PGlite. */
  url: string | null;
  drop(): Promise<void>;
}

export interface ScratchDatabase {
  name: string;
  url: string;
  handle: DatabaseHandle;
  drop(): Promise<void>;
}

/** A fresh PostgreSQL database on the server serverUrl names, dropped (even if still in use) by drop(). */
export async function createScratchDatabase(serverUrl: string, prefix: string, poolSize = 10): Promise<ScratchDatabase> {
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const handle = await openDatabase({ databaseUrl: url.href, dataDir: null, poolSize });
  return {
    name,
    url: url.href,
    handle,
    async drop() {
      await handle.close();
      const c = new pg.Client({ connectionString: serverUrl });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/**
 * With DATABASE_URL: a fresh PostgreSQL database on that server, dropped afterwards.
 * Without: an in-memory PGlite (one per test file; it is slow to start).
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    const handle = await openDatabase({ databaseUrl: null, dataDir: null });
    return { handle, url: null, drop: () => handle.close() };
  }
  return createScratchDatabase(serverUrl, 'tessera_test');
}
