import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { failures, median, type BenchReport, type ScenarioResult } from './run.js';
import { PROJECT_ROOT } from '../src/paths.js';

const result = (over: Partial<ScenarioResult>): ScenarioResult => ({
  scenario: 'refresh_token', target: 'tessera', phase: 'base', round: 1, concurrency: 2, seconds: 1, completed: 10, errors: 0, errorKinds: {},
  perSecond: 10, steps: {}, cpuSecondsPerFlow: 0.001, systemCpuSecondsPerFlow: 0.0004, loadGeneratorCpuSecondsPerFlow: 0.0005, postgresCpuSecondsPerFlow: 0.0005, dbQueriesPerFlow: 5, rssMiB: 100, ...over,
});

describe('bench report', () => {
  it('takes the median of an odd and an even number of rounds', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), 0);
  });

  it('names every measurement that had errors, which fails a smoke run', () => {
    const report = { results: [result({}), result({ scenario: 'introspection', target: 'bare-oidc-provider', round: 2, errors: 3, errorKinds: { 'introspection: 500': 3 } })] } as BenchReport;
    assert.deepEqual(failures(report), ['introspection (bare-oidc-provider, base, round 2): 3 errors {"introspection: 500":3}']);
    assert.deepEqual(failures({ results: [result({})] } as BenchReport), []);
  });
});

// A few iterations of every scenario, so the benchmark keeps working; numbers are not judged here.
describe('benchmark smoke run (npm run bench -- --smoke)', () => {
  it('runs every scenario against compiled Tessera and the references, alternating, without errors', { timeout: 400_000 }, async () => {
    const build = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, build.stdout + build.stderr);
    const out = mkdtempSync(path.join(tmpdir(), 'tessera-bench-'));
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'bench/run.ts'), '--smoke', '--label', 'smoke', '--out', out], { cwd: PROJECT_ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      assert.equal(status, 0, output.slice(-4000));
      const file = readdirSync(out).find((f) => f.endsWith('-smoke.json'));
      assert.ok(file, `a report was written: ${readdirSync(out).join(', ')}`);
      const report = JSON.parse(readFileSync(path.join(out, file), 'utf8')) as BenchReport;

      const expected = ['mfa_login', 'mfa_login_email', 'mfa_login_half_rate', 'mfa_login_email_half_rate', 'client_credentials', 'client_credentials_rs256', 'client_credentials_opaque', 'refresh_token', 'introspection'];
      for (const phase of ['base', 'scaled'] as const) {
        for (const scenario of expected) {
          const r = report.results.find((x) => x.scenario === scenario && x.target === 'tessera' && x.phase === phase);
          assert.ok(r, `${scenario} (${phase}) ran`);
          assert.ok(r.completed > 0, `${scenario} (${phase}) completed flows`);
          assert.ok(r.dbQueriesPerFlow !== null && r.dbQueriesPerFlow > 0, `${scenario}: queries per flow measured`);
          assert.ok(r.postgresCpuSecondsPerFlow !== null, `${scenario}: PostgreSQL CPU measured`);
        }
      }
      // Two rounds each, the sides alternating: Tessera first in round 1, the reference first in round 2.
      for (const c of report.comparisons) {
        assert.equal(c.tessera.length, 2, `${c.scenario}: two rounds`);
        assert.equal(c.ratios.length, 2);
        const order = report.results.filter((x) => x.scenario === c.scenario && x.phase === 'base' && x.round > 0).map((x) => `${x.round}:${x.target}`);
        assert.deepEqual(order, [`1:tessera`, `1:${c.reference}`, `2:${c.reference}`, `2:tessera`], c.scenario);
      }
      assert.deepEqual(report.comparisons.map((c) => c.scenario).sort(), expected.filter((s) => !s.endsWith('_half_rate')).sort());
      const login = report.results.find((x) => x.scenario === 'mfa_login')!;
      for (const step of ['authorize', 'login_page', 'password', 'mfa_page', 'totp', 'resume', 'consent_page', 'consent', 'token', 'userinfo']) {
        assert.ok(login.steps[step]?.count, `step ${step} timed`);
      }
      const email = report.results.find((x) => x.scenario === 'mfa_login_email')!;
      for (const step of ['send_code', 'code_page', 'email_code']) assert.ok(email.steps[step]?.count, `step ${step} timed`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
