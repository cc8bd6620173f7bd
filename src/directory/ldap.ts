import { Client, Filter, InvalidCredentialsError, ResultCodeError, type Entry } from 'ldapts';
import type { LdapSettings } from '../settings/settings.js';

/** The directory could not be asked (down, unreachable, refusing the service account): not the user's fault. */
export class DirectoryUnavailable extends Error {}

/** A user entry as Tessera maps it. */
export interface DirectoryUser {
  dn: string;
  /** The entry's stable id (entryUUID, or Active Directory's objectGUID), when the directory gives one. */
  directoryId: string | null;
  username: string;
  email: string | null;
  phone: string | null;
  givenName: string | null;
  familyName: string | null;
  /** The manager attribute's value: a DN. */
  manager: string | null;
  groups: string[];
}

/** On when the URL, the service account and the base DN are set (in whatever order they were). */
export function ldapConfigured(settings: LdapSettings): boolean {
  return Boolean(settings.url && settings.bindDn && settings.bindPassword && settings.baseDn);
}

const first = (entry: Entry, attribute: string): string | null => {
  const value = entry[attribute];
  const one = Array.isArray(value) ? value[0] : value;
  return one === undefined || one === null ? null : Buffer.isBuffer(one) ? one.toString('utf8') : String(one);
};
const all = (entry: Entry, attribute: string): string[] => {
  const value = entry[attribute];
  return (Array.isArray(value) ? value : value === undefined ? [] : [value]).map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : String(v)));
};

/** The group name of a memberOf DN ("cn=ops,ou=groups,…" → "ops"), or the value as it is. */
function groupName(value: string): string {
  return /^cn=([^,]+),/i.exec(value)?.[1] ?? value;
}

/**
 * An LDAP directory as a source of users (ldapts). A service account searches for the user with
 * an escaped filter; the user's own bind, on a connection of its own, checks the password. The
 * service account's connection is kept and reused between sign-ins, and opened again when it fails.
 */
export class LdapDirectory {
  /** The service account's bound connection (or its binding, under way), shared by concurrent sign-ins. */
  private service: Promise<Client> | null = null;
  private serviceKey = '';

  private tls(settings: LdapSettings) {
    return { rejectUnauthorized: settings.tlsVerify, ...(settings.caCertificate ? { ca: settings.caCertificate } : {}) };
  }

  private clientFor(settings: LdapSettings): Client {
    return new Client({
      url: settings.url!,
      timeout: settings.timeoutSeconds * 1000,
      connectTimeout: settings.timeoutSeconds * 1000,
      // TLS options make ldapts speak TLS from the start: only for ldaps:// (StartTLS upgrades ldap:// later).
      ...(settings.url!.startsWith('ldaps://') ? { tlsOptions: this.tls(settings) } : {}),
    });
  }

  private async connect(client: Client, settings: LdapSettings): Promise<void> {
    // The upgraded socket is checked against the URL's host (not "localhost", ldapts' default).
    if (settings.startTls && settings.url!.startsWith('ldap://')) await client.startTLS({ ...this.tls(settings), host: new URL(settings.url!).hostname });
  }

  /** The service account's bound connection, reused while the settings stay the same. */
  private async serviceClient(settings: LdapSettings): Promise<Client> {
    const key = JSON.stringify([settings.url, settings.bindDn, settings.bindPassword, settings.startTls, settings.tlsVerify, settings.caCertificate, settings.timeoutSeconds]);
    if (this.service && this.serviceKey === key) {
      const client = await this.service.catch(() => null);
      if (client?.isConnected) return client;
    }
    await this.close();
    this.serviceKey = key;
    const binding = (async () => {
      const client = this.clientFor(settings);
      try {
        await this.connect(client, settings);
        await client.bind(settings.bindDn!, settings.bindPassword!);
        return client;
      } catch (error) {
        await client.unbind().catch(() => undefined);
        throw unavailable(error, 'the service account could not bind');
      }
    })();
    this.service = binding;
    binding.catch(() => {
      if (this.service === binding) this.service = null;
    });
    return binding;
  }

