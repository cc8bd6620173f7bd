import { z } from 'zod';
import { createClient, listClients, removeClient, setClientMfa, setClientScope, type ClientInput } from '../clients/clients.js';
import {
  allowClient, createResourceServer, disallowClient, listClientAccess, listResourceServers, removeResourceServer, type ResourceServerInput,
} from '../resource-servers/resource-servers.js';
import { ensureKeys, rotateKeys } from '../oidc/keys.js';
import { loadSettings, maskSecrets, SECRET_PATHS, setSetting, SettingsError, type Settings } from '../settings/settings.js';
import { deliveryProblems } from '../factors/delivery/index.js';
import type { Mode } from '../config.js';
import { createPolicy, listPolicies, removePolicy, type PolicyInput } from '../policy/policies.js';
import { listScopeRules, protectScope, unprotectScope, type ScopeRuleInput } from '../scopes/rules.js';
import { operation } from './service.js';

// Inputs whose shape the domain module owns: it validates them with its own schema and names the field at fault.
const owned = <T>() => z.custom<T>((value) => typeof value === 'object' && value !== null, 'expected the fields of the form');
const id = (what: string) => z.string().min(1, `name the ${what}`).max(512, `no ${what} has a name that long`);

export const createClientOp = operation({
  kind: 'change',
  input: owned<ClientInput>(),
  async run({ db, box }, input) {
    const created = await createClient(db, box, input);
    return {
      result: created,
      change: {
        type: 'client.created',
        subject: created.clientId,
        details: { public: input.public ?? false, redirect_uris: input.redirectUris ?? [], grant_types: input.grantTypes ?? null, consent: input.requireConsent ?? true },
      },
    };
  },
});

export const listClientsOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listClients(db) }) });

export const removeClientOp = operation({
  kind: 'change',
  input: z.object({ clientId: id('client') }),
  async run({ db }, { clientId }) {
    await removeClient(db, clientId);
    return { result: undefined, change: { type: 'client.removed', subject: clientId } };
  },
});

export const setClientMfaOp = operation({
  kind: 'change',
  input: z.object({ clientId: id('client'), required: z.boolean() }),
  async run({ db }, { clientId, required }) {
    await setClientMfa(db, clientId, required);
    return { result: undefined, change: { type: 'client.mfa_changed', subject: clientId, details: { mfa_required: required } } };
  },
});

export const setClientScopeOp = operation({
  kind: 'change',
  input: z.object({ clientId: id('client'), scope: z.string().max(2000) }),
  async run({ db }, { clientId, scope }) {
    await setClientScope(db, clientId, scope);
    return { result: undefined, change: { type: 'client.scope_changed', subject: clientId, details: { scope } } };
  },
});

export const createApiOp = operation({
  kind: 'change',
  input: owned<ResourceServerInput>(),
  async run({ db }, input) {
    const api = await createResourceServer(db, input);
    return { result: api, change: { type: 'api.created', subject: api.identifier, details: { scopes: api.scopes, format: api.accessTokenFormat, ttl: api.accessTokenTtlSeconds } } };
  },
});

export const allowApiOp = operation({
  kind: 'change',
  input: z.object({ identifier: id('API'), clientId: id('client'), scopes: z.array(z.string()).optional() }),
  async run({ db }, { identifier, clientId, scopes }) {
    const allowed = await allowClient(db, identifier, clientId, scopes);
    return { result: allowed, change: { type: 'api.allowed', subject: identifier, details: { client_id: clientId, scopes: allowed } } };
  },
});

export const disallowApiOp = operation({
  kind: 'change',
  input: z.object({ identifier: id('API'), clientId: id('client') }),
  async run({ db }, { identifier, clientId }) {
    await disallowClient(db, identifier, clientId);
    return { result: undefined, change: { type: 'api.disallowed', subject: identifier, details: { client_id: clientId } } };
  },
});

export const listApisOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db }) {
    const [apis, access] = await Promise.all([listResourceServers(db), listClientAccess(db)]);
    return { result: apis.map((api) => ({ ...api, clients: access.filter((a) => a.resource_server === api.identifier).map((a) => ({ clientId: a.client_id, scope: a.scope })) })) };
  },
});

export const removeApiOp = operation({
  kind: 'change',
  input: z.object({ identifier: id('API') }),
  async run({ db }, { identifier }) {
    await removeResourceServer(db, identifier);
    return { result: undefined, change: { type: 'api.removed', subject: identifier } };
  },
});

export const rotateKeysOp = operation({
  kind: 'change',
  input: z.object({}),
  async run({ db, box }) {
    await ensureKeys(db, box);
    const { kids } = await rotateKeys(db, box);
    return { result: kids, change: { type: 'keys.rotated', subject: 'keys', details: { kids } } };
  },
});

/** In production, a change that leaves a switched-on code method unable to send would stop the next start: refused. */
const keepsDelivery = (mode: Mode) => (before: Settings, after: Settings) => {
  const added = deliveryProblems(after, mode).filter((p) => !deliveryProblems(before, mode).includes(p));
  if (added.length) throw new SettingsError(`refused: ${added.join('; ')}`);
};

export const showSettingsOp = operation({
  kind: 'read',
  input: z.object({}),
  run: async ({ db, box }) => ({ result: maskSecrets(await loadSettings(db, box)) }),
});

/** Sets one setting by its dotted path (null: back to the default); a secret is never written back to the audit log. */
export const setSettingOp = operation({
  kind: 'change',
  input: z.object({ path: z.string().min(1).max(100), value: z.unknown() }),
  async run({ db, box, mode }, { path, value }) {
    await setSetting(db, box, path, value, keepsDelivery(mode));
    return {
      result: undefined,
      change: { type: 'settings.changed', subject: path, details: value === null ? { reset: true } : { value: SECRET_PATHS.has(path) ? '********' : value } },
    };
  },
});

export const createPolicyOp = operation({
  kind: 'change',
  input: owned<PolicyInput>(),
  async run({ db }, input) {
    await createPolicy(db, input);
    return {
      result: undefined,
      change: {
        type: 'policy.created',
        subject: input.name,
        details: { [input.subjectType]: input.subject, mfa: input.mfa, priority: input.priority ?? null, factors: input.allowedFactors ?? null, require_authenticator_app: input.requireAuthenticatorApp ?? false },
      },
    };
  },
});

export const listPoliciesOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listPolicies(db) }) });

export const removePolicyOp = operation({
  kind: 'change',
  input: z.object({ name: id('policy') }),
  async run({ db }, { name }) {
    await removePolicy(db, name);
    return { result: undefined, change: { type: 'policy.removed', subject: name } };
  },
});

export const protectScopeOp = operation({
  kind: 'change',
  input: owned<ScopeRuleInput>(),
  async run({ db }, input) {
    const rule = await protectScope(db, input);
    return { result: rule, change: { type: 'scope.protected', subject: rule.resource ? `${rule.resource} ${rule.scope}` : rule.scope, details: { factors: rule.factors, max_age_seconds: rule.maxAgeSeconds } } };
  },
});

export const unprotectScopeOp = operation({
  kind: 'change',
  input: z.object({ scope: id('scope'), api: z.string().max(512).optional() }),
  async run({ db }, { scope, api }) {
    await unprotectScope(db, scope, api);
    return { result: undefined, change: { type: 'scope.unprotected', subject: api ? `${api} ${scope}` : scope } };
  },
});

export const listScopeRulesOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listScopeRules(db) }) });
