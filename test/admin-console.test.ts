import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor } from './support/agent.js';
import { startSmsFakes, type SmsFakes } from './support/sms-fakes.js';
import { startMailbox, type Mailbox } from './support/smtp.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser } from '../src/directory/users.js';
import { addGroupMember, removeGroupMember } from '../src/directory/groups.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { startAppSession, type SessionTimes } from '../src/web/sessions.js';

/** A console session as the sign-in leaves it: the factor passed at `factorAt`. */
const startConsoleSession = (db: Parameters<typeof startAppSession>[0], userId: string, factorAt: Date, times: SessionTimes) =>
  startAppSession(db, 'admin', userId, times, { authAt: factorAt, factorAt });
import { CONSOLE_CLIENT_ID } from '../src/admin/console/registration.js';
import { AccessDenied, perform, ServiceError, type ServiceContext } from '../src/admin/service.js';
import { removeAuthenticatorOp, searchUsersOp, showGroupOp } from '../src/admin/users.js';
import {
  createClientOp, createPolicyOp, listKeysOp, removeClientOp, rotateClientSecretOp, setSettingsOp, testDeliveryOp, updateClientOp, updatePolicyOp,
} from '../src/admin/system.js';
import { ClientError } from '../src/clients/clients.js';
import { generate } from 'otplib';

