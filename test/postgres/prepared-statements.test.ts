import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { sql } from 'kysely';
import { openDatabase, type DatabaseHandle } from '../../src/db/index.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { KyselyAdapter, storageKeys } from '../../src/oidc/adapter.js';
import { SecretBox } from '../../src/crypto/secret-box.js';

const KEYS = storageKeys(new SecretBox('prepared-test-secret-0123456789-abcdefgh'));
import { createUser, findUserById, findUserByUsername } from '../../src/directory/users.js';
import { userMfaFacts } from '../../src/policy/policies.js';

const serverUrl = process.env.DATABASE_URL!;

describe('hot queries are named prepared statements on PostgreSQL', () => {
  const name = `tessera_prep_${process.pid}_${randomBytes(4).toString('hex')}`;
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;

  before(async () => {
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
  });
  after(async () => {
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  });

  // One connection, so the statements it prepared are visible in its own session.
  async function preparedAfterTraffic(handle: DatabaseHandle): Promise<string[]> {
    const { db } = handle;
    await migrateToLatest(db);
    const adapter = new KyselyAdapter(db, 'AccessToken', KEYS);
    await adapter.upsert('at-1', { jti: 'at-1', kind: 'AccessToken', grantId: 'g-1' } as never, 60);
    assert.equal((await adapter.find('at-1'))?.jti, 'at-1');
    assert.equal((await adapter.find('at-1'))?.jti, 'at-1', 'a second run binds the statement prepared by the first');
    await adapter.consume('at-1');
    assert.ok((await adapter.find('at-1'))?.consumed);
    const user = await createUser(db, { username: `u${randomBytes(3).toString('hex')}`, password: 'a-long-password-1' });
    assert.equal((await findUserById(db, user.id))?.id, user.id);
    assert.equal((await findUserByUsername(db, user.username.toUpperCase()))?.id, user.id);
    assert.deepEqual(await userMfaFacts(db, user.id), { hasAuthenticator: false, hasPasskey: false, hasRecoveryCodes: false, shared: false, policies: [] });
    await adapter.revokeByGrantId('g-1');
    assert.equal(await adapter.find('at-1'), undefined);
    const rows = await sql<{ name: string; statement: string }>`select name, statement from pg_prepared_statements`.execute(db);
    return rows.rows.map((r) => `${r.name} ${r.statement.replace(/\s+/g, ' ')}`);
  }

  it('prepares the adapter statements and the user lookup once per connection', async () => {
    const handle = await openDatabase({ databaseUrl: url.href, dataDir: null, poolSize: 1 });
    try {
      const statements = await preparedAfterTraffic(handle);
      assert.ok(statements.every((s) => s.startsWith('tessera_')), statements.join('\n'));
      for (const fragment of ['from oidc_models t left join oidc_models g on g.model = \'Grant\' and g.id = t.grant_id where t.id = $1 and t.model in ($2)', 'insert into oidc_models', 'update oidc_models set consumed_at', 'delete from oidc_models where grant_id', 'from "users" where "id" = $1', 'where lower(username) = lower($1)', 'from access_policies p']) {
        assert.ok(statements.some((s) => s.includes(fragment)), `prepared: ${fragment}`);
      }
    } finally {
      await handle.close();
    }
  });

  it('prepares nothing when turned off (PgBouncer in transaction mode)', async () => {
    const handle = await openDatabase({ databaseUrl: url.href, dataDir: null, poolSize: 1, preparedStatements: false });
    try {
      assert.deepEqual(await preparedAfterTraffic(handle), []);
    } finally {
      await handle.close();
    }
  });
});
