import { sql } from 'kysely';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { DomainError } from '../domain-error.js';
import { DEFAULT_ACCOUNT_ACTIONS, PORTAL_ACTIONS, SELF_TOKEN_TYPES } from '../portal/actions.js';

/**
 * System settings, stored in the database so that every instance sees a change at once
 * (changed with the CLI now, the admin console later). Each section has a schema and defaults;
 * secrets inside them are sealed at rest.
 */
export const FACTORS = ['email', 'sms', 'totp', 'webauthn', 'recovery'] as const;
export type FactorId = (typeof FACTORS)[number];

const template = z.string().min(1).max(2000);
// A message that does not carry the code would make every sign-in by that channel impossible.
const codeTemplate = template.refine((t) => t.includes('{code}'), 'must contain {code}');

const mfaSchema = z.object({
  appName: z.string().min(1).max(100).default('Tessera'),
  methods: z
    .object({ email: z.boolean().default(true), sms: z.boolean().default(true), totp: z.boolean().default(true), webauthn: z.boolean().default(true), recovery: z.boolean().default(true) })
    .default({ email: true, sms: true, totp: true, webauthn: true, recovery: true }),
  /**
   * How old a second factor may be and still satisfy a client's, a policy's or acr_values' demand
   * for MFA; older, the session steps up again. Protected scopes have their own window.
   */
  maxAgeSeconds: z.number().int().min(0).max(30 * 86_400).default(12 * 3600),
  otp: z
    .object({
      length: z.number().int().min(4).max(10).default(6),
      lifetimeSeconds: z.number().int().min(30).max(3600).default(300),
      maxAttempts: z.number().int().min(1).max(20).default(5),
      resendCooldownSeconds: z.number().int().min(0).max(3600).default(30),
      perUserPerHour: z.number().int().min(1).max(1000).default(10),
      perDestinationPerHour: z.number().int().min(1).max(1000).default(10),
      perIpPerHour: z.number().int().min(1).max(100000).default(30),
    })
    .default({ length: 6, lifetimeSeconds: 300, maxAttempts: 5, resendCooldownSeconds: 30, perUserPerHour: 10, perDestinationPerHour: 10, perIpPerHour: 30 }),
  totp: z
    .object({
      driftStepsBefore: z.number().int().min(0).max(10).default(1),
      driftStepsAfter: z.number().int().min(0).max(10).default(1),
    })
    .default({ driftStepsBefore: 1, driftStepsAfter: 1 }),
  templates: z
    .object({
      emailSubject: template.default('Your {app} sign-in code'),
      emailBody: codeTemplate.default('Your {app} sign-in code is {code}.\n\nIt expires in {minutes} minutes. If you did not try to sign in, ignore this message and consider changing your password.'),
      sms: codeTemplate.default('{code} is your {app} sign-in code. It expires in {minutes} min.'),
    })
    .default({
      emailSubject: 'Your {app} sign-in code',
      emailBody: 'Your {app} sign-in code is {code}.\n\nIt expires in {minutes} minutes. If you did not try to sign in, ignore this message and consider changing your password.',
      sms: '{code} is your {app} sign-in code. It expires in {minutes} min.',
    }),
});

const smtpSchema = z.object({
  host: z.string().min(1).max(255).optional(),
  port: z.number().int().min(1).max(65535).default(587),
  /** "tls": TLS from the start (465); "starttls": upgrade required; "none": plain (local relays only). */
  security: z.enum(['tls', 'starttls', 'none']).default('starttls'),
  user: z.string().max(255).optional(),
  password: z.string().max(1024).optional(),
  from: z.string().min(3).max(255).default('Tessera <no-reply@localhost>'),
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
});

