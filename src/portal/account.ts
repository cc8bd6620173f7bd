import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { Authenticator, User } from '../db/schema.js';
import { isUniqueViolation } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Audit, AuditType } from '../audit/audit.js';
import type { Config } from '../config.js';
import type { Settings } from '../settings/settings.js';
import type { Delivery } from '../factors/delivery/index.js';
import { DomainError } from '../domain-error.js';
import { admitAttempt, E164_PATTERN, EMAIL_PATTERN, findUserByUsername, passedAttempt, UUID } from '../directory/users.js';
import { DirectoryUnavailable, ldapConfigured, type LdapDirectory } from '../directory/ldap.js';
import { hashPassword, passwordProblem, verifyPassword } from '../directory/passwords.js';
import { channelName, maskEmail, maskPhone, sendCode } from '../factors/index.js';
import { findChallenge, verifyChallenge } from '../factors/challenges.js';
import { beginEnrolment, claimCode, confirmEnrolment, enrolled, PIN_MAX, PIN_MIN, resyncAuthenticator, SERIAL_PATTERN, takeOffTokens, type Enrolment } from '../factors/authenticators.js';
import type { AccountFacts } from './actions.js';

/** A refusal of a self-service change, shown on its form (next to `field`). */
export class AccountError extends DomainError {}

/** A user changing their own account, and where they do it from. */
export interface SelfContext {
  db: Db;
  box: SecretBox;
  audit: Audit;
  config: Config;
  settings: Settings;
  delivery: Delivery;
  otpKey: Buffer;
  /** To keep a new login clear of the names in the LDAP directory. */
  directory: LdapDirectory;
  user: User;
  /** The client of the portal in use (the account portal's own client for /account). */
  clientId: string;
  /** The portal's alias; null for /account. */
  portal: string | null;
  /** A key of this portal session: pending enrolments and code cooldowns belong to it. */
  sessionKey: string;
  ip: string;
  userAgent: string | null;
}

/** Every self-service change is audited with the user as actor and subject. */
async function record(ctx: SelfContext, type: AuditType, details: Record<string, unknown> = {}): Promise<void> {
  await ctx.audit.record({ type, actor: ctx.user.username, subject: ctx.user.id, clientId: ctx.clientId, ip: ctx.ip, userAgent: ctx.userAgent, details: { ...details, portal: ctx.portal ?? 'account' } });
}

/** A token of the user, as the portal lists it. */
export interface OwnToken {
  id: string;
  type: 'totp' | 'hotp';
  kind: 'app' | 'hardware';
  label: string;
  serial: string | null;
  pin: boolean;
  disabled: boolean;
  lastUsedAt: Date | null;
  createdAt: Date;
}

export async function ownTokens(db: Db, userId: string): Promise<OwnToken[]> {
  const rows = await db
    .selectFrom('authenticators')
    .select(['id', 'type', 'kind', 'label', 'serial', 'pin_hash', 'disabled_at', 'last_used_at', 'created_at'])
    .where('user_id', '=', userId)
    .where('confirmed_at', 'is not', null)
    .orderBy('created_at')
    .execute();
  return rows.map((r) => ({ id: r.id, type: r.type, kind: r.kind, label: r.label, serial: r.serial, pin: r.pin_hash !== null, disabled: r.disabled_at !== null, lastUsedAt: r.last_used_at, createdAt: r.created_at }));
}

export function accountFacts(user: User, tokens: OwnToken[]): AccountFacts {
  return { source: user.source, hasPassword: user.password_hash !== null, tokens: tokens.map((t) => ({ pin: t.pin, disabled: t.disabled })) };
}

function localOnly(ctx: SelfContext, what: string): void {
  if (ctx.user.source !== 'local') throw new AccountError(`your ${what} comes from your organisation's directory: change it there`);
}

const NAME_MAX = 100;

export async function changeName(ctx: SelfContext, input: { givenName: string; familyName: string }): Promise<void> {
  localOnly(ctx, 'name');
  const givenName = input.givenName.trim();
  const familyName = input.familyName.trim();
  if (givenName.length > NAME_MAX) throw new AccountError(`a first name is at most ${NAME_MAX} characters`, 'givenName');
  if (familyName.length > NAME_MAX) throw new AccountError(`a last name is at most ${NAME_MAX} characters`, 'familyName');
  await ctx.db.updateTable('users').set({ given_name: givenName || null, family_name: familyName || null, updated_at: sql`now()` }).where('id', '=', ctx.user.id).execute();
  await record(ctx, 'account.name_changed', { given_name: givenName || null, family_name: familyName || null });
}