  private async search(settings: LdapSettings, base: string, filter: string, scope: 'sub' | 'base', attributes: string[]): Promise<Entry[]> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.serviceClient(settings);
      try {
        const { searchEntries } = await client.search(base, { scope, filter, attributes, sizeLimit: 2 });
        return searchEntries;
      } catch (error) {
        if (error instanceof ResultCodeError) {
          if (error.code === 32) return []; // noSuchObject
          throw unavailable(error, 'the search failed');
        }
        // The kept connection failed (the server closed it): open it again, once. Concurrent
        // sign-ins on it see the same failure and do the same.
        await this.close();
        if (attempt === 0) continue;
        throw unavailable(error, 'the search failed');
      }
    }
  }

  private map(settings: LdapSettings, entry: Entry, typed?: string): DirectoryUser {
    const a = settings.attributes;
    // An entry may hold several names: the one that was typed is the one this sign-in is for.
    const names = all(entry, a.username);
    const username = (typed && names.find((n) => n.toLowerCase() === typed.toLowerCase())) ?? names[0] ?? '';
    const guid = entry.objectGUID;
    return {
      dn: entry.dn,
      directoryId: first(entry, 'entryUUID') ?? (Buffer.isBuffer(guid) ? guid.toString('hex') : null),
      username,
      email: first(entry, a.email),
      phone: first(entry, a.phone),
      givenName: first(entry, a.givenName),
      familyName: first(entry, a.familyName),
      manager: first(entry, a.manager),
      groups: all(entry, a.groups).map(groupName),
    };
  }

  /** The user's entry, found by the service account with the escaped username; null when there is none (or several). */
  async findUser(settings: LdapSettings, username: string): Promise<DirectoryUser | null> {
    const a = settings.attributes;
    const filter = settings.userFilter.replaceAll('{username}', Filter.escape(username));
    const entries = await this.search(settings, settings.baseDn!, filter, 'sub', [a.username, a.email, a.phone, a.givenName, a.familyName, a.manager, a.groups, 'entryUUID', 'objectGUID']);
    return entries.length === 1 ? this.map(settings, entries[0]!, username) : null;
  }

  /**
   * Checks a password by binding as the user. An empty password is refused before anything is
   * sent: a simple bind with an empty password is an unauthenticated bind that "succeeds"
   * (RFC 4513 5.1.2).
   */
  async authenticate(settings: LdapSettings, username: string, password: string): Promise<DirectoryUser | null> {
    if (password.length === 0) return null;
    const user = await this.findUser(settings, username);
    if (!user) return null;
    const client = this.clientFor(settings);
    try {
      await this.connect(client, settings);
      await client.bind(user.dn, password);
      return user;
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return null;
      throw unavailable(error, 'the user bind failed');
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  /** The mail or mobile of the entry a DN names (a manager). */
  async contactOf(settings: LdapSettings, dn: string, channel: 'email' | 'sms'): Promise<string | null> {
    const attribute = channel === 'email' ? settings.attributes.email : settings.attributes.phone;
    const entries = await this.search(settings, dn, '(objectClass=*)', 'base', [attribute]).catch((error: unknown) => {
      // A manager DN that is not a valid DN is no manager.
      if (error instanceof DirectoryUnavailable && /DN|syntax/i.test(error.message)) return [];
      throw error;
    });
    return entries[0] ? first(entries[0], attribute) : null;
  }

  /** For "test connection": binds as the service account and reads the base entry. */
  async test(settings: LdapSettings): Promise<{ ok: boolean; message: string }> {
    if (!ldapConfigured(settings)) return { ok: false, message: 'set ldap.url, ldap.bindDn, ldap.bindPassword and ldap.baseDn first' };
    const started = Date.now();
    try {
      const entries = await this.search(settings, settings.baseDn!, '(objectClass=*)', 'base', ['objectClass']);
      if (entries.length === 0) return { ok: false, message: `bound as ${settings.bindDn}, but the base DN ${settings.baseDn} was not found` };
      return { ok: true, message: `bound as ${settings.bindDn} and read ${settings.baseDn} in ${Date.now() - started} ms` };
    } catch (error) {
      return { ok: false, message: error instanceof Error ? error.message : String(error) };
    }
  }

  async close(): Promise<void> {
    const pending = this.service;
    this.service = null;
    const client = pending ? await pending.catch(() => null) : null;
    if (client) await client.unbind().catch(() => undefined);
  }
}

function unavailable(error: unknown, what: string): DirectoryUnavailable {
  const reason = error instanceof Error ? `${error.constructor.name === 'Error' ? '' : `${error.constructor.name}: `}${error.message}` : String(error);
  return new DirectoryUnavailable(`LDAP directory: ${what} (${reason.slice(0, 300)})`);
}

/** A phone number as a directory writes it ("+1 (555) 010-0100"), in E.164, or null. */
export function e164(value: string | null): string | null {
  const compact = value?.replace(/[\s().-]/g, '') ?? '';
  return /^\+[1-9]\d{6,14}$/.test(compact) ? compact : null;
}
