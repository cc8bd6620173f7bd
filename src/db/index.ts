import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { CompiledQuery, Kysely, PostgresDialect, sql, type Compilable, type LogEvent } from 'kysely';
import pg from 'pg';
import { errors as oidcErrors } from 'oidc-provider';
import type { Database } from './schema.js';
import { claimDataDir, type DataDirOwner, type OwnerInfo, type OwnerRole } from './data-dir-owner.js';

export type Db = Kysely<Database>;

/** Queries this process has sent, for /metrics (exact, cheap: Kysely calls log once per query). */
export const queryStats = { queries: 0, errors: 0, millis: 0 };

function countQuery(event: LogEvent): void {
  queryStats.queries++;
  queryStats.millis += event.queryDurationMillis;
  if (event.level === 'error') queryStats.errors++;
}

/**
 * SQL texts that protocol requests run again and again. On PostgreSQL each connection prepares
 * them once as named statements, which spares PostgreSQL parsing and planning them each time
 * (about half its CPU for a primary-key lookup). Keyed by text; the name is derived from it.
 */
const preparedNames = new Map<string, string>();

/** Marks an SQL text as one to prepare; returns it. */
export function prepared(text: string): string {
  if (!preparedNames.has(text)) preparedNames.set(text, `tessera_${createHash('sha256').update(text).digest('hex').slice(0, 16)}`);
  return text;
}

/**
 * A hot lookup of a shape that never varies: built and compiled by Kysely once, at its first run,
 * then run as a prepared statement with each call's arguments; gives its first row. Every value in
 * the query must come from the arguments (constants belong in the SQL text), so that the text is
 * the same for every call.
 */
export function preparedLookup<A extends string[], R>(build: (db: Kysely<Database>, ...args: A) => Compilable<R>): (db: Kysely<Database>, ...args: A) => Promise<R | undefined> {
  let shape: { text: string; order: number[] } | undefined;
  return async (db, ...args) => {
    if (!shape) {
      // Marks no argument can be: where each lands among the compiled parameters is where its values go.
      const marks = args.map((_, i) => `\u0000argument ${i}\u0000`) as A;
      const compiled = build(db, ...marks).compile();
      const order = compiled.parameters.map((value) => marks.indexOf(value as string));
      if (order.includes(-1)) throw new Error('preparedLookup: a value in the query is not one of its arguments');
      shape = { text: prepared(compiled.sql), order };
    }
    const { text, order } = shape;
    return (await db.executeQuery<R>(CompiledQuery.raw(text, order.map((i) => args[i])))).rows[0];
  };
}

/**
 * Runs independent writes (of different rows) as one statement, one round trip instead of one each:
 * each becomes a data-modifying CTE. They see the same snapshot and not each other's effects, so
 * two that touch one row do not belong together. Returns each one's rows (for those that return any).
 */