const twilioSchema = z
  .object({
  active: z.boolean().default(false),
  accountSid: z.string().regex(/^AC[0-9a-fA-F]{32}$/, 'an account SID is AC followed by 32 hex digits').optional(),
  authToken: z.string().max(256).optional(),
  from: z.string().regex(/^\+[1-9]\d{6,14}$|^[A-Za-z0-9 ]{1,11}$/, 'a phone number in E.164 or an alphanumeric sender ID').optional(),
  messagingServiceSid: z.string().regex(/^MG[0-9a-fA-F]{32}$/, 'a messaging service SID is MG followed by 32 hex digits').optional(),
  /** Twilio's API base; change only for a regional edge or a test double. */
  apiBaseUrl: z.string().url().default('https://api.twilio.com'),
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
  })
  // Switched on, it must be able to send: set its credentials and sender first.
  .superRefine((t, ctx) => {
    if (!t.active) return;
    const missing = [!t.accountSid && 'accountSid', !t.authToken && 'authToken', !t.from && !t.messagingServiceSid && 'from (or messagingServiceSid)'].filter(Boolean);
    if (missing.length) ctx.addIssue({ code: 'custom', path: ['active'], message: `set twilio.${missing.join(', twilio.')} before switching Twilio on` });
  });

const criteriaSchema = z
  .object({ text: z.array(z.string().min(1).max(500)).default([]), statuses: z.array(z.number().int().min(100).max(599)).default([]) })
  .default({ text: [], statuses: [] });

const gatewaySchema = z
  .object({
  active: z.boolean().default(false),
  url: z.string().url().optional(),
  method: z.enum(['GET', 'POST']).default('POST'),
  senderId: z.string().max(64).default(''),
  /** The body (POST) or query string (GET), with {to}, {message} and {sender}. */
  template: z.string().max(4000).refine((t) => t.includes('{message}'), 'must contain {message}').default('to={to}&from={sender}&text={message}'),
  contentType: z.enum(['form', 'json']).default('form'),
  successCriteria: criteriaSchema,
  failureCriteria: criteriaSchema,
  username: z.string().max(255).optional(),
  password: z.string().max(1024).optional(),
  apiKeyHeader: z.string().max(100).optional(),
  apiKey: z.string().max(1024).optional(),
  proxy: z.string().url().optional(),
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
  })
  .superRefine((g, ctx) => {
    if (g.active && !g.url) ctx.addIssue({ code: 'custom', path: ['active'], message: 'set sms_gateway.url before switching the gateway on' });
  });

/** Manager approval: the profile used when no approval policy exists, and what happens when policies exist but none matches. */
const approvalSchema = z.object({
  defaultProfile: z.string().min(1).max(100).optional(),
  /** deny: the user cannot sign in where approval applies (the seed's rule); default: the default profile applies. */
  unmatched: z.enum(['deny', 'default']).default('deny'),
});

const ldapAttributes = z
  .object({
    username: z.string().min(1).max(100).default('uid'),
    email: z.string().min(1).max(100).default('mail'),
    phone: z.string().min(1).max(100).default('mobile'),
    manager: z.string().min(1).max(100).default('manager'),
    givenName: z.string().min(1).max(100).default('givenName'),
    familyName: z.string().min(1).max(100).default('sn'),
    groups: z.string().min(1).max(100).default('memberOf'),
  })
  .default({ username: 'uid', email: 'mail', phone: 'mobile', manager: 'manager', givenName: 'givenName', familyName: 'sn', groups: 'memberOf' });

/** An LDAP directory as a source of users: on when its URL, service account and base DN are set (in any order). */
const ldapSchema = z
  .object({
    url: z.string().regex(/^ldaps?:\/\/[^\s]+$/, 'an ldap:// or ldaps:// URL').max(500).optional(),
    bindDn: z.string().max(500).optional(),
    bindPassword: z.string().max(1024).optional(),
    baseDn: z.string().max(500).optional(),
    userFilter: z.string().min(3).max(500).refine((f) => f.includes('{username}'), 'must contain {username}').default('(uid={username})'),
    attributes: ldapAttributes,
    /** Upgrade an ldap:// connection with StartTLS before binding. */
    startTls: z.boolean().default(false),
    /** Check the server's certificate (off only for a test directory). */
    tlsVerify: z.boolean().default(true),
    /** The CA that signed the directory's certificate (PEM), when it is not one the system trusts. */
    caCertificate: z.string().max(20_000).refine((v) => v.includes('-----BEGIN CERTIFICATE-----'), 'a PEM certificate (-----BEGIN CERTIFICATE-----)').optional(),
    timeoutSeconds: z.number().int().min(1).max(60).default(5),
  });

