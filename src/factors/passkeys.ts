import type {
  AuthenticationResponseJSON, PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON, RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { sql } from 'kysely';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import { DomainError } from '../domain-error.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';

/** A refusal of a passkey ceremony or change, in words for the user. */
export class PasskeyError extends DomainError {}

/**
 * The WebAuthn relying party: the issuer's host is its id and the issuer's origin the only origin a
 * signature counts from, so a phishing site's page can never produce one (http://localhost works in development).
 */
export interface RelyingParty {
  id: string;
  origin: string;
  name: string;
}

export function relyingPartyOf(issuer: string, name: string): RelyingParty {
  const url = new URL(issuer);
  return { id: url.hostname, origin: url.origin, name };
}

/** The WebAuthn library, loaded at the first ceremony: it is large (about 25 MiB resident) and many deployments have no passkeys. */
const webauthn = () => import('@simplewebauthn/server');

/** A ceremony must end within this time after its options were made. */
const CEREMONY_SECONDS = 300;
export const PASSKEY_NAME_MAX = 64;

/** A passkey of a user, as pages list it. */
export interface Passkey {
  id: string;
  name: string;
  /** Synced between devices (a software key that travels) or bound to one authenticator. */
  synced: boolean;
  createdAt: Date;
  lastUsedAt: Date | null;
}

// What the browser sends back, checked for shape before the library reads it; ids and data are base64url.
const b64 = z.string().regex(/^[A-Za-z0-9_-]*={0,2}$/).max(16_384);
const registrationJson = z.object({
  id: b64.min(1).max(1400),
  rawId: b64.min(1).max(1400),
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64, attestationObject: b64, transports: z.array(z.string().max(32)).max(10).optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.enum(['platform', 'cross-platform']).optional(),
}).passthrough();
const authenticationJson = z.object({
  id: b64.min(1).max(1400),
  rawId: b64.min(1).max(1400),
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64, authenticatorData: b64, signature: b64, userHandle: b64.optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.enum(['platform', 'cross-platform']).optional(),
}).passthrough();

/** The browser's answer as posted (a JSON text), or null when it cannot be one. */
export function readRegistration(posted: string): RegistrationResponseJSON | null {
  return parseJson(posted, registrationJson) as RegistrationResponseJSON | null;
}
export function readAssertion(posted: string): AuthenticationResponseJSON | null {
  return parseJson(posted, authenticationJson) as AuthenticationResponseJSON | null;
}
function parseJson(posted: string, schema: z.ZodType): unknown {
  if (posted.length === 0 || posted.length > 40_000) return null;
  try {
    const parsed = schema.safeParse(JSON.parse(posted));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** Keeps the challenge of a new ceremony, replacing the one before it for the same user, kind and binding. */
async function keepChallenge(db: Db, userId: string, ceremony: 'register' | 'authenticate', boundTo: string, challenge: string): Promise<void> {
  const expiresAt = new Date(Date.now() + CEREMONY_SECONDS * 1000);
  await db
    .insertInto('webauthn_challenges')
    .values({ user_id: userId, ceremony, bound_to: boundTo, challenge, expires_at: expiresAt })
    .onConflict((oc) => oc.columns(['user_id', 'ceremony', 'bound_to']).doUpdateSet({ challenge, expires_at: expiresAt }))
    .execute();
}

/** Takes the challenge, once: of two answers to one ceremony only the first is checked. */
async function takeChallenge(db: Db, userId: string, ceremony: 'register' | 'authenticate', boundTo: string): Promise<string | null> {
  const row = await db
    .deleteFrom('webauthn_challenges')
    .where('user_id', '=', userId)
    .where('ceremony', '=', ceremony)
    .where('bound_to', '=', boundTo)
    .returning(['challenge', 'expires_at'])
    .executeTakeFirst();
  return row && row.expires_at > new Date() ? row.challenge : null;
}

/** Drops the challenges of ceremonies nobody finished. */
export async function purgeExpiredCeremonies(db: Db): Promise<void> {
  await db.deleteFrom('webauthn_challenges').where('expires_at', '<', sql<Date>`now()`).execute();
}

export async function listPasskeys(db: Db, userId: string): Promise<Passkey[]> {
  const rows = await db
    .selectFrom('webauthn_credentials')
    .select(['id', 'name', 'device_type', 'created_at', 'last_used_at'])
    .where('user_id', '=', userId)
    .orderBy('created_at')
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, synced: r.device_type === 'multiDevice', createdAt: r.created_at, lastUsedAt: r.last_used_at }));
}

