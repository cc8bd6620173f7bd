import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { TEST_SECRET } from './support/tessera.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { findUserByUsername } from '../src/directory/users.js';
import { verifyPassword } from '../src/directory/passwords.js';

interface Run { code: number; stdout: string; stderr: string }

describe('CLI (npm run cli)', () => {
  let testDb: TestDatabase | null = null;
  let dataDir: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'tessera-cli-'));
    env = { ...process.env, TESSERA_SECRET: TEST_SECRET, DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    if (process.env.DATABASE_URL) {
      testDb = await createTestDatabase();
      env.DATABASE_URL = testDb.url!;
    }
  });
  after(async () => {
    await testDb?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  function cli(...args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'src/cli.ts'), ...args], { cwd: PROJECT_ROOT, env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr: stderr.split('\n').filter((l) => !/Unsupported runtime/.test(l)).join('\n').trim() }));
    });
  }

  it('manages users, groups, clients and keys in one session', async () => {
    // One process per command, as an operator runs them. (On PGlite each opens the data dir in turn.)
    let r = await cli('user', 'add', 'hank', '--password', 'hank-password-1', '--email', 'hank@example.com', '--email-verified', '--phone', '+14155550123', '--phone-verified', '--given-name', 'Hank', '--family-name', 'Hill');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /created user hank/);

    r = await cli('user', 'add', 'hank', '--password', 'hank-password-1');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: user "hank" already exists');

    r = await cli('user', 'add', 'ivy', '--password', 'short');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /at least 8 characters/);

    r = await cli('user', 'add', 'ivy', '--password', 'ivy-password-1', '--phone', '0123');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /E\.164/);

    r = await cli('user', 'set-password', 'hank', '--password', 'hank-password-2');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('user', 'disable', 'hank');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('user', 'list');
    assert.match(r.stdout, /^hank\t[0-9a-f-]{36}\tdisabled\thank@example.com\t\+14155550123$/m);
    r = await cli('user', 'enable', 'hank');
    assert.equal(r.code, 0);

    r = await cli('group', 'add', 'staff');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('group', 'add-member', 'staff', 'hank');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('group', 'add-member', 'staff', 'nobody');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: no user "nobody"');
    r = await cli('group', 'list');
    assert.match(r.stdout, /staff\t1 member/);

    r = await cli('client', 'add', 'webapp', '--redirect-uri', 'https://app.example.com/cb', '--redirect-uri', 'https://app.example.com/cb2', '--scope', 'openid profile', '--grant-type', 'authorization_code', '--grant-type', 'refresh_token');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /client secret: \S{20,}/, 'a generated secret is shown once');
    r = await cli('client', 'add', 'spa', '--public', '--redirect-uri', 'http://localhost:5173/cb');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('client', 'add', 'bad', '--redirect-uri', 'not-a-url');
    assert.equal(r.code, 1);
    r = await cli('client', 'add', 'bad', '--grant-type', 'password', '--redirect-uri', 'https://x.example/cb');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown grant type "password"/);
    r = await cli('client', 'list');
    assert.match(r.stdout, /^spa\tpublic\tauthorization_code,refresh_token\thttp:\/\/localhost:5173\/cb$/m);
    assert.match(r.stdout, /^webapp\tconfidential\t/m);
    r = await cli('client', 'remove', 'spa');
    assert.equal(r.code, 0);
    r = await cli('client', 'remove', 'spa');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: no client "spa"');

    r = await cli('client', 'set-mfa', 'webapp', 'on');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /MFA required for webapp/);
    r = await cli('client', 'set-mfa', 'ghost', 'on');
    assert.equal(r.code, 1);
    r = await cli('client', 'set-scope', 'webapp', 'openid email orders:read');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /api allow/, 'an API scope is not a client scope; the error says how to give it');

    r = await cli('api', 'add', 'https://orders.example.com', '--name', 'Orders', '--scope', 'orders:read orders:write', '--signing-alg', 'ES256', '--ttl', '600');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /jwt access tokens signed ES256, valid 600 s/);
    r = await cli('api', 'add', 'orders', '--name', 'Orders', '--scope', 'orders:read');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /absolute URI/);
    r = await cli('api', 'add', 'https://orders.example.com', '--name', 'Again', '--scope', 'x');
    assert.equal(r.stderr, 'error: an API "https://orders.example.com" already exists');
    r = await cli('api', 'allow', 'https://orders.example.com', 'webapp', '--scope', 'orders:delete');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has no scope orders:delete/);
    r = await cli('api', 'allow', 'https://orders.example.com', 'webapp', '--scope', 'orders:read');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('api', 'list');
    assert.match(r.stdout, /^https:\/\/orders\.example\.com\tOrders\torders:read orders:write\tjwt ES256\t600 s\tclients webapp\(orders:read\)$/m);
    r = await cli('api', 'disallow', 'https://orders.example.com', 'webapp');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('api', 'remove', 'https://orders.example.com');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('api', 'remove', 'https://orders.example.com');
    assert.equal(r.stderr, 'error: no API "https://orders.example.com"');

    r = await cli('settings', 'set', 'mfa.otp.length', '8');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('settings', 'set', 'mfa.otp.length', '11');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: invalid mfa\.otp\.length: /);
    r = await cli('settings', 'set', 'mfa.otp.lenght', '6');
    assert.equal(r.stderr, 'error: unknown setting "mfa.otp.lenght"');
    r = await cli('settings', 'set', 'smtp.password', 'smtp-secret-value');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('settings', 'set', 'mfa.templates.sms', 'Code {code} for {app}');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('settings', 'show');
    const shown = JSON.parse(r.stdout) as { mfa: { otp: { length: number }; templates: { sms: string } }; smtp: { password: string } };
    assert.equal(shown.mfa.otp.length, 8);
    assert.equal(shown.mfa.templates.sms, 'Code {code} for {app}');
    assert.equal(shown.smtp.password, '********', 'secrets are masked');
    r = await cli('settings', 'unset', 'mfa.otp.length');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse((await cli('settings', 'show')).stdout) as { mfa: { otp: { length: number } } }).mfa.otp.length, 6);

    r = await cli('policy', 'add', 'staff-mfa', '--group', 'staff', '--mfa', 'required', '--priority', '10', '--factors', 'totp,email');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('policy', 'add', 'hank-app', '--user', 'hank', '--mfa', 'required', '--require-authenticator-app');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('policy', 'add', 'bad', '--user', 'hank', '--group', 'staff', '--mfa', 'required');
    assert.equal(r.code, 1);
    r = await cli('policy', 'add', 'bad', '--user', 'hank', '--mfa', 'sometimes');
    assert.equal(r.code, 1);
    r = await cli('policy', 'add', 'bad', '--user', 'hank', '--mfa', 'required', '--factors', 'pigeon');
    assert.equal(r.code, 1);
    r = await cli('policy', 'list');
    assert.match(r.stdout, /^staff-mfa\tgroup:staff\tpriority 10\tmfa required\tfactors totp,email$/m);
    assert.match(r.stdout, /^hank-app\tuser:hank\tpriority 100\tmfa required\tfactors any\tauthenticator app required$/m);
    r = await cli('policy', 'remove', 'hank-app');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('policy', 'remove', 'hank-app');
    assert.equal(r.stderr, 'error: no policy "hank-app"');

    r = await cli('keys', 'rotate');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /new signing keys: /);

    r = await cli('frobnicate');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown command "frobnicate"/);
    r = await cli('user', 'add', 'x', '--bogus');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: .*bogus/);
    r = await cli('--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: npm run cli/);

    if (testDb) {
      const hank = await findUserByUsername(testDb.handle.db, 'hank');
      assert.equal(hank?.status, 'active');
      assert.equal(hank?.email_verified, true);
      assert.ok(await verifyPassword(hank!.password_hash, 'hank-password-2'));
    }
  });
});