/** The account portal every user has at /account: its actions in order, the token types it registers, who hears of restore requests. */
const accountSchema = z.object({
  actions: z
    .array(z.enum(PORTAL_ACTIONS))
    .refine((list) => new Set(list).size === list.length, 'each action once')
    .default(DEFAULT_ACCOUNT_ACTIONS),
  tokenTypes: z.array(z.enum(SELF_TOKEN_TYPES)).min(1).default(['totp']),
  /** Email every administrator with a verified address when a user asks to restore access. */
  notifyRestoreRequests: z.boolean().default(true),
});

export const SECTIONS = { mfa: mfaSchema, smtp: smtpSchema, twilio: twilioSchema, sms_gateway: gatewaySchema, approval: approvalSchema, ldap: ldapSchema, account: accountSchema } as const;
export type SectionName = keyof typeof SECTIONS;

/** Settings paths whose values are sealed at rest and masked when shown. */
export const SECRET_PATHS = new Set(['smtp.password', 'twilio.authToken', 'sms_gateway.password', 'sms_gateway.apiKey', 'ldap.bindPassword']);

export type MfaSettings = z.infer<typeof mfaSchema>;
export type SmtpSettings = z.infer<typeof smtpSchema>;
export type TwilioSettings = z.infer<typeof twilioSchema>;
export type GatewaySettings = z.infer<typeof gatewaySchema>;
export type ApprovalSettings = z.infer<typeof approvalSchema>;
export type LdapSettings = z.infer<typeof ldapSchema>;
export type AccountSettings = z.infer<typeof accountSchema>;

export interface Settings {
  mfa: MfaSettings;
  smtp: SmtpSettings;
  twilio: TwilioSettings;
  sms_gateway: GatewaySettings;
  approval: ApprovalSettings;
  ldap: LdapSettings;
  account: AccountSettings;
}

export class SettingsError extends DomainError {}

function sealPurpose(path: string): string {
  return `setting:${path}`;
}

function transformSecrets(section: string, value: Record<string, unknown>, fn: (v: string, path: string) => string): Record<string, unknown> {
  const out = { ...value };
  for (const path of SECRET_PATHS) {
    const [s, key] = path.split('.') as [string, string];
    if (s === section && typeof out[key] === 'string') out[key] = fn(out[key] as string, path);
  }
  return out;
}

/**
 * Every login step reads the settings, so each process keeps them briefly. A change made in this
 * process is seen at once; one made elsewhere (the CLI, another instance) within this time.
 */
export const SETTINGS_CACHE_MS = 5000;
const cached = new WeakMap<Db, { settings: Settings; until: number }>();

export async function loadSettings(db: Db, box: SecretBox): Promise<Settings> {
  const hit = cached.get(db);
  if (hit && hit.until > Date.now()) return hit.settings;
  const settings = await readSettings(db, box);
  cached.set(db, { settings, until: Date.now() + SETTINGS_CACHE_MS });
  return settings;
}

async function readSettings(db: Db, box: SecretBox): Promise<Settings> {
  const rows = await db.selectFrom('settings').select(['section', 'value']).execute();
  const stored = new Map(rows.map((r) => [r.section, r.value as Record<string, unknown>]));
  const result: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(SECTIONS)) {
    const raw = transformSecrets(name, stored.get(name) ?? {}, (v, path) => box.open(v, sealPurpose(path)));
    result[name] = schema.parse(raw);
  }
  return result as unknown as Settings;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  while (current instanceof z.ZodDefault || current instanceof z.ZodOptional) current = current.unwrap() as z.ZodType;
  return current;
}

