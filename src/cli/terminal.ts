import { userInfo } from 'node:os';
import type { RemoteIo, SecretRequest } from '../db/data-dir-owner.js';
import { UsageError } from './commands.js';
import { CLI_COMMAND } from '../paths.js';

/** The operating-system user running this process, for the audit log. */
export function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? `uid ${process.getuid?.() ?? '?'}`;
  }
}

const MAX_SECRET = 4096;

/** Standard input up to its end, less one trailing newline (as `echo` and here-strings add). */
async function readStdin(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.length > MAX_SECRET) throw new UsageError('standard input is too long for a password');
  }
  return text.replace(/\r?\n$/, '');
}

/** Reads a line at the terminal without echoing it. */
function readHidden(label: string): Promise<string> {
  const input = process.stdin;
  return new Promise((resolve, reject) => {
    process.stderr.write(`${label}: `);
    let value = '';
    const finish = (error: Error | null) => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003' || ch === '\u0004') return finish(new UsageError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
        if (value.length > MAX_SECRET) return finish(new UsageError('that is too long for a password'));
      }
    };
    input.setRawMode(true);
    input.resume();
    input.on('data', onData);
  });
}

async function readSecret(request: SecretRequest): Promise<string> {
  if (request.source === 'stdin') return readStdin();
  if (!process.stdin.isTTY) {
    throw new UsageError(`no ${request.label.toLowerCase()} given and no terminal to ask at: pipe it in with ${request.stdinFlag ?? 'standard input'}`);
  }
  const first = await readHidden(request.label);
  if (request.confirm && (await readHidden(`Repeat ${request.label.toLowerCase()}`)) !== first) throw new UsageError('the two entries did not match');
  return first;
}

/** The CLI's own terminal: stdout, stderr, and secrets from a hidden prompt or standard input. */
export function terminalIo(): RemoteIo {
  return {
    actor: osUser(),
    cliCommand: CLI_COMMAND,
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    readSecret,
  };
}
