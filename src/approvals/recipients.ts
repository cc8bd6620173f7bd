import type { ApprovalProfile, User } from '../db/schema.js';

/** Who is told or asked: the manager's address for the profile's channel, and where it came from. */
export interface Recipient {
  to: string;
  source: 'ldap-manager' | 'sponsor' | 'default';
}

/** Looks up an LDAP user's manager's mail or mobile (the directory module provides it when LDAP is set up). */
export type ManagerLookup = (user: User, channel: 'email' | 'sms') => Promise<string | null>;

/**
 * The manager of an LDAP user (the entry their manager attribute names), the sponsor of a local
 * user, or else the profile's default recipient; null when there is none.
 */
export async function recipientFor(user: User, profile: ApprovalProfile, ldapManager: ManagerLookup | null): Promise<Recipient | null> {
  const channel = profile.delivery;
  if (user.source === 'ldap' && ldapManager) {
    const to = await ldapManager(user, channel);
    if (to) return { to, source: 'ldap-manager' };
  }
  if (user.source === 'local') {
    const to = channel === 'email' ? user.sponsor_email : user.sponsor_phone;
    if (to) return { to, source: 'sponsor' };
  }
  return profile.default_recipient ? { to: profile.default_recipient, source: 'default' } : null;
}
