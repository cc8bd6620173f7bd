import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { ClientAdapter, KyselyAdapter, purgeExpired, storageKeys, storedId, upgradeStoredRecords } from '../src/oidc/adapter.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import { createClient } from '../src/clients/clients.js';
import { RegisteredClients } from '../src/clients/registered.js';
import { openDatabase, type Db } from '../src/db/index.js';

// Every model oidc-provider persists through an adapter.
const MODELS = [
  'Session', 'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'ClientCredentials',
  'Interaction', 'ReplayDetection', 'PushedAuthorizationRequest', 'Grant', 'BackchannelAuthenticationRequest',
];
const KEYS = storageKeys(new SecretBox('adapter-test-secret-0123456789-abcdefghij'));
const GRANT_BOUND = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest'];

// One database for the file: the suites below touch different tables and rows.
describe('storage', () => {
  let testDb: TestDatabase;
  let db: Db;
  before(async () => {
    testDb = await createTestDatabase();
    db = testDb.handle.db;
    await migrateToLatest(db);
  });
  after(async () => testDb.drop());

  describe('Kysely adapter for oidc-provider', () => {
    async function expire(model: string, id: string) {
      await db.updateTable('oidc_models').set({ expires_at: sql<Date>`now() - interval '1 second'` as never }).where('model', '=', model).where('id', '=', storedId(KEYS.idKey, id)).execute();
    }

    for (const model of MODELS) {
      it(`${model}: upsert, find, update, consume, expire, destroy`, async () => {
        const adapter = new KyselyAdapter(db, model, KEYS);
        const id = `${model}-1`;
        assert.equal(await adapter.find(id), undefined);
        await adapter.upsert(id, { jti: id, kind: model, grantId: 'g-1', exp: 1 }, 60);
        assert.deepEqual(await adapter.find(id), { jti: id, kind: model, grantId: 'g-1', exp: 1 });
        await adapter.upsert(id, { jti: id, kind: model, grantId: 'g-1', scope: 'openid' }, 60);
        assert.equal((await adapter.find(id))?.scope, 'openid', 'upsert replaces the payload');
        const other = new KyselyAdapter(db, model === 'Session' ? 'Grant' : 'Session', KEYS);
        assert.equal(await other.find(id), undefined, 'models do not see each other');

        await adapter.consume(id);
        // A used refresh token counts as used once its successor exists (see the test below).
        if (model === 'RefreshToken') await adapter.upsert(`${id}-next`, { jti: `${id}-next`, grantId: 'g-1', iat: Math.floor(Date.now() / 1000) + 1 }, 60);
        const consumed = await adapter.find(id);
        assert.ok(typeof consumed?.consumed === 'number' && consumed.consumed > 0, 'consume marks the payload');

        await expire(model, id);
        assert.equal(await adapter.find(id), undefined, 'an expired record is not found');
        await adapter.upsert(id, { jti: id }, 60);
        await adapter.destroy(id);
        assert.equal(await adapter.find(id), undefined);
      });
    }

    it('a record without expiry lives until destroyed', async () => {
      const adapter = new KyselyAdapter(db, 'Grant', KEYS);
      await adapter.upsert('forever', { jti: 'forever' });
      assert.ok(await adapter.find('forever'));
    });

    it('findByUid finds sessions; findByUserCode finds device codes; both honour expiry', async () => {
      const sessions = new KyselyAdapter(db, 'Session', KEYS);
      await sessions.upsert('s-1', { uid: 'uid-1', accountId: 'a' }, 60);
      assert.equal((await sessions.findByUid('uid-1'))?.accountId, 'a');
      assert.equal(await sessions.findByUid('nope'), undefined);
      await expire('Session', 's-1');
      assert.equal(await sessions.findByUid('uid-1'), undefined);

      const devices = new KyselyAdapter(db, 'DeviceCode', KEYS);
      await devices.upsert('d-1', { userCode: 'ABCD-EFGH', grantId: 'g-d' }, 60);
      assert.equal((await devices.findByUserCode('ABCD-EFGH'))?.grantId, 'g-d');
      assert.equal(await devices.findByUserCode('ZZZZ-ZZZZ'), undefined);
    });

    it('revokeByGrantId removes every token of that grant and nothing else', async () => {
      for (const model of GRANT_BOUND) {
        await new KyselyAdapter(db, model, KEYS).upsert(`${model}-a`, { grantId: 'grant-a' }, 60);
        await new KyselyAdapter(db, model, KEYS).upsert(`${model}-b`, { grantId: 'grant-b' }, 60);
      }
      await new KyselyAdapter(db, 'AccessToken', KEYS).revokeByGrantId('grant-a');
      for (const model of GRANT_BOUND) {
        assert.equal(await new KyselyAdapter(db, model, KEYS).find(`${model}-a`), undefined, `${model} of grant-a revoked`);
        assert.ok(await new KyselyAdapter(db, model, KEYS).find(`${model}-b`), `${model} of grant-b kept`);
      }
    });

    it('purgeExpired deletes expired rows only', async () => {
      const adapter = new KyselyAdapter(db, 'AccessToken', KEYS);
      await adapter.upsert('old', { jti: 'old' }, 60);
      await adapter.upsert('new', { jti: 'new' }, 60);
      await expire('AccessToken', 'old');
      const purged = await purgeExpired(db);
      assert.ok(purged >= 1);
      const left = await db.selectFrom('oidc_models').select('id').where('model', '=', 'AccessToken').where('id', 'in', [storedId(KEYS.idKey, 'old'), storedId(KEYS.idKey, 'new')]).execute();
      assert.deepEqual(left.map((r) => r.id), [storedId(KEYS.idKey, 'new')]);
    });

    it('stores no usable credential: ids, uids, user codes and grant ids hashed, jti and session cookies sealed', async () => {
      const secret = 'access-token-value-0123456789abcdefghijklmno';
      await new KyselyAdapter(db, 'AccessToken', KEYS).upsert(secret, { jti: secret, grantId: 'grant-secret-value', kind: 'AccessToken' }, 60);
      await new KyselyAdapter(db, 'Interaction', KEYS).upsert('interaction-id-value-0123', { jti: 'interaction-id-value-0123', uid: 'interaction-uid-0123', session: { uid: 'session-uid', cookie: 'session-cookie-value-0123', accountId: 'a' } }, 60);
      const dump = JSON.stringify(await db.selectFrom('oidc_models').selectAll().execute());
      for (const value of [secret, 'interaction-id-value-0123', 'session-cookie-value-0123']) assert.ok(!dump.includes(value), `${value} is not in the table`);
      // And they are found again by their values.
      assert.equal((await new KyselyAdapter(db, 'AccessToken', KEYS).find(secret))?.jti, secret);
      const interaction = await new KyselyAdapter(db, 'Interaction', KEYS).findByUid('interaction-uid-0123');
      assert.equal((interaction as { session: { cookie: string } }).session.cookie, 'session-cookie-value-0123');
      // Another TESSERA_SECRET finds nothing.
      const other = storageKeys(new SecretBox('another-secret-0123456789-abcdefghijklmnop'));
      assert.equal(await new KyselyAdapter(db, 'AccessToken', other).find(secret), undefined);
    });

    async function grantWithToken(name: string): Promise<void> {
      await new KyselyAdapter(db, 'Grant', KEYS).upsert(name, { jti: name, accountId: 'a', clientId: 'c' } as never, 600);
      await new KyselyAdapter(db, 'RefreshToken', KEYS).upsert(`${name}-rt0`, { jti: `${name}-rt0`, grantId: name }, 600);
    }
    const rotation = (adapter: KyselyAdapter, grant: string, used: string, next: string) =>
      adapter.rotate(`${grant}-${used}`, `${grant}-${next}`, { jti: `${grant}-${next}`, grantId: grant }, 600);
    async function liveTokens(grant: string): Promise<number> {
      const rows = await db.selectFrom('oidc_models').select('id').where('grant_id', '=', storedId(KEYS.idKey, grant)).where('model', '=', 'RefreshToken').where('consumed_at', 'is', null).execute();
      return rows.length;
    }
    async function grantStored(grant: string): Promise<boolean> {
      return Boolean(await new KyselyAdapter(db, 'Grant', KEYS).find(grant));
    }

    it('rotation without a reuse window: a token rotates once; presented again, its grant and every token of it go', async () => {
      const rts = new KyselyAdapter(db, 'RefreshToken', KEYS, 0);
      await grantWithToken('strict');
      assert.equal(await rotation(rts, 'strict', 'rt0', 'rt1'), 'rotated');
      assert.ok((await rts.find('strict-rt0'))?.consumed, 'the used token says so');
      assert.equal((await rts.find('strict-rt1'))?.consumed, undefined);
      assert.equal(await rotation(rts, 'strict', 'rt0', 'rt2'), 'reused');
      assert.equal(await rts.find('strict-rt1'), undefined, 'the successor went with the grant');
      assert.equal(await grantStored('strict'), false, 'the grant itself is deleted');
      assert.equal(await rotation(rts, 'strict', 'rt1', 'rt3'), 'gone');
      assert.equal(await rotation(rts, 'strict', 'no-such-token', 'rt4'), 'gone');
    });

    it('50 rotations of one token at once, no window: one rotates, the grant is revoked, nothing else is stored', async () => {
      const rts = new KyselyAdapter(db, 'RefreshToken', KEYS, 0);
      await grantWithToken('burst');
      await grantWithToken('bystander');
      const outcomes = await Promise.all(Array.from({ length: 50 }, (_, i) => rotation(rts, 'burst', 'rt0', `n${i}`)));
      assert.equal(outcomes.filter((o) => o === 'rotated').length, 1, outcomes.join());
      assert.equal(outcomes.filter((o) => o === 'reused').length, 1, outcomes.join());
      assert.equal(outcomes.filter((o) => o === 'gone').length, 48, outcomes.join());
      assert.equal(await grantStored('burst'), false);
      const left = await db.selectFrom('oidc_models').select('id').where('grant_id', '=', storedId(KEYS.idKey, 'burst')).execute();
      assert.equal(left.length, 0, 'no token of the revoked grant is left');
      // The right answer last: another grant rotates as ever.
      assert.equal(await rotation(rts, 'bystander', 'rt0', 'rt1'), 'rotated');
    });

    it('within the reuse window a retry replaces the earlier successor, which then counts as reuse; a used successor makes the retry reuse', async () => {
      const rts = new KyselyAdapter(db, 'RefreshToken', KEYS, 60);
      await grantWithToken('window');
      assert.equal(await rotation(rts, 'window', 'rt0', 'rt1'), 'rotated');
      assert.equal(await rotation(rts, 'window', 'rt0', 'rt2'), 'rotated', 'the answer was lost: the retry rotates');
      assert.equal(await liveTokens('window'), 1, 'one live successor');
      assert.equal(await rotation(rts, 'window', 'rt2', 'rt3'), 'rotated');
      assert.equal(await rotation(rts, 'window', 'rt1', 'rt4'), 'reused', 'the replaced successor presented: a second holder');
      assert.equal(await grantStored('window'), false);

      await grantWithToken('window2');
      assert.equal(await rotation(rts, 'window2', 'rt0', 'rt1'), 'rotated');
      assert.equal(await rotation(rts, 'window2', 'rt1', 'rt2'), 'rotated');
      assert.equal(await rotation(rts, 'window2', 'rt0', 'rt3'), 'reused', 'its successor was used: the answer was not lost');
      assert.equal(await grantStored('window2'), false);
    });

    it('50 rotations of one token at once within the reuse window: each answer replaces the one before, one chain lives on', async () => {
      const rts = new KyselyAdapter(db, 'RefreshToken', KEYS, 60);
      await grantWithToken('window-burst');
      const outcomes = await Promise.all(Array.from({ length: 50 }, (_, i) => rotation(rts, 'window-burst', 'rt0', `n${i}`)));
      assert.deepEqual(new Set(outcomes), new Set(['rotated']));
      assert.equal(await liveTokens('window-burst'), 1, 'one live successor');
      const live = await db.selectFrom('oidc_models').select('id').where('model', '=', 'RefreshToken').where('id', '=', (await db.selectFrom('oidc_models').select('successor').where('id', '=', storedId(KEYS.idKey, 'window-burst-rt0')).executeTakeFirstOrThrow()).successor!).where('consumed_at', 'is', null).execute();
      assert.equal(live.length, 1, 'the live one is the successor the used token names');
    });

    it('upgrades rows stored in the clear by an earlier version, once', async () => {
      await db.insertInto('oidc_models').values({ model: 'RefreshToken', id: 'plain-refresh-token-0123', payload: JSON.stringify({ jti: 'plain-refresh-token-0123', grantId: 'plain-grant' }), grant_id: 'plain-grant', uid: null, user_code: null, expires_at: new Date(Date.now() + 60_000) }).execute();
      assert.ok((await upgradeStoredRecords(db, KEYS)) >= 1);
      assert.equal(await upgradeStoredRecords(db, KEYS), 0, 'nothing left to upgrade');
      const found = await new KyselyAdapter(db, 'RefreshToken', KEYS).find('plain-refresh-token-0123');
      assert.equal(found?.jti, 'plain-refresh-token-0123');
      assert.equal(found?.grantId, 'plain-grant');
      await new KyselyAdapter(db, 'RefreshToken', KEYS).revokeByGrantId('plain-grant');
      assert.equal(await new KyselyAdapter(db, 'RefreshToken', KEYS).find('plain-refresh-token-0123'), undefined, 'its grant id was hashed too');
    });

    it('clients come from the clients table, with their secret opened only when loaded', async () => {
      const box = new SecretBox('adapter-test-secret-0123456789-abcdef');
      const { secret } = await createClient(db, box, { clientId: 'svc', grantTypes: ['client_credentials'] });
      const stored = await db.selectFrom('clients').select('metadata').where('client_id', '=', 'svc').executeTakeFirstOrThrow();
      assert.ok(!JSON.stringify(stored.metadata).includes(secret!), 'the secret is not stored in clear');
      const adapter = new ClientAdapter(new RegisteredClients(db, box, 0));
      const found = await adapter.find('svc');
      assert.equal(found?.client_secret, secret);
      assert.equal(found?.client_id, 'svc');
      assert.equal(await adapter.find('unknown'), undefined);
      assert.equal(await adapter.find('x'.repeat(5000)), undefined);
    });
  });

  describe('machine access tokens', () => {
    it('are stored committed asynchronously, and the connection that stored one keeps its own durability', async () => {
      const one = testDb.url ? await openDatabase({ databaseUrl: testDb.url, dataDir: null, poolSize: 1 }) : testDb.handle;
      try {
        const tokens = new KyselyAdapter(one.db, 'ClientCredentials', KEYS);
        await tokens.upsert('machine-token-1', { jti: 'machine-token-1', clientId: 'svc' }, 60);
        assert.equal((await tokens.find('machine-token-1'))?.clientId, 'svc');
        const setting = await sql<{ value: string }>`select current_setting('synchronous_commit') as value`.execute(one.db);
        assert.equal(setting.rows[0]!.value, 'on', 'the next statement on that connection commits durably again');
      } finally {
        if (one !== testDb.handle) await one.close();
      }
    });
  });

  describe('audit log writer', () => {
    it('writes events recorded together in one batch, and a bad event does not cost the others', async () => {
      const { createAudit } = await import('../src/audit/audit.js');
      const { createLogger } = await import('../src/log.js');
      const audit = createAudit(db, createLogger('silent'));
      await Promise.all([
        audit.record({ type: 'login.success', subject: null, details: { n: 1 } }),
        audit.record({ type: 'login.failure', actor: 'x', details: { bad: 'nul \u0000 in jsonb' } }),
        audit.record({ type: 'logout', details: { n: 3 } }),
      ]);
      const rows = await db.selectFrom('audit_events').select('type').orderBy('id').execute();
      assert.deepEqual(rows.map((r) => r.type), ['login.success', 'logout']);
    });

    it('gathers events nothing waits for into few writes, and an event a request waits for is written at once with them', async () => {
      const { createAudit } = await import('../src/audit/audit.js');
      const { createLogger } = await import('../src/log.js');
      const audit = createAudit(db, createLogger('silent'));
      // 50 tokens issued a millisecond or more apart: one write each without gathering.
      for (let n = 0; n < 50; n++) {
        audit.note({ type: 'token.issued', clientId: 'burst', details: { n } });
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      // Waited for: written without waiting out the window, and the events noted before it are stored by then.
      await audit.record({ type: 'login.success', clientId: 'burst' });
      const stored = await sql<{ events: string; writes: string }>`select count(*) as events, count(distinct xmin::text) as writes from audit_events where client_id = 'burst'`.execute(db);
      assert.equal(Number(stored.rows[0]!.events), 51);
      // Rows inserted by one statement share its transaction id.
      assert.ok(Number(stored.rows[0]!.writes) <= 8, `${stored.rows[0]!.writes} writes for 51 events`);

      audit.note({ type: 'token.revoked', clientId: 'burst-flush' });
      audit.note({ type: 'token.revoked', clientId: 'burst-flush' });
      await audit.flush();
      assert.equal((await db.selectFrom('audit_events').select('id').where('client_id', '=', 'burst-flush').execute()).length, 2, 'flush writes what was gathering');
    });
  });

  describe('registered clients', () => {
    it('are kept for the configured time, then read again', async () => {
      const box = new SecretBox('registered-clients-test-secret-0123456789');
      await createClient(db, box, { clientId: 'cached', public: true, redirectUris: ['https://x.example/cb'] });
      const clients = new RegisteredClients(db, box, 200);
      assert.equal((await clients.get('cached'))?.mfaRequired, false);
      await db.updateTable('clients').set({ mfa_required: true }).where('client_id', '=', 'cached').execute();
      assert.equal((await clients.get('cached'))?.mfaRequired, false, 'still the kept copy');
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await clients.get('cached'))?.mfaRequired, true, 'read again after the time');
      assert.equal(await clients.get('nobody'), undefined);
    });
  });
});
