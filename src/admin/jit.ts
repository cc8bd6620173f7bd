import { z } from 'zod';
import { operation } from './service.js';
import { findUserByUsername } from '../directory/users.js';
import { disableSharedAccount, enableSharedAccount, JIT_MINUTES, JitError, listReservations, listSharedAccounts, release } from '../jit/shared-accounts.js';

const username = z.string().min(1, 'name the shared account').max(128, 'no username is that long');

/** Marks an account shared just in time (creating it, and its group, when absent), or changes its group or time. */
export const enableJitOp = operation({
  kind: 'change',
  input: z.object({
    username,
    group: z.string().min(1, 'name the group whose members may reserve it').max(128),
    minutes: z.number().int().min(JIT_MINUTES.min, `at least ${JIT_MINUTES.min} minute`).max(JIT_MINUTES.max, `at most ${JIT_MINUTES.max} minutes`).default(JIT_MINUTES.default),
  }),
  async run({ db }, input) {
    const done = await enableSharedAccount(db, input);
    return {
      result: done,
      change: { type: 'jit.enabled', subject: done.account.userId, details: { username: done.account.username, group: done.account.group, minutes: done.account.minutes, created_user: done.createdUser, created_group: done.createdGroup } },
    };
  },
});

export const disableJitOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const { userId, releasedFrom } = await disableSharedAccount(db, username);
    return { result: undefined, change: { type: 'jit.disabled', subject: userId, details: { username, ...(releasedFrom ? { released_member_id: releasedFrom } : {}) } } };
  },
});

export const listJitOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listSharedAccounts(db) }) });

export const listReservationsOp = operation({
  kind: 'read',
  input: z.object({ limit: z.number().int().min(1).max(1000).default(100) }),
  run: async ({ db }, { limit }) => ({ result: await listReservations(db, { limit }) }),
});

/** Ends the live reservation of a shared account, whoever holds it (a member who left, a mistake). */
export const releaseJitOp = operation({
  kind: 'change',
  input: z.object({ username }),
  async run({ db }, { username }) {
    const user = await findUserByUsername(db, username);
    const shared = user && (await listSharedAccounts(db, { userId: user.id }))[0];
    if (!shared) throw new JitError(`${username} is not a shared account`, 'username');
    const ended = await release(db, { sharedUserId: shared.userId });
    if (!ended) throw new JitError(`nobody holds ${shared.username} now`);
    return { result: { member: shared.holder?.username ?? null }, change: { type: 'jit.released', subject: shared.userId, details: { username: shared.username, member_id: ended.memberId, by: 'administrator' } } };
  },
});
