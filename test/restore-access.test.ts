import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { pageText as text, portalDriver, type PortalDriver } from './support/portal.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { addGroupMember } from '../src/directory/groups.js';
import { verifyPassword } from '../src/directory/passwords.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { approveRestoreRequestOp, deleteRestoreRequestOp, listRestoreRequestsOp } from '../src/admin/restore.js';

describe('restore access: a user who lost a factor asks, proves what is left, an administrator approves', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let d: PortalDriver;

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:root', role: 'admin' } };
    d = portalDriver(tessera, admin);
    for (const username of ['lia', 'max', 'ned', 'ola', 'pia']) {
      await createUser(tessera.db, { username, password: `${username}-password-1`, email: `${username}@example.test`, emailVerified: true });
    }
    await createUser(tessera.db, { username: 'root', password: 'root-password-1', email: 'root@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'admins', 'root');
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  const url = (path: string) => d.url(path);
  /** Posts a form whose fields may repeat (a group of checkboxes). */
  const postPairs = (agent: Agent, action: string, pairs: [string, string][]) =>
    agent.request(action, { method: 'POST', body: new URLSearchParams(pairs).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

  async function enrolApp(username: string): Promise<string> {
    const user = (await findUserByUsername(tessera.db, username))!;
    const settings = await loadSettings(tessera.db, tessera.box);
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', `test-${username}`);
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, settings.mfa.totp, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    return enrolment.secret;
  }

  /** Starts a request: the username and what was lost; returns the proof page. */
  async function start(agent: Agent, username: string, lost: string[]): Promise<AgentResponse> {
    const page = await agent.get(url('/account/restore'));
    assert.equal(page.status, 200);
    const f = formFor(page, '/account/restore');
    const answer = await postPairs(agent, f.action, [['csrf', f.fields.csrf!], ['portal', ''], ['username', username], ...lost.map((l): [string, string] => ['lost', l])]);
    assert.equal(answer.location, url('/account/restore/verify'), text(answer).slice(0, 300));
    return agent.get(answer.location!);
  }

  it('the account portal’s sign-in page and its signed-out page lead to "Restore access"', async () => {
    const agent = new Agent();
    const login = await agent.follow(await agent.get(url('/account')));
    assert.match(login.url, /\/interaction\//);
    assert.match(login.body, /<a href="\/account\/restore">Restore access<\/a>/);
    const signedOut = await agent.get(url('/account/signed-out'));
    assert.match(signedOut.body, /href="\/account\/restore"/);
  });

  it('lost token: proved by password and an email code; the administrator sees it, approves; the old token stops, a new one is enrolled at the next sign-in', async () => {
    const secret = await enrolApp('lia');
    const { agent: portal } = await d.signIn('lia', { factor: 'totp', secret });
    const lia = (await findUserByUsername(tessera.db, 'lia'))!;
    assert.ok(await tessera.db.selectFrom('app_sessions').select('id_hash').where('user_id', '=', lia.id).executeTakeFirst(), 'a portal session to be revoked');

    const agent = new Agent();
    const proof = await start(agent, 'lia', ['token']);
    assert.doesNotMatch(proof.body, /name="token"/, 'no token field: it is the token that was lost');
    assert.match(proof.body, /name="password"/);
    const f = formFor(proof, '/account/restore/verify');
    const wrong = await agent.post(f.action, { ...f.fields, password: 'not-it', code: '' });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /the password is wrong/);
    const code = await d.lastCode('lia@example.test');
    const proved = await agent.post(f.action, { ...f.fields, password: 'lia-password-1', code });
    assert.equal(proved.location, url('/account/restore/review'));
    const review = await agent.get(proved.location!);
    assert.match(text(review), /You proved your password, the code we emailed you/);
    const send = formFor(review, '/account/restore/review');
    assert.equal((await agent.post(send.action, send.fields)).location, url('/account/restore/sent'));

    const [request] = await perform(admin, listRestoreRequestsOp, {});
    assert.equal(request!.username, 'lia');
    assert.deepEqual(request!.lost, ['token']);
    assert.deepEqual(request!.proofs, { token: false, password: true, email: true });
    const notice = await tessera.db.selectFrom('dev_outbox').select(['subject', 'body']).where('recipient', '=', 'root@example.test').orderBy('id', 'desc').executeTakeFirstOrThrow();
    assert.match(notice.subject ?? '', /lia asks to restore access/);
    assert.match(notice.body, /\/admin\/user-issues/);

    const approved = await perform(admin, approveRestoreRequestOp, { id: request!.id });
    assert.equal(approved.disabledTokens, 1);
    await assert.rejects(perform(admin, approveRestoreRequestOp, { id: request!.id }), /no open request/, 'decided once');
    const after = (await findUserByUsername(tessera.db, 'lia'))!;
    assert.equal(after.must_enrol, true);
    assert.equal(await tessera.db.selectFrom('app_sessions').select('id_hash').where('user_id', '=', lia.id).executeTakeFirst(), undefined, 'portal sessions revoked');
    assert.match((await portal.get(url('/account'))).location ?? '', /\/account\/login/, 'the old portal session is gone');
    assert.equal((await d.events('restore.approved')).at(-1)!.actor, 'cli:root');

    // Next sign-in: the password, a code to lia's own email (the password alone does not attach an app), then a new app.
    const next = new Agent();
    let page = await next.follow(await next.get(url('/account')));
    const login = formFor(page, '/login');
    page = await next.follow(await next.post(login.action, { ...login.fields, username: 'lia', password: 'lia-password-1' }));
    assert.match(text(page), /Your administrator restored your access/);
    assert.doesNotMatch(page.body, /totp-secret/, 'no enrolment before the code');
    assert.doesNotMatch(page.body, /Not now/);
    const choose = formFor(page, '/mfa');
    page = await next.follow(await next.post(choose.action, { ...choose.fields, factor: 'email' }));
    const codeForm = formFor(page, '/code');
    page = await next.follow(await next.post(codeForm.action, { ...codeForm.fields, code: await d.lastCode('lia@example.test') }));
    assert.match(text(page), /Your administrator restored your access/);
    assert.doesNotMatch(page.body, /Not now, continue signing in/, 'the new app is not skippable');
    const newSecret = /id="totp-secret">([A-Z2-7 ]+)</.exec(page.body)![1]!.replace(/ /g, '');
    const enrol = formFor(page, '/mfa/enrol');
    page = await next.follow(await next.post(enrol.action, { ...enrol.fields, code: await generate({ secret: newSecret }) }));
    assert.equal(new URL(page.url).pathname, '/account');
    assert.equal((await findUserByUsername(tessera.db, 'lia'))!.must_enrol, false);
    const tokens = await tessera.db.selectFrom('authenticators').select(['disabled_at']).where('user_id', '=', lia.id).orderBy('created_at').execute();
    assert.deepEqual(tokens.map((t) => t.disabled_at !== null), [true, false], 'the lost one disabled, the new one working');
  });

  it('lost password and email: a new password and a new address verified by a code; approval applies both', async () => {
    const agent = new Agent();
    const proof = await start(agent, 'max', ['password', 'email']);
    assert.doesNotMatch(proof.body, /name="password"/);
    assert.doesNotMatch(proof.body, /name="code"/);
    const f = formFor(proof, '/account/restore/verify');
    const next = await agent.post(f.action, { ...f.fields, token: '' });
    assert.equal(next.location, url('/account/restore/new'));
    const g = formFor(await agent.get(next.location!), '/account/restore/new');
    const short = await agent.post(g.action, { ...g.fields, password: 'short', confirm: 'short', email: 'max.new@example.test' });
    assert.equal(short.status, 400);
    const sent = await agent.post(g.action, { ...g.fields, password: 'max-password-2', confirm: 'max-password-2', email: 'max.new@example.test' });
    assert.equal(sent.location, url('/account/restore/new/confirm'));
    const h = formFor(await agent.get(sent.location!), '/account/restore/new/confirm');
    assert.equal((await agent.post(h.action, { ...h.fields, code: await d.lastCode('max.new@example.test') })).location, url('/account/restore/review'));
    const review = await agent.get(url('/account/restore/review'));
    assert.match(text(review), /New email max\.new@example\.test/);
    assert.match(text(review), /You proved nothing: your administrator will check who you are another way/);
    const send = formFor(review, '/account/restore/review');
    await agent.post(send.action, send.fields);

    const request = (await perform(admin, listRestoreRequestsOp, {})).find((r) => r.username === 'max')!;
    assert.deepEqual(request.proofs, { password: false, email: false }, 'max has no token: it is left out (grey)');
    assert.equal(request.newEmail, 'max.new@example.test');
    const before = (await findUserByUsername(tessera.db, 'max'))!;
    assert.ok(await verifyPassword(before.password_hash, 'max-password-1'), 'nothing changes before approval');
    await perform(admin, approveRestoreRequestOp, { id: request.id });
    const after = (await findUserByUsername(tessera.db, 'max'))!;
    assert.ok(await verifyPassword(after.password_hash, 'max-password-2'));
    assert.deepEqual([after.email, after.email_verified, after.must_enrol], ['max.new@example.test', true, false]);
  });

  it('a later sign-in with the old credentials withdraws the requests; a second request stands beside the first; approving one deletes the others; a draft files once', async () => {
    for (const [username, decide] of [['ned', 'sign-in'], ['ola', 'approve']] as const) {
      const agent = new Agent();
      const f = formFor(await start(agent, username, ['password']), '/account/restore/verify');
      await agent.post(f.action, { ...f.fields, code: await d.lastCode(`${username}@example.test`) });
      const g = formFor(await agent.get(url('/account/restore/new')), '/account/restore/new');
      await agent.post(g.action, { ...g.fields, password: `${username}-password-9`, confirm: `${username}-password-9` });
      const send = formFor(await agent.get(url('/account/restore/review')), '/account/restore/review');
      const draft = agent.cookies.get('tessera.restore')!;
      await agent.post(send.action, send.fields);
      // The same draft sent again (a saved cookie) files nothing.
      agent.cookies.set('tessera.restore', draft);
      assert.equal((await agent.post(send.action, send.fields)).location, url('/account/restore/sent'));
      // Someone else asks for the same account: filed beside the first, never in its place; the owner is told each time.
      const again = new Agent();
      const h = formFor(await start(again, username, ['token', 'email']), '/account/restore/verify');
      await again.post(h.action, { ...h.fields });
      const send2 = formFor(await again.get(url('/account/restore/review')), '/account/restore/review');
      assert.equal((await again.post(send2.action, send2.fields)).location, url('/account/restore/sent'));
      const open = (await perform(admin, listRestoreRequestsOp, {})).filter((r) => r.username === username);
      assert.deepEqual(open.map((r) => r.lost.join(',')).sort(), ['password', 'token,email'].sort());
      assert.ok(open.every((r) => r.openForUser === 2), 'each shows that there are two');
      const told = await tessera.db.selectFrom('dev_outbox').select('subject').where('recipient', '=', `${username}@example.test`).where('subject', 'like', '%someone asked to restore access%').execute();
      assert.equal(told.length, 2, 'the owner heard of both, even of the one saying the email was lost');
      if (decide === 'sign-in') {
        await d.signIn(username);
        const withdrawn = (await perform(admin, listRestoreRequestsOp, { status: 'withdrawn' })).filter((r) => r.username === username);
        assert.deepEqual(withdrawn.map((r) => r.decidedBy), ['sign-in', 'sign-in']);
        assert.equal((await d.events('restore.withdrawn')).at(-1)!.actor, username);
      } else {
        const mine = open.find((r) => r.lost.includes('password'))!;
        await perform(admin, approveRestoreRequestOp, { id: mine.id });
        assert.ok(await verifyPassword((await findUserByUsername(tessera.db, username))!.password_hash, `${username}-password-9`));
        const other = (await perform(admin, listRestoreRequestsOp, { status: 'deleted' })).find((r) => r.username === username)!;
        assert.match(other.decidedBy!, new RegExp(`approved ${mine.id}`));
        await assert.rejects(perform(admin, approveRestoreRequestOp, { id: other.id }), /no open request/);
        const deleted = formFor(await start(new Agent(), username, ['token']), '/account/restore/verify');
        assert.ok(deleted, 'a new request can be made after a decision');
      }
    }
  });

  it('a name with no account gets the same pages and the same answer; nothing is sent or filed', async () => {
    const pages: string[] = [];
    for (const username of ['pia', 'nobody-here']) {
      const agent = new Agent();
      const proof = await start(agent, username, ['token']);
      pages.push(text(proof));
      const f = formFor(proof, '/account/restore/verify');
      const wrong = await agent.post(f.action, { ...f.fields, password: 'guess-1', code: '123456' });
      assert.equal(wrong.status, 400);
      pages.push(text(wrong));
      await agent.post(f.action, { ...f.fields });
      const send = formFor(await agent.get(url('/account/restore/review')), '/account/restore/review');
      const sent = await agent.post(send.action, send.fields);
      pages.push(sent.location!);
    }
    assert.deepEqual(pages.slice(0, 3), pages.slice(3), 'the pages read alike');
    assert.equal((await perform(admin, listRestoreRequestsOp, { status: 'all' })).filter((r) => r.username === 'nobody-here').length, 0);
  });

  it('50 parallel password proofs, the right one last: no more than the lockout threshold are checked', async () => {
    await createUser(tessera.db, { username: 'quin', password: 'quin-password-1' });
    const agent = new Agent();
    const f = formFor(await start(agent, 'quin', ['token']), '/account/restore/verify');
    const answers = await Promise.all([
      ...Array.from({ length: 49 }, (_, i) => agent.post(f.action, { ...f.fields, password: `wrong-${i}` })),
      agent.post(f.action, { ...f.fields, password: 'quin-password-1' }),
    ]);
    // A locked account answers as a wrong password does (the lock tells nothing); the count shows how many were checked.
    assert.equal(answers.at(-1)!.status, 400, 'the right one last is refused: the account is locked by then');
    assert.match(answers.at(-1)!.body, /the password is wrong/);
    const quin = (await findUserByUsername(tessera.db, 'quin'))!;
    assert.ok(quin.failed_logins <= 5, `${quin.failed_logins} checked`);
    assert.ok(quin.locked_until && quin.locked_until > new Date());
    await sql`update users set failed_logins = 0, locked_until = null where username = 'quin'`.execute(tessera.db);
  });

  it('bad input: no draft, a forged draft, no loss chosen, a bad name, NUL, an oversized form, no CSRF', async () => {
    const agent = new Agent();
    assert.equal((await agent.get(url('/account/restore/verify'))).status, 400);
    agent.cookies.set('tessera.restore', 'v1.forged.value.tag');
    const forged = await agent.get(url('/account/restore/review'));
    assert.equal(forged.status, 400);
    assert.match(text(forged), /Start again/);
    const f = formFor(await agent.get(url('/account/restore')), '/account/restore');
    const none = await agent.post(f.action, { ...f.fields, username: 'pia' });
    assert.equal(none.status, 400);
    assert.match(none.body, /say what you lost/);
    const bad = await postPairs(agent, f.action, [['csrf', f.fields.csrf!], ['username', 'bad name!'], ['lost', 'token']]);
    assert.equal(bad.status, 400);
    const unknownLoss = await postPairs(agent, f.action, [['csrf', f.fields.csrf!], ['username', 'pia'], ['lost', 'kidney']]);
    assert.match(unknownLoss.body, /say what you lost/);
    const nul = await postPairs(agent, f.action, [['csrf', f.fields.csrf!], ['username', 'pia\u0000'], ['lost', 'token']]);
    assert.equal(nul.status, 400);
    const big = await agent.post(f.action, { ...f.fields, username: 'x'.repeat(20_000) });
    assert.equal(big.status, 413);
    assert.equal((await agent.post(f.action, { username: 'pia', lost: 'token' })).status, 403);
    for (const page of [none, bad, nul, big]) assert.doesNotMatch(page.body, /at .*\.ts:\d+/, 'no stack trace');
  });
});
