// `npm run bench`: Tessera (compiled, production mode, PostgreSQL) under load over loopback, beside
// two references measured in the same run on the same cores: the argon2id limit and a bare oidc-provider.
// Flags: --duration <s> --concurrency <n> --users <n> --scale <rows> --label <name> --out <dir> --smoke --cpu-prof
// --scenarios a,b (a subset of SCENARIOS, for profiling one at a time)
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { verify } from '@node-rs/argon2';
import pg from 'pg';
import { hashPassword, PASSWORD_HASH_PARAMETERS } from '../src/directory/passwords.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { Recorder, percentiles, type Percentiles } from './lib/stats.js';
import { cpuSeconds, peakRssMiB, postgresCpu, postgresCpuSince, rssMiB } from './lib/proc.js';
import { clientCredentials, introspect, mfaLogin, refresh, UserPool } from './lib/scenarios.js';
import { createBenchDatabase, seed, seedStoredState, startBareProvider, startTessera, type RunningProcess } from './lib/tessera.js';
import { dispatcher } from './lib/http.js';

export interface BenchOptions {
  databaseUrl: string;
  duration: number;
  concurrency: number;
  users: number;
  scale: number;
  label: string;
  out: string | null;
  cpuProf: boolean;
  /** Scenarios to measure (all when omitted); logins always run, briefly, to mint the tokens the others use. */
  scenarios?: readonly Scenario[];
  log: (line: string) => void;
}