export async function together(db: Kysely<Database>, queries: Compilable<unknown>[]): Promise<unknown[][]> {
  const compiled = queries.map((q) => q.compile());
  if (compiled.length === 1) return [(await db.executeQuery(compiled[0]!)).rows];
  const parameters: unknown[] = [];
  const parts = compiled.map((c, i) => {
    const offset = parameters.length;
    parameters.push(...c.parameters);
    return `w${i} as (${c.sql.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`)})`;
  });
  // Rows come back as JSON: dates as ISO strings.
  const rowsOf = compiled.map((c, i) => (/\breturning\b/i.test(c.sql) ? `(select coalesce(json_agg(w${i}), '[]') from w${i})` : `'[]'::json`));
  // The same writes make the same text: prepared, like the statements they join.
  const text = prepared(`with ${parts.join(', ')} select json_build_array(${rowsOf.join(', ')}) as r`);
  const { rows } = await db.executeQuery<{ r: unknown[][] }>(CompiledQuery.raw(text, parameters));
  return rows[0]!.r;
}

type QueryFn = (config: unknown, values?: unknown, callback?: unknown) => unknown;

/**
 * The database cannot be reached just now (restarting, down, connections cut). Requests fail with
 * 503 and OAuth's `temporarily_unavailable` instead of a server error, and the pool reconnects by
 * itself once the database is back. It is oidc-provider's error, so the protocol endpoints answer
 * with it as they are.
 */
export class DatabaseUnavailable extends oidcErrors.TemporarilyUnavailable {
  constructor(cause: unknown) {
    super('Tessera cannot reach its database just now; try again in a moment', { cause });
    this.status = 503;
    this.statusCode = 503;
  }
}

// Connection exceptions (08…), shutdown and start-up (57P01–57P03), too many connections (53300),
// and the socket errors of a server that went away.
const UNAVAILABLE_CODES = new Set(['08000', '08001', '08003', '08004', '08006', '57P01', '57P02', '57P03', '53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const UNAVAILABLE_MESSAGES = /Connection terminated|not queryable|Client was closed|timeout exceeded when trying to connect|Connection ended/i;

export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof DatabaseUnavailable) return true;
  if (typeof error !== 'object' || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  return (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) || (typeof message === 'string' && UNAVAILABLE_MESSAGES.test(message));
}

function unavailable(error: unknown): unknown {
  return isDatabaseUnavailable(error) && !(error instanceof DatabaseUnavailable) ? new DatabaseUnavailable(error) : error;
}

/**
 * Every pooled connection: an error on it while a query runs (the server restarted) must not crash
 * the process: the query's own promise carries the error, and the pool drops the broken client.
 * Marked texts go as named statements (pg prepares a name once per connection, then only binds).
 */
function setUpClient(client: pg.PoolClient, preparedStatements: boolean): void {
  client.on('error', () => undefined);
  const query = client.query.bind(client) as QueryFn;
  const wrapped: QueryFn = (config, values, callback) => {
    const name = preparedStatements && typeof config === 'string' && Array.isArray(values) ? preparedNames.get(config) : undefined;
    const result = name ? query({ name, text: config, values }, callback) : query(config, values, callback);
    return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(unavailable(error))) : result;
  };
  client.query = wrapped as typeof client.query;
}

export interface DatabaseHandle {
  db: Db;
  kind: 'postgres' | 'pglite';
  /** Set when this process owns an embedded data directory: other processes' commands arrive through it. */
  owner?: DataDirOwner;
  close(): Promise<void>;
}

// timestamptz and int8 come back as Date and string by default; bigint ids stay strings (they may exceed 2^53).
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v);

/**
 * Opens PostgreSQL when a URL is given, otherwise embedded PGlite persisted under dataDir
 * (or in memory when dataDir is null, as tests do). An embedded data directory is opened by one
 * process only: this one claims it first, and throws DataDirInUse when another process owns it.
 */
export async function openDatabase(options: {
  databaseUrl: string | null;
  dataDir: string | null;
  poolSize?: number;
  /** Named prepared statements (on by default; off behind a PgBouncer older than 1.21 in transaction mode). */
  preparedStatements?: boolean;
  /** Who claims an embedded data directory: a server waits for a CLI command that holds it. */
  role?: OwnerRole;
  /** Told once when the directory is held by a CLI command and this process waits for it. */
  onWait?: (owner: OwnerInfo) => void;
}): Promise<DatabaseHandle> {
  if (options.databaseUrl) {
    // A connection that cannot be made in 5 s fails the request (503) instead of holding it.
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.poolSize ?? 10, connectionTimeoutMillis: 5000 });
    // An idle client that loses its server must not crash the process.
    pool.on('error', () => undefined);
    const preparedStatements = options.preparedStatements !== false;
    pool.on('connect', (client) => setUpClient(client, preparedStatements));
    const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
    pool.connect = (() => connect().catch((error: unknown) => Promise.reject(unavailable(error)))) as typeof pool.connect;
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: countQuery });
    return { db, kind: 'postgres', close: () => db.destroy() };
  }
  const [{ PGlite }, { PGliteDialect }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('kysely-pglite-dialect'),
  ]);
  if (!options.dataDir) {
    const db = new Kysely<Database>({ dialect: new PGliteDialect(await PGlite.create()), log: countQuery });
    return { db, kind: 'pglite', close: () => db.destroy() };
  }
  const owner = await claimDataDir(options.dataDir, options.role ?? 'server', options.onWait);
  try {
    const dir = path.resolve(options.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true });
    const db = new Kysely<Database>({ dialect: new PGliteDialect(await PGlite.create({ dataDir: dir })), log: countQuery });
    return {
      db,
      kind: 'pglite',
      owner,
      async close() {
        try {
          await db.destroy();
        } finally {
          await owner.release();
        }
      },
    };
  } catch (error) {
    await owner.release();
    throw error;
  }
}

export async function isReachable(db: Db): Promise<boolean> {
  try {
    await sql`select 1`.execute(db);
    return true;
  } catch {
    return false;
  }
}

/** True for PostgreSQL's unique_violation (23505), from pg or PGlite: the row was created by someone else first. */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}
