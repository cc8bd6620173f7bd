import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { demoAuthorizationUrl, exchangeDemoCode } from './support/journey.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser } from '../src/directory/users.js';
import { addGroupMember, createGroup } from '../src/directory/groups.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { addApprovalPolicyOp, createApprovalProfileOp, removeApprovalPolicyOp, setClientApprovalOp, setSponsorOp, updateApprovalProfileOp } from '../src/admin/approvals.js';
import { createClientOp, createPolicyOp, setSettingsOp } from '../src/admin/system.js';
import { DEMO_CLIENT_ID } from '../src/demo/accounts.js';

/** Manager approval as a step of the sign-in, over HTTP: the user's waiting page and the manager's link. */
describe('manager-approved sign-ins', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  const callback = (url: string) => url.includes('/demo/callback');

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'admin:test', role: 'admin' } };
    for (const name of ['ana', 'ben', 'cleo', 'dov', 'eli', 'fay', 'gus']) await createUser(tessera.db, { username: name, password: `${name}-password-1`, givenName: name.toUpperCase() });
    await perform(admin, setSponsorOp, { username: 'ana', name: 'Mona Manager', email: 'mona@example.test', phone: null });
    await perform(admin, setSponsorOp, { username: 'ben', name: 'Mona Manager', email: 'mona@example.test', phone: null });
    await perform(admin, setSponsorOp, { username: 'eli', name: 'Mona Manager', email: 'mona@example.test', phone: null });
    await perform(admin, setSponsorOp, { username: 'gus', name: 'Mona Manager', email: 'mona@example.test', phone: null });
    await perform(admin, createApprovalProfileOp, { name: 'approve', mode: 'approve', delivery: 'email', linkMinutes: 30, defaultRecipient: 'security@example.test' });
    await perform(admin, createApprovalProfileOp, { name: 'inform', mode: 'inform', delivery: 'email', defaultRecipient: 'audit@example.test' });
    await perform(admin, setSettingsOp, { values: { 'approval.defaultProfile': 'approve' } });
    await perform(admin, setClientApprovalOp, { clientId: DEMO_CLIENT_ID, required: true });
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  /** The password step of a demo-app sign-in; returns where it lands (the waiting page, or the consent page). */
  async function signInAs(agent: Agent, username: string): Promise<AgentResponse> {
    const page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)), callback);
    const form = formFor(page, '/login');
    return agent.follow(await agent.post(form.action, { ...form.fields, username, password: `${username}-password-1` }), callback);
  }

  async function linkSentTo(to: string): Promise<string> {
    const row = await tessera.db.selectFrom('dev_outbox').select('body').where('recipient', '=', to).orderBy('id', 'desc').executeTakeFirstOrThrow();
    const link = /(http:\/\/\S+\/approval\/[A-Za-z0-9_-]{43})/.exec(row.body)?.[1];
    assert.ok(link, `a link in: ${row.body}`);
    return link;
  }

  const decideOn = async (manager: Agent, link: string, decision: 'approve' | 'reject') => {
    const page = await manager.get(link);
    const form = formFor(page, new URL(link).pathname);
    return manager.post(form.action, { ...form.fields, decision });
  };

  /** Consent, then the code for the ID token. */
  async function finish(agent: Agent, page: AgentResponse): Promise<Record<string, unknown>> {
    let current = page;
    if (current.body.includes('/consent"')) {
      const form = formFor(current, '/consent');
      current = await agent.follow(await agent.post(form.action, { ...form.fields, decision: 'allow' }), callback);
    }
    assert.ok(current.location && callback(current.location), `at the app: ${current.status} ${current.body.slice(0, 200)}`);
    return exchangeDemoCode(tessera.issuer, current.location!);
  }

  it('approve: the user waits, the manager’s GET decides nothing, the POST lets the sign-in go on; approval is not in amr', async () => {
    const user = new Agent();
    const wait = await signInAs(user, 'ana');
    assert.equal(wait.status, 200);
    assert.match(wait.body, /Waiting for your manager’s approval/);
    assert.match(wait.body, /http-equiv="refresh"/);
    assert.equal(wait.headers.get('refresh'), '4');
    const link = await linkSentTo('mona@example.test');
    const outbox = await tessera.db.selectFrom('dev_outbox').select(['subject', 'body']).where('recipient', '=', 'mona@example.test').orderBy('id', 'desc').executeTakeFirstOrThrow();
    assert.match(outbox.body, /ANA \(ana\) is signing in to Tessera demo app from 127\.0\.0\.1/);

    const manager = new Agent();
    for (let i = 0; i < 3; i++) {
      const shown = await manager.get(link);
      assert.equal(shown.status, 200);
      assert.match(shown.body, /Approve this sign-in\?[\s\S]*ANA \(ana\)[\s\S]*Tessera demo app[\s\S]*127\.0\.0\.1/);
    }
    const again = await user.get(wait.url);
    assert.match(again.body, /Waiting for your manager’s approval/, 'opening the link decided nothing');

    const approved = await decideOn(manager, link, 'approve');
    assert.equal(approved.status, 200);
    assert.match(approved.body, /Sign-in approved/);
    const claims = await finish(user, await user.follow(await user.get(wait.url), callback));
    assert.equal(claims.acr, 'urn:tessera:acr:password');
    assert.deepEqual(claims.amr, ['pwd']);

    const reused = await decideOn(manager, link, 'reject').catch(() => null);
    assert.equal(reused, null, 'a decided link shows no buttons');
    const forged = await manager.post(link, { csrf: 'x', decision: 'reject' });
    assert.equal(forged.status, 403);
    const tampered = await manager.get(`${link.slice(0, -3)}AAA`);
    assert.equal(tampered.status, 404);
    assert.match(tampered.body, /not valid/);
    await admin.audit.flush();
    const audit = await tessera.db.selectFrom('audit_events').select(['type', 'actor']).where('type', 'in', ['approval.requested', 'approval.approved', 'approval.rejected', 'approval.informed']).orderBy('id').execute();
    assert.deepEqual(audit.map((a) => [a.type, a.actor]), [['approval.requested', 'ana'], ['approval.approved', 'manager:mona@example.test']]);

    // The session holds the approval for this application: signing in to it again does not ask again.
    const next = await user.follow(await user.get(await demoAuthorizationUrl(tessera.issuer)), callback);
    assert.ok(next.location && callback(next.location) || next.body.includes('/consent"'), 'no new approval for the same application');

    // Single sign-on to another application that needs approval asks the manager again (no password).
    await perform(admin, createClientOp, { clientId: 'crm', public: true, redirectUris: [`${tessera.issuer}/demo/callback`], requireConsent: false });
    await perform(admin, setClientApprovalOp, { clientId: 'crm', required: true });
    const crm = new URL(await demoAuthorizationUrl(tessera.issuer));
    crm.searchParams.set('client_id', 'crm');
    const crmWait = await user.follow(await user.get(crm.href), callback);
    assert.match(crmWait.body, /Waiting for your manager’s approval/);
    assert.match(crmWait.url, /\/approval$/);
    await decideOn(new Agent(), await linkSentTo('mona@example.test'), 'approve');
    const done = await user.follow(await user.get(crmWait.url), callback);
    assert.ok(done.location && callback(done.location), `back at crm: ${done.status} ${done.body.slice(0, 200)}`);
  });

  it('reject: the user’s page says so and the application hears access_denied', async () => {
    const user = new Agent();
    const wait = await signInAs(user, 'ben');
    const link = await linkSentTo('mona@example.test');
    assert.match((await decideOn(new Agent(), link, 'reject')).body, /Sign-in rejected/);
    const ended = await user.get(wait.url);
    assert.equal(ended.status, 403);
    assert.match(ended.body, /Your manager rejected this sign-in/);
    const form = formFor(ended, '/approval/end');
    const back = await user.follow(await user.post(form.action, form.fields), callback);
    const url = new URL(back.location!);
    assert.equal(url.searchParams.get('error'), 'access_denied');
    assert.equal(url.searchParams.get('error_description'), 'The manager rejected the sign-in.');
  });

  it('stopping the wait closes the link: the manager has nothing left to decide', async () => {
    const user = new Agent();
    const wait = await signInAs(user, 'ben');
    const link = await linkSentTo('mona@example.test');
    const stop = formFor(wait, '/approval/end');
    const back = await user.follow(await user.post(stop.action, stop.fields), callback);
    assert.equal(new URL(back.location!).searchParams.get('error_description'), 'The user stopped waiting for approval.');
    const page = await new Agent().get(link);
    assert.match(page.body, /The user stopped waiting/);
    assert.ok(!page.body.includes('name="decision"'), 'no buttons');
    const row = await tessera.db.selectFrom('approval_requests').select('status').orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    assert.equal(row.status, 'cancelled');
  });

  it('a profile is edited by the same rules as it is made; its policies stay', async () => {
    await perform(admin, createApprovalProfileOp, { name: 'edit me', mode: 'approve', delivery: 'email' });
    await perform(admin, addApprovalPolicyOp, { name: 'edit me policy', profile: 'edit me', attribute: 'username', values: ['nobody'] });
    await assert.rejects(perform(admin, updateApprovalProfileOp, { name: 'edit me', changes: { delivery: 'sms', defaultRecipient: 'x@example.test' } }), /the default recipient must be a phone number/);
    assert.deepEqual(Object.keys(await perform(admin, updateApprovalProfileOp, { name: 'edit me', changes: { mode: 'inform' } })).sort(), ['message', 'mode']);
    const row = await tessera.db.selectFrom('approval_profiles').selectAll().where('name', '=', 'edit me').executeTakeFirstOrThrow();
    assert.equal(row.message, '{name} is signing in to {app} from {ip} at {time}.', 'the default message follows the mode');
    assert.equal((await tessera.db.selectFrom('approval_policies').select('name').where('profile', '=', 'edit me').execute()).length, 1);
    await perform(admin, removeApprovalPolicyOp, { name: 'edit me policy' });
  });

  it('20 simultaneous Approve and Reject posts on one link: exactly one decision', async () => {
    const user = new Agent();
    const wait = await signInAs(user, 'eli');
    const link = await linkSentTo('mona@example.test');
    const managers = Array.from({ length: 20 }, () => new Agent());
    const forms = await Promise.all(managers.map(async (m) => formFor(await m.get(link), new URL(link).pathname)));
    const results = await Promise.all(managers.map((m, i) => m.post(forms[i]!.action, { ...forms[i]!.fields, decision: i % 2 ? 'approve' : 'reject' })));
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.equal(results.filter((r) => r.status === 409).length, 19);
    const rows = await tessera.db.selectFrom('approval_requests').select('status').where('interaction_uid', '=', new URL(wait.url).pathname.split('/')[2]!).execute();
    assert.equal(rows.length, 1);
    assert.ok(['approved', 'rejected'].includes(rows[0]!.status));
  });

  it('expiry: the link says so, the user may ask again and a new link works', async () => {
    const user = new Agent();
    const wait = await signInAs(user, 'gus');
    const link = await linkSentTo('mona@example.test');
    await sql`update approval_requests set expires_at = now() - interval '1 second' where status = 'pending'`.execute(tessera.db);
    const expired = await new Agent().get(link);
    assert.match(expired.body, /This link expired/);
    const page = await user.get(wait.url);
    assert.match(page.body, /The approval link expired/);
    const ask = formFor(page, '/approval/again');
    const rewait = await user.follow(await user.post(ask.action, ask.fields), callback);
    assert.match(rewait.body, /Waiting for your manager’s approval/);
    const second = await linkSentTo('mona@example.test');
    assert.notEqual(second, link);
    assert.equal((await decideOn(new Agent(), link, 'approve').catch(() => null)), null, 'the old link decides nothing');
    await decideOn(new Agent(), second, 'approve');
    await finish(user, await user.follow(await user.get(wait.url), callback));
  });

  it('no sponsor: the default recipient is asked; policies pick profiles top to bottom, and no match is refused', async () => {
    const user = new Agent();
    await signInAs(user, 'cleo');
    assert.ok(await linkSentTo('security@example.test'));

    await createGroup(tessera.db, 'contractors');
    await addGroupMember(tessera.db, 'contractors', 'dov');
    await perform(admin, addApprovalPolicyOp, { name: 'contractors are watched', profile: 'inform', attribute: 'group', values: ['contractors'] });
    await perform(admin, addApprovalPolicyOp, { name: 'dov first', profile: 'approve', attribute: 'username', values: ['DOV'], position: 2 });
    // dov matches both: the first (inform) wins, and the user does not wait.
    const informed = await signInAs(new Agent(), 'dov');
    assert.ok(informed.body.includes('/consent"') || (informed.location && callback(informed.location)), `no waiting: ${informed.body.slice(0, 200)}`);
    const note = await tessera.db.selectFrom('dev_outbox').select('body').where('recipient', '=', 'audit@example.test').orderBy('id', 'desc').executeTakeFirstOrThrow();
    assert.match(note.body, /DOV \(dov\) is signing in to Tessera demo app/);
    assert.ok(!note.body.includes('/approval/'), 'an information carries no link');

    // Policies exist and none matches fay: she cannot sign in where approval applies.
    const refused = await signInAs(new Agent(), 'fay');
    assert.equal(refused.status, 403);
    assert.match(refused.body, /no approval policy matches this user/);
    await perform(admin, setSettingsOp, { values: { 'approval.unmatched': 'default' } });
    const waiting = await signInAs(new Agent(), 'fay');
    assert.match(waiting.body, /Waiting for your manager’s approval/);
    await perform(admin, setSettingsOp, { values: { 'approval.unmatched': null } });
    await perform(admin, removeApprovalPolicyOp, { name: 'contractors are watched' });
    await perform(admin, removeApprovalPolicyOp, { name: 'dov first' });
  });

  it('any access policy asking for approval requires it; nobody approves their own sign-in', async () => {
    await perform(admin, setClientApprovalOp, { clientId: DEMO_CLIENT_ID, required: false });
    try {
      const hal = await createUser(tessera.db, { username: 'hal', password: 'hal-password-1', email: 'hal@example.test', emailVerified: true });
      await createGroup(tessera.db, 'vendors');
      await addGroupMember(tessera.db, 'vendors', 'hal');
      await perform(admin, createPolicyOp, { name: 'vendors need approval', subjectType: 'group', subject: 'vendors', mfa: 'optional', managerApproval: true });
      // hal's own policy outranks the group's for MFA, but does not take the approval away.
      await perform(admin, createPolicyOp, { name: 'hal settings', subjectType: 'user', subject: 'hal', mfa: 'optional', priority: 1 });
      await assert.rejects(perform(admin, setSponsorOp, { username: 'hal', name: 'Hal', email: 'HAL@example.test', phone: null }), /cannot be their own sponsor/);
      // The default recipient is hal's own address: nobody else to ask, so it is refused, not sent to him.
      await perform(admin, createApprovalProfileOp, { name: 'self', mode: 'approve', delivery: 'email', defaultRecipient: 'hal@example.test' });
      await perform(admin, setSettingsOp, { values: { 'approval.defaultProfile': 'self' } });
      const page = await signInAs(new Agent(), 'hal');
      assert.equal(page.status, 403);
      assert.match(page.body, /no manager or sponsor on record to ask/);
      assert.equal((await tessera.db.selectFrom('approval_requests').select('id').where('user_id', '=', hal.id).execute()).length, 0);
    } finally {
      await perform(admin, setSettingsOp, { values: { 'approval.defaultProfile': 'approve' } });
      await perform(admin, setClientApprovalOp, { clientId: DEMO_CLIENT_ID, required: true });
    }
  });
});
