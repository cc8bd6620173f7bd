import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, ConfigError } from '../../src/config.js';

describe('configuration', () => {
  it('dev defaults need nothing set', () => {
    const c = loadConfig({});
    assert.equal(c.mode, 'dev');
    assert.equal(c.port, 3000);
    assert.equal(c.issuer, 'http://localhost:3000');
    assert.equal(c.databaseUrl, null);
    assert.equal(c.demo, true);
    assert.deepEqual(c.lockout, { threshold: 5, baseSeconds: 30, maxSeconds: 3600 });
  });

  it('NODE_ENV=production selects production mode, which needs a secret, an issuer and PostgreSQL', () => {
    assert.throws(() => loadConfig({ NODE_ENV: 'production' }), /TESSERA_SECRET is required/);
    assert.throws(() => loadConfig({ TESSERA_MODE: 'production', TESSERA_SECRET: 's'.repeat(32) }), /ISSUER is required/);
    assert.throws(() => loadConfig({ TESSERA_MODE: 'production', TESSERA_SECRET: 's'.repeat(32), ISSUER: 'https://id.example.com' }), /DATABASE_URL is required/);
    const c = loadConfig({ TESSERA_MODE: 'production', TESSERA_SECRET: 's'.repeat(32), ISSUER: 'https://id.example.com', DATABASE_URL: 'postgres://db/tessera' });
    assert.equal(c.mode, 'production');
    assert.equal(c.demo, false);
  });

  it('a bad value stops start-up with one line naming the variable', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ PORT: 'eighty' }, /^Invalid configuration: PORT .*\(got "eighty"\)$/],
      [{ PORT: '70000' }, /^Invalid configuration: PORT/],
      [{ ISSUER: 'not a url' }, /^Invalid configuration: ISSUER/],
      [{ ISSUER: 'https://id.example.com/' }, /ISSUER must not end with a slash/],
      [{ PORT: ' ' }, /^Invalid configuration: PORT must be a port number/],
      [{ ISSUER: 'localhost:3000' }, /^Invalid configuration: ISSUER must be an http:\/\/ or https:\/\/ URL/],
      [{ ISSUER: 'ftp://id.example.com' }, /^Invalid configuration: ISSUER must be an http:\/\/ or https:\/\/ URL/],
      [{ DATABASE_URL: 'mysql://x' }, /^Invalid configuration: DATABASE_URL must be a postgres/],
      [{ TESSERA_SECRET: 'short' }, /^Invalid configuration: TESSERA_SECRET must be at least 32 characters$/],
      [{ LOG_LEVEL: 'loud' }, /^Invalid configuration: LOG_LEVEL/],
      [{ TESSERA_MODE: 'staging' }, /^Invalid configuration: TESSERA_MODE/],
      [{ LOCKOUT_THRESHOLD: '0' }, /^Invalid configuration: LOCKOUT_THRESHOLD/],
      [{ TRUST_PROXY: 'maybe' }, /^Invalid configuration: TRUST_PROXY/],
      [{ LOCKOUT_BASE_SECONDS: '100', LOCKOUT_MAX_SECONDS: '10' }, /LOCKOUT_MAX_SECONDS must be at least LOCKOUT_BASE_SECONDS/],
    ];
    for (const [env, pattern] of cases) {
      assert.throws(() => loadConfig(env), (e: unknown) => e instanceof ConfigError && pattern.test(e.message) && !e.message.includes('\n'), JSON.stringify(env));
    }
  });

  it('several bad values are named together, one line each', () => {
    assert.throws(
      () => loadConfig({ PORT: 'eighty', LOG_LEVEL: 'loud', TESSERA_SECRET: 'short' }),
      (e: unknown) => {
        const lines = (e as Error).message.split('\n');
        return lines.length === 3 && lines.every((l) => l.startsWith('Invalid configuration: ')) && ['PORT', 'LOG_LEVEL', 'TESSERA_SECRET'].every((v) => lines.some((l) => l.includes(v)));
      },
    );
    assert.throws(
      () => loadConfig({ TESSERA_MODE: 'production', DEMO: 'true' }),
      (e: unknown) => {
        const lines = (e as Error).message.split('\n');
        return lines.length === 4 && ['TESSERA_SECRET', 'ISSUER', 'DATABASE_URL', 'DEMO'].every((v) => lines.some((l) => l.includes(v)));
      },
      'production: everything missing at once',
    );
  });

  it('an empty variable counts as not set', () => {
    const c = loadConfig({ DATABASE_URL: '', PORT: '', ISSUER: '' });
    assert.equal(c.databaseUrl, null);
    assert.equal(c.port, 3000);
  });

  it('never echoes secrets or database URLs in errors', () => {
    assert.throws(() => loadConfig({ DATABASE_URL: 'mysql://user:hunter2@db' }), (e: unknown) => !(e as Error).message.includes('hunter2'));
    assert.throws(() => loadConfig({ TESSERA_SECRET: 'hunter2' }), (e: unknown) => !(e as Error).message.includes('hunter2'));
  });
});