function checkNewPassword(password: string, confirm: string): void {
  const problem = passwordProblem(password);
  if (problem) throw new AccountError(problem.replace(/\.$/, ''), 'password');
  if (password !== confirm) throw new AccountError('the two new passwords differ', 'confirm');
}

/**
 * Changes the password. The current one is asked unless a second factor was passed moments ago; a
 * wrong current password counts toward the account's lockout like a wrong one at sign-in, admitted
 * before it is checked.
 */
export async function changePassword(ctx: SelfContext, input: { current: string; password: string; confirm: string }, factorIsFresh: boolean): Promise<void> {
  localOnly(ctx, 'password');
  if (!ctx.user.password_hash) throw new AccountError('you have no password yet: create one instead');
  if (!factorIsFresh) {
    if (!input.current) throw new AccountError('type your current password', 'current');
    const admission = await admitAttempt(ctx.db, ctx.user.id, ctx.config.lockout);
    if (!admission.admitted) throw new AccountError('too many wrong attempts: the account is locked for a while', 'current');
    if (!(await verifyPassword(ctx.user.password_hash, input.current))) {
      await record(ctx, 'account.change_refused', { change: 'password', reason: 'wrong current password' });
      throw new AccountError('the current password is wrong', 'current');
    }
    await passedAttempt(ctx.db, ctx.user.id, admission);
  }
  checkNewPassword(input.password, input.confirm);
  if (await verifyPassword(ctx.user.password_hash, input.password)) throw new AccountError('the new password is the one you have now', 'password');
  await ctx.db.updateTable('users').set({ password_hash: await hashPassword(input.password), updated_at: sql`now()` }).where('id', '=', ctx.user.id).execute();
  await record(ctx, 'account.password_changed', { with: factorIsFresh ? 'fresh factor' : 'current password' });
}

/** A first password for a user who signs in with an email code (only after a fresh factor: the route asks for one). */
export async function createPassword(ctx: SelfContext, input: { password: string; confirm: string }): Promise<void> {
  localOnly(ctx, 'password');
  checkNewPassword(input.password, input.confirm);
  const row = await ctx.db
    .updateTable('users')
    .set({ password_hash: await hashPassword(input.password), updated_at: sql`now()` })
    .where('id', '=', ctx.user.id)
    .where('password_hash', 'is', null)
    .returning('id')
    .executeTakeFirst();
  if (!row) throw new AccountError('you already have a password: change it instead');
  await record(ctx, 'account.password_created');
}

export type ContactChannel = 'email' | 'sms';
const CONTACT = {
  email: { column: 'email', verified: 'email_verified', what: 'email address', purpose: 'change-email', started: 'account.email_change_started', changed: 'account.email_changed', mask: maskEmail },
  sms: { column: 'phone', verified: 'phone_verified', what: 'phone number', purpose: 'change-phone', started: 'account.phone_change_started', changed: 'account.phone_changed', mask: maskPhone },
} as const;

function checkContact(channel: ContactChannel, value: string): string {
  const v = value.trim();
  const field = channel === 'email' ? 'email' : 'phone';
  if (!v) throw new AccountError(channel === 'email' ? 'type the new email address' : 'type the new phone number', field);
  if (channel === 'email' && (v.length > 254 || !EMAIL_PATTERN.test(v))) throw new AccountError('that is not an email address', field);
  if (channel === 'sms' && !E164_PATTERN.test(v)) throw new AccountError('type the number in international form, e.g. +15555550100', field);
  return v;
}

/**
 * Starts a change of email address or phone number: a code goes to the new one (the send limits
 * and cooldown of sign-in codes apply); nothing changes until that code comes back.
 */
