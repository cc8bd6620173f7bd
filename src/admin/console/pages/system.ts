import type { Context } from 'koa';
import { perform, ServiceError } from '../../service.js';
import {
  allowApiOp, createApiOp, createClientOp, createPolicyOp, disallowApiOp, listApisOp, listClientsOp, listPoliciesOp, listScopeRulesOp, protectScopeOp,
  removeApiOp, removeClientOp, removePolicyOp, rotateClientSecretOp, unprotectScopeOp, updateClientOp, updatePolicyOp,
} from '../../system.js';
import { listGroupsOp } from '../../users.js';
import { GRANT_TYPES } from '../../../clients/clients.js';
import { FACTORS } from '../../../settings/settings.js';
import { OIDC_SCOPES } from '../../../oidc/account.js';
import { DEFAULT_SCOPE_MAX_AGE_SECONDS, describeRule } from '../../../scopes/rules.js';
import { seeOther } from '../../../http/redirect.js';
import { HttpError } from '../../../http/errors.js';
import { param, queryParam, text } from '../../../web/form.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';

const lines = (f: URLSearchParams, name: string) => text(f, name).split(/[\s,]+/).filter(Boolean);
/** A whole number typed in a form; the field is named when it is not one. */
function whole(f: URLSearchParams, name: string, fallback?: number): number | undefined {
  const raw = text(f, name);
  if (raw === '') return fallback;
  if (!/^-?\d{1,9}$/.test(raw)) throw new ServiceError('must be a whole number', name);
  return Number(raw);
}
const clientPath = (id: string) => `/admin/clients/${encodeURIComponent(id)}`;
const apiPath = (id: string) => `/admin/apis/view?id=${encodeURIComponent(id)}`;

