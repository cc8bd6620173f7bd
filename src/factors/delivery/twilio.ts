import type { TwilioSettings } from '../../settings/settings.js';
import { DeliveryError, type Message } from './types.js';

/** Sends an SMS through Twilio's Messages API; returns what Twilio said of the accepted message (its SID and status). */
export async function sendTwilioSms(settings: TwilioSettings, message: Message): Promise<string> {
  if (!settings.accountSid || !settings.authToken) throw new DeliveryError('sms', 'twilio', 'Twilio account SID and auth token are not configured');
  if (!settings.from && !settings.messagingServiceSid) throw new DeliveryError('sms', 'twilio', 'Twilio needs a from number or a messaging service SID');
  // Loaded on first use: the SDK is large (about 20 MiB resident) and most deployments never send through it.
  const { default: twilio } = await import('twilio');
  const client = twilio(settings.accountSid, settings.authToken, { timeout: settings.timeoutSeconds * 1000, autoRetry: false });
  client.api.baseUrl = settings.apiBaseUrl;
  try {
    const sent = await client.messages.create({
      to: message.to,
      body: message.text,
      ...(settings.messagingServiceSid ? { messagingServiceSid: settings.messagingServiceSid } : { from: settings.from! }),
    });
    return `message ${sent.sid} ${sent.status}`;
  } catch (error) {
    const e = error as { status?: number; code?: number; message?: string };
    const answer = e.status ? `HTTP ${e.status}${e.code ? `, code ${e.code}` : ''}: ${e.message ?? ''}` : undefined;
    throw new DeliveryError('sms', 'twilio', `Twilio refused the message${e.status ? ` (HTTP ${e.status}${e.code ? `, code ${e.code}` : ''})` : ''}: ${e.message ?? String(error)}`, answer);
  }
}
