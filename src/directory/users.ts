import { e164, type DirectoryUser } from './ldap.js';
import { sql } from 'kysely';
import { isUniqueViolation, preparedLookup, type Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import { hashPassword } from './passwords.js';
import { DomainError } from '../domain-error.js';

export interface NewUserInput {
  username: string;
  password?: string;
  email?: string | null;
  emailVerified?: boolean;
  phone?: string | null;
  phoneVerified?: boolean;
  givenName?: string | null;
  familyName?: string | null;
}

export const USERNAME_PATTERN = /^[\p{L}\p{N}._@+-]{1,128}$/u;
export const E164_PATTERN = /^\+[1-9]\d{6,14}$/;
/** An email address as Tessera accepts one: something, @, something, no spaces. */
export const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+$/;

export class DirectoryError extends DomainError {}

/** What can be checked of a new user without the database; throws DirectoryError naming the field. */
export function checkNewUser(input: NewUserInput): void {
  const username = input.username.normalize('NFC');
  if (!USERNAME_PATTERN.test(username)) throw new DirectoryError(`invalid username "${input.username}": use 1-128 letters, digits or . _ @ + -`, 'username');
  if (input.phone && !E164_PATTERN.test(input.phone)) throw new DirectoryError(`invalid phone "${input.phone}": use E.164, e.g. +14155550123`, 'phone');
  if (input.email && (!EMAIL_PATTERN.test(input.email) || /\p{Cc}/u.test(input.email) || input.email.length > 254)) {
    throw new DirectoryError(`invalid email "${input.email.replace(/\p{Cc}/gu, '?').slice(0, 80)}"`, 'email');
  }
  // A verified flag vouches for an address: without the address it would vouch for nothing.
  if (input.phoneVerified && !input.phone) throw new DirectoryError('a phone number can only be marked verified together with the number', 'phoneVerified');
  if (input.emailVerified && !input.email) throw new DirectoryError('an email address can only be marked verified together with the address', 'emailVerified');
  for (const [field, value, what] of [['givenName', input.givenName, 'a given name'], ['familyName', input.familyName, 'a family name']] as const) {
    if (value && (value.length > 200 || /\p{Cc}/u.test(value))) throw new DirectoryError(`${what} is at most 200 characters, without control characters`, field);
  }
}

export async function createUser(db: Db, input: NewUserInput): Promise<User> {
  checkNewUser(input);
  const username = input.username.normalize('NFC');
  if (await findUserByUsername(db, username)) throw new DirectoryError(`user "${username}" already exists`);
  return db
    .insertInto('users')
    .values({
      username,
      password_hash: input.password ? await hashPassword(input.password) : null,
      email: input.email ?? null,
      email_verified: input.emailVerified ?? false,
      phone: input.phone ?? null,
      phone_verified: input.phoneVerified ?? false,
      given_name: input.givenName ?? null,
      family_name: input.familyName ?? null,
    })
    .returningAll()
    .executeTakeFirstOrThrow()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new DirectoryError(`user "${username}" already exists`);
      throw error;
    });
}

const USER_BY_NAME = preparedLookup((db, username: string) =>
  db
    .selectFrom('users')
    .selectAll()
    // Both sides lowered by the database, so the comparison matches the unique index whatever the collation.
    .where(sql`lower(username)`, '=', sql<string>`lower(${username})`));

export function findUserByUsername(db: Db, username: string): Promise<User | undefined> {
  return USER_BY_NAME(db, username.normalize('NFC'));
}

/** A UUID as PostgreSQL's uuid type takes it: anything else is no id, not a failed query. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// Every token request for a user runs this.
const USER_BY_ID = preparedLookup((db, id: string) => db.selectFrom('users').selectAll().where('id', '=', id));

export function findUserById(db: Db, id: string): Promise<User | undefined> {
  if (!UUID.test(id)) return Promise.resolve(undefined);
  return USER_BY_ID(db, id);
}

export async function requireUser(db: Db, username: string): Promise<User> {
  const user = await findUserByUsername(db, username);
  if (!user) throw new DirectoryError(`no user "${username}"`);
  return user;
}

export async function setPassword(db: Db, username: string, password: string): Promise<User> {
  const user = await requireUser(db, username);
  await db
    .updateTable('users')
    .set({ password_hash: await hashPassword(password), failed_logins: 0, locked_until: null, updated_at: sql`now()` })
    .where('id', '=', user.id)
    .execute();
  return user;
}

export async function setStatus(db: Db, username: string, status: 'active' | 'disabled'): Promise<User> {
  const user = await requireUser(db, username);
  await db.updateTable('users').set({ status, updated_at: sql`now()` }).where('id', '=', user.id).execute();
  return user;
}

export function listUsers(db: Db): Promise<User[]> {
  return db.selectFrom('users').selectAll().orderBy('username').execute();
}

/** One attempt at a secret of an account (its password or a second factor), admitted before it is checked. */
export type Admission =
  | { admitted: false; lockedUntil: Date | null }
  | { admitted: true; failedLogins: number; lockedUntil: Date | null; lockStarted: boolean };