/** Clients, APIs, scope rules and access policies. */
export function systemPages(c: Console): void {
  const { pages, show, change } = c;

  // Clients

  pages.get('/clients', async (ctx) => {
    const clients = await perform(consoleOf(ctx).service, listClientsOp, {});
    show(ctx, 'clients', 'Clients', { clients });
  });
  const newClientPage = async (ctx: Context, redisplay?: Redisplay) =>
    show(ctx, 'client-new', 'New client', { redisplay, grantTypes: GRANT_TYPES, oidcScopes: OIDC_SCOPES });
  pages.get('/clients/new', (ctx) => newClientPage(ctx));
  change('/clients/new', {
    label: 'Create a client',
    redisplay: newClientPage,
    async run(ctx, f, { service }) {
      const created = await perform(service, createClientOp, {
        clientId: text(f, 'clientId'),
        name: text(f, 'name') || undefined,
        public: f.get('type') === 'public',
        redirectUris: lines(f, 'redirectUris'),
        postLogoutRedirectUris: lines(f, 'postLogoutRedirectUris'),
        grantTypes: f.getAll('grantTypes') as (typeof GRANT_TYPES)[number][],
        scope: f.getAll('scope').join(' ') || 'openid',
        requireConsent: f.has('requireConsent'),
      });
      if (f.has('mfaRequired') || f.has('managerApproval')) await perform(service, updateClientOp, { clientId: created.clientId, mfaRequired: f.has('mfaRequired'), managerApproval: f.has('managerApproval') });
      show(ctx, 'client-secret', 'Client created', { clientId: created.clientId, secret: created.secret, created: true });
    },
  });
  const clientPage = async (ctx: Context, redisplay?: Redisplay) => {
    const id = param(ctx, 'id');
    const client = (await perform(consoleOf(ctx).service, listClientsOp, {})).find((x) => x.client_id === id);
    if (!client) throw new HttpError(404, `There is no client "${id}".`, 'Not found');
    show(ctx, 'client', client.client_id, { client, redisplay, grantTypes: GRANT_TYPES, oidcScopes: OIDC_SCOPES });
  };
  pages.get('/clients/:id', (ctx) => clientPage(ctx));
  change('/clients/:id', {
    label: (f, ctx) => `Change the client ${param(ctx, 'id')}${f.has('mfaRequired') ? '' : ' (MFA not required)'}`,
    sensitive: (f) => !f.has('mfaRequired'),
    redisplay: clientPage,
    async run(ctx, f, { service }) {
      const id = param(ctx, 'id');
      await perform(service, updateClientOp, {
        clientId: id,
        name: text(f, 'name'),
        redirectUris: lines(f, 'redirectUris'),
        postLogoutRedirectUris: lines(f, 'postLogoutRedirectUris'),
        grantTypes: f.getAll('grantTypes'),
        scope: f.getAll('scope').join(' ') || 'openid',
        requireConsent: f.has('requireConsent'),
        mfaRequired: f.has('mfaRequired'),
        managerApproval: f.has('managerApproval'),
      });
      seeOther(ctx, `${clientPath(id)}?done=saved`);
    },
  });
  change('/clients/:id/secret', {
    label: 'Give a client a new secret',
    sensitive: true,
    async run(ctx, _f, { service }) {
      const id = param(ctx, 'id');
      const secret = await perform(service, rotateClientSecretOp, { clientId: id });
      show(ctx, 'client-secret', 'New client secret', { clientId: id, secret, created: false });
    },
  });
  change('/clients/:id/remove', {
    label: (_f, ctx) => `Remove the client ${param(ctx, 'id')}`,
    sensitive: true,
    redisplay: clientPage,
    async run(ctx, f, { service }) {
      const id = param(ctx, 'id');
      if (text(f, 'confirm') !== id) throw new ServiceError(`type the client_id "${id}" to confirm`, 'confirm');
      await perform(service, removeClientOp, { clientId: id });
      seeOther(ctx, '/admin/clients?done=removed');
    },
  });

  // APIs

  const apisPage = async (ctx: Context, redisplay?: Redisplay) => {
    const apis = await perform(consoleOf(ctx).service, listApisOp, {});
    show(ctx, 'apis', 'APIs', { apis, redisplay });
  };
  pages.get('/apis', (ctx) => apisPage(ctx));
  change('/apis', {
    label: 'Create an API',
    redisplay: apisPage,
    async run(ctx, f, { service }) {
      const api = await perform(service, createApiOp, {
        identifier: text(f, 'identifier'),
        name: text(f, 'name'),
        scopes: lines(f, 'scopes'),
        accessTokenFormat: f.get('accessTokenFormat') === 'opaque' ? 'opaque' : 'jwt',
        signingAlg: f.get('signingAlg') === 'RS256' ? 'RS256' : 'ES256',
        accessTokenTtlSeconds: whole(f, 'accessTokenTtlSeconds', 300),
      });
      seeOther(ctx, `${apiPath(api.identifier)}&done=created`);
    },
  });
  const apiPage = async (ctx: Context, redisplay?: Redisplay) => {
    const id = redisplay?.values.get('identifier') ?? queryParam(ctx, 'id');
    const { service } = consoleOf(ctx);
    const [apis, clients, rules] = await Promise.all([perform(service, listApisOp, {}), perform(service, listClientsOp, {}), perform(service, listScopeRulesOp, {})]);
    const api = apis.find((a) => a.identifier === id);
    if (!api) throw new HttpError(404, `There is no API "${id}".`, 'Not found');
    const allowed = new Set(api.clients.map((x) => x.clientId));
    show(ctx, 'api', api.name, {
      api,
      rules: rules.filter((r) => r.resource === api.identifier),
      others: clients.filter((x) => !allowed.has(x.client_id) && !x.builtin).map((x) => x.client_id),
      redisplay,
    });
  };
  pages.get('/apis/view', (ctx) => apiPage(ctx));
  change('/apis/allow', {
    label: 'Let a client obtain tokens for an API',
    redisplay: apiPage,
    async run(ctx, f, { service }) {
      const scopes = f.getAll('scopes');
      await perform(service, allowApiOp, { identifier: text(f, 'identifier'), clientId: text(f, 'clientId'), ...(scopes.length ? { scopes } : {}) });
      seeOther(ctx, `${apiPath(text(f, 'identifier'))}&done=allowed`);
    },
  });
  change('/apis/disallow', {
    label: 'Stop a client obtaining tokens for an API',
    async run(ctx, f, { service }) {
      await perform(service, disallowApiOp, { identifier: text(f, 'identifier'), clientId: text(f, 'clientId') });
      seeOther(ctx, `${apiPath(text(f, 'identifier'))}&done=disallowed`);
    },
  });
  change('/apis/remove', {
    label: (f) => `Remove the API ${f.get('identifier') ?? ''}`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removeApiOp, { identifier: text(f, 'identifier') });
      seeOther(ctx, '/admin/apis?done=removed');
    },
  });

  // Scope rules

  const scopesPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const [rules, apis] = await Promise.all([perform(service, listScopeRulesOp, {}), perform(service, listApisOp, {})]);
    show(ctx, 'scopes', 'Scope rules', {
      rules: rules.map((r) => ({ ...r, described: describeRule(r) })),
      apis,
      factors: FACTORS,
      oidcScopes: OIDC_SCOPES.filter((s) => s !== 'openid'),
      defaultMaxAge: DEFAULT_SCOPE_MAX_AGE_SECONDS,
      redisplay,
    });
  };
  pages.get('/scopes', (ctx) => scopesPage(ctx));
  change('/scopes/protect', {
    label: (f) => `Protect the scope ${f.get('scope') ?? ''} with a second factor`,
    sensitive: true,
    redisplay: scopesPage,
    async run(ctx, f, { service }) {
      const factors = f.getAll('factors');
      const minutes = whole(f, 'maxAgeMinutes', DEFAULT_SCOPE_MAX_AGE_SECONDS / 60)!;
      if (minutes < 0 || minutes > 1440) throw new ServiceError('must be 0 to 1440 minutes', 'maxAgeMinutes');
      await perform(service, protectScopeOp, {
        scope: text(f, 'scope'),
        ...(text(f, 'api') ? { api: text(f, 'api') } : {}),
        maxAgeSeconds: minutes * 60,
        factors: factors.length ? (factors as (typeof FACTORS)[number][]) : null,
      });
      seeOther(ctx, '/admin/scopes?done=protected');
    },
  });
  change('/scopes/unprotect', {
    label: (f) => `Stop protecting the scope ${f.get('scope') ?? ''}`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, unprotectScopeOp, { scope: text(f, 'scope'), ...(text(f, 'api') ? { api: text(f, 'api') } : {}) });
      seeOther(ctx, '/admin/scopes?done=unprotected');
    },
  });

  // Access policies

  const policiesPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const [policies, groups] = await Promise.all([perform(service, listPoliciesOp, {}), perform(service, listGroupsOp, {})]);
    show(ctx, 'policies', 'Access policies', { policies, groups: groups.map((g) => g.name), factors: FACTORS, redisplay });
  };
  pages.get('/policies', (ctx) => policiesPage(ctx));
  const policyFields = (f: URLSearchParams) => {
    const factors = f.getAll('allowedFactors');
    const mfa = text(f, 'mfa');
    return {
      priority: whole(f, 'priority', 100),
      mfa: mfa as 'required' | 'optional' | 'off',
      allowedFactors: factors.length && factors.length < FACTORS.length ? (factors as (typeof FACTORS)[number][]) : null,
      requireAuthenticatorApp: f.has('requireAuthenticatorApp'),
      managerApproval: f.has('managerApproval'),
    };
  };
  change('/policies', {
    label: (f) => `Create the access policy ${f.get('name') ?? ''}`,
    sensitive: true,
    redisplay: policiesPage,
    async run(ctx, f, { service }) {
      const subjectType = f.get('subjectType') === 'user' ? 'user' : 'group';
      // One subject: a user typed while "a group" is chosen would be silently dropped.
      if (subjectType === 'group' && text(f, 'user')) throw new ServiceError('“Applies to” says a group: choose “a user” to apply it to this user, or leave this empty', 'user');
      if (subjectType === 'user' && !text(f, 'user')) throw new ServiceError('name the user it applies to', 'user');
      await perform(service, createPolicyOp, { name: text(f, 'name'), subjectType, subject: text(f, subjectType), ...policyFields(f) }).catch((error: unknown) => {
        if (error instanceof ServiceError || !(error instanceof Error) || (error as ServiceError).field !== 'subject') throw error;
        throw new ServiceError(error.message, subjectType);
      });
      seeOther(ctx, '/admin/policies?done=created');
    },
  });
  const policyPage = async (ctx: Context, redisplay?: Redisplay) => {
    const name = redisplay?.values.get('name') ?? queryParam(ctx, 'name');
    const policy = (await perform(consoleOf(ctx).service, listPoliciesOp, {})).find((p) => p.name === name);
    if (!policy) throw new HttpError(404, `There is no access policy "${name}".`, 'Not found');
    show(ctx, 'policy', `Policy ${policy.name}`, { policy, factors: FACTORS, redisplay });
  };
  pages.get('/policies/edit', (ctx) => policyPage(ctx));
  change('/policies/edit', {
    label: (f) => `Change the access policy ${f.get('name') ?? ''}`,
    sensitive: true,
    redisplay: policyPage,
    async run(ctx, f, { service }) {
      await perform(service, updatePolicyOp, { name: text(f, 'name'), changes: policyFields(f) });
      seeOther(ctx, '/admin/policies?done=saved');
    },
  });
  change('/policies/remove', {
    label: (f) => `Remove the access policy ${f.get('name') ?? ''}`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removePolicyOp, { name: text(f, 'name') });
      seeOther(ctx, '/admin/policies?done=removed');
    },
  });
}
