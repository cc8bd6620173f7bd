import { FACTORS, type FactorId } from '../settings/settings.js';
import type { MfaMode } from '../db/schema.js';

/** One access policy that applies to the user, directly or through a group. */
export interface PolicyRule {
  name: string;
  source: 'user' | 'group';
  priority: number;
  mfa: MfaMode;
  allowedFactors: FactorId[] | null;
  requireAuthenticatorApp: boolean;
  /** The user's sign-ins go through the manager approval step. */
  managerApproval?: boolean;
}

export interface RequirementInput {
  policies: PolicyRule[];
  clientRequiresMfa: boolean;
  /** The relying party asked for the MFA acr (acr_values or an acr claim request). */
  mfaAcrRequested: boolean;
  /** The relying party asked for the phishing-resistant acr: only a passkey or security key answers it. */
  phishingResistantRequested?: boolean;
  /** Methods switched on system-wide and able to deliver (a code channel needs a sender). */
  methodsAvailable: Record<FactorId, boolean>;
  /** mustEnrol: an administrator approved an access restore for a lost token: a new one is enrolled first. */
  user: { emailVerified: boolean; phoneVerified: boolean; hasAuthenticator: boolean; hasPasskey?: boolean; hasRecoveryCodes?: boolean; mustEnrol?: boolean };
  /**
   * A sign-in as a shared account: always a one-time code, and `user` is the reserving member,
   * whose own factors answer it; nothing is enrolled for anyone in it.
   */
  sharedSignIn?: boolean;
}

export type RequirementReason = 'policy' | 'client' | 'acr' | 'enrolled' | 'restored' | 'shared';

export interface Requirement {
  mfaRequired: boolean;
  reasons: RequirementReason[];
  /** The policy that decided, if any. */
  policy: string | null;
  /** Methods this login may use: available, and allowed by the policy. */
  allowedFactors: FactorId[];
  /** Allowed methods this user can use right now. */
  usableFactors: FactorId[];
  /**
   * "required": the policy demands an authenticator app and the user has none: enrol before anything else.
   * "offered": a policy requires MFA and nothing else is usable: enrol now (first logon).
   * "after-factor": the user has other methods but no app: they may set one up after passing one of them.
   * "after-code": access was restored after a lost token: a code by email or SMS first, then a new app, not skippable.
   */
  enrolAuthenticator: 'required' | 'offered' | 'after-factor' | 'after-code' | 'no';
  /** A policy requires MFA, passkeys are allowed and the user has nothing usable: they may add a passkey now (first logon). */
  enrolPasskey?: boolean;
  /**
   * Codes the user must pass before adding that passkey: their verified email or phone, where they
   * have one (the policy may not count it as a second factor, but it proves the password's typist is the user).
   */
  passkeyProof?: FactorId[];
  /** MFA is required and there is no way forward: the "no usable method" page. */
  noUsableMethod: boolean;
  /** An access policy that applies to the user (theirs or a group's) sends their sign-ins through manager approval. */
  managerApproval?: boolean;
}

const STRICTNESS: Record<MfaMode, number> = { required: 2, optional: 1, off: 0 };

/** Demanding an authenticator app is stricter than MFA with any method; fewer allowed methods, stricter still. */
function strictness(rule: PolicyRule): number {
  return STRICTNESS[rule.mfa] * 100 + (rule.requireAuthenticatorApp ? 50 : 0) + (FACTORS.length - (rule.allowedFactors?.length ?? FACTORS.length));
}
/** The order factors are offered in, everywhere: the phishing-resistant one first, the way back from a lost device last. */
export const FACTOR_ORDER: readonly FactorId[] = ['webauthn', 'totp', 'email', 'sms', 'recovery'];

/** Factors a phishing site cannot relay: the signature is bound to the origin. */
export const PHISHING_RESISTANT: readonly FactorId[] = ['webauthn'];

/**
 * The rule that governs a user: policies assigned to the user outrank group policies; then the
 * lowest priority number wins; at a tie, the stricter one.
 */
export function effectivePolicy(policies: PolicyRule[]): PolicyRule | null {
  const sorted = [...policies].sort(
    (a, b) =>
      (a.source === b.source ? 0 : a.source === 'user' ? -1 : 1) ||
      a.priority - b.priority ||
      strictness(b) - strictness(a),
  );
  return sorted[0] ?? null;
}

