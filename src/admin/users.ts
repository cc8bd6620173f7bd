import { sql } from 'kysely';
import { z } from 'zod';
import type { Authenticator, User } from '../db/schema.js';
import { checkNewUser, createUser, requireUser, setPassword, setStatus, listUsers } from '../directory/users.js';
import { addGroupMember, createGroup, listGroups, removeGroup, removeGroupMember } from '../directory/groups.js';
import { operation, ServiceError } from './service.js';
import { passwordProblem } from '../directory/passwords.js';
import { takeOffTokens } from '../factors/authenticators.js';
import { recoveryCodeStatus, removeRecoveryCodes, type RecoveryCodeStatus } from '../factors/recovery-codes.js';
import { listPasskeys, removePasskeys, type Passkey } from '../factors/passkeys.js';

const username = z.string().min(1, 'name the user').max(128, 'no user has a name that long');
const groupName = z.string().min(1, 'name the group').max(128, 'no group has a name that long');
const optionalText = z.string().max(254).nullable().optional();
// The same rule as the CLI's prompt and the sign-in pages.
const password = z.string().superRefine((value, ctx) => {
  const problem = passwordProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem.replace(/^Password m/, 'm').replace(/\.$/, '') });
});

/** Everything an administrator sees of one user. */
export interface UserDetails {
  user: User;
  groups: string[];
  authenticators: Pick<Authenticator, 'id' | 'type' | 'kind' | 'serial' | 'label' | 'disabled_at' | 'confirmed_at' | 'last_used_at' | 'created_at'>[];
  policies: string[];
  locked: boolean;
  passkeys: Passkey[];
  /** Null: the user has no recovery codes. */
  recoveryCodes: RecoveryCodeStatus | null;
}

export const createUserOp = operation({
  kind: 'change',
  input: z.object({
    username,
    /** Null: a local account that signs in to the portals with a code sent to its verified email. */
    password: password.nullable(),
    email: optionalText,
    emailVerified: z.boolean().default(false),
    phone: optionalText,
    phoneVerified: z.boolean().default(false),
    givenName: optionalText,
    familyName: optionalText,
  }),
  async run({ db }, input) {
    const user = await createUser(db, { ...input, password: input.password ?? undefined });
    return {
      result: user,
      change: {
        type: 'user.created',
        subject: user.id,
        details: { username: user.username, email: user.email, email_verified: user.email_verified, phone: user.phone, phone_verified: user.phone_verified },
      },
    };
  },
});

export const setPasswordOp = operation({
  kind: 'change',
  input: z.object({ username, password }),
  async run({ db }, { username, password }) {
    if ((await requireUser(db, username)).source === 'ldap') throw new ServiceError(`"${username}" signs in with the directory's password: change it in the directory`, 'password');
    const user = await setPassword(db, username, password);
    return { result: user, change: { type: 'user.password_changed', subject: user.id, details: { username: user.username } } };
  },
});

export const setStatusOp = operation({
  kind: 'change',
  input: z.object({ username, status: z.enum(['active', 'disabled']) }),
  async run({ db }, { username, status }) {
    const user = await setStatus(db, username, status);
    return { result: user, change: { type: status === 'active' ? 'user.enabled' : 'user.disabled', subject: user.id, details: { username: user.username } } };
  },
});

export const listUsersOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db }) {
    return { result: await listUsers(db) };
  },
});

