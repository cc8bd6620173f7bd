import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createUser } from '../src/directory/users.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { resetMfaOp, unlockUserOp } from '../src/admin/users.js';
import { createPolicyOp, removePolicyOp } from '../src/admin/system.js';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { pageText, portalDriver, type PortalDriver } from './support/portal.js';
import { demoAuthorizationUrl, exchangeDemoCode } from './support/journey.js';
import { beginEnrolment, confirmEnrolment } from '../src/factors/authenticators.js';
import { loadSettings } from '../src/settings/settings.js';
import { generate } from 'otplib';
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
    assert.equal(await useRecoveryCode(db, KEY, userId, codes[0]!), 'used', 'each code is good once, and told apart from a wrong one');
    assert.equal(await useRecoveryCode(db, KEY, otherId, codes[1]!), null, 'another user’s code is no code of theirs');
    assert.equal(await useRecoveryCode(db, KEY, userId, 'not-a-code'), null);
    const status = await recoveryCodeStatus(db, userId);
    assert.deepEqual([status?.total, status?.left], [10, 9]);
  });

  it('20 parallel submissions of one code: exactly one is accepted', async () => {
    const db = testDb.handle.db;
    const codes = await generateRecoveryCodes(db, KEY, userId);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => useRecoveryCode(db, KEY, userId, codes[3]!)));
    assert.equal(outcomes.filter((o) => typeof o === 'object' && o !== null).length, 1);
    assert.ok(outcomes.every((o) => typeof o === 'object' || o === 'used'), 'the others were told it was used');
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