export const SCENARIOS = ['mfa_login', 'mfa_login_half_rate', 'client_credentials', 'refresh_token', 'introspection'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface ScenarioResult {
  scenario: string;
  target: 'tessera' | 'bare-oidc-provider';
  phase: 'base' | 'scaled';
  concurrency: number;
  seconds: number;
  completed: number;
  errors: number;
  errorKinds: Record<string, number>;
  perSecond: number;
  steps: Record<string, Percentiles>;
  cpuSecondsPerFlow: number;
  postgresCpuSecondsPerFlow: number | null;
  dbQueriesPerFlow: number | null;
  rssMiB: number;
}

export interface BenchReport {
  label: string;
  at: string;
  machine: { cores: number; cpu: string; memoryGiB: number; node: string; postgres: string; platform: string };
  settings: { duration: number; concurrency: number; users: number; scale: number; argon2: typeof PASSWORD_HASH_PARAMETERS };
  argon2: { verificationsPerSecond: number; msPerVerification: number; concurrency: number };
  /** Signatures per second on one core: what an RS256 or ES256 token costs to sign, whoever signs it. */
  signing: { rs256PerSecond: number; es256PerSecond: number };
  results: ScenarioResult[];
  peakRssMiB: { tessera: number; bare: number };
  ratios: Record<string, number | null>;
}

async function argon2Limit(seconds: number, concurrency: number): Promise<{ verificationsPerSecond: number; msPerVerification: number; concurrency: number }> {
  const hash = await hashPassword('bench-password-1');
  let count = 0;
  const deadline = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        if (!(await verify(hash, 'bench-password-1'))) throw new Error('argon2 reference: verification failed');
        count++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  return { verificationsPerSecond: round(count / elapsed), msPerVerification: round((elapsed * 1000 * concurrency) / count), concurrency };
}

function signaturesPerSecond(seconds: number): { rs256PerSecond: number; es256PerSecond: number } {
  const payload = Buffer.alloc(400, 7);
  const rate = (key: KeyObject, options: { dsaEncoding?: 'ieee-p1363' }) => {
    let count = 0;
    const start = performance.now();
    while (performance.now() - start < seconds * 1000) {
      sign('sha256', payload, { key, ...options });
      count++;
    }
    return round(count / ((performance.now() - start) / 1000));
  };
  return {
    rs256PerSecond: rate(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, {}),
    es256PerSecond: rate(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, { dsaEncoding: 'ieee-p1363' }),
  };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Tessera's own count of the queries it sent (GET /metrics): exact, unlike PostgreSQL's lazily flushed statistics. */
async function queriesSent(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  return Number(/^tessera_db_queries_total (\d+)$/m.exec(text)?.[1] ?? NaN);
}

/** Runs one scenario with `concurrency` virtual users for `seconds`, measuring the target process and PostgreSQL. */
async function measure(
  o: { scenario: string; target: ScenarioResult['target']; phase: ScenarioResult['phase']; concurrency: number; seconds: number; pid: number; metricsUrl: string | null },
  iteration: (vu: number, rec: Recorder) => Promise<void>,
): Promise<ScenarioResult> {
  const rec = new Recorder();
  const stats = async () => (o.metricsUrl ? queriesSent(o.metricsUrl) : 0);
  const cpu0 = cpuSeconds(o.pid);
  const pg0 = postgresCpu();
  const tx0 = await stats();
  let completed = 0;
  const start = performance.now();
  const deadline = start + o.seconds * 1000;
  await Promise.all(
    Array.from({ length: o.concurrency }, async (_, vu) => {
      while (performance.now() < deadline) {
        try {
          await iteration(vu, rec);
          completed++;
        } catch (error) {
          // Identifiers (uids, tokens) are elided so that errors of one kind are counted together.
          rec.error(error instanceof Error ? error.message.replace(/[A-Za-z0-9_-]{20,}/g, '…').slice(0, 120) : 'error');
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuSeconds(o.pid) - cpu0;
  const pgCpu = postgresCpuSince(pg0);
  const tx = (await stats()) - tx0;
  const steps: Record<string, Percentiles> = {};
  for (const [step, values] of rec.samples) steps[step] = percentiles(values);
  return {
    scenario: o.scenario,
    target: o.target,
    phase: o.phase,
    concurrency: o.concurrency,
    seconds: round(elapsed),
    completed,
    errors: rec.errors,
    errorKinds: Object.fromEntries(rec.errorKinds),
    perSecond: round(completed / elapsed),
    steps,
    cpuSecondsPerFlow: completed ? round(cpu / completed, 5) : 0,
    postgresCpuSecondsPerFlow: o.metricsUrl && completed ? round(pgCpu / completed, 5) : null,
    dbQueriesPerFlow: o.metricsUrl && completed ? round(tx / completed, 2) : null,
    rssMiB: rssMiB(o.pid),
  };
}

/** Starts `rate` iterations a second for the duration, however long each takes; reports like measure(). */
async function measurePaced(
  o: Parameters<typeof measure>[0],
  rate: number,
  iteration: (vu: number, rec: Recorder) => Promise<void>,
): Promise<ScenarioResult> {
  const started: Promise<void>[] = [];
  let inFlight = 0;
  let peak = 0;
  const result = await measure({ ...o, concurrency: 1 }, async (_vu, rec) => {
    const interval = 1000 / rate;
    const begin = performance.now();
    for (let i = 0; performance.now() - begin < o.seconds * 1000; i++) {
      const due = begin + i * interval;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      inFlight++;
      peak = Math.max(peak, inFlight);
      started.push(
        iteration(i, rec)
          .catch((error: unknown) => rec.error(error instanceof Error ? error.message.replace(/[A-Za-z0-9_-]{20,}/g, '…').slice(0, 120) : 'error'))
          .finally(() => inFlight--),
      );
    }
    await Promise.all(started);
  });
  const flows = result.steps.userinfo?.count ?? 0;
  return { ...result, concurrency: peak, completed: flows, perSecond: round(flows / result.seconds), cpuSecondsPerFlow: flows ? round((result.cpuSecondsPerFlow * result.completed) / flows, 5) : 0, postgresCpuSecondsPerFlow: result.postgresCpuSecondsPerFlow !== null && flows ? round((result.postgresCpuSecondsPerFlow * result.completed) / flows, 5) : null, dbQueriesPerFlow: result.dbQueriesPerFlow !== null && flows ? round((result.dbQueriesPerFlow * result.completed) / flows, 2) : null };
}

async function tesseraScenarios(t: RunningProcess, users: UserPool, o: BenchOptions, phase: ScenarioResult['phase']): Promise<ScenarioResult[]> {
  const pid = t.child.pid!;
  const common = { target: 'tessera' as const, phase, pid, metricsUrl: t.url, seconds: o.duration };
  const wanted = (s: Scenario) => !o.scenarios || o.scenarios.includes(s);
  const results: ScenarioResult[] = [];
  o.log(`  ${phase}: complete MFA logins…`);
  const tokens: { accessToken: string; refreshToken: string }[] = [];
  const logins = await measure({ ...common, scenario: 'mfa_login', concurrency: o.concurrency, seconds: wanted('mfa_login') ? o.duration : Math.min(o.duration, 3) }, async (_vu, rec) => {
    const t2 = await mfaLogin(t.url, users, rec);
    if (tokens.length < o.concurrency * 4) tokens.push(t2);
  });
  if (wanted('mfa_login')) results.push(logins);
  // The same flow at half the rate just reached, started at a steady pace (open loop): the latency a
  // user sees when the server has headroom.
  const halfRate = logins.perSecond / 2;
  if (halfRate > 0 && wanted('mfa_login_half_rate')) {
    o.log(`  ${phase}: complete MFA logins at half that rate (${round(halfRate)}/s)…`);
    results.push(await measurePaced({ ...common, scenario: 'mfa_login_half_rate', concurrency: 0 }, halfRate, async (_vu, rec) => {
      await mfaLogin(t.url, users, rec);
    }));
  }
  if (tokens.length < o.concurrency) throw new Error(`too few logins completed to run the token scenarios (${tokens.length}); errors: ${JSON.stringify(logins.errorKinds)}`);
  if (wanted('client_credentials')) {
    o.log(`  ${phase}: client_credentials…`);
    results.push(await measure({ ...common, scenario: 'client_credentials', concurrency: o.concurrency }, (_vu, rec) => clientCredentials(t.url, rec)));
  }
  if (wanted('refresh_token')) {
    o.log(`  ${phase}: refresh_token…`);
    const chains = tokens.slice(0, o.concurrency).map((x) => x.refreshToken);
    results.push(await measure({ ...common, scenario: 'refresh_token', concurrency: o.concurrency }, async (vu, rec) => {
      chains[vu] = await refresh(t.url, chains[vu]!, rec);
    }));
  }
  if (wanted('introspection')) {
    o.log(`  ${phase}: introspection…`);
    results.push(await measure({ ...common, scenario: 'introspection', concurrency: o.concurrency }, (vu, rec) => introspect(t.url, tokens[vu % tokens.length]!.accessToken, rec)));
  }
  return results;
}

function ratio(a: number | undefined, b: number | undefined): number | null {
  return a !== undefined && b ? round(a / b, 3) : null;
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const cores = availableParallelism();
  const admin = new pg.Client({ connectionString: o.databaseUrl });
  await admin.connect();
  const postgres = (await admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version;
  const db = await createBenchDatabase(o.databaseUrl);
  const processes: RunningProcess[] = [];
  try {
    o.log(`argon2id limit (${cores} concurrent verifications)…`);
    const argon2 = await argon2Limit(Math.max(2, Math.min(o.duration, 10)), cores);
    const signing = signaturesPerSecond(o.duration >= 5 ? 2 : 0.2);
    o.log(`seeding ${o.users} users with an authenticator app…`);
    const usernames = await seed(db, o.users);
    const users = new UserPool(usernames);
    const port = 39_000 + Math.floor(Math.random() * 1000);
    const tessera = await startTessera(db.url, port, o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.join(PROJECT_ROOT, 'bench/results/tmp')}`] : []);
    processes.push(tessera);
    const results = await tesseraScenarios(tessera, users, o, 'base');
    if (o.scale > 0) {
      o.log(`storing ${o.scale} sessions and ${o.scale} grants…`);
      await seedStoredState(db, o.scale);
      results.push(...(await tesseraScenarios(tessera, users, o, 'scaled')));
    }
    const tesseraPeak = peakRssMiB(tessera.child.pid!);
    await tessera.stop();

    let barePeak = 0;
    const bareScenarios = (['refresh_token', 'client_credentials'] as const).filter((s) => !o.scenarios || o.scenarios.includes(s));
    if (bareScenarios.length > 0) {
      o.log(`bare oidc-provider: ${bareScenarios.join(' and ')}…`);
      const bare = await startBareProvider(port + 1, o.concurrency);
      processes.push(bare);
      const bareCommon = { target: 'bare-oidc-provider' as const, phase: 'base' as const, pid: bare.child.pid!, metricsUrl: null, seconds: o.duration, concurrency: o.concurrency };
      const bareChains = [...bare.refreshTokens];
      // Refresh first: the bare provider's in-memory adapter is an LRU of 1,000 entries, and a
      // client_credentials run would evict the seeded refresh tokens.
      if (bareScenarios.includes('refresh_token')) {
        results.push(await measure({ ...bareCommon, scenario: 'refresh_token' }, async (vu, rec) => {
          bareChains[vu] = await refresh(bare.url, bareChains[vu]!, rec);
        }));
      }
      if (bareScenarios.includes('client_credentials')) {
        results.push(await measure({ ...bareCommon, scenario: 'client_credentials' }, (_vu, rec) => clientCredentials(bare.url, rec)));
      }
      barePeak = peakRssMiB(bare.child.pid!);
      await bare.stop();
    }

    const find = (scenario: string, target: ScenarioResult['target'] = 'tessera', phase: ScenarioResult['phase'] = 'base') =>
      results.find((r) => r.scenario === scenario && r.target === target && r.phase === phase)?.perSecond;
    const report: BenchReport = {
      label: o.label,
      at: new Date().toISOString(),
      machine: { cores, cpu: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, postgres, platform: `${process.platform} ${process.arch}` },
      settings: { duration: o.duration, concurrency: o.concurrency, users: o.users, scale: o.scale, argon2: PASSWORD_HASH_PARAMETERS },
      argon2,
      signing,
      results,
      peakRssMiB: { tessera: tesseraPeak, bare: barePeak },
      ratios: {
        mfaLoginsPerArgon2Limit: ratio(find('mfa_login'), argon2.verificationsPerSecond),
        clientCredentialsPerBare: ratio(find('client_credentials'), find('client_credentials', 'bare-oidc-provider')),
        refreshPerBare: ratio(find('refresh_token'), find('refresh_token', 'bare-oidc-provider')),
        clientCredentialsPerCore: find('client_credentials') !== undefined ? round(find('client_credentials')! / cores) : null,
        refreshPerCore: find('refresh_token') !== undefined ? round(find('refresh_token')! / cores) : null,
      },
    };
    if (o.out) writeReport(report, o.out);
    return report;
  } finally {
    for (const p of processes) await p.stop().catch(() => undefined);
    await db.drop();
    await admin.end();
  }
}

export function markdown(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`# Tessera benchmark: ${r.label}`, '');
  lines.push(`${r.at} · ${r.machine.cores} cores (${r.machine.cpu}) · ${r.machine.memoryGiB} GiB · Node ${r.machine.node} · PostgreSQL ${r.machine.postgres} · load generator on the same cores`, '');
  lines.push(`Concurrency ${r.settings.concurrency}, ${r.settings.duration} s per scenario, ${r.settings.users} users with an authenticator app. argon2id m=${r.settings.argon2.memoryCost} KiB, t=${r.settings.argon2.timeCost}, p=${r.settings.argon2.parallelism}.`, '');
  lines.push('| scenario | target | phase | per second | errors | CPU ms/flow (Tessera) | CPU ms/flow (PostgreSQL) | DB queries/flow | RSS MiB |');
  lines.push('|---|---|---|---:|---:|---:|---:|---:|---:|');
  for (const s of r.results) {
    lines.push(`| ${s.scenario} | ${s.target} | ${s.phase} | ${s.perSecond} | ${s.errors} | ${round(s.cpuSecondsPerFlow * 1000)} | ${s.postgresCpuSecondsPerFlow === null ? '–' : round(s.postgresCpuSecondsPerFlow * 1000)} | ${s.dbQueriesPerFlow ?? '–'} | ${s.rssMiB} |`);
  }
  lines.push('', '**Latency per step (ms)**', '', '| scenario | target | phase | step | p50 | p95 | p99 | max |', '|---|---|---|---|---:|---:|---:|---:|');
  for (const s of r.results) {
    for (const [step, p] of Object.entries(s.steps)) lines.push(`| ${s.scenario} | ${s.target} | ${s.phase} | ${step} | ${p.p50} | ${p.p95} | ${p.p99} | ${p.max} |`);
  }
  lines.push('', '**References and ratios**', '');
  lines.push(`- argon2id limit: ${r.argon2.verificationsPerSecond} verifications/s on ${r.argon2.concurrency} cores (${r.argon2.msPerVerification} ms each)`);
  lines.push(`- signatures on one core: RS256 ${r.signing.rs256PerSecond}/s, ES256 ${r.signing.es256PerSecond}/s (the bench client's ID tokens and the bench API's access tokens are ES256, in Tessera and in the bare reference)`);
  for (const [k, v] of Object.entries(r.ratios)) lines.push(`- ${k}: ${v ?? '–'}`);
  lines.push(`- peak RSS: Tessera ${r.peakRssMiB.tessera} MiB, bare oidc-provider ${r.peakRssMiB.bare} MiB`);
  return `${lines.join('\n')}\n`;
}

function writeReport(report: BenchReport, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const stem = `${report.at.slice(0, 10)}-${report.label.replace(/[^\w.-]+/g, '-')}`;
  writeFileSync(path.join(dir, `${stem}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(path.join(dir, `${stem}.md`), markdown(report));
}

const invokedDirectly = process.argv[1] && /bench[\\/]run\.ts$/.test(process.argv[1]);
if (invokedDirectly) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '20' },
      concurrency: { type: 'string', default: '8' },
      users: { type: 'string', default: '3000' },
      scale: { type: 'string', default: '100000' },
      label: { type: 'string', default: 'run' },
      out: { type: 'string', default: path.join(PROJECT_ROOT, 'bench/results') },
      smoke: { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      scenarios: { type: 'string' },
    },
  });
  const scenarios = values.scenarios?.split(',').map((s) => s.trim());
  const unknown = scenarios?.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
  if (unknown?.length) {
    console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}`);
    process.exit(2);
  }
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    console.error('npm run bench needs DATABASE_URL (a PostgreSQL server; the bench makes and drops its own database)');
    process.exit(2);
  }
  const smoke = values.smoke;
  runBench({
    databaseUrl,
    duration: smoke ? 1 : Number(values.duration),
    concurrency: smoke ? 2 : Number(values.concurrency),
    users: smoke ? 300 : Number(values.users),
    scale: smoke ? 1000 : Number(values.scale),
    label: values.label,
    out: smoke ? null : values.out,
    cpuProf: values['cpu-prof'],
    scenarios: scenarios as Scenario[] | undefined,
    log: (line) => console.log(line),
  })
    .then((report) => {
      console.log(markdown(report));
      return dispatcher.close();
    })
    .catch((error: unknown) => {
      console.error(error);
      process.exit(1);
    });
}
