import type { ApprovalProfile, User } from '../db/schema.js';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Logger } from '../log.js';
import { loadSettings } from '../settings/settings.js';
import { DirectoryUnavailable, e164, ldapConfigured, type LdapDirectory } from '../directory/ldap.js';

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
  // Nobody approves their own sign-in: an address or number of the user's own is no manager's.
  const own = new Set([user.email, user.phone].filter((v): v is string => Boolean(v)).map((v) => v.toLowerCase()));
  const other = (to: string | null | undefined): to is string => Boolean(to) && !own.has(to!.toLowerCase());
  if (user.source === 'ldap' && ldapManager) {
    const to = await ldapManager(user, channel);
    if (other(to)) return { to, source: 'ldap-manager' };
  }
  if (user.source === 'local') {
    const to = channel === 'email' ? user.sponsor_email : user.sponsor_phone;
    if (other(to)) return { to, source: 'sponsor' };
  }
  return other(profile.default_recipient) ? { to: profile.default_recipient, source: 'default' } : null;
}

/**
 * The manager lookup for LDAP users: their manager attribute (a DN, kept with the user at each
 * sign-in) resolved in the directory to the entry's mail or mobile. A directory that cannot be
 * asked counts as "no manager found": the profile's default recipient is used, and it is logged.
 */
export function ldapManagerLookup(db: Db, box: SecretBox, directory: LdapDirectory, log: Logger): ManagerLookup {
  return async (user, channel) => {
    const manager = (user.attributes as Record<string, unknown> | null)?.manager;
    if (typeof manager !== 'string' || !manager || manager.toLowerCase() === user.ldap_dn?.toLowerCase()) return null;
    const settings = await loadSettings(db, box);
    if (!ldapConfigured(settings.ldap)) return null;
    try {
      const contact = await directory.contactOf(settings.ldap, manager, channel);
      return channel === 'sms' ? e164(contact) : contact;
    } catch (error) {
      if (!(error instanceof DirectoryUnavailable)) throw error;
      log.warn({ err: error, user: user.username }, 'LDAP directory unavailable: the manager could not be looked up');
      return null;
    }
  };
}
