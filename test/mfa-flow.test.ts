import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'otplib';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { unusedPort } from './support/ports.js';
import { startMailbox, type Mailbox } from './support/smtp.js';
import { startSmsFakes, TWILIO_SID, TWILIO_TOKEN, type SmsFakes } from './support/sms-fakes.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { demoAuthorizationUrl, exchangeDemoCode, passwordStep } from './support/journey.js';
import { createUser, findUserByUsername } from '../src/directory/users.js';
import { addGroupMember, createGroup } from '../src/directory/groups.js';
import { createPolicy } from '../src/policy/policies.js';
import { setSetting, loadSettings } from '../src/settings/settings.js';
import { beginEnrolment, checkAuthenticatorCode, confirmEnrolment, verifyAuthenticatorCode } from '../src/factors/authenticators.js';
import { createChallenge, verifyChallenge } from '../src/factors/challenges.js';
import { createClient } from '../src/clients/clients.js';
import { loadConfig } from '../src/config.js';
import { startTessera } from '../src/server.js';
import { createLogger } from '../src/log.js';
import { TEST_SECRET } from './support/tessera.js';
import { ACR } from '../src/oidc/assurance.js';

const CALLBACK = (issuer: string) => (u: string) => u.startsWith(`${issuer}/demo/callback`);


function codeIn(text: string, length = 6): string {
  const match = new RegExp(`\\b(\\d{${length}})\\b`).exec(text);
  if (!match) throw new Error(`no code in: ${text}`);
  return match[1]!;
}

