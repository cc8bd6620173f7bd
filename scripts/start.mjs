// `npm start`: compile when the sources are newer than the build, then run the compiled server.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const entry = path.join(root, 'dist/src/main.js');

function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(full) : statSync(full).mtimeMs);
  }
  return latest;
}

const sourceTime = Math.max(newest(path.join(root, 'src')), newest(path.join(root, 'migrations')), statSync(path.join(root, 'tsconfig.json')).mtimeMs);
if (!existsSync(entry) || statSync(entry).mtimeMs < sourceTime) {
  console.log('Building Tessera…');
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
}
await import(entry);
