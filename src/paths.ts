import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root, whether this runs from src/ (tsx) or dist/src/ (compiled). */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) || !existsSync(path.join(dir, 'views'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the Tessera project root (package.json beside views/)');
    dir = parent;
  }
  return dir;
}

export const PROJECT_ROOT = findRoot();
export const VIEWS_DIR = path.join(PROJECT_ROOT, 'views');
export const PUBLIC_DIR = path.join(PROJECT_ROOT, 'public');

/** Tessera's version, from package.json. */
export const VERSION = (JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/**
 * How an operator runs the CLI in this tree: from the sources through npm, or — in the compiled,
 * pruned production tree (Docker), where npm run cli has no tsx — the compiled entry.
 */
export const CLI_COMMAND = fileURLToPath(import.meta.url).includes(`${path.sep}dist${path.sep}src${path.sep}`) ? 'node dist/src/cli.js' : 'npm run cli --';
