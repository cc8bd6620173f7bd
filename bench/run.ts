// `npm run bench`: Tessera (compiled, production mode, PostgreSQL) under load over loopback, beside
// references measured in the same run on the same cores: the argon2id limit and a bare oidc-provider.
// Each scenario runs in rounds, Tessera's and its reference's alternating (ABBA…), so that a noisy
// neighbour weighs on both sides alike; the report gives each round's ratio and the medians.
// Flags: --duration <s> --rounds <n> --concurrency <n> --users <n> --scale <rows> --label <name> --out <dir>
// --port <n> (Tessera; the bare provider takes the next, the SMTP sink the one after) --smoke --cpu-prof
// --scenarios a,b (a subset of SCENARIOS, for profiling one at a time)
import '../src/runtime-notice.js';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { verify } from '@node-rs/argon2';
import pg from 'pg';
import { hashPassword, PASSWORD_HASH_PARAMETERS } from '../src/directory/passwords.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { Recorder, percentiles, type Percentiles } from './lib/stats.js';
import { cpuBetween, cpuOf, cpuSeconds, cpuTimes, peakRssMiB, rssMiB } from './lib/proc.js';
import { clientCredentials, EmailUserPool, introspect, mfaLogin, refresh, UserPool, type SecondFactor } from './lib/scenarios.js';
import { createBenchDatabase, emailOf, seed, seedStoredState, startBareProvider, startTessera, type RunningProcess } from './lib/tessera.js';
import { startCodeMailbox } from './lib/mailbox.js';
import { APIS } from './lib/fixtures.js';
import { dispatcher } from './lib/http.js';
import { parseArgsOrUsage } from './lib/args.js';

export interface BenchOptions {
  databaseUrl: string;
  duration: number;
  /** Rounds per scenario, each side measured once per round, in alternating order. */
  rounds: number;
  concurrency: number;
  users: number;
  scale: number;
  label: string;
  smoke?: boolean;
  out: string | null;
  cpuProf: boolean;
  /** Tessera's port (the bare provider takes the next one, the SMTP sink the one after); random when omitted. */
  port?: number;
  /** Scenarios to measure (all when omitted); logins always run, briefly, to mint the tokens the others use. */
  scenarios?: readonly Scenario[];
  log: (line: string) => void;
}

