import Router from '@koa/router';
import type { Context } from 'koa';
import { findClient } from '../clients/clients.js';
import { HttpError } from '../http/errors.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { finishInteraction, loadInteraction, type FlowDeps, type InteractionDetails } from './context.js';
import { showLogin, submitLogin } from './login.js';
import { grantConsent, showConsent, submitConsent } from './consent.js';

/**
 * The interaction pipeline: the provider says which prompt is unmet (login, then consent);
 * each prompt is a step with a page (GET) and a submission (POST). Steps finish by handing their
 * result back to the provider, which decides what comes next.
 */
export function interactionRoutes(deps: FlowDeps): Router {
  const { db, provider, audit } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });

  const clientOf = async (details: InteractionDetails) => {
    const client = await findClient(db, String(details.params.client_id));
    if (!client) throw new HttpError(400, 'The application that sent you here is no longer registered.', 'Unknown application');
    return client;
  };
  const clientName = async (details: InteractionDetails) => {
    const metadata = (await clientOf(details)).metadata as { client_name?: string };
    return metadata.client_name ?? String(details.params.client_id);
  };

  router.get('/', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    switch (details.prompt.name) {
      case 'login':
        return showLogin(ctx, details, await clientName(details));
      case 'consent': {
        const client = await clientOf(details);
        if (!client.require_consent) {
          // First-party applications: consent is implied, but still recorded as a grant.
          const grantId = await grantConsent(deps, details);
          await audit.record({ type: 'consent.given', subject: details.session?.accountId ?? null, clientId: client.client_id, details: { implicit: true, grant_id: grantId } });
          return finishInteraction(ctx, provider, { consent: { grantId } }, true);
        }
        return showConsent(ctx, db, details, await clientName(details));
      }
      default:
        throw new HttpError(400, 'This sign-in step is not supported.', 'Request refused');
    }
  });
  router.post('/login', submitLogin(deps, clientName));
  router.post('/consent', submitConsent(deps));
  router.post('/abort', async (ctx: Context) => {
    await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    await finishInteraction(ctx, provider, { error: 'access_denied', error_description: 'The user cancelled the sign-in.' }, false);
  });
  return router;
}
