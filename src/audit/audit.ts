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
  /** Resolves once the event is stored (or its failure logged): for events a request waits for. */
  record(entry: AuditEntry): Promise<void>;
  /**
   * Queues an event nothing waits for (a token issued, a grant revoked). Written at once when the
   * log is quiet; under load gathered for up to GATHER_MS into one insert with the others.
   */
  note(entry: AuditEntry): void;
  /** Writes whatever is queued; called at shutdown. */
  flush(): Promise<void>;
}

type Row = Insertable<AuditEventsTable>;
/** `done` resolves the request waiting for the event; null when nothing waits. */
type Queued = { row: Row; done: (() => void) | null };

const MAX_BATCH = 500;
/** Events kept while the database is unreachable, to be written when it is back; beyond this the oldest are dropped (and logged). */
const MAX_WAITING = 20_000;
const RETRY_MS = 1000;
/**
 * How long noted events may wait for company. A write is one statement and one commit whatever its
 * size: about 0.2 ms of Node's CPU and 0.25 ms of PostgreSQL's, against 0.01 and 0.02 ms per row,
 * so a server issuing thousands of tokens a second spends far less writing 50 rows at a time than 5.
 */
export const GATHER_MS = 25;

// Any number of events in one prepared statement (a column per array): the same text for every
// batch, so PostgreSQL plans it once per connection and the query is not built for each batch.
const INSERT_EVENTS = prepared(`insert into audit_events (type, actor, subject, client_id, ip, user_agent, details)
  select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])`);

async function insertEvents(db: Db, rows: Row[]): Promise<void> {
  const column = <K extends keyof Row>(key: K) => rows.map((r) => r[key] ?? null);
  await db.executeQuery(CompiledQuery.raw(INSERT_EVENTS, [column('type'), column('actor'), column('subject'), column('client_id'), column('ip'), column('user_agent'), column('details')]));
}

/**
 * Append-only: events are inserted, never updated, many in one multi-row INSERT. An event a
 * request waits for is written at the next turn of the event loop, with everything queued by then;
 * events nothing waits for are written at once when the log is quiet, otherwise at most GATHER_MS
 * after the previous write began. A failed write is logged, never fatal to the user's request.
 */
export function createAudit(db: Db, log: Logger): Audit {
  let queue: Queued[] = [];
  /** Queued events a request waits for: while there are any, the next write does not gather. */
  let awaited = 0;
  let scheduled: Promise<void> | null = null;
  let gathering: NodeJS.Timeout | null = null;
  let lastWrite = -Infinity;

  let retry: NodeJS.Timeout | null = null;

  /** While the database is away, recording resolves at once: the rows wait in the queue for the retry. */
  function releaseWaiting(): void {
    for (const entry of queue) {
      entry.done?.();
      entry.done = null;
    }
    awaited = 0;
  }

  /** Writes what is queued now; what arrives meanwhile waits for the next write (see `next`). */
  async function write(): Promise<void> {
    if (retry) return releaseWaiting();
    lastWrite = performance.now();
    let pending = queue;
    queue = [];
    awaited = 0;
    while (pending.length) {
      const batch = pending.slice(0, MAX_BATCH);
      pending = pending.slice(MAX_BATCH);
      try {
        await insertEvents(db, batch.map((b) => b.row));
      } catch (error) {
        if (isDatabaseUnavailable(error)) {
          // Kept, not lost: written again once the database is back. The requests that recorded them go on.
          queue = [...batch, ...pending, ...queue];
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
      for (const b of batch) b.done?.();
    }
  }

  function schedule(): Promise<void> {
    if (gathering) {
      clearTimeout(gathering);
      gathering = null;
    }
    scheduled ??= new Promise<void>((resolve) => setImmediate(resolve)).then(write).finally(() => {
      scheduled = null;
      next();
    });
    return scheduled;
  }

  /** Decides when what is queued is written: now if a request waits for it, else once the gathering window has passed. */
  function next(): void {
    if (scheduled || retry || !queue.length) return;
    const wait = awaited ? 0 : lastWrite + GATHER_MS - performance.now();
    if (wait <= 0) void schedule();
    else
      gathering ??= setTimeout(() => {
        gathering = null;
        next();
      }, wait);
  }

  function enqueue(entry: AuditEntry, done: (() => void) | null): void {
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
    if (done) awaited++;
    next();
  }

  return {
    record(entry) {
      return new Promise<void>((done) => enqueue(entry, done));
    },
    note(entry) {
      enqueue(entry, null);
    },
    async flush() {
      if (retry) {
        // Shutting down with the database away: one last try.
        clearTimeout(retry);
        retry = null;
      }
      // Until nothing is queued or the database refuses (a retry is then set instead of a write).
      do {
        await schedule();
      } while ((queue.length || scheduled) && !retry);
      if (queue.length) log.error({ dropped: queue.length }, 'audit events not written at shutdown: the database is unreachable');
    },
  };
}
