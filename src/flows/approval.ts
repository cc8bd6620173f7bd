import Router from '@koa/router';
import type { Context } from 'koa';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { seeOther } from '../http/redirect.js';
import { findUserById } from '../directory/users.js';
import { maskEmail, maskPhone } from '../factors/index.js';
import { cancelPending, decide, findByToken, latestForInteraction } from '../approvals/requests.js';
import type { ApprovalRequest } from '../db/schema.js';
import { clientOf, finishInteraction, loadInteraction, requestMeta, type FlowDeps } from './context.js';
import { loadProgress } from './progress.js';
import { completeLogin } from './complete-login.js';
import { formatTime } from './approval-gate.js';

/** How often the waiting page looks again by itself (a meta refresh: no JavaScript needed). */
const RECHECK_SECONDS = 4;

const masked = (to: string | null) => (!to ? 'your manager' : to.startsWith('+') ? maskPhone(to) : maskEmail(to));

/**
 * The manager approval pages: the user's waiting page (inside their sign-in), and the manager's
 * link page, where only a POST from the page decides (mail scanners open links; a GET never decides).
 */
export function approvalRoutes(deps: FlowDeps): Router {
  const { db, provider, audit } = deps;
  const router = new Router();

  async function waiting(ctx: Context) {
    const details = await loadInteraction(ctx, provider);
    const progress = await loadProgress(db, details.uid);
    if (!progress || progress.step !== 'approval' || details.prompt.name !== 'login') return { details, progress: null, request: undefined };
    return { details, progress, request: await latestForInteraction(db, details.uid) };
  }

  router.get('/interaction/:uid/approval', async (ctx) => {
    const { details, progress, request } = await waiting(ctx);
    if (!progress || !request) return seeOther(ctx, `/interaction/${details.uid}`);
    const client = await clientOf(deps, details);
    if (request.status === 'approved') {
      const user = await findUserById(db, progress.accountId);
      if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
      return completeLogin(ctx, deps, details, user, { ...progress, step: 'login' }, { approved: request.id });
    }
    if (request.status === 'pending') {
      ctx.set('Refresh', String(RECHECK_SECONDS));
      return renderPage(ctx, 'flows/approval-wait', {
        title: 'Waiting for approval', uid: details.uid, clientName: client.name, recipient: masked(request.recipient),
        expiresAt: formatTime(request.expires_at), recheckSeconds: RECHECK_SECONDS,
      });
    }
    renderPage(ctx, 'flows/approval-ended', {
      title: request.status === 'rejected' ? 'Sign-in rejected' : 'Approval not received', uid: details.uid, clientName: client.name, status: request.status,
    }, request.status === 'rejected' ? 403 : 200);
  });

  // Rejected, expired or given up: the login ends, and the application hears access_denied.
  router.post('/interaction/:uid/approval/end', async (ctx) => {
    const details = await loadInteraction(ctx, provider);
    assertCsrf(ctx, (await readForm(ctx)).csrf);
    const cancelled = await cancelPending(db, details.uid);
    if (cancelled) {
      await audit.record({ type: 'approval.cancelled', subject: cancelled.user_id, clientId: cancelled.client_id, ...requestMeta(ctx), details: { request: cancelled.id, profile: cancelled.profile } });
    }
    const request = cancelled ?? (await latestForInteraction(db, details.uid));
    const description =
      request?.status === 'rejected' ? 'The manager rejected the sign-in.' : request?.status === 'cancelled' ? 'The user stopped waiting for approval.' : 'The sign-in was not approved.';
    await finishInteraction(ctx, details, { error: 'access_denied', error_description: description }, false);
  });

  // Expired (or never delivered): ask again, once the user wants to.
  router.post('/interaction/:uid/approval/again', async (ctx) => {
    const { details, progress, request } = await waiting(ctx);
    assertCsrf(ctx, (await readForm(ctx)).csrf);
    if (!progress || !request || !['expired', 'undeliverable'].includes(request.status)) return seeOther(ctx, `/interaction/${details.uid}/approval`);
    const user = await findUserById(db, progress.accountId);
    if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    await completeLogin(ctx, deps, details, user, { ...progress, step: 'login' });
  });

  /** The manager's page for a link, whatever became of it. */
  async function managerPage(ctx: Context, request: ApprovalRequest | undefined, outcome: string | null, status = 200) {
    if (!request) {
      return renderPage(ctx, 'flows/approval-link', { title: 'Link not valid', state: 'unknown', outcome: null }, 404);
    }
    const [user, client] = await Promise.all([findUserById(db, request.user_id), deps.clients.get(request.client_id)]);
    renderPage(ctx, 'flows/approval-link', {
      title: request.status === 'pending' ? 'Approve this sign-in?' : 'Sign-in approval',
      state: request.status,
      outcome,
      token: String(ctx.params.token),
      who: user ? { name: [user.given_name, user.family_name].filter(Boolean).join(' ') || user.username, username: user.username } : { name: '(a removed user)', username: '' },
      app: client?.name ?? request.client_id,
      when: formatTime(request.created_at),
      ip: request.ip ?? 'unknown',
      device: request.user_agent ?? 'unknown',
      expiresAt: formatTime(request.expires_at),
      decidedAt: request.decided_at ? formatTime(request.decided_at) : null,
    }, status);
  }

  router.get('/approval/:token', async (ctx) => {
    ctx.set('Referrer-Policy', 'no-referrer');
    await managerPage(ctx, await findByToken(db, deps.linkKey, String(ctx.params.token)), null);
  });

  router.post('/approval/:token', async (ctx) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    const decision = form.decision === 'approve' ? 'approved' : form.decision === 'reject' ? 'rejected' : null;
    if (!decision) throw new HttpError(400, 'Choose Approve or Reject.', 'Request refused');
    const meta = requestMeta(ctx);
    const outcome = await decide(db, deps.linkKey, String(ctx.params.token), decision, meta.ip);
    if (!outcome.decided) return managerPage(ctx, outcome.request, null, outcome.request ? 409 : 404);
    const { request } = outcome;
    await audit.record({
      type: decision === 'approved' ? 'approval.approved' : 'approval.rejected',
      actor: `manager:${request.recipient ?? 'unknown'}`,
      subject: request.user_id,
      clientId: request.client_id,
      ...meta,
      details: { request: request.id, profile: request.profile },
    });
    await managerPage(ctx, request, decision);
  });

  return router;
}
