import type { Context } from 'koa';
import { perform, ServiceError } from '../../service.js';
import { listKeysOp, rotateKeysOp, setSettingsOp, showSettingsOp, testDeliveryOp, type DeliveryTest } from '../../system.js';
import { listAuditOp, type AuditLine } from '../../audit-log.js';
import { SECRET_PATHS, valueAt as at } from '../../../settings/settings.js';
import { fillTemplate } from '../../../factors/delivery/types.js';
import { seeOther } from '../../../http/redirect.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';

/** One field of a settings form, named by its setting path. */
export interface SettingField {
  path: string;
  label: string;
  kind: 'text' | 'number' | 'bool' | 'secret' | 'select' | 'textarea' | 'lines' | 'statuses';
  options?: readonly string[];
  hint?: string;
}

interface SettingGroup {
  title: string;
  fields: SettingField[];
}

const MFA_FORM: SettingGroup[] = [
  {
    title: 'Methods',
    fields: [
      { path: 'mfa.methods.totp', label: 'Authenticator app (TOTP)', kind: 'bool' },
      { path: 'mfa.methods.email', label: 'Code by email', kind: 'bool' },
      { path: 'mfa.methods.sms', label: 'Code by SMS', kind: 'bool' },
      { path: 'mfa.methods.webauthn', label: 'Passkey or security key (WebAuthn)', kind: 'bool' },
      { path: 'mfa.methods.recovery', label: 'Recovery codes', kind: 'bool' },
      { path: 'mfa.appName', label: 'Name in messages and authenticator apps', kind: 'text' },
      { path: 'mfa.maxAgeSeconds', label: 'A second factor counts for (seconds)', kind: 'number', hint: 'Older, a client or policy that requires MFA asks again. Protected scopes have their own window.' },
    ],
  },
  {
    title: 'Codes by email and SMS',
    fields: [
      { path: 'mfa.otp.length', label: 'Digits', kind: 'number', hint: '4 to 10' },
      { path: 'mfa.otp.lifetimeSeconds', label: 'Valid for (seconds)', kind: 'number' },
      { path: 'mfa.otp.maxAttempts', label: 'Wrong attempts per code', kind: 'number' },
      { path: 'mfa.otp.resendCooldownSeconds', label: 'Wait before sending another (seconds)', kind: 'number' },
      { path: 'mfa.otp.perUserPerHour', label: 'Codes per user per hour', kind: 'number' },
      { path: 'mfa.otp.perDestinationPerHour', label: 'Codes per address or number per hour', kind: 'number' },
      { path: 'mfa.otp.perIpPerHour', label: 'Codes per client address per hour', kind: 'number' },
    ],
  },
  {
    title: 'Authenticator apps',
    fields: [
      { path: 'mfa.totp.driftStepsBefore', label: 'Accepted 30-second steps before now', kind: 'number' },
      { path: 'mfa.totp.driftStepsAfter', label: 'Accepted steps after now', kind: 'number' },
    ],
  },
  {
    title: 'Message templates',
    fields: [
      { path: 'mfa.templates.emailSubject', label: 'Email subject', kind: 'text', hint: '{app}, {code} and {minutes} are filled in' },
      { path: 'mfa.templates.emailBody', label: 'Email text', kind: 'textarea', hint: 'Must contain {code}' },
      { path: 'mfa.templates.sms', label: 'SMS text', kind: 'textarea', hint: 'Must contain {code}' },
    ],
  },
];

