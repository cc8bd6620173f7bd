import { sql } from 'kysely';
import { z } from 'zod';
import { isUniqueViolation, type Db } from '../db/index.js';
import type { ApprovalPolicy, ApprovalProfile } from '../db/schema.js';
import { DomainError, firstIssue } from '../domain-error.js';
import { E164_PATTERN, EMAIL_PATTERN } from '../directory/users.js';
import { FACTORS } from '../settings/settings.js';

export class ApprovalError extends DomainError {}

/** Placeholders a manager's message may use. */
export const MESSAGE_PLACEHOLDERS = ['{name}', '{user}', '{app}', '{time}', '{ip}', '{device}', '{link}', '{minutes}'] as const;

export const DEFAULT_MESSAGES = {
  approve: '{name} is signing in to {app} from {ip} at {time}. Approve or reject the sign-in: {link} (the link works for {minutes} min).',
  inform: '{name} is signing in to {app} from {ip} at {time}.',
} as const;

/** A message or subject may use only the placeholders Tessera fills. */
const placeholdersKnown = (text: string) => [...text.matchAll(/\{[^{}\s]*\}/g)].every((m) => (MESSAGE_PLACEHOLDERS as readonly string[]).includes(m[0]));
const PLACEHOLDER_PROBLEM = `uses a placeholder Tessera does not fill (it fills ${MESSAGE_PLACEHOLDERS.join(' ')})`;

const recipient = z
  .string()
  .max(254)
  .refine((v) => E164_PATTERN.test(v) || EMAIL_PATTERN.test(v), 'an email address or a phone number in E.164 form (+15555550100)');

export const profileInputSchema = z
  .object({
    name: z.string().regex(/^[\p{L}\p{N} ._-]{1,100}$/u, 'a profile name is 1-100 letters, digits, spaces or . _ -'),
    mode: z.enum(['inform', 'approve'], 'must be inform or approve'),
    /** The public address links are built on; null: the issuer. */
    baseUrl: z.string().url().max(500).refine((u) => /^https?:\/\//.test(u) && !u.endsWith('/'), 'an http(s) URL without a trailing slash').nullable().default(null),
    message: z.string().min(1).max(1000).refine(placeholdersKnown, PLACEHOLDER_PROBLEM).nullable().default(null),
    linkMinutes: z.number().int('must be a whole number of minutes').min(1, 'must be 1 to 120 minutes').max(120, 'must be 1 to 120 minutes').optional(),
    delivery: z.enum(['email', 'sms'], 'must be email or sms'),
    subject: z.string().min(1).max(200).refine(placeholdersKnown, PLACEHOLDER_PROBLEM).default('Sign-in approval: {user} to {app}'),
    defaultRecipient: recipient.nullable().default(null),
    directories: z.array(z.enum(['local', 'ldap'])).min(1, 'name at least one directory').default(['local', 'ldap']),
    factors: z.array(z.enum(['password', ...FACTORS])).min(1).nullable().default(null),
  })
  .superRefine((p, ctx) => {
    if (p.mode === 'approve' && p.message && !p.message.includes('{link}')) ctx.addIssue({ code: 'custom', path: ['message'], message: 'an approval message must contain {link}' });
    if (p.mode === 'inform' && p.message?.includes('{link}')) ctx.addIssue({ code: 'custom', path: ['message'], message: 'an information carries no link: leave {link} out' });
    if (p.mode === 'inform' && p.linkMinutes !== undefined) ctx.addIssue({ code: 'custom', path: ['linkMinutes'], message: 'an information carries no link: only approve profiles have a link lifetime' });
    const channel = p.defaultRecipient ? (p.defaultRecipient.startsWith('+') ? 'sms' : 'email') : null;
    if (channel && channel !== p.delivery) ctx.addIssue({ code: 'custom', path: ['defaultRecipient'], message: `delivery is by ${p.delivery}: the default recipient must be ${p.delivery === 'email' ? 'an email address' : 'a phone number'}` });
  });

export type ProfileInput = z.input<typeof profileInputSchema>;

export async function createProfile(db: Db, input: ProfileInput): Promise<ApprovalProfile> {
  const parsed = profileInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ApprovalError(message, field));
  const p = parsed.data;
  return db
    .insertInto('approval_profiles')
    .values({
      name: p.name,
      mode: p.mode,
      base_url: p.baseUrl,
      message: p.message ?? DEFAULT_MESSAGES[p.mode],
      link_minutes: p.linkMinutes ?? 60,
      delivery: p.delivery,
      subject: p.subject,
      default_recipient: p.defaultRecipient,
      directories: p.directories,
      factors: p.factors,
    })
    .returningAll()
    .executeTakeFirstOrThrow()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new ApprovalError(`an approval profile "${p.name}" already exists`, 'name');
      throw error;
    });
}

export async function removeProfile(db: Db, name: string): Promise<{ policies: string[] }> {
  return db.transaction().execute(async (tx) => {
    const policies = await tx.deleteFrom('approval_policies').where('profile', '=', name).returning('name').execute();
    const removed = await tx.deleteFrom('approval_profiles').where('name', '=', name).executeTakeFirst();
    if (removed.numDeletedRows === 0n) throw new ApprovalError(`no approval profile "${name}"`, 'name');
    return { policies: policies.map((p) => p.name) };
  });
}

export function listProfiles(db: Db): Promise<ApprovalProfile[]> {
  return db.selectFrom('approval_profiles').selectAll().orderBy('name').execute();
}

