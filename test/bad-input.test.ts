import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { startTestTessera, type TestTessera } from './support/tessera.js';
import { Agent, formFor, type AgentResponse } from './support/agent.js';
import { openLoginPage, signIn, demoAuthorizationUrl } from './support/journey.js';
import { createUser } from '../src/directory/users.js';
import { createClient } from '../src/clients/clients.js';
import { storageKeys, storedId } from '../src/oidc/adapter.js';

/** A refusal: a 4xx, no stack trace, no internals. */
function refused(res: AgentResponse, status?: number) {
  assert.ok(res.status >= 400 && res.status < 500, `expected 4xx, got ${res.status}: ${res.body.slice(0, 200)}`);
  if (status) assert.equal(res.status, status);
  assert.doesNotMatch(res.body, /\bat .+\.(ts|js):\d+/, 'no stack trace');
  assert.doesNotMatch(res.body, /node_modules|TypeError|ReferenceError/);
}

describe('bad input on every page and endpoint', () => {
  let tessera: TestTessera;
  let issuer: string;
  before(async () => {
    tessera = await startTestTessera();
    issuer = tessera.issuer;
    await createUser(tessera.db, { username: 'frank', password: 'frank-password-1' });
  });
  after(async () => tessera.stop());

  it('unknown, malformed and foreign interaction ids', async () => {
    refused(await new Agent().get(`${issuer}/interaction/unknown-uid`), 400);
    refused(await new Agent().get(`${issuer}/interaction/${'x'.repeat(300)}`), 400);
    refused(await new Agent().get(`${issuer}/interaction/%00%ff%2e%2e`), 400);
    const agent = new Agent();
    await openLoginPage(agent, issuer);
    const other = await agent.get(`${issuer}/interaction/some-other-uid`);
    refused(other, 400);
    assert.match(other.body, /expired or was already used/);
  });

  it('an expired interaction gets the "expired" page', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const uid = new URL(page.url).pathname.split('/')[2]!;
    await tessera.db.updateTable('oidc_models').set({ expires_at: sql<Date>`now() - interval '1 second'` as never }).where('model', '=', 'Interaction').where('id', '=', storedId(storageKeys(tessera.box).idKey, uid)).execute();
    refused(await agent.get(page.url), 400);
    const form = formFor(page, '/login');
    refused(await agent.post(form.action, { ...form.fields, username: 'frank', password: 'frank-password-1' }), 400);
  });

  it('missing, wrong and foreign CSRF tokens are refused with 403', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const form = formFor(page, '/login');
    refused(await agent.post(form.action, { username: 'frank', password: 'frank-password-1' }), 403);
    refused(await agent.post(form.action, { csrf: 'forged', username: 'frank', password: 'frank-password-1' }), 403);
    const otherForm = formFor(await openLoginPage(new Agent(), issuer), '/login');
    refused(await agent.post(form.action, { csrf: otherForm.fields.csrf!, username: 'frank', password: 'frank-password-1' }), 403);
    // Still usable afterwards with the right token.
    const ok = await agent.post(form.action, { ...form.fields, username: 'frank', password: 'frank-password-1' });
    assert.equal(ok.status, 303);
  });

  it('a replayed login or consent form after the sign-in finished is refused', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const login = formFor(page, '/login');
    const consentPage = await agent.follow(await agent.post(login.action, { ...login.fields, username: 'frank', password: 'frank-password-1' }));
    const consent = formFor(consentPage, '/consent');
    const done = await agent.follow(await agent.post(consent.action, { ...consent.fields, decision: 'allow' }), (u) => u.includes('/demo/callback'));
    assert.ok(done.location?.includes('code='));
    refused(await agent.post(login.action, { ...login.fields, username: 'frank', password: 'frank-password-1' }), 400);
    refused(await agent.post(consent.action, { ...consent.fields, decision: 'allow' }), 400);
  });

  it('out-of-order: posting consent before login sends the browser back to the login step', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const login = formFor(page, '/login');
    const consentAction = login.action.replace(/\/login$/, '/consent');
    const res = await agent.post(consentAction, { csrf: login.fields.csrf!, decision: 'allow' });
    assert.equal(res.status, 303);
    assert.equal(new URL(res.location!).pathname, new URL(page.url).pathname);
  });

  it('malformed form values', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const form = formFor(page, '/login');
    for (const [username, password] of [
      ['', 'x'], ['frank', ''], ['a'.repeat(129), 'x'], ['frank', 'p'.repeat(1025)],
      ['\u0000\u0000', 'x'], ['\u202Efrank', 'x'], ['😀👨‍👩‍👧', 'x'], ['frank\uD800', 'x'], ["' or 1=1 --", 'x'], ['<script>alert(1)</script>', 'x'],
    ] as const) {
      const res = await agent.post(form.action, { ...form.fields, username, password });
      refused(res);
      assert.doesNotMatch(res.body, /<script>alert/, 'input is escaped');
    }
    const consentRes = await agent.post(form.action.replace(/\/login$/, '/consent'), { ...form.fields, decision: 'maybe' });
    assert.ok(consentRes.status === 303 || (consentRes.status >= 400 && consentRes.status < 500));
  });

  it('oversized and wrongly typed bodies', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    const form = formFor(page, '/login');
    refused(await agent.post(form.action, { ...form.fields, username: 'frank', password: 'x'.repeat(100_000) }), 413);
    refused(await agent.request(form.action, { method: 'POST', body: JSON.stringify({ username: 'frank' }), headers: { 'content-type': 'application/json' } }), 415);
    refused(await agent.request(form.action, { method: 'POST', body: '%%%&&&===', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 403);
    refused(await agent.request(`${issuer}/token`, { method: 'POST', body: 'grant_type=' + 'x'.repeat(2_000_000), headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
  });

  it('wrong methods', async () => {
    const agent = new Agent();
    const page = await openLoginPage(agent, issuer);
    refused(await agent.request(page.url, { method: 'DELETE' }), 405);
    refused(await agent.request(`${page.url}/login`, { method: 'GET' }), 405);
    refused(await agent.request(`${issuer}/token`, { method: 'GET' }));
    refused(await agent.request(`${issuer}/demo`, { method: 'PUT' }), 405);
  });

  it('protocol endpoints answer bad requests with OAuth errors', async () => {
    const agent = new Agent();
    const noClient = await agent.get(`${issuer}/auth?response_type=code&scope=openid`);
    refused(noClient, 400);
    assert.match(noClient.body, /client_id/);
    refused(await agent.get(`${issuer}/auth?client_id=ghost&response_type=code&scope=openid&redirect_uri=http://x/`), 400);
    const token = await agent.request(`${issuer}/token`, { method: 'POST', body: 'grant_type=authorization_code&code=nope', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    refused(token);
    assert.ok(['invalid_request', 'invalid_client'].includes((JSON.parse(token.body) as { error: string }).error));
    refused(await agent.get(`${issuer}/me`), 401);
    refused(await agent.request(`${issuer}/me`, { headers: { authorization: 'Bearer not-a-token' } }), 401);
    refused(await agent.request(`${issuer}/token/introspection`, { method: 'POST', body: 'token=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    const long = await agent.get(`${issuer}/auth?client_id=${'a'.repeat(20_000)}`);
    refused(long);
    refused(await agent.get(`${issuer}/no-such-page`), 404);
  });

  it('NUL bytes in any parameter are refused with a 4xx or an OAuth error, never a 500', async () => {
    const agent = new Agent();
    await createClient(tessera.db, tessera.box, { clientId: 'nul-rp', secret: 'nul-rp-secret-0123456789', redirectUris: ['http://127.0.0.1:9/cb'], grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'] });
    const basic = { authorization: `Basic ${Buffer.from('nul-rp:nul-rp-secret-0123456789').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' };
    const base = (await demoAuthorizationUrl(issuer)).replace(/&state=[^&]*/, '');
    const statuses: [string, number][] = [];
    const check = async (label: string, res: Promise<AgentResponse>) => {
      const r = await res;
      statuses.push([label, r.status]);
      assert.ok(r.status < 500, `${label}: ${r.status} ${r.body.slice(0, 200)}`);
      assert.doesNotMatch(r.body, /invalid byte sequence|Unicode escape|\bat .+\.(ts|js):\d+/, label);
    };
    for (const param of ['acr_values', 'state', 'nonce', 'login_hint', 'ui_locales', 'claims_locales', 'display', 'dpop_jkt', 'max_age', 'prompt']) {
      await check(`/auth ${param}`, agent.get(`${base}&${param}=a%00b${param === 'state' ? '' : '&state=s-1234'}`));
    }
    await check('/auth client_id', agent.get(`${issuer}/auth?client_id=a%00b&response_type=code&scope=openid`));
    await check('/session/end state', agent.get(`${issuer}/session/end?state=a%00b&client_id=tessera-demo`));
    await check('/me token', agent.request(`${issuer}/me`, { method: 'POST', body: 'access_token=%00%00', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    await check('/me bearer', agent.request(`${issuer}/me`, { headers: { authorization: 'Bearer a\u0000b' } }).catch(() => ({ status: 400, body: '', url: '', location: null, headers: new Headers() })));
    for (const [path, body] of [
      ['/token', 'grant_type=refresh_token&refresh_token=%00abc'],
      ['/token', 'grant_type=authorization_code&code=%00&redirect_uri=http://127.0.0.1:9/cb&code_verifier=' + 'v'.repeat(43)],
      ['/token', 'grant_type=client_credentials&scope=%00'],
      ['/token/introspection', 'token=%00'],
      ['/token/revocation', 'token=%00'],
      ['/request', 'response_type=code&scope=openid&redirect_uri=http://127.0.0.1:9/cb&code_challenge=' + 'c'.repeat(43) + '&code_challenge_method=S256&state=%00'],
    ] as const) {
      await check(`${path} ${body.slice(0, 30)}`, agent.request(`${issuer}${path}`, { method: 'POST', body, headers: basic }));
    }
    await check('/token client_id', agent.request(`${issuer}/token`, { method: 'POST', body: 'grant_type=client_credentials&client_id=%00&client_secret=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    assert.ok(statuses.length > 20);
  });

  it('a forged Host header never reaches a page: form actions and redirects name the issuer', async () => {
    const { request } = await import('node:http');
    const get = (path: string, headers: Record<string, string>) =>
      new Promise<{ status: number; body: string; location: string | undefined }>((resolve, reject) => {
        const req = request(`${issuer}${path}`, { headers }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location }));
        });
        req.on('error', reject);
        req.end();
      });
    const forged = { host: 'evil.example', 'x-forwarded-host': 'evil.example' };
    const end = await get('/session/end', forged);
    assert.equal(end.status, 200);
    assert.match(end.body, new RegExp(`action="${issuer.replace(/\./g, '\\.')}/session/end/confirm"`));
    assert.doesNotMatch(end.body, /evil\.example/);
    // An absolute-form request target names another origin: ignored the same way.
    const { connect } = await import('node:net');
    const raw = await new Promise<string>((resolve) => {
      const port = new URL(issuer).port;
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET https://evil.example/.well-known/openid-configuration HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n'));
      let data = '';
      socket.on('data', (d) => (data += d));
      socket.on('close', () => resolve(data));
    });
    assert.match(raw, /^HTTP\/1\.1 200/);
    assert.doesNotMatch(raw, /evil\.example/);
    assert.match(raw, new RegExp(`"token_endpoint":"${issuer.replace(/\./g, '\\.')}/token"`));
    const auth = await get(new URL(await demoAuthorizationUrl(issuer)).pathname + new URL(await demoAuthorizationUrl(issuer)).search, forged);
    assert.ok(auth.location && new URL(auth.location, issuer).href.startsWith(`${issuer}/interaction/`), `redirect to the issuer: ${auth.location}`);
  });

  it('an https issuer reached as plain HTTP gets a page saying what to fix, not a 500; through a proxy it works, with a __Host- CSRF cookie', async () => {
    const https = await startTestTessera({ ISSUER: 'https://id.example.test', TRUST_PROXY: 'true' }, tessera.testDb);
    try {
      const url = `http://127.0.0.1:${https.port}`;
      const plain = await fetch(`${url}/.well-known/openid-configuration`);
      assert.equal(plain.status, 400);
      assert.match(await plain.text(), /reached it as plain HTTP\. Behind a TLS-terminating proxy, set TRUST_PROXY=true and have the proxy send X-Forwarded-Proto: https/);
      assert.equal((await fetch(`${url}/healthz`)).status, 200, 'health checks still answer over HTTP');
      const proxied = await fetch(`${url}/.well-known/openid-configuration`, { headers: { 'x-forwarded-proto': 'https' } });
      assert.equal(proxied.status, 200);
      assert.equal(((await proxied.json()) as { issuer: string }).issuer, 'https://id.example.test');
      const page = await fetch(`${url}/session/end`, { headers: { 'x-forwarded-proto': 'https' } });
      assert.equal(page.status, 200);
      const login = await fetch(`${url}/interaction/abcdefghijklmnop`, { headers: { 'x-forwarded-proto': 'https' } });
      const cookie = login.headers.getSetCookie().find((c) => c.includes('csrf'));
      assert.match(cookie ?? '', /^__Host-tessera\.csrf=[^;]+;/);
      for (const attribute of [/; path=\/(;|$)/i, /; secure(;|$)/i, /; httponly(;|$)/i, /; samesite=lax(;|$)/i]) assert.match(cookie!, attribute);
      assert.doesNotMatch(cookie!, /domain=/i);
    } finally {
      await https.close();
    }
  });

  it('/metrics answers only when METRICS is on, with queries, CPU, memory and the V8 heap', async () => {
    assert.equal((await fetch(`${issuer}/metrics`)).status, 404, 'off by default');
    const monitored = await startTestTessera({ METRICS: 'true' }, tessera.testDb);
    try {
      const res = await fetch(`http://127.0.0.1:${monitored.port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      const gauges = new Map((await res.text()).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(' ') as [string, string]));
      for (const name of ['tessera_db_queries_total', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_used_bytes', 'nodejs_heap_total_bytes', 'nodejs_external_memory_bytes']) {
        assert.ok(Number(gauges.get(name)) > 0, `${name} = ${gauges.get(name)}`);
      }
      assert.ok(Number(gauges.get('nodejs_heap_used_bytes')) <= Number(gauges.get('nodejs_heap_total_bytes')));
    } finally {
      await monitored.close();
    }
  });

  it('the demo app copes with a forged or bare callback', async () => {
    const agent = new Agent();
    const bare = await agent.get(`${issuer}/demo/callback`);
    assert.equal(bare.status, 302);
    assert.match(bare.location!, /\/demo\?error=/);
    const forged = await agent.get(`${issuer}/demo/callback?code=forged&state=forged`);
    assert.equal(forged.status, 302);
    assert.match(forged.location!, /\/demo\?error=/);
    const page = await agent.get(`${issuer}/demo?error=${encodeURIComponent('<img src=x onerror=alert(1)>')}`);
    assert.equal(page.status, 200);
    assert.doesNotMatch(page.body, /<img src=x/);
  });

  it('pages carry the security headers', async () => {
    const page = await openLoginPage(new Agent(), issuer);
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.equal(page.headers.get('cache-control'), 'no-store');
    const agent = new Agent();
    await agent.get(await demoAuthorizationUrl(issuer));
    const setCookies = (await agent.get(await demoAuthorizationUrl(issuer))).headers.getSetCookie();
    for (const c of setCookies) assert.match(c, /httponly/i, `${c.split('=')[0]} is HttpOnly`);
    // Error pages too: an unknown interaction (400), an unknown page (404), a provider error page.
    for (const url of [`${issuer}/interaction/unknown-interaction-id`, `${issuer}/no-such-page`, `${issuer}/auth?client_id=ghost&response_type=code&scope=openid`]) {
      const res = await new Agent().get(url);
      assert.ok(res.status >= 400, url);
      assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'.*script-src 'none'.*frame-ancestors 'none'/, `CSP on ${url}`);
    }
  });

  it('the server is still healthy after all of that', async () => {
    assert.equal((await new Agent().get(`${issuer}/healthz`)).status, 200);
    assert.equal((await new Agent().get(`${issuer}/readyz`)).status, 200);
    const callback = await signIn(new Agent(), await demoAuthorizationUrl(issuer), { username: 'frank', password: 'frank-password-1', redirectUri: `${issuer}/demo/callback` });
    assert.ok(callback.includes('code='));
  });
});