export const SCENARIOS = ['mfa_login', 'mfa_login_email', 'mfa_login_half_rate', 'mfa_login_email_half_rate', 'refresh_token', 'client_credentials', 'client_credentials_rs256', 'client_credentials_opaque', 'introspection'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export type Target = 'tessera' | 'bare-oidc-provider' | 'argon2id-limit';

/** What each scenario is compared with, and the ratio Tessera aims for (Tessera's rate ÷ the reference's). */
const REFERENCE: Record<Scenario, { target: Exclude<Target, 'tessera'>; goal: number } | null> = {
  mfa_login: { target: 'argon2id-limit', goal: 0.5 },
  mfa_login_email: { target: 'argon2id-limit', goal: 0.5 },
  mfa_login_half_rate: null,
  mfa_login_email_half_rate: null,
  refresh_token: { target: 'bare-oidc-provider', goal: 0.8 },
  client_credentials: { target: 'bare-oidc-provider', goal: 0.8 },
  client_credentials_rs256: { target: 'bare-oidc-provider', goal: 0.8 },
  // Durable (PostgreSQL) against the bare provider's in-memory store.
  client_credentials_opaque: { target: 'bare-oidc-provider', goal: 0.4 },
  introspection: { target: 'bare-oidc-provider', goal: 0.8 },
};

export interface ScenarioResult {
  scenario: string;
  target: Target;
  phase: 'base' | 'scaled';
  round: number;
  concurrency: number;
  seconds: number;
  completed: number;
  errors: number;
  errorKinds: Record<string, number>;
  perSecond: number;
  steps: Record<string, Percentiles>;
  cpuSecondsPerFlow: number;
  /** Of that CPU, the kernel's (system calls: sockets, the database's and the client's). */
  systemCpuSecondsPerFlow: number;
  /** The load generator's own CPU per flow (this process: it shares the cores with the target). */
  loadGeneratorCpuSecondsPerFlow: number;
  /** CPU of the PostgreSQL backends serving the bench's database, per flow (null where no database is used). */
  postgresCpuSecondsPerFlow: number | null;
  dbQueriesPerFlow: number | null;
  rssMiB: number;
}

/** One scenario's rounds side by side: the medians, and each round's ratio. */
export interface Comparison {
  scenario: Scenario;
  reference: Exclude<Target, 'tessera'>;
  tessera: number[];
  referenceRates: number[];
  ratios: number[];
  medianTessera: number;
  medianReference: number;
  medianRatio: number;
  goal: number;
  /**
   * The ratio Tessera would reach if its own CPU per flow were only the reference's work, with
   * PostgreSQL's CPU (and, for logins, the load generator's HTTP work) on the same cores added, from
   * each round's CPU per flow. Bare provider: (ref + load) / (ref + load + PostgreSQL); argon2id
   * limit (the hashes, in the load generator): hash / (hash + load + PostgreSQL).
   */
  ceiling: number;
}

export interface BenchReport {
  label: string;
  at: string;
  machine: { cores: number; cpu: string; memoryGiB: number; node: string; postgres: string; platform: string };
  settings: { duration: number; rounds: number; concurrency: number; users: number; scale: number; argon2: typeof PASSWORD_HASH_PARAMETERS };
  /** A smoke run proves every scenario works; its one-second rates measure nothing. */
  smoke?: boolean;
  /** Signatures per second on one core: what an RS256 or ES256 token costs to sign, whoever signs it. */
  signing: { rs256PerSecond: number; es256PerSecond: number };
  results: ScenarioResult[];
  comparisons: Comparison[];
  peakRssMiB: { tessera: number; bare: number };
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

export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Tessera's own count of the queries it sent (GET /metrics): exact, unlike PostgreSQL's lazily flushed statistics. */
export async function queriesSent(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  return Number(/^tessera_db_queries_total (\d+)$/m.exec(text)?.[1] ?? NaN);
}

/** The PostgreSQL backends connected to one database: whose CPU is that database's share of the work. */
type Backends = () => Promise<number[]>;

function errorKind(error: unknown): string {
  // Identifiers (uids, tokens) are elided so that errors of one kind are counted together.
  return error instanceof Error ? error.message.replace(/[A-Za-z0-9_-]{20,}/g, '…').slice(0, 120) : 'error';
}

interface MeasureOptions {
  scenario: string;
  target: Target;
  phase: ScenarioResult['phase'];
  round: number;
  concurrency: number;
  seconds: number;
  /** The process serving the load (CPU and RSS are read from /proc). */
  pid: number;
  /** Tessera's base URL, for its query count; null for the references. */
  metricsUrl: string | null;
  backends: Backends | null;
}

/** Runs one scenario with `concurrency` virtual users for `seconds`, measuring the target process and its PostgreSQL backends. */
async function measure(o: MeasureOptions, iteration: (vu: number, rec: Recorder) => Promise<void>): Promise<ScenarioResult> {
  const rec = new Recorder();
  const stats = async () => (o.metricsUrl ? queriesSent(o.metricsUrl) : 0);
  const cpu0 = cpuTimes(o.pid);
  const own0 = process.cpuUsage();
  const pg0 = o.backends ? cpuOf(await o.backends()) : null;
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
          rec.error(errorKind(error));
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const cpu1 = cpuTimes(o.pid);
  const cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system;
  const systemCpu = cpu1.system - cpu0.system;
  const own = process.cpuUsage(own0);
  const ownCpu = (own.user + own.system) / 1e6;
  const pgCpu = pg0 && o.backends ? cpuBetween(pg0, cpuOf(await o.backends())) : null;
  const tx = (await stats()) - tx0;
  const steps: Record<string, Percentiles> = {};
  for (const [step, values] of rec.samples) steps[step] = percentiles(values);
  return {
    scenario: o.scenario,
    target: o.target,
    phase: o.phase,
    round: o.round,
    concurrency: o.concurrency,
    seconds: round(elapsed),
    completed,
    errors: rec.errors,
    errorKinds: Object.fromEntries(rec.errorKinds),
    perSecond: round(completed / elapsed),
    steps,
    cpuSecondsPerFlow: completed ? round(cpu / completed, 5) : 0,
    systemCpuSecondsPerFlow: completed ? round(systemCpu / completed, 5) : 0,
    loadGeneratorCpuSecondsPerFlow: completed ? round(ownCpu / completed, 5) : 0,
    postgresCpuSecondsPerFlow: pgCpu !== null && completed ? round(pgCpu / completed, 5) : null,
    dbQueriesPerFlow: o.metricsUrl && completed ? round(tx / completed, 2) : null,
    rssMiB: rssMiB(o.pid),
  };
}

/** Starts `rate` iterations a second for the duration, however long each takes; reports like measure(). */
async function measurePaced(o: MeasureOptions, rate: number, iteration: (vu: number, rec: Recorder) => Promise<void>): Promise<ScenarioResult> {
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
      started.push(iteration(i, rec).catch((error: unknown) => rec.error(errorKind(error))).finally(() => inFlight--));
    }
    await Promise.all(started);
  });
  const flows = result.steps.userinfo?.count ?? 0;
  const perFlow = (v: number) => (flows ? (v * result.completed) / flows : 0);
  return {
    ...result, concurrency: peak, completed: flows, perSecond: round(flows / result.seconds), cpuSecondsPerFlow: round(perFlow(result.cpuSecondsPerFlow), 5), systemCpuSecondsPerFlow: round(perFlow(result.systemCpuSecondsPerFlow), 5), loadGeneratorCpuSecondsPerFlow: round(perFlow(result.loadGeneratorCpuSecondsPerFlow), 5),
    postgresCpuSecondsPerFlow: result.postgresCpuSecondsPerFlow !== null && flows ? round(perFlow(result.postgresCpuSecondsPerFlow), 5) : null,
    dbQueriesPerFlow: result.dbQueriesPerFlow !== null && flows ? round(perFlow(result.dbQueriesPerFlow), 2) : null,
  };
}

