import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { unusedPort } from './ports.js';
import { runProcess } from './processes.js';

/**
 * A PostgreSQL server of the test's own (initdb and pg_ctl from the installed server, its own data
 * directory and port), so a test may stop and restart it without disturbing other test files.
 */
export interface PrivatePostgres {
  url: string;
  /** `pg_ctl restart -m fast`: every connection is cut, as when an operator restarts the server. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  if (!versions.length) throw new Error('no PostgreSQL server installed under /usr/lib/postgresql');
  return path.join(root, versions[0]!, 'bin');
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-pg-'));
  const data = path.join(dir, 'data');
  // PostgreSQL refuses to run as root: then it runs as the postgres user, who must own the directory.
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    const pgUser = await runProcess('id', ['-u', 'postgres'], { cwd: dir, env: process.env });
    const pgGroup = await runProcess('id', ['-g', 'postgres'], { cwd: dir, env: process.env });
    chownSync(dir, Number(pgUser.stdout.trim()), Number(pgGroup.stdout.trim()));
  }
  const run = async (tool: string, args: string[]) => {
    const command = asRoot ? 'runuser' : path.join(bin, tool);
    const argv = asRoot ? ['-u', 'postgres', '--', path.join(bin, tool), ...args] : args;
    const r = await runProcess(command, argv, { cwd: dir, env: { ...process.env, LC_ALL: 'C' } });
    if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')} failed: ${r.stdout}${r.stderr}`);
  };
  const port = await unusedPort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const start = () => run('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-w', 'start']);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    restart: () => run('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-m', 'fast', '-w', 'restart']),
    stop: () => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']),
    start,
    async destroy() {
      await run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