const DELIVERY_FORMS: Record<'smtp' | 'twilio' | 'sms_gateway', SettingGroup> = {
  smtp: {
    title: 'Email (SMTP)',
    fields: [
      { path: 'smtp.host', label: 'Host', kind: 'text', hint: 'Empty: no email delivery (dev mode uses the dev outbox)' },
      { path: 'smtp.port', label: 'Port', kind: 'number' },
      { path: 'smtp.security', label: 'Security', kind: 'select', options: ['starttls', 'tls', 'none'], hint: 'tls: from the start (465); starttls: upgrade required; none: local relays only' },
      { path: 'smtp.user', label: 'User', kind: 'text' },
      { path: 'smtp.password', label: 'Password', kind: 'secret' },
      { path: 'smtp.from', label: 'From', kind: 'text' },
      { path: 'smtp.timeoutSeconds', label: 'Timeout (seconds)', kind: 'number' },
    ],
  },
  twilio: {
    title: 'SMS: Twilio',
    fields: [
      { path: 'twilio.active', label: 'Send SMS through Twilio', kind: 'bool' },
      { path: 'twilio.accountSid', label: 'Account SID', kind: 'text' },
      { path: 'twilio.authToken', label: 'Auth token', kind: 'secret' },
      { path: 'twilio.from', label: 'From (number or sender ID)', kind: 'text' },
      { path: 'twilio.messagingServiceSid', label: 'Messaging service SID (instead of From)', kind: 'text' },
      { path: 'twilio.apiBaseUrl', label: 'API base URL', kind: 'text', hint: 'Change only for a regional edge' },
      { path: 'twilio.timeoutSeconds', label: 'Timeout (seconds)', kind: 'number' },
    ],
  },
  sms_gateway: {
    title: 'SMS: HTTP gateway',
    fields: [
      { path: 'sms_gateway.active', label: 'Send SMS through this gateway (when Twilio is off)', kind: 'bool' },
      { path: 'sms_gateway.url', label: 'URL', kind: 'text' },
      { path: 'sms_gateway.method', label: 'Method', kind: 'select', options: ['POST', 'GET'] },
      { path: 'sms_gateway.contentType', label: 'Body', kind: 'select', options: ['form', 'json'] },
      { path: 'sms_gateway.template', label: 'Request template', kind: 'textarea', hint: '{to}, {message} and {sender} are filled in, escaped for the body' },
      { path: 'sms_gateway.senderId', label: 'Sender ID', kind: 'text' },
      { path: 'sms_gateway.successCriteria.statuses', label: 'Success statuses', kind: 'statuses', hint: 'Comma-separated; empty: any 2xx' },
      { path: 'sms_gateway.successCriteria.text', label: 'Success text (one a line; any matches)', kind: 'lines' },
      { path: 'sms_gateway.failureCriteria.statuses', label: 'Failure statuses', kind: 'statuses' },
      { path: 'sms_gateway.failureCriteria.text', label: 'Failure text (one a line)', kind: 'lines' },
      { path: 'sms_gateway.username', label: 'Basic auth user', kind: 'text' },
      { path: 'sms_gateway.password', label: 'Basic auth password', kind: 'secret' },
      { path: 'sms_gateway.apiKeyHeader', label: 'API key header', kind: 'text' },
      { path: 'sms_gateway.apiKey', label: 'API key', kind: 'secret' },
      { path: 'sms_gateway.proxy', label: 'Proxy URL', kind: 'text' },
      { path: 'sms_gateway.timeoutSeconds', label: 'Timeout (seconds)', kind: 'number' },
    ],
  },
};


/** What a form field shows: the stored value written for the input (secrets never). */
export function shown(field: SettingField, value: unknown): string {
  if (field.kind === 'secret') return '';
  if (field.kind === 'bool') return value ? 'on' : '';
  if (Array.isArray(value)) return value.join(field.kind === 'statuses' ? ', ' : '\n');
  return value === undefined || value === null ? '' : String(value);
}

/**
 * A settings form as values by path: numbers checked, lists split, an empty optional field reset,
 * a blank secret kept (secrets are never shown back) unless "clear" is ticked.
 */
export function readSettingsForm(fields: SettingField[], form: URLSearchParams): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const field of fields) {
    const raw = (form.get(field.path) ?? '').trim();
    switch (field.kind) {
      case 'bool':
        values[field.path] = form.has(field.path);
        break;
      case 'number':
        if (!/^\d{1,9}$/.test(raw)) throw new ServiceError('must be a whole number', field.path);
        values[field.path] = Number(raw);
        break;
      case 'secret':
        if (form.has(`${field.path}.clear`)) values[field.path] = null;
        else if (raw) values[field.path] = raw;
        break;
      case 'lines':
        values[field.path] = raw.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
        break;
      case 'statuses': {
        const parts = raw.split(/[\s,]+/).filter(Boolean);
        const bad = parts.find((p) => !/^\d{3}$/.test(p));
        if (bad) throw new ServiceError(`"${bad.slice(0, 20)}" is not an HTTP status`, field.path);
        values[field.path] = parts.map(Number);
        break;
      }
      default:
        values[field.path] = raw === '' ? null : (form.get(field.path) ?? '').replace(/\r\n/g, '\n');
    }
  }
  return values;
}

