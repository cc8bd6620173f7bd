import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { simpleParser, type ParsedMail } from 'mailparser';

export interface Mailbox {
  port: number;
  messages: ParsedMail[];
  /** SMTP connections clients have opened so far. */
  readonly connections: number;
  /** Resolves with the next message to arrive (or one already here that was not yet taken). */
  next(timeoutMs?: number): Promise<ParsedMail>;
  close(): Promise<void>;
}

/** A real SMTP server on 127.0.0.1 that keeps what it receives. */
export async function startMailbox(options: { requireAuth?: { user: string; pass: string } } = {}): Promise<Mailbox> {
  const messages: ParsedMail[] = [];
  let taken = 0;
  let connections = 0;
  const waiters: ((m: ParsedMail) => void)[] = [];
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ['STARTTLS', ...(options.requireAuth ? [] : ['AUTH'])],
    authOptional: !options.requireAuth,
    allowInsecureAuth: true,
    onAuth(auth, _session, callback) {
      if (options.requireAuth && auth.username === options.requireAuth.user && auth.password === options.requireAuth.pass) callback(null, { user: auth.username });
      else callback(new Error('Invalid username or password'));
    },
    onData(stream, _session, callback) {
      simpleParser(stream)
        .then((mail) => {
          messages.push(mail);
          const waiter = waiters.shift();
          if (waiter) {
            taken++;
            waiter(mail);
          }
          callback();
        })
        .catch(callback);
    },
    logger: false,
    onConnect(_session, callback) {
      connections++;
      callback();
    },
  });
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  const { port } = server.server.address() as AddressInfo;
  return {
    port,
    messages,
    get connections() {
      return connections;
    },
    next(timeoutMs = 5000) {
      if (taken < messages.length) return Promise.resolve(messages[taken++]!);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no mail arrived')), timeoutMs);
        waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