export async function startContactChange(ctx: SelfContext, channel: ContactChannel, value: string): Promise<{ challengeId: string; masked: string }> {
  const c = CONTACT[channel];
  localOnly(ctx, c.what);
  const destination = checkContact(channel, value);
  const current = ctx.user[c.column];
  if (current && current.toLowerCase() === destination.toLowerCase() && ctx.user[c.verified]) throw new AccountError(`that is your ${c.what} already`, channel === 'email' ? 'email' : 'phone');
  const outcome = await sendCode(
    { db: ctx.db, box: ctx.box, otpKey: ctx.otpKey, delivery: ctx.delivery, settings: ctx.settings, user: ctx.user, interactionUid: `account:${ctx.sessionKey}`, ip: ctx.ip, purpose: c.purpose },
    channel,
    destination,
    (values) => channel === 'email'
      ? { subject: `Confirm your new email address for ${values.app}`, text: `Your ${values.app} confirmation code is ${values.code}.\n\nType it on the page where you changed your email address. It expires in ${values.minutes} minutes. If you did not ask for this, ignore this message.` }
      : { text: `${values.code} confirms this number for ${values.app}. It expires in ${values.minutes} min.` },
  );
  const field = channel === 'email' ? 'email' : 'phone';
  if (outcome.kind === 'refused') {
    const wait = Math.max(1, Math.ceil((outcome.refusal.retryAt.getTime() - Date.now()) / 1000));
    throw new AccountError(outcome.refusal.kind === 'cooldown' ? `a code was sent moments ago: wait ${wait} seconds before asking for another` : 'too many codes were sent: try again later', field);
  }
  if (outcome.kind !== 'sent') throw new AccountError(`the code could not be sent ${channelName(channel)}: check the ${c.what}, or try again later`, field);
  await record(ctx, c.started, { to: c.mask(destination) });
  return { challengeId: outcome.challengeId, masked: c.mask(destination) };
}

/** Where a pending change of address stands: the masked new address, or null when it is not this user's pending change. */
export async function pendingContactChange(ctx: SelfContext, channel: ContactChannel, challengeId: string): Promise<string | null> {
  const challenge = await findChallenge(ctx.db, challengeId, ctx.user.id);
  if (!challenge || challenge.purpose !== CONTACT[channel].purpose || challenge.consumed_at) return null;
  return CONTACT[channel].mask(challenge.destination);
}

/**
 * Confirms a change of address with the code sent to it: the address is changed and marked
 * verified, and the old address is told (a changed address is how an account is taken over).
 */
export async function confirmContactChange(ctx: SelfContext, channel: ContactChannel, challengeId: string, code: string): Promise<void> {
  const c = CONTACT[channel];
  const challenge = await findChallenge(ctx.db, challengeId, ctx.user.id);
  if (!challenge || challenge.purpose !== c.purpose) throw new AccountError('this change was not started here: start again');
  if (!/^\d{4,10}$/.test(code.trim())) throw new AccountError(`type the ${ctx.settings.mfa.otp.length}-digit code`, 'code');
  const outcome = await verifyChallenge(ctx.db, ctx.otpKey, challengeId, ctx.user.id, code.trim());
  if (!outcome.ok) {
    const why = outcome.reason === 'wrong' ? `the code is wrong (${outcome.attemptsLeft} ${outcome.attemptsLeft === 1 ? 'try' : 'tries'} left)` : outcome.reason === 'expired' ? 'the code has expired: start again' : 'this code can no longer be used: start again';
    throw new AccountError(why, 'code');
  }
  const old = ctx.user[c.column];
  const oldVerified = ctx.user[c.verified];
  await ctx.db
    .updateTable('users')
    .set({ [c.column]: outcome.challenge.destination, [c.verified]: true, updated_at: sql`now()` })
    .where('id', '=', ctx.user.id)
    .execute();
  await record(ctx, c.changed, { from: old ? c.mask(old) : null, to: c.mask(outcome.challenge.destination) });
  if (old && oldVerified && old !== outcome.challenge.destination) await tellOldAddress(ctx, channel, old, c.mask(outcome.challenge.destination));
}

async function tellOldAddress(ctx: SelfContext, channel: ContactChannel, old: string, masked: string): Promise<void> {
  const app = ctx.settings.mfa.appName;
  const what = CONTACT[channel].what;
  try {
    await ctx.delivery.send(channel, ctx.settings, channel === 'email'
      ? { to: old, subject: `Your ${app} email address was changed`, text: `The email address of your ${app} account (${ctx.user.username}) was changed to ${masked}.\n\nIf you did not do this, contact your administrator at once.` }
      : { to: old, text: `The phone number of your ${app} account was changed to ${masked}. If this was not you, contact your administrator.` });
  } catch {
    // The change stands; the audit record says who made it.
    await record(ctx, 'account.change_refused', { change: what, reason: 'the old address could not be told' });
  }
}