describe('admin console: sessions, access and the service operations behind its pages', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let auditor: ServiceContext;
  let sms: SmsFakes;
  let mailbox: Mailbox;
  const times = { idleSeconds: 900, absoluteSeconds: 8 * 3600 };

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    const audit = createAudit(tessera.db, createLogger('silent'));
    admin = { db: tessera.db, box: tessera.box, audit, mode: 'dev', actor: { label: 'admin:root', role: 'admin' } };
    auditor = { ...admin, actor: { label: 'admin:ann', role: 'auditor' } };
    await createUser(tessera.db, { username: 'root', password: 'root-password-1', email: 'root@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'admins', 'root');
    sms = await startSmsFakes();
    mailbox = await startMailbox();
  });
  after(async () => {
    await admin.audit.flush();
    await sms?.close();
    await mailbox?.close();
    await tessera?.stop();
  });

  const events = async (type: string) => {
    await admin.audit.flush();
    await new Promise((r) => setTimeout(r, 50));
    return tessera.db.selectFrom('audit_events').selectAll().where('type', '=', type).orderBy('id').execute();
  };

  /** A browser holding a console session of `username` (as the sign-in would leave it). */
  async function signedIn(username: string, factorAgeSeconds = 0): Promise<Agent> {
    const user = await tessera.db.selectFrom('users').select('id').where('username', '=', username).executeTakeFirstOrThrow();
    const id = await startConsoleSession(tessera.db, user.id, new Date(Date.now() - factorAgeSeconds * 1000), times);
    const agent = new Agent();
    agent.cookies.set('tessera.admin', id);
    return agent;
  }

  it('every change of the console’s operations is refused to an auditor and audited with the administrator', async () => {
    const created = await perform(admin, createClientOp, { clientId: 'ledger', redirectUris: ['https://ledger.example.test/cb'] });
    const changes = [
      [updateClientOp, { clientId: 'ledger', name: 'Ledger', mfaRequired: true }, 'client.updated'],
      [rotateClientSecretOp, { clientId: 'ledger' }, 'client.secret_rotated'],
      [setSettingsOp, { values: { 'mfa.otp.length': 8, 'mfa.appName': 'Acme' } }, 'settings.changed'],
    ] as const;
    for (const [op, input, type] of changes) {
      await assert.rejects(perform(auditor, op as never, input as never), AccessDenied);
      await perform(admin, op as never, input as never);
      const rows = await events(type);
      assert.equal(rows.at(-1)!.actor, 'admin:root', type);
    }
    const updated = (await events('client.updated')).at(-1)!;
    assert.deepEqual(updated.details, { name: 'Ledger', mfaRequired: true });
    const rotated = await perform(admin, rotateClientSecretOp, { clientId: 'ledger' });
    assert.notEqual(rotated, created.secret);
    assert.ok(!JSON.stringify(await events('client.secret_rotated')).includes(rotated), 'no secret in the audit log');
    const settings = await loadSettings(tessera.db, tessera.box);
    assert.equal(settings.mfa.otp.length, 8);
    assert.equal(settings.mfa.appName, 'Acme');
    // All or none: one bad value refuses the whole form and names its field.
    const refused = await perform(admin, setSettingsOp, { values: { 'mfa.otp.length': 6, 'mfa.otp.maxAttempts': 0 } }).catch((e: unknown) => e);
    assert.ok(refused instanceof ServiceError || (refused as Error).constructor.name === 'SettingsError');
    assert.equal((refused as ServiceError).field, 'mfa.otp.maxAttempts');
    assert.equal((await loadSettings(tessera.db, tessera.box)).mfa.otp.length, 8);
    await perform(admin, setSettingsOp, { values: { 'mfa.otp.length': null, 'mfa.appName': null } });
  });

  it('the console’s own client cannot be changed, rotated or removed by anyone', async () => {
    for (const [op, input] of [[removeClientOp, { clientId: CONSOLE_CLIENT_ID }], [updateClientOp, { clientId: CONSOLE_CLIENT_ID, mfaRequired: false }], [rotateClientSecretOp, { clientId: CONSOLE_CLIENT_ID }]] as const) {
      await assert.rejects(perform(admin, op as never, input as never), (e: unknown) => e instanceof ClientError && /registered by Tessera itself/.test(e.message));
    }
  });

  it('policies are edited by the same rules as they are made; an authenticator is removed one at a time', async () => {
    const user = await createUser(tessera.db, { username: 'ivo', password: 'ivo-password-1' });
    await perform(admin, createPolicyOp, { name: 'ivo app', subjectType: 'user', subject: 'ivo', mfa: 'optional' });
    await assert.rejects(perform(admin, updatePolicyOp, { name: 'ivo app', changes: { requireAuthenticatorApp: true } }), (e: unknown) => (e as ServiceError).field === 'requireAuthenticatorApp');
    assert.deepEqual(await perform(admin, updatePolicyOp, { name: 'ivo app', changes: { mfa: 'required', requireAuthenticatorApp: true, priority: 5 } }), { priority: 5, mfa: 'required', requireAuthenticatorApp: true });
    assert.equal((await events('policy.updated')).length, 1);

    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test');
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret }));
    await assert.rejects(perform(admin, removeAuthenticatorOp, { username: 'root', authenticatorId: enrolment.authenticatorId }), /no such authenticator/);
    await assert.rejects(perform(auditor, removeAuthenticatorOp, { username: 'ivo', authenticatorId: enrolment.authenticatorId }), AccessDenied);
    await perform(admin, removeAuthenticatorOp, { username: 'ivo', authenticatorId: enrolment.authenticatorId });
    assert.equal((await tessera.db.selectFrom('authenticators').select('id').where('user_id', '=', user.id).execute()).length, 0);
    assert.equal((await events('user.authenticator_removed')).at(-1)!.subject, user.id);
  });

  it('a test message through each provider shows the server’s answer and whether the gateway’s criteria matched', async () => {
    await perform(admin, setSettingsOp, { values: { 'smtp.host': '127.0.0.1', 'smtp.port': mailbox.port, 'smtp.security': 'none' } });
    const mail = await perform(admin, testDeliveryOp, { provider: 'smtp', to: 'ops@example.test' });
    assert.equal(mail.ok, true);
    assert.match(mail.answer ?? '', /^250/);
    assert.match((await mailbox.next()).text ?? '', /test message/);

    await perform(admin, setSettingsOp, { values: { 'sms_gateway.url': `${sms.url}/gateway`, 'sms_gateway.successCriteria.text': ['queued'], 'sms_gateway.failureCriteria.text': ['REJECTED'] } });
    sms.gatewayAnswer = { status: 200, body: 'OK: queued id=7' };
    const good = await perform(admin, testDeliveryOp, { provider: 'gateway', to: '+15555550123' });
    assert.deepEqual(good, { ok: true, summary: 'the gateway answered and its success criteria matched', answer: 'HTTP 200: OK: queued id=7' });
    sms.gatewayAnswer = { status: 200, body: 'REJECTED: no credit' };
    const bad = await perform(admin, testDeliveryOp, { provider: 'gateway', to: '+15555550123' });
    assert.equal(bad.ok, false);
    assert.match(bad.summary, /failure text "REJECTED"/);
    assert.equal(bad.answer, 'HTTP 200: REJECTED: no credit');

    sms.twilioError = { status: 401, code: 20003, message: 'Authenticate' };
    await perform(admin, setSettingsOp, { values: { 'twilio.accountSid': `AC${'0'.repeat(32)}`, 'twilio.authToken': 'wrong', 'twilio.from': '+15555550000', 'twilio.apiBaseUrl': sms.url } });
    const twilio = await perform(admin, testDeliveryOp, { provider: 'twilio', to: '+15555550123' });
    assert.equal(twilio.ok, false);
    assert.match(twilio.answer ?? '', /HTTP 401, code 20003/);
    sms.twilioError = null;
    await assert.rejects(perform(admin, testDeliveryOp, { provider: 'smtp', to: 'not-an-address' }), (e: unknown) => (e as ServiceError).field === 'to');
    await assert.rejects(perform(auditor, testDeliveryOp, { provider: 'smtp', to: 'ops@example.test' }), AccessDenied);
    assert.equal((await events('delivery.tested')).length, 4);
    await perform(admin, setSettingsOp, { values: { 'smtp.host': null, 'smtp.port': null, 'smtp.security': null } });
  });

  it('search pages users; groups and keys are readable by an auditor', async () => {
    for (let i = 0; i < 30; i++) await createUser(tessera.db, { username: `page${String(i).padStart(2, '0')}`, password: 'page-password-1', email: `p${i}@paging.test` });
    const first = await perform(auditor, searchUsersOp, { query: 'paging.test', page: 1, pageSize: 25 });
    assert.equal(first.users.length, 25);
    assert.equal(first.more, true);
    const second = await perform(auditor, searchUsersOp, { query: 'PAGING', page: 2, pageSize: 25 });
    assert.deepEqual([second.users.length, second.more], [5, false]);
    assert.equal((await perform(auditor, searchUsersOp, { query: '%' })).users.length, 0, 'a % is a character, not a wildcard');
    assert.deepEqual((await perform(auditor, showGroupOp, { name: 'admins' })).members.map((m) => m.username), ['demo-admin', 'root']);
    assert.ok((await perform(auditor, listKeysOp, {})).some((k) => k.status === 'active' && k.alg === 'ES256'));
  });

  it('without a session: pages send the browser to sign in (only to console paths), forms say the session ended', async () => {
    const agent = new Agent();
    const page = await agent.get(`${tessera.issuer}/admin/users?q=a`);
    assert.equal(page.status, 303);
    assert.equal(page.location, `${tessera.issuer}/admin/login?next=${encodeURIComponent('/admin/users?q=a')}`);
    const login = await agent.get(page.location!);
    assert.equal(login.status, 302);
    const auth = new URL(login.location!);
    assert.equal(auth.searchParams.get('client_id'), CONSOLE_CLIENT_ID);
    assert.equal(auth.searchParams.get('code_challenge_method'), 'S256');
    const post = await agent.post(`${tessera.issuer}/admin/users/new`, { username: 'x' });
    assert.equal(post.status, 401);
    assert.match(post.body, /session has ended/);
    for (const evil of ['https://evil.example', '//evil.example', '/admin//evil.example', '/demo']) {
      const start = await agent.get(`${tessera.issuer}/admin/login?next=${encodeURIComponent(evil)}`);
      const cookie = agent.cookies.get('tessera.admin.signin')!;
      assert.equal(JSON.parse(Buffer.from(decodeURIComponent(cookie), 'base64url').toString()).next, '/admin', evil);
      assert.equal(start.status, 302);
    }
    const stray = await new Agent().get(`${tessera.issuer}/admin/callback?code=abc&state=def`);
    assert.equal(stray.status, 400);
    assert.match(stray.body, /not started here or has expired/);
    const denied = await new Agent().get(`${tessera.issuer}/admin/callback?error=access_denied&error_description=${encodeURIComponent('<script>x</script>')}`);
    assert.equal(denied.status, 401);
    assert.ok(!denied.body.includes('<script>x'), 'escaped');
  });

  it('sessions end after the idle time and when the user leaves admins; a form without its CSRF token is refused', async () => {
    const agent = await signedIn('root');
    assert.equal((await agent.get(`${tessera.issuer}/admin/users`)).status, 200);
    const home = await agent.get(`${tessera.issuer}/admin/groups`);
    const form = formFor(home, '/admin/groups');
    const forged = await agent.post(`${tessera.issuer}/admin/groups`, { name: 'forged' });
    assert.equal(forged.status, 403);
    const made = await agent.post(form.action, { ...form.fields, name: 'ops', description: '' });
    assert.equal(made.status, 303);
    assert.equal(made.location, `${tessera.issuer}/admin/groups/ops?done=created`);
    assert.equal((await events('group.created')).at(-1)!.actor, 'admin:root');

    await sql`update app_sessions set last_seen_at = now() - interval '16 minutes'`.execute(tessera.db);
    assert.equal((await agent.get(`${tessera.issuer}/admin/users`)).status, 303, 'idle too long');

    await createUser(tessera.db, { username: 'max', password: 'max-password-1' });
    await addGroupMember(tessera.db, 'admins', 'max');
    const max = await signedIn('max');
    assert.equal((await max.get(`${tessera.issuer}/admin`)).status, 200);
    await removeGroupMember(tessera.db, 'admins', 'max');
    const after = await max.get(`${tessera.issuer}/admin`);
    assert.equal(after.status, 403);
    assert.match(after.body, /not a member of/);
  });

  it('bad input on console pages gets a page, never a 500', async () => {
    const agent = await signedIn('root');
    const cases: [string, number][] = [
      ['/admin/users/nobody', 404],
      ['/admin/users?page=-1&q=' + 'x'.repeat(5000), 200],
      ['/admin/apis/view?id=https%3A%2F%2Fnowhere.example', 404],
      ['/admin/apis/view', 404],
      ['/admin/policies/edit?name=none', 404],
      ['/admin/clients/none', 404],
      ['/admin/groups/none', 404],
      ['/admin/audit?since=yesterday', 400],
      ['/admin/audit?before=abc', 400],
      ['/admin/audit.csv?since=yesterday', 200],
      ['/admin/nothing-here', 404],
    ];
    for (const [path, status] of cases) {
      const response = await agent.get(`${tessera.issuer}${path}`);
      assert.equal(response.status, status, path);
      assert.ok(!/at \w+ \(|node_modules/.test(response.body), `no stack trace on ${path}`);
    }
    const groups = await agent.get(`${tessera.issuer}/admin/groups`);
    const form = formFor(groups, '/admin/groups');
    const long = await agent.post(form.action, { ...form.fields, name: 'g'.repeat(500) });
    assert.equal(long.status, 400);
    assert.match(long.body, /aria-invalid="true"/);
    const big = await agent.request(form.action, { method: 'POST', body: `csrf=${form.fields.csrf}&name=${'a'.repeat(40_000)}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(big.status, 413);
  });
});

describe('every operation of the service layer', () => {
  it('a change refuses an auditor before it reads its input; a read does not', async () => {
    const modules = [await import('../src/admin/users.js'), await import('../src/admin/system.js'), await import('../src/admin/audit-log.js')];
    const ops = modules.flatMap((m) => Object.entries(m)).filter(([name]) => name.endsWith('Op')) as [string, { kind: string }][];
    assert.ok(ops.length >= 40, `found ${ops.length} operations`);
    const auditor = { actor: { label: 'admin:ann', role: 'auditor' } } as ServiceContext;
    for (const [name, op] of ops) {
      if (op.kind !== 'change') continue;
      await assert.rejects(perform(auditor, op as never, {} as never), AccessDenied, name);
    }
    assert.ok(ops.some(([, op]) => op.kind === 'read'));
  });
});

describe('admin console: what an attacker tried', () => {
  let tessera: TestTessera;
  let sms: SmsFakes;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    await createUser(tessera.db, { username: 'root', password: 'root-password-1', email: 'root@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'admins', 'root');
    await createUser(tessera.db, { username: 'eve', password: 'eve-password-1' });
    sms = await startSmsFakes();
  });
  after(async () => {
    await sms?.close();
    await tessera?.stop();
  });

  async function staleAdmin(): Promise<{ agent: Agent; csrf: string }> {
    const user = await tessera.db.selectFrom('users').select('id').where('username', '=', 'root').executeTakeFirstOrThrow();
    const id = await startConsoleSession(tessera.db, user.id, new Date(Date.now() - 3600_000), { idleSeconds: 900, absoluteSeconds: 3600 });
    const agent = new Agent();
    agent.cookies.set('tessera.admin', id);
    const page = await agent.get(`${tessera.issuer}/admin/groups`);
    return { agent, csrf: formFor(page, '/admin/groups').fields.csrf! };
  }

  it('joining admins is sensitive however the group name is padded; so are groups with policies, and removing a group', async () => {
    const { agent, csrf } = await staleAdmin();
    for (const group of ['admins', 'admins ', '\tadmins', 'auditors\u00a0']) {
      const response = await agent.post(`${tessera.issuer}/admin/users/eve/groups/add`, { csrf, group });
      assert.equal(response.location, `${tessera.issuer}/admin/verify`, JSON.stringify(group));
    }
    const admin: ServiceContext = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'admin:root', role: 'admin' } };
    await perform(admin, (await import('../src/admin/users.js')).createGroupOp, { name: 'strict' });
    await perform(admin, createPolicyOp, { name: 'strict policy', subjectType: 'group', subject: 'strict', mfa: 'required' });
    for (const [path, form] of [['/admin/groups/strict/members', { username: 'eve' }], ['/admin/users/eve/groups/remove', { group: 'strict' }], ['/admin/groups/strict/remove', {}]] as const) {
      const response = await agent.post(`${tessera.issuer}${path}`, { csrf, ...form });
      assert.equal(response.location, `${tessera.issuer}/admin/verify`, path);
    }
    const plain = await agent.post(`${tessera.issuer}/admin/groups`, { csrf, name: 'plain' });
    assert.equal(plain.status, 303);
    assert.equal((await agent.post(`${tessera.issuer}/admin/groups/plain/members`, { csrf, username: 'eve' })).status, 303, 'a group without a policy is not sensitive');
    assert.equal(await tessera.db.selectFrom('group_members').innerJoin('groups', 'groups.id', 'group_id').select('name').where('name', 'in', ['admins', 'auditors']).where('user_id', '=', (await tessera.db.selectFrom('users').select('id').where('username', '=', 'eve').executeTakeFirstOrThrow()).id).executeTakeFirst(), undefined);
    await perform(admin, (await import('../src/admin/users.js')).removeGroupOp, { name: 'strict' });
    await admin.audit.flush();
    const removed = await tessera.db.selectFrom('audit_events').select('details').where('type', '=', 'group.removed').executeTakeFirstOrThrow();
    assert.deepEqual(removed.details, { members: 0, policies: ['strict policy'] });
  });

  it('NUL characters, huge ids and impossible dates get a 400 page, not a failed query', async () => {
    const { agent, csrf } = await staleAdmin();
    for (const path of ['/admin/users/%00', '/admin/users?q=%00', '/admin/audit?user=%00', '/admin/audit?before=9999999999999999999', '/admin/audit?since=-271821-04-20T00:00:00Z', '/admin/audit.csv?type=%00']) {
      const response = await agent.get(`${tessera.issuer}${path}`);
      assert.ok([400, 200].includes(response.status) && !(path.includes('%00') && response.status !== 400), `${path}: ${response.status}`);
      if (path.startsWith('/admin/audit?')) assert.equal(response.status, 400, path);
    }
    for (const [path, form] of [['/admin/groups', { name: 'a', description: 'x\u0000y' }], ['/admin/users/new', { username: 'nul\u0000', password: 'long-enough-1' }]] as const) {
      const response = await agent.post(`${tessera.issuer}${path}`, { csrf, ...form });
      assert.equal(response.status, 400, path);
      assert.match(response.body, /cannot store/);
    }
  });

  it('the console client obtains no API tokens; a forged error link cannot put words on the page', async () => {
    const admin: ServiceContext = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'admin:root', role: 'admin' } };
    const { allowApiOp } = await import('../src/admin/system.js');
    await assert.rejects(perform(admin, allowApiOp, { identifier: 'https://payments.demo.tessera', clientId: CONSOLE_CLIENT_ID }), /registered by Tessera itself/);
    const forged = await new Agent().get(`${tessera.issuer}/admin/callback?error=access_denied&error_description=${encodeURIComponent('Call +1 555 0100 to restore access')}`);
    assert.equal(forged.status, 401);
    assert.ok(!forged.body.includes('Call +1 555'));
  });

  it('pointing a delivery at another server forgets its stored secret; every method off is refused', async () => {
    const { agent, csrf } = await staleAdmin();
    await sql`update app_sessions set factor_at = now()`.execute(tessera.db);
    const save = (form: Record<string, string>) => agent.post(`${tessera.issuer}/admin/delivery/sms_gateway`, { csrf, 'sms_gateway.method': 'POST', 'sms_gateway.contentType': 'form', 'sms_gateway.template': 'to={to}&text={message}', 'sms_gateway.timeoutSeconds': '10', ...form });
    assert.equal((await save({ 'sms_gateway.url': `${sms.url}/gateway`, 'sms_gateway.apiKeyHeader': 'x-key', 'sms_gateway.apiKey': 'GATEWAY-KEY-1' })).location, `${tessera.issuer}/admin/delivery?done=saved`);
    assert.equal((await save({ 'sms_gateway.url': `${sms.url}/gateway`, 'sms_gateway.apiKeyHeader': 'x-key' })).location, `${tessera.issuer}/admin/delivery?done=saved`, 'kept when blank');
    assert.equal((await loadSettings(tessera.db, tessera.box)).sms_gateway.apiKey, 'GATEWAY-KEY-1');
    assert.equal((await save({ 'sms_gateway.url': `${sms.url}/elsewhere`, 'sms_gateway.apiKeyHeader': 'x-key' })).location, `${tessera.issuer}/admin/delivery?done=saved-secrets-forgotten`);
    assert.equal((await loadSettings(tessera.db, tessera.box)).sms_gateway.apiKey, undefined);

    const off = await agent.post(`${tessera.issuer}/admin/mfa`, {
      csrf, action: 'save', 'mfa.appName': 'Tessera', 'mfa.maxAgeSeconds': '43200', 'mfa.otp.length': '6', 'mfa.otp.lifetimeSeconds': '300', 'mfa.otp.maxAttempts': '5',
      'mfa.otp.resendCooldownSeconds': '30', 'mfa.otp.perUserPerHour': '10', 'mfa.otp.perDestinationPerHour': '10', 'mfa.otp.perIpPerHour': '30',
      'mfa.totp.driftStepsBefore': '1', 'mfa.totp.driftStepsAfter': '1', 'mfa.templates.emailSubject': 'x {code}', 'mfa.templates.emailBody': 'b {code}', 'mfa.templates.sms': 's {code}',
    });
    assert.equal(off.status, 400);
    assert.match(off.body, /keep at least one method switched on/);
    assert.equal((await loadSettings(tessera.db, tessera.box)).mfa.methods.totp, true);
  });
});

/** A new administrator "root" and a browser holding their console session, with a factor passed just now. */
async function newAdminAgent(tessera: TestTessera): Promise<Agent> {
  const user = await createUser(tessera.db, { username: 'root', password: 'root-password-1' });
  await addGroupMember(tessera.db, 'admins', 'root');
  const agent = new Agent();
  agent.cookies.set('tessera.admin', await startConsoleSession(tessera.db, user.id, new Date(), { idleSeconds: 900, absoluteSeconds: 3600 }));
  return agent;
}

describe('admin console: a form’s address opened again', () => {
  it('goes to the page the form is on', async () => {
    const tessera = await startTestTessera();
    try {
      const agent = await newAdminAgent(tessera);
      for (const [path, page] of [['/admin/users/root/authenticators/remove', '/admin/users/root'], ['/admin/delivery/smtp', '/admin/delivery'], ['/admin/scopes/protect', '/admin/scopes'], ['/admin/users/new', null]] as const) {
        const response = await agent.get(`${tessera.issuer}${path}`);
        if (page) assert.equal(response.location, `${tessera.issuer}${page}`, path);
        else assert.equal(response.status, 200, path);
      }
    } finally {
      await tessera.stop();
    }
  });
});

describe('admin console: manager approval and LDAP pages', () => {
  it('create a profile and a policy, see field errors, set defaults, test the directory connection', async () => {
    const tessera = await startTestTessera();
    try {
      const agent = await newAdminAgent(tessera);
      const page = await agent.get(`${tessera.issuer}/admin/approvals`);
      assert.equal(page.status, 200);
      const profileForm = formFor(page, '/admin/approvals/profiles');
      const bad = await agent.post(profileForm.action, { ...profileForm.fields, name: 'mgr', mode: 'approve', delivery: 'sms', defaultRecipient: 'sec@example.test', linkMinutes: '60', directories: 'local' });
      assert.equal(bad.status, 400);
      assert.match(bad.body, /delivery is by sms: the default recipient must be a phone number/);
      const made = await agent.post(profileForm.action, { ...profileForm.fields, name: 'mgr', mode: 'approve', delivery: 'email', defaultRecipient: 'sec@example.test', linkMinutes: '60', directories: 'local' });
      assert.equal(made.location, `${tessera.issuer}/admin/approvals?done=created`);
      const withProfile = await agent.get(`${tessera.issuer}/admin/approvals`);
      const policyForm = formFor(withProfile, '/admin/approvals/policies');
      assert.equal((await agent.post(policyForm.action, { ...policyForm.fields, name: 'ops', profile: 'mgr', attribute: 'group', values: 'ops, admins', clientId: '', position: '' })).status, 303);
      const defaults = formFor(withProfile, '/admin/approvals/defaults');
      assert.equal((await agent.post(defaults.action, { ...defaults.fields, defaultProfile: 'mgr', unmatched: 'default' })).status, 303);
      const after = await agent.get(`${tessera.issuer}/admin/approvals`);
      assert.match(after.body, /ops[\s\S]*mgr[\s\S]*<code>group<\/code> is ops or admins/);
      assert.match(after.body, /<option selected>mgr<\/option>/);
      const profile = await agent.get(`${tessera.issuer}/admin/approvals/profile?name=mgr`);
      const profileEdit = formFor(profile, '/admin/approvals/profile');
      const edited = await agent.post(profileEdit.action, { ...profileEdit.fields, mode: 'approve', delivery: 'email', linkMinutes: '15', defaultRecipient: 'sec@example.test', subject: 'Approve {user}', baseUrl: '', message: '', directories: 'local' });
      assert.equal(edited.location, `${tessera.issuer}/admin/approvals?done=saved`);
      assert.equal((await tessera.db.selectFrom('approval_profiles').select('link_minutes').where('name', '=', 'mgr').executeTakeFirstOrThrow()).link_minutes, 15);
      const ldap = await agent.get(`${tessera.issuer}/admin/ldap`);
      const test = formFor(ldap, '/admin/ldap/test');
      const tested = await agent.post(test.action, test.fields);
      assert.match(tested.body, /Not connected: set ldap\.url, ldap\.bindDn, ldap\.bindPassword and ldap\.baseDn first/);
      const save = formFor(ldap, '/admin/ldap');
      const saved = await agent.post(save.action, { ...save.fields, 'ldap.url': 'http://wrong', 'ldap.userFilter': '(uid={username})', 'ldap.timeoutSeconds': '5', 'ldap.attributes.username': 'uid', 'ldap.attributes.email': 'mail', 'ldap.attributes.phone': 'mobile', 'ldap.attributes.givenName': 'givenName', 'ldap.attributes.familyName': 'sn', 'ldap.attributes.manager': 'manager', 'ldap.attributes.groups': 'memberOf' });
      assert.equal(saved.status, 400);
      assert.match(saved.body, /an ldap:\/\/ or ldaps:\/\/ URL/);
      const userPage = await agent.get(`${tessera.issuer}/admin/users/root`);
      const sponsor = formFor(userPage, '/admin/users/root/sponsor');
      const badSponsor = await agent.post(sponsor.action, { ...sponsor.fields, sponsorName: 'Mona', sponsorEmail: 'not-mail', sponsorPhone: '' });
      assert.equal(badSponsor.status, 400);
      assert.match(badSponsor.body, /id="f-sponsorEmail"[^>]*aria-invalid="true"/);
      assert.equal((await agent.post(sponsor.action, { ...sponsor.fields, sponsorName: 'Mona', sponsorEmail: 'mona@example.test', sponsorPhone: '' })).status, 303);
    } finally {
      await tessera.stop();
    }
  });
});

describe('admin console: self-service portals, the token stock and user issues', () => {
  it('enables a portal with ordered actions, imports tokens, approves and deletes restore requests', async () => {
    const tessera = await startTestTessera();
    try {
      const agent = await newAdminAgent(tessera);
      const service: ServiceContext = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'admin:root', role: 'admin' } };
      await perform(service, createClientOp, { clientId: 'shop', name: 'Shop', redirectUris: ['https://shop.example.test/cb'] });
      const page = await agent.get(`${tessera.issuer}/admin/portals`);
      assert.equal(page.status, 200);
      const form = formFor(page, '/admin/portals');
      // Three actions checked; the numbers put change-name first, then resync, then register-token.
      const body = new URLSearchParams({ csrf: form.fields.csrf!, clientId: 'shop', alias: 'shop', group: '', 'order-register-token': '3', 'order-change-name': '1', 'order-resync': '2', tokenTypes: 'totp' });
      for (const a of ['register-token', 'resync', 'change-name']) body.append('actions', a);
      const post = (b: URLSearchParams) => agent.request(form.action, { method: 'POST', body: b.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      const saved = await post(body);
      assert.equal(saved.location, `${tessera.issuer}/admin/portals?done=saved`);
      const portal = await tessera.db.selectFrom('portals').selectAll().where('client_id', '=', 'shop').executeTakeFirstOrThrow();
      assert.deepEqual(portal.actions, ['change-name', 'resync', 'register-token']);
      const listed = await agent.get(`${tessera.issuer}/admin/portals`);
      assert.match(listed.body, /Change name · Resynchronize a token · Register a new token/);
      const editing = await agent.get(`${tessera.issuer}/admin/portals?client=shop`);
      assert.match(editing.body, /name="order-resync" value="2"/, 'the form shows the order to change');

      body.set('order-resync', 'soon');
      const bad = await post(body);
      assert.equal(bad.status, 400);
      assert.match(bad.body, /the position of &#34;Resynchronize a token&#34; is a whole number|the position of "Resynchronize a token" is a whole number/);
      body.set('order-resync', '2');
      body.set('alias', 'Not An Alias');
      const badAlias = await post(body);
      assert.equal(badAlias.status, 400);
      assert.match(badAlias.body, /id="f-alias"[^>]*aria-invalid="true"/);

      const unassigned = (body: string) => Number(/<strong>(\d+)<\/strong> unassigned/.exec(body)![1]);
      const stockBefore = unassigned(listed.body);
      const importForm = formFor(listed, '/admin/tokens/import');
      const badCsv = await agent.post(importForm.action, { ...importForm.fields, csv: 'HW-1,3132333435363738393031323334353637383930,TOTP,6,30\nHW-2,zz,TOTP,6,30' });
      assert.equal(badCsv.status, 400);
      assert.match(badCsv.body, /line 2/);
      assert.match(badCsv.body, /HW-1,3132/, 'the pasted text is kept to correct');
      const imported = await agent.post(importForm.action, { ...importForm.fields, csv: 'HW-1,3132333435363738393031323334353637383930,TOTP,6,30\nHW-2,3132333435363738393031323334353637383930,HOTP,6,' });
      assert.equal(imported.location, `${tessera.issuer}/admin/portals?done=tokens-imported&n=2`);
      assert.equal(unassigned((await agent.get(`${tessera.issuer}/admin/portals`)).body), stockBefore + 2);

      // Every user's /account: its actions and their order are set on the same page.
      const accountForm = formFor(listed, '/admin/portals/account');
      const account = new URLSearchParams({ csrf: accountForm.fields.csrf!, 'account-form': '1', 'account-order-change-name': '2', 'account-order-change-password': '1', 'account-notify': 'on' });
      for (const a of ['change-name', 'change-password']) account.append('account-actions', a);
      const noTypes = await agent.request(accountForm.action, { method: 'POST', body: account.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(noTypes.status, 400, 'at least one token type');
      assert.match(noTypes.body, /name="account-actions" value="change-name" checked/, 'the typed choices come back');
      account.append('account-tokenTypes', 'totp');
      assert.equal((await agent.request(accountForm.action, { method: 'POST', body: account.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } })).location, `${tessera.issuer}/admin/portals?done=saved`);
      const settings = await loadSettings(tessera.db, tessera.box);
      assert.deepEqual([settings.account.actions, settings.account.tokenTypes, settings.account.notifyRestoreRequests], [['change-password', 'change-name'], ['totp'], true]);

      const disable = formFor(listed, '/admin/portals/disable');
      assert.equal((await agent.post(disable.action, { ...disable.fields, clientId: 'shop' })).location, `${tessera.issuer}/admin/portals?done=removed`);
      assert.equal(await tessera.db.selectFrom('portals').select('client_id').where('client_id', '=', 'shop').executeTakeFirst(), undefined);

      const rita = await createUser(tessera.db, { username: 'rita', password: 'rita-password-1', email: 'rita@example.test', emailVerified: true });
      const sue = await createUser(tessera.db, { username: 'sue', password: 'sue-password-1' });
      const { fileRestoreRequest } = await import('../src/portal/restore.js');
      const { hashPassword, verifyPassword } = await import('../src/directory/passwords.js');
      const ritaRequest = await fileRestoreRequest(tessera.db, { user: rita, draftId: randomUUID(), portal: null, lost: ['password'], proofs: { email: true, password: false }, newPasswordHash: await hashPassword('rita-password-2'), newEmail: null, ip: '127.0.0.1', userAgent: null });
      const sueRequest = await fileRestoreRequest(tessera.db, { user: sue, draftId: randomUUID(), portal: 'shop', lost: ['password'], proofs: { password: false }, newPasswordHash: null, newEmail: null, ip: '127.0.0.1', userAgent: null });
      const issues = await agent.get(`${tessera.issuer}/admin/user-issues`);
      assert.equal(issues.status, 200);
      const row = issues.body.slice(issues.body.indexOf(`data-request="${ritaRequest}"`));
      assert.match(row, /class="proof unproved"[^>]*>Password ✗[\s\S]*class="proof proved"[^>]*>Email ✓/);
      assert.match(row, /class="proof absent"[^>]*>Token</, 'a token she never had is grey');
      const approve = formFor(issues, '/admin/user-issues/approve');
      approve.fields.id = ritaRequest!;
      assert.equal((await agent.post(approve.action, approve.fields)).location, `${tessera.issuer}/admin/user-issues?done=restore-approved`);
      const after = await tessera.db.selectFrom('users').select('password_hash').where('id', '=', rita.id).executeTakeFirstOrThrow();
      assert.ok(await verifyPassword(after.password_hash, 'rita-password-2'));
      const again = await agent.post(approve.action, approve.fields);
      assert.equal(again.status, 400, 'approved once only');
      assert.match(again.body, /There is no open request with this id/);
      const forged = await agent.post(approve.action, { ...approve.fields, id: 'x'.repeat(300) });
      assert.equal(forged.status, 400);
      const remaining = await agent.get(`${tessera.issuer}/admin/user-issues`);
      const del = formFor(remaining, '/admin/user-issues/delete');
      assert.equal(del.fields.id, sueRequest, 'only the open request is left to decide');
      assert.equal((await agent.post(del.action, del.fields)).location, `${tessera.issuer}/admin/user-issues?done=removed`);
      const all = await agent.get(`${tessera.issuer}/admin/user-issues?status=all`);
      assert.match(all.body, /approved<br><span class="muted">by admin:root/);
      assert.match(all.body, /deleted<br><span class="muted">by admin:root/);
      assert.equal((await agent.get(`${tessera.issuer}/admin/user-issues?status=maybe`)).status, 200, 'an unknown status shows the open ones');
      await service.audit.flush();
    } finally {
      await tessera.stop();
    }
  });
});
