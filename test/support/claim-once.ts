// A contender for a data directory (test/data-dir-owner.test.ts): claims it without waiting, holds
// it for a second, then says whether it still owned it at the end ("owner") or why it could not.
import { readFileSync } from 'node:fs';
import { claimDataDir, DataDirInUse, lockPath } from '../../src/db/data-dir-owner.js';

const dir = process.argv[2]!;
try {
  const owner = await claimDataDir(dir, 'server', undefined, 0);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const lock = JSON.parse(readFileSync(lockPath(dir), 'utf8')) as { token: string };
  console.log(lock.token === owner.info.token ? 'owner' : 'lost the lock');
  await owner.release();
} catch (error) {
  console.log(error instanceof DataDirInUse ? 'in use' : `failed: ${(error as Error).message}`);
}
