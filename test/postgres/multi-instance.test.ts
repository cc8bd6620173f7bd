import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { unusedPort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { TEST_SECRET } from '../support/tessera.js';
import { Agent, formFor } from '../support/agent.js';
import { demoAuthorizationUrl } from '../support/journey.js';
import { spawnTessera, type TesseraProcess } from '../support/processes.js';
import { createClient } from '../../src/clients/clients.js';
import { createUser } from '../../src/directory/users.js';
import { SecretBox } from '../../src/crypto/secret-box.js';
import { migrations as allMigrations } from '../../migrations/index.js';


describe('two Tessera processes sharing one PostgreSQL database', () => {
  let testDb: TestDatabase;
  let a: TesseraProcess;
  let b: TesseraProcess;
  let portA: number;
  let portB: number;
  // Both instances serve one issuer (as behind a load balancer); the test picks which one answers.
  const issuerPort = () => portA;

  before(async () => {
    testDb = await createTestDatabase();
    portA = await unusedPort();
    portB = await unusedPort();
    const issuer = `http://127.0.0.1:${issuerPort()}`;
    // Started together: migrations and key generation must happen exactly once.
    const env = { DATABASE_URL: testDb.url!, ISSUER: issuer, TESSERA_SECRET: TEST_SECRET, TESSERA_MODE: 'dev', DEMO: 'true', LOG_LEVEL: 'warn' };
    // Both or neither: one that fails to start must not leave the other running (and the run hanging).
    const started = await Promise.allSettled([spawnTessera(env, undefined, portA), spawnTessera(env, undefined, portB)]);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.stop() : undefined)));
      throw failed.reason;
    }
    [a, b] = started.map((s) => (s as PromiseFulfilledResult<Awaited<ReturnType<typeof spawnTessera>>>).value) as [typeof a, typeof b];
    const box = new SecretBox(TEST_SECRET);
    await createClient(testDb.handle.db, box, { clientId: 'shared-rp', secret: 'shared-rp-secret-0123456789', redirectUris: ['http://127.0.0.1:9/cb'], grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'] });
    await createUser(testDb.handle.db, { username: 'gina', password: 'gina-password-1' });
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await testDb.drop();
  });

  it('migrations were applied once and both share one set of keys', async () => {
    const migrations = await testDb.handle.db.selectFrom('schema_migrations' as never).selectAll().execute();
    assert.equal(migrations.length, Object.keys(allMigrations).length, 'each migration recorded once');
    const keys = await testDb.handle.db.selectFrom('keys').select(['use', 'alg']).where('status', '=', 'active').execute();
    assert.equal(keys.filter((k) => k.use === 'sig').length, 2, 'one RS256 and one ES256');
    assert.equal(keys.filter((k) => k.use === 'cookie').length, 1);
    const jwksA = await (await fetch(`http://127.0.0.1:${portA}/jwks`)).text();
    const jwksB = await (await fetch(`http://127.0.0.1:${portB}/jwks`)).text();
    assert.equal(jwksA, jwksB);
  });

  it('an interaction started on A finishes on B', async () => {
    const issuer = `http://127.0.0.1:${portA}`;
    const agent = new Agent();
    const loginPage = await agent.follow(await agent.get(await demoAuthorizationUrl(issuer)));
    const form = formFor(loginPage, '/login');
    const onB = (url: string) => url.replace(`:${portA}/`, `:${portB}/`);
    const consentPage = await agent.follow(await agent.post(onB(form.action), { ...form.fields, username: 'gina', password: 'gina-password-1' }));
    const consent = formFor(consentPage, '/consent');
    const back = await agent.follow(await agent.post(onB(consent.action), { ...consent.fields, decision: 'allow' }), (u) => u.includes('/demo/callback'));
    assert.ok(new URL(back.location!).searchParams.get('code'), 'the code comes back');
  });

  it('a token issued by A is introspected on B', async () => {
    const secret = oidc.ClientSecretBasic('shared-rp-secret-0123456789');
    const onA = await oidc.discovery(new URL(`http://127.0.0.1:${portA}`), 'shared-rp', undefined, secret, { execute: [oidc.allowInsecureRequests] });
    const tokens = await oidc.clientCredentialsGrant(onA);
    const introspectOnB = await fetch(`http://127.0.0.1:${portB}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('shared-rp:shared-rp-secret-0123456789').toString('base64')}` },
      body: new URLSearchParams({ token: tokens.access_token }),
    });
    const info = (await introspectOnB.json()) as { active: boolean; client_id: string };
    assert.equal(info.active, true);
    assert.equal(info.client_id, 'shared-rp');
  });
});
