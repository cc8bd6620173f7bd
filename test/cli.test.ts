import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { TEST_SECRET } from './support/tessera.js';
import { runCli } from './support/processes.js';
import { openDatabase, type Db } from '../src/db/index.js';
import { reserve } from '../src/jit/shared-accounts.js';
import { findUserByUsername } from '../src/directory/users.js';
import { hashPassword, verifyPassword } from '../src/directory/passwords.js';
import { fileRestoreRequest } from '../src/portal/restore.js';
import { generateRecoveryCodes } from '../src/factors/recovery-codes.js';
import { SecretBox } from '../src/crypto/secret-box.js';

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
    } else {
      // The embedded database is made by a start or by migrate; other commands refuse to make one.
      assert.equal((await runCli(['migrate'], env)).code, 0);
    }
  });
  after(async () => {
    await testDb?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const cli = (...args: string[]) => runCli(args, env);

  /** Reads what the commands wrote: the test database, or the embedded data directory (no CLI holds it between commands). */
  async function inDatabase<T>(read: (db: Db) => Promise<T>): Promise<T> {
    if (testDb) return read(testDb.handle.db);
    const embedded = await openDatabase({ databaseUrl: null, dataDir, role: 'cli' });
    try {
      return await read(embedded.db);
    } finally {
      await embedded.close();
    }
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
    assert.equal(r.stderr, 'error: Password must be at least 8 characters.', 'a rule of the password, not a typing mistake: no pointer to --help');

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
    r = await cli('scope', 'list');
    assert.match(r.stdout, /no scope is protected/);
    r = await cli('scope', 'protect', 'orders:write', '--api', 'https://orders.example.com');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'protected orders:write of https://orders.example.com: any factor, within 900 s');
    r = await cli('scope', 'protect', 'orders:write', '--api', 'https://orders.example.com', '--factors', 'totp,email', '--max-age', '0');
    assert.equal(r.stdout.trim(), 'protected orders:write of https://orders.example.com: totp, email, every time', 'protect replaces the rule');
    r = await cli('scope', 'protect', 'phone', '--factors', 'sms');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('scope', 'list');
    assert.match(r.stdout, /^https:\/\/orders\.example\.com\torders:write\ttotp, email, every time$/m);
    assert.match(r.stdout, /^openid\tphone\tsms, within 900 s$/m);
    for (const [args, message] of [
      [['orders:delete', '--api', 'https://orders.example.com'], /has no scope "orders:delete"/],
      [['orders:write', '--api', 'https://nowhere.example.com'], /no API "https:\/\/nowhere\.example\.com"/],
      [['openid'], /openid is part of every sign-in/],
      [['orders:write'], /not an OpenID scope .* add --api <identifier>/],
      [['phone', '--max-age=-5'], /--max-age.*0 to 86400/],
      [['phone', '--max-age', 'soon'], /--max-age takes a whole number/],
      [['phone', '--factors', 'carrier'], /--factors: unknown factor "carrier" \(each factor is one of email, sms, totp, webauthn, recovery\)/],
      [['phone', '--bogus'], /^error: unknown option --bogus \(see/],
    ] as [string[], RegExp][]) {
      r = await cli('scope', 'protect', ...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
    }
    r = await cli('scope', 'unprotect', 'orders:write');
    assert.match(r.stderr, /is not protected \(it is protected --api https:\/\/orders\.example\.com\)/);
    r = await cli('scope');
    assert.match(r.stderr, /"scope" needs a subcommand: protect, unprotect, list/);
    r = await cli('scope', 'unprotect', 'phone');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('scope', 'unprotect', 'phone');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is not protected/);
    r = await cli('api', 'disallow', 'https://orders.example.com', 'webapp');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('api', 'remove', 'https://orders.example.com');
    assert.equal(r.code, 0, r.stderr);
    assert.match((await cli('scope', 'list')).stdout, /no scope is protected/, 'an API\'s rules go with it');
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

    const hank = await inDatabase((db) => findUserByUsername(db, 'hank'));
    assert.equal(hank?.status, 'active');
    assert.equal(hank?.email_verified, true);
    assert.ok(await verifyPassword(hank!.password_hash, 'hank-password-2'));
  });

  it('shows, edits, unlocks, resets and removes users; removes groups; reads the audit log', async () => {
    let r = await cli('user', 'add', 'mona', '--password', 'mona-password-1', '--email', 'mona@example.com', '--email-verified');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('user', 'show', 'mona');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^username\s+mona$/m);
    assert.match(r.stdout, /^email\s+mona@example\.com \(verified\)$/m);
    assert.match(r.stdout, /^locked\s+no$/m);
    r = await cli('user', 'show', 'nobody-here');
    assert.notEqual(r.code, 0, 'an unknown user exits non-zero');
    assert.equal(r.stderr, 'error: no user "nobody-here"');
    r = await cli('user', 'set', 'mona', '--phone', '+14155550177', '--phone-verified', 'true', '--given-name', 'Mona', '--email', 'mona@new.example.com');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /email mona@new\.example\.com \(not verified\), phone \+14155550177 \(verified\)/, 'a new address is unverified unless said so');
    r = await cli('user', 'set', 'mona', '--email-verified', 'yes');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--email-verified takes true or false/);
    r = await cli('user', 'set', 'mona', '--phone', '0123');
    assert.match(r.stderr, /^error: --phone: invalid phone/);
    r = await cli('user', 'set', 'mona');
    assert.match(r.stderr, /say what to set/);
    await inDatabase((db) => db.updateTable('users').set({ failed_logins: 5, locked_until: new Date(Date.now() + 600_000) }).where('username', '=', 'mona').execute());
    assert.match((await cli('user', 'show', 'mona')).stdout, /^locked\s+until /m);
    r = await cli('user', 'unlock', 'mona');
    assert.equal(r.stdout.trim(), 'mona unlocked');
    assert.match((await cli('user', 'show', 'mona')).stdout, /^failed attempts\s+0$/m);
    // A passkey and a set of recovery codes: shown, then taken off one by one.
    await inDatabase(async (db) => {
      const mona = (await findUserByUsername(db, 'mona'))!;
      await db.insertInto('webauthn_credentials').values({ id: 'cred-mona-1', user_id: mona.id, name: 'Work key', public_key: Buffer.from('not a real key'), device_type: 'singleDevice', aaguid: '00000000-0000-0000-0000-000000000000' }).execute();
      await generateRecoveryCodes(db, new SecretBox(TEST_SECRET).deriveKey('recovery-codes'), mona.id);
    });
    const shown = (await cli('user', 'show', 'mona')).stdout;
    assert.match(shown, /^passkeys\s+Work key \(device-bound, id cred-mona-1, added \d{4}-\d\d-\d\d\)$/m);
    assert.match(shown, /^recovery codes\s+10 of 10 left \(made \d{4}-\d\d-\d\d\)$/m);
    r = await cli('user', 'remove-passkey', 'mona', 'Home key');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: user "mona" has no passkey "Home key"');
    r = await cli('user', 'remove-passkey', 'mona', 'Work key');
    assert.equal(r.stdout.trim(), 'removed the passkey "Work key" of mona');
    r = await cli('user', 'remove-recovery-codes', 'mona');
    assert.equal(r.stdout.trim(), 'voided the recovery codes of mona (10 of 10 were unused)');
    r = await cli('user', 'remove-recovery-codes', 'mona');
    assert.match(r.stderr, /has no recovery codes/);
    assert.match((await cli('user', 'show', 'mona')).stdout, /^passkeys\s+-\n^recovery codes\s+-$/m);
    r = await cli('user', 'reset-mfa', 'mona');
    assert.equal(r.stdout.trim(), 'mona had no authenticator app, no passkey and no recovery codes');
    r = await cli('group', 'add', 'crew');
    r = await cli('group', 'add-member', 'crew', 'mona');
    r = await cli('group', 'remove-member', 'crew', 'mona');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('group', 'remove', 'crew');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('group', 'remove', 'admins');
    assert.match(r.stderr, /built in/);
    r = await cli('group', 'add-member', 'admins', 'mona');
    assert.equal(r.code, 0, r.stderr);
    assert.match((await cli('group', 'list')).stdout, /^admins\t1 member\(s\)\tbuilt in$/m);
    r = await cli('audit', 'list', '--user', 'mona', '--limit', '3');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT[\d:.]+Z\tgroup\.member_added\tcli:[^\t]+\tadmins\t-$/);
    r = await cli('audit', 'list', '--type', 'user.updated');
    assert.match(r.stdout, /\tuser\.updated\tcli:[^\t]+\tmona\t-$/m);
    r = await cli('audit', 'list', '--since', 'last tuesday');
    assert.match(r.stderr, /^error: --since: must be a date and time/);
    r = await cli('user', 'remove', 'mona');
    assert.equal(r.stdout.trim(), 'removed user mona');
    assert.notEqual((await cli('user', 'show', 'mona')).code, 0);
    assert.match((await cli('audit', 'list', '--type', 'user.removed')).stdout, /\tuser\.removed\tcli:/);
  });

  it('refuses wrong and contradictory input with one line naming the flag, before touching anything', async () => {
    const refused = async (args: string[], pattern: RegExp, stdin?: string) => {
      const r = await runCli(args, env, stdin === undefined ? {} : { stdin });
      assert.equal(r.code, 1, `${args.join(' ')} should fail: ${r.stdout}`);
      assert.equal(r.stderr.split('\n').length, 1, `one line: ${r.stderr}`);
      assert.match(r.stderr.replace(/ \(see npm run cli -- --help\)$/, ''), pattern, args.join(' '));
      return r;
    };
    await refused(['user', 'list', '--secret', 'x'], /^error: --secret is not an option of "user list"$/);
    await refused(['user', 'list', 'extra'], /^error: unexpected argument "extra"$/);
    await refused(['group', 'add-member', 'staff'], /^error: missing <username>$/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'off', '--mfa', 'required'], /^error: --mfa is given more than once$/);
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--phone-verified'], /^error: --phone-verified needs --phone$/);
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--email-verified'], /^error: --email-verified needs --email$/);
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--phone', '12345'], /^error: --phone: invalid phone "12345"/);
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--password-stdin'], /^error: give --password or --password-stdin, not both$/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'off', '--require-authenticator-app'], /^error: --require-authenticator-app: .*MFA is off/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'required', '--factors', 'email', '--require-authenticator-app'], /^error: --require-authenticator-app: .*allows no other methods/);
    await refused(['policy', 'add', 'p1', '--user', 'nobody', '--mfa', 'required'], /^error: --user: no user "nobody"$/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'sometimes'], /^error: --mfa is required or optional or off \(got "sometimes"\)$/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'required', '--factors', 'pigeon'], /^error: --factors: each method is one of email, sms, totp, webauthn, recovery$/);
    await refused(['policy', 'add', 'p1', '--user', 'hank', '--mfa', 'required', '--priority', 'high'], /^error: --priority takes a whole number/);
    await refused(['client', 'add', 'bad', '--redirect-uri', 'not-a-url'], /^error: --redirect-uri: "not-a-url" is not an absolute URL/);
    await refused(['client', 'add', 'bad', '--public', '--secret', 'x'.repeat(20), '--redirect-uri', 'https://x.example/cb'], /^error: --public clients have no --secret$/);
    await refused(['client', 'add', 'bad', '--redirect-uri', 'https://x.example/cb', '--id-token-alg', 'HS256'], /^error: --id-token-alg is RS256 or ES256/);
    await refused(['client', 'add', 'bad', '--grant-type', 'client_credentials', '--redirect-uri', 'https://x.example/cb'], /^error: --redirect-uri: redirect URIs are only for clients with the authorization_code grant$/);
    await refused(['api', 'add', 'https://pay.example.com', '--name', 'Pay', '--scope', 'pay', '--ttl', '5'], /^error: --ttl: must be 60 to 86400 seconds$/);
    await refused(['api', 'add', 'https://pay.example.com', '--name', 'Pay', '--scope', 'pay', '--ttl', '-5'], /^error: --ttl needs a value \(one that starts with "-" is given as --ttl=-value\)$/);
    await refused(['api', 'add', 'https://pay.example.com', '--name', 'Pay', '--scope', 'openid pay'], /^error: --scope: openid is an OpenID Connect scope, not an API's/);
    await refused(['api', 'allow', 'https://orders.example.com', 'webapp', '--scope', ' '], /^error: --scope names no scope$/);
    await refused(['client', 'add', 'bad', '--redirect-uri', 'javascript:alert(1)'], /^error: --redirect-uri: "javascript:alert\(1\)" must be an http:\/\/ or https:\/\/ address$/);
    await refused(['client', 'add', 'bad', '--redirect-uri', 'https://x.example/cb', '--grant-type', 'authorization_code', '--grant-type', 'authorization_code'], /^error: --grant-type authorization_code is given twice$/);
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--email-verified=yes'], /^error: --email-verified takes no value$/);
    await refused(['user', 'add', 'kim', '--email', 'not-an-email'], /^error: --email: invalid email "not-an-email"$/, 'kim-password-1\n');
    await refused(['user', 'add', 'hank', '--password-stdin'], /^error: user "hank" already exists$/, 'hank-password-9\n');
    await refused(['user', 'add', 'kim', '--password', 'kim-password-1', '--email', 'kim\u001b[2J@example.com'], /^error: --email: invalid email "kim\?\[2J@example\.com"$/);
    await refused(['settings', 'set', 'mfa.templates.sms', 'Your code is ready'], /^error: invalid mfa\.templates\.sms: must contain \{code\}$/);
    await refused(['settings', 'set', 'sms_gateway.active', 'true'], /^error: invalid sms_gateway\.active: set sms_gateway\.url before switching the gateway on$/);
    await refused(['settings', 'set', 'twilio.accountSid', 'ACxyz'], /^error: invalid twilio\.accountSid: an account SID is AC followed by 32 hex digits$/);
    await refused(['settings', 'set', 'smtp.host'], /^error: missing <value>$/);
    await refused(['api', 'add', 'https://pay.example.com', '--name', 'Pay', '--scope', 'pay', '--format', 'opaque', '--signing-alg', 'ES256'], /^error: --signing-alg applies to --format jwt only/);
    await refused(['api', 'add', 'https://pay.example.com', '--name', 'Pay'], /^error: missing --scope/);
    await refused(['settings', 'set', 'mfa.otp.length', '11'], /^error: invalid mfa\.otp\.length: must be at most 10$/);
    await refused(['settings', 'set', 'mfa.otp.length', '"six"'], /^error: invalid mfa\.otp\.length: must be a number$/);
    await refused(['user', 'add'], /^error: missing <username>$/);
    // Nothing of the refused commands was created.
    const users = await cli('user', 'list');
    assert.doesNotMatch(users.stdout, /^kim\t/m);
  });

  it('on the embedded database, refuses to make a new empty one where there is none (a wrong directory)', async () => {
    const elsewhere = mkdtempSync(path.join(tmpdir(), 'tessera-nowhere-'));
    try {
      const r = await runCli(['settings', 'set', 'smtp.host', 'localhost'], { ...env, DATABASE_URL: '', DATA_DIR: path.join(elsewhere, 'data') });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: there is no Tessera database in .*data: start Tessera once \(npm start\), run "npm run cli -- migrate" to create it, or set DATA_DIR/);
      assert.equal(existsSync(path.join(elsewhere, 'data', 'pglite')), false, 'nothing was created');
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it('help, version, and secrets for settings from standard input', async () => {
    let r = await cli('help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: npm run cli -- <command> \[options\]/);
    r = await cli('--version');
    assert.match(r.stdout, /^tessera \d+\.\d+\.\d+$/m);
    r = await runCli(['settings', 'set', 'sms_gateway.password', '--value-stdin'], env, { stdin: 'gateway-secret-1\n' });
    assert.equal(r.code, 0, r.stderr);
    const settings = JSON.parse((await cli('settings', 'show')).stdout) as { sms_gateway: { password: string } };
    assert.equal(settings.sms_gateway.password, '********');
    // A text setting takes the text as typed: a password of digits stays a password.
    r = await cli('settings', 'set', 'smtp.password', '12345678');
    assert.equal(r.code, 0, r.stderr);
    r = await cli('settings', 'set', 'mfa.otp.length', '7');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse((await cli('settings', 'show')).stdout) as { mfa: { otp: { length: number } } }).mfa.otp.length, 7);
    assert.equal((await cli('settings', 'unset', 'mfa.otp.length')).code, 0);
    r = await cli('settings', 'set', 'mfa.toString', 'x');
    assert.equal(r.stderr, 'error: unknown setting "mfa.toString"');
    r = await runCli(['settings', 'set', 'smtp.password'], env);
    assert.equal(r.code, 1, 'a secret with no value and no terminal');
    assert.match(r.stderr, /no value of smtp\.password given and no terminal to ask at/);
  });

  it('takes a password from standard input or asks for it at a terminal, never only from argv', async () => {
    let r = await runCli(['user', 'add', 'lena', '--password-stdin', '--email', 'lena@example.com'], env, { stdin: 'lena-password-1\n' });
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['user', 'set-password', 'lena', '--password-stdin'], env, { stdin: 'short\n' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /at least 8 characters/);
    // No flag and no terminal to ask at: a clear line, not a hang and not an empty password.
    r = await runCli(['user', 'set-password', 'lena'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: no password given and no terminal to ask at: pipe it in with --password-stdin/m);
    const lena = await inDatabase((db) => findUserByUsername(db, 'lena'));
    assert.ok(await verifyPassword(lena!.password_hash, 'lena-password-1'), 'the newline from stdin is not part of the password');
  });

  it('approval profiles, ordered policies and requests; sponsors; approval per client; the LDAP check', async () => {
    let r = await cli('approval', 'profile', 'add', 'managers', '--mode', 'approve', '--deliver', 'email', '--link-minutes', '45', '--default-recipient', 'sec@example.com', '--subject', 'Approve {user}?');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /created approval profile managers \(approve, by email, links valid 45 min\)/);
    r = await cli('approval', 'profile', 'add', 'bad', '--mode', 'approve', '--deliver', 'sms', '--default-recipient', 'sec@example.com');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: --default-recipient: delivery is by sms/);
    r = await cli('approval', 'profile', 'add', 'watch', '--mode', 'inform', '--deliver', 'email', '--message', '{user} signed in to {app}');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await cli('approval', 'policy', 'add', 'ops', '--profile', 'managers', '--attribute', 'group', '--value', 'ops,admins')).code, 0);
    r = await cli('approval', 'policy', 'add', 'interns', '--profile', 'watch', '--attribute', 'department', '--value', 'interns', '--position', '1');
    assert.match(r.stdout, /at position 1/);
    r = await cli('approval', 'policy', 'list');
    assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.split('\t').slice(0, 2).join(' ')), ['1 interns', '2 ops']);
    assert.match((await cli('approval', 'policy', 'add', 'x', '--profile', 'nope', '--attribute', 'group', '--value', 'a')).stderr, /^error: --profile: no approval profile "nope"/);
    assert.match((await cli('approval')).stderr, /"approval" needs a subcommand: profile, policy, requests/);
    assert.match((await cli('approval', 'profile')).stderr, /"approval profile" needs a subcommand: add, set, list, remove/);
    assert.equal((await cli('approval', 'requests', '--status', 'pending')).code, 0);
    assert.match((await cli('approval', 'requests', '--status', 'maybe')).stderr, /--status: must be informed, pending/);
    assert.equal((await cli('user', 'add', 'sam', '--password', 'sam-password-1')).code, 0);
    assert.equal((await cli('user', 'set-sponsor', 'sam', '--name', 'Mona', '--email', 'mona@example.com')).code, 0);
    assert.match((await cli('user', 'set-sponsor', 'sam', '--phone', '555')).stderr, /^error: --phone: must be in E\.164 form/);
    const sam = await inDatabase((db) => findUserByUsername(db, 'sam'));
    assert.deepEqual([sam?.sponsor_name, sam?.sponsor_email, sam?.sponsor_phone], ['Mona', 'mona@example.com', null]);
    assert.equal((await cli('client', 'add', 'payroll', '--redirect-uri', 'https://payroll.example.com/cb')).code, 0);
    assert.match((await cli('client', 'set-approval', 'payroll', 'on')).stdout, /manager approval required for payroll/);
    assert.equal((await cli('policy', 'add', 'sam approval', '--user', 'sam', '--mfa', 'optional', '--manager-approval')).code, 0);
    assert.match((await cli('policy', 'list')).stdout, /sam approval.*manager approval/);
    r = await cli('ldap', 'test');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: LDAP: set ldap\.url, ldap\.bindDn, ldap\.bindPassword and ldap\.baseDn first/);
    assert.equal((await cli('settings', 'set', 'ldap.url', 'ldap://127.0.0.1:1')).code, 0, 'settable one at a time, in any order');
    assert.match((await cli('approval', 'profile', 'set', 'managers', '--link-minutes', '30')).stdout, /approval profile managers changed: link_minutes/);
    assert.equal((await cli('approval', 'profile', 'remove', 'watch')).code, 0);
    assert.deepEqual((await cli('approval', 'policy', 'list')).stdout.trim().split('\n').map((l) => l.split('\t')[1]), ['ops']);
  });

  it('portals, the hardware token stock and restore-access requests', async () => {
    assert.equal((await cli('client', 'add', 'shop', '--redirect-uri', 'https://shop.example.com/cb')).code, 0);
    assert.equal((await cli('group', 'add', 'buyers')).code, 0);
    let r = await cli('portal', 'enable', 'shop', '--alias', 'shop', '--actions', 'change-name,register-token,resync', '--group', 'buyers');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'portal of shop at /selfservice/shop: change-name, register-token, resync (members of buyers)', 'the order given is the order shown');
    assert.match((await cli('portal', 'enable', 'shop', '--alias', 'Shop!', '--actions', 'change-name')).stderr, /^error: --alias: /);
    assert.match((await cli('portal', 'enable', 'shop', '--alias', 'shop2', '--actions', 'fly')).stderr, /^error: --actions: .*fly/);
    assert.match((await cli('portal', 'enable', 'ghost', '--alias', 'ghost', '--actions', 'change-name')).stderr, /^error: <client_id>: no client "ghost"/);
    assert.match((await cli('portal', 'enable', 'shop', '--actions', 'change-name')).stderr, /^error: missing --alias/);
    r = await cli('portal', 'list');
    assert.match(r.stdout, /^shop\t\/selfservice\/shop\tchange-name,register-token,resync\tgroup buyers\ttokens totp$/m);
    r = await cli('portal', 'enable', 'shop', '--alias', 'shop', '--actions', '');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /no actions \(every user\)$/m, 'all off, and without --group every user may use it');
    assert.equal((await cli('portal', 'disable', 'shop')).code, 0);
    assert.equal((await cli('portal', 'disable', 'shop')).code, 1);

    const csv = path.join(dataDir, 'tokens.csv');
    writeFileSync(csv, '# serial,seed,type,digits,period\nCLI-1,3132333435363738393031323334353637383930,totp,6,30\nCLI-2,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,hotp,8,\n');
    r = await cli('token', 'import', csv);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'imported 2 tokens (1 TOTP, 1 HOTP) into the unassigned stock');
    r = await cli('token', 'import', csv);
    assert.equal(r.code, 1, 'serials are unique');
    assert.match(r.stderr, /CLI-1/);
    writeFileSync(csv, 'CLI-3,not-a-seed,totp,6,30\n');
    assert.match((await cli('token', 'import', csv)).stderr, /^error: .*line 1/);
    assert.equal((await cli('token', 'stock')).stdout.trim(), 'unassigned 2\tassigned 0\tdisabled 0');

    assert.equal((await cli('user', 'add', 'rita', '--password', 'rita-password-1', '--email', 'rita@example.com', '--email-verified')).code, 0);
    // An account without a password signs in to the portals with an emailed code.
    assert.match((await cli('user', 'add', 'noel', '--no-password')).stderr, /^error: --no-password: .*--email-verified/);
    assert.match((await cli('user', 'add', 'noel', '--no-password', '--password-stdin', '--email', 'noel@example.com', '--email-verified')).stderr, /^error: --no-password: give no password flag/);
    assert.equal((await cli('user', 'add', 'noel', '--no-password', '--email', 'noel@example.com', '--email-verified')).code, 0);
    assert.equal((await inDatabase((db) => findUserByUsername(db, 'noel')))!.password_hash, null);
    const ids = await inDatabase(async (db) => {
      const rita = (await findUserByUsername(db, 'rita'))!;
      const one = await fileRestoreRequest(db, { user: rita, draftId: randomUUID(), portal: null, lost: ['password'], proofs: { email: true }, newPasswordHash: await hashPassword('rita-password-2'), newEmail: null, ip: '127.0.0.1', userAgent: 'test' });
      return { one: one! };
    });
    r = await cli('restore', 'list');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${ids.one}\topen\trita\tlost password\tproofs \\+email\tnew password\t`, 'm'));
    assert.match((await cli('restore', 'approve', 'not-an-id')).stderr, /^error: <id>: a request id is a UUID/);
    assert.match((await cli('restore', 'approve', '00000000-0000-4000-8000-000000000000')).stderr, /^error: <id>: there is no open request with this id/);
    assert.match((await cli('restore', 'list', '--status', 'maybe')).stderr, /^error: --status: /);
    r = await cli('restore', 'approve', ids.one);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'approved the request of rita: new password set, sessions revoked');
    assert.equal((await cli('restore', 'approve', ids.one)).code, 1, 'a decided request is not decided again');
    assert.equal((await cli('restore', 'list')).stdout.trim(), 'no open request');
    assert.match((await cli('restore', 'list', '--status', 'all')).stdout, new RegExp(`^${ids.one}\tapproved\trita\t.*\tby cli:`, 'm'));
    const rita = await inDatabase((db) => findUserByUsername(db, 'rita'));
    assert.ok(await verifyPassword(rita!.password_hash, 'rita-password-2'), 'the new password is in effect');

    const two = await inDatabase(async (db) => fileRestoreRequest(db, { user: (await findUserByUsername(db, 'rita'))!, draftId: randomUUID(), portal: null, lost: ['email'], proofs: { password: false }, newPasswordHash: null, newEmail: null, ip: '127.0.0.1', userAgent: null }));
    r = await cli('restore', 'delete', two!);
    assert.equal(r.stdout.trim(), 'deleted the request of rita');
    assert.equal((await cli('restore', 'delete', two!)).code, 1);
  });

  it('just-in-time shared accounts: enable (creating the account and its group), list, reservations, disable', async () => {
    let r = await cli('jit', 'enable', 'acmeadmin', '--group', 'JIT_acmeadmin', '--minutes', '5');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^created user acmeadmin \([0-9a-f-]{36}\), without a password$/m);
    assert.match(r.stdout, /^created group JIT_acmeadmin$/m);
    assert.match(r.stdout, /acmeadmin is shared just in time: members of JIT_acmeadmin reserve it for 5 minutes$/m);
    assert.match((await cli('jit', 'enable', 'acmeadmin')).stderr, /^error: missing --group/);
    assert.match((await cli('jit', 'enable', 'acmeadmin', '--group', 'JIT_acmeadmin', '--minutes', '0')).stderr, /^error: --minutes: at least 1 minute/);
    r = await cli('jit', 'list');
    assert.match(r.stdout, /^acmeadmin\t[0-9a-f-]{36}\tgroup JIT_acmeadmin\t5 min\tactive\tfree$/m);
    assert.match((await cli('user', 'list')).stdout, /^acmeadmin\t[0-9a-f-]{36}\t/m, 'user list keeps printing ids');
    assert.equal((await cli('jit', 'reservations')).stdout.trim(), 'no reservation');
    // A member's reservation, ended by an administrator.
    assert.equal((await cli('user', 'add', 'jan', '--password', 'jan-password-1')).code, 0);
    assert.equal((await cli('group', 'add-member', 'JIT_acmeadmin', 'jan')).code, 0);
    await inDatabase(async (db) => {
      const [shared, jan] = await Promise.all(['acmeadmin', 'jan'].map((u) => db.selectFrom('users').select('id').where('username', '=', u).executeTakeFirstOrThrow()));
      await reserve(db, { sharedUserId: shared!.id, memberId: jan!.id, ip: null });
    });
    assert.match((await cli('jit', 'list')).stdout, /\treserved by jan until /);
    r = await cli('jit', 'release', 'acmeadmin');
    assert.equal(r.stdout.trim(), 'released acmeadmin (it was reserved by jan)', r.stderr);
    assert.match((await cli('jit', 'release', 'acmeadmin')).stderr, /nobody holds acmeadmin now/);
    assert.match((await cli('jit', 'reservations')).stdout, /^[0-9a-f-]{36}\tacmeadmin\tby jan\treleased\t/m);
    assert.match((await cli('group', 'remove', 'JIT_acmeadmin')).stderr, /decides who may reserve the shared account acmeadmin/);
    assert.equal((await cli('jit', 'disable', 'acmeadmin')).code, 0);
    assert.match((await cli('jit', 'disable', 'acmeadmin')).stderr, /not a shared account/);
    assert.equal((await cli('jit', 'list')).stdout.trim(), 'no shared account');
  });

  it('audits every change with the acting OS user; reading changes nothing', async () => {
    const count = () => inDatabase((db) => db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow());
    const before = await count();
    assert.equal((await cli('user', 'list')).code, 0);
    assert.equal((await cli('settings', 'show')).code, 0);
    assert.equal((await count()).n, before.n, 'list and show are not changes');
    const events = await inDatabase((db) => db.selectFrom('audit_events').selectAll().where('actor', 'like', 'cli:%').orderBy('id').execute());
    const types = new Set(events.map((e) => e.type));
    for (const type of ['user.created', 'user.password_changed', 'user.disabled', 'user.enabled', 'group.created', 'group.member_added', 'client.created', 'client.removed', 'client.mfa_changed', 'api.created', 'api.allowed', 'api.disallowed', 'api.removed', 'settings.changed', 'policy.created', 'policy.removed', 'keys.rotated', 'portal.enabled', 'portal.disabled', 'token.imported', 'restore.approved', 'restore.deleted', 'jit.enabled', 'jit.disabled', 'jit.released']) {
      assert.ok(types.has(type as never), `${type} is audited`);
    }
    const { userInfo } = await import('node:os');
    assert.ok(events.every((e) => e.actor === `cli:${userInfo().username}`), 'the actor is the OS user');
    const secret = events.find((e) => e.type === 'settings.changed' && e.subject === 'smtp.password');
    assert.deepEqual((secret!.details as { value: string }).value, '********', 'secret values are not written to the audit log');
    assert.ok(!JSON.stringify(events).includes('hank-password'), 'no password in the audit log');
  });
});
