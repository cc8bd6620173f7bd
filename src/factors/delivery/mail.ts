import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type { SmtpSettings } from '../../settings/settings.js';
import { DeliveryError, type Message } from './types.js';

function transportOptions(smtp: SmtpSettings): SMTPTransport.Options {
  return {
    host: smtp.host,
    port: smtp.port,
    secure: smtp.security === 'tls',
    requireTLS: smtp.security === 'starttls',
    ignoreTLS: smtp.security === 'none',
    ...(smtp.user ? { auth: { user: smtp.user, pass: smtp.password ?? '' } } : {}),
    connectionTimeout: smtp.timeoutSeconds * 1000,
    greetingTimeout: smtp.timeoutSeconds * 1000,
    socketTimeout: smtp.timeoutSeconds * 1000,
  };
}

async function deliver(transport: Transporter, smtp: SmtpSettings, message: Message): Promise<string> {
  try {
    const info = await transport.sendMail({ from: smtp.from, to: message.to, subject: message.subject ?? '', text: message.text });
    return String(info.response ?? '');
  } catch (error) {
    throw new DeliveryError('email', 'smtp', `SMTP delivery failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Sends one message over a connection of its own, closed afterwards: for the administrator's test
 * of the settings, which must show what a first connection to the server does.
 */
export async function sendMail(smtp: SmtpSettings, message: Message): Promise<string> {
  if (!smtp.host) throw new DeliveryError('email', 'smtp', 'no SMTP host is configured');
  const transport = nodemailer.createTransport(transportOptions(smtp));
  try {
    return await deliver(transport, smtp, message);
  } finally {
    transport.close();
  }
}

/** Connections kept open at most, and messages sent over one before it is replaced. */
const POOL = { maxConnections: 5, maxMessages: 100 } as const;

/**
 * Sends codes over pooled SMTP connections: a code does not wait for a new connection, its TLS
 * handshake and its login. The pool follows the settings: when they change, the next message goes
 * over a new pool and the old one closes once its messages are out. A connection idle for the
 * configured timeout closes by itself, so a server that drops idle clients finds none left.
 */
export class MailPool {
  private current: { key: string; transport: Transporter } | null = null;
  private readonly retiring = new Map<NodeJS.Timeout, Transporter>();

  async send(smtp: SmtpSettings, message: Message): Promise<string> {
    if (!smtp.host) throw new DeliveryError('email', 'smtp', 'no SMTP host is configured');
    return deliver(this.transportFor(smtp), smtp, message);
  }

  private transportFor(smtp: SmtpSettings): Transporter {
    const key = JSON.stringify(smtp);
    if (this.current?.key === key) return this.current.transport;
    if (this.current) this.retire(this.current.transport, smtp.timeoutSeconds);
    const transport = nodemailer.createTransport({ ...transportOptions(smtp), pool: true, ...POOL });
    this.current = { key, transport };
    return transport;
  }

  /** Closes a pool replaced by new settings once the messages it is sending had their time. */
  private retire(transport: Transporter, timeoutSeconds: number): void {
    const timer = setTimeout(() => {
      this.retiring.delete(timer);
      transport.close();
    }, timeoutSeconds * 1000 * 3);
    timer.unref();
    this.retiring.set(timer, transport);
  }

  /** Closes every connection (at shutdown). */
  close(): void {
    for (const [timer, transport] of this.retiring) {
      clearTimeout(timer);
      transport.close();
    }
    this.retiring.clear();
    this.current?.transport.close();
    this.current = null;
  }
}
