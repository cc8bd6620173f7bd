import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';
import { spawnTessera, type TesseraProcess } from '../support/processes.js';
import { TEST_SECRET } from '../support/tessera.js';
import { Agent } from '../support/agent.js';
import { signIn } from '../support/journey.js';
import { openDatabase, type DatabaseHandle } from '../../src/db/index.js';
import { SecretBox } from '../../src/crypto/secret-box.js';
import { createClient } from '../../src/clients/clients.js';
import { createUser } from '../../src/directory/users.js';

const SECRET = 'restart-rp-secret-0123456789';
const REDIRECT = 'http://127.0.0.1:9/cb';
const BASIC = `Basic ${Buffer.from(`rp:${SECRET}`).toString('base64')}`;

/**
 * PostgreSQL restarted under Tessera: the process lives on, requests in the outage get a clear 503
 * (a page, or OAuth's temporarily_unavailable), the pool reconnects by itself, and refresh-token
 * chains whose response was lost survive their retry.
 */
describe('PostgreSQL restarts under load', () => {
  let postgres: PrivatePostgres;
  let tessera: TesseraProcess;
  let handle: DatabaseHandle;

  before(async () => {
    postgres = await startPrivatePostgres();
    const admin = new pg.Client({ connectionString: postgres.url });
    await admin.connect();
    await admin.query('create database tessera');
    await admin.end();
    const url = postgres.url.replace(/\/postgres$/, '/tessera');
    tessera = await spawnTessera({ DATABASE_URL: url, TESSERA_SECRET: TEST_SECRET, TESSERA_MODE: 'dev', DEMO: 'false', LOG_LEVEL: 'warn', DATABASE_POOL_SIZE: '4' });
    handle = await openDatabase({ databaseUrl: url, dataDir: null, poolSize: 2 });
    await createClient(handle.db, new SecretBox(TEST_SECRET), { clientId: 'rp', secret: SECRET, redirectUris: [REDIRECT], grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'], requireConsent: false });
    await createUser(handle.db, { username: 'rita', password: 'rita-password-1' });
  });
  after(async () => {
    await handle?.close();
    await tessera?.stop('SIGKILL');
    await postgres?.destroy();
  });

  async function refreshToken(): Promise<string> {
    const verifier = 'r'.repeat(43);
    const url = new URL(`${tessera.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: 'rp', response_type: 'code', scope: 'openid offline_access', prompt: 'consent', redirect_uri: REDIRECT, state: 'state-restart',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    }).toString();
    const callback = await signIn(new Agent(), url.href, { username: 'rita', password: 'rita-password-1', redirectUri: REDIRECT });
    const code = new URL(callback).searchParams.get('code')!;
    const tokens = (await token({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier })).body as { refresh_token?: string };
    assert.ok(tokens.refresh_token, JSON.stringify(tokens));
    return tokens.refresh_token;
  }

  async function token(form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | null }> {
    try {
      const response = await fetch(`${tessera.issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC }, body: new URLSearchParams(form) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown>, retryAfter: response.headers.get('retry-after') };
    } catch {
      return { status: 0, body: {}, retryAfter: null };
    }
  }

  it('lives through a restart: 503 meanwhile, never a 500, back by itself; every refresh chain survives', async () => {
    // One after another: parallel sign-ins of one account beyond the lockout threshold are held back by design.
    const chains: string[] = [];
    for (let i = 0; i < 12; i++) chains.push(await refreshToken());
    const statuses = new Map<number, number>();
    const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
    let stop = false;
    let outageSeen = false;
    let lastUnready = 0;

    // Each chain refreshes in a loop and, like a careful client, retries with the same token when an answer is lost.
    const refreshers = chains.map(async (_, i) => {
      while (!stop) {
        const r = await token({ grant_type: 'refresh_token', refresh_token: chains[i]! });
        count(r.status);
        if (r.status === 200) chains[i] = String(r.body.refresh_token);
        else if (r.status === 400) throw new Error(`chain ${i} died: ${JSON.stringify(r.body)}`);
        else await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    const readiness = (async () => {
      while (!stop) {
        const ready = await fetch(`${tessera.issuer}/readyz`).then((r) => r.status, () => 0);
        if (ready !== 200) {
          outageSeen = true;
          lastUnready = Date.now();
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const pages = (async () => {
      while (!stop) {
        const r = await fetch(`${tessera.issuer}/auth?client_id=rp&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(REDIRECT)}&code_challenge=${'c'.repeat(43)}&code_challenge_method=S256`, { redirect: 'manual' }).catch(() => null);
        if (r) count(r.status);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();

    await new Promise((resolve) => setTimeout(resolve, 1500));
    const restarted = Date.now();
    await postgres.restart();
    // Recovered: ready again, and a new token can be had.
    let recovered = 0;
    for (let i = 0; i < 200 && !recovered; i++) {
      const ready = await fetch(`${tessera.issuer}/readyz`).then((r) => r.status, () => 0);
      if (ready === 200 && (await token({ grant_type: 'client_credentials' })).status === 200) recovered = Date.now();
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    stop = true;
    await Promise.all([...refreshers, readiness, pages]);

    assert.ok(recovered, 'Tessera recovered by itself');
    console.log(`# PostgreSQL restart: ready again ${((recovered - restarted) / 1000).toFixed(2)} s after the restart began (last not-ready answer ${((lastUnready - restarted) / 1000).toFixed(2)} s); statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.equal(tessera.child.exitCode, null, 'the process is alive');
    assert.ok(outageSeen, '/readyz said not ready during the restart');
    assert.equal(statuses.get(500) ?? 0, 0, `no 500s: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.equal(statuses.get(0) ?? 0, 0, 'no connection dropped by Tessera');
    for (const [i, rt] of chains.entries()) {
      const r = await token({ grant_type: 'refresh_token', refresh_token: rt });
      assert.equal(r.status, 200, `chain ${i} works after the restart: ${JSON.stringify(r.body)}`);
    }
  });

  it('while the database is down: a 503 page for people, temporarily_unavailable for apps, readyz not ready', async () => {
    await postgres.stop();
    try {
      const page = await fetch(`${tessera.issuer}/interaction/abcdefghijklmnop`, { headers: { cookie: 'tessera.interaction=abcdefghijklmnop' } });
      assert.ok([400, 503].includes(page.status), `an interaction page: ${page.status}`);
      const cc = await token({ grant_type: 'client_credentials' });
      assert.equal(cc.status, 503);
      assert.equal(cc.body.error, 'temporarily_unavailable');
      assert.equal(cc.retryAfter, '5');
      const auth = await fetch(`${tessera.issuer}/auth?client_id=rp&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(REDIRECT)}&code_challenge=${'c'.repeat(43)}&code_challenge_method=S256`, { redirect: 'manual', headers: { accept: 'text/html' } });
      // The app hears it (a redirect with the error, when its registration is at hand), or the person sees a 503 page.
      if (auth.status === 303 || auth.status === 302) {
        const back = new URL(auth.headers.get('location')!);
        assert.equal(back.origin + back.pathname, REDIRECT);
        assert.equal(back.searchParams.get('error'), 'temporarily_unavailable');
      } else {
        assert.equal(auth.status, 503);
        assert.match(await auth.text(), /cannot reach its database/);
      }
      assert.equal((await fetch(`${tessera.issuer}/readyz`)).status, 503);
      assert.equal((await fetch(`${tessera.issuer}/healthz`)).status, 200, 'alive, only not ready');
    } finally {
      await postgres.start();
    }
    for (let i = 0; i < 100; i++) {
      if ((await fetch(`${tessera.issuer}/readyz`)).status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal((await token({ grant_type: 'client_credentials' })).status, 200);
    assert.equal(tessera.child.exitCode, null);
  });
});
