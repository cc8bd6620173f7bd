import type { Context } from 'koa';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import type { RegisteredClient } from '../clients/registered.js';
import { OIDC_SCOPES } from '../oidc/account.js';
import { grantableScopes } from '../resource-servers/resource-servers.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { finishInteraction, loadInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';

export interface ScopeLine {
  name: string;
  description: string;
}

const consentForm = z.object({ csrf: z.string().max(128), decision: z.enum(['allow', 'deny']) });

/** The requested scopes with the descriptions the administrator gave them; unknown ones are shown by name. */
export async function describeScopes(db: Db, scopes: string[]): Promise<ScopeLine[]> {
  if (scopes.length === 0) return [];
  const rows = await db.selectFrom('scopes').select(['name', 'description']).where('name', 'in', scopes).execute();
  const byName = new Map(rows.map((r) => [r.name, r.description]));
  return scopes.map((name) => ({ name, description: byName.get(name) ?? name }));
}

function requestedScopes(details: InteractionDetails): string[] {
  const scope = typeof details.params.scope === 'string' ? details.params.scope : '';
  return [...new Set(scope.split(' ').filter(Boolean))];
}

/**
 * What the user is asked to allow: the OpenID scopes requested, and of each API the request names
 * (`resource`) the requested scopes this client may be given; anything else would not be granted.
 */
async function consentRequest(db: Db, details: InteractionDetails, client: RegisteredClient): Promise<{ scopes: string[]; apis: { identifier: string; name: string }[] }> {
  const requested = requestedScopes(details);
  const { resource } = details.params;
  const identifiers = (Array.isArray(resource) ? resource : [resource]).filter((r): r is string => typeof r === 'string');
  const apis = identifiers.length === 0 ? [] : await db.selectFrom('resource_servers').select(['identifier', 'name', 'scope']).where('identifier', 'in', identifiers).orderBy('name').execute();
  const grantable = new Set<string>(OIDC_SCOPES);
  for (const api of apis) {
    for (const s of grantableScopes({ scopes: api.scope.split(' ') }, client.apiScopes[api.identifier])) grantable.add(s);
  }
  return { scopes: requested.filter((s) => grantable.has(s)), apis: apis.map(({ identifier, name }) => ({ identifier, name })) };
}

export async function showConsent(ctx: Context, db: Db, details: InteractionDetails, client: RegisteredClient): Promise<void> {
  const { scopes, apis } = await consentRequest(db, details, client);
  renderPage(ctx, 'flows/consent', {
    title: 'Allow access?',
    uid: details.uid,
    clientName: client.name,
    scopes: await describeScopes(db, scopes),
    apis,
  });
}

/** Records the grant the provider asked for (the missing scopes and claims) and returns its id. */
export async function grantConsent(deps: FlowDeps, details: InteractionDetails): Promise<string> {
  const { provider } = deps;
  const accountId = details.session?.accountId;
  if (!accountId) throw new HttpError(400, 'Sign in first.', 'Sign-in expired');
  const clientId = String(details.params.client_id);
  const grant = details.grantId ? await provider.Grant.find(details.grantId) : new provider.Grant({ accountId, clientId });
  if (!grant) throw new HttpError(400, 'This consent has expired. Go back to the application and sign in again.', 'Sign-in expired');
  const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
  return grant.save();
}

export function submitConsent(deps: FlowDeps) {
  const { provider, audit } = deps;
  return async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (details.prompt.name !== 'consent') {
      ctx.status = 303;
      ctx.redirect(`/interaction/${details.uid}`);
      return;
    }
    const parsed = consentForm.safeParse(form);
    if (!parsed.success) throw new HttpError(400, 'Choose Allow or Deny.', 'Request refused');
    const clientId = String(details.params.client_id);
    const subject = details.session?.accountId ?? null;
    const scopes = requestedScopes(details);
    if (parsed.data.decision === 'deny') {
      await audit.record({ type: 'consent.denied', subject, clientId, ...requestMeta(ctx), details: { scopes } });
      await finishInteraction(ctx, details, { error: 'access_denied', error_description: 'The user denied the request.' }, true);
      return;
    }
    const grantId = await grantConsent(deps, details);
    await audit.record({ type: 'consent.given', subject, clientId, ...requestMeta(ctx), details: { scopes, grant_id: grantId } });
    await finishInteraction(ctx, details, { consent: { grantId } }, true);
  };
}
