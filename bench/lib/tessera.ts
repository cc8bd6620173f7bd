import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { sql } from 'kysely';
import { createScratchDatabase, type ScratchDatabase } from '../../test/support/database.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { SecretBox } from '../../src/crypto/secret-box.js';
import { hashPassword } from '../../src/directory/passwords.js';
import { createClient } from '../../src/clients/clients.js';
import { allowClient, createResourceServer } from '../../src/resource-servers/resource-servers.js';
import { createGroup } from '../../src/directory/groups.js';
import { createPolicy } from '../../src/policy/policies.js';
import { setSetting } from '../../src/settings/settings.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { APIS, BENCH_PASSWORD, BENCH_SECRET, CLIENT, TOTP_SECRET } from './fixtures.js';

export type BenchDatabase = ScratchDatabase;

/** A fresh database on the server DATABASE_URL names, dropped afterwards. */
export function createBenchDatabase(serverUrl: string): Promise<BenchDatabase> {
  return createScratchDatabase(serverUrl, 'tessera_bench', 4);
}

export interface BenchUsers {
  /** Users who pass MFA with an authenticator app. */
  totp: string[];
  /** Users who pass MFA with a code sent to their email address. */
  email: string[];
}

/** The email address the bench gives a user. */
export const emailOf = (username: string) => `${username}@bench.test`;

/**
 * Users who must pass MFA, half with an enrolled authenticator app and half with email codes (all
 * share one password hash and one TOTP secret: the per-user work at login is the same as with
 * distinct ones), the bench client and its APIs. Email codes go to the SMTP server on `smtpPort`.
 */
export async function seed(db: BenchDatabase, users: number, smtpPort: number): Promise<BenchUsers> {
  const { db: k } = db.handle;
  const box = new SecretBox(BENCH_SECRET);
  await migrateToLatest(k);
  await setSetting(k, box, 'mfa.methods.sms', false);
  await setSetting(k, box, 'smtp.host', '127.0.0.1');
  await setSetting(k, box, 'smtp.port', smtpPort);
  await setSetting(k, box, 'smtp.security', 'none');
  await setSetting(k, box, 'smtp.from', 'Tessera bench <bench@bench.test>');
  // One simulated browser address for every user: the per-address send limit would measure itself.
  await setSetting(k, box, 'mfa.otp.perIpPerHour', 100_000);
  await setSetting(k, box, 'mfa.otp.perUserPerHour', 1000);
  await setSetting(k, box, 'mfa.otp.perDestinationPerHour', 1000);
  await createClient(k, box, {
    clientId: CLIENT.id, secret: CLIENT.secret, redirectUris: [CLIENT.redirectUri],
    grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'], scope: 'openid profile email offline_access', idTokenAlg: 'ES256',
  });
  for (const api of Object.values(APIS)) {
    await createResourceServer(k, { identifier: api.identifier, name: `Bench API ${api.scope}`, scopes: [api.scope], accessTokenFormat: api.format, ...(api.alg ? { signingAlg: api.alg } : {}), accessTokenTtlSeconds: api.ttlSeconds });
    await allowClient(k, api.identifier, CLIENT.id);
  }
  const hash = await hashPassword(BENCH_PASSWORD);
  const made: BenchUsers = { totp: [], email: [] };
  for (const factor of ['totp', 'email'] as const) {
    const group = `bench-${factor}`;
    await createGroup(k, group);
    await createPolicy(k, { name: `bench ${factor} MFA`, subjectType: 'group', subject: group, mfa: 'required', allowedFactors: [factor] });
    const groupId = (await k.selectFrom('groups').select('id').where('name', '=', group).executeTakeFirstOrThrow()).id;
    const names = Array.from({ length: Math.max(1, Math.ceil(users / 2)) }, (_, i) => `bench-${factor}-${String(i).padStart(6, '0')}`);
    for (let i = 0; i < names.length; i += 500) {
      const batch = names.slice(i, i + 500);
      const rows = await k
        .insertInto('users')
        .values(batch.map((username) => ({ username, password_hash: hash, email: emailOf(username), email_verified: true })))
        .returning('id')
        .execute();
      await k.insertInto('group_members').values(rows.map((r) => ({ group_id: groupId, user_id: r.id }))).execute();
      if (factor === 'totp') {
        await k
          .insertInto('authenticators')
          .values(rows.map((r) => {
            const id = crypto.randomUUID();
            return { id, user_id: r.id, type: 'totp' as const, label: 'bench', secret: box.seal(TOTP_SECRET, `totp:${id}`), confirmed_at: new Date() };
          }))
          .execute();
      }
    }
    made[factor] = names;
  }
  return made;
}