/** Starts registering an authenticator app: the secret belongs to this portal session until confirmed. */
export function startTokenRegistration(ctx: SelfContext): Promise<Enrolment> {
  return beginEnrolment(ctx.db, ctx.box, ctx.user, ctx.settings.mfa.appName, `account:${ctx.sessionKey}`);
}

/**
 * Confirms the new authenticator with a code from it; the user names it. When it replaces one of
 * their tokens (a re-assignment), that one stops working once the new one is confirmed.
 */
export async function confirmTokenRegistration(ctx: SelfContext, input: { authenticatorId: string; code: string; label: string; replaces?: string }): Promise<void> {
  const label = tokenLabel(input.label, 'Authenticator app');
  const old = input.replaces === undefined ? null : await ownToken(ctx, input.replaces);
  if (!UUID.test(input.authenticatorId)) throw new AccountError('this registration was not started here: start again');
  const pending = await ctx.db
    .selectFrom('authenticators')
    .select('id')
    .where('id', '=', input.authenticatorId)
    .where('user_id', '=', ctx.user.id)
    .where('confirmed_at', 'is', null)
    .where('enrolment_uid', '=', `account:${ctx.sessionKey}`)
    .executeTakeFirst();
  if (!pending) throw new AccountError('this registration was not started here or has expired: start again');
  if (!(await confirmEnrolment(ctx.db, ctx.box, ctx.settings.mfa.totp, ctx.user.id, pending.id, input.code.trim()))) {
    await record(ctx, 'account.change_refused', { change: 'register token', reason: 'wrong code' });
    throw new AccountError('the code does not match: check the app shows this account and type the code it shows now', 'code');
  }
  await ctx.db.updateTable('authenticators').set({ label }).where('id', '=', pending.id).execute();
  if (old) {
    await retireToken(ctx, old);
    await record(ctx, 'account.token_reassigned', { from: old.id, from_label: old.label, to: pending.id, label });
  } else {
    await record(ctx, 'account.token_registered', { authenticator: pending.id, label, type: 'totp' });
  }
}

/** Takes a token off the account (takeOffTokens). Only the user's own tokens: an id from a forged form matches nothing. */
export async function unassignToken(ctx: SelfContext, authenticatorId: string): Promise<void> {
  const token = await ownToken(ctx, authenticatorId);
  await takeOffTokens(ctx.db, ctx.user.id, [token.id]);
  await record(ctx, 'account.token_unassigned', { authenticator: token.id, label: token.label, serial: token.serial });
}

/**
 * Runs one guess at a secret of the account (a token's code, a resync pair) admitted first and
 * counted toward the account lockout like a wrong code at sign-in: a burst of guesses checks no
 * more than the threshold. A right guess gives its count back.
 */
async function guarded(ctx: SelfContext, field: string, check: () => Promise<boolean>): Promise<boolean> {
  const admission = await admitAttempt(ctx.db, ctx.user.id, ctx.config.lockout);
  if (!admission.admitted) throw new AccountError('too many wrong codes: the account is locked for a while', field);
  const right = await check();
  if (right) await passedAttempt(ctx.db, ctx.user.id, admission);
  return right;
}


/** One of the user's own confirmed tokens, by the id a form sent; a forged or foreign id matches nothing. */
async function ownToken(ctx: SelfContext, id: string, options: { working?: boolean } = {}): Promise<Authenticator> {
  const token = UUID.test(id)
    ? await ctx.db.selectFrom('authenticators').selectAll().where('id', '=', id).where('user_id', '=', ctx.user.id).where('confirmed_at', 'is not', null).executeTakeFirst()
    : undefined;
  if (!token) throw new AccountError('choose one of your tokens', 'token');
  // A disabled token signs nobody in: there is nothing to resynchronize or protect with a PIN.
  if (options.working && token.disabled_at) throw new AccountError('this token is disabled: choose another, or unassign it', 'token');
  return token;
}

