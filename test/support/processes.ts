import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/paths.js';
import { unusedPort } from './ports.js';

/** How Tessera's entry points are started: from the sources through tsx (as npm run dev and npm run cli do), or compiled. */
export interface Entry {
  root: string;
  /** node arguments before the script, e.g. ['--import', 'tsx']. */
  nodeArgs: string[];
  main: string;
  cli: string;
}

export const SOURCE_ENTRY: Entry = {
  root: PROJECT_ROOT,
  // Resolved here, so a process started in another directory (a file named relative to it) finds it too.
  nodeArgs: ['--import', import.meta.resolve('tsx')],
  main: 'src/main.ts',
  cli: 'src/cli.ts',
};

export interface TesseraProcess {
  child: ChildProcess;
  port: number;
  issuer: string;
  output(): string;
  /** Sends the signal and resolves with the exit code once the process has ended. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts a real Tessera process and waits until /readyz answers 200. */
export async function spawnTessera(env: Record<string, string>, entry: Entry = SOURCE_ENTRY, port?: number): Promise<TesseraProcess> {
  const listenPort = port ?? (await unusedPort());
  const issuer = env.ISSUER ?? `http://127.0.0.1:${listenPort}`;
  const child = spawn(process.execPath, [...entry.nodeArgs, path.join(entry.root, entry.main)], {
    cwd: entry.root,
    env: { ...process.env, PORT: String(listenPort), HOST: '127.0.0.1', ISSUER: issuer, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const handle: TesseraProcess = {
    child,
    port: listenPort,
    issuer,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`Tessera exited with ${child.exitCode}: ${output}`);
    try {
      if ((await fetch(`http://127.0.0.1:${listenPort}/readyz`)).ok) return handle;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await handle.stop('SIGKILL');
  throw new Error(`Tessera did not become ready: ${output}`);
}

/** Runs a process to its end; resolves with its exit code and output. */
export function runProcess(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; stdin?: string }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // A child that exits without reading its input (pg_ctl) must not fail the test with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** One CLI command in its own process, as an operator types it (oidc-provider's Node version warning left out of stderr). */
export async function runCli(args: string[], env: NodeJS.ProcessEnv, options: { stdin?: string; entry?: Entry; cwd?: string } = {}): Promise<CliRun> {
  const entry = options.entry ?? SOURCE_ENTRY;
  const r = await runProcess(process.execPath, [...entry.nodeArgs, path.join(entry.root, entry.cli), ...args], { cwd: options.cwd ?? entry.root, env, ...(options.stdin !== undefined ? { stdin: options.stdin } : {}) });
  return { ...r, stderr: r.stderr.split('\n').filter((l) => !/Unsupported runtime/.test(l)).join('\n').trim() };
}