/** Stores many live sessions and grants, as a long-running deployment would have (ids in the stored, hashed form). */
export async function seedStoredState(db: BenchDatabase, count: number): Promise<void> {
  const expires = sql`now() + interval '14 days'`;
  await sql`
    insert into oidc_models (model, id, payload, uid, expires_at)
    select 'Session', 'h:bench-session-' || g, jsonb_build_object('jti_sealed', 'bench-session-' || g, 'uid', 'bench-uid-' || g, 'accountId', gen_random_uuid()::text, 'loginTs', 1, 'kind', 'Session'), 'h:bench-uid-' || g, ${expires}
    from generate_series(1, ${count}) g`.execute(db.handle.db);
  await sql`
    insert into oidc_models (model, id, payload, expires_at)
    select 'Grant', 'h:bench-grant-' || g, jsonb_build_object('jti_sealed', 'bench-grant-' || g, 'accountId', gen_random_uuid()::text, 'clientId', 'bench-rp', 'kind', 'Grant', 'openid', jsonb_build_object('scope', 'openid')), ${expires}
    from generate_series(1, ${count}) g`.execute(db.handle.db);
  await sql`analyze oidc_models`.execute(db.handle.db);
}

export interface RunningProcess {
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

async function waitReady(child: ChildProcess, url: string, output: () => string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`process exited: ${output()}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error(`not ready: ${output()}`);
}

/** Children still running when the bench ends, however it ends (an error it did not expect included). */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGTERM');
});

function tracked(child: ChildProcess): ChildProcess {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

function stopper(child: ChildProcess) {
  return async () => {
    // A process killed by a signal has a signalCode and no exitCode.
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  };
}

/** The heap limit the container image sets (Dockerfile, NODE_OPTIONS). */
const PRODUCTION_NODE_OPTIONS = ['--max-old-space-size=512'];

/** Tessera in production mode, compiled, as an operator runs it. */
export async function startTessera(databaseUrl: string, port: number, extraArgs: string[] = []): Promise<RunningProcess> {
  const url = `http://127.0.0.1:${port}`;
  const child = tracked(spawn(process.execPath, [...PRODUCTION_NODE_OPTIONS, ...extraArgs, path.join(PROJECT_ROOT, 'dist/src/main.js')], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, TESSERA_MODE: 'production', NODE_ENV: 'production', DATABASE_URL: databaseUrl, PORT: String(port), HOST: '127.0.0.1', ISSUER: url, TESSERA_SECRET: BENCH_SECRET, LOG_LEVEL: 'warn', DATABASE_POOL_SIZE: '10', METRICS: 'true',
      // Every simulated user signs in from 127.0.0.1: the per-address throttle would measure itself.
      LOGIN_ATTEMPTS_PER_IP: '100000', LOGIN_ATTEMPTS_PER_USERNAME: '100000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let output = '';
  child.stdout!.on('data', (d) => (output = (output + d).slice(-4000)));
  child.stderr!.on('data', (d) => (output = (output + d).slice(-4000)));
  await waitReady(child, `${url}/readyz`, () => output);
  return { child, url, stop: stopper(child) };
}

/** The bare oidc-provider reference (bench/bare-provider.ts): in-memory adapter, none of Tessera's code. */
export async function startBareProvider(port: number, refreshTokens: number): Promise<RunningProcess & { refreshTokens: string[] }> {
  const url = `http://127.0.0.1:${port}`;
  const child = tracked(spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'bench/bare-provider.ts')], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, PORT: String(port), REFRESH_TOKENS: String(refreshTokens), NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let output = '';
  let tokens: string[] | null = null;
  child.stdout!.on('data', (d) => {
    output += d;
    const line = output.split('\n').find((l) => l.startsWith('{"refreshTokens"'));
    if (line && !tokens) tokens = (JSON.parse(line) as { refreshTokens: string[] }).refreshTokens;
  });
  child.stderr!.on('data', (d) => (output = (output + d).slice(-4000)));
  await waitReady(child, `${url}/.well-known/openid-configuration`, () => output);
  for (let i = 0; i < 100 && !tokens; i++) await new Promise((r) => setTimeout(r, 50));
  if (!tokens) throw new Error(`bare provider printed no refresh tokens: ${output}`);
  return { child, url, refreshTokens: tokens, stop: stopper(child) };
}
