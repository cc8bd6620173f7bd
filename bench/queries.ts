// Where the queries go: runs single flows one after another against the compiled server and reads
// its /metrics query counter around every step, so each step's difference is that step's own.
// Usage: npm run build && DATABASE_URL=postgres://… npx tsx bench/queries.ts [--flows 5]
import '../src/runtime-notice.js';
import { createBenchDatabase, emailOf, seed, startTessera } from './lib/tessera.js';
import { startCodeMailbox } from './lib/mailbox.js';
import { EmailUserPool, UserPool, clientCredentials, introspect, mfaLogin, refresh, type SecondFactor } from './lib/scenarios.js';
import { APIS } from './lib/fixtures.js';
import { Recorder } from './lib/stats.js';
import { median, queriesSent, unusedPort } from './run.js';
import { parseArgsOrUsage } from './lib/args.js';

/** Records each step's queries instead of its latency: the flows run one at a time, so nothing else counts. */
class QueryRecorder extends Recorder {
  constructor(private readonly base: string) {
    super();
  }

  override async time<T>(step: string, fn: () => Promise<T>): Promise<T> {
    const before = await queriesSent(this.base);
    const result = await fn();
    const list = this.samples.get(step) ?? [];
    list.push((await queriesSent(this.base)) - before);
    this.samples.set(step, list);
    return result;
  }
}

/** The steps of one flow, each with the median of its query counts over the flows run. */
function table(title: string, rec: Recorder, flows: number, total: boolean): string[] {
  // A step timed twice in one flow (the consent POST and its redirect) counts as one.
  const perFlow = [...rec.samples].map(([step, counts]) => {
    const per = counts.length / flows;
    const sums = Array.from({ length: flows }, (_, i) => counts.slice(i * per, (i + 1) * per).reduce((a, b) => a + b, 0));
    return [step, median(sums)] as const;
  });
  const sum = perFlow.reduce((n, [, q]) => n + q, 0);
  return [total ? `${title}: ${sum} queries` : `${title}:`, ...perFlow.map(([step, q]) => `  ${step.padEnd(20)} ${q}`), ''];
}

const { values } = parseArgsOrUsage({ options: { flows: { type: 'string', default: '5' } } }, 'npm run build && DATABASE_URL=postgres://… npx tsx bench/queries.ts [--flows <n>]');
const flows = Number(values.flows);
const serverUrl = process.env.DATABASE_URL;
if (!serverUrl || !Number.isInteger(flows) || flows < 1) {
  console.error('usage: DATABASE_URL=postgres://… npx tsx bench/queries.ts [--flows n]  (after npm run build)');
  process.exit(2);
}
const db = await createBenchDatabase(serverUrl);
const mailbox = await startCodeMailbox();
const users = await seed(db, Math.max(20, flows * 4), mailbox.port);
const tessera = await startTessera(db.url, await unusedPort());
try {
  const base = tessera.url;
  const factors: Record<'totp' | 'email', SecondFactor> = {
    totp: { kind: 'totp', users: new UserPool(users.totp) },
    email: { kind: 'email', users: new EmailUserPool(users.email), mailbox, emailOf },
  };
  // One flow first, uncounted: the first request of a process fills its caches (clients, settings).
  await mfaLogin(base, factors.totp, new Recorder());
  const lines: string[] = [];
  for (const kind of ['totp', 'email'] as const) {
    const rec = new QueryRecorder(base);
    for (let i = 0; i < flows; i++) await mfaLogin(base, factors[kind], rec);
    lines.push(...table(`MFA login with ${kind === 'totp' ? 'an authenticator app' : 'an email code'}`, rec, flows, true));
  }
  const tokens = await mfaLogin(base, factors.totp, new Recorder());
  const rec = new QueryRecorder(base);
  let refreshToken = tokens.refreshToken;
  for (let i = 0; i < flows; i++) {
    refreshToken = await refresh(base, refreshToken, rec);
    await clientCredentials(base, rec, APIS.es256);
    await introspect(base, await clientCredentials(base, new Recorder(), APIS.opaque), rec);
  }
  lines.push(...table('Token endpoints, queries per request', rec, flows, false));
  console.log(lines.join('\n'));
} finally {
  await tessera.stop();
  await mailbox.close();
  await db.drop();
}
