import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import { TEST_SECRET } from './support/tessera.js';
import { AccessDenied, perform, ServiceError, type ServiceContext } from '../src/admin/service.js';
import {
  addMemberOp, createGroupOp, createUserOp, listGroupsOp, removeGroupOp, removeMemberOp, removeUserOp, resetMfaOp, setStatusOp, showUserOp,
  unlockUserOp, updateUserOp,
} from '../src/admin/users.js';
import { listAuditOp } from '../src/admin/audit-log.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { generate } from 'otplib';

describe('admin service layer', () => {
  let testDb: TestDatabase;
  let admin: ServiceContext;
  let auditor: ServiceContext;

  before(async () => {
    testDb = await createTestDatabase();
    const db = testDb.handle.db;
    await migrateToLatest(db);
    const box = new SecretBox(TEST_SECRET);
    const audit = createAudit(db, createLogger('silent'));
    admin = { db, box, audit, mode: 'dev', actor: { label: 'admin:root', role: 'admin' } };
    auditor = { ...admin, actor: { label: 'admin:ann', role: 'auditor' } };
  });
  after(async () => {
    await admin.audit.flush();
    await testDb.drop();
  });

  const events = async (type: string) => {
    await admin.audit.flush();
    return admin.db.selectFrom('audit_events').selectAll().where('type', '=', type).orderBy('id').execute();
  };

  it('a change is audited once, with the acting administrator; an auditor may read but every change is refused', async () => {
    const user = await perform(admin, createUserOp, { username: 'hana', password: 'hana-password-1', email: 'hana@example.test', emailVerified: true });
    const created = await events('user.created');
    assert.equal(created.length, 1);
    assert.equal(created[0]!.actor, 'admin:root');
    assert.equal(created[0]!.subject, user.id);
    assert.ok(!JSON.stringify(created).includes('hana-password-1'), 'no password in the audit log');
    assert.equal((await perform(auditor, showUserOp, { username: 'hana' })).user.id, user.id, 'an auditor reads');
    for (const [op, input] of [
      [setStatusOp, { username: 'hana', status: 'disabled' }],
      [unlockUserOp, { username: 'hana' }],
      [resetMfaOp, { username: 'hana' }],
      [removeUserOp, { username: 'hana' }],
      [updateUserOp, { username: 'hana', givenName: 'H' }],
      [createGroupOp, { name: 'nope' }],
    ] as const) {
      await assert.rejects(perform(auditor, op as never, input as never), AccessDenied);
    }
    assert.equal((await perform(admin, showUserOp, { username: 'hana' })).user.status, 'active', 'nothing changed');
  });

  it('user set: a new address is unverified unless said so; nothing to change records nothing; field errors name the field', async () => {
    await perform(admin, createUserOp, { username: 'ivo', password: 'ivo-password-1', email: 'ivo@example.test', emailVerified: true });
    let user = await perform(admin, updateUserOp, { username: 'ivo', email: 'ivo@new.example.test' });
    assert.equal(user.email_verified, false);
    user = await perform(admin, updateUserOp, { username: 'ivo', phone: '+14155550111', phoneVerified: true, givenName: 'Ivo' });
    assert.equal(user.phone_verified, true);
    assert.equal(user.given_name, 'Ivo');
    const before = (await events('user.updated')).length;
    await perform(admin, updateUserOp, { username: 'ivo', givenName: 'Ivo' });
    assert.equal((await events('user.updated')).length, before, 'no change, no record');
    await assert.rejects(perform(admin, updateUserOp, { username: 'ivo', phone: '12345' }), (e: ServiceError) => e.field === 'phone');
    await assert.rejects(perform(admin, updateUserOp, { username: 'ivo', email: '', emailVerified: true }), (e: ServiceError) => e.field === 'emailVerified');
    const last = (await events('user.updated')).at(-1)!;
    assert.deepEqual(last.details, { username: 'ivo', phone: '+14155550111', phone_verified: true, given_name: 'Ivo' });
  });

  it('unlock, reset MFA and remove', async () => {
    const user = await perform(admin, createUserOp, { username: 'jo', password: 'jo-password-1' });
    await admin.db.updateTable('users').set({ failed_logins: 5, locked_until: new Date(Date.now() + 60_000) }).where('id', '=', user.id).execute();
    assert.equal((await perform(admin, showUserOp, { username: 'jo' })).locked, true);
    await perform(admin, unlockUserOp, { username: 'jo' });
    assert.equal((await perform(admin, showUserOp, { username: 'jo' })).locked, false);
    const enrolment = await beginEnrolment(admin.db, admin.box, user, 'Tessera', 'svc-test');
    await confirmEnrolment(admin.db, admin.box, { driftStepsBefore: 1, driftStepsAfter: 1 }, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret }));
    assert.equal((await perform(admin, showUserOp, { username: 'jo' })).authenticators.length, 1);
    assert.deepEqual(await perform(admin, resetMfaOp, { username: 'jo' }), { authenticators: 1, passkeys: 0, recoveryCodes: 0 });
    assert.equal((await perform(admin, showUserOp, { username: 'jo' })).authenticators.length, 0);
    await perform(admin, createGroupOp, { name: 'crew' });
    await perform(admin, addMemberOp, { group: 'crew', username: 'jo' });
    await perform(admin, removeUserOp, { username: 'jo' });
    await assert.rejects(perform(admin, showUserOp, { username: 'jo' }), /no user "jo"/);
    assert.equal((await perform(admin, listGroupsOp, {})).find((g) => g.name === 'crew')?.members, 0);
    const removed = await events('user.removed');
    assert.equal(removed.at(-1)!.subject, user.id, 'the history keeps who it was');
  });

  it('groups: members removed, a group removed with its policies; the built-in admins and auditors stay', async () => {
    const groups = await perform(admin, listGroupsOp, {});
    assert.deepEqual(groups.filter((g) => g.builtin).map((g) => g.name), ['admins', 'auditors']);
    await perform(admin, createUserOp, { username: 'kai', password: 'kai-password-1' });
    await perform(admin, createGroupOp, { name: 'temps' });
    await perform(admin, addMemberOp, { group: 'temps', username: 'kai' });
    await perform(admin, removeMemberOp, { group: 'temps', username: 'kai' });
    await assert.rejects(perform(admin, removeMemberOp, { group: 'temps', username: 'kai' }), /not a member/);
    await perform(admin, removeGroupOp, { name: 'temps' });
    await assert.rejects(perform(admin, removeGroupOp, { name: 'admins' }), /built in/);
  });

  it('the audit log, newest first, filtered by user, a part of the type, time and page', async () => {
    await perform(admin, createUserOp, { username: 'lea', password: 'lea-password-1' });
    await perform(admin, setStatusOp, { username: 'lea', status: 'disabled' });
    await perform(admin, setStatusOp, { username: 'lea', status: 'active' });
    await admin.audit.flush();
    const lea = await perform(auditor, listAuditOp, { user: 'lea' });
    assert.deepEqual(lea.map((e) => e.type), ['user.enabled', 'user.disabled', 'user.created']);
    assert.equal(lea[0]!.subjectName, 'lea');
    assert.deepEqual((await perform(auditor, listAuditOp, { user: 'lea', type: 'abled' })).map((e) => e.type), ['user.enabled', 'user.disabled']);
    const page = await perform(auditor, listAuditOp, { user: 'lea', limit: 1, before: lea[0]!.id });
    assert.deepEqual(page.map((e) => e.type), ['user.disabled']);
    assert.equal((await perform(auditor, listAuditOp, { since: new Date(Date.now() + 60_000).toISOString() })).length, 0);
    await assert.rejects(perform(auditor, listAuditOp, { user: 'nobody' }), (e: ServiceError) => e.field === 'user');
    await assert.rejects(perform(auditor, listAuditOp, { since: 'yesterday' }), (e: ServiceError) => e.field === 'since');
    await assert.rejects(perform(auditor, listAuditOp, { limit: 5000 }), (e: ServiceError) => e.field === 'limit');
  });
});
