import { CompiledQuery, type Insertable } from 'kysely';
import { isDatabaseUnavailable, prepared, type Db } from '../db/index.js';
import type { AuditEventsTable } from '../db/schema.js';
import type { Logger } from '../log.js';

export type AuditType =
  | 'login.success'
  | 'login.password_verified'
  | 'mfa.sent'
  | 'mfa.send_failed'
  | 'mfa.send_refused'
  | 'mfa.success'
  | 'mfa.failure'
  | 'mfa.enrolled'
  | 'mfa.no_method'
  | 'mfa.recovery_used'
  | 'mfa.recovery_codes_generated'
  | 'mfa.passkey_added'
  | 'mfa.passkey_renamed'
  | 'mfa.passkey_removed'
  | 'login.failure'
  | 'login.locked'
  | 'login.throttled'
  | 'account.locked'
  | 'consent.given'
  | 'consent.denied'
  | 'consent.refused'
  | 'token.issued'
  | 'token.revoked'
  | 'logout'
  | 'keys.rotated'
  // Administrative changes (the CLI now, the admin console later); actor "cli:<OS user>".
  | 'user.created'
  | 'user.password_changed'
  | 'user.disabled'
  | 'user.enabled'
  | 'user.updated'
  | 'user.unlocked'
  | 'user.mfa_reset'
  | 'user.passkey_removed'
  | 'user.recovery_codes_removed'
  | 'user.removed'
  | 'group.created'
  | 'group.member_added'
  | 'group.member_removed'
  | 'group.removed'
  | 'client.created'
  | 'client.removed'
  | 'client.mfa_changed'
  | 'client.scope_changed'
  | 'api.created'
  | 'api.allowed'
  | 'api.disallowed'
  | 'api.removed'
  | 'settings.changed'
  | 'policy.created'
  | 'policy.removed'
  | 'scope.protected'
  | 'scope.unprotected'
  | 'client.updated'
  | 'client.secret_rotated'
  | 'policy.updated'
  | 'user.authenticator_removed'
  | 'delivery.tested'
  // The admin console's own sessions.
  | 'admin.signed_in'
  | 'admin.signed_out'
  | 'admin.refused'
  | 'admin.reverified'
  // Manager approval.
  | 'approval.informed'
  | 'approval.requested'
  | 'approval.approved'
  | 'approval.rejected'
  | 'approval.refused'
  | 'approval.cancelled'
  | 'approval.undeliverable'
  | 'approval.profile_created'
  | 'approval.profile_updated'
  | 'approval.profile_removed'
  | 'approval.policy_created'
  | 'approval.policy_removed'
  | 'user.sponsor_changed'
  | 'directory.unavailable'
  // The account portal and the per-application self-service portals.
  | 'portal.enabled'
  | 'jit.enabled'
  | 'jit.disabled'
  | 'jit.reserved'
  | 'jit.refused'
  | 'jit.released'
  | 'jit.sign_in_started'
  | 'portal.disabled'
  | 'account.signed_in'
  | 'account.signed_out'
  | 'account.refused'
  | 'account.reverified'
  | 'account.name_changed'
  | 'account.password_changed'
  | 'account.password_created'
  | 'account.email_change_started'
  | 'account.email_changed'
  | 'account.phone_change_started'
  | 'account.phone_changed'
  | 'account.token_registered'
  | 'account.token_unassigned'
  | 'account.token_reassigned'
  | 'account.token_resynced'
  | 'account.pin_set'
  | 'account.pin_removed'
  | 'account.login_changed'
  | 'account.change_refused'
  | 'token.imported'
  // Restore access: a user who lost a factor asks, an administrator decides.
  | 'restore.requested'
  | 'restore.withdrawn'
  | 'restore.approved'
  | 'restore.deleted';

export interface AuditEntry {
  type: AuditType;
  actor?: string | null;
  subject?: string | null;
  clientId?: string | null;
  ip?: string | null;
  userAgent?: string | null;
  details?: Record<string, unknown>;
}

