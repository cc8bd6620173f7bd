// `npm test`: every suite with node's test runner. With DATABASE_URL (a PostgreSQL server; each
// test file makes and drops its own database) the PostgreSQL-only suites run too, and the
// database-agnostic suites run a second time on embedded PGlite.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const list = (dir, pattern) =>
  readdirSync(path.join(root, dir), { recursive: true })
    .map(String)
    .filter((f) => pattern.test(f))
    .map((f) => path.join(dir, f))
    .sort();

const only = process.argv.slice(2);
const unit = list('test/unit', /\.test\.ts$/);
const integration = list('test', /^[^/]+\.test\.ts$/);
const postgresOnly = list('test/postgres', /\.test\.ts$/);
const e2e = list('e2e', /\.test\.ts$/);
const bench = list('bench', /\.smoke\.test\.ts$/);

function run(files, env, label) {
  if (files.length === 0) return 0;
  console.log(`\n=== ${label}: ${files.length} file(s) ===`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], {
    cwd: root, stdio: 'inherit', env: { ...process.env, ...env },
  });
  return result.status ?? 1;
}

let failed = 0;
if (only.length) {
  failed = run(only, {}, 'selected');
} else if (process.env.DATABASE_URL) {
  failed |= run([...unit, ...integration, ...postgresOnly, ...e2e, ...bench], {}, 'PostgreSQL');
  const pgliteEnv = { DATABASE_URL: '' };
  failed |= run(integration, pgliteEnv, 'embedded PGlite');
} else {
  console.log('DATABASE_URL is not set: running on embedded PGlite (the PostgreSQL-only suites need DATABASE_URL).');
  failed |= run([...unit, ...integration, ...e2e, ...bench], {}, 'embedded PGlite');
}
process.exit(failed ? 1 : 0);
