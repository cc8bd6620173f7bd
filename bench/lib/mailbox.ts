import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

/**
 * A local SMTP server that hands each recipient's one-time code to whoever waits for it: the bench's
 * email-code logins read their code here. Light on purpose (no MIME parsing): it runs on the same
 * cores as the server it measures.
 */
export interface CodeMailbox {
  port: number;
  received: number;
  codeFor(recipient: string, timeoutMs?: number): Promise<string>;
  close(): Promise<void>;
}

export async function startCodeMailbox(port = 0): Promise<CodeMailbox> {
  const arrived = new Map<string, string>();
  const waiting = new Map<string, (code: string) => void>();
  const box = { received: 0 };
  const deliver = (to: string, code: string) => {
    const waiter = waiting.get(to);
    if (waiter) {
      waiting.delete(to);
      waiter(code);
    } else arrived.set(to, code);
  };
  const server = new SMTPServer({
    secure: false,
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        box.received++;
        const body = Buffer.concat(chunks).toString('utf8');
        const code = /\b(\d{6,10})\b/.exec(body.slice(body.indexOf('\r\n\r\n')))?.[1];
        for (const rcpt of session.envelope.rcptTo) if (code) deliver(rcpt.address.toLowerCase(), code);
        callback();
      });
    },
  });
  server.listen(port, '127.0.0.1');
  await once(server.server, 'listening');
  return {
    port: (server.server.address() as AddressInfo).port,
    get received() {
      return box.received;
    },
    codeFor(recipient, timeoutMs = 10_000) {
      const to = recipient.toLowerCase();
      const code = arrived.get(to);
      if (code) {
        arrived.delete(to);
        return Promise.resolve(code);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(to);
          reject(new Error(`no code arrived for ${to}`));
        }, timeoutMs);
        waiting.set(to, (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