export interface Audit {
  /** Resolves once the event is stored (or its failure logged). */
  record(entry: AuditEntry): Promise<void>;
  /** Writes whatever is queued; called at shutdown. */
  flush(): Promise<void>;
}

type Row = Insertable<AuditEventsTable>;

const MAX_BATCH = 500;
/** Events kept while the database is unreachable, to be written when it is back; beyond this the oldest are dropped (and logged). */
const MAX_WAITING = 20_000;
const RETRY_MS = 1000;

// Any number of events in one prepared statement (a column per array): the same text for every
// batch, so PostgreSQL plans it once per connection and the query is not built for each batch.
const INSERT_EVENTS = prepared(`insert into audit_events (type, actor, subject, client_id, ip, user_agent, details)
  select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])`);

async function insertEvents(db: Db, rows: Row[]): Promise<void> {
  const column = <K extends keyof Row>(key: K) => rows.map((r) => r[key] ?? null);
  await db.executeQuery(CompiledQuery.raw(INSERT_EVENTS, [column('type'), column('actor'), column('subject'), column('client_id'), column('ip'), column('user_agent'), column('details')]));
}

/**
 * Append-only: events are inserted, never updated. Events recorded in the same turn of the event
 * loop are written together in one multi-row INSERT, so a busy server does not spend a query per
 * token issued. A failed write is logged, never fatal to the user's request.
 */
export function createAudit(db: Db, log: Logger): Audit {
  let queue: { row: Row; done: () => void }[] = [];
  let scheduled: Promise<void> | null = null;

  let retry: NodeJS.Timeout | null = null;
  const noop = () => undefined;

  /** While the database is away, recording resolves at once: the rows wait in the queue for the retry. */
  function releaseWaiting(): void {
    for (const entry of queue) {
      entry.done();
      entry.done = noop;
    }
  }

  async function write(): Promise<void> {
    if (retry) return releaseWaiting();
    while (queue.length) {
      const batch = queue.slice(0, MAX_BATCH);
      queue = queue.slice(MAX_BATCH);
      try {
        await insertEvents(db, batch.map((b) => b.row));
      } catch (error) {
        if (isDatabaseUnavailable(error)) {
          // Kept, not lost: written again once the database is back. The requests that recorded them go on.
          queue = [...batch, ...queue];
          releaseWaiting();
          if (queue.length > MAX_WAITING) {
            log.error({ dropped: queue.length - MAX_WAITING }, 'audit events dropped: the database has been unreachable too long');
            queue = queue.slice(queue.length - MAX_WAITING);
          }
          retry = setTimeout(() => {
            retry = null;
            void schedule();
          }, RETRY_MS);
          retry.unref();
          return;
        }
        // One bad row must not cost the others: write them one by one.
        for (const { row } of batch) {
          await db.insertInto('audit_events').values(row).execute().catch((error: unknown) => log.error({ err: error, audit: row.type }, 'could not write audit event'));
        }
      }
      for (const b of batch) b.done();
    }
  }

  function schedule(): Promise<void> {
    scheduled ??= new Promise<void>((resolve) => setImmediate(resolve)).then(write).finally(() => {
      scheduled = null;
      if (queue.length && !retry) void schedule();
    });
    return scheduled;
  }

  return {
    record(entry) {
      return new Promise<void>((done) => {
        queue.push({
          done,
          row: {
            type: entry.type,
            actor: entry.actor?.slice(0, 256) ?? null,
            subject: entry.subject ?? null,
            client_id: entry.clientId ?? null,
            ip: entry.ip ?? null,
            user_agent: entry.userAgent?.slice(0, 512) ?? null,
            details: JSON.stringify(entry.details ?? {}),
          },
        });
        void schedule();
      });
    },
    async flush() {
      if (retry) {
        // Shutting down with the database away: one last try.
        clearTimeout(retry);
        retry = null;
      }
      await schedule();
      if (queue.length) log.error({ dropped: queue.length }, 'audit events not written at shutdown: the database is unreachable');
    },
  };
}
