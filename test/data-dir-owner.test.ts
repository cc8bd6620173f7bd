import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { claimDataDir, forwardToOwner, lockPath, type DataDirOwner, type RemoteIo } from '../src/db/data-dir-owner.js';
import { runProcess, SOURCE_ENTRY } from './support/processes.js';

const quietIo = (lines: string[]): RemoteIo => ({
  actor: 'tester',
  out: (line) => lines.push(line),
  err: (line) => lines.push(`ERR ${line}`),
  readSecret: async () => 'secret-answer',
});

/** Connects to the control port, sends raw bytes, and resolves when the owner closes the connection (or after `ms`). */
function probe(port: number, data: string | Buffer, ms = 8000): Promise<'closed' | 'open'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(data));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('open');
    }, ms);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
  });
}

describe('the owner of an embedded data directory', () => {
  let dir: string;
  let owner: DataDirOwner;
  const ran: string[][] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'tessera-owner-'));
    owner = await claimDataDir(dir, 'server');
    owner.serve(async (argv, io) => {
      ran.push(argv);
      io.out(`ran ${argv.join(' ')} as ${io.actor}${io.cliCommand ? ` (${io.cliCommand})` : ''}`);
      if (argv[0] === 'ask') io.out(`got ${await io.readSecret({ source: 'prompt', label: 'Password' })}`);
      return 0;
    });
  });
  after(async () => {
    await owner.release();
    rmSync(dir, { recursive: true, force: true });
  });

  it('holds a lock only its OS user can read, in a directory only its OS user can enter', () => {
    assert.equal(statSync(lockPath(dir)).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const lock = JSON.parse(readFileSync(lockPath(dir), 'utf8')) as { pid: number; role: string };
    assert.equal(lock.pid, process.pid);
    assert.equal(lock.role, 'server');
  });

  it('runs a command sent with the token, answering its questions through the sender', async () => {
    const lines: string[] = [];
    const code = await forwardToOwner(owner.info, ['ask', 'me'], { ...quietIo(lines), cliCommand: 'npm run cli --' });
    assert.equal(code, 0);
    assert.deepEqual(lines, ['ran ask me as tester (npm run cli --)', 'got secret-answer'], 'the owner knows how the sender runs the CLI, for its hints');
  });

  it('drops peers without the token: a wrong one, one of another byte length, garbage, silence, a flood — and keeps serving', async () => {
    const port = owner.info.port;
    const before = ran.length;
    // 43 characters of two bytes each: the same length in characters as a real token, not in bytes.
    assert.equal(await probe(port, `${JSON.stringify({ token: 'é'.repeat(43), op: 'run', argv: ['x'], actor: 'm' })}\n`), 'closed');
    assert.equal(await probe(port, `${JSON.stringify({ token: 'x'.repeat(43), op: 'run', argv: ['x'], actor: 'm' })}\n${JSON.stringify({ token: owner.info.token, op: 'run', argv: ['y'], actor: 'm' })}\n`), 'closed', 'no second try on one connection');
    assert.equal(await probe(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n\n'), 'closed');
    assert.equal(await probe(port, 'a'.repeat(8192)), 'closed', 'a long line before the token');
    assert.equal(await probe(port, ''), 'closed', 'silence: closed after the deadline');
    assert.equal(ran.length, before, 'nothing ran');
    const lines: string[] = [];
    assert.equal(await forwardToOwner(owner.info, ['still', 'here'], quietIo(lines)), 0);
    assert.deepEqual(lines, ['ran still here as tester']);
  });

  it('of several processes claiming a directory whose lock is garbage or stale at once, exactly one wins', async () => {
    const script = path.join(SOURCE_ENTRY.root, 'test/support/claim-once.ts');
    for (const stale of ['not a lock at all', JSON.stringify({ pid: 2 ** 22 + 7, role: 'server', port: 9, token: 't', startedAt: '' })]) {
      for (let trial = 0; trial < 3; trial++) {
        const contested = mkdtempSync(path.join(tmpdir(), 'tessera-contested-'));
        try {
          writeFileSync(lockPath(contested), stale, { mode: 0o600 });
          const results = await Promise.all(
            [1, 2, 3].map(() => runProcess(process.execPath, [...SOURCE_ENTRY.nodeArgs, script, contested], { cwd: SOURCE_ENTRY.root, env: process.env })),
          );
          const owners = results.filter((r) => r.stdout.trim() === 'owner');
          assert.equal(owners.length, 1, `one owner: ${results.map((r) => r.stdout.trim() + r.stderr.trim()).join(' | ')}`);
          assert.equal(results.filter((r) => /in use|already running/.test(r.stdout)).length, 2, results.map((r) => r.stdout).join(' | '));
        } finally {
          rmSync(contested, { recursive: true, force: true });
        }
      }
    }
  });
});
