import nodemailer from 'nodemailer';
import type { SmtpSettings } from '../../settings/settings.js';
import { DeliveryError, type Message } from './types.js';

/** Sends one message over SMTP with the configured server; a transport per send, so setting changes apply at once. */
/** Returns the server's reply to the message ("250 2.0.0 Ok: queued …"). */
export async function sendMail(smtp: SmtpSettings, message: Message): Promise<string> {
  if (!smtp.host) throw new DeliveryError('email', 'smtp', 'no SMTP host is configured');
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.security === 'tls',
    requireTLS: smtp.security === 'starttls',
    ignoreTLS: smtp.security === 'none',
    ...(smtp.user ? { auth: { user: smtp.user, pass: smtp.password ?? '' } } : {}),
    connectionTimeout: smtp.timeoutSeconds * 1000,
    greetingTimeout: smtp.timeoutSeconds * 1000,
    socketTimeout: smtp.timeoutSeconds * 1000,
  });
  try {
    const info = await transport.sendMail({ from: smtp.from, to: message.to, subject: message.subject ?? '', text: message.text });
    return String(info.response ?? '');
  } catch (error) {
    throw new DeliveryError('email', 'smtp', `SMTP delivery failed: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    transport.close();
  }
}
