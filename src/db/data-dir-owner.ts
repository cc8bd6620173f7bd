import { randomBytes } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { secretsEqual } from '../crypto/equal.js';

/**
 * One process owns an embedded (PGlite) data directory. PGlite is PostgreSQL in one process:
 * a second process opening the same files neither sees nor keeps the other's writes. So the owner
 * holds a lock file and answers on a loopback control channel; every other process (a CLI command
 * beside the server) hands its work to the owner over that channel instead of opening the files.
 *
 * The lock file (mode 0600) names the owner's pid, its control port and a random token; only the
 * OS user who can read the data directory can read the token, so only they can talk to the owner.
 * A lock whose process is gone (killed, crashed) is stale and is taken over by the next claimant.
 */

export type OwnerRole = 'server' | 'cli';

export interface OwnerInfo {
  pid: number;
  role: OwnerRole;
  port: number;
  token: string;
  startedAt: string;
  /** The server's issuer once it listens (for the "already running" message). */
  issuer?: string;
}

/** What a forwarded command may ask of the process that typed it. */
export interface RemoteIo {
  /** The operating-system user who ran the command. */
  actor: string;
  /** How that user runs the CLI (npm run cli -- or node dist/src/cli.js), for the hints in messages. */
  cliCommand?: string;
  out(line: string): void;
  err(line: string): void;
  /** Reads a secret at the caller's terminal or standard input. */
  readSecret(request: SecretRequest): Promise<string>;
}

export interface SecretRequest {
  source: 'prompt' | 'stdin';
  label: string;
  /** Ask twice and compare (a new password at a prompt). */
  confirm?: boolean;
  /** The flag that reads it from standard input instead, for the message when there is no terminal. */
  stdinFlag?: string;
}

/** Runs a forwarded command; resolves to the exit code, or throws an error whose message is for the caller. */
export type CommandHandler = (argv: string[], io: RemoteIo) => Promise<number>;

export class DataDirInUse extends Error {
  constructor(
    readonly dataDir: string,
    readonly owner: OwnerInfo,
  ) {
    super(
      owner.role === 'server'
        ? `Tessera is already running on the data directory ${dataDir} (pid ${owner.pid}${owner.issuer ? `, ${owner.issuer}` : ''}). ` +
            'Stop it first, or give this instance its own DATA_DIR, or use PostgreSQL (DATABASE_URL) to run several instances.'
        : `A Tessera command (pid ${owner.pid}) is using the data directory ${dataDir}; try again when it has finished.`,
    );
  }
}

const LOCK_FILE = 'tessera.lock';
/** A control message is one JSON line; nothing legitimate comes near this size. */
const MAX_LINE = 1 << 20;
/** Before the token is checked a peer may send one short line, within a few seconds. */
const MAX_LINE_BEFORE_AUTH = 4096;
const AUTH_DEADLINE_MS = 5000;
const MAX_CONNECTIONS = 32;

export function lockPath(dataDir: string): string {
  return path.join(path.resolve(dataDir), LOCK_FILE);
}

/** The lock as found: missing, its raw text, and what it says (null when it is not a lock Tessera wrote). */
type LockState = { kind: 'missing' } | { kind: 'present'; raw: string; info: OwnerInfo | null };

function parseLock(raw: string): OwnerInfo | null {
  try {
    const info = JSON.parse(raw) as Partial<OwnerInfo>;
    if (typeof info.pid !== 'number' || typeof info.port !== 'number' || typeof info.token !== 'string') return null;
    return info as OwnerInfo;
  } catch {
    return null;
  }
}

function lockState(file: string): LockState {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    // Unreadable (another user's lock, a directory): never taken over.
    throw new Error(`cannot read the lock ${file}: ${(error as Error).message}`);
  }
  return { kind: 'present', raw, info: parseLock(raw) };
}

function readLock(file: string): OwnerInfo | null {
  try {
    const state = lockState(file);
    return state.kind === 'present' ? state.info : null;
  } catch {
    return null;
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, as another user's process.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Newline-delimited JSON over a socket, with a size limit per message (limit() may change as the peer is trusted). */
function messages(socket: net.Socket, onMessage: (message: Record<string, unknown>) => void, onBad: () => void, limit: () => number = () => MAX_LINE): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    if (buffer.length > limit()) {
      onBad();
      return;
    }
    let newline;
    while (!socket.destroyed && (newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        onBad();
        return;
      }
      if (typeof message !== 'object' || message === null || Array.isArray(message)) {
        onBad();
        return;
      }
      onMessage(message as Record<string, unknown>);
    }
  });
}

function send(socket: net.Socket, message: Record<string, unknown>): void {
  if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
}

