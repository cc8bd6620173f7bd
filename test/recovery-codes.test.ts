import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createUser } from '../src/directory/users.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { resetMfaOp } from '../src/admin/users.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import { TEST_SECRET } from './support/tessera.js';
import {
  generateRecoveryCodes, normaliseRecoveryCode, RECOVERY_CODE_COUNT, recoveryCodeStatus, useRecoveryCode,
} from '../src/factors/recovery-codes.js';

const KEY = new SecretBox(TEST_SECRET).deriveKey('recovery-codes');

/** Recovery codes: a set of ten, stored as keyed hashes, each good once, a new set voiding the old. */
describe('recovery codes', () => {
  let testDb: TestDatabase;
  let userId: string;
  let otherId: string;

  before(async () => {
    testDb = await createTestDatabase();
    await migrateToLatest(testDb.handle.db);
    userId = (await createUser(testDb.handle.db, { username: 'rosa', password: 'rosa-password-1' })).id;
    otherId = (await createUser(testDb.handle.db, { username: 'otto', password: 'otto-password-1' })).id;
  });
  after(async () => {
    await testDb?.drop();
  });

  it('ten distinct codes such as 4f7k-2m9q, only their hashes stored; typed in any case and spacing', async () => {
    const db = testDb.handle.db;
    const codes = await generateRecoveryCodes(db, KEY, userId);
    assert.equal(codes.length, RECOVERY_CODE_COUNT);
    assert.equal(new Set(codes).size, RECOVERY_CODE_COUNT);
    for (const code of codes) assert.match(code, /^[a-z0-9]{4}-[a-z0-9]{4}$/);
    const stored = await db.selectFrom('recovery_codes').select('code_hash').where('user_id', '=', userId).execute();
    assert.equal(stored.length, RECOVERY_CODE_COUNT);
    assert.ok(stored.every((r) => !codes.some((c) => r.code_hash.includes(c) || r.code_hash.includes(c.replace('-', '')))), 'no code in the clear');
    assert.equal(normaliseRecoveryCode(' 4F7K 2m9q '), '4f7k-2m9q');
    assert.equal(normaliseRecoveryCode('4f7k-2m9'), null);
    assert.equal(normaliseRecoveryCode('x'.repeat(5000)), null);
    assert.deepEqual(await useRecoveryCode(db, KEY, userId, codes[0]!.toUpperCase().replace('-', ' ')), { left: 9 });
    assert.equal(await useRecoveryCode(db, KEY, userId, codes[0]!), null, 'each code is good once');
    assert.equal(await useRecoveryCode(db, KEY, otherId, codes[1]!), null, 'another user’s code is no code of theirs');
    assert.equal(await useRecoveryCode(db, KEY, userId, 'not-a-code'), null);
    const status = await recoveryCodeStatus(db, userId);
    assert.deepEqual([status?.total, status?.left], [10, 9]);
  });

  it('20 parallel submissions of one code: exactly one is accepted', async () => {
    const db = testDb.handle.db;
    const codes = await generateRecoveryCodes(db, KEY, userId);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => useRecoveryCode(db, KEY, userId, codes[3]!)));
    assert.equal(outcomes.filter((o) => o !== null).length, 1);
    assert.equal((await recoveryCodeStatus(db, userId))?.left, 9);
  });

  it('a new set voids the old one; an administrator’s MFA reset removes the set', async () => {
    const db = testDb.handle.db;
    const old = await generateRecoveryCodes(db, KEY, userId);
    const fresh = await generateRecoveryCodes(db, KEY, userId);
    assert.equal(await useRecoveryCode(db, KEY, userId, old[0]!), null);
    assert.deepEqual(await useRecoveryCode(db, KEY, userId, fresh[0]!), { left: 9 });
    const admin: ServiceContext = { db, box: new SecretBox(TEST_SECRET), audit: createAudit(db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    assert.deepEqual(await perform(admin, resetMfaOp, { username: 'rosa' }), { authenticators: 0, passkeys: 0, recoveryCodes: 10 });
    assert.equal(await recoveryCodeStatus(db, userId), null);
    assert.equal(await useRecoveryCode(db, KEY, userId, fresh[1]!), null);
    await admin.audit.flush();
    const event = await db.selectFrom('audit_events').select('details').where('type', '=', 'user.mfa_reset').executeTakeFirstOrThrow();
    assert.equal((event.details as { recovery_codes: number }).recovery_codes, 10);
  });
});
