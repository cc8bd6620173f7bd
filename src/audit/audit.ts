import type { Db } from '../db/index.js';
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
  | 'login.failure'
  | 'login.locked'
  | 'account.locked'
  | 'consent.given'
  | 'consent.denied'
  | 'token.issued'
  | 'token.revoked'
  | 'logout'
  | 'keys.rotated';

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
  record(entry: AuditEntry): Promise<void>;
}

/** Append-only: events are inserted, never updated. A failed write is logged, never fatal to the user's request. */
export function createAudit(db: Db, log: Logger): Audit {
  return {
    async record(entry) {
      try {
        await db
          .insertInto('audit_events')
          .values({
            type: entry.type,
            actor: entry.actor ?? null,
            subject: entry.subject ?? null,
            client_id: entry.clientId ?? null,
            ip: entry.ip ?? null,
            user_agent: entry.userAgent?.slice(0, 512) ?? null,
            details: JSON.stringify(entry.details ?? {}),
          })
          .execute();
      } catch (error) {
        log.error({ err: error, audit: entry.type }, 'could not write audit event');
      }
    },
  };
}