/** The options for adding a passkey; the user's passkeys are excluded, so one authenticator is not added twice. */
export async function registrationOptions(db: Db, rp: RelyingParty, user: User, boundTo: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const existing = await db.selectFrom('webauthn_credentials').select(['id', 'transports']).where('user_id', '=', user.id).execute();
  const options = await (await webauthn()).generateRegistrationOptions({
    rpName: rp.name,
    rpID: rp.id,
    userName: user.username,
    userDisplayName: [user.given_name, user.family_name].filter(Boolean).join(' ') || user.username,
    userID: new TextEncoder().encode(user.id),
    timeout: CEREMONY_SECONDS * 1000,
    attestationType: 'none',
    excludeCredentials: existing.map((c) => ({ id: c.id, transports: c.transports })),
    // A passkey where the device can keep one, a security key otherwise; a PIN or biometric where there is one.
    authenticatorSelection: { residentKey: 'preferred', userVerification: 'preferred' },
  });
  await keepChallenge(db, user.id, 'register', boundTo, options.challenge);
  return options;
}

/** Checks the browser's answer to the registration options and keeps the new passkey; `amr` is what making it proved. */
export async function addPasskey(db: Db, rp: RelyingParty, user: User, boundTo: string, posted: string, name: string): Promise<Passkey & { amr: AuthenticationMethod[] }> {
  const response = readRegistration(posted);
  if (!response) throw new PasskeyError('your browser did not create a passkey: try again', 'passkey');
  const expectedChallenge = await takeChallenge(db, user.id, 'register', boundTo);
  if (!expectedChallenge) throw new PasskeyError('that took too long, or the page was used twice: press "Add a passkey" again', 'passkey');
  let verified;
  try {
    verified = await (await webauthn()).verifyRegistrationResponse({ response, expectedChallenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: false });
  } catch {
    verified = null;
  }
  if (!verified?.verified) throw new PasskeyError('the passkey could not be verified: try again', 'passkey');
  const info = verified.registrationInfo;
  const label = passkeyName(name, info.credentialDeviceType === 'multiDevice' ? 'Passkey' : 'Security key');
  const inserted = await db
    .insertInto('webauthn_credentials')
    .values({
      id: info.credential.id,
      user_id: user.id,
      name: label,
      public_key: Buffer.from(info.credential.publicKey),
      counter: info.credential.counter,
      transports: (info.credential.transports ?? []).slice(0, 10),
      device_type: info.credentialDeviceType,
      backed_up: info.credentialBackedUp,
      aaguid: info.aaguid,
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .returning(['id', 'name', 'device_type', 'created_at', 'last_used_at'])
    .executeTakeFirst();
  if (!inserted) throw new PasskeyError('this passkey is already registered', 'passkey');
  return { id: inserted.id, name: inserted.name, synced: inserted.device_type === 'multiDevice', createdAt: inserted.created_at, lastUsedAt: null, amr: amrOf(info.credentialDeviceType, info.userVerified) };
}

/** What the account's owner is told when a passkey is added: a key they did not add is theirs to report. */
export function passkeyAddedNotice(app: string, username: string, passkey: string): { subject: string; text: string } {
  return {
    subject: `A passkey was added to your ${app} account`,
    text: `The passkey "${passkey}" was just added to your ${app} account ${username}: sign-ins can use it from now on.\n\n` +
      'If this was you, there is nothing to do. If it was not, remove it on your account page, change your password and tell your administrator now.',
  };
}

/** The options for signing in with one of the user's passkeys, bound to this sign-in. */
export async function authenticationOptions(db: Db, rp: RelyingParty, userId: string, boundTo: string): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const credentials = await db.selectFrom('webauthn_credentials').select(['id', 'transports']).where('user_id', '=', userId).execute();
  const options = await (await webauthn()).generateAuthenticationOptions({
    rpID: rp.id,
    allowCredentials: credentials.map((c) => ({ id: c.id, transports: c.transports })),
    userVerification: 'preferred',
    timeout: CEREMONY_SECONDS * 1000,
  });
  await keepChallenge(db, userId, 'authenticate', boundTo, options.challenge);
  return options;
}

export type PasskeyVerdict = { ok: true; amr: AuthenticationMethod[]; credentialId: string } | { ok: false; reason: 'malformed' | 'expired' | 'wrong' | 'replayed' };

/**
 * Checks a signed assertion: the challenge of this sign-in (taken once), one of the user's own
 * credentials, the issuer's origin and host, the signature, and a signature counter that moved on
 * (a copied authenticator or a replayed answer does not). The amr it proves: hwk for a key bound to
 * one authenticator, swk for a synced passkey, and user when the user was verified.
 */
export async function verifyPasskey(db: Db, rp: RelyingParty, userId: string, boundTo: string, posted: string): Promise<PasskeyVerdict> {
  const response = readAssertion(posted);
  if (!response) return { ok: false, reason: 'malformed' };
  const expectedChallenge = await takeChallenge(db, userId, 'authenticate', boundTo);
  if (!expectedChallenge) return { ok: false, reason: 'expired' };
  const credential = await db.selectFrom('webauthn_credentials').selectAll().where('id', '=', response.id).where('user_id', '=', userId).executeTakeFirst();
  if (!credential) return { ok: false, reason: 'wrong' };
  let info;
  try {
    const verified = await (await webauthn()).verifyAuthenticationResponse({
      response,
      expectedChallenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      credential: { id: credential.id, publicKey: new Uint8Array(credential.public_key), counter: Number(credential.counter), transports: credential.transports },
      requireUserVerification: false,
    });
    if (!verified.verified) return { ok: false, reason: 'wrong' };
    info = verified.authenticationInfo;
  } catch (error) {
    return { ok: false, reason: error instanceof Error && /counter/i.test(error.message) ? 'replayed' : 'wrong' };
  }
  // The counter moves on in the same statement that checks it, so of two answers with one count only one passes.
  const moved = await db
    .updateTable('webauthn_credentials')
    .set({ counter: info.newCounter, last_used_at: sql`now()`, backed_up: info.credentialBackedUp })
    .where('id', '=', credential.id)
    // An authenticator that keeps no count (0, as synced passkeys do) relies on the single-use challenge.
    .where('counter', info.newCounter === 0 ? '=' : '<', String(info.newCounter))
    .returning('id')
    .executeTakeFirst();
  if (!moved) return { ok: false, reason: 'replayed' };
  return { ok: true, amr: amrOf(credential.device_type, info.userVerified), credentialId: credential.id };
}

/** RFC 8176: hwk for a key bound to one authenticator, swk for a synced (software) passkey; user when the user was verified. */
function amrOf(deviceType: 'singleDevice' | 'multiDevice', userVerified: boolean): AuthenticationMethod[] {
  return [deviceType === 'singleDevice' ? 'hwk' : 'swk', ...(userVerified ? ['user' as const] : [])];
}

/** A passkey's name as typed: plain text of at most 64 characters (it is shown in lists and the CLI's output). */
function passkeyName(typed: string, fallback: string): string {
  const name = typed.trim() || fallback;
  if (name.length > PASSKEY_NAME_MAX || /\p{Cc}/u.test(name)) throw new PasskeyError(`a passkey's name is at most ${PASSKEY_NAME_MAX} characters of plain text`, 'name');
  return name;
}

export async function renamePasskey(db: Db, userId: string, id: string, name: string): Promise<boolean> {
  if (!name.trim()) throw new PasskeyError('give the passkey a name', 'name');
  const label = passkeyName(name, '');
  const result = await db.updateTable('webauthn_credentials').set({ name: label }).where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/**
 * Removes one passkey of the user, or all of them (id null: an administrator's reset); returns how
 * many. Sessions that passed a passkey no longer count it (which one was used is not kept): they step
 * up again, so a removed stolen key leaves no session behind.
 */
export async function removePasskeys(db: Db, userId: string, id: string | null = null): Promise<number> {
  let query = db.deleteFrom('webauthn_credentials').where('user_id', '=', userId);
  if (id !== null) query = query.where('id', '=', id);
  const removed = Number((await query.executeTakeFirst()).numDeletedRows);
  if (removed > 0) await db.deleteFrom('session_factors').where('account_id', '=', userId).where('factor', '=', 'webauthn').execute();
  return removed;
}
