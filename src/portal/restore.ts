import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { RestoreLoss, User } from '../db/schema.js';
import type { Settings } from '../settings/settings.js';
import { tellOwner, type Delivery } from '../factors/delivery/index.js';
import type { Logger } from '../log.js';
import { DomainError } from '../domain-error.js';

/** A refusal in the restore-access flow or of an administrator's decision. */
export class RestoreError extends DomainError {}

export const RESTORE_LOSSES = ['token', 'password', 'email'] as const satisfies readonly RestoreLoss[];

/** Each authenticator the user has: proved in the request (true), or lost, failed or not tried (false). Absent: the user has none. */
export type RestoreProofs = Partial<Record<RestoreLoss, boolean>>;

/** What a user's account has that could prove them: a working token, a password, a verified email address. */
export async function provableFactors(db: Db, user: User): Promise<Record<RestoreLoss, boolean>> {
  const token = await db.selectFrom('authenticators').select('id').where('user_id', '=', user.id).where('confirmed_at', 'is not', null).where('disabled_at', 'is', null).executeTakeFirst();
  return { token: Boolean(token), password: user.password_hash !== null, email: Boolean(user.email) && user.email_verified };
}

export interface NewRestoreRequest {
  user: User;
  /** The draft this request comes from: filed once, however often the draft is sent. */
  draftId: string;
  portal: string | null;
  lost: RestoreLoss[];
  proofs: RestoreProofs;
  newPasswordHash: string | null;
  newEmail: string | null;
  ip: string;
  userAgent: string | null;
}

/**
 * Files a request for an administrator. A user may have several open requests: one filed by
 * someone else must not hide the user's own; the administrator sees them side by side and approving
 * one deletes the others. A draft sent again files nothing (null).
 */
export async function fileRestoreRequest(db: Db, request: NewRestoreRequest): Promise<string | null> {
  const row = await db
    .insertInto('restore_requests')
    .values({
      user_id: request.user.id,
      draft_id: request.draftId,
      portal: request.portal,
      lost: request.lost,
      proofs: JSON.stringify(request.proofs),
      new_password_hash: request.newPasswordHash,
      new_email: request.newEmail,
      ip: request.ip,
      user_agent: request.userAgent?.slice(0, 512) ?? null,
    })
    .onConflict((oc) => oc.column('draft_id').doNothing())
    .returning('id')
    .executeTakeFirst();
  return row?.id ?? null;
}

/** A request as the administrator's "User issues" list shows it. */
export interface RestoreRequestView {
  id: string;
  username: string;
  userId: string;
  portal: string | null;
  lost: RestoreLoss[];
  proofs: RestoreProofs;
  newPassword: boolean;
  newEmail: string | null;
  status: 'open' | 'approved' | 'deleted' | 'withdrawn';
  ip: string | null;
  createdAt: Date;
  decidedAt: Date | null;
  decidedBy: string | null;
  /** How many requests of this user are open now (more than one: someone else may have asked too). */
  openForUser: number;
}

export async function listRestoreRequests(db: Db, options: { status?: RestoreRequestView['status'] | 'all'; limit?: number } = {}): Promise<RestoreRequestView[]> {
  const rows = await db
    .selectFrom('restore_requests')
    .innerJoin('users', 'users.id', 'restore_requests.user_id')
    .select([
      'restore_requests.id', 'users.username', 'restore_requests.user_id', 'restore_requests.portal', 'restore_requests.lost', 'restore_requests.proofs',
      'restore_requests.new_password_hash', 'restore_requests.new_email', 'restore_requests.status', 'restore_requests.ip', 'restore_requests.created_at',
      'restore_requests.decided_at', 'restore_requests.decided_by',
      sql<number>`(select count(*)::int from restore_requests o where o.user_id = restore_requests.user_id and o.status = 'open')`.as('open_for_user'),
    ])
    .$if(options.status !== undefined && options.status !== 'all', (q) => q.where('restore_requests.status', '=', options.status as RestoreRequestView['status']))
    // Open ones first, then the latest decisions.
    .orderBy(sql`restore_requests.status = 'open'`, 'desc')
    .orderBy('restore_requests.created_at', 'desc')
    .limit(options.limit ?? 100)
    .execute();
  return rows.map((r) => ({
    id: r.id, username: r.username, userId: r.user_id, portal: r.portal, lost: r.lost, proofs: r.proofs, newPassword: r.new_password_hash !== null,
    newEmail: r.new_email, status: r.status, ip: r.ip, createdAt: r.created_at, decidedAt: r.decided_at, decidedBy: r.decided_by, openForUser: r.open_for_user,
  }));
}

/**
 * Approves an open request, in one transaction: a lost token is disabled (all the user's tokens:
 * which one is lost cannot be told), the new password and the new (verified) email applied, every
 * session, grant and token of the user revoked, and a new token must be enrolled at the next
 * sign-in where one was lost. Decided once: a second decision finds nothing open.
 */
