import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { startSlapd, READER, SUFFIX, type Slapd } from './support/slapd.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { demoAuthorizationUrl } from './support/journey.js';
import { portalDriver } from './support/portal.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { LdapDirectory } from '../src/directory/ldap.js';
import { loadSettings } from '../src/settings/settings.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { setSettingsOp } from '../src/admin/system.js';
import { setPasswordOp } from '../src/admin/users.js';
import { createApprovalProfileOp, setClientApprovalOp } from '../src/admin/approvals.js';
import { DEMO_CLIENT_ID } from '../src/demo/accounts.js';

/** An LDAP directory (a real slapd) as a source of users, and of their managers for approvals. */
describe('LDAP directory', () => {
  let tessera: TestTessera;
  let slapd: Slapd;
  let admin: ServiceContext;
  const callback = (url: string) => url.includes('/demo/callback');

  before(async () => {
    slapd = await startSlapd([
      { uid: 'mona', password: 'mona-ldap-pw', cn: 'Mona Manager', sn: 'Manager', givenName: 'Mona', mail: 'mona@corp.test', mobile: '+1 555 555 0199' },
      { uid: 'alice', password: 'alice-ldap-pw', cn: 'Alice Adams', sn: 'Adams', givenName: 'Alice', mail: 'alice@corp.test', manager: 'mona' },
      { uid: 'bob', password: 'bob-ldap-pw', cn: 'Bob Brown', sn: 'Brown', mail: 'bob@corp.test' },
      { uid: 'carl', password: 'carl-ldap-pw', cn: 'Carl Local', sn: 'Local' },
      // A second entry that also answers to "alice2" and "alice": never alice's record.
      { uid: 'mallet', otherUids: ['alice2'], rdn: 'cn=e1', password: 'mallet-ldap-pw', cn: 'e1', sn: 'Mallet', mail: 'mallet@corp.test' },
    ]);
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'admin:test', role: 'admin' } };
    await createUser(tessera.db, { username: 'carl', password: 'carl-local-password' });
    await perform(admin, setSettingsOp, { values: { 'ldap.url': slapd.url, 'ldap.bindDn': READER.dn, 'ldap.bindPassword': READER.password, 'ldap.baseDn': SUFFIX, 'ldap.timeoutSeconds': 2 } });
  });
  after(async () => {
    await admin?.audit.flush();
    await tessera?.stop();
    await slapd?.close();
  });

  async function passwordStep(agent: Agent, username: string, password: string): Promise<AgentResponse> {
    const page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)), callback);
    const form = formFor(page, '/login');
    return agent.follow(await agent.post(form.action, { ...form.fields, username, password }), callback);
  }

  it('a directory user signs in with the directory’s password; the local record follows the directory', async () => {
    const page = await passwordStep(new Agent(), 'alice', 'alice-ldap-pw');
    assert.ok(page.body.includes('/consent"'), `signed in: ${page.status} ${page.body.slice(0, 300)}`);
    const alice = await findUserByUsername(tessera.db, 'alice');
    assert.equal(alice?.source, 'ldap');
    assert.equal(alice?.password_hash, null, 'no password is kept here');
    assert.equal(alice?.ldap_dn, slapd.dnOf('alice'));
    assert.deepEqual([alice?.email, alice?.email_verified, alice?.given_name, alice?.family_name], ['alice@corp.test', true, 'Alice', 'Adams']);
    const kept = alice?.attributes as Record<string, unknown>;
    assert.deepEqual([kept.manager, kept.groups], [slapd.dnOf('mona'), []]);
    assert.match(String(kept.directory_id), /^[0-9a-f-]{36}$/, 'the entry’s entryUUID');
    await assert.rejects(perform(admin, setPasswordOp, { username: 'alice', password: 'a-local-password' }), /signs in with the directory's password/);
    const mona = await passwordStep(new Agent(), 'mona', 'mona-ldap-pw');
    assert.ok(mona.body.includes('/consent"'));
    assert.equal((await findUserByUsername(tessera.db, 'mona'))?.phone, '+15555550199', 'a phone written with spaces is kept in E.164');
  });

  it('refuses wrong and empty passwords, filter injection, and leaves local accounts to their own password', async () => {
    for (const [username, password] of [['alice', 'wrong'], ['*', 'alice-ldap-pw'], ['al*', 'alice-ldap-pw'], ['alice)(uid=*', 'alice-ldap-pw'], ['nobody', 'x']]) {
      const page = await passwordStep(new Agent(), username!, password!);
      assert.equal(page.status, 401, `${username}`);
      assert.match(page.body, /Invalid username or password/);
    }
    const directory = new LdapDirectory();
    const settings = (await loadSettings(tessera.db, tessera.box)).ldap;
    assert.equal(await directory.authenticate(settings, 'alice', ''), null, 'an empty password never reaches the directory');
    assert.equal((await directory.findUser(settings, 'ALICE'))?.username, 'alice');
    assert.equal(await directory.findUser(settings, '*'), null);
    await directory.close();
    // carl exists locally: his local password works, the directory's does not.
    assert.equal((await passwordStep(new Agent(), 'carl', 'carl-ldap-pw')).status, 401);
    assert.ok((await passwordStep(new Agent(), 'carl', 'carl-local-password')).body.includes('/consent"'));
  });

  it('a record belongs to its directory entry: another entry answering to a name cannot take it', async () => {
    assert.ok((await passwordStep(new Agent(), 'alice2', 'mallet-ldap-pw')).body.includes('/consent"'), 'mallet signs in as alice2');
    const alice2 = await findUserByUsername(tessera.db, 'alice2');
    assert.equal(alice2?.ldap_dn, `cn=e1,ou=people,${SUFFIX}`);
    const alice = await findUserByUsername(tessera.db, 'alice');
    assert.equal(alice?.ldap_dn, slapd.dnOf('alice'), 'alice’s record is still alice’s');
    assert.equal(alice?.email, 'alice@corp.test');
  });

  it('a directory that is down gets a clear message and an audit record; the kept connection recovers', async () => {
    const before = (await findUserByUsername(tessera.db, 'alice'))?.failed_logins;
    await slapd.stop();
    // More attempts than the lockout allows: an unreachable directory checked no password, so none counts.
    for (let i = 0; i < 6; i++) assert.equal((await passwordStep(new Agent(), 'alice', 'alice-ldap-pw')).status, 503);
    const page = await passwordStep(new Agent(), 'alice', 'alice-ldap-pw');
    assert.equal(page.status, 503);
    assert.match(page.body, /The user directory cannot be reached just now/);
    await admin.audit.flush();
    const rows = await tessera.db.selectFrom('audit_events').select(['type', 'details']).where('type', '=', 'directory.unavailable').execute();
    assert.equal(rows.length, 7);
    assert.equal((await findUserByUsername(tessera.db, 'alice'))?.failed_logins, before, 'no attempt counted');
    await slapd.start();
    assert.ok((await passwordStep(new Agent(), 'alice', 'alice-ldap-pw')).body.includes('/consent"'));
  });

  it('approval goes to the directory manager’s mail, or to the default recipient when there is none', async () => {
    await perform(admin, createApprovalProfileOp, { name: 'ldap approve', mode: 'approve', delivery: 'email', defaultRecipient: 'it@corp.test', directories: ['ldap'] });
    await perform(admin, setSettingsOp, { values: { 'approval.defaultProfile': 'ldap approve' } });
    await perform(admin, setClientApprovalOp, { clientId: DEMO_CLIENT_ID, required: true });
    try {
      const wait = await passwordStep(new Agent(), 'alice', 'alice-ldap-pw');
      assert.match(wait.body, /Waiting for your manager’s approval/);
      assert.match(wait.body, /m•+@corp\.test/);
      const request = await tessera.db.selectFrom('approval_requests').select(['recipient', 'recipient_source']).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
      assert.deepEqual(request, { recipient: 'mona@corp.test', recipient_source: 'ldap-manager' });
      await passwordStep(new Agent(), 'bob', 'bob-ldap-pw');
      const bob = await tessera.db.selectFrom('approval_requests').select(['recipient', 'recipient_source']).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
      assert.deepEqual(bob, { recipient: 'it@corp.test', recipient_source: 'default' });
      // carl is local: the profile applies to directory users only.
      const carl = await passwordStep(new Agent(), 'carl', 'carl-local-password');
      assert.equal(carl.status, 403);
      assert.match(carl.body, /does not apply to local users/);
    } finally {
      await perform(admin, setClientApprovalOp, { clientId: DEMO_CLIENT_ID, required: false });
    }
  });

  it('a local user cannot take a directory user’s name as their login, even one who never signed in here', async () => {
    await createUser(tessera.db, { username: 'lou', password: 'lou-password-1' });
    const { agent } = await portalDriver(tessera, admin).signIn('lou', undefined, '/selfservice/demo', 'lou-password-1');
    const f = formFor(await agent.get(`${tessera.issuer}/selfservice/demo/login-name`), '/selfservice/demo/login-name');
    for (const username of ['bob', 'BOB', 'mona']) {
      const answer = await agent.post(f.action, { ...f.fields, username });
      assert.equal(answer.status, 400, username);
      assert.match(answer.body, /that login is taken/);
    }
    assert.equal((await agent.post(f.action, { ...f.fields, username: 'lou.local' })).location, `${tessera.issuer}/selfservice/demo?done=login-changed`);
  });

  it('test connection says what worked and what did not', async () => {
    const directory = new LdapDirectory();
    const settings = (await loadSettings(tessera.db, tessera.box)).ldap;
    assert.match((await directory.test(settings)).message, /^bound as cn=reader,dc=example,dc=test and read dc=example,dc=test in \d+ ms$/);
    const wrong = await directory.test({ ...settings, bindPassword: 'wrong' });
    assert.equal(wrong.ok, false);
    assert.match(wrong.message, /service account could not bind \(InvalidCredentialsError/);
    const missing = await directory.test({ ...settings, baseDn: 'dc=nowhere,dc=test' });
    assert.match(missing.message, /was not found/);
    await directory.close();
  });

  it('TLS: ldaps:// and StartTLS with the directory’s CA; an unknown certificate is refused unless checking is off', async () => {
    const secure = await startSlapd([{ uid: 'tess', password: 'tess-ldap-pw', cn: 'Tess TLS', sn: 'TLS' }], { tls: true });
    const directory = new LdapDirectory();
    try {
      const base = (await loadSettings(tessera.db, tessera.box)).ldap;
      const plain = { ...base, url: secure.url };
      const ldaps = { ...base, url: secure.ldapsUrl! };
      assert.equal((await directory.test({ ...ldaps, caCertificate: secure.certificate! })).ok, true, 'ldaps:// trusting the CA');
      assert.equal((await directory.authenticate({ ...ldaps, caCertificate: secure.certificate! }, 'tess', 'tess-ldap-pw'))?.username, 'tess');
      const unknown = await directory.test(ldaps);
      assert.equal(unknown.ok, false);
      assert.match(unknown.message, /self.signed certificate/i);
      assert.equal((await directory.test({ ...ldaps, tlsVerify: false })).ok, true, 'checking off (a test directory)');
      assert.equal((await directory.test({ ...plain, startTls: true, caCertificate: secure.certificate! })).ok, true, 'StartTLS');
      assert.match((await directory.test({ ...plain, startTls: true })).message, /self.signed certificate/i);
    } finally {
      await directory.close();
      await secure.close();
    }
  });
});
