import { sql } from 'kysely';
import { z } from 'zod';
import { isUniqueViolation, preparedLookup, type Db } from '../db/index.js';
import type { AccessPolicy, User } from '../db/schema.js';
import { FACTORS, type FactorId, type Settings } from '../settings/settings.js';
import type { Mode } from '../config.js';
import { providerFor } from '../factors/delivery/index.js';
import { ACR } from '../oidc/assurance.js';
import { requirement, type PolicyRule, type Requirement } from './requirement.js';
import { DomainError, firstIssue } from '../domain-error.js';

export class PolicyError extends DomainError {}

export const policyInputSchema = z
  .object({
    name: z.string().regex(/^[\p{L}\p{N} ._-]{1,100}$/u, 'a policy name is 1-100 letters, digits, spaces or . _ -'),
    subjectType: z.enum(['user', 'group']),
    subject: z.string().min(1, 'name the user or group'),
    priority: z.number().int('must be a whole number').min(0, 'must be 0 to 100000').max(100000, 'must be 0 to 100000').default(100),
    mfa: z.enum(['required', 'optional', 'off'], 'must be required, optional or off'),
    allowedFactors: z
      .array(z.enum(FACTORS, `each method is one of ${FACTORS.join(', ')}`))
      .min(1, 'name at least one method')
      .nullable()
      .default(null),
    requireAuthenticatorApp: z.boolean().default(false),
    /** The governed users' sign-ins go through manager approval (the approval profiles decide how). */
    managerApproval: z.boolean().default(false),
  })
  .superRefine((p, ctx) => {
    // "Require an authenticator app" means MFA with the app only: anything else contradicts it.
    if (p.requireAuthenticatorApp && p.mfa !== 'required') {
      ctx.addIssue({ code: 'custom', path: ['requireAuthenticatorApp'], message: `an authenticator app cannot be required when MFA is ${p.mfa}: use MFA required` });
    }
    if (p.requireAuthenticatorApp && p.allowedFactors && p.allowedFactors.some((f) => f !== 'totp')) {
      ctx.addIssue({ code: 'custom', path: ['requireAuthenticatorApp'], message: 'an authenticator app as the required method allows no other methods: allow only totp, or leave the methods out' });
    }
    if (p.mfa === 'off' && p.allowedFactors) {
      ctx.addIssue({ code: 'custom', path: ['allowedFactors'], message: 'methods make no sense when MFA is off' });
    }
  });

export type PolicyInput = z.input<typeof policyInputSchema>;

/** Access policies (Sectona's "user access policy"), assigned to a user or a group. */
export async function createPolicy(db: Db, input: PolicyInput): Promise<void> {
  const parsed = policyInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new PolicyError(message, field));
  const p = parsed.data;
  const subject =
    p.subjectType === 'user'
      ? await db.selectFrom('users').select('id').where(sql`lower(username)`, '=', sql<string>`lower(${p.subject})`).executeTakeFirst()
      : await db.selectFrom('groups').select('id').where('name', '=', p.subject).executeTakeFirst();
  if (!subject) throw new PolicyError(`no ${p.subjectType} "${p.subject}"`, 'subject');
  await db
    .insertInto('access_policies')
    .values({
      name: p.name,
      subject_type: p.subjectType,
      subject_id: subject.id,
      priority: p.priority,
      mfa: p.mfa,
      allowed_factors: p.allowedFactors,
      require_authenticator_app: p.requireAuthenticatorApp,
      manager_approval: p.managerApproval,
    })
    .execute()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new PolicyError(`policy "${p.name}" already exists`);
      throw error;
    });
}

export async function removePolicy(db: Db, name: string): Promise<void> {
  const result = await db.deleteFrom('access_policies').where('name', '=', name).executeTakeFirst();
  if (result.numDeletedRows === 0n) throw new PolicyError(`no policy "${name}"`);
}

/** Policies with the name of the user or group each applies to. */
function policiesWithSubjects(db: Db) {
  return db
    .selectFrom('access_policies')
    .leftJoin('users', (j) => j.onRef('users.id', '=', 'access_policies.subject_id').on('access_policies.subject_type', '=', 'user'))
    .leftJoin('groups', (j) => j.onRef('groups.id', '=', 'access_policies.subject_id').on('access_policies.subject_type', '=', 'group'))
    .select(['access_policies.name', 'subject_type', 'priority', 'mfa', 'allowed_factors', 'require_authenticator_app', 'access_policies.manager_approval', 'users.username', 'groups.name as group_name']);
}