function tokenLabel(label: string, fallback: string): string {
  const name = label.trim() || fallback;
  if (name.length > 64 || /\p{Cc}/u.test(name)) throw new AccountError('a token name is at most 64 characters', 'label');
  return name;
}

/**
 * Claims a hardware token from the unassigned stock by its serial number and a code it shows: the
 * code is checked (and its use recorded) before the token becomes the user's. A wrong serial and a
 * wrong code get the same answer, so the stock cannot be probed for serial numbers.
 */
async function claimStockToken(ctx: SelfContext, input: { serial: string; code: string; label: string }): Promise<Authenticator> {
  const serial = input.serial.trim();
  const code = input.code.replace(/[\s-]/g, '');
  if (!serial) throw new AccountError('type the serial number printed on the token', 'serial');
  if (!/^\d{6,8}$/.test(code)) throw new AccountError('type the 6- or 8-digit code the token shows now', 'code');
  const label = tokenLabel(input.label, `Token ${serial}`);
  const stock = SERIAL_PATTERN.test(serial)
    ? await ctx.db.selectFrom('authenticators').selectAll().where(sql<string>`lower(serial)`, '=', serial.toLowerCase()).where('kind', '=', 'hardware').where('user_id', 'is', null).where('disabled_at', 'is', null).executeTakeFirst()
    : undefined;
  const right = await guarded(ctx, 'code', async () => Boolean(stock) && claimCode(ctx.db, ctx.box, ctx.settings.mfa.totp, stock!, code));
  if (!right || !stock) {
    await record(ctx, 'account.change_refused', { change: 'register existing token', reason: 'serial and code do not match', serial: serial.slice(0, 64) });
    throw new AccountError('no token in stock has this serial number and shows this code: check both (a button token pressed more than 10 times before it is registered no longer matches: ask your administrator)', 'code');
  }
  const assigned = await ctx.db
    .updateTable('authenticators')
    .set({ user_id: ctx.user.id, confirmed_at: sql`now()`, label })
    .where('id', '=', stock.id)
    .where('user_id', 'is', null)
    .returningAll()
    .executeTakeFirst();
  if (!assigned) throw new AccountError('this token was just registered by someone else', 'serial');
  await enrolled(ctx.db, ctx.user.id);
  return assigned;
}

/** Registers a hardware token the user received, by its serial number and a code from it. */
export async function registerExistingToken(ctx: SelfContext, input: { serial: string; code: string; label: string }): Promise<void> {
  const token = await claimStockToken(ctx, input);
  await record(ctx, 'account.token_registered', { authenticator: token.id, label: token.label, type: token.type, serial: token.serial });
}

/**
 * Exchanges a token for a hardware token from stock: once the new one's code is right, the old one
 * stops working at once (an app's secret deleted, a hardware token disabled and taken back).
 */
export async function reassignToken(ctx: SelfContext, input: { token: string; serial: string; code: string; label: string }): Promise<void> {
  const old = await ownToken(ctx, input.token);
  const replacement = await claimStockToken(ctx, input);
  await retireToken(ctx, old);
  await record(ctx, 'account.token_reassigned', { from: old.id, from_label: old.label, to: replacement.id, serial: replacement.serial });
}

/** The old token of an exchange: it never signs anyone in again. */
async function retireToken(ctx: SelfContext, old: Authenticator): Promise<void> {
  if (old.kind === 'hardware') {
    await ctx.db.updateTable('authenticators').set({ user_id: null, confirmed_at: null, pin_hash: null, pin_position: null, disabled_at: sql`now()` }).where('id', '=', old.id).execute();
  } else {
    await takeOffTokens(ctx.db, ctx.user.id, [old.id]);
  }
}

/**
 * Resynchronises a token from two consecutive codes. Every try is counted toward the lockout; the
 * token's clock or counter only moves forward, so a resync never accepts a used code again.
 */
