import type { Db } from '../../db/index.js';
import type { Logger } from '../../log.js';
import type { Mode } from '../../config.js';
import type { Settings } from '../../settings/settings.js';
import { MailPool } from './mail.js';
import { sendTwilioSms } from './twilio.js';
import { sendGatewaySms } from './gateway.js';
import type { DeliveryReport, Message } from './types.js';

export type Channel = 'email' | 'sms';

/** The provider a channel would use now, or null when it cannot send at all. */
export function providerFor(channel: Channel, settings: Settings, mode: Mode): 'smtp' | 'twilio' | 'gateway' | 'outbox' | null {
  if (channel === 'email') return settings.smtp.host ? 'smtp' : mode === 'dev' ? 'outbox' : null;
  if (settings.twilio.active) return 'twilio';
  if (settings.sms_gateway.active) return 'gateway';
  return mode === 'dev' ? 'outbox' : null;
}

export interface Delivery {
  send(channel: Channel, settings: Settings, message: Message): Promise<DeliveryReport>;
  /** Closes the connections kept for sending (at shutdown). */
  close(): void;
}

/**
 * Tells an account's owner, at their verified email address, of something done with their factors
 * (a passkey added, a recovery code used, a restore asked for): a change they did not make is then
 * theirs to report. Returns whether it went out; a failure is logged, never the caller's error.
 */
export async function tellOwner(delivery: Delivery, settings: Settings, log: Logger, user: { email: string | null; email_verified: boolean }, message: { subject: string; text: string }): Promise<boolean> {
  if (!user.email || !user.email_verified) return false;
  try {
    await delivery.send('email', settings, { to: user.email, subject: message.subject, text: message.text });
    return true;
  } catch (error) {
    log.warn({ err: error instanceof Error ? error.message : String(error), subject: message.subject }, 'the account owner could not be told');
    return false;
  }
}

/**
 * Sends codes through the configured SMTP server and SMS provider. In dev mode, a channel with
 * nothing configured writes to the dev outbox (shown at /dev/outbox) so every method works with
 * nothing installed.
 */
export function createDelivery(db: Db, mode: Mode, log: Logger): Delivery {
  const mail = new MailPool();
  return {
    close: () => mail.close(),
    async send(channel, settings, message) {
      const provider = providerFor(channel, settings, mode);
      switch (provider) {
        case 'smtp':
          return { provider, answer: await mail.send(settings.smtp, message) };
        case 'twilio':
          return { provider, answer: await sendTwilioSms(settings.twilio, message) };
        case 'gateway':
          return { provider, answer: await sendGatewaySms(settings.sms_gateway, message) };
        case 'outbox':
          await db.insertInto('dev_outbox').values({ channel, recipient: message.to, subject: message.subject ?? null, body: message.text }).execute();
          // The text stays out of the log: it carries the code (logs redact codes, README "Operations").
          log.info({ channel, to: message.to }, 'dev outbox: message stored (see /dev/outbox)');
          return { provider, answer: 'stored in the dev outbox' };
        default:
          throw new Error(`no ${channel} delivery is configured`);
      }
    },
  };
}

/** In production, a code method that is switched on but cannot send is a configuration error, named at start-up. */
// Production runs the compiled tree (npm run cli needs the dev tools, which a production install lacks).
const PRODUCTION_CLI = 'node dist/src/cli.js';
const COMPOSE_HINT = '; with Docker Compose, run it as "docker compose run --rm tessera node dist/src/cli.js settings set …"';

/** What stops production from delivering the code methods that are switched on (empty: nothing). */
export function deliveryProblems(settings: Settings, mode: Mode): string[] {
  if (mode !== 'production') return [];
  const problems: string[] = [];
  if (settings.mfa.methods.email && !providerFor('email', settings, mode)) {
    problems.push(`email codes are switched on but no SMTP server is configured: run "${PRODUCTION_CLI} settings set smtp.host <host>" (and smtp.port, smtp.from, …) or "${PRODUCTION_CLI} settings set mfa.methods.email false"`);
  }
  if (settings.mfa.methods.sms && !providerFor('sms', settings, mode)) {
    problems.push(`SMS codes are switched on but no SMS provider is active: configure twilio.* or sms_gateway.* and set its "active" to true, or run "${PRODUCTION_CLI} settings set mfa.methods.sms false"`);
  }
  return problems;
}

/** All of them in one message, so one restart is enough to learn everything to fix. */
export function deliveryProblem(settings: Settings, mode: Mode): string | null {
  const problems = deliveryProblems(settings, mode);
  return problems.length ? `${problems.join('; and ')}${COMPOSE_HINT}` : null;
}
