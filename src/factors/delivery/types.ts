/** Why a message could not be sent: for the audit log and the operator, never shown verbatim to the user. */
export class DeliveryError extends Error {
  constructor(
    readonly channel: 'email' | 'sms',
    readonly provider: string,
    message: string,
    /** What the server answered, when it answered (for the console's test message). */
    readonly answer?: string,
  ) {
    super(message);
  }
}

export interface Message {
  to: string;
  subject?: string;
  text: string;
}

/** Fills {code}, {minutes}, {app} (and any other named value) into a template. */
export function fillTemplate(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole);
}

/** What the provider answered when it accepted a message (SMTP's reply line, Twilio's message SID, the gateway's status and body). */
export interface DeliveryReport {
  provider: string;
  answer: string;
}
