// `npm test`: type-check, then every suite with node's test runner.
// With DATABASE_URL (a PostgreSQL server; each test file makes and drops its own database) the
// PostgreSQL-only suites run too, and the database-agnostic suites run once more on embedded PGlite.
// Without it, everything that can runs on PGlite.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const list = (dir, pattern) =>
  (existsSync(path.join(root, dir)) ? readdirSync(path.join(root, dir), { recursive: true }) : [])
    .map(String)
    .filter((f) => pattern.test(f))
    .map((f) => path.join(dir, f))
    .sort();

const unit = list('test/unit', /\.test\.ts$/);
const integration = list('test', /^[^/]+\.test\.ts$/);
const postgresOnly = list('test/postgres', /\.test\.ts$/);
const e2e = list('e2e', /\.test\.ts$/);
const benchSmoke = list('bench', /\.smoke\.test\.ts$/);
const reports = mkdtempSync(path.join(tmpdir(), 'tessera-test-'));
const totals = { pass: 0, fail: 0, cancelled: 0, skipped: 0 };

function run(files, env, label) {
  if (files.length === 0) return 0;
  console.log(`\n=== ${label}: ${files.length} file(s) ===`);
  const tap = path.join(reports, `${label.replace(/\W+/g, '-')}.tap`);
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
    { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } },
  );
  const summary = readFileSync(tap, 'utf8');
  for (const key of Object.keys(totals)) totals[key] += Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(summary)?.[1] ?? 0);
  return result.status ?? 1;
}

let failed = 0;
const selected = process.argv.slice(2);
if (selected.length) {
  failed |= run(selected, {}, 'selected');
} else {
  console.log('=== type-check ===');
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.test.json'], { cwd: root, stdio: 'inherit' });
  if (tsc.status !== 0) {
    console.log('type-check failed');
    failed = 1;
  }
  if (process.env.DATABASE_URL) {
    failed |= run([...unit, ...integration, ...postgresOnly, ...e2e, ...benchSmoke], {}, 'PostgreSQL');
    // The suites that touch the database run again on PGlite. Not the CLI suite (a process per command,
    // each booting PGlite again), the delivery and data-directory suites (no database) nor the
    // embedded-database suite (always on PGlite).
    const onceOnly = ['cli.test.ts', 'mfa-delivery.test.ts', 'embedded-database.test.ts', 'data-dir-owner.test.ts'];
    failed |= run(integration.filter((f) => !onceOnly.some((name) => f.endsWith(name))), { DATABASE_URL: '' }, 'embedded PGlite');
  } else {
    console.log('DATABASE_URL is not set: all suites run on embedded PGlite; the multi-process suites in test/postgres and the benchmark smoke run need DATABASE_URL.');
    failed |= run([...unit, ...integration, ...e2e], {}, 'embedded PGlite');
  }
}
rmSync(reports, { recursive: true, force: true });
// A test cancelled because its suite's setup failed did not pass: it is counted and fails the run.
console.log(`\ntests: ${totals.pass} passed, ${totals.fail} failed${totals.cancelled ? `, ${totals.cancelled} cancelled` : ''}${totals.skipped ? `, ${totals.skipped} skipped` : ''}`);
process.exit(failed || totals.fail || totals.cancelled ? 1 : 0);