export function listPolicies(db: Db) {
  return policiesWithSubjects(db).orderBy('priority').orderBy('access_policies.name').execute();
}

/** What a sign-in needs to know of a user beyond their record, worked out in one query. */
export interface UserMfaFacts {
  /** The policies that apply (the user's own and their groups'). */
  policies: PolicyRule[];
  hasAuthenticator: boolean;
  hasPasskey: boolean;
  hasRecoveryCodes: boolean;
  /** A shared account (signed in to by a member's reservation). */
  shared: boolean;
}

const MFA_FACTS = preparedLookup((db, userId: string) =>
  db.selectNoFrom((eb) => [
      eb
        .exists(eb.selectFrom('authenticators').select('id').where('user_id', '=', userId).where('confirmed_at', 'is not', null).where('disabled_at', 'is', null))
        .as('has_authenticator'),
      eb.exists(eb.selectFrom('webauthn_credentials').select('id').where('user_id', '=', userId)).as('has_passkey'),
      eb.exists(eb.selectFrom('recovery_codes').select('user_id').where('user_id', '=', userId).where('used_at', 'is', null)).as('has_recovery_codes'),
      eb.exists(eb.selectFrom('shared_accounts').select('user_id').where('user_id', '=', userId)).as('shared'),
      sql<AccessPolicy[] | null>`(select json_agg(p) from access_policies p
        where (p.subject_type = 'user' and p.subject_id = ${userId})
           or (p.subject_type = 'group' and p.subject_id in (select group_id from group_members where user_id = ${userId})))`.as('policies'),
  ]));

/** The policies that apply to a user, which factors they hold (an app, a passkey, recovery codes) and whether the account is shared, in one query. */
export async function userMfaFacts(db: Db, userId: string): Promise<UserMfaFacts> {
  const row = await MFA_FACTS(db, userId);
  return {
    hasAuthenticator: Boolean(row?.has_authenticator),
    hasPasskey: Boolean(row?.has_passkey),
    hasRecoveryCodes: Boolean(row?.has_recovery_codes),
    shared: Boolean(row?.shared),
    policies: (row?.policies ?? []).map((r) => ({
      name: r.name,
      source: r.subject_type,
      priority: r.priority,
      mfa: r.mfa,
      allowedFactors: r.allowed_factors as FactorId[] | null,
      requireAuthenticatorApp: r.require_authenticator_app,
      managerApproval: r.manager_approval ?? false,
    })),
  };
}

/** The acr values an authorization request asks for, by acr_values or a claims request for the ID token's acr. */
function requestedAcrs(params: Record<string, unknown>): string[] {
  const asked = typeof params.acr_values === 'string' ? params.acr_values.split(' ') : [];
  if (typeof params.claims === 'string') {
    try {
      const acr = (JSON.parse(params.claims) as { id_token?: { acr?: { value?: unknown; values?: unknown } } }).id_token?.acr;
      if (typeof acr?.value === 'string') asked.push(acr.value);
      if (Array.isArray(acr?.values)) asked.push(...acr.values.filter((v): v is string => typeof v === 'string'));
    } catch {
      // A malformed claims parameter asks for nothing here (oidc-provider refuses it on its own).
    }
  }
  return asked;
}

/**
 * What assurance the request demands: "mfa" when the MFA acr is among the acceptable values, else
 * "phr" when the phishing-resistant one is and the password one is not (then only a passkey or
 * security key answers), else none.
 */
export function requestedAssurance(params: Record<string, unknown>): 'mfa' | 'phr' | null {
  const asked = requestedAcrs(params);
  if (asked.includes(ACR.mfa)) return 'mfa';
  // A client that would take a password-only sign-in too demands nothing more.
  return asked.includes(ACR.phr) && !asked.includes(ACR.password) ? 'phr' : null;
}

function assuranceAsked(params: Record<string, unknown>): { mfaAcrRequested: boolean; phishingResistantRequested: boolean } {
  const asked = requestedAssurance(params);
  return { mfaAcrRequested: asked === 'mfa', phishingResistantRequested: asked === 'phr' };
}

