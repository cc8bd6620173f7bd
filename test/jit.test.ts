import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { addGroupMember, createGroup, removeGroupMember } from '../src/directory/groups.js';
import { disableSharedAccount, enableSharedAccount, listReservations, listSharedAccounts, release, reservableBy, reserve } from '../src/jit/shared-accounts.js';

/** Just-in-time shared accounts: who may reserve, one holder at a time, expiry, release. */
describe('just-in-time shared accounts: reservations', () => {
  let testDb: TestDatabase;
  const members: string[] = [];
  let shared: string;

  before(async () => {
    testDb = await createTestDatabase();
    const db = testDb.handle.db;
    await migrateToLatest(db);
    const { account, createdUser, createdGroup } = await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin' });
    assert.deepEqual([createdUser, createdGroup, account.minutes, account.holder], [true, true, 5, null]);
    assert.equal((await findUserByUsername(db, 'acmeadmin'))!.password_hash, null, 'the member’s own code signs it in');
    shared = account.userId;
    for (let i = 0; i < 20; i++) {
      const user = await createUser(db, { username: `member${i}`, password: `member${i}-password` });
      await addGroupMember(db, 'JIT_acmeadmin', user.username);
      members.push(user.id);
    }
    await createUser(db, { username: 'outsider', password: 'outsider-password' });
  });
  after(async () => {
    await testDb?.drop();
  });

  it('enabling again keeps the account and group and changes the time; bad input is refused', async () => {
    const db = testDb.handle.db;
    const again = await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin', minutes: 10 });
    assert.deepEqual([again.createdUser, again.createdGroup, again.account.minutes], [false, false, 10]);
    await assert.rejects(enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin', minutes: 0 }), /1 to 1440 minutes/);
    await assert.rejects(enableSharedAccount(db, { username: 'bad name!', group: 'g' }), /invalid username/);
    // A shared account is not a member of its own group: neither added later, nor shared with a group it is in.
    await assert.rejects(addGroupMember(db, 'JIT_acmeadmin', 'acmeadmin'), /cannot be a member of it/);
    await createGroup(db, 'ops');
    await addGroupMember(db, 'ops', 'acmeadmin');
    await assert.rejects(enableSharedAccount(db, { username: 'acmeadmin', group: 'ops' }), /cannot reserve itself/);
    await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin', minutes: 5 });
  });

  it('20 members reserving at the same moment: exactly one holds it; the others hear who', async () => {
    const db = testDb.handle.db;
    const outcomes = await Promise.allSettled(members.map((memberId) => reserve(db, { sharedUserId: shared, memberId, ip: '127.0.0.1' })));
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    assert.equal(won.length, 1, 'exactly one holder');
    const holder = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof reserve>>>).value;
    for (const lost of outcomes.filter((o) => o.status === 'rejected')) {
      assert.match(String((lost as PromiseRejectedResult).reason.message), new RegExp(`held by ${holder.member} until \\d\\d:\\d\\d UTC|reserved a moment ago`));
    }
    const live = await db.selectFrom('jit_reservations').select('id').where('shared_user_id', '=', shared).where('status', '=', 'live').execute();
    assert.equal(live.length, 1);
    assert.equal((await listSharedAccounts(db))[0]!.holder?.username, holder.member);
    assert.equal((await reservableBy(db, members[3]!))[0]!.holder?.username, holder.member, 'another member sees who holds it');
  });

  it('a non-member and a forged id are refused alike; an expired reservation frees the account; release and disable end it', async () => {
    const db = testDb.handle.db;
    const outsider = (await findUserByUsername(db, 'outsider'))!;
    await assert.rejects(reserve(db, { sharedUserId: shared, memberId: outsider.id, ip: null }), /you may not reserve this account/);
    await assert.rejects(reserve(db, { sharedUserId: members[0]!, memberId: members[1]!, ip: null }), /you may not reserve this account/);
    assert.deepEqual(await reservableBy(db, outsider.id), []);

    // The time runs out: the next member gets it; the old one reads as expired.
    await sql`update jit_reservations set expires_at = now() - interval '1 second', reserved_at = reserved_at - interval '6 minutes' where status = 'live'`.execute(db);
    assert.equal((await listSharedAccounts(db))[0]!.holder, null, 'free once the time ran out');
    const next = await reserve(db, { sharedUserId: shared, memberId: members[5]!, ip: null });
    const all = await listReservations(db, { sharedUserId: shared });
    assert.deepEqual(all.map((r) => r.status), ['live', 'expired']);
    assert.equal(all[0]!.id, next.id);
    assert.ok(next.expiresAt.getTime() - next.reservedAt.getTime() >= 5 * 60_000 - 1000);

    assert.equal(await release(db, { sharedUserId: shared, memberId: members[6]! }), null, 'only the holder releases');
    assert.deepEqual(await release(db, { sharedUserId: shared, memberId: members[5]! }), { memberId: members[5] });
    await reserve(db, { sharedUserId: shared, memberId: members[7]!, ip: null });
    await disableSharedAccount(db, 'acmeadmin');
    assert.equal((await listReservations(db, { sharedUserId: shared }))[0]!.status, 'released', 'disabling ends the live reservation');
    await assert.rejects(reserve(db, { sharedUserId: shared, memberId: members[7]!, ip: null }), /you may not reserve this account/);
    await assert.rejects(disableSharedAccount(db, 'acmeadmin'), /not a shared account/);
    await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_acmeadmin' });
    await sql`update users set status = 'disabled' where id = ${shared}`.execute(db);
    await assert.rejects(reserve(db, { sharedUserId: shared, memberId: members[7]!, ip: null }), /is disabled/);
  });

  it('a member taken out of the group loses their reservation; sharing with another group ends an outsider’s', async () => {
    const db = testDb.handle.db;
    await sql`update users set status = 'active' where id = ${shared}`.execute(db);
    const held = await reserve(db, { sharedUserId: shared, memberId: members[8]!, ip: null });
    await removeGroupMember(db, 'JIT_acmeadmin', held.member);
    assert.equal((await listReservations(db, { id: held.id }))[0]!.status, 'released');
    const next = await reserve(db, { sharedUserId: shared, memberId: members[9]!, ip: null });
    await createGroup(db, 'JIT_other');
    await addGroupMember(db, 'JIT_other', held.member);
    await enableSharedAccount(db, { username: 'acmeadmin', group: 'JIT_other' });
    assert.equal((await listReservations(db, { id: next.id }))[0]!.status, 'released', 'its holder is not in the new group');
    assert.equal((await reserve(db, { sharedUserId: shared, memberId: members[8]!, ip: null })).member, held.member);
  });
});
