import { isIPv6 } from 'node:net';
import { sql } from 'kysely';
import { prepared, type Db } from './db/index.js';

/** A limit: at most `max` in each window of `seconds`. */
export interface Limit {
  max: number;
  seconds: number;
}

export type Allowance = { allowed: true } | { allowed: false; retryAt: Date };

/**
 * Takes one unit of a limit, atomically, before the work it guards: one upsert counts it in the
 * current window, or refuses when the window is full. Shared by all instances (the row is the
 * count), exact under any number of parallel requests (the upsert locks the row). Inside a
 * transaction, a later refusal rolls the earlier units back.
 */
export async function take(db: Db, key: string, limit: Limit): Promise<Allowance> {
  const { rows } = await sql<{ count: number }>`
    insert into rate_limits (key, window_started, count) values (${key}, now(), 1)
    on conflict (key) do update set
      count = case when rate_limits.window_started <= now() - make_interval(secs => ${limit.seconds}) then 1 else rate_limits.count + 1 end,
      window_started = case when rate_limits.window_started <= now() - make_interval(secs => ${limit.seconds}) then now() else rate_limits.window_started end
    where rate_limits.window_started <= now() - make_interval(secs => ${limit.seconds}) or rate_limits.count < ${limit.max}
    returning count`.execute(db);
  if (rows.length > 0) return { allowed: true };
  const row = await db.selectFrom('rate_limits').select('window_started').where('key', '=', key).executeTakeFirst();
  return { allowed: false, retryAt: new Date((row?.window_started.getTime() ?? Date.now()) + limit.seconds * 1000) };
}

/**
 * Takes one unit of each limit, in order, in one statement: a limit is taken only when every one
 * before it allowed, so a refusal leaves the later ones untouched (inside a transaction, rolling it
 * back returns the earlier ones too). Returns the first refusal, by its index in `limits`.
 */
export async function takeInOrder(db: Db, limits: (Limit & { key: string })[]): Promise<{ allowed: true } | { allowed: false; index: number; retryAt: Date }> {
  if (limits.length === 0) return { allowed: true };
  const steps = limits.map((limit, i) => {
    const after = i === 0 ? sql`` : sql`where exists (select 1 from ${sql.ref(`taken${i - 1}`)})`;
    const expired = sql`rate_limits.window_started <= now() - make_interval(secs => ${limit.seconds})`;
    return sql`${sql.ref(`taken${i}`)} as (
      insert into rate_limits (key, window_started, count) select ${limit.key}, now(), 1 ${after}
      on conflict (key) do update set
        count = case when ${expired} then 1 else rate_limits.count + 1 end,
        window_started = case when ${expired} then now() else rate_limits.window_started end
      where ${expired} or rate_limits.count < ${limit.max}
      returning 1)`;
  });
  const counts = limits.map((_, i) => sql`(select count(*) from ${sql.ref(`taken${i}`)})::int`);
  // One text per number of limits: prepared.
  const statement = sql<{ taken: number[] }>`with ${sql.join(steps)} select array[${sql.join(counts)}] as taken`.compile(db);
  prepared(statement.sql);
  const { rows } = await db.executeQuery(statement);
  const index = rows[0]!.taken.findIndex((n) => n === 0);
  if (index === -1) return { allowed: true };
  const refused = limits[index]!;
  const row = await db.selectFrom('rate_limits').select('window_started').where('key', '=', refused.key).executeTakeFirst();
  return { allowed: false, index, retryAt: new Date((row?.window_started.getTime() ?? Date.now()) + refused.seconds * 1000) };
}

/** Gives a window back (a code that could not be sent may be asked for again at once). */
export async function release(db: Db, key: string): Promise<void> {
  await db.deleteFrom('rate_limits').where('key', '=', key).execute();
}

/** Drops counters whose windows ended long ago (the longest window is a day). */
export async function purgeRateLimits(db: Db): Promise<void> {
  await db.deleteFrom('rate_limits').where('window_started', '<', sql<Date>`now() - interval '1 day'`).execute();
}

/**
 * The key of a client address for per-address limits: an IPv4 address as it is (also when mapped
 * into IPv6), an IPv6 address by its /64 — one subscriber's whole prefix, which they can cycle through.
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
