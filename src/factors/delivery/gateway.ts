import { ProxyAgent, fetch as undiciFetch, type Dispatcher } from 'undici';
import type { GatewaySettings } from '../../settings/settings.js';
import { DeliveryError, type Message } from './types.js';

const proxies = new Map<string, Dispatcher>();
function proxyFor(url: string): Dispatcher {
  let agent = proxies.get(url);
  if (!agent) {
    agent = new ProxyAgent(url);
    proxies.set(url, agent);
  }
  return agent;
}

/** Fills the request template, escaping each value for where it goes (form/query encoding or a JSON string). */
export function renderGatewayRequest(settings: GatewaySettings, message: Message): { url: string; body: string | null; contentType: string | null } {
  const values: Record<string, string> = { to: message.to, message: message.text, sender: settings.senderId };
  const escape = settings.method === 'POST' && settings.contentType === 'json'
    ? (v: string) => JSON.stringify(v).slice(1, -1)
    : (v: string) => encodeURIComponent(v);
  const filled = settings.template.replace(/\{(to|message|sender)\}/g, (_w, name: string) => escape(values[name]!));
  if (settings.method === 'GET') {
    const url = new URL(settings.url!);
    const extra = new URLSearchParams(filled);
    for (const [k, v] of extra) url.searchParams.append(k, v);
    return { url: url.href, body: null, contentType: null };
  }
  return { url: settings.url!, body: filled, contentType: settings.contentType === 'json' ? 'application/json' : 'application/x-www-form-urlencoded' };
}

/** Judges the gateway's answer by the operator's success and failure criteria (text and/or status codes). */
export function judgeGatewayResponse(settings: GatewaySettings, status: number, body: string): string | null {
  const { successCriteria: ok, failureCriteria: bad } = settings;
  if (bad.statuses.includes(status)) return `status ${status} is a failure criterion`;
  const badText = bad.text.find((t) => body.includes(t));
  if (badText) return `response contains the failure text "${badText}"`;
  if (ok.statuses.length ? !ok.statuses.includes(status) : status < 200 || status > 299) return `unexpected status ${status}`;
  if (ok.text.length && !ok.text.some((t) => body.includes(t))) return 'response lacks the success text';
  return null;
}

/** Sends an SMS through any HTTP gateway described by the settings (PAM/MFA products' "SMS gateway"). */
/** Returns the gateway's status and body, once its success criteria matched. */
export async function sendGatewaySms(settings: GatewaySettings, message: Message): Promise<string> {
  if (!settings.url) throw new DeliveryError('sms', 'gateway', 'no SMS gateway URL is configured');
  const request = renderGatewayRequest(settings, message);
  const headers: Record<string, string> = { accept: '*/*' };
  if (request.contentType) headers['content-type'] = request.contentType;
  if (settings.username) headers.authorization = `Basic ${Buffer.from(`${settings.username}:${settings.password ?? ''}`).toString('base64')}`;
  if (settings.apiKeyHeader && settings.apiKey) headers[settings.apiKeyHeader.toLowerCase()] = settings.apiKey;
  let status: number;
  let body: string;
  try {
    const response = await undiciFetch(request.url, {
      method: settings.method,
      headers,
      body: request.body,
      redirect: 'error',
      signal: AbortSignal.timeout(settings.timeoutSeconds * 1000),
      ...(settings.proxy ? { dispatcher: proxyFor(settings.proxy) } : {}),
    });
    status = response.status;
    body = (await response.text()).slice(0, 10_000);
  } catch (error) {
    const reason = error instanceof Error && error.name === 'TimeoutError' ? `timed out after ${settings.timeoutSeconds} s` : error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
    throw new DeliveryError('sms', 'gateway', `SMS gateway unreachable: ${reason}`);
  }
  const failure = judgeGatewayResponse(settings, status, body);
  const answer = `HTTP ${status}${body ? `: ${body.slice(0, 500)}` : ''}`;
  if (failure) throw new DeliveryError('sms', 'gateway', `SMS gateway refused the message: ${failure}`, answer);
  return answer;
}
