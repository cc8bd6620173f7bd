import Router from '@koa/router';
import type { Context } from 'koa';
import { HttpError } from '../http/errors.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { clientOf, finishInteraction, loadInteraction, type FlowDeps } from './context.js';
import { showLogin, submitLogin } from './login.js';
import { grantConsent, showConsent, submitConsent } from './consent.js';
import { mfaRoutes } from './mfa.js';
import { loadProgress, saveProgress } from './progress.js';
import type { AuthenticationMethod } from '../oidc/assurance.js';

/**
 * The interaction pipeline: the provider says which prompt is unmet (login, then consent);
 * each prompt is a step with a page (GET) and a submission (POST). Steps finish by handing their
 * result back to the provider, which decides what comes next.
 */
export function interactionRoutes(deps: FlowDeps): Router[] {
  const { db, provider, audit } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });

  router.get('/', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    switch (details.prompt.name) {
      case 'login': {
        if (await loadProgress(db, details.uid)) {
          ctx.status = 303;
          return ctx.redirect(`/interaction/${details.uid}/mfa`);
        }
        // Signed in already, but this client or request needs a second factor the session lacks: step up.
        if (details.prompt.reasons.includes('mfa_required') && details.session?.accountId) {
          const amr = ((details.session as { amr?: AuthenticationMethod[] }).amr ?? ['pwd']).filter((m) => m !== 'mfa');
          await saveProgress(db, { uid: details.uid, accountId: details.session.accountId, methods: amr.map((method) => ({ method, at: Math.floor(Date.now() / 1000) })), challengeId: null });
          ctx.status = 303;
          return ctx.redirect(`/interaction/${details.uid}/mfa`);
        }
        return showLogin(ctx, details, (await clientOf(deps.clients, details)).name);
      }
      case 'consent': {
        const client = await clientOf(deps.clients, details);
        if (!client.requireConsent) {
          // First-party applications: consent is implied, but still recorded as a grant.
          const grantId = await grantConsent(deps, details);
          await audit.record({ type: 'consent.given', subject: details.session?.accountId ?? null, clientId: client.clientId, details: { implicit: true, grant_id: grantId } });
          return finishInteraction(ctx, details, { consent: { grantId } }, true);
        }
        return showConsent(ctx, db, details, client);
      }
      default:
        throw new HttpError(400, 'This sign-in step is not supported.', 'Request refused');
    }
  });
  router.post('/login', submitLogin(deps));
  const mfa = mfaRoutes(deps);
  router.post('/consent', submitConsent(deps));
  router.post('/abort', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    await finishInteraction(ctx, details, { error: 'access_denied', error_description: 'The user cancelled the sign-in.' }, false);
  });
  return [router, mfa];
}