/** The schema of one setting, by its dotted path ("mfa.otp.length"); undefined when there is no such setting. */
function settingSchema(path: string): z.ZodType | undefined {
  const [section, ...keys] = path.split('.');
  if (!section || !Object.hasOwn(SECTIONS, section) || keys.length === 0) return undefined;
  let current: z.ZodType = SECTIONS[section as SectionName];
  for (const key of keys) {
    current = unwrap(current);
    if (!(current instanceof z.ZodObject)) return undefined;
    const shape = current.shape as Record<string, z.ZodType>;
    if (!Object.hasOwn(shape, key)) return undefined;
    current = shape[key]!;
  }
  return current;
}

/**
 * Reads a value typed at the command line for a setting: text for a text setting (a password of
 * digits stays text), JSON for the others (numbers, booleans, lists, objects).
 */
export function parseSettingValue(path: string, text: string): unknown {
  const schema = settingSchema(path);
  const leaf = schema && unwrap(schema);
  if (leaf instanceof z.ZodString || leaf instanceof z.ZodEnum) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Sets one value by its dotted path ("mfa.otp.length", "smtp.host"); the whole section is validated,
 * then `accept` sees all the settings as they would be and may refuse the change (SettingsError).
 */
export async function setSetting(db: Db, box: SecretBox, path: string, value: unknown, accept?: (before: Settings, after: Settings) => void): Promise<void> {
  await setSettings(db, box, { [path]: value }, accept);
}

/**
 * Sets several values of one section at once (a console form), all or none: by dotted path, null
 * meaning back to the default. A refused value names its path as the error's field.
 */
export async function setSettings(db: Db, box: SecretBox, values: Record<string, unknown>, accept?: (before: Settings, after: Settings) => void): Promise<void> {
  const paths = Object.keys(values);
  const section = paths[0]?.split('.')[0];
  for (const path of paths) {
    const [s, ...rest] = path.split('.');
    if (!s || !Object.hasOwn(SECTIONS, s) || rest.length === 0) {
      throw new SettingsError(`unknown setting "${path}" (sections: ${Object.keys(SECTIONS).join(', ')})`, path);
    }
    if (s !== section) throw new SettingsError('settings of one section at a time', path);
    // The schema drops unknown keys: a typo must be an error, not a value silently thrown away.
    if (!settingSchema(path)) throw new SettingsError(`unknown setting "${path}"`, path);
  }
  if (!section) return;
  const schema = SECTIONS[section as SectionName];
  await db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('settings').select('value').where('section', '=', section).forUpdate().executeTakeFirst();
    const plain = transformSecrets(section, (row?.value as Record<string, unknown>) ?? {}, (v, p) => box.open(v, sealPurpose(p)));
    for (const [path, value] of Object.entries(values)) {
      const rest = path.split('.').slice(1);
      let target: Record<string, unknown> = plain;
      for (const key of rest.slice(0, -1)) {
        const next = target[key];
        target[key] = typeof next === 'object' && next !== null && !Array.isArray(next) ? { ...(next as object) } : {};
        target = target[key] as Record<string, unknown>;
      }
      const last = rest[rest.length - 1]!;
      if (value === null) delete target[last];
      else target[last] = value;
    }
    const parsed = schema.safeParse(plain);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = `${section}.${issue.path.join('.')}`;
      throw new SettingsError(`invalid ${where}: ${issue.message}`, where);
    }
    if (accept) {
      const before = await readSettings(tx, box);
      accept(before, { ...before, [section]: parsed.data });
    }
    const sealed = transformSecrets(section, parsed.data as Record<string, unknown>, (v, p) => box.seal(v, sealPurpose(p)));
    await tx
      .insertInto('settings')
      .values({ section, value: JSON.stringify(sealed) })
      .onConflict((oc) => oc.column('section').doUpdateSet({ value: JSON.stringify(sealed), updated_at: sql`now()` }))
      .execute();
  });
  cached.delete(db);
}

/** A setting's value by its dotted path ("mfa.otp.length"). */
export function valueAt(settings: Settings | Record<string, unknown>, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), settings);
}

/** The settings with secrets masked, for display. */
export function maskSecrets(settings: Settings): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(settings)) {
    out[name] = transformSecrets(name, value as Record<string, unknown>, () => '********');
  }
  return out;
}
