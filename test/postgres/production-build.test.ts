import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:net';
import { PROJECT_ROOT } from '../../src/paths.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { TEST_SECRET } from '../support/tessera.js';
import { Agent } from '../support/agent.js';
import { signIn } from '../support/journey.js';
import { runCli, runProcess, spawnTessera, type Entry, type TesseraProcess } from '../support/processes.js';
import { unusedPort } from '../support/ports.js';

/**
 * What the Dockerfile ships: the compiled tree with the dev dependencies pruned away, started with
 * NODE_ENV=production. Built here in a scratch copy of the project, as the Dockerfile builds it.
 */
describe('the production tree (compiled, npm prune --omit=dev, NODE_ENV=production)', () => {
  let dir: string;
  let entry: Entry;
  let testDb: TestDatabase;
  let env: Record<string, string>;
  let server: TesseraProcess | null = null;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'tessera-production-'));
    for (const name of ['package.json', 'package-lock.json', 'tsconfig.json']) copyFileSync(path.join(PROJECT_ROOT, name), path.join(dir, name));
    for (const name of ['src', 'migrations', 'views', 'public']) cpSync(path.join(PROJECT_ROOT, name), path.join(dir, name), { recursive: true });
    // Hard links: a copy of node_modules in a moment, which prune can thin without touching the original.
    const linked = await runProcess('cp', ['-al', path.join(PROJECT_ROOT, 'node_modules'), path.join(dir, 'node_modules')], { cwd: dir, env: process.env });
    assert.equal(linked.code, 0, linked.stderr);
    // npm rewrites its hidden lockfile: that one file must be a copy of its own.
    const hidden = path.join(dir, 'node_modules/.package-lock.json');
    unlinkSync(hidden);
    copyFileSync(path.join(PROJECT_ROOT, 'node_modules/.package-lock.json'), hidden);

    const build = await runProcess(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { cwd: dir, env: process.env });
    assert.equal(build.code, 0, build.stdout + build.stderr);
    const prune = await runProcess('npm', ['prune', '--omit=dev', '--offline', '--no-audit', '--no-fund'], { cwd: dir, env: process.env });
    assert.equal(prune.code, 0, prune.stdout + prune.stderr);
    assert.equal(existsSync(path.join(dir, 'node_modules/tsx')), false, 'dev dependencies are gone');
    assert.equal(existsSync(path.join(dir, 'node_modules/typescript')), false, 'dev dependencies are gone');
    assert.ok(existsSync(path.join(PROJECT_ROOT, 'node_modules/tsx')), 'the project’s own node_modules is untouched');

    entry = { root: dir, nodeArgs: [], main: 'dist/src/main.js', cli: 'dist/src/cli.js' };
    testDb = await createTestDatabase();
    env = { NODE_ENV: 'production', TESSERA_SECRET: TEST_SECRET, DATABASE_URL: testDb.url!, LOG_LEVEL: 'warn', TESSERA_MODE: '', DEMO: '' };
  });
  after(async () => {
    await server?.stop();
    await testDb?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cli = (args: string[], stdin?: string) => runCli(args, { ...process.env, ...env }, { entry, ...(stdin === undefined ? {} : { stdin }) });

  it('refuses to start while a code method cannot send, saying the command that works in this tree', async () => {
    const port = await unusedPort();
    const r = await runProcess(process.execPath, [entry.main], { cwd: dir, env: { ...process.env, ...env, PORT: String(port), ISSUER: `http://127.0.0.1:${port}` } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Tessera could not start: email codes are switched on but no SMTP server is configured: run "node dist\/src\/cli\.js settings set smtp\.host <host>"/);
    assert.match(r.stderr, /docker compose run --rm tessera node dist\/src\/cli\.js settings set/);
  });

  it('a database that does not exist, a server that does not answer, a host unknown: one line that says what to do', async () => {
    const start = (databaseUrl: string) => runProcess(process.execPath, [entry.main], { cwd: dir, env: { ...process.env, ...env, DATABASE_URL: databaseUrl, PORT: '0', ISSUER: 'http://127.0.0.1:9' } });
    const elsewhere = new URL(testDb.url!);
    elsewhere.pathname = '/tessera_no_such_database';
    const missing = await start(elsewhere.href);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Tessera could not start: The database could not be opened: database "tessera_no_such_database" does not exist \(create it first: createdb/);
    const closed = await start(`postgres://postgres@127.0.0.1:${await unusedPort()}/tessera`);
    assert.equal(closed.code, 1);
    assert.match(closed.stderr, /Tessera could not start: The database could not be opened: connect ECONNREFUSED .* \(is PostgreSQL running/);
    const unknownHost = await start('postgres://postgres@tessera-no-such-host.invalid:5432/tessera');
    assert.equal(unknownHost.code, 1);
    assert.match(unknownHost.stderr, /Tessera could not start: The database could not be opened: .*tessera-no-such-host\.invalid \(the host in DATABASE_URL could not be found/);
  });

  it('several bad settings are named at once, one line each', async () => {
    const r = await runProcess(process.execPath, [entry.main], { cwd: dir, env: { ...process.env, ...env, PORT: 'eighty', LOG_LEVEL: 'loud', TESSERA_SECRET: '' } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^Invalid configuration: PORT .*$/m);
    assert.match(r.stderr, /^Invalid configuration: LOG_LEVEL .*$/m);
  });

  it('is configured with its own CLI, starts, and signs a user in to a client', async () => {
    for (const [key, value] of [['mfa.methods.email', 'false'], ['mfa.methods.sms', 'false']] as const) {
      const r = await cli(['settings', 'set', key, value]);
      assert.equal(r.code, 0, r.stderr);
    }
    let r = await cli(['user', 'add', 'prod-user', '--password-stdin'], 'prod-user-password\n');
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['client', 'add', 'prod-app', '--secret', 'prod-app-secret-0123456789', '--redirect-uri', 'http://127.0.0.1:9/cb']);
    assert.equal(r.code, 0, r.stderr);

    server = await spawnTessera(env, entry);
    const discovery = (await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json()) as { issuer: string };
    assert.equal(discovery.issuer, server.issuer);
    assert.equal((await fetch(`${server.issuer}/demo`)).status, 404, 'no demo in production unless asked for');

    const url = new URL(`${server.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: 'prod-app', response_type: 'code', scope: 'openid', redirect_uri: 'http://127.0.0.1:9/cb', state: 'state-prod-1234',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    }).toString();
    const callback = await signIn(new Agent(), url.href, { username: 'prod-user', password: 'prod-user-password', redirectUri: 'http://127.0.0.1:9/cb' });
    assert.ok(new URL(callback).searchParams.get('code'));
    await server.stop();
    server = null;
  });

  it('the demo is for dev mode: refused in production, and its accounts disabled once production starts on that database', async () => {
    const refused = await runProcess(process.execPath, [entry.main], { cwd: dir, env: { ...process.env, ...env, DEMO: 'true', PORT: '0', ISSUER: 'http://127.0.0.1:9' } });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^Invalid configuration: DEMO=true is for dev mode only \(the demo accounts have published passwords\)$/m);

    // The same tree in dev mode on this database: the demo app works (its client library is a production dependency).
    server = await spawnTessera({ ...env, NODE_ENV: '', TESSERA_MODE: 'dev', DEMO: 'true' }, entry);
    assert.equal((await fetch(`${server.issuer}/demo`)).status, 200);
    const login = await fetch(`${server.issuer}/demo/login`, { redirect: 'manual' });
    assert.equal(login.status, 302);
    assert.ok(login.headers.get('location')?.startsWith(`${server.issuer}/auth?`));
    await server.stop();

    // Back in production: demo / demo-password no longer signs in.
    server = await spawnTessera(env, entry);
    const r = await cli(['user', 'list']);
    assert.match(r.stdout, /^demo\t[0-9a-f-]{36}\tdisabled\t/m);
    assert.match(r.stdout, /^demo-mfa\t[0-9a-f-]{36}\tdisabled\t/m);
  });

  it('a port another process holds: one line that says what to do (after the settings above let it start)', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '0.0.0.0', resolve));
    try {
      const taken = await runProcess(process.execPath, [entry.main], { cwd: dir, env: { ...process.env, ...env, DATABASE_URL: testDb.url!, PORT: String((holder.address() as { port: number }).port), ISSUER: 'http://127.0.0.1:9' } });
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, /Tessera could not start: listen EADDRINUSE.* \(another process listens there: stop it, or set PORT to a free port\)/);
    } finally {
      holder.close();
    }
  });
});