export async function resyncToken(ctx: SelfContext, input: { token: string; first: string; second: string }): Promise<void> {
  const token = await ownToken(ctx, input.token, { working: true });
  const [first, second] = [input.first, input.second].map((c) => c.replace(/[\s-]/g, ''));
  if (!/^\d{6,8}$/.test(first!)) throw new AccountError('type the code the token shows', 'first');
  if (!/^\d{6,8}$/.test(second!)) throw new AccountError(token.type === 'hotp' ? 'press the button again and type the next code' : 'wait for the next code and type it', 'second');
  if (first === second) throw new AccountError('the two codes are the same: type the next code the token shows', 'second');
  const right = await guarded(ctx, 'second', () => resyncAuthenticator(ctx.db, ctx.box, token, first!, second!));
  if (!right) {
    await record(ctx, 'account.change_refused', { change: 'resync', reason: 'codes do not follow each other', authenticator: token.id });
    throw new AccountError('these are not two consecutive codes of this token: type one code, then the very next one', 'second');
  }
  await record(ctx, 'account.token_resynced', { authenticator: token.id, label: token.label });
}

/**
 * Sets (or replaces) a token's PIN, typed before or after its code from now on. Stored hashed; a
 * wrong PIN fails the code and counts toward the lockout.
 */
export async function setTokenPin(ctx: SelfContext, input: { token: string; pin: string; confirm: string; position: string }): Promise<void> {
  const token = await ownToken(ctx, input.token, { working: true });
  const pin = input.pin.trim();
  if (!new RegExp(`^\\d{${PIN_MIN},${PIN_MAX}}$`).test(pin)) throw new AccountError(`a PIN is ${PIN_MIN} to ${PIN_MAX} digits`, 'pin');
  if (pin !== input.confirm.trim()) throw new AccountError('the two PINs differ', 'confirm');
  if (input.position !== 'before' && input.position !== 'after') throw new AccountError('choose whether you type the PIN before or after the code', 'position');
  await ctx.db.updateTable('authenticators').set({ pin_hash: await hashPassword(pin), pin_position: input.position }).where('id', '=', token.id).where('user_id', '=', ctx.user.id).execute();
  await record(ctx, 'account.pin_set', { authenticator: token.id, label: token.label, position: input.position, replaced: token.pin_hash !== null });
}

export async function removeTokenPin(ctx: SelfContext, input: { token: string }): Promise<void> {
  const token = await ownToken(ctx, input.token);
  if (!token.pin_hash) throw new AccountError('this token has no PIN', 'token');
  await ctx.db.updateTable('authenticators').set({ pin_hash: null, pin_position: null }).where('id', '=', token.id).where('user_id', '=', ctx.user.id).execute();
  await record(ctx, 'account.pin_removed', { authenticator: token.id, label: token.label });
}

/**
 * Changes the login (username). Tokens, sessions and the `sub` of issued tokens stay with the
 * account; applications that link accounts by login name see a new `preferred_username`.
 */
/** The logins users may choose for themselves. */
const CHOSEN_LOGIN = /^[A-Za-z0-9._@+-]{1,128}$/;

export async function changeLogin(ctx: SelfContext, input: { username: string }): Promise<void> {
  localOnly(ctx, 'login');
  const username = input.username.trim();
  // Plain ASCII: a user must not give themselves a name that looks like another's (a Cyrillic а, full-width letters).
  if (!CHOSEN_LOGIN.test(username)) throw new AccountError('a login is 1 to 128 letters a–z, digits or . _ @ + -', 'username');
  if (username === ctx.user.username) throw new AccountError('that is your login already', 'username');
  const taken = await findUserByUsername(ctx.db, username);
  if (taken && taken.id !== ctx.user.id) throw new AccountError('that login is taken: choose another', 'username');
  // A directory user who has not signed in yet has no local record: their name is taken all the same.
  if (ldapConfigured(ctx.settings.ldap)) {
    const inDirectory = await ctx.directory.findUser(ctx.settings.ldap, username).catch((error: unknown) => {
      if (error instanceof DirectoryUnavailable) throw new AccountError('the user directory cannot be reached to check this login: try again later', 'username');
      throw error;
    });
    if (inDirectory) throw new AccountError('that login is taken: choose another', 'username');
  }
  try {
    await ctx.db.updateTable('users').set({ username, updated_at: sql`now()` }).where('id', '=', ctx.user.id).execute();
  } catch (error) {
    if (isUniqueViolation(error)) throw new AccountError('that login is taken: choose another', 'username');
    throw error;
  }
  await record(ctx, 'account.login_changed', { from: ctx.user.username, to: username });
}
