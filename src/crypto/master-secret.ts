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
  mkdirSync(config.dataDir, { recursive: true });
  const secret = randomBytes(32).toString('base64url');
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  log.warn({ file }, 'TESSERA_SECRET is not set: generated a development secret. Set TESSERA_SECRET in production.');
  return secret;
}
