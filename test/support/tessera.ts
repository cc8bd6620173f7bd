import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startTessera, type RunningTessera } from '../../src/server.js';
import { createTestDatabase, type TestDatabase } from './database.js';

export const TEST_SECRET = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';

export interface TestTessera extends RunningTessera {
  testDb: TestDatabase;
  stop(): Promise<void>;
}

/** A Tessera on a random loopback port with its own fresh database; env overrides settings. */
export async function startTestTessera(env: Record<string, string> = {}, testDb?: TestDatabase): Promise<TestTessera> {
  const database = testDb ?? (await createTestDatabase());
  const config = loadConfig({
    TESSERA_MODE: 'dev',
    PORT: '0',
    HOST: '127.0.0.1',
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: '/nonexistent-test-data-dir',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DEMO: 'true',
    ...env,
  });
  const tessera = await startTessera(config, { database: database.handle, logger: createLogger(config.logLevel) });
  return {
    ...tessera,
    testDb: database,
    async stop() {
      await tessera.close();
      if (!testDb) await database.drop();
    },
  };
}