export async function approveRestoreRequest(db: Db, id: string, decidedBy: string): Promise<RestoreRequestView & { disabledTokens: number }> {
  return db.transaction().execute(async (tx) => {
    const request = await tx
      .updateTable('restore_requests')
      .set({ status: 'approved', decided_at: sql`now()`, decided_by: decidedBy })
      .where('id', '=', id)
      .where('status', '=', 'open')
      .returningAll()
      .executeTakeFirst();
    if (!request) throw new RestoreError('there is no open request with this id (decided already, or withdrawn)', 'id');
    let disabledTokens = 0;
    if (request.lost.includes('token')) {
      const disabled = await tx.updateTable('authenticators').set({ disabled_at: sql`now()` }).where('user_id', '=', request.user_id).where('disabled_at', 'is', null).returning('id').execute();
      disabledTokens = disabled.length;
      await tx.deleteFrom('session_factors').where('account_id', '=', request.user_id).where('factor', '=', 'totp').execute();
    }
    await tx
      .updateTable('users')
      .set({
        ...(request.new_password_hash ? { password_hash: request.new_password_hash } : {}),
        ...(request.new_email ? { email: request.new_email, email_verified: true } : {}),
        ...(request.lost.includes('token') ? { must_enrol: true } : {}),
        failed_logins: 0,
        locked_until: null,
        updated_at: sql`now()`,
      })
      .where('id', '=', request.user_id)
      .execute();
    // The user's other open requests go with this decision: the administrator chose this one.
    await tx
      .updateTable('restore_requests')
      .set({ status: 'deleted', decided_at: sql`now()`, decided_by: `${decidedBy} (approved ${request.id})`, new_password_hash: null })
      .where('user_id', '=', request.user_id)
      .where('status', '=', 'open')
      .execute();
    await tx.deleteFrom('oidc_models').where(sql<boolean>`payload->>'accountId' = ${request.user_id}`).execute();
    await tx.deleteFrom('app_sessions').where('user_id', '=', request.user_id).execute();
    const user = await tx.selectFrom('users').select('username').where('id', '=', request.user_id).executeTakeFirstOrThrow();
    return {
      id: request.id, username: user.username, userId: request.user_id, portal: request.portal, lost: request.lost, proofs: request.proofs,
      newPassword: request.new_password_hash !== null, newEmail: request.new_email, status: 'approved', ip: request.ip, createdAt: request.created_at,
      decidedAt: new Date(), decidedBy, openForUser: 0, disabledTokens,
    };
  });
}

/** Deletes an open request (filed by mistake, or not by the user): nothing of the account changes. */
export async function deleteRestoreRequest(db: Db, id: string, decidedBy: string): Promise<{ userId: string; username: string }> {
  const row = await db
    .updateTable('restore_requests')
    .set({ status: 'deleted', decided_at: sql`now()`, decided_by: decidedBy, new_password_hash: null })
    .where('id', '=', id)
    .where('status', '=', 'open')
    .returning('user_id')
    .executeTakeFirst();
  if (!row) throw new RestoreError('there is no open request with this id (decided already, or withdrawn)', 'id');
  const user = await db.selectFrom('users').select('username').where('id', '=', row.user_id).executeTakeFirstOrThrow();
  return { userId: row.user_id, username: user.username };
}

/**
 * A completed sign-in with the account's own credentials withdraws its open request: the user got
 * back in, or the request was not theirs. Returns the withdrawn requests' ids.
 */
export function withdrawOnSignInStatement(db: Db, userId: string) {
  return db
    .updateTable('restore_requests')
    .set({ status: 'withdrawn', decided_at: sql`now()`, decided_by: 'sign-in', new_password_hash: null })
    .where('user_id', '=', userId)
    .where('status', '=', 'open')
    .returning('id');
}

/** Tells the administrators (members of "admins" with a verified email) of a new request, when the setting asks for it. */
export async function notifyAdministrators(db: Db, delivery: Delivery, settings: Settings, log: Logger, request: { username: string; lost: RestoreLoss[] }, consoleUrl: string): Promise<number> {
  if (!settings.account.notifyRestoreRequests) return 0;
  const admins = await db
    .selectFrom('users')
    .innerJoin('group_members', 'group_members.user_id', 'users.id')
    .innerJoin('groups', 'groups.id', 'group_members.group_id')
    .select('users.email')
    .where('groups.name', '=', 'admins')
    .where('users.status', '=', 'active')
    .where('users.email_verified', '=', true)
    .where('users.email', 'is not', null)
    .execute();
  let told = 0;
  for (const { email } of admins) {
    try {
      await delivery.send('email', settings, {
        to: email!,
        subject: `${settings.mfa.appName}: ${request.username} asks to restore access`,
        text: `${request.username} says they lost: ${request.lost.join(', ')}.\n\nConfirm who they are before you approve. Open the request: ${consoleUrl}\n`,
      });
      told++;
    } catch (error) {
      log.warn({ err: error instanceof Error ? error.message : String(error) }, 'an administrator could not be told of a restore request');
    }
  }
  return told;
}

/**
 * Tells the account's owner, at the verified address on record, that someone asked to restore
 * access to it: a request they did not make is then theirs to report before anyone approves it.
 */
export async function tellAccountOwner(delivery: Delivery, settings: Settings, log: Logger, user: User, lost: RestoreLoss[]): Promise<boolean> {
  return tellOwner(delivery, settings, log, user, {
    subject: `${settings.mfa.appName}: someone asked to restore access to your account`,
    text: `Someone asked your administrator to restore access to your account ${user.username} (lost: ${lost.join(', ')}).\n\nIf it was you, your administrator will check who you are before anything changes. If it was not you, tell your administrator now; signing in as usual also withdraws the request.\n`,
  });
}
