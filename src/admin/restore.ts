import { z } from 'zod';
import { operation } from './service.js';
import { approveRestoreRequest, deleteRestoreRequest, listRestoreRequests } from '../portal/restore.js';

const requestId = z.uuid('a request id is a UUID, as "restore list" shows it');

/** The "User issues": restore-access requests, open ones first. */
export const listRestoreRequestsOp = operation({
  kind: 'read',
  input: z.object({ status: z.enum(['open', 'approved', 'deleted', 'withdrawn', 'all']).default('open'), limit: z.number().int().min(1).max(1000).default(100) }),
  run: async ({ db }, { status, limit }) => ({ result: await listRestoreRequests(db, { status, limit }) }),
});

/**
 * Approves a request once the administrator has checked who the person is: a lost token is
 * disabled, the new password and email applied, sessions revoked, a new token enrolled at the next sign-in.
 */
export const approveRestoreRequestOp = operation({
  kind: 'change',
  input: z.object({ id: requestId }),
  async run({ db, actor }, { id }) {
    const approved = await approveRestoreRequest(db, id, actor.label);
    return {
      result: approved,
      change: {
        type: 'restore.approved',
        subject: approved.userId,
        details: { request: id, username: approved.username, lost: approved.lost, proofs: approved.proofs, new_password: approved.newPassword, new_email: approved.newEmail, disabled_tokens: approved.disabledTokens },
      },
    };
  },
});

export const deleteRestoreRequestOp = operation({
  kind: 'change',
  input: z.object({ id: requestId }),
  async run({ db, actor }, { id }) {
    const deleted = await deleteRestoreRequest(db, id, actor.label);
    return { result: deleted, change: { type: 'restore.deleted', subject: deleted.userId, details: { request: id, username: deleted.username } } };
  },
});