/** The argon2id limit as a scenario: `concurrency` verifications at a time in the load generator, for `seconds`. */
async function argon2Round(hash: string, seconds: number, concurrency: number, scenario: string, roundNo: number): Promise<ScenarioResult> {
  let count = 0;
  const cpu0 = cpuSeconds(process.pid);
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        if (!(await verify(hash, 'bench-password-1'))) throw new Error('argon2 reference: verification failed');
        count++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuSeconds(process.pid) - cpu0;
  return {
    scenario, target: 'argon2id-limit', phase: 'base', round: roundNo, concurrency, seconds: round(elapsed), completed: count, errors: 0, errorKinds: {},
    perSecond: round(count / elapsed), steps: {}, cpuSecondsPerFlow: count ? round(cpu / count, 5) : 0, systemCpuSecondsPerFlow: 0, loadGeneratorCpuSecondsPerFlow: 0, postgresCpuSecondsPerFlow: null, dbQueriesPerFlow: null, rssMiB: rssMiB(process.pid),
  };
}

interface Sides {
  tessera: RunningProcess;
  bare: (RunningProcess & { refreshTokens: string[] }) | null;
  tesseraBackends: Backends;
  factors: { totp: SecondFactor; email: SecondFactor };
  argon2Hash: string;
  cores: number;
}

/**
 * Every scenario, in rounds. In round r, Tessera goes first when r is odd and second when r is even,
 * so drift in the machine's load (a neighbour starting, the page cache warming) falls on both sides.
 */