/** One page of users, found by a part of their username, email, phone or names. */
export const searchUsersOp = operation({
  kind: 'read',
  input: z.object({
    query: z.string().trim().max(128).default(''),
    page: z.number().int().min(1).max(100_000).default(1),
    pageSize: z.number().int().min(1).max(200).default(25),
  }),
  async run({ db }, { query, page, pageSize }) {
    let q = db.selectFrom('users').selectAll().orderBy('username').limit(pageSize + 1).offset((page - 1) * pageSize);
    if (query) {
      const like = `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      q = q.where((eb) => eb.or(['username', 'email', 'phone', 'given_name', 'family_name'].map((c) => eb(c as 'username', 'ilike', like))));
    }
    const rows = await q.execute();
    return { result: { users: rows.slice(0, pageSize), more: rows.length > pageSize } };
  },
});

export const showUserOp = operation({
  kind: 'read',
  input: z.object({ username }),
  async run({ db }, { username }): Promise<{ result: UserDetails }> {
    const user = await requireUser(db, username);
    const [groups, authenticators, policies, passkeys, recoveryCodes] = await Promise.all([
      db.selectFrom('group_members').innerJoin('groups', 'groups.id', 'group_members.group_id').select('groups.name').where('user_id', '=', user.id).orderBy('groups.name').execute(),
      db.selectFrom('authenticators').select(['id', 'type', 'kind', 'serial', 'label', 'disabled_at', 'confirmed_at', 'last_used_at', 'created_at']).where('user_id', '=', user.id).where('confirmed_at', 'is not', null).orderBy('created_at').execute(),
      db.selectFrom('access_policies').select('name').where('subject_type', '=', 'user').where('subject_id', '=', user.id).orderBy('name').execute(),
      listPasskeys(db, user.id),
      recoveryCodeStatus(db, user.id),
    ]);
    return {
      result: {
        user,
        groups: groups.map((g) => g.name),
        authenticators,
        policies: policies.map((p) => p.name),
        locked: user.locked_until !== null && user.locked_until > new Date(),
        passkeys,
        recoveryCodes,
      },
    };
  },
});

/**
 * Sets a user's names, email and phone and their verified flags. A new address or number is
 * unverified unless the administrator says it is verified.
 */
export const updateUserOp = operation({
  kind: 'change',
  input: z.object({
    username,
    email: optionalText,
    emailVerified: z.boolean().optional(),
    phone: optionalText,
    phoneVerified: z.boolean().optional(),
    givenName: optionalText,
    familyName: optionalText,
  }),
  async run({ db }, input) {
    const user = await requireUser(db, input.username);
    const email = input.email === undefined ? user.email : input.email || null;
    const phone = input.phone === undefined ? user.phone : input.phone || null;
    const next = {
      username: user.username,
      email,
      emailVerified: input.emailVerified ?? (email === user.email ? user.email_verified : false),
      phone,
      phoneVerified: input.phoneVerified ?? (phone === user.phone ? user.phone_verified : false),
      givenName: input.givenName === undefined ? user.given_name : input.givenName || null,
      familyName: input.familyName === undefined ? user.family_name : input.familyName || null,
    };
    checkNewUser(next);
    const changed = Object.fromEntries(
      ([['email', user.email, next.email], ['email_verified', user.email_verified, next.emailVerified], ['phone', user.phone, next.phone], ['phone_verified', user.phone_verified, next.phoneVerified], ['given_name', user.given_name, next.givenName], ['family_name', user.family_name, next.familyName]] as const)
        .filter(([, before, after]) => before !== after)
        .map(([field, , after]) => [field, after]),
    );
    if (Object.keys(changed).length === 0) return { result: user };
    const updated = await db
      .updateTable('users')
      .set({ email: next.email, email_verified: next.emailVerified, phone: next.phone, phone_verified: next.phoneVerified, given_name: next.givenName, family_name: next.familyName, updated_at: sql`now()` })
      .where('id', '=', user.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    return { result: updated, change: { type: 'user.updated', subject: user.id, details: { username: user.username, ...changed } } };
  },
});

/** Ends a lockout now: the failure count and the lock are cleared. */
export const unlockUserOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const user = await requireUser(db, username);
    await db.updateTable('users').set({ failed_logins: 0, locked_until: null }).where('id', '=', user.id).execute();
    return { result: user, change: { type: 'user.unlocked', subject: user.id, details: { username: user.username, failed_logins: user.failed_logins, locked_until: user.locked_until } } };
  },
});

/**
 * Takes every token off a user (a lost or replaced phone): apps are deleted, hardware tokens go back to stock, and the user's
 * recovery codes go too. Sessions that passed one no longer count it as a fresh second factor: they step up again with what the
 * user has left.
 */
export const resetMfaOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const user = await requireUser(db, username);
    const removed = await takeOffTokens(db, user.id);
    const [recoveryCodes, passkeys] = await Promise.all([removeRecoveryCodes(db, user.id), removePasskeys(db, user.id)]);
    await db.deleteFrom('session_factors').where('account_id', '=', user.id).where('factor', '=', 'totp').execute();
    return {
      result: { authenticators: removed.length, passkeys, recoveryCodes },
      change: { type: 'user.mfa_reset', subject: user.id, details: { username: user.username, authenticators: removed.map((r) => r.id), passkeys, recovery_codes: recoveryCodes } },
    };
  },
});

/** Takes one token off a user; sessions that passed an app step up again. */
export const removeAuthenticatorOp = operation({
  kind: 'change',
  input: z.object({ username, authenticatorId: z.uuid('not an authenticator of this user') }),
  async run({ db }, { username, authenticatorId }) {
    const user = await requireUser(db, username);
    const [removed] = await takeOffTokens(db, user.id, [authenticatorId]);
    if (!removed) throw new ServiceError(`user "${user.username}" has no such authenticator`, 'authenticatorId');
    const left = await db.selectFrom('authenticators').select('id').where('user_id', '=', user.id).where('confirmed_at', 'is not', null).executeTakeFirst();
    if (!left) await db.deleteFrom('session_factors').where('account_id', '=', user.id).where('factor', '=', 'totp').execute();
    return { result: undefined, change: { type: 'user.authenticator_removed', subject: user.id, details: { username: user.username, authenticator: removed.id, label: removed.label } } };
  },
});

/** Takes one passkey off a user (named by its id, or by its name where that is unique); sessions that passed a passkey step up again. */
export const removePasskeyOp = operation({
  kind: 'change',
  input: z.object({ username, passkey: z.string().min(1, 'name the passkey').max(1400) }),
  async run({ db }, { username, passkey: named }) {
    const user = await requireUser(db, username);
    const passkeys = await listPasskeys(db, user.id);
    const byId = passkeys.find((p) => p.id === named);
    const byName = passkeys.filter((p) => p.name === named);
    if (!byId && byName.length > 1) throw new ServiceError(`user "${user.username}" has ${byName.length} passkeys named "${named}": name it by its id (user show)`, 'passkey');
    const passkey = byId ?? byName[0];
    if (!passkey || (await removePasskeys(db, user.id, passkey.id)) === 0) throw new ServiceError(`user "${user.username}" has no passkey "${named.slice(0, 80)}"`, 'passkey');
    return { result: passkey, change: { type: 'user.passkey_removed', subject: user.id, details: { username: user.username, passkey: passkey.name } } };
  },
});

/** Voids a user's recovery codes (they may make a new set on /account). */
export const removeRecoveryCodesOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const user = await requireUser(db, username);
    const status = await recoveryCodeStatus(db, user.id);
    const removed = await removeRecoveryCodes(db, user.id);
    if (removed === 0) throw new ServiceError(`user "${user.username}" has no recovery codes`, 'username');
    const unused = Math.min(status?.left ?? 0, removed);
    return { result: { removed, unused }, change: { type: 'user.recovery_codes_removed', subject: user.id, details: { username: user.username, codes: removed, unused } } };
  },
});

/** A group and its members. */
export const showGroupOp = operation({
  kind: 'read',
  input: z.object({ name: groupName }),
  async run({ db }, { name }) {
    const group = await db.selectFrom('groups').selectAll().where('name', '=', name).executeTakeFirst();
    if (!group) throw new ServiceError(`no group "${name}"`, 'name');
    const members = await db
      .selectFrom('group_members')
      .innerJoin('users', 'users.id', 'group_members.user_id')
      .select(['users.username', 'users.given_name', 'users.family_name', 'users.status'])
      .where('group_members.group_id', '=', group.id)
      .orderBy('users.username')
      .execute();
    return { result: { group, members } };
  },
});

/**
 * Removes a user: their account, authenticators, memberships, policies of their own, sessions,
 * grants and tokens. The audit log keeps their history.
 */
export const removeUserOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const user = await requireUser(db, username);
    await db.transaction().execute(async (tx) => {
      await tx.deleteFrom('oidc_models').where(sql<boolean>`payload->>'accountId' = ${user.id}`).execute();
      await tx.deleteFrom('access_policies').where('subject_type', '=', 'user').where('subject_id', '=', user.id).execute();
      await tx.deleteFrom('users').where('id', '=', user.id).execute();
    });
    return { result: user, change: { type: 'user.removed', subject: user.id, details: { username: user.username, email: user.email } } };
  },
});

export const createGroupOp = operation({
  kind: 'change',
  input: z.object({ name: groupName, description: z.string().max(500).nullable().default(null) }),
  async run({ db }, { name, description }) {
    const group = await createGroup(db, name, description);
    return { result: group, change: { type: 'group.created', subject: group.name } };
  },
});

export const addMemberOp = operation({
  kind: 'change',
  input: z.object({ group: groupName, username }),
  async run({ db }, { group, username }) {
    // Already a member: nothing changes and nothing is recorded.
    if (!(await addGroupMember(db, group, username))) return { result: false };
    return { result: true, change: { type: 'group.member_added', subject: group, details: { username } } };
  },
});

export const removeMemberOp = operation({
  kind: 'change',
  input: z.object({ group: groupName, username }),
  async run({ db }, { group, username }) {
    await removeGroupMember(db, group, username);
    return { result: undefined, change: { type: 'group.member_removed', subject: group, details: { username } } };
  },
});

export const removeGroupOp = operation({
  kind: 'change',
  input: z.object({ name: groupName }),
  async run({ db }, { name }) {
    const removed = await removeGroup(db, name);
    // The group's access policies go with it: named in the record, as each is a change to who needs MFA.
    return { result: undefined, change: { type: 'group.removed', subject: name, details: { members: removed.members, policies: removed.policies } } };
  },
});

export const listGroupsOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db }) {
    return { result: await listGroups(db) };
  },
});

