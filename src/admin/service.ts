import { z } from 'zod';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Audit, AuditType } from '../audit/audit.js';
import type { Mode } from '../config.js';
import { DomainError, firstIssue } from '../domain-error.js';

/**
 * Who performs an administrative operation. An operator at the CLI holds the machine and acts as an
 * administrator; in the console, members of `admins` change things and members of `auditors` read.
 */
export interface Actor {
  /** As the audit log names it: "cli:<OS user>" or "admin:<username>". */
  label: string;
  role: 'admin' | 'auditor';
}

/** Where an operation runs: the database, the secrets, the audit log and the acting administrator. */
export interface ServiceContext {
  db: Db;
  box: SecretBox;
  audit: Audit;
  /** The mode of the process whose database this is (production refuses settings that would stop delivery). */
  mode: Mode;
  actor: Actor;
  /** Called after a change, so a running server drops what it keeps (clients, APIs, scope rules). */
  changed?: () => void;
  /** Added to every audit record (the CLI command typed, the console page). */
  via?: Record<string, unknown>;
}

/** An audited change: what happened and to what. */
export interface Change {
  type: AuditType;
  subject: string;
  details?: Record<string, unknown>;
}

export interface Operation<S extends z.ZodType, R> {
  /** The input, validated at the edge: the CLI's flags or the console's form become this. */
  input: S;
  /** A read changes nothing (auditors may run it); a change is audited. */
  kind: 'read' | 'change';
  run(ctx: ServiceContext, input: z.output<S>): Promise<{ result: R; change?: Change }>;
}

/** The one error type of the service layer; `field` names the input field at fault. */
export class ServiceError extends DomainError {}

export class AccessDenied extends ServiceError {}

/** An input whose shape a domain module owns: it validates it with its own schema and names the field at fault. */
export const ownedInput = <T>() => z.custom<T>((value) => typeof value === 'object' && value !== null, 'expected the fields of the form');

export function operation<S extends z.ZodType, R>(op: Operation<S, R>): Operation<S, R> {
  return op;
}

/**
 * Runs an operation: the actor's right to it, its input, the work, and the audit record of the
 * change with the acting administrator, in one place for the CLI and the console alike.
 */
export async function perform<S extends z.ZodType, R>(ctx: ServiceContext, op: Operation<S, R>, input: z.input<S>): Promise<R> {
  if (op.kind === 'change' && ctx.actor.role !== 'admin') throw new AccessDenied('an auditor may look but not change anything');
  const parsed = op.input.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ServiceError(message, field));
  const { result, change } = await op.run(ctx, parsed.data);
  if (change) {
    ctx.changed?.();
    await ctx.audit.record({ type: change.type, actor: ctx.actor.label, subject: change.subject, details: { ...change.details, ...ctx.via } });
  }
  return result;
}