export function methodsAvailable(settings: Settings, mode: Mode): Record<FactorId, boolean> {
  return {
    email: settings.mfa.methods.email && providerFor('email', settings, mode) !== null,
    sms: settings.mfa.methods.sms && providerFor('sms', settings, mode) !== null,
    totp: settings.mfa.methods.totp,
    webauthn: settings.mfa.methods.webauthn,
    recovery: settings.mfa.methods.recovery,
  };
}

/**
 * A local account without a password signs in with a code sent to its email: that code is its first
 * factor, so the email cannot also be its second (a step-up by email would never count as MFA).
 */
export function signsInByEmail(user: User): boolean {
  return user.source === 'local' && user.password_hash === null;
}

/** Gathers what the pure requirement function needs for this user, client and request. */
export async function loginRequirement(
  db: Db,
  settings: Settings,
  mode: Mode,
  user: User,
  clientRequiresMfa: boolean,
  params: Record<string, unknown>,
  /** The user's facts when the caller has them already. */
  known?: UserMfaFacts,
): Promise<Requirement> {
  const { policies, hasAuthenticator, hasPasskey, hasRecoveryCodes } = known ?? (await userMfaFacts(db, user.id));
  return requirement({
    policies,
    clientRequiresMfa,
    ...assuranceAsked(params),
    methodsAvailable: methodsAvailable(settings, mode),
    user: { emailVerified: Boolean(user.email) && user.email_verified && !signsInByEmail(user), phoneVerified: Boolean(user.phone) && user.phone_verified, hasAuthenticator, hasPasskey, hasRecoveryCodes, mustEnrol: user.must_enrol },
  });
}

/** What an administrator may change of a policy; its name and subject stay (remove and add to move it). */
export type PolicyChanges = Partial<Pick<PolicyInput, 'priority' | 'mfa' | 'allowedFactors' | 'requireAuthenticatorApp' | 'managerApproval'>>;

/** Changes a policy, checked by the same rules as a new one. Returns the fields that changed. */
export async function updatePolicy(db: Db, name: string, changes: PolicyChanges): Promise<Record<string, unknown>> {
  const row = await policiesWithSubjects(db).where('access_policies.name', '=', name).executeTakeFirst();
  if (!row) throw new PolicyError(`no policy "${name}"`, 'name');
  const before = {
    name: row.name,
    subjectType: row.subject_type,
    subject: row.username ?? row.group_name ?? '',
    priority: row.priority,
    mfa: row.mfa,
    allowedFactors: row.allowed_factors as FactorId[] | null,
    requireAuthenticatorApp: row.require_authenticator_app,
    managerApproval: row.manager_approval,
  };
  const parsed = policyInputSchema.safeParse({ ...before, ...Object.fromEntries(Object.entries(changes).filter(([, v]) => v !== undefined)) });
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new PolicyError(message, field));
  const p = parsed.data;
  const changed = Object.fromEntries(
    (['priority', 'mfa', 'allowedFactors', 'requireAuthenticatorApp', 'managerApproval'] as const)
      .filter((k) => JSON.stringify(p[k]) !== JSON.stringify(before[k]))
      .map((k) => [k, p[k]]),
  );
  if (Object.keys(changed).length === 0) return changed;
  await db
    .updateTable('access_policies')
    .set({ priority: p.priority, mfa: p.mfa, allowed_factors: p.allowedFactors, require_authenticator_app: p.requireAuthenticatorApp, manager_approval: p.managerApproval })
    .where('name', '=', name)
    .execute();
  return changed;
}

/**
 * What a sign-in as a shared account needs: the shared account's policies and the application's
 * demands decide which factors count; the reserving member's own email, phone and authenticator
 * app are what can answer (an email is a code here even for a member who signs in with it).
 */
export async function sharedSignInRequirement(
  db: Db,
  settings: Settings,
  mode: Mode,
  shared: User,
  member: User,
  clientRequiresMfa: boolean,
  params: Record<string, unknown>,
): Promise<Requirement> {
  const [{ policies }, { hasAuthenticator }] = await Promise.all([userMfaFacts(db, shared.id), userMfaFacts(db, member.id)]);
  return requirement({
    policies,
    clientRequiresMfa,
    ...assuranceAsked(params),
    methodsAvailable: methodsAvailable(settings, mode),
    user: { emailVerified: Boolean(member.email) && member.email_verified, phoneVerified: Boolean(member.phone) && member.phone_verified, hasAuthenticator },
    sharedSignIn: true,
  });
}
