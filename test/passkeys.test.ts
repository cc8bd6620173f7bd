import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { pageText, portalDriver, type PortalDriver } from './support/portal.js';
import { demoAuthorizationUrl, exchangeDemoCode } from './support/journey.js';
import { SoftwareAuthenticator } from './support/software-authenticator.js';
import { createAudit } from '../src/audit/audit.js';
import { createLogger } from '../src/log.js';
import { createUser } from '../src/directory/users.js';
import { perform, type ServiceContext } from '../src/admin/service.js';
import { resetMfaOp, showUserOp } from '../src/admin/users.js';
import { createPolicyOp, protectScopeOp, unprotectScopeOp } from '../src/admin/system.js';

import { setSetting } from '../src/settings/settings.js';

/** The options a passkey page carries for the browser (an HTML attribute holding JSON). */
function passkeyOptions(page: AgentResponse): { challenge: string; rpId?: string; allowCredentials?: { id: string }[] } {
  const raw = /data-options="([^"]*)"/.exec(page.body)?.[1];
  assert.ok(raw, `no passkey options on ${page.url}: ${pageText(page).slice(0, 300)}`);
  return JSON.parse(raw.replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')) as never;
}

describe('passkeys (WebAuthn) as a second factor', () => {
  let tessera: TestTessera;
  let admin: ServiceContext;
  let portal: PortalDriver;
  let origin: string;
  const pia = new SoftwareAuthenticator();

  before(async () => {
    tessera = await startTestTessera({ CLIENT_CACHE_SECONDS: '0' });
    admin = { db: tessera.db, box: tessera.box, audit: createAudit(tessera.db, createLogger('silent')), mode: 'dev', actor: { label: 'cli:test', role: 'admin' } };
    portal = portalDriver(tessera, admin);
    origin = new URL(tessera.issuer).origin;
    for (const username of ['pia', 'paz', 'pol']) {
      await createUser(tessera.db, { username, password: `${username}-password-1`, email: `${username}@example.test`, emailVerified: true });
    }
    await setSetting(tessera.db, tessera.box, 'mfa.otp.perIpPerHour', 10000);
  });
  after(async () => {
    await admin.audit.flush();
    await tessera?.stop();
  });

  /** Signs in to /account (password and an emailed code) and adds the authenticator's passkey there. */
  async function addPasskey(username: string, key: SoftwareAuthenticator, name = 'Laptop'): Promise<AgentResponse> {
    const { agent, page } = await portal.signIn(username, { factor: 'email' });
    let form = formFor(page, '/account/passkeys');
    assert.ok(page.body.includes('>Add a passkey</button>'));
    let options = await agent.post(portal.url('/account/passkeys/options'), { csrf: form.fields.csrf! });
    if (options.status === 403) {
      // As the page's script does: the form goes without an answer, a second factor is asked, the change is confirmed.
      const held = await agent.post(form.action, { ...form.fields, script: '1' });
      assert.equal(held.location, portal.url('/account/verify'));
      const confirm = await portal.through(agent, await agent.get(held.location!), username, { factor: 'email' });
      const replay = formFor(confirm, '/account/passkeys');
      const ready = await agent.follow(await agent.post(replay.action, replay.fields));
      assert.match(pageText(ready), /now press “Add a passkey”/);
      form = formFor(ready, '/account/passkeys');
      options = await agent.post(portal.url('/account/passkeys/options'), { csrf: form.fields.csrf! });
    }
    assert.equal(options.status, 200, options.body);
    assert.match(options.headers.get('content-type') ?? '', /json/);
    const answer = key.register(JSON.parse(options.body) as never, origin);
    return agent.follow(await agent.post(form.action, { ...form.fields, name, response: answer }));
  }

  /** A demo-app sign-in up to the passkey page (password, then the passkey chosen where there is a choice). */
  async function toPasskeyPage(agent: Agent, username: string, authorizationUrl?: string): Promise<AgentResponse> {
    let page = await agent.follow(await agent.get(authorizationUrl ?? (await demoAuthorizationUrl(tessera.issuer))));
    const login = formFor(page, '/login');
    page = await agent.follow(await agent.post(login.action, { ...login.fields, username, password: `${username}-password-1` }));
    if (!page.body.includes('data-passkey-sign-in')) {
      assert.ok(page.body.includes('value="webauthn"'), `the passkey is offered: ${pageText(page).slice(0, 400)}`);
      assert.ok(page.body.includes('>Passkey or security key</button>'));
      const choice = formFor(page, '/mfa');
      page = await agent.follow(await agent.post(choice.action, { ...choice.fields, factor: 'webauthn' }));
    }
    assert.equal(page.status, 200);
    assert.ok(page.body.includes('data-passkey-sign-in'), pageText(page).slice(0, 300));
    return page;
  }

  /** Posts a passkey answer; a consent page on the way back to the demo app is allowed. */
  async function answerPasskey(agent: Agent, page: AgentResponse, response: string): Promise<AgentResponse> {
    const atCallback = (u: string) => u.includes('/demo/callback');
    const form = formFor(page, '/code');
    const next = await agent.follow(await agent.post(form.action, { ...form.fields, response }), atCallback);
    if (next.status !== 200 || !/Allow access\?/.test(next.body)) return next;
    const allow = formFor(next, '/consent');
    return agent.follow(await agent.post(allow.action, { ...allow.fields, decision: 'allow' }), atCallback);
  }

  it('a user adds a passkey on /account and signs in with it: amr hwk and user, acr phishing-resistant', async () => {
    const key = pia;
    const added = await addPasskey('pia', key);
    assert.equal(new URL(added.url).pathname, '/account');
    assert.match(pageText(added), /The passkey is added/);
    assert.match(pageText(added), /Laptop/);
    const details = await perform(admin, showUserOp, { username: 'pia' });
    assert.deepEqual(details.passkeys.map((p) => [p.name, p.synced]), [['Laptop', false]]);

    const agent = new Agent();
    const page = await toPasskeyPage(agent, 'pia');
    const options = passkeyOptions(page);
    assert.equal(options.rpId, '127.0.0.1', 'the relying party is the issuer’s host');
    assert.deepEqual(options.allowCredentials?.map((c) => c.id), [key.id]);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const done = await answerPasskey(agent, page, key.assert(options, origin));
    assert.ok(done.location?.includes('/demo/callback'), `${done.status} ${pageText(done).slice(0, 300)}`);
    const claims = await exchangeDemoCode(tessera.issuer, done.location!);
    assert.deepEqual(claims.amr, ['pwd', 'hwk', 'user', 'mfa']);
    assert.equal(claims.acr, 'urn:tessera:acr:phr');
    const success = (await portal.events('mfa.success')).filter((e) => e.subject === details.user.id).at(-1);
    assert.deepEqual(success?.details, { factor: 'webauthn', amr: ['hwk', 'user'] });
  });

  it('discovery advertises the phishing-resistant acr', async () => {
    const discovery = (await (await fetch(`${tessera.issuer}/.well-known/openid-configuration`)).json()) as { acr_values_supported: string[] };
    assert.ok(discovery.acr_values_supported.includes('urn:tessera:acr:phr'));
  });

  it('a synced passkey proves swk; without user verification, no "user"', async () => {
    const key = new SoftwareAuthenticator({ synced: true, userVerified: false });
    await addPasskey('paz', key, 'Phone');
    const agent = new Agent();
    const page = await toPasskeyPage(agent, 'paz');
    const done = await answerPasskey(agent, page, key.assert(passkeyOptions(page), origin));
    const claims = await exchangeDemoCode(tessera.issuer, done.location!);
    assert.deepEqual(claims.amr, ['pwd', 'swk', 'mfa']);
  });

  it('refuses an answer made for another origin, another relying party, or another sign-in’s challenge', async () => {
    const key = new SoftwareAuthenticator();
    await addPasskey('pol', key);
    const agent = new Agent();
    let page = await toPasskeyPage(agent, 'pol');
    let options = passkeyOptions(page);

    const phished = await answerPasskey(agent, page, key.assert(options, 'http://tessera.example.evil'));
    assert.equal(phished.status, 401);
    assert.match(pageText(phished), /not one of yours, or its answer is not valid/);

    // Each page holds a new challenge: the last one's is taken, even by a refused answer.
    page = phished;
    options = passkeyOptions(page);
    const otherRp = await answerPasskey(agent, page, key.assert(options, origin, 'evil.example'));
    assert.equal(otherRp.status, 401);

    const stale = await answerPasskey(agent, otherRp, key.assert(options, origin));
    assert.equal(stale.status, 401, 'the challenge of an earlier page no longer counts');

    const forged = await answerPasskey(agent, stale, '{"id":"x"}');
    assert.equal(forged.status, 400);
    assert.match(pageText(forged), /did not answer with a passkey/);

    const good = await answerPasskey(agent, forged, key.assert(passkeyOptions(forged), origin));
    assert.ok(good.location?.includes('/demo/callback'));
  });

  it('a replayed answer is refused, and so is a signature counter that did not move on (a cloned key)', async () => {
    const key = new SoftwareAuthenticator();
    await addPasskey('pol', key, 'Second key');
    const first = new Agent();
    const page = await toPasskeyPage(first, 'pol');
    const answer = key.assert(passkeyOptions(page), origin);
    assert.ok((await answerPasskey(first, page, answer)).location?.includes('/demo/callback'));
    // The same answer again, in a new sign-in: its challenge is not this sign-in's.
    const second = new Agent();
    const again = await toPasskeyPage(second, 'pol');
    const replayed = await answerPasskey(second, again, answer);
    assert.equal(replayed.status, 401);
    // A fresh challenge signed with a counter that stayed where it was: what a copied authenticator does.
    const cloned = await answerPasskey(second, replayed, key.assert(passkeyOptions(replayed), origin, undefined, { keepCounter: true }));
    assert.equal(cloned.status, 401);
    assert.match(pageText(cloned), /already used, or the key may have been copied/);
    const failures = (await portal.events('mfa.failure')).filter((e) => (e.details as { factor?: string }).factor === 'webauthn');
    assert.ok(failures.some((e) => (e.details as { reason: string }).reason === 'replayed'));
  });

  it('50 parallel wrong answers with the right one last: the lockout admits the threshold, then nothing', async () => {
    const key = new SoftwareAuthenticator();
    await createUser(tessera.db, { username: 'pam', password: 'pam-password-1', email: 'pam@example.test', emailVerified: true });
    await addPasskey('pam', key);
    const agent = new Agent();
    const page = await toPasskeyPage(agent, 'pam');
    const options = passkeyOptions(page);
    const form = formFor(page, '/code');
    const wrong = new SoftwareAuthenticator();
    const answers = Array.from({ length: 49 }, () => wrong.assert(options, origin, options.rpId));
    const responses = await Promise.all(answers.map((response) => agent.post(form.action, { ...form.fields, response })));
    const right = await agent.post(form.action, { ...form.fields, response: key.assert(options, origin) });
    assert.ok(responses.every((r) => r.status === 401 || r.status === 429), [...new Set(responses.map((r) => r.status))].join(','));
    assert.equal(right.status, 429, 'locked: the right answer is not even checked');
    const user = await tessera.db.selectFrom('users').select(['failed_logins', 'locked_until']).where('username', '=', 'pam').executeTakeFirstOrThrow();
    assert.ok(user.locked_until && user.locked_until > new Date());
  });

  it('a protected scope that demands a passkey refuses an email code, and is unlocked by the passkey', async () => {
    await perform(admin, protectScopeOp, { scope: 'profile', factors: ['webauthn'], maxAgeSeconds: 300 });
    try {
      const agent = new Agent();
      const atCallback = (u: string) => u.includes('/demo/callback');
      // pia signs in with the password and an emailed code; at consent, profile stays locked until a passkey is used there.
      let page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer, 'openid profile')));
      const login = formFor(page, '/login');
      page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'pia', password: 'pia-password-1' }));
      const choice = formFor(page, '/mfa');
      page = await agent.follow(await agent.post(choice.action, { ...choice.fields, factor: 'email' }));
      const codeForm = formFor(page, '/mfa/code');
      const consent = await agent.follow(await agent.post(codeForm.action, { ...codeForm.fields, code: await portal.lastCode('pia@example.test') }), atCallback);
      assert.match(consent.body, /Allow access\?/);
      const verify = formFor(consent, '/consent/verify');
      assert.ok(consent.body.includes('value="webauthn"') && !/name="factor" value="email"/.test(consent.body), 'only the passkey unlocks it');
      assert.match(pageText(consent), /your passkey or security key/);

      const byEmail = await agent.post(verify.action, { ...verify.fields, factor: 'email' });
      assert.equal(byEmail.status, 400);
      const emailCode = await agent.post(`${verify.action}/code`, { ...verify.fields, factor: 'email', code: '123456' });
      assert.equal(emailCode.status, 400);
      assert.match(pageText(emailCode), /Choose one of the methods below/);

      const passkeyPage = await agent.follow(await agent.post(verify.action, { ...verify.fields, factor: 'webauthn' }));
      const key = pia;
      const form = formFor(passkeyPage, '/consent/verify/code');
      const unlocked = await agent.follow(await agent.post(form.action, { ...form.fields, response: key.assert(passkeyOptions(passkeyPage), origin) }), atCallback);
      assert.match(unlocked.body, /Allow access\?/);
      const allow = formFor(unlocked, '/consent');
      const body = new URLSearchParams({ ...allow.fields, decision: 'allow' });
      body.append('protected', ' profile');
      const done = await agent.follow(await agent.request(allow.action, { method: 'POST', body: body.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }), atCallback);
      assert.ok(done.location?.includes('/demo/callback'), pageText(done).slice(0, 300));
      const claims = await exchangeDemoCode(tessera.issuer, done.location!);
      assert.equal(claims.acr, 'urn:tessera:acr:phr', 'the step-up passed a passkey');
      // Tessera's own account page asks for openid only: the protected scope puts no consent step before it.
      const own = await portal.signIn('pia', { factor: 'email' });
      assert.equal(new URL(own.page.url).pathname, '/account');
    } finally {
      await perform(admin, unprotectScopeOp, { scope: 'profile' });
    }
  });

  it('user reset-mfa removes the passkeys; the user then signs in without one', async () => {
    const before = await perform(admin, showUserOp, { username: 'paz' });
    assert.equal(before.passkeys.length, 1);
    const result = await perform(admin, resetMfaOp, { username: 'paz' });
    assert.deepEqual(result, { authenticators: 0, passkeys: 1, recoveryCodes: 0 });
    assert.equal((await perform(admin, showUserOp, { username: 'paz' })).passkeys.length, 0);
  });

  it('an access policy may require a passkey: the choice offers nothing else', async () => {
    await perform(admin, createPolicyOp, { name: 'keys-only', subjectType: 'user', subject: 'pol', mfa: 'required', allowedFactors: ['webauthn'] });
    const agent = new Agent();
    const page = await toPasskeyPage(agent, 'pol');
    assert.ok(!page.body.includes('value="email"'));
  });

  it('at first sign-in, a policy that requires passkeys lets the user add one there, and only then', async () => {
    await createUser(tessera.db, { username: 'kai', password: 'kai-password-1' });
    const agent = new Agent();
    // Without a policy nothing is required: the sign-in ends after the password, with no passkey step.
    let page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)));
    const login = formFor(page, '/login');
    page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'kai', password: 'kai-password-1' }), (u) => u.includes('/demo/callback'));
    assert.ok(page.body.includes('Allow access?') || page.location?.includes('/demo/callback'));

    await perform(admin, createPolicyOp, { name: 'kai-keys', subjectType: 'user', subject: 'kai', mfa: 'required', allowedFactors: ['webauthn'] });
    const second = new Agent();
    page = await second.follow(await second.get(await demoAuthorizationUrl(tessera.issuer)));
    const form = formFor(page, '/login');
    page = await second.follow(await second.post(form.action, { ...form.fields, username: 'kai', password: 'kai-password-1' }));
    assert.match(page.body, /<h1>Add a passkey<\/h1>/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const enrol = formFor(page, '/mfa/passkey');
    const options = passkeyOptions(page) as unknown as { challenge: string; rp: { id: string } };
    assert.equal(options.rp.id, '127.0.0.1');
    // Another sign-in of kai, left open at the same page.
    const leftOpen = new Agent();
    let open = await leftOpen.follow(await leftOpen.get(await demoAuthorizationUrl(tessera.issuer)));
    open = await leftOpen.follow(await leftOpen.post(formFor(open, '/login').action, { ...formFor(open, '/login').fields, username: 'kai', password: 'kai-password-1' }));
    const openEnrol = formFor(open, '/mfa/passkey');
    const openOptions = passkeyOptions(open);
    const none = await second.post(enrol.action, { ...enrol.fields, response: '' });
    assert.equal(none.status, 400);
    assert.match(pageText(none), /needs JavaScript/);
    const key = new SoftwareAuthenticator();
    // The page drawn again holds a new challenge: the answer is made for it.
    const noneOptions = passkeyOptions(none);
    const finished = await second.post(enrol.action, { ...enrol.fields, name: 'Kai key', response: key.register(noneOptions as never, origin) });
    assert.equal(finished.status, 303);
    // The same sign-in again before it is followed: it is finished, so the browser is sent on where
    // the first answer went and nothing is decided again (the password alone adds no second passkey).
    const reload = await second.get(portal.url(`${new URL(enrol.action).pathname}`));
    assert.equal(reload.status, 303);
    assert.equal(reload.location, finished.location);
    const another = await second.post(enrol.action, { ...enrol.fields, name: 'Second', response: new SoftwareAuthenticator().register(noneOptions as never, origin) });
    assert.equal(another.status, 303);
    assert.equal(another.location, finished.location);
    // The sign-in left open is judged on what kai holds now: its password alone adds no second passkey.
    const beside = await leftOpen.post(openEnrol.action, { ...openEnrol.fields, name: 'Beside', response: new SoftwareAuthenticator().register(openOptions as never, origin) });
    assert.equal(beside.status, 400);
    const done = await second.follow(finished, (u) => u.includes('/demo/callback'));
    const consented = /Allow access\?/.test(done.body) ? await second.follow(await second.post(formFor(done, '/consent').action, { ...formFor(done, '/consent').fields, decision: 'allow' }), (u) => u.includes('/demo/callback')) : done;
    const claims = await exchangeDemoCode(tessera.issuer, consented.location!);
    assert.deepEqual(claims.amr, ['pwd', 'hwk', 'user', 'mfa']);
    assert.deepEqual((await perform(admin, showUserOp, { username: 'kai' })).passkeys.map((p) => p.name), ['Kai key']);
    // The next sign-in asks for it.
    const third = new Agent();
    const passkeyPage = await toPasskeyPage(third, 'kai');
    const signedIn = await answerPasskey(third, passkeyPage, key.assert(passkeyOptions(passkeyPage), origin));
    assert.ok(signedIn.location?.includes('/demo/callback'));
  });

  it('asking for the phishing-resistant acr never lets a password add a passkey beside the factor the user has', async () => {
    await createUser(tessera.db, { username: 'ted', password: 'ted-password-1', email: 'ted@example.test', emailVerified: true });
    await perform(admin, createPolicyOp, { name: 'ted-mfa', subjectType: 'user', subject: 'ted', mfa: 'required' });
    const agent = new Agent();
    const url = new URL(await demoAuthorizationUrl(tessera.issuer));
    url.searchParams.set('acr_values', 'urn:tessera:acr:phr');
    let page = await agent.follow(await agent.get(url.href));
    const login = formFor(page, '/login');
    page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'ted', password: 'ted-password-1' }));
    assert.equal(page.status, 403);
    assert.match(pageText(page), /Cannot complete sign-in/);
    const uid = /\/interaction\/([^/]+)\//.exec(login.action)![1]!;
    const forged = await agent.post(portal.url(`/interaction/${uid}/mfa/passkey`), { csrf: login.fields.csrf!, response: '{}' });
    assert.ok(forged.status === 400 || forged.status === 403, String(forged.status));
    assert.equal((await perform(admin, showUserOp, { username: 'ted' })).passkeys.length, 0);
  });

  it('passkey names are plain text; a new passkey is told to its owner by email', async () => {
    const { agent, page } = await portal.signIn('pia', { factor: 'email' });
    const [passkey] = (await perform(admin, showUserOp, { username: 'pia' })).passkeys;
    const rename = formFor(page, '/account/passkeys/rename');
    const forged = await agent.post(rename.action, { ...rename.fields, passkey: passkey!.id, name: 'x\r\nfailed attempts 0\u001b[31m' });
    assert.equal(forged.status, 400);
    assert.match(pageText(forged), /plain text/);
    const renamed = await agent.follow(await agent.post(rename.action, { ...rename.fields, passkey: passkey!.id, name: 'Desk key' }));
    assert.match(pageText(renamed), /The passkey is renamed/);
    const mail = await tessera.db.selectFrom('dev_outbox').select(['subject', 'body']).where('recipient', '=', 'pia@example.test').where('subject', 'like', 'A passkey was added%').executeTakeFirst();
    assert.match(mail?.body ?? '', /The passkey "Laptop" was just added/);
  });

  it('a removed passkey no longer counts in sessions that passed it: they step up again', async () => {
    const agent = new Agent();
    const phr = new URL(await demoAuthorizationUrl(tessera.issuer));
    phr.searchParams.set('acr_values', 'urn:tessera:acr:phr');
    const page = await toPasskeyPage(agent, 'pia', phr.href);
    const done = await answerPasskey(agent, page, pia.assert(passkeyOptions(page), origin));
    assert.equal((await exchangeDemoCode(tessera.issuer, done.location!)).acr, 'urn:tessera:acr:phr');
    const { agent: own, page: account } = await portal.signIn('pia', { factor: 'email' });
    const remove = formFor(account, '/account/passkeys/remove');
    const removed = await own.follow(await own.post(remove.action, remove.fields));
    assert.match(pageText(removed), /The passkey is removed/);
    // The same browser asks for the phishing-resistant acr again: no passkey left, so no way to it.
    const again = await agent.follow(await agent.get(phr.href), (u) => u.includes('/demo/callback'));
    assert.ok(!again.location?.includes('/demo/callback'), 'not signed in on the strength of a removed passkey');
  });

  it('a user with a verified email passes a code to it before the password can add their first passkey', async () => {
    await createUser(tessera.db, { username: 'liv', password: 'liv-password-1', email: 'liv@example.test', emailVerified: true });
    await perform(admin, createPolicyOp, { name: 'liv-keys', subjectType: 'user', subject: 'liv', mfa: 'required', allowedFactors: ['webauthn'] });
    const agent = new Agent();
    let page = await agent.follow(await agent.get(await demoAuthorizationUrl(tessera.issuer)));
    const login = formFor(page, '/login');
    page = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'liv', password: 'liv-password-1' }));
    assert.match(pageText(page), /First confirm it’s you with a code, then add one/);
    assert.ok(!page.body.includes('/mfa/passkey"'), 'no passkey before the code');
    const uid = /\/interaction\/([^/]+)\//.exec(formFor(page, '/mfa').action)![1]!;
    assert.equal((await agent.get(portal.url(`/interaction/${uid}/mfa/passkey`))).status, 303);
    const early = await agent.post(portal.url(`/interaction/${uid}/mfa/passkey`), { csrf: formFor(page, '/mfa').fields.csrf!, response: '{}' });
    assert.equal(early.status, 400);
    const choice = formFor(page, '/mfa');
    page = await agent.follow(await agent.post(choice.action, { ...choice.fields, factor: 'email' }));
    const code = formFor(page, '/mfa/code');
    page = await agent.follow(await agent.post(code.action, { ...code.fields, code: await portal.lastCode('liv@example.test') }));
    assert.match(page.body, /<h1>Add a passkey<\/h1>/);
    const key = new SoftwareAuthenticator();
    const enrol = formFor(page, '/mfa/passkey');
    const done = await agent.follow(await agent.post(enrol.action, { ...enrol.fields, response: key.register(passkeyOptions(page) as never, origin) }), (u) => u.includes('/demo/callback'));
    const consented = /Allow access\?/.test(done.body) ? await agent.follow(await agent.post(formFor(done, '/consent').action, { ...formFor(done, '/consent').fields, decision: 'allow' }), (u) => u.includes('/demo/callback')) : done;
    const claims = await exchangeDemoCode(tessera.issuer, consented.location!);
    assert.equal(claims.acr, 'urn:tessera:acr:phr');
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'hwk', 'user', 'mfa']);
  });
});
