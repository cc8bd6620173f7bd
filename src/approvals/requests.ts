import { createHmac, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { ApprovalProfile, ApprovalRequest, ApprovalStatus, User } from '../db/schema.js';

/** The link's secret: 32 random bytes in the URL; only a keyed hash of it is stored. */
export const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export const hashToken = (key: Buffer, token: string) => createHmac('sha256', key).update(token).digest('base64url');

export interface NewRequest {
  profile: ApprovalProfile;
  user: Pick<User, 'id'>;
  clientId: string;
  interactionUid: string | null;
  recipient: string | null;
  recipientSource: string;
  ip: string | null;
  userAgent: string | null;
}

/** Records a request; an approval request gets a link token (returned once), an information none. */
export async function createRequest(db: Db, key: Buffer, r: NewRequest): Promise<{ request: ApprovalRequest; token: string | null }> {
  const approve = r.profile.mode === 'approve';
  const token = approve ? randomBytes(32).toString('base64url') : null;
  // One open link per sign-in: asking again (or a replayed password step) closes the earlier one.
  if (approve && r.interactionUid) {
    await db.updateTable('approval_requests').set({ status: 'expired', expires_at: sql`now()` }).where('interaction_uid', '=', r.interactionUid).where('status', '=', 'pending').execute();
  }
  const request = await db
    .insertInto('approval_requests')
    .values({
      token_hash: token ? hashToken(key, token) : null,
      profile: r.profile.name,
      mode: r.profile.mode,
      user_id: r.user.id,
      client_id: r.clientId,
      interaction_uid: r.interactionUid,
      status: approve ? 'pending' : 'informed',
      recipient: r.recipient,
      recipient_source: r.recipientSource,
      ip: r.ip,
      user_agent: r.userAgent,
      expires_at: new Date(Date.now() + (approve ? r.profile.link_minutes * 60_000 : 0)),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { request, token };
}

/** A request could not be sent to anyone: it stays on record, undecided and unusable. */
export async function markUndeliverable(db: Db, id: string): Promise<void> {
  await db.updateTable('approval_requests').set({ status: 'undeliverable', token_hash: null }).where('id', '=', id).execute();
}

/** The request behind a link, with its status as of now (a pending one past its time is expired). */
export async function findByToken(db: Db, key: Buffer, token: string): Promise<ApprovalRequest | undefined> {
  if (!TOKEN_PATTERN.test(token)) return undefined;
  const row = await db.selectFrom('approval_requests').selectAll().where('token_hash', '=', hashToken(key, token)).executeTakeFirst();
  return row && withExpiry(row);
}

function withExpiry(row: ApprovalRequest): ApprovalRequest {
  return row.status === 'pending' && row.expires_at <= new Date() ? { ...row, status: 'expired' } : row;
}

export type DecideOutcome = { decided: true; request: ApprovalRequest } | { decided: false; request: ApprovalRequest | undefined };

/**
 * Decides a pending request in one statement: of any number of simultaneous decisions on a link,
 * exactly one takes effect; a decided or expired link decides nothing.
 */
export async function decide(db: Db, key: Buffer, token: string, decision: 'approved' | 'rejected', ip: string | null): Promise<DecideOutcome> {
  if (!TOKEN_PATTERN.test(token)) return { decided: false, request: undefined };
  const row = await db
    .updateTable('approval_requests')
    .set({ status: decision, decided_at: sql`now()`, decided_ip: ip })
    .where('token_hash', '=', hashToken(key, token))
    .where('status', '=', 'pending')
    .where('expires_at', '>', sql<Date>`now()`)
    .returningAll()
    .executeTakeFirst();
  if (row) return { decided: true, request: row };
  return { decided: false, request: await findByToken(db, key, token) };
}

/** The user stopped waiting: the open link decides nothing any more. Returns the request it closed. */
export async function cancelPending(db: Db, interactionUid: string): Promise<ApprovalRequest | undefined> {
  return db
    .updateTable('approval_requests')
    .set({ status: 'cancelled', decided_at: sql`now()` })
    .where('interaction_uid', '=', interactionUid)
    .where('status', '=', 'pending')
    .returningAll()
    .executeTakeFirst();
}

/** The newest request of a sign-in (an interaction may ask again after one expired). */
export async function latestForInteraction(db: Db, interactionUid: string): Promise<ApprovalRequest | undefined> {
  const row = await db.selectFrom('approval_requests').selectAll().where('interaction_uid', '=', interactionUid).orderBy('created_at', 'desc').limit(1).executeTakeFirst();
  return row && withExpiry(row);
}

export interface RequestLine extends ApprovalRequest {
  username: string;
}

export async function listRequests(db: Db, filter: { status?: ApprovalStatus; limit: number }): Promise<RequestLine[]> {
  let q = db
    .selectFrom('approval_requests')
    .innerJoin('users', 'users.id', 'approval_requests.user_id')
    .selectAll('approval_requests')
    .select('users.username')
    .orderBy('approval_requests.created_at', 'desc')
    .limit(filter.limit);
  const status = 'approval_requests.status';
  const expires = 'approval_requests.expires_at';
  if (filter.status === 'expired') q = q.where((eb) => eb.or([eb(status, '=', 'expired'), eb.and([eb(status, '=', 'pending'), eb(expires, '<=', sql<Date>`now()`)])]));
  else if (filter.status === 'pending') q = q.where(status, '=', 'pending').where(expires, '>', sql<Date>`now()`);
  else if (filter.status) q = q.where(status, '=', filter.status);
  return (await q.execute()).map((r) => withExpiry(r) as RequestLine);
}

/** Pending requests past their time become expired (kept on record), and session approvals past theirs go. */
export async function sweepApprovals(db: Db): Promise<void> {
  await db.updateTable('approval_requests').set({ status: 'expired' }).where('status', '=', 'pending').where('expires_at', '<=', sql<Date>`now()`).execute();
  await db.deleteFrom('session_approvals').where('expires_at', '<', sql<Date>`now()`).execute();
}

/** After an approved sign-in: the browser session holds it for that application. */
export async function recordSessionApproval(db: Db, interactionUid: string, sessionUid: string, sessionSeconds: number): Promise<void> {
  await sql`
    insert into session_approvals (session_uid, client_id, request_id, expires_at)
    select ${sessionUid}, client_id, id, now() + make_interval(secs => ${sessionSeconds})
    from approval_requests where interaction_uid = ${interactionUid} and status = 'approved'
    order by decided_at desc limit 1
    on conflict (session_uid, client_id) do update set request_id = excluded.request_id, expires_at = excluded.expires_at`.execute(db);
}

export async function hasSessionApproval(db: Db, sessionUid: string, clientId: string): Promise<boolean> {
  const row = await db
    .selectFrom('session_approvals')
    .select('request_id')
    .where('session_uid', '=', sessionUid)
    .where('client_id', '=', clientId)
    .where('expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  return row !== undefined;
}