/** The server each delivery section talks to: its stored secrets belong to it. */
const ENDPOINTS = { smtp: 'smtp.host', twilio: 'twilio.apiBaseUrl', sms_gateway: 'sms_gateway.url' } as const;

/**
 * A stored secret goes only to the server it was typed for: pointed elsewhere (and then sent a
 * test message), it would be handed to that server. When the form moves `endpoint` and leaves a
 * stored secret blank, the secret is forgotten (typed again for the new server). True if one was.
 */
export function forgetSecretsOnMove(fields: SettingField[], endpoint: string, values: Record<string, unknown>, stored: Record<string, unknown>): boolean {
  if (values[endpoint] == null || values[endpoint] === at(stored, endpoint)) return false;
  let forgotten = false;
  for (const field of fields) {
    if (field.kind === 'secret' && values[field.path] === undefined && at(stored, field.path)) {
      values[field.path] = null;
      forgotten = true;
    }
  }
  return forgotten;
}

const CSV_MAX_ROWS = 100_000;

/** One CSV cell; a leading = + - @ is quoted away so a spreadsheet never runs it as a formula. */
function csvCell(value: unknown): string {
  let text = value === null || value === undefined ? '' : value instanceof Date ? value.toISOString() : typeof value === 'object' ? JSON.stringify(value) : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n']/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** MFA settings, delivery (with test messages), signing keys and the audit log. */
export function settingsPages(c: Console, runningKeys: readonly { kid: string; alg: string }[]): void {
  const { pages, show, change } = c;

  const mfaPage = async (ctx: Context, redisplay?: Redisplay, preview?: Record<string, string>) => {
    const settings = await perform(consoleOf(ctx).service, showSettingsOp, {});
    show(ctx, 'settings', 'MFA settings', {
      groups: MFA_FORM, settings, at, shown, action: '/admin/mfa', redisplay, preview: preview ?? null, canPreview: true,
    });
  };
  pages.get('/mfa', (ctx) => mfaPage(ctx));
  change('/mfa', {
    label: 'Change the MFA settings',
    sensitive: (f) => f.get('action') !== 'preview',
    redisplay: (ctx, r) => mfaPage(ctx, r),
    async run(ctx, f, { service }) {
      const values = readSettingsForm(MFA_FORM.flatMap((g) => g.fields), f);
      if (f.get('action') === 'preview') {
        const code = '1234567890'.slice(0, Number(values['mfa.otp.length']) || 6);
        const fill = (path: string) => fillTemplate(String(values[path] ?? ''), { code, app: String(values['mfa.appName'] ?? 'Tessera'), minutes: String(Math.round(Number(values['mfa.otp.lifetimeSeconds']) / 60)) });
        await mfaPage(ctx, { values: f, problem: null }, {
          emailSubject: fill('mfa.templates.emailSubject'), emailBody: fill('mfa.templates.emailBody'), sms: fill('mfa.templates.sms'),
        });
        ctx.status = 200;
        return;
      }
      await perform(service, setSettingsOp, { values });
      seeOther(ctx, '/admin/mfa?done=saved');
    },
  });

  const deliveryPage = async (ctx: Context, redisplay?: Redisplay, test?: { provider: string; result: DeliveryTest }) => {
    const settings = await perform(consoleOf(ctx).service, showSettingsOp, {});
    show(ctx, 'delivery', 'Delivery', { forms: DELIVERY_FORMS, settings, at, shown, secretPaths: [...SECRET_PATHS], redisplay, test: test ?? null });
  };
  pages.get('/delivery', (ctx) => deliveryPage(ctx));
  for (const [section, form] of Object.entries(DELIVERY_FORMS)) {
    change(`/delivery/${section}`, {
      label: `Change the ${form.title} settings`,
      sensitive: true,
      redisplay: deliveryPage,
      async run(ctx, f, { service }) {
        const values = readSettingsForm(form.fields, f);
        const forgotten = forgetSecretsOnMove(form.fields, ENDPOINTS[section as keyof typeof ENDPOINTS], values, await perform(service, showSettingsOp, {}));
        await perform(service, setSettingsOp, { values });
        seeOther(ctx, `/admin/delivery?done=${forgotten ? 'saved-secrets-forgotten' : 'saved'}`);
      },
    });
  }
  change('/delivery/test', {
    label: 'Send a test message',
    redisplay: deliveryPage,
    async run(ctx, f, { service }) {
      const provider = f.get('provider');
      const result = await perform(service, testDeliveryOp, { provider: provider as 'smtp', to: (f.get('to') ?? '').trim() });
      await deliveryPage(ctx, undefined, { provider: provider!, result });
    },
  });

  pages.get('/keys', async (ctx) => {
    const keys = await perform(consoleOf(ctx).service, listKeysOp, {});
    // This instance signs with the first key of each algorithm it loaded, and publishes all of them.
    const signing = new Set([...new Map([...runningKeys].reverse().map((k) => [k.alg, k.kid])).values()]);
    const here = (kid: string, stored: string) =>
      signing.has(kid) ? 'signs' : runningKeys.some((k) => k.kid === kid) ? 'publishes' : stored === 'active' ? 'after its restart' : '';
    show(ctx, 'keys', 'Signing keys', { keys, here });
  });
  change('/keys/rotate', {
    label: 'Rotate the signing keys',
    sensitive: true,
    async run(ctx, _f, { service }) {
      await perform(service, rotateKeysOp, {});
      seeOther(ctx, '/admin/keys?done=rotated');
    },
  });

  /** The audit filters as typed in the page's query string. */
  const auditFilters = (ctx: Context) => {
    const q = (name: string) => (typeof ctx.query[name] === 'string' ? (ctx.query[name] as string).trim() : '');
    const local = (v: string) => (v && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(v) ? `${v}Z` : v);
    return { user: q('user'), type: q('type'), client: q('client'), since: q('since'), until: q('until'), before: q('before'), sinceIso: local(q('since')), untilIso: local(q('until')) };
  };
  const auditInput = (filters: ReturnType<typeof auditFilters>, limit: number) => ({
    limit,
    ...(filters.user ? { user: filters.user } : {}),
    ...(filters.type ? { type: filters.type } : {}),
    ...(filters.client ? { client: filters.client } : {}),
    ...(filters.sinceIso ? { since: filters.sinceIso } : {}),
    ...(filters.untilIso ? { until: filters.untilIso } : {}),
    ...(filters.before ? { before: filters.before } : {}),
  });

  pages.get('/audit', async (ctx) => {
    const filters = auditFilters(ctx);
    const pageSize = 50;
    let events: AuditLine[] = [];
    let problem: { field?: string; message: string } | null = null;
    try {
      events = await perform(consoleOf(ctx).service, listAuditOp, auditInput(filters, pageSize + 1));
    } catch (error) {
      if (!(error instanceof ServiceError)) throw error;
      problem = { message: error.message, ...(error.field ? { field: error.field } : {}) };
    }
    const more = events.length > pageSize;
    events = events.slice(0, pageSize);
    const query = new URLSearchParams(Object.entries({ user: filters.user, type: filters.type, client: filters.client, since: filters.since, until: filters.until }).filter(([, v]) => v));
    show(ctx, 'audit', 'Audit log', {
      events, filters, more, query: query.toString(),
      nextBefore: more ? events[events.length - 1]!.id : null,
      redisplay: problem ? { values: new URLSearchParams(query), problem } : undefined,
    }, problem ? 400 : 200);
  });

  pages.get('/audit.csv', async (ctx) => {
    const filters = auditFilters(ctx);
    const { service } = consoleOf(ctx);
    const rows: string[] = [['time', 'type', 'actor', 'subject', 'subject_name', 'client', 'ip', 'details'].join(',')];
    let before = filters.before;
    for (let total = 0; total < CSV_MAX_ROWS; ) {
      const batch = await perform(service, listAuditOp, auditInput({ ...filters, before }, 1000)).catch((error: unknown) => {
        if (error instanceof ServiceError) return null;
        throw error;
      });
      if (!batch) break;
      for (const e of batch) rows.push([e.at, e.type, e.actor, e.subject, e.subjectName, e.clientId, e.ip, e.details].map(csvCell).join(','));
      total += batch.length;
      if (batch.length < 1000) break;
      before = batch[batch.length - 1]!.id;
    }
    ctx.type = 'text/csv; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="tessera-audit-${new Date().toISOString().slice(0, 10)}.csv"`);
    ctx.body = `${rows.join('\r\n')}\r\n`;
  });
}