async function scenarios(sides: Sides, o: BenchOptions, phase: ScenarioResult['phase']): Promise<ScenarioResult[]> {
  const t = sides.tessera;
  const tesseraMeasure = (scenario: string, roundNo: number, extra: Partial<MeasureOptions> = {}): MeasureOptions => ({
    scenario, target: 'tessera', phase, round: roundNo, concurrency: o.concurrency, seconds: o.duration, pid: t.child.pid!, metricsUrl: t.url, backends: sides.tesseraBackends, ...extra,
  });
  const bareMeasure = (scenario: string, roundNo: number): MeasureOptions => ({
    scenario, target: 'bare-oidc-provider', phase, round: roundNo, concurrency: o.concurrency, seconds: o.duration, pid: sides.bare!.child.pid!, metricsUrl: null, backends: null,
  });
  const wanted = (s: Scenario) => !o.scenarios || o.scenarios.includes(s);
  // The scaled phase measures Tessera alone, once: how it holds up with a large store.
  const rounds = phase === 'base' ? o.rounds : 1;
  const withReference = phase === 'base';
  const results: ScenarioResult[] = [];
  const inRounds = async (scenario: Scenario, tesseraRound: (r: number) => Promise<ScenarioResult>, referenceRound: ((r: number) => Promise<ScenarioResult>) | null) => {
    o.log(`  ${phase}: ${scenario}${referenceRound ? `, alternating with ${REFERENCE[scenario]!.target}` : ''}…`);
    for (let r = 1; r <= rounds; r++) {
      const order = referenceRound ? (r % 2 ? [tesseraRound, referenceRound] : [referenceRound, tesseraRound]) : [tesseraRound];
      for (const run of order) results.push(await run(r));
    }
  };
  const argon2 = (scenario: Scenario) => (withReference ? (r: number) => argon2Round(sides.argon2Hash, o.duration, sides.cores, scenario, r) : null);

  const tokens: { accessToken: string; refreshToken: string }[] = [];
  const keep = (x: { accessToken: string; refreshToken: string }) => {
    if (tokens.length < o.concurrency * 4) tokens.push(x);
  };
  if (wanted('mfa_login')) {
    await inRounds('mfa_login', (r) => measure(tesseraMeasure('mfa_login', r), async (_vu, rec) => keep(await mfaLogin(t.url, sides.factors.totp, rec))), argon2('mfa_login'));
  } else {
    // The token scenarios need refresh tokens: a few seconds of logins mint them.
    await measure(tesseraMeasure('mfa_login', 0, { seconds: Math.min(o.duration, 3) }), async (_vu, rec) => keep(await mfaLogin(t.url, sides.factors.totp, rec)));
  }
  if (wanted('mfa_login_email')) {
    await inRounds('mfa_login_email', (r) => measure(tesseraMeasure('mfa_login_email', r), async (_vu, rec) => keep(await mfaLogin(t.url, sides.factors.email, rec))), argon2('mfa_login_email'));
  }
  // Each login at half the rate it just reached, started at a steady pace (open loop): the latency a
  // user sees when the server has headroom.
  for (const [scenario, measured, factor] of [['mfa_login_half_rate', 'mfa_login', sides.factors.totp], ['mfa_login_email_half_rate', 'mfa_login_email', sides.factors.email]] as const) {
    const halfRate = median(results.filter((x) => x.scenario === measured && x.target === 'tessera').map((x) => x.perSecond)) / 2;
    if (halfRate <= 0 || !wanted(scenario)) continue;
    o.log(`  ${phase}: ${scenario} (${round(halfRate)}/s)…`);
    results.push(await measurePaced(tesseraMeasure(scenario, 1, { concurrency: 0 }), halfRate, async (_vu, rec) => {
      await mfaLogin(t.url, factor, rec);
    }));
  }
  if (tokens.length < o.concurrency) throw new Error(`too few logins completed to run the token scenarios (${tokens.length}); errors: ${JSON.stringify(results.at(-1)?.errorKinds ?? {})}`);

  const bare = withReference ? sides.bare : null;
  // Refresh first: the bare provider's in-memory adapter is an LRU of 1,000 entries, and the
  // opaque-token scenarios would evict its seeded refresh tokens.
  if (wanted('refresh_token')) {
    const chains = tokens.slice(0, o.concurrency).map((x) => x.refreshToken);
    const bareChains = bare ? [...bare.refreshTokens] : [];
    await inRounds(
      'refresh_token',
      (r) => measure(tesseraMeasure('refresh_token', r), async (vu, rec) => {
        chains[vu] = await refresh(t.url, chains[vu]!, rec);
      }),
      bare ? (r) => measure(bareMeasure('refresh_token', r), async (vu, rec) => {
        bareChains[vu] = await refresh(bare.url, bareChains[vu]!, rec);
      }) : null,
    );
  }
  const grants = [
    ['client_credentials', APIS.es256],
    ['client_credentials_rs256', APIS.rs256],
    ['client_credentials_opaque', APIS.opaque],
  ] as const;
  for (const [scenario, api] of grants) {
    if (!wanted(scenario)) continue;
    await inRounds(
      scenario,
      (r) => measure(tesseraMeasure(scenario, r), async (_vu, rec) => void (await clientCredentials(t.url, rec, api))),
      bare ? (r) => measure(bareMeasure(scenario, r), async (_vu, rec) => void (await clientCredentials(bare.url, rec, api))) : null,
    );
  }
  if (wanted('introspection')) {
    // Opaque access tokens, as a resource server would introspect them: minted on each side just before.
    const mint = async (url: string) => {
      const rec = new Recorder();
      return Promise.all(Array.from({ length: o.concurrency * 4 }, () => clientCredentials(url, rec, APIS.opaque)));
    };
    const own = await mint(t.url);
    const theirs = bare ? await mint(bare.url) : [];
    await inRounds(
      'introspection',
      (r) => measure(tesseraMeasure('introspection', r), (vu, rec) => introspect(t.url, own[vu % own.length]!, rec)),
      bare ? (r) => measure(bareMeasure('introspection', r), (vu, rec) => introspect(bare.url, theirs[vu % theirs.length]!, rec)) : null,
    );
  }
  return results;
}

