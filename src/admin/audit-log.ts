import { sql } from 'kysely';
import { z } from 'zod';
import { findUserByUsername } from '../directory/users.js';
import { operation, ServiceError } from './service.js';

/** One audit event as an administrator reads it: the subject and actor by name where Tessera knows them. */
export interface AuditLine {
  id: string;
  at: Date;
  type: string;
  actor: string | null;
  subject: string | null;
  /** The subject's username, when the subject is a user. */
  subjectName: string | null;
  clientId: string | null;
  ip: string | null;
  details: Record<string, unknown>;
}

const text = (max: number) => z.string().trim().min(1).max(max).optional();
// Dates the database can compare: years 1970 to 9999.
const when = (message: string) =>
  z.coerce.date(message).refine((d) => d.getUTCFullYear() >= 1970 && d.getUTCFullYear() <= 9999, 'must be a date between 1970 and 9999').optional();

/**
 * The audit log, newest first: filtered by user (the subject, the name they signed in with, or named in the details),
 * by event type (a part of it: "login" finds every sign-in event), by client and by time.
 * `before` continues a page from the last event's id.
 */
export const listAuditOp = operation({
  kind: 'read',
  input: z.object({
    user: text(128),
    type: text(64),
    client: text(128),
    since: when('must be a date and time, e.g. 2026-12-01T09:00:00Z'),
    until: when('must be a date and time, e.g. 2026-12-01T17:00:00Z'),
    limit: z.number().int('must be a whole number').min(1, 'must be 1 to 1000').max(1000, 'must be 1 to 1000').default(50),
    // Event ids are bigints: 18 digits always fit.
    before: z.string().regex(/^\d{1,18}$/, 'must be an event id').optional(),
  }),
  async run({ db }, input): Promise<{ result: AuditLine[] }> {
    let query = db
      .selectFrom('audit_events as e')
      .leftJoin('users as u', (j) => j.on(sql<boolean>`u.id::text = e.subject`))
      .select(['e.id', 'e.at', 'e.type', 'e.actor', 'e.subject', 'u.username as subject_name', 'e.client_id', 'e.ip', 'e.details'])
      .orderBy('e.id', 'desc')
      .limit(input.limit);
    if (input.user) {
      const user = await findUserByUsername(db, input.user);
      if (!user) throw new ServiceError(`no user "${input.user}"`, 'user');
      // About them (subject), by them (the name they signed in with), or naming them (a membership).
      query = query.where((eb) => eb.or([eb('e.subject', '=', user.id), eb('e.actor', '=', user.username), eb(sql<string>`e.details->>'username'`, '=', user.username)]));
    }
    if (input.type) query = query.where(sql<boolean>`strpos(e.type, ${input.type}) > 0`);
    if (input.client) query = query.where('e.client_id', '=', input.client);
    if (input.since) query = query.where('e.at', '>=', input.since);
    if (input.until) query = query.where('e.at', '<', input.until);
    if (input.before) query = query.where('e.id', '<', input.before);
    const rows = await query.execute();
    return {
      result: rows.map((r) => ({
        id: String(r.id),
        at: r.at,
        type: r.type,
        actor: r.actor,
        subject: r.subject,
        subjectName: r.subject_name,
        clientId: r.client_id,
        ip: r.ip,
        details: r.details as Record<string, unknown>,
      })),
    };
  },
});
