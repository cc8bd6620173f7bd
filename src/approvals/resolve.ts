import type { ApprovalPolicy, ApprovalProfile } from '../db/schema.js';
import type { ApprovalSettings } from '../settings/settings.js';
import type { Proof } from '../sessions/ledger.js';

/** What a policy can see of a user: the built-in attributes and whatever the directory gave. */
export interface ApprovalSubject {
  username: string;
  source: 'local' | 'ldap';
  groups: string[];
  attributes: Record<string, unknown>;
}

export type ApprovalDecision =
  | { kind: 'none' }
  | { kind: 'profile'; profile: ApprovalProfile; policy: string | null }
  | { kind: 'refused'; reason: string };

function valuesOf(subject: ApprovalSubject, attribute: string): string[] {
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.flatMap(list) : v === null || v === undefined ? [] : [String(v)]);
  switch (attribute) {
    case 'username':
      return [subject.username];
    case 'group':
      return subject.groups;
    case 'source':
      return [subject.source];
    default:
      return list(subject.attributes[attribute]);
  }
}

/** A policy matches when any of the user's values of its attribute is one of its values (case does not matter). */
export function matches(policy: Pick<ApprovalPolicy, 'attribute' | 'values' | 'client_id'>, subject: ApprovalSubject, clientId: string): boolean {
  if (policy.client_id && policy.client_id !== clientId) return false;
  const wanted = new Set(policy.values.map((v) => v.toLowerCase()));
  return valuesOf(subject, policy.attribute).some((v) => wanted.has(v.toLowerCase()));
}

/**
 * Which approval profile governs this sign-in, where approval applies (the client or the user's
 * access policy asks for it). Policies are read top to bottom and the first match wins; with no
 * policies the default profile applies to everyone; with policies and no match the user cannot
 * sign in through approval ("deny", the default), unless `unmatched` is "default". A profile
 * applies only to the directories it names and, if it names factors, to sign-ins that used one.
 */
export function approvalFor(input: {
  required: boolean;
  subject: ApprovalSubject;
  clientId: string;
  passed: Proof[];
  profiles: ApprovalProfile[];
  policies: ApprovalPolicy[];
  settings: ApprovalSettings;
}): ApprovalDecision {
  if (!input.required) return { kind: 'none' };
  const byName = new Map(input.profiles.map((p) => [p.name, p]));
  let profile: ApprovalProfile | undefined;
  let policy: string | null = null;
  const match = [...input.policies].sort((a, b) => a.position - b.position).find((p) => matches(p, input.subject, input.clientId));
  if (match) {
    profile = byName.get(match.profile);
    policy = match.name;
  } else if (input.policies.length === 0 || input.settings.unmatched === 'default') {
    profile = input.settings.defaultProfile ? byName.get(input.settings.defaultProfile) : undefined;
    if (!profile) return { kind: 'refused', reason: input.policies.length === 0 ? 'no approval profile is set up for this application' : 'no approval policy matches this user and there is no default profile' };
  } else {
    return { kind: 'refused', reason: 'no approval policy matches this user' };
  }
  if (!profile) return { kind: 'refused', reason: `the approval profile of policy "${policy}" no longer exists` };
  if (!profile.directories.includes(input.subject.source)) return { kind: 'refused', reason: `the approval profile "${profile.name}" does not apply to ${input.subject.source} users` };
  if (profile.factors && !input.passed.some((p) => profile.factors!.includes(p))) {
    return { kind: 'refused', reason: `the approval profile "${profile.name}" needs a sign-in with ${profile.factors.join(' or ')}` };
  }
  return { kind: 'profile', profile, policy };
}