/** Each scenario's rounds, Tessera beside its reference. */
export function compare(results: ScenarioResult[]): Comparison[] {
  const comparisons: Comparison[] = [];
  for (const scenario of SCENARIOS) {
    const reference = REFERENCE[scenario];
    if (!reference) continue;
    const rounds = (target: Target) => results.filter((x) => x.scenario === scenario && x.target === target && x.phase === 'base' && x.round > 0).sort((a, b) => a.round - b.round);
    const tesseraRounds = rounds('tessera');
    const referenceRounds = rounds(reference.target);
    const tessera = tesseraRounds.map((x) => x.perSecond);
    const referenceRates = referenceRounds.map((x) => x.perSecond);
    if (!tessera.length || tessera.length !== referenceRates.length) continue;
    const ratios = tessera.map((v, i) => (referenceRates[i] ? round(v / referenceRates[i]!, 3) : 0));
    const ceilings = tesseraRounds.map((t, i) => {
      const r = referenceRounds[i]!;
      const postgres = t.postgresCpuSecondsPerFlow ?? 0;
      if (reference.target === 'argon2id-limit') return r.cpuSecondsPerFlow / (r.cpuSecondsPerFlow + t.loadGeneratorCpuSecondsPerFlow + postgres);
      const cost = r.cpuSecondsPerFlow + r.loadGeneratorCpuSecondsPerFlow;
      return cost / (cost + postgres);
    });
    comparisons.push({
      scenario, reference: reference.target, tessera, referenceRates, ratios, goal: reference.goal,
      medianTessera: round(median(tessera)), medianReference: round(median(referenceRates)), medianRatio: round(median(ratios), 3),
      ceiling: round(median(ceilings), 2),
    });
  }
  return comparisons;
}

