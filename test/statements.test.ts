import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { preparedLookup, queryStats, together, type Db } from '../src/db/index.js';
import { sql } from 'kysely';
import { takeInOrder } from '../src/rate-limits.js';
import { KyselyAdapter, storageKeys } from '../src/oidc/adapter.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import type { AsyncLocalStorage } from 'node:async_hooks';

// The store oidc-provider keeps its request context in (Provider.ctx): lookups are coalesced per request.
const REQUEST_CONTEXT_MODULE: string = 'oidc-provider/lib/helpers/als.js';
const requestContext = ((await import(REQUEST_CONTEXT_MODULE)) as { default: AsyncLocalStorage<object> }).default;

const KEYS = storageKeys(new SecretBox('statements-test-secret-0123456789-abcdefgh'));

describe('statements that spare round trips', () => {
  let testDb: TestDatabase;
  let db: Db;
  before(async () => {
    testDb = await createTestDatabase();
    db = testDb.handle.db;
    await migrateToLatest(db);
  });
  after(async () => testDb.drop());

  it('together: independent writes in one statement, each one’s returned rows', async () => {
    await db.insertInto('rate_limits').values([{ key: 'a', window_started: new Date(), count: 1 }, { key: 'b', window_started: new Date(), count: 1 }]).execute();
    const before = queryStats.queries;
    const [first, second, third] = await together(db, [
      db.updateTable('rate_limits').set({ count: 5 }).where('key', '=', 'a'),
      db.updateTable('rate_limits').set({ count: 7 }).where('key', '=', 'b').returning(['key', 'count']),
      db.deleteFrom('rate_limits').where('key', '=', 'nothing').returning('key'),
    ]);
    assert.equal(queryStats.queries - before, 1, 'one statement');
    assert.deepEqual(first, []);
    assert.deepEqual(second, [{ key: 'b', count: 7 }]);
    assert.deepEqual(third, []);
    const rows = await db.selectFrom('rate_limits').select(['key', 'count']).where('key', 'in', ['a', 'b']).orderBy('key').execute();
    assert.deepEqual(rows, [{ key: 'a', count: 5 }, { key: 'b', count: 7 }]);
  });

  it('preparedLookup: built once, each call with its own arguments in their places (one used twice); a constant value in the query is refused', async () => {
    await db.insertInto('rate_limits').values([{ key: 'lookup-a', window_started: new Date(), count: 3 }, { key: 'lookup-b', window_started: new Date(), count: 4 }]).execute();
    let built = 0;
    const lookup = preparedLookup((k, key: string, other: string) => {
      built++;
      return k.selectFrom('rate_limits').select(['key', 'count', sql<string>`${other}::text`.as('other')]).where((eb) => eb.or([eb('key', '=', key), eb('key', '=', sql<string>`${key} || '-never'`)]));
    });
    assert.deepEqual(await lookup(db, 'lookup-a', 'first'), { key: 'lookup-a', count: 3, other: 'first' });
    assert.deepEqual(await lookup(db, 'lookup-b', 'second'), { key: 'lookup-b', count: 4, other: 'second' });
    assert.equal(await lookup(db, 'lookup-none', 'third'), undefined);
    assert.equal(built, 1, 'compiled once');
    const withConstant = preparedLookup((k, key: string) => k.selectFrom('rate_limits').select('key').where('key', '=', key).where('count', '>', 0));
    await assert.rejects(withConstant(db, 'lookup-a'), /not one of its arguments/);
  });

  it('takeInOrder: 50 at once against two limits take exactly the first limit’s allowance; a refusal leaves later limits untouched; the right answer last', async () => {
    const limits = [{ key: 'order-ip', max: 10, seconds: 60 }, { key: 'order-name', max: 100, seconds: 60 }];
    const answers = await Promise.all(Array.from({ length: 50 }, () => takeInOrder(db, limits)));
    assert.equal(answers.filter((a) => a.allowed).length, 10);
    for (const a of answers) if (!a.allowed) {
      assert.equal(a.index, 0);
      assert.ok(a.retryAt.getTime() > Date.now());
    }
    const counts = Object.fromEntries((await db.selectFrom('rate_limits').select(['key', 'count']).where('key', 'like', 'order-%').execute()).map((r) => [r.key, r.count]));
    assert.deepEqual(counts, { 'order-ip': 10, 'order-name': 10 }, 'the refused ones took nothing from the second limit');
    // Refused by the second: the first still counts it (as separate takes in that order would).
    const tight = [{ key: 'order-ip-2', max: 100, seconds: 60 }, { key: 'order-name', max: 10, seconds: 60 }];
    const refused = await takeInOrder(db, tight);
    assert.equal(refused.allowed, false);
    assert.equal(!refused.allowed && refused.index, 1);
    assert.equal((await db.selectFrom('rate_limits').select('count').where('key', '=', 'order-ip-2').executeTakeFirstOrThrow()).count, 1);
    // The right answer last: a new window allows again.
    await db.updateTable('rate_limits').set({ window_started: new Date(Date.now() - 120_000) }).where('key', 'like', 'order-%').execute();
    assert.deepEqual(await takeInOrder(db, limits), { allowed: true });
  });

  it('token lookups of one value as several models in one request (introspection) share one query; other requests ask again', async () => {
    const access = new KyselyAdapter(db, 'AccessToken', KEYS);
    const credentials = new KyselyAdapter(db, 'ClientCredentials', KEYS);
    await credentials.upsert('cc-token-1', { jti: 'cc-token-1', kind: 'ClientCredentials', clientId: 'c' } as never, 300);
    const request = {};
    let before = queryStats.queries;
    const [asAccess, asCredentials] = await requestContext.run(request, () => Promise.all([access.find('cc-token-1'), credentials.find('cc-token-1')]));
    assert.equal(queryStats.queries - before, 1, 'one query for both models');
    assert.equal(asAccess, undefined);
    assert.equal(asCredentials?.jti, 'cc-token-1');
    before = queryStats.queries;
    assert.equal(await requestContext.run(request, () => access.find('cc-token-1')), undefined, 'later lookups query again');
    assert.equal(queryStats.queries - before, 1);
    // Two requests at once each read what is stored when they ask: nothing is shared between them.
    before = queryStats.queries;
    await Promise.all([requestContext.run({}, () => access.find('cc-token-1')), requestContext.run({}, () => access.find('cc-token-1'))]);
    assert.equal(queryStats.queries - before, 2, 'one query per request');
    // Outside a request (the CLI, jobs) each lookup is its own query.
    before = queryStats.queries;
    await Promise.all([access.find('cc-token-1'), credentials.find('cc-token-1')]);
    assert.equal(queryStats.queries - before, 2);
  });
});
