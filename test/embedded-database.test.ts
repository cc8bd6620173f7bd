import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TEST_SECRET } from './support/tessera.js';
import { Agent } from './support/agent.js';
import { demoAuthorizationUrl, signIn } from './support/journey.js';
import { runCli, spawnTessera, runProcess, SOURCE_ENTRY, type TesseraProcess } from './support/processes.js';

/**
 * The default set-up (no DATABASE_URL): Tessera on embedded PGlite under DATA_DIR. One process owns
 * the directory; a CLI command typed beside the server runs inside it. Always on PGlite, whatever
 * database the rest of the suite uses.
 */
describe('embedded database: the CLI beside a running server, restarts, a second start, a killed server', () => {
  let dataDir: string;
  let env: Record<string, string>;
  let server: TesseraProcess | null = null;
  const cli = (args: string[], stdin?: string) => runCli(args, { ...process.env, ...env }, stdin === undefined ? {} : { stdin });
  const CLIENT_SECRET = 'my-app-secret-0123456789';

  before(() => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'tessera-embedded-'));
    // DATABASE_URL empty means unset: the embedded database, even in the PostgreSQL run of the suite.
    env = { DATA_DIR: dataDir, DATABASE_URL: '', TESSERA_SECRET: TEST_SECRET, TESSERA_MODE: 'dev', DEMO: 'true', LOG_LEVEL: 'warn' };
  });
  after(async () => {
    await server?.stop('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** The authorization-code flow for my-app (confidential, PKCE), through the password and consent pages; the ID token's claims. */
  async function signInWithMyApp(issuer: string, username: string, password: string): Promise<Record<string, unknown>> {
    const verifier = 'w'.repeat(43);
    const redirectUri = 'http://127.0.0.1:9/cb';
    const url = new URL(`${issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: 'my-app', response_type: 'code', scope: 'openid profile', redirect_uri: redirectUri, state: 's'.repeat(16), nonce: 'n'.repeat(16),
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    }).toString();
    const callback = await signIn(new Agent(), url.href, { username, password, redirectUri });
    const code = new URL(callback).searchParams.get('code');
    assert.ok(code, `a code comes back: ${callback}`);
    const response = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`my-app:${CLIENT_SECRET}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
    });
    const tokens = (await response.json()) as { id_token?: string };
    assert.ok(tokens.id_token, JSON.stringify(tokens));
    return JSON.parse(Buffer.from(tokens.id_token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  }

  it('a client and a user added by the CLI while the server runs sign in at once, and are still there after a restart', async () => {
    server = await spawnTessera(env);
    const lock = JSON.parse(readFileSync(path.join(dataDir, 'tessera.lock'), 'utf8')) as { pid: number; role: string; issuer: string };
    assert.equal(lock.role, 'server');
    assert.equal(lock.issuer, server.issuer);

    let r = await cli(['client', 'add', 'my-app', '--secret', CLIENT_SECRET, '--redirect-uri', 'http://127.0.0.1:9/cb', '--name', 'My App']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^created client my-app$/m);
    r = await cli(['user', 'add', 'alice', '--password-stdin', '--email', 'alice@example.com'], 'alice-password-1\n');
    assert.equal(r.code, 0, r.stderr);
    const aliceId = /created user alice \(([0-9a-f-]{36})\)/.exec(r.stdout)?.[1];
    assert.ok(aliceId, r.stdout);
    // A refused command reports its error through the server, with the same exit code.
    r = await cli(['user', 'add', 'alice', '--password', 'alice-password-1']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: user "alice" already exists');
    // A file named relative to where the command is typed is read there, not in the server's directory.
    const elsewhere = mkdtempSync(path.join(tmpdir(), 'tessera-tokens-'));
    writeFileSync(path.join(elsewhere, 'tokens.csv'), 'serial,seed,type\nFOB-1,3132333435363738393031323334353637383930,totp\n');
    r = await runCli(['token', 'import', 'tokens.csv'], { ...process.env, ...env }, { cwd: elsewhere });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'imported 1 token (1 TOTP, 0 HOTP) into the unassigned stock');
    // Through npm (npm run cli) the command runs in the project's folder; npm says where it was typed.
    writeFileSync(path.join(elsewhere, 'more.csv'), 'FOB-2,3132333435363738393031323334353637383930,hotp\n');
    r = await runCli(['token', 'import', 'more.csv'], { ...process.env, ...env, npm_lifecycle_event: 'cli', INIT_CWD: elsewhere });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'imported 1 token (0 TOTP, 1 HOTP) into the unassigned stock');
    r = await runCli(['token', 'import', '.'], { ...process.env, ...env }, { cwd: elsewhere });
    assert.match(r.stderr, /^error: cannot read .*: it is a directory/);
    r = await runCli(['token', 'import', 'missing.csv'], { ...process.env, ...env }, { cwd: elsewhere });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: cannot read .*tessera-tokens-.*missing\.csv: no such file/);
    rmSync(elsewhere, { recursive: true, force: true });

    // Without restarting: the new client and user work at once.
    const claims = await signInWithMyApp(server.issuer, 'alice', 'alice-password-1');
    assert.equal(claims.sub, aliceId);
    assert.equal(claims.aud, 'my-app');

    // Stopped cleanly (SIGTERM): the lock is gone; started again, both are still there.
    assert.equal(await server.stop('SIGTERM'), 0);
    assert.equal(existsSync(path.join(dataDir, 'tessera.lock')), false, 'the lock is released');
    server = await spawnTessera(env);
    r = await cli(['client', 'list']);
    assert.match(r.stdout, /^my-app\tconfidential\t/m);
    const again = await signInWithMyApp(server.issuer, 'alice', 'alice-password-1');
    assert.equal(again.sub, aliceId);
    // The restart listens on another port, so another issuer: the demo app's redirect URIs followed it.
    const demo = await signIn(new Agent(), await demoAuthorizationUrl(server.issuer), { username: 'alice', password: 'alice-password-1', redirectUri: `${server.issuer}/demo/callback` });
    assert.ok(new URL(demo).searchParams.get('code'), 'the demo app signs in at the new issuer');
  });

  it('a second server on the same data directory is refused with one clear line, and the first goes on', async () => {
    assert.ok(server);
    const second = await runProcess(process.execPath, [...SOURCE_ENTRY.nodeArgs, path.join(SOURCE_ENTRY.root, SOURCE_ENTRY.main)], {
      cwd: SOURCE_ENTRY.root,
      env: { ...process.env, ...env, PORT: '0', HOST: '127.0.0.1' },
    });
    assert.equal(second.code, 1);
    const pid = (JSON.parse(readFileSync(path.join(dataDir, 'tessera.lock'), 'utf8')) as { pid: number }).pid;
    assert.match(second.stderr, new RegExp(`^Tessera is already running on the data directory .+ \\(pid ${pid}, ${server.issuer.replace(/\./g, '\\.')}\\)\\. Stop it first`, 'm'));
    assert.doesNotMatch(second.stderr, /\n\s+at /, 'no stack trace');
    assert.equal((await fetch(`${server.issuer}/readyz`)).status, 200);
    const r = await cli(['user', 'list']);
    assert.match(r.stdout, /^alice\t/m, 'the first server still owns and serves the directory');
  });

  it('a killed server does not block the next start, and what it had committed is kept', async () => {
    assert.ok(server);
    let r = await cli(['group', 'add', 'ops']);
    assert.equal(r.code, 0, r.stderr);
    await server.stop('SIGKILL');
    assert.ok(existsSync(path.join(dataDir, 'tessera.lock')), 'a killed process leaves its lock behind');
    server = await spawnTessera(env);
    r = await cli(['group', 'list']);
    assert.match(r.stdout, /^ops\t0 member\(s\)$/m);
  });

  it('with no server running, the CLI opens the directory itself and lets go of it', async () => {
    assert.ok(server);
    assert.equal(await server.stop('SIGINT'), 0);
    server = null;
    let r = await cli(['user', 'add', 'bob', '--password-stdin'], 'bob-password-1\n');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(path.join(dataDir, 'tessera.lock')), false, 'the CLI released the directory');
    // Two commands at once without a server: the second waits for the first, neither loses its write.
    const [a, b] = await Promise.all([cli(['group', 'add', 'red']), cli(['group', 'add', 'blue'])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    server = await spawnTessera(env);
    r = await cli(['group', 'list']);
    assert.match(r.stdout, /^blue\t/m);
    assert.match(r.stdout, /^red\t/m);
    r = await cli(['user', 'list']);
    assert.match(r.stdout, /^bob\t/m);
  });
});