/**
 * Admits one attempt, counted in a single UPDATE before the secret is checked, and only while the
 * account is not locked; the attempt that reaches every threshold-th count starts a lock (each
 * lock twice as long as the last). So however many arrive at once, no more than the threshold are
 * ever checked while the account is unlocked, and attempts refused during a lock do not extend it
 * (ZITADEL's GHSA-7h8m-vrxx-vr4m is the cautionary tale). A right answer gives its count back
 * (passedAttempt); a completed login clears the count (successfulLoginStatement).
 */
export async function admitAttempt(
  db: Db,
  userId: string,
  lockout: { threshold: number; baseSeconds: number; maxSeconds: number },
): Promise<Admission> {
  const row = await db
    .updateTable('users')
    .set({
      failed_logins: sql`failed_logins + 1`,
      locked_until: sql`case when (failed_logins + 1) % ${lockout.threshold} = 0
        then now() + make_interval(secs => least(${lockout.maxSeconds}::float8,
          ${lockout.baseSeconds}::float8 * power(2::float8, ((failed_logins + 1) / ${lockout.threshold}) - 1)))
        else locked_until end`,
    })
    .where('id', '=', userId)
    .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', sql<Date>`now()`)]))
    .returning(['failed_logins', 'locked_until'])
    .executeTakeFirst();
  if (!row) {
    const locked = await db.selectFrom('users').select('locked_until').where('id', '=', userId).executeTakeFirst();
    return { admitted: false, lockedUntil: locked?.locked_until ?? null };
  }
  return { admitted: true, failedLogins: row.failed_logins, lockedUntil: row.locked_until, lockStarted: row.failed_logins % lockout.threshold === 0 };
}

/** The admitted attempt was right: its count is given back, and a lock it started is lifted. */
export function passedAttemptStatement(db: Db, userId: string, admission: Admission & { admitted: true }) {
  return db
    .updateTable('users')
    .set({
      failed_logins: sql`greatest(failed_logins - 1, 0)`,
      ...(admission.lockStarted ? { locked_until: null } : {}),
    })
    .where('id', '=', userId);
}

export async function passedAttempt(db: Db, userId: string, admission: Admission & { admitted: true }): Promise<void> {
  await passedAttemptStatement(db, userId, admission).execute();
}

/** A completed login clears the account's failure count and any lock. */
export function successfulLoginStatement(db: Db, user: Pick<User, 'id'>) {
  return db
    .updateTable('users')
    .set({ failed_logins: 0, locked_until: null })
    .where('id', '=', user.id)
    .where((eb) => eb.or([eb('failed_logins', '>', 0), eb('locked_until', 'is not', null)]));
}

/**
 * Creates or updates the local record of a user the LDAP directory just authenticated, so that
 * factors, policies, approvals and the audit log work for them as for local users. The directory
 * is the authority for what it holds: names, email and phone follow it at every sign-in (email
 * and phone as verified: they come from the organisation's directory, not from the user).
 */
export async function syncDirectoryUser(db: Db, entry: DirectoryUser): Promise<User> {
  const username = entry.username.normalize('NFC');
  if (!USERNAME_PATTERN.test(username)) throw new DirectoryError(`the directory's username "${username.slice(0, 60)}" cannot be used here`);
  const email = entry.email && EMAIL_PATTERN.test(entry.email) ? entry.email : null;
  const phone = e164(entry.phone);
  const values = {
    email,
    email_verified: email !== null,
    phone,
    phone_verified: phone !== null,
    given_name: entry.givenName,
    family_name: entry.familyName,
    ldap_dn: entry.dn,
    attributes: JSON.stringify({ manager: entry.manager, groups: entry.groups, directory_id: entry.directoryId }),
  };
  const existing = await findUserByUsername(db, username);
  if (existing) {
    if (existing.source !== 'ldap') throw new DirectoryError(`"${username}" is a local user`);
    // The record belongs to one directory entry: another entry with that name (a second uid value,
    // a name given again to someone new) is not its owner.
    const known = (existing.attributes as Record<string, unknown> | null)?.directory_id;
    const sameEntry = known && entry.directoryId ? known === entry.directoryId : existing.ldap_dn === null || existing.ldap_dn.toLowerCase() === entry.dn.toLowerCase();
    if (!sameEntry) throw new DirectoryError(`"${username}" belongs to another directory entry`);
    return db.updateTable('users').set({ ...values, updated_at: sql`now()` }).where('id', '=', existing.id).returningAll().executeTakeFirstOrThrow();
  }
  return db
    .insertInto('users')
    .values({ username, source: 'ldap', password_hash: null, ...values })
    .onConflict((oc) => oc.expression(sql`lower(username)`).doUpdateSet({ ...values, updated_at: sql`now()` }).where('users.source', '=', 'ldap'))
    .returningAll()
    .executeTakeFirstOrThrow();
}