/**
 * What this login needs beyond the password. Pure: everything it depends on is in the input.
 * Without a policy MFA is optional: asked of users who enrolled an authenticator app themselves,
 * or when the client or the request demands it.
 */
export function requirement(input: RequirementInput): Requirement {
  const policy = effectivePolicy(input.policies);
  const mode: MfaMode = policy?.mfa ?? 'optional';
  const appByPolicy = policy?.requireAuthenticatorApp ?? false;
  const shared = input.sharedSignIn === true;
  const restored = !shared && input.user.mustEnrol === true && !input.user.hasAuthenticator;
  const requireApp = appByPolicy || restored;

  const byPolicy = FACTOR_ORDER.filter((f) => input.methodsAvailable[f] && (!policy?.allowedFactors || policy.allowedFactors.includes(f)));
  let allowed = input.phishingResistantRequested ? byPolicy.filter((f) => PHISHING_RESISTANT.includes(f)) : byPolicy;
  const has: Record<FactorId, boolean> = {
    email: input.user.emailVerified,
    sms: input.user.phoneVerified,
    totp: input.user.hasAuthenticator,
    // A shared account's sign-in is answered by a code: the member's recovery codes and passkeys are for their own account.
    webauthn: !shared && (input.user.hasPasskey ?? false),
    recovery: !shared && (input.user.hasRecoveryCodes ?? false),
  };
  // After a restore, whoever has the password (perhaps whoever has the lost token) must not attach
  // the new app alone: a code to the user's own address or phone comes first, where there is one.
  const codesFirst = restored && allowed.includes('totp') ? allowed.filter((f) => (f === 'email' || f === 'sms') && has[f]) : [];
  if (requireApp) allowed = allowed.filter((f) => f === 'totp' || codesFirst.includes(f));
  const usable = allowed.filter((f) => has[f]);

  const reasons: RequirementReason[] = [];
  if (mode === 'required' || appByPolicy) reasons.push('policy');
  if (restored) reasons.push('restored');
  if (shared) reasons.push('shared');
  if (input.clientRequiresMfa) reasons.push('client');
  if (input.mfaAcrRequested || input.phishingResistantRequested) reasons.push('acr');
  // A user who added an app or a passkey themselves is asked for it (recovery codes alone ask nothing: they are the way back).
  if (mode === 'optional' && reasons.length === 0 && (usable.includes('totp') || usable.includes('webauthn'))) reasons.push('enrolled');
  const mfaRequired = reasons.length > 0;

  let enrolAuthenticator: Requirement['enrolAuthenticator'] = 'no';
  if (shared) enrolAuthenticator = 'no';
  else if (codesFirst.length > 0) enrolAuthenticator = 'after-code';
  else if (requireApp && !input.user.hasAuthenticator && allowed.includes('totp')) enrolAuthenticator = 'required';
  // A first factor is enrolled with a password alone only where an administrator's policy demands
  // MFA: a request's acr_values or a client's flag must not let a password thief attach their app.
  else if (mfaRequired && usable.length === 0 && allowed.includes('totp') && reasons.includes('policy')) enrolAuthenticator = 'offered';
  // After a code: only where the user has a code method to pass first.
  else if (mfaRequired && usable.length > 0 && !input.user.hasAuthenticator && allowed.includes('totp')) enrolAuthenticator = 'after-factor';

  // As for an app: only where an administrator's policy demands MFA and the user holds none of the factors
  // it allows (a request for the phishing-resistant acr narrows what counts, never what the user holds);
  // never for a shared account or after a restore.
  const holdsNone = !byPolicy.some((f) => has[f]);
  const enrolPasskey = !shared && !restored && !requireApp && mfaRequired && holdsNone && allowed.includes('webauthn') && reasons.includes('policy');
  const passkeyProof = enrolPasskey ? (['email', 'sms'] as const).filter((f) => input.methodsAvailable[f] && has[f]) : [];

  return {
    mfaRequired,
    reasons,
    policy: policy?.name ?? null,
    allowedFactors: allowed,
    usableFactors: usable,
    enrolAuthenticator,
    enrolPasskey,
    passkeyProof,
    noUsableMethod: mfaRequired && usable.length === 0 && enrolAuthenticator === 'no' && !enrolPasskey,
    // Approval is a control, not a setting to outrank: any policy that applies and asks for it, requires it.
    managerApproval: input.policies.some((p) => p.managerApproval),
  };
}