/** Asks a lock's owner whether it is there. "refused" means nobody listens: the lock is stale. */
function ping(info: OwnerInfo, timeoutMs = 3000): Promise<'alive' | 'refused' | 'timeout'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: info.port });
    const done = (answer: 'alive' | 'refused' | 'timeout') => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    socket.on('error', () => done('refused'));
    socket.on('connect', () => send(socket, { token: info.token, op: 'ping' }));
    messages(socket, (m) => done(m.type === 'pong' && m.pid === info.pid ? 'alive' : 'refused'), () => done('refused'));
    socket.on('close', () => done('refused'));
  });
}

/**
 * The live owner of a data directory, or null when there is none (no lock, or a stale one).
 * A lock is live while its process exists and answers on its control port; a busy owner that
 * does not answer in time is still taken as live (better a clear "in use" than two owners).
 */
export async function findOwner(dataDir: string): Promise<OwnerInfo | null> {
  const info = readLock(lockPath(dataDir));
  if (!info || info.pid === process.pid || !processExists(info.pid)) return null;
  return (await ping(info)) === 'refused' ? null : info;
}

/**
 * Removes the lock judged stale, only if it is still exactly that lock: it is moved aside first
 * (atomic), compared with what was judged, and put back if another claimant replaced it meanwhile.
 */
function removeStale(file: string, judged: string): void {
  const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    renameSync(file, aside);
  } catch {
    return; // already gone
  }
  let moved: string | null = null;
  try {
    moved = readFileSync(aside, 'utf8');
  } catch {
    /* unreadable: treated as changed */
  }
  if (moved !== judged) {
    try {
      linkSync(aside, file);
    } catch {
      /* a third claimant holds it now */
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    /* ignore */
  }
}

/** The data directory is readable by its owner alone: PGlite's files hold tokens and password hashes. */
function restrictToOwner(dir: string): void {
  try {
    const stat = statSync(dir);
    if ((stat.mode & 0o077) !== 0 && (typeof process.getuid !== 'function' || stat.uid === process.getuid())) chmodSync(dir, 0o700);
  } catch {
    /* not ours to change: left as the operator set it */
  }
}

export interface DataDirOwner {
  readonly info: OwnerInfo;
  /** Starts answering forwarded commands (until then they wait). */
  serve(handler: CommandHandler): void;
  /** Records the issuer in the lock, for the message a second start prints. */
  describe(issuer: string): void;
  /** Stops answering and removes the lock. */
  release(): Promise<void>;
}

/**
 * Makes this process the owner of dataDir. Throws DataDirInUse when a live server owns it; waits
 * (up to waitMs) for a CLI command that holds the directory to finish.
 */