describe('multi-factor login', () => {
  let tessera: TestTessera;
  let issuer: string;
  let mailbox: Mailbox;
  let fakes: SmsFakes;
  const set = (path: string, value: unknown) => setSetting(tessera.db, tessera.box, path, value);

  before(async () => {
    tessera = await startTestTessera();
    issuer = tessera.issuer;
    mailbox = await startMailbox();
    fakes = await startSmsFakes();
    await set('smtp.host', '127.0.0.1');
    await set('smtp.port', mailbox.port);
    await set('smtp.security', 'none');
    await set('smtp.from', 'Tessera <id@example.test>');
    await set('twilio.accountSid', TWILIO_SID);
    await set('twilio.authToken', TWILIO_TOKEN);
    await set('twilio.from', '+15005550006');
    await set('twilio.apiBaseUrl', fakes.url);
    await set('twilio.active', true);
    await set('mfa.otp.resendCooldownSeconds', 0);
    await createGroup(tessera.db, 'staff');
    await createPolicy(tessera.db, { name: 'staff need MFA', subjectType: 'group', subject: 'staff', mfa: 'required' });
    for (const name of ['olga', 'pete', 'quinn', 'rita', 'sam', 'tess', 'uma']) {
      await createUser(tessera.db, { username: name, password: `${name}-password-1`, email: `${name}@example.test`, emailVerified: true, phone: '+14155550123', phoneVerified: true });
      await addGroupMember(tessera.db, 'staff', name);
    }
  });
  after(async () => {
    await tessera.stop();
    await mailbox.close();
    await fakes.close();
  });

  async function choose(agent: Agent, page: AgentResponse, factor: string): Promise<AgentResponse> {
    const form = formFor(page, '/mfa');
    return agent.follow(await agent.post(form.action, { ...form.fields, factor }));
  }
  async function enter(agent: Agent, page: AgentResponse, code: string): Promise<AgentResponse> {
    const form = formFor(page, '/mfa/code');
    return agent.follow(await agent.post(form.action, { ...form.fields, code }), CALLBACK(issuer));
  }
  async function allow(agent: Agent, page: AgentResponse): Promise<string> {
    const form = formFor(page, '/consent');
    const back = await agent.follow(await agent.post(form.action, { ...form.fields, decision: 'allow' }), CALLBACK(issuer));
    return back.location!;
  }

  it('email: the code goes out over SMTP and the ID token says MFA', async () => {
    const agent = new Agent();
    const choice = await passwordStep(agent, issuer, 'olga', 'olga-password-1');
    assert.match(choice.body, /Verify it’s you/);
    assert.match(choice.body, /Email a code to o•+@example\.test/);
    assert.match(choice.body, /Text a code to \+1•+0123/);
    const codePage = await choose(agent, choice, 'email');
    assert.match(codePage.body, /We sent a 6-digit code to o•+@example\.test/);
    const mail = await mailbox.next();
    assert.equal((mail.to as { text: string }).text, 'olga@example.test');
    assert.equal(mail.subject, 'Your Tessera sign-in code');
    const consent = await enter(agent, codePage, codeIn(mail.text!));
    const claims = await exchangeDemoCode(issuer, await allow(agent, consent));
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(claims.acr, ACR.mfa);
    const olga = await findUserByUsername(tessera.db, 'olga');
    const events = (await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', olga!.id).execute()).map((e) => e.type);
    for (const t of ['login.password_verified', 'mfa.sent', 'mfa.success', 'login.success']) assert.ok(events.includes(t), `${t} audited`);
  });

  it('SMS through Twilio: amr says sms; a wrong code is counted and named', async () => {
    const agent = new Agent();
    const codePage = await choose(agent, await passwordStep(agent, issuer, 'pete', 'pete-password-1'), 'sms');
    const sms = fakes.twilio.at(-1)!;
    const form = new URLSearchParams(sms.body);
    assert.equal(form.get('To'), '+14155550123');
    const code = codeIn(form.get('Body')!);
    const wrong = await enter(agent, codePage, code === '000000' ? '111111' : '000000');
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /That code is not right\. 4 tries left\./);
    const claims = await exchangeDemoCode(issuer, await allow(agent, await enter(agent, wrong, code)));
    assert.deepEqual(claims.amr, ['pwd', 'sms', 'mfa']);
  });

  it('SMS through the generic gateway when it is the active provider', async () => {
    await set('twilio.active', false);
    await set('sms_gateway.url', `${fakes.url}/gateway/send`);
    await set('sms_gateway.template', 'to={to}&text={message}');
    await set('sms_gateway.successCriteria', { text: ['OK'], statuses: [200] });
    await set('sms_gateway.active', true);
    try {
      const agent = new Agent();
      const codePage = await choose(agent, await passwordStep(agent, issuer, 'quinn', 'quinn-password-1'), 'sms');
      const sent = new URLSearchParams(fakes.gateway.at(-1)!.body);
      assert.equal(sent.get('to'), '+14155550123');
      const consent = await enter(agent, codePage, codeIn(sent.get('text')!));
      assert.match(consent.body, /Allow access\?/);
    } finally {
      await set('sms_gateway.active', false);
      await set('twilio.active', true);
    }
  });

  it('50 parallel wrong guesses at an email code, the right one last: only the lockout threshold are checked, the right one is refused, the code dies', async () => {
    const agent = new Agent();
    const codePage = await choose(agent, await passwordStep(agent, issuer, 'rita', 'rita-password-1'), 'email');
    const right = codeIn((await mailbox.next()).text!);
    const wrongCode = right === '999999' ? '999998' : '999999';
    const form = formFor(codePage, '/mfa/code');
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => agent.post(form.action, { ...form.fields, code: i === 49 ? right : wrongCode })));
    const statuses = answers.map((a) => a.status);
    assert.equal(statuses.filter((st) => st === 401).length, 5, 'the threshold (5) were checked and wrong');
    assert.equal(statuses.filter((st) => st === 429).length, 45, 'the rest, the right code included, were refused unchecked');
    let rita = await findUserByUsername(tessera.db, 'rita');
    assert.ok(rita!.locked_until && rita!.locked_until > new Date(), 'wrong email codes lock the account like wrong passwords');
    const challenge = await tessera.db.selectFrom('otp_challenges').selectAll().where('user_id', '=', rita!.id).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    assert.equal(challenge.attempts, 5, 'the code itself was tried only 5 times');
    // When the lock has passed, that code has had its tries: it is dead.
    await tessera.db.updateTable('users').set({ locked_until: new Date(Date.now() - 1000) }).where('id', '=', rita!.id).execute();
    const dead = await enter(agent, codePage, right);
    assert.equal(dead.status, 401);
    assert.match(dead.body, /no longer works\. Ask for a new code\./);
    // A new code can be requested and works.
    const resend = formFor(dead, '/mfa/resend');
    const fresh = await agent.follow(await agent.post(resend.action, resend.fields));
    const consent = await enter(agent, fresh, codeIn((await mailbox.next()).text!));
    assert.match(consent.body, /Allow access\?/);
    rita = await findUserByUsername(tessera.db, 'rita');
    assert.equal(rita!.failed_logins, 0, 'the count is cleared when the login (password and second factor) succeeds');
  });

  it('50 parallel wrong TOTP codes, the right one last: only the threshold are checked and the right one is refused; the password does not reset the count', async () => {
    const user = await createUser(tessera.db, { username: 'tom', password: 'tom-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test-enrolment');
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    // Two wrong passwords first: the right password then does not wipe them (only a completed login does).
    for (let i = 0; i < 2; i++) await passwordStep(new Agent(), issuer, 'tom', 'wrong-password');
    const agent = new Agent();
    const codePage = await passwordStep(agent, issuer, 'tom', 'tom-password-1');
    assert.equal((await findUserByUsername(tessera.db, 'tom'))?.failed_logins, 2);
    const right = await generate({ secret: enrolment.secret });
    const wrong = right === '000000' ? '000001' : '000000';
    const form = formFor(codePage, '/mfa/code');
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => agent.post(form.action, { ...form.fields, code: i === 49 ? right : wrong })));
    assert.equal(answers.filter((a) => a.status === 401).length, 3, 'threshold 5 less the 2 wrong passwords were checked');
    assert.equal(answers.filter((a) => a.status === 429).length, 47);
    const tom = await findUserByUsername(tessera.db, 'tom');
    assert.equal(tom?.failed_logins, 5);
    assert.ok(tom!.locked_until && tom!.locked_until > new Date());
  });

  it('send limits hold under 50 parallel requests: cooldown per sign-in, per destination across users, per address', async () => {
    const user = await createUser(tessera.db, { username: 'sal', password: 'sal-password-1' });
    // Many users, so nothing per user (a lock, a count) serializes the requests across users.
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => createUser(tessera.db, { username: `pump-${i}` })));
    const settings = await loadSettings(tessera.db, tessera.box);
    const key = tessera.box.deriveKey('otp-code');
    const otp = { ...settings.mfa.otp, resendCooldownSeconds: 30, perUserPerHour: 1000, perDestinationPerHour: 10, perIpPerHour: 30 };
    const send = (over: { destination?: string; ip?: string; interactionUid?: string; userId?: string }) =>
      createChallenge(tessera.db, key, otp, { userId: over.userId ?? user.id, factor: 'sms', destination: over.destination ?? '+14155550177', ip: over.ip ?? '198.51.100.1', interactionUid: over.interactionUid ?? 'sign-in-a', purpose: 'login' });
    const sent = (results: Awaited<ReturnType<typeof send>>[]) => results.filter((r) => !('kind' in r)).length;

    // One sign-in, 50 sends at once (a slow SMS provider makes them overlap): one goes out.
    assert.equal(sent(await Promise.all(Array.from({ length: 50 }, () => send({ ip: '198.51.100.1' })))), 1);
    // A new sign-in is not held back by the earlier one's code.
    assert.equal(sent([await send({ interactionUid: 'sign-in-b', ip: '198.51.100.1' })]), 1);
    // One number shared by many sign-ins (SMS pumping): exactly the destination limit.
    assert.equal(sent(await Promise.all(Array.from({ length: 50 }, (_, i) => send({ userId: many[i]!.id, destination: '+14155550188', interactionUid: `pump-${i}`, ip: `198.51.100.${10 + i}` })))), 10);
    // One address asking for many numbers: exactly the per-address limit.
    assert.equal(sent(await Promise.all(Array.from({ length: 50 }, (_, i) => send({ userId: many[i]!.id, destination: `+1415555${String(1000 + i)}`, interactionUid: `ip-${i}`, ip: '203.0.113.9' })))), 30);
    const refusal = await send({ destination: '+14155552999', interactionUid: 'ip-last', ip: '203.0.113.9' });
    assert.ok('kind' in refusal && refusal.kind === 'limit' && refusal.scope === 'ip');
    assert.ok(refusal.retryAt.getTime() > Date.now() + 3500_000, 'retry when the hour has passed');
  });

  it('a code works once: of several parallel right answers exactly one is accepted', async () => {
    const user = await createUser(tessera.db, { username: 'bea', password: 'bea-password-1', email: 'bea@example.test', emailVerified: true });
    const settings = await loadSettings(tessera.db, tessera.box);
    const key = tessera.box.deriveKey('otp-code');
    const made = await createChallenge(tessera.db, key, settings.mfa.otp, { userId: user.id, factor: 'email', destination: 'bea@example.test', ip: '127.0.0.9', interactionUid: null, purpose: 'login' });
    assert.ok(!('kind' in made));
    const stored = await tessera.db.selectFrom('otp_challenges').select('code_hash').where('id', '=', made.challenge.id).executeTakeFirstOrThrow();
    assert.ok(!stored.code_hash.includes(made.code), 'only a keyed hash is stored');
    const outcomes = await Promise.all(Array.from({ length: 5 }, () => verifyChallenge(tessera.db, key, made.challenge.id, user.id, made.code)));
    assert.equal(outcomes.filter((o) => o.ok).length, 1);
    assert.ok(outcomes.filter((o) => !o.ok).every((o) => !o.ok && o.reason === 'used'));
    const other = await createUser(tessera.db, { username: 'cal', password: 'cal-password-1' });
    assert.deepEqual(await verifyChallenge(tessera.db, key, made.challenge.id, other.id, made.code), { ok: false, reason: 'unknown' }, 'a challenge answers only for its own user');
  });

  it('the right code sent 10 times at once (a double click): one signs in, the others send the browser on after it, and nothing counts toward the lockout', async () => {
    const user = await createUser(tessera.db, { username: 'dot', password: 'dot-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test-enrolment');
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    const agent = new Agent();
    const codePage = await passwordStep(agent, issuer, 'dot', 'dot-password-1');
    const form = formFor(codePage, '/mfa/code');
    const right = await generate({ secret: enrolment.secret });
    const answers = await Promise.all(Array.from({ length: 10 }, () => agent.post(form.action, { ...form.fields, code: right })));
    // One request signs in; a late one that loads the finished sign-in is sent on to the same place.
    const onward = answers.filter((a) => a.status === 303 && new URL(a.location!).pathname.startsWith('/auth/'));
    assert.ok(onward.length >= 1 && onward.every((a) => a.location === onward[0]!.location), answers.map((a) => `${a.status} ${a.location}`).join());
    const passes = await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', user.id).where('type', '=', 'mfa.success').execute();
    assert.equal(passes.length, 1, 'one sign-in');
    // The others were right but late: each sends the browser to the code page, which, the sign-in
    // being finished, sends it on where the first answer did (the browser shows the last answer).
    // Each answer is admitted before it is checked, so while the burst lasts the lockout may hold some back (429).
    const late = answers.filter((a) => !onward.includes(a));
    assert.ok(late.every((a) => (a.status === 303 && /\/mfa\/code\?factor=totp&used=1$/.test(a.location!)) || a.status === 429), late.map((a) => `${a.status} ${a.location}`).join());
    const lateOne = late.find((a) => a.status === 303);
    if (lateOne) {
      const followed = await agent.get(lateOne.location!);
      assert.equal(followed.status, 303);
      assert.equal(followed.location, onward[0]!.location, 'sent on where the first answer went');
    }
    // Sent again after the sign-in finished (a reload of the form), a page of that step sends the browser on too, deciding nothing.
    const resent = await agent.post(form.action, { ...form.fields, code: '000000' });
    assert.equal(resent.status, 303);
    assert.equal(resent.location, onward[0]!.location);
    // The same code in a later sign-in: the code page says it was just used.
    const later = new Agent();
    const laterPage = await passwordStep(later, issuer, 'dot', 'dot-password-1');
    const again = await later.post(formFor(laterPage, '/mfa/code').action, { ...formFor(laterPage, '/mfa/code').fields, code: right });
    assert.match(again.location ?? '', /\/mfa\/code\?factor=totp&used=1$/);
    const told = await later.get(again.location!);
    assert.equal(told.status, 200);
    assert.match(told.body, /This code was just used\. Wait for your app or token to show the next one\./);
    const dot = await findUserByUsername(tessera.db, 'dot');
    assert.equal(dot?.failed_logins, 0);
    assert.ok(!dot?.locked_until || dot.locked_until <= new Date(), 'no lock is left');
    // The same for an email code.
    const mail = await createUser(tessera.db, { username: 'dora', password: 'dora-password-1', email: 'dora@example.test', emailVerified: true });
    await addGroupMember(tessera.db, 'staff', mail.username);
    const mailAgent = new Agent();
    const sent = await choose(mailAgent, await passwordStep(mailAgent, issuer, 'dora', 'dora-password-1'), 'email');
    const code = codeIn((await mailbox.next()).text!);
    const mailForm = formFor(sent, '/mfa/code');
    const mailAnswers = await Promise.all(Array.from({ length: 10 }, () => mailAgent.post(mailForm.action, { ...mailForm.fields, code })));
    const described = mailAnswers.map((a) => `${a.status} ${a.location}`).join();
    const mailOnward = mailAnswers.filter((a) => a.status === 303 && new URL(a.location!).pathname.startsWith('/auth/'));
    assert.ok(mailOnward.length >= 1 && mailOnward.every((a) => a.location === mailOnward[0]!.location), described);
    assert.ok(mailAnswers.every((a) => a.status === 429 || mailOnward.includes(a) || (a.status === 303 && /\/mfa\/code\?factor=email&used=1$/.test(a.location!))), described);
    assert.equal((await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', mail.id).where('type', '=', 'mfa.success').execute()).length, 1, 'one sign-in');
    const dora = await findUserByUsername(tessera.db, 'dora');
    assert.equal(dora?.failed_logins, 0);
    assert.ok(!dora?.locked_until || dora.locked_until <= new Date(), 'no lock is left');
  });

  it('a code expires', async () => {
    const agent = new Agent();
    const codePage = await choose(agent, await passwordStep(agent, issuer, 'sam', 'sam-password-1'), 'email');
    const code = codeIn((await mailbox.next()).text!);
    const sam = await findUserByUsername(tessera.db, 'sam');
    await tessera.db.updateTable('otp_challenges').set({ expires_at: new Date(Date.now() - 1000) }).where('user_id', '=', sam!.id).execute();
    const expired = await enter(agent, codePage, code);
    assert.match(expired.body, /This code has expired/);
  });

  it('send throttling: resend cooldown, then the per-user hourly limit, each with when to retry', async () => {
    await set('mfa.otp.resendCooldownSeconds', 60);
    await set('mfa.otp.perUserPerHour', 3);
    try {
      const agent = new Agent();
      const choice = await passwordStep(agent, issuer, 'tess', 'tess-password-1');
      const codePage = await choose(agent, choice, 'email');
      await mailbox.next();
      const resend = formFor(codePage, '/mfa/resend');
      const tooSoon = await agent.post(resend.action, resend.fields);
      assert.equal(tooSoon.status, 429);
      assert.match(tooSoon.body, /A code was sent moments ago\. You can ask for a new one in \d+ seconds\./);
      await set('mfa.otp.resendCooldownSeconds', 0);
      await agent.follow(await agent.post(resend.action, resend.fields));
      await agent.follow(await agent.post(resend.action, resend.fields));
      await mailbox.next();
      await mailbox.next();
      const limited = await agent.post(resend.action, resend.fields);
      assert.equal(limited.status, 429);
      assert.match(limited.body, /Too many codes have been requested\. Try again in \d+ minutes, or choose another method\./);
      const tess = await findUserByUsername(tessera.db, 'tess');
      assert.equal((await tessera.db.selectFrom('otp_challenges').select('id').where('user_id', '=', tess!.id).execute()).length, 3, 'no fourth code was made');
      const refused = await tessera.db.selectFrom('audit_events').select('details').where('subject', '=', tess!.id).where('type', '=', 'mfa.send_refused').execute();
      assert.equal(refused.length, 2);
    } finally {
      await set('mfa.otp.resendCooldownSeconds', 0);
      await set('mfa.otp.perUserPerHour', 10);
    }
  });

  it('delivery failures: the user is told, may pick another method; audited; nothing reported as sent', async () => {
    const agent = new Agent();
    const choice = await passwordStep(agent, issuer, 'uma', 'uma-password-1');
    await set('smtp.port', await unusedPort());
    fakes.twilioError = { status: 400, code: 21211, message: 'invalid To' };
    try {
      const mailFailed = await choose(agent, choice, 'email');
      assert.equal(mailFailed.status, 503);
      assert.match(mailFailed.body, /We could not send a code by email just now\. Try again, or choose another method\./);
      const smsFailed = await choose(agent, mailFailed, 'sms');
      assert.equal(smsFailed.status, 503);
      assert.match(smsFailed.body, /by text message/);
    } finally {
      await set('smtp.port', mailbox.port);
      fakes.twilioError = null;
    }
    const uma = await findUserByUsername(tessera.db, 'uma');
    const events = await tessera.db.selectFrom('audit_events').select(['type', 'details']).where('subject', '=', uma!.id).execute();
    assert.equal(events.filter((e) => e.type === 'mfa.send_failed').length, 2);
    assert.equal(events.filter((e) => e.type === 'mfa.sent').length, 0);
    const challenges = await tessera.db.selectFrom('otp_challenges').selectAll().where('user_id', '=', uma!.id).execute();
    assert.ok(challenges.every((c) => !c.delivered && c.consumed_at !== null), 'undelivered codes can never be used');
    // Delivery works again: the user carries on with email.
    const codePage = await choose(agent, choice, 'email');
    assert.match((await enter(agent, codePage, codeIn((await mailbox.next()).text!))).body, /Allow access\?/);
  });

  it('TOTP: drift inside the window accepted, outside refused, a used step never again', async () => {
    const user = await createUser(tessera.db, { username: 'vic', password: 'vic-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test-enrolment');
    const drift = { driftStepsBefore: 1, driftStepsAfter: 1 };
    const now = Math.floor(Date.now() / 1000);
    const at = (offset: number) => generate({ secret: enrolment.secret, epoch: now + offset });
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(0)), false, 'unconfirmed authenticators do not count');
    assert.equal(await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await at(-30)), true);
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(-30)), false, 'the step used at enrolment is spent');
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(-90)), false, 'three steps back is outside the window');
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(90)), false, 'three steps ahead is outside the window');
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(0)), true);
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(0)), false, 'replay refused');
    assert.equal(await checkAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(0)), 'replayed', 'and told apart from a wrong code');
    assert.equal(await checkAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(-30)), 'wrong', 'an older code of the window is just wrong');
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, await at(30)), true, 'one step ahead is inside the window');
    const wide = { driftStepsBefore: 0, driftStepsAfter: 3 };
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, wide, user.id, await at(90)), true, 'a wider configured window accepts it');
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, 'abcdef'), false);
    assert.equal(await verifyAuthenticatorCode(tessera.db, tessera.box, drift, user.id, '1234567'), false);
  });

  it('TOTP at login; wrong codes count toward the lockout', async () => {
    const user = await createUser(tessera.db, { username: 'walt', password: 'walt-password-1' });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, user, 'Tessera', 'test-enrolment');
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, drift, user.id, enrolment.authenticatorId, await generate({ secret: enrolment.secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
    // No policy, but an enrolled authenticator app is asked for.
    const agent = new Agent();
    // The app is walt's only method: its code page comes at once, with nothing to choose.
    const codePage = await passwordStep(agent, issuer, 'walt', 'walt-password-1');
    assert.match(codePage.body, /Enter the code from your authenticator app or token/);
    const wrong = await enter(agent, codePage, (await generate({ secret: enrolment.secret })) === '000000' ? '000001' : '000000');
    assert.equal(wrong.status, 401);
    assert.equal((await findUserByUsername(tessera.db, 'walt'))?.failed_logins, 1);
    const claims = await exchangeDemoCode(issuer, await allow(agent, await enter(agent, wrong, await generate({ secret: enrolment.secret }))));
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    assert.equal((await findUserByUsername(tessera.db, 'walt'))?.failed_logins, 0);
  });

  it('"authenticator app required" enrols at first logon, by QR and key', async () => {
    await createUser(tessera.db, { username: 'xena', password: 'xena-password-1', email: 'xena@example.test', emailVerified: true });
    await createPolicy(tessera.db, { name: 'xena app', subjectType: 'user', subject: 'xena', mfa: 'required', requireAuthenticatorApp: true });
    const agent = new Agent();
    const page = await passwordStep(agent, issuer, 'xena', 'xena-password-1');
    assert.match(page.body, /Set up your authenticator app/);
    assert.match(page.body, /<img class="qr" src="data:image\/png;base64,/);
    assert.doesNotMatch(page.body, /Email a code/, 'no other method is offered');
    const secret = /id="totp-secret">([A-Z2-7 ]+)</.exec(page.body)![1]!.replace(/ /g, '');
    const form = formFor(page, '/mfa/enrol');
    const wrong = await agent.post(form.action, { ...form.fields, code: '000000' });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /id="totp-secret">/, 'the same secret is shown again');
    assert.equal(/id="totp-secret">([A-Z2-7 ]+)</.exec(wrong.body)![1]!.replace(/ /g, ''), secret);
    const consent = await agent.follow(await agent.post(form.action, { ...form.fields, code: await generate({ secret }) }));
    assert.match(consent.body, /Allow access\?/);
    const xena = await findUserByUsername(tessera.db, 'xena');
    const authenticators = await tessera.db.selectFrom('authenticators').selectAll().where('user_id', '=', xena!.id).execute();
    assert.equal(authenticators.length, 1);
    assert.ok(authenticators[0]!.confirmed_at);
    assert.ok(!authenticators[0]!.secret.includes(secret), 'the secret is sealed at rest');
    assert.ok((await tessera.db.selectFrom('audit_events').select('type').where('subject', '=', xena!.id).where('type', '=', 'mfa.enrolled').execute()).length === 1);
  });

  it('a password alone cannot enrol an authenticator when the policy does not call for it', async () => {
    const agent = new Agent();
    const choice = await passwordStep(agent, issuer, 'olga', 'olga-password-1');
    const uid = new URL(choice.url).pathname.split('/')[2];
    const enrol = await agent.get(`${issuer}/interaction/${uid}/mfa/enrol`);
    assert.equal(enrol.status, 303, 'sent back to the method choice');
    const form = formFor(choice, '/mfa');
    const posted = await agent.post(`${issuer}/interaction/${uid}/mfa/enrol`, { csrf: form.fields.csrf!, code: '123456' });
    assert.equal(posted.status, 400);

    // Asking to set up an app opens enrolment only after a code is passed: forged posts before that are refused.
    const opted = await agent.follow(await agent.post(`${issuer}/interaction/${uid}/mfa/enrol-after`, { csrf: form.fields.csrf! }));
    assert.match(opted.body, /first confirm it’s you/);
    assert.equal((await agent.get(`${issuer}/interaction/${uid}/mfa/enrol`)).status, 303);
    assert.equal((await agent.post(`${issuer}/interaction/${uid}/mfa/enrol`, { csrf: form.fields.csrf!, code: '123456' })).status, 400);
    assert.equal((await agent.post(`${issuer}/interaction/${uid}/mfa/enrol/skip`, { csrf: form.fields.csrf! })).status, 400, 'no skipping past a code not yet passed');
    const codePage = await choose(agent, opted, 'email');
    const enrolPage = await enter(agent, codePage, codeIn((await mailbox.next()).text!));
    assert.match(enrolPage.body, /Set up your authenticator app/);
    assert.match(enrolPage.body, /Not now, continue signing in/);
    const skip = formFor(enrolPage, '/mfa/enrol/skip');
    const consent = await agent.follow(await agent.post(skip.action, skip.fields));
    const claims = await exchangeDemoCode(issuer, await allow(agent, consent));
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
  });

  it('no usable method: a page that says so and what to do', async () => {
    await createUser(tessera.db, { username: 'yuri', password: 'yuri-password-1', phone: '+14155550999' });
    await createPolicy(tessera.db, { name: 'yuri sms', subjectType: 'user', subject: 'yuri', mfa: 'required', allowedFactors: ['sms'] });
    const agent = new Agent();
    const page = await passwordStep(agent, issuer, 'yuri', 'yuri-password-1');
    assert.equal(page.status, 403);
    assert.match(page.body, /Cannot complete sign-in/);
    assert.match(page.body, /verify your phone number/);
    const cancel = formFor(page, '/abort');
    const back = await agent.follow(await agent.post(cancel.action, cancel.fields), CALLBACK(issuer));
    assert.equal(new URL(back.location!).searchParams.get('error'), 'access_denied');
  });

  it('a client that requires MFA gets it for every user', async () => {
    await createUser(tessera.db, { username: 'zoe', password: 'zoe-password-1', email: 'zoe@example.test', emailVerified: true });
    await createClient(tessera.db, tessera.box, { clientId: 'vault', public: true, redirectUris: [`${issuer}/demo/callback`] });
    await tessera.db.updateTable('clients').set({ mfa_required: true }).where('client_id', '=', 'vault').execute();
    const url = (await demoAuthorizationUrl(issuer)).replace('client_id=tessera-demo', 'client_id=vault');
    const agent = new Agent();
    const page = await passwordStep(agent, issuer, 'zoe', 'zoe-password-1', url);
    assert.match(page.body, /Verify it’s you/);
    // The same user signing in to the demo app (no MFA required) goes straight on.
    const plain = await passwordStep(new Agent(), issuer, 'zoe', 'zoe-password-1');
    assert.match(plain.body, /Allow access\?/);
  });

  it('step-up: a password-only session asked for the MFA acr goes to the second factor, not the password', async () => {
    await createUser(tessera.db, { username: 'amy', password: 'amy-password-1', email: 'amy@example.test', emailVerified: true });
    const agent = new Agent();
    const consent = await passwordStep(agent, issuer, 'amy', 'amy-password-1');
    const first = await exchangeDemoCode(issuer, await allow(agent, consent));
    assert.equal(first.acr, ACR.password);
    const stepUp = `${await demoAuthorizationUrl(issuer)}&acr_values=${encodeURIComponent(ACR.mfa)}`;
    const choice = await agent.follow(await agent.get(stepUp), CALLBACK(issuer));
    assert.match(choice.body, /Verify it’s you/, 'no password asked again');
    const codePage = await choose(agent, choice, 'email');
    const done = await enter(agent, codePage, codeIn((await mailbox.next()).text!));
    const claims = await exchangeDemoCode(issuer, done.location ?? (await allow(agent, done)));
    assert.equal(claims.acr, ACR.mfa);
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
  });

  it('MFA pages out of order or without a password step send the browser back to the start', async () => {
    const agent = new Agent();
    const page = await agent.follow(await agent.get(await demoAuthorizationUrl(issuer)));
    const uid = new URL(page.url).pathname.split('/')[2];
    const early = await agent.get(`${issuer}/interaction/${uid}/mfa`);
    assert.equal(early.status, 303);
    assert.equal(new URL(early.location!).pathname, `/interaction/${uid}`);
    const bogusFactor = await passwordStep(agent, issuer, 'olga', 'olga-password-1');
    const form = formFor(bogusFactor, '/mfa');
    const res = await agent.post(form.action, { ...form.fields, factor: 'carrier-pigeon' });
    assert.equal(res.status, 400);
    const noCode = await agent.get(`${new URL(form.action).href}/code?factor=email`);
    assert.equal(noCode.status, 303, 'no code requested yet');
  });

  it('production mode with code methods on and no delivery configured refuses to start, saying what to do', async () => {
    const config = loadConfig({ TESSERA_MODE: 'production', PORT: '0', HOST: '127.0.0.1', TESSERA_SECRET: TEST_SECRET, ISSUER: 'https://id.example.test', DATABASE_URL: 'postgres://unused.invalid/x', LOG_LEVEL: 'silent' });
    const fresh = await startTestTessera();
    try {
      await assert.rejects(startTessera(config, { database: fresh.testDb.handle, logger: createLogger('silent') }), /email codes are switched on but no SMTP server is configured/);
      await setSetting(fresh.db, fresh.box, 'mfa.methods.email', false);
      await assert.rejects(startTessera(config, { database: fresh.testDb.handle, logger: createLogger('silent') }), /SMS codes are switched on but no SMS provider is active/);
    } finally {
      await fresh.stop();
    }
  });
});