/** Recovery codes as users meet them: made on /account, used at sign-in as "Recovery code", each once. */
describe('recovery codes at sign-in', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let portal: PortalDriver;
  let secret: string;
  let codes: string[];

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    portal = portalDriver(tessera, admin);
    const rita = await createUser(tessera.db, { username: 'rita', password: 'rita-password-1', email: 'rita@example.test', emailVerified: true });
    const enrolment = await beginEnrolment(tessera.db, tessera.box, rita, 'Tessera', 'test-enrolment');
    secret = enrolment.secret;
    const drift = (await loadSettings(tessera.db, tessera.box)).mfa.totp;
    assert.ok(await confirmEnrolment(tessera.db, tessera.box, drift, rita.id, enrolment.authenticatorId, await generate({ secret, epoch: Math.floor(Date.now() / 1000) - 30 })));
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  /** A demo-app sign-in up to the page that takes a recovery code. */
  async function toRecoveryPage(agent: Agent): Promise<AgentResponse> {
    let page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)));
    const login = formFor(page, '/login');
    page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'rita', password: 'rita-password-1' }));
    assert.ok(page.body.includes('>Recovery code</button>'), pageText(page).slice(0, 300));
    const choice = formFor(page, '/mfa');
    page = await agent.follow(await agent.post(choice.action, { ...choice.fields, factor: 'recovery' }));
    assert.equal(page.status, 200);
    assert.ok(!page.body.includes('inputmode="numeric"'), 'letters and digits can be typed');
    return page;
  }
  async function submit(agent: Agent, page: AgentResponse, code: string): Promise<AgentResponse> {
    const form = formFor(page, '/mfa/code');
    return agent.post(form.action, { ...form.fields, code });
  }

  it('made on /account (shown once, downloadable as text), used once at sign-in: the user is told by email', async () => {
    const { agent, page } = await portal.signIn('rita', { factor: 'totp', secret });
    assert.match(pageText(page), /No recovery codes yet/);
    const intro = await agent.get(portal.url('/account/recovery-codes'));
    assert.match(pageText(intro), /You have no recovery codes yet/);
    const made = await agent.follow(await agent.post(formFor(intro, '/account/recovery-codes').action, formFor(intro, '/account/recovery-codes').fields));
    assert.equal(made.status, 200);
    codes = [...made.body.matchAll(/<li><code>([a-z0-9]{4}-[a-z0-9]{4})<\/code><\/li>/g)].map((m) => m[1]!);
    assert.equal(codes.length, 10);
    const download = decodeURIComponent(/href="data:text\/plain;charset=utf-8,([^"]+)" download="recovery-codes.txt"/.exec(made.body)![1]!.replace(/&amp;/g, '&'));
    assert.ok(codes.every((c) => download.includes(c)));
    assert.equal(made.headers.get('cache-control'), 'no-store');
    const again = await agent.get(portal.url('/account/recovery-codes'));
    assert.ok(!codes.some((c) => again.body.includes(c)), 'never shown again');
    assert.match(pageText(again), /10 of 10 codes of your set are left/);

    const signIn = new Agent();
    const codePage = await toRecoveryPage(signIn);
    const done = await signIn.follow(await submit(signIn, codePage, ` ${codes[0]!.toUpperCase()} `), (u) => u.includes('/demo/callback'));
    const consented = /Allow access\?/.test(done.body) ? await signIn.follow(await signIn.post(formFor(done, '/consent').action, { ...formFor(done, '/consent').fields, decision: 'allow' }), (u) => u.includes('/demo/callback')) : done;
    const claims = await exchangeDemoCode(tessera.issuer, consented.location!);
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    const used = (await portal.events('mfa.recovery_used')).at(-1);
    assert.equal((used?.details as { left: number }).left, 9);
    const mail = await tessera.db.selectFrom('dev_outbox').select(['subject', 'body']).where('recipient', '=', 'rita@example.test').orderBy('id', 'desc').executeTakeFirstOrThrow();
    assert.match(mail.subject ?? '', /recovery code .* was used/);
    assert.match(mail.body, /9 of your recovery codes are left/);

    const second = new Agent();
    const spent = await submit(second, await toRecoveryPage(second), codes[0]!);
    assert.equal(spent.status, 303);
    const refused = await second.get(spent.location!);
    assert.match(pageText(refused), /That recovery code was already used: each works once\. Enter another one\./);
    const wrong = await submit(second, refused, 'zzzz-zzzz');
    assert.equal(wrong.status, 401);
    assert.match(pageText(wrong), /not one of your unused recovery codes/);
    const malformed = await submit(second, refused, 'not-a-code!');
    assert.equal(malformed.status, 400);
    assert.match(pageText(malformed), /8 letters and digits/);
  });

  it('ten presses at the same moment (or a reload) make one set', async () => {
    // The app's next code: this one was used by the sign-in before.
    const { agent } = await portal.signIn('rita', { factor: 'totp', typed: () => generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }) });
    const intro = await agent.get(portal.url('/account/recovery-codes'));
    const form = formFor(intro, '/account/recovery-codes');
    const made = await Promise.all(Array.from({ length: 10 }, () => agent.post(form.action, form.fields)));
    // One press made a set; the other nine (a double click, a reload) are told it exists and is not shown again.
    const shown = made.filter((r) => r.status === 200);
    assert.equal(shown.length, 1, made.map((r) => r.status).join(','));
    assert.ok(made.filter((r) => r.status !== 200).every((r) => r.status === 400 && /already made, and its codes are shown only once/.test(pageText(r))));
    const rita = await tessera.db.selectFrom('users').select('id').where('username', '=', 'rita').executeTakeFirstOrThrow();
    assert.deepEqual(await recoveryCodeStatus(tessera.db, rita.id).then((st) => [st?.total, st?.left]), [10, 10]);
    const set = [...shown[0]!.body.matchAll(/<li><code>([a-z0-9]{4}-[a-z0-9]{4})<\/code><\/li>/g)].map((m) => m[1]!);
    assert.ok(await useRecoveryCode(tessera.db, new SecretBox(TEST_SECRET).deriveKey('recovery-codes'), rita.id, set[9]!), 'the set shown is the set kept');
    // A reload of the page that showed them sends the same form again: nothing new is made.
    const reload = await agent.post(form.action, form.fields);
    assert.equal(reload.status, 400);
    assert.equal((await recoveryCodeStatus(tessera.db, rita.id))?.left, 9);
    codes = set;
  });

  it('20 parallel sign-ins with one code: exactly one gets in', async () => {
    const agents = Array.from({ length: 20 }, () => new Agent());
    // The sign-ins one after another (parallel passwords meet the lockout first), then the code from all at once.
    const pages: AgentResponse[] = [];
    for (const agent of agents) pages.push(await toRecoveryPage(agent));
    const answers = await Promise.all(agents.map((a, i) => submit(a, pages[i]!, codes[1]!)));
    const signedIn = answers.filter((r) => r.status === 303 && new URL(r.location!).pathname.startsWith('/auth/'));
    assert.equal(signedIn.length, 1, answers.map((r) => r.status).join(','));
    // The others were told the code was used (a spent code is no guess) or held back by the lockout while the burst lasted.
    const late = answers.filter((r) => r !== signedIn[0]);
    assert.ok(late.every((r) => r.status === 429 || /\/mfa\/code\?factor=recovery&used=1$/.test(r.location ?? '')), late.map((r) => `${r.status} ${r.location}`).join(','));
    const told = late.find((r) => r.status === 303);
    if (told) assert.match((await agents[answers.indexOf(told)]!.get(told.location!)).body, /That recovery code was already used: each works once\./);
    const rita = await tessera.db.selectFrom('users').select(['id', 'failed_logins']).where('username', '=', 'rita').executeTakeFirstOrThrow();
    assert.equal((await recoveryCodeStatus(tessera.db, rita.id))?.left, 8);
    assert.equal(rita.failed_logins, 0, 'a spent code counts nothing toward the lockout');
    await perform(admin, unlockUserOp, { username: 'rita' });
  });

  it('50 parallel guesses with a right code last: counted in the lockout, the right one is not even checked', async () => {
    const agent = new Agent();
    const page = await toRecoveryPage(agent);
    const wrong = await Promise.all(Array.from({ length: 49 }, (_, i) => submit(agent, page, `zzzz-${String(i).padStart(4, 'a').replace(/[01]/g, 'x')}`)));
    const right = await submit(agent, page, codes[2]!);
    assert.ok(wrong.every((r) => r.status === 401 || r.status === 429));
    assert.equal(right.status, 429);
    const rita = await tessera.db.selectFrom('users').select(['id', 'locked_until']).where('username', '=', 'rita').executeTakeFirstOrThrow();
    assert.ok(rita.locked_until && rita.locked_until > new Date());
    assert.equal((await recoveryCodeStatus(tessera.db, rita.id))?.left, 8, 'the right code was not spent');
    await perform(admin, unlockUserOp, { username: 'rita' });
  });

  it('a policy may leave recovery codes out: not offered, and a forged choice is refused', async () => {
    await perform(admin, createPolicyOp, { name: 'no-recovery', subjectType: 'user', subject: 'rita', mfa: 'required', allowedFactors: ['totp', 'email'] });
    try {
      const agent = new Agent();
      let page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)));
      const login = formFor(page, '/login');
      page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'rita', password: 'rita-password-1' }));
      assert.ok(!page.body.includes('value="recovery"'));
      const choice = formFor(page, '/mfa');
      const forged = await agent.post(choice.action, { ...choice.fields, factor: 'recovery' });
      assert.equal(forged.status, 400);
      const typed = await agent.post(`${choice.action}/code`, { ...choice.fields, factor: 'recovery', code: codes[3]! });
      assert.equal(typed.status, 400);
      const rita = await tessera.db.selectFrom('users').select('id').where('username', '=', 'rita').executeTakeFirstOrThrow();
      assert.equal((await recoveryCodeStatus(tessera.db, rita.id))?.left, 8);
    } finally {
      await perform(admin, removePolicyOp, { name: 'no-recovery' });
    }
  });
});