export async function unusedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const cores = availableParallelism();
  const admin = new pg.Client({ connectionString: o.databaseUrl });
  // A connection PostgreSQL ends (a restart) fails the query using it; unhandled, it would end the
  // bench before it stops its servers and drops its database.
  admin.on('error', () => undefined);
  await admin.connect();
  const postgres = (await admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version;
  const db = await createBenchDatabase(o.databaseUrl);
  const processes: RunningProcess[] = [];
  const tesseraPort = o.port ?? (await unusedPort());
  const barePort = o.port ? o.port + 1 : await unusedPort();
  const mailbox = await startCodeMailbox(o.port ? o.port + 2 : 0);
  try {
    const signing = signaturesPerSecond(o.duration >= 5 ? 2 : 0.2);
    o.log(`seeding ${o.users} users (half with an authenticator app, half with email codes)…`);
    const users = await seed(db, o.users, mailbox.port);
    const factors: Sides['factors'] = {
      totp: { kind: 'totp', users: new UserPool(users.totp) },
      email: { kind: 'email', users: new EmailUserPool(users.email), mailbox, emailOf },
    };
    const tessera = await startTessera(db.url, tesseraPort, o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.join(PROJECT_ROOT, 'bench/results/tmp')}`] : []);
    processes.push(tessera);
    const needsBare = SCENARIOS.some((s) => REFERENCE[s]?.target === 'bare-oidc-provider' && (!o.scenarios || o.scenarios.includes(s)));
    const bare = needsBare ? await startBareProvider(barePort, o.concurrency) : null;
    if (bare) processes.push(bare);
    const tesseraBackends: Backends = async () =>
      (await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [db.name])).rows.map((r) => r.pid);
    const sides: Sides = { tessera, bare, tesseraBackends, factors, argon2Hash: await hashPassword('bench-password-1'), cores };
    const results = await scenarios(sides, o, 'base');
    if (o.scale > 0) {
      o.log(`storing ${o.scale} sessions and ${o.scale} grants…`);
      await seedStoredState(db, o.scale);
      results.push(...(await scenarios(sides, o, 'scaled')));
    }
    const report: BenchReport = {
      label: o.label,
      ...(o.smoke ? { smoke: true } : {}),
      at: new Date().toISOString(),
      machine: { cores, cpu: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, postgres, platform: `${process.platform} ${process.arch}` },
      settings: { duration: o.duration, rounds: o.rounds, concurrency: o.concurrency, users: o.users, scale: o.scale, argon2: PASSWORD_HASH_PARAMETERS },
      signing,
      results,
      comparisons: compare(results),
      peakRssMiB: { tessera: peakRssMiB(tessera.child.pid!), bare: bare ? peakRssMiB(bare.child.pid!) : 0 },
    };
    if (o.out) writeReport(report, o.out);
    return report;
  } finally {
    for (const p of processes) await p.stop().catch(() => undefined);
    await mailbox.close();
    await db.drop();
    await admin.end();
  }
}

const ms = (seconds: number | null) => (seconds === null ? '–' : String(round(seconds * 1000)));

export function markdown(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`# Tessera benchmark: ${r.label}`, '');
  if (r.smoke) lines.push('**Smoke run**: one second per scenario and side to prove every scenario works. Its rates and ratios are not measurements; run without `--smoke` for those.', '');
  lines.push(`${r.at} · ${r.machine.cores} cores (${r.machine.cpu}) · ${r.machine.memoryGiB} GiB · Node ${r.machine.node} · PostgreSQL ${r.machine.postgres} · load generator on the same cores`, '');
  lines.push(`Concurrency ${r.settings.concurrency}, ${r.settings.rounds} rounds of ${r.settings.duration} s per scenario and side, alternating; ${r.settings.users} users. argon2id m=${r.settings.argon2.memoryCost} KiB, t=${r.settings.argon2.timeCost}, p=${r.settings.argon2.parallelism}.`, '');
  lines.push('**Tessera beside its references (medians of the rounds)**', '');
  lines.push('| scenario | Tessera /s | reference | reference /s | ratio per round | median ratio | goal | ceiling with PostgreSQL on these cores |', '|---|---:|---|---:|---|---:|---:|---:|');
  for (const c of r.comparisons) {
    lines.push(`| ${c.scenario} | ${c.medianTessera} | ${c.reference} | ${c.medianReference} | ${c.ratios.join(', ')} | ${c.medianRatio} | ≥ ${c.goal} | ${c.ceiling} |`);
  }
  lines.push('', 'Ceiling: the ratio Tessera would reach if its own CPU per flow were only the reference\'s work (the bare provider\'s; for logins, the hash), with the CPU of its PostgreSQL backends and, for logins, the load generator\'s HTTP work on the same cores added.');
  lines.push('', '**Per flow (medians of the rounds)**', '');
  lines.push('| scenario | target | phase | per second | errors | CPU ms/flow | of it, kernel | PostgreSQL CPU ms/flow | load generator CPU ms/flow | DB queries/flow | RSS MiB |');
  lines.push('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const groups = new Map<string, ScenarioResult[]>();
  for (const s of r.results) {
    const key = `${s.scenario}|${s.target}|${s.phase}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const list of groups.values()) {
    const s = list[0]!;
    const med = (f: (x: ScenarioResult) => number | null) => {
      const v = list.map(f).filter((x): x is number => x !== null);
      return v.length ? median(v) : null;
    };
    lines.push(`| ${s.scenario} | ${s.target} | ${s.phase} | ${round(med((x) => x.perSecond)!)} | ${list.reduce((n, x) => n + x.errors, 0)} | ${ms(med((x) => x.cpuSecondsPerFlow))} | ${ms(med((x) => x.systemCpuSecondsPerFlow ?? null))} | ${ms(med((x) => x.postgresCpuSecondsPerFlow))} | ${ms(med((x) => x.loadGeneratorCpuSecondsPerFlow ?? null))} | ${med((x) => x.dbQueriesPerFlow)?.toFixed(1) ?? '–'} | ${Math.max(...list.map((x) => x.rssMiB))} |`);
  }
  lines.push('', '**Latency per step (ms; the median round of each)**', '', '| scenario | target | phase | step | p50 | p95 | p99 | max |', '|---|---|---|---|---:|---:|---:|---:|');
  for (const list of groups.values()) {
    const sorted = [...list].sort((a, b) => a.perSecond - b.perSecond);
    const s = sorted[Math.floor((sorted.length - 1) / 2)]!;
    for (const [step, p] of Object.entries(s.steps)) lines.push(`| ${s.scenario} | ${s.target} | ${s.phase} | ${step} | ${p.p50} | ${p.p95} | ${p.p99} | ${p.max} |`);
  }
  lines.push('', '**References**', '');
  lines.push(`- signatures on one core: RS256 ${r.signing.rs256PerSecond}/s, ES256 ${r.signing.es256PerSecond}/s`);
  lines.push(`- peak RSS: Tessera ${r.peakRssMiB.tessera} MiB, bare oidc-provider ${r.peakRssMiB.bare} MiB`);
  return `${lines.join('\n')}\n`;
}

function writeReport(report: BenchReport, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const stem = `${report.at.slice(0, 10)}-${report.label.replace(/[^\w.-]+/g, '-')}`;
  writeFileSync(path.join(dir, `${stem}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(path.join(dir, `${stem}.md`), markdown(report));
}

/** The scenarios that had errors, with what went wrong: a smoke run fails on any. */
export function failures(report: BenchReport): string[] {
  return report.results.filter((r) => r.errors > 0).map((r) => `${r.scenario} (${r.target}, ${r.phase}, round ${r.round}): ${r.errors} errors ${JSON.stringify(r.errorKinds)}`);
}

const invokedDirectly = process.argv[1] && /bench[\\/]run\.ts$/.test(process.argv[1]);
if (invokedDirectly) {
  const options = {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    users: { type: 'string', default: '3000' },
    scale: { type: 'string', default: '100000' },
    label: { type: 'string', default: 'run' },
    out: { type: 'string' },
    port: { type: 'string' },
    smoke: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    scenarios: { type: 'string' },
  } as const;
  // `npm run bench --smoke` (no `--`) hands the flag to npm, which keeps it: say so, not run for minutes.
  const swallowed = Object.keys(options).filter((flag) => process.env[`npm_config_${flag.replace('-', '_')}`] !== undefined);
  if (swallowed.length) {
    console.error(`npm took ${swallowed.map((f) => `--${f}`).join(', ')} for itself: write them after --, as in npm run bench -- --${swallowed[0]}`);
    process.exit(2);
  }
  const { values } = parseArgsOrUsage({ options }, 'npm run bench -- [--duration <s>] [--rounds <n>] [--concurrency <n>] [--users <n>] [--scale <rows>] [--scenarios a,b] [--port <n>] [--label <name>] [--out <dir>] [--cpu-prof] [--smoke]');
  const scenarios = values.scenarios?.split(',').map((s) => s.trim());
  const unknown = scenarios?.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
  if (unknown?.length) {
    console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}`);
    process.exit(2);
  }
  const wholeNumber = (name: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      console.error(`--${name} must be a whole number, at least ${min}`);
      process.exit(2);
    }
    return n;
  };
  const port = wholeNumber('port', values.port, 1);
  if (port !== undefined && port > 65_533) {
    console.error('--port must leave room for the next two ports (the bare provider and the SMTP sink)');
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
    duration: smoke ? 1 : wholeNumber('duration', values.duration, 1)!,
    rounds: smoke ? 2 : wholeNumber('rounds', values.rounds, 1)!,
    concurrency: smoke ? 2 : wholeNumber('concurrency', values.concurrency, 1)!,
    users: smoke ? 300 : wholeNumber('users', values.users, 2)!,
    scale: smoke ? 1000 : wholeNumber('scale', values.scale, 0)!,
    label: values.label,
    smoke,
    // A smoke run writes a report only where asked to (the smoke test reads it).
    out: values.out ?? (smoke ? null : path.join(PROJECT_ROOT, 'bench/results')),
    cpuProf: values['cpu-prof'],
    ...(port !== undefined ? { port } : {}),
    scenarios: scenarios as Scenario[] | undefined,
    log: (line) => console.log(line),
  })
    .then(async (report) => {
      console.log(markdown(report));
      await dispatcher.close();
      const failed = failures(report);
      if (failed.length) {
        console.error(`errors in ${failed.length} measurement(s):\n${failed.join('\n')}`);
        process.exitCode = 1;
      }
    })
    .catch((error: unknown) => {
      console.error(error);
      process.exit(1);
    });
}
