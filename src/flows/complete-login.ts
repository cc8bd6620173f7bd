import type { Context } from 'koa';
import type { User } from '../db/schema.js';
import { successfulLoginStatement } from '../directory/users.js';
import { withdrawOnSignInStatement } from '../portal/restore.js';
import { together } from '../db/index.js';
import { assuranceOf, merged, readLedger } from '../sessions/ledger.js';
import { finishInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { saveProgressStatement, startsOver, type Progress } from './progress.js';
import { approvalGate } from './approval-gate.js';
import type { AttemptGiveBack } from './second-factor.js';
import { reservationMember } from '../jit/shared-accounts.js';

/**
 * What the session will say of itself once this interaction ends. A forced re-authentication (the
 * password asked again) says only what it proved; a step-up adds its factor to what the session
 * proved before (from the ledger).
 */
export async function assuranceAfter(deps: FlowDeps, details: InteractionDetails, accountId: string, progress: Pick<Progress, 'methods' | 'reservationId'>) {
  const session = details.session;
  const passes = progress.methods;
  const earlier = !startsOver(progress) && session?.uid && session.accountId === accountId
    ? await readLedger(deps.db, session.uid, accountId)
    : [];
  return assuranceOf(merged(earlier, passes));
}

/** The interaction result key that has the provider middleware move this interaction's passes into the session's ledger. */
export const LEDGER_RESULT = 'tesseraLedger';
/** The interaction result key saying a manager approved this sign-in: the session holds the approval for the client. */
export const APPROVAL_RESULT = 'tesseraApproval';
/**
 * The interaction result key naming the reservation a shared account's sign-in spent: the code
 * issued for it is bound to that reservation (so its tokens name the member), and the consent that
 * follows (which carries the login's result on) knows the member too.
 */
export const RESERVATION_RESULT = 'tesseraReservation';

/** The reservation a login result (or the one a later interaction carries on) spent, if it is a shared account's. */
export function reservationOfResult(result: unknown): string | null {
  const value = (result as Record<string, unknown> | undefined)?.[RESERVATION_RESULT];
  return typeof value === 'string' ? value : null;
}

/**
 * Every login ends here: after the user's own factors, the manager approval step (where it
 * applies); then the account is signed in with what it proved. The passes stay with the progress
 * until oidc-provider has the session (and its uid), then move to the ledger. A sign-in as a shared
 * account names the reserving member as the audit's actor. `approved`: the approval request a
 * manager granted.
 */
export async function completeLogin(ctx: Context, deps: FlowDeps, details: InteractionDetails, user: User, progress: Progress, options: { approved?: string; giveBack?: AttemptGiveBack | null } = {}): Promise<void> {
  const { approved, giveBack } = options;
  if (!approved && (await approvalGate(ctx, deps, details, user, progress))) {
    // Held for a manager: the sign-in is not complete, so the admitted guess is given back on its own.
    await giveBack?.execute();
    return;
  }
  const actor = progress.reservationId ? await reservationMember(deps.db, progress.reservationId) : undefined;
  const { amr, acr, ts } = await assuranceAfter(deps, details, user.id, progress);
  const [[, , withdrawn = []]] = await Promise.all([
    // What a completed sign-in writes, in one statement: the failure count cleared, the progress kept for the ledger, and
    // (back in with the account's own credentials) a pending "restore access" request withdrawn: not needed, or not theirs.
    together(deps.db, [
      successfulLoginStatement(deps.db, user),
      saveProgressStatement(deps.db, { ...progress, challengeId: null }),
      ...(actor ? [] : [withdrawOnSignInStatement(deps.db, user.id)]),
    ]),
    deps.audit.record({
      type: 'login.success', actor: actor?.username ?? user.username, subject: user.id, clientId: String(details.params.client_id), ...requestMeta(ctx),
      details: { amr, ...(actor ? { shared_account: user.username, member_id: actor.id, reservation: progress.reservationId } : {}) },
    }),
  ]);
  for (const { id: request } of withdrawn as { id: string }[]) await deps.audit.record({ type: 'restore.withdrawn', actor: user.username, subject: user.id, ...requestMeta(ctx), details: { request, by: 'sign-in' } });
  // A shared account's session ends with the browser: it is never kept for a later sign-in.
  const remember = !actor;
  await finishInteraction(ctx, details, {
    login: { accountId: user.id, acr, amr, ts, remember },
    [LEDGER_RESULT]: details.uid,
    ...(approved ? { [APPROVAL_RESULT]: details.uid } : {}),
    ...(progress.reservationId ? { [RESERVATION_RESULT]: progress.reservationId } : {}),
  }, false);
}