/** Attributes a policy may match on besides any attribute stored with the user (LDAP's, for one). */
export const BUILT_IN_ATTRIBUTES = ['username', 'group', 'email', 'phone', 'given_name', 'family_name', 'source'] as const;

export const policyInputSchema = z.object({
  name: z.string().regex(/^[\p{L}\p{N} ._-]{1,100}$/u, 'a policy name is 1-100 letters, digits, spaces or . _ -'),
  profile: z.string().min(1, 'name the profile').max(100),
  attribute: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,99}$/, 'an attribute name such as username, group, department'),
  values: z.array(z.string().trim().min(1).max(500)).min(1, 'give at least one value').max(100),
  clientId: z.string().min(1).max(128).nullable().default(null),
  /** 1 is the top; by default, the bottom. */
  position: z.number().int().min(1).max(100_000).nullable().default(null),
});

export type PolicyInput = z.input<typeof policyInputSchema>;

/** Adds a policy at its place in the order (the others below it move down). */
export async function addPolicy(db: Db, input: PolicyInput): Promise<ApprovalPolicy> {
  const parsed = policyInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ApprovalError(message, field));
  const p = parsed.data;
  if (!(await db.selectFrom('approval_profiles').select('name').where('name', '=', p.profile).executeTakeFirst())) {
    throw new ApprovalError(`no approval profile "${p.profile}"`, 'profile');
  }
  if (p.clientId && !(await db.selectFrom('clients').select('client_id').where('client_id', '=', p.clientId).executeTakeFirst())) {
    throw new ApprovalError(`no client "${p.clientId}"`, 'clientId');
  }
  return db.transaction().execute(async (tx) => {
    // One writer at a time re-numbers the order.
    await sql`lock table approval_policies in share row exclusive mode`.execute(tx);
    const count = Number((await tx.selectFrom('approval_policies').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const position = Math.min(p.position ?? count + 1, count + 1);
    await tx.updateTable('approval_policies').set({ position: sql`position + 1` }).where('position', '>=', position).execute();
    return tx
      .insertInto('approval_policies')
      .values({ name: p.name, profile: p.profile, attribute: p.attribute, values: [...new Set(p.values)], client_id: p.clientId, position })
      .returningAll()
      .executeTakeFirstOrThrow()
      .catch((error: unknown) => {
        if (isUniqueViolation(error)) throw new ApprovalError(`an approval policy "${p.name}" already exists`, 'name');
        throw error;
      });
  });
}

export async function removePolicy(db: Db, name: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const removed = await tx.deleteFrom('approval_policies').where('name', '=', name).returning('position').executeTakeFirst();
    if (!removed) throw new ApprovalError(`no approval policy "${name}"`, 'name');
    await tx.updateTable('approval_policies').set({ position: sql`position - 1` }).where('position', '>', removed.position).execute();
  });
}

/** Top to bottom: the order they are evaluated in. */
export function listPolicies(db: Db): Promise<ApprovalPolicy[]> {
  return db.selectFrom('approval_policies').selectAll().orderBy('position').orderBy('name').execute();
}

/** A stored profile in the form profileInputSchema reads. */
function inputOf(p: ApprovalProfile): ProfileInput {
  return {
    name: p.name,
    mode: p.mode,
    baseUrl: p.base_url,
    message: p.message,
    ...(p.mode === 'approve' ? { linkMinutes: p.link_minutes } : {}),
    delivery: p.delivery,
    subject: p.subject,
    defaultRecipient: p.default_recipient,
    directories: p.directories,
    factors: p.factors as ProfileInput['factors'],
  };
}

export type ProfileChanges = Partial<Omit<ProfileInput, 'name'>>;

/** Changes a profile (its policies stay), checked by the same rules as a new one; returns what changed. */
export async function updateProfile(db: Db, name: string, changes: ProfileChanges): Promise<Record<string, unknown>> {
  const row = await db.selectFrom('approval_profiles').selectAll().where('name', '=', name).executeTakeFirst();
  if (!row) throw new ApprovalError(`no approval profile "${name}"`, 'name');
  const before = inputOf(row);
  const merged = { ...before, ...Object.fromEntries(Object.entries(changes).filter(([, v]) => v !== undefined)) } as ProfileInput;
  // A profile turned into an information keeps no link lifetime.
  if (merged.mode === 'inform' && changes.linkMinutes === undefined) delete merged.linkMinutes;
  // The mode changes and the message was the old mode's default: it becomes the new mode's.
  const untouched = changes.message === undefined || changes.message === null || changes.message === DEFAULT_MESSAGES[row.mode];
  if (changes.mode && changes.mode !== row.mode && untouched && row.message === DEFAULT_MESSAGES[row.mode]) merged.message = DEFAULT_MESSAGES[changes.mode];
  const parsed = profileInputSchema.safeParse(merged);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ApprovalError(message, field));
  const p = parsed.data;
  const values = {
    mode: p.mode,
    base_url: p.baseUrl,
    message: p.message ?? DEFAULT_MESSAGES[p.mode],
    link_minutes: p.linkMinutes ?? row.link_minutes,
    delivery: p.delivery,
    subject: p.subject,
    default_recipient: p.defaultRecipient,
    directories: p.directories,
    factors: p.factors,
  };
  const changed = Object.fromEntries(Object.entries(values).filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(row[key as keyof ApprovalProfile])));
  if (Object.keys(changed).length) await db.updateTable('approval_profiles').set(values).where('name', '=', name).execute();
  return changed;
}