export async function claimDataDir(dataDir: string, role: OwnerRole, onWait?: (owner: OwnerInfo) => void, waitMs = 60_000): Promise<DataDirOwner> {
  const dir = path.resolve(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  restrictToOwner(dir);
  const file = lockPath(dir);

  let handler: CommandHandler | null = null;
  const waiting: (() => void)[] = [];
  const sockets = new Set<net.Socket>();
  const token = randomBytes(32).toString('base64url');

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // A peer has a few seconds to show the token; a command may then take its time (a person typing a password).
    const deadline = setTimeout(() => socket.destroy(), AUTH_DEADLINE_MS);
    socket.setTimeout(10 * 60_000, () => socket.destroy());
    let authenticated = false;
    let closed = false;
    let pendingSecret: ((value: string | null) => void) | null = null;
    socket.on('close', () => {
      closed = true;
      clearTimeout(deadline);
      pendingSecret?.(null);
    });
    messages(
      socket,
      (m) => {
        if (!authenticated) {
          if (!secretsEqual(m.token, token)) {
            socket.destroy();
            return;
          }
          authenticated = true;
          clearTimeout(deadline);
          if (m.op === 'ping') {
            send(socket, { type: 'pong', pid: process.pid, role });
            socket.end();
            return;
          }
          if (m.op !== 'run' || !Array.isArray(m.argv) || !m.argv.every((a) => typeof a === 'string') || typeof m.actor !== 'string') {
            socket.destroy();
            return;
          }
          const io: RemoteIo = {
            actor: m.actor.slice(0, 128),
            ...(typeof m.cli === 'string' ? { cliCommand: m.cli.slice(0, 64) } : {}),
            out: (line) => send(socket, { type: 'out', line }),
            err: (line) => send(socket, { type: 'err', line }),
            readSecret: (request) =>
              new Promise<string>((resolve, reject) => {
                if (closed) return reject(new Error('no answer from the terminal'));
                pendingSecret = (value) => (value === null ? reject(new Error('no answer from the terminal')) : resolve(value));
                send(socket, { type: 'secret', ...request });
              }),
          };
          void run(m.argv as string[], io).then(
            (code) => {
              send(socket, { type: 'done', code });
              socket.end();
            },
            (error: unknown) => {
              send(socket, { type: 'done', code: 1, error: error instanceof Error ? error.message : String(error) });
              socket.end();
            },
          );
          return;
        }
        if (m.type === 'secret' && pendingSecret) {
          const answer = pendingSecret;
          pendingSecret = null;
          answer(typeof m.value === 'string' ? m.value : null);
        }
      },
      () => socket.destroy(),
      () => (authenticated ? MAX_LINE : MAX_LINE_BEFORE_AUTH),
    );
  });
  server.maxConnections = MAX_CONNECTIONS;

  async function run(argv: string[], io: RemoteIo): Promise<number> {
    if (!handler) await new Promise<void>((resolve) => waiting.push(resolve));
    return handler!(argv, io);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.unref();
  let info: OwnerInfo = { pid: process.pid, role, port: (server.address() as net.AddressInfo).port, token, startedAt: new Date().toISOString() };

  // Written aside, then linked into place: the lock appears whole or not at all, and only once.
  const writeLock = (target: string, data: OwnerInfo, exclusive: boolean) => {
    const temp = `${target}.${process.pid}-${randomBytes(4).toString('hex')}`;
    writeFileSync(temp, JSON.stringify(data), { mode: 0o600 });
    try {
      if (exclusive) linkSync(temp, target);
      else renameSync(temp, target);
    } finally {
      if (exclusive) unlinkSync(temp);
    }
  };

  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    let linked = false;
    try {
      writeLock(file, info, true);
      linked = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        server.close();
        throw error;
      }
    }
    if (linked) {
      // A claimant that judged an older lock stale acts within moments: look again before trusting ours.
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (readLock(file)?.token === token) break;
      continue;
    }
    let current: LockState;
    try {
      current = lockState(file);
    } catch (error) {
      server.close();
      throw error;
    }
    if (current.kind === 'missing') continue;
    const holder = current.info;
    const answer = holder && holder.pid !== process.pid && processExists(holder.pid) ? await ping(holder) : 'refused';
    if (answer === 'refused') {
      removeStale(file, current.raw);
      continue;
    }
    if (holder!.role === 'cli' && Date.now() < deadline) {
      if (!told) onWait?.(holder!);
      told = true;
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    server.close();
    throw new DataDirInUse(dataDir, holder!);
  }

  return {
    get info() {
      return info;
    },
    serve(h) {
      handler = h;
      for (const resolve of waiting.splice(0)) resolve();
    },
    describe(issuer) {
      info = { ...info, issuer };
      if (readLock(file)?.token === token) writeLock(file, info, false);
    },
    async release() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (readLock(file)?.token === token) {
        try {
          unlinkSync(file);
        } catch {
          /* already gone */
        }
      }
    },
  };
}

/**
 * Runs a command in the owner's process: sends the arguments, prints what the owner prints and
 * answers its requests for secrets. Resolves to the command's exit code.
 */
export function forwardToOwner(
  owner: OwnerInfo,
  argv: string[],
  local: RemoteIo,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: owner.port });
    let finished = false;
    socket.on('error', (error) => {
      if (!finished) reject(new Error(`could not reach the Tessera process that owns the data directory (pid ${owner.pid}): ${error.message}`));
    });
    socket.on('close', () => {
      if (!finished) reject(new Error(`the Tessera process that owns the data directory (pid ${owner.pid}) closed the connection before the command finished`));
    });
    socket.on('connect', () => send(socket, { token: owner.token, op: 'run', argv, actor: local.actor, cli: local.cliCommand }));
    messages(
      socket,
      (m) => {
        if (m.type === 'out' && typeof m.line === 'string') local.out(m.line);
        else if (m.type === 'err' && typeof m.line === 'string') local.err(m.line);
        else if (m.type === 'secret' && (m.source === 'prompt' || m.source === 'stdin') && typeof m.label === 'string') {
          local.readSecret({ source: m.source, label: m.label, confirm: m.confirm === true, ...(typeof m.stdinFlag === 'string' ? { stdinFlag: m.stdinFlag } : {}) }).then(
            (value) => send(socket, { type: 'secret', value }),
            (error: unknown) => {
              finished = true;
              socket.destroy();
              reject(error instanceof Error ? error : new Error(String(error)));
            },
          );
        } else if (m.type === 'done') {
          finished = true;
          socket.end();
          if (typeof m.error === 'string') local.err(`error: ${m.error}`);
          resolve(typeof m.code === 'number' ? m.code : 1);
        }
      },
      () => {
        finished = true;
        socket.destroy();
        reject(new Error('the Tessera process that owns the data directory sent a malformed answer'));
      },
    );
  });
}
