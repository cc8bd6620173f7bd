import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runBench } from './run.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { dispatcher } from './lib/http.js';

// A few iterations of every scenario, so the benchmark keeps working; numbers are not judged here.
describe('benchmark smoke run (npm run bench -- --smoke)', () => {
  it('runs every scenario against compiled Tessera and the references without errors', { timeout: 300_000 }, async () => {
    const build = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, build.stdout + build.stderr);
    const report = await runBench({
      databaseUrl: process.env.DATABASE_URL!, duration: 1, concurrency: 2, users: 300, scale: 500, label: 'smoke', out: null, cpuProf: false, log: () => undefined,
    });
    await dispatcher.close();
    const expected = ['mfa_login', 'mfa_login_half_rate', 'client_credentials', 'refresh_token', 'introspection'];
    for (const phase of ['base', 'scaled'] as const) {
      for (const scenario of expected) {
        const r = report.results.find((x) => x.scenario === scenario && x.target === 'tessera' && x.phase === phase);
        assert.ok(r, `${scenario} (${phase}) ran`);
        assert.ok(r.completed > 0, `${scenario} (${phase}) completed flows`);
        assert.equal(r.errors, 0, `${scenario} (${phase}) errors: ${JSON.stringify(r.errorKinds)}`);
        assert.ok(r.dbQueriesPerFlow !== null && r.dbQueriesPerFlow > 0, 'queries per flow measured');
      }
    }
    for (const scenario of ['client_credentials', 'refresh_token']) {
      const r = report.results.find((x) => x.scenario === scenario && x.target === 'bare-oidc-provider');
      assert.ok(r && r.completed > 0 && r.errors === 0, `bare ${scenario}`);
    }
    assert.ok(report.argon2.verificationsPerSecond > 0);
    assert.ok(report.ratios.mfaLoginsPerArgon2Limit !== null);
    const login = report.results.find((x) => x.scenario === 'mfa_login')!;
    for (const step of ['authorize', 'login_page', 'password', 'mfa_page', 'totp', 'resume', 'consent_page', 'consent', 'token', 'userinfo']) {
      assert.ok(login.steps[step]?.count, `step ${step} timed`);
    }
  });
});
