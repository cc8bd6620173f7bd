import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';

/**
 * TESSERA_SECRET in production; in dev mode, generated once into the data dir so a newcomer
 * needs no set-up (and so that restarts can still open what was sealed before).
 */
export function resolveMasterSecret(config: Config, log: Logger): string {
  if (config.secret) return config.secret;
  const file = path.resolve(config.dataDir, 'tessera-secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString('base64url');
  try {
    // Exclusive: of two first starts, one writes the secret and both use it.
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return readFileSync(file, 'utf8').trim();
  }
  log.warn({ file }, 'TESSERA_SECRET is not set: generated a development secret. Set TESSERA_SECRET in production.');
  return secret;
}
