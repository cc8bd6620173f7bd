import { z } from 'zod';
import { createClient, listClients, removeClient, rotateClientSecret, setClientMfa, setClientScope, updateClient, type ClientInput } from '../clients/clients.js';
import {
  allowClient, createResourceServer, disallowClient, listClientAccess, listResourceServers, removeResourceServer, type ResourceServerInput,
} from '../resource-servers/resource-servers.js';
import { ensureKeys, rotateKeys } from '../oidc/keys.js';
import { loadSettings, maskSecrets, SECRET_PATHS, setSetting, setSettings, SettingsError, valueAt, type Settings } from '../settings/settings.js';
import { deliveryProblems } from '../factors/delivery/index.js';
import type { Mode } from '../config.js';
import { createPolicy, listPolicies, removePolicy, updatePolicy, type PolicyChanges, type PolicyInput } from '../policy/policies.js';
import { sendMail } from '../factors/delivery/mail.js';
import { sendTwilioSms } from '../factors/delivery/twilio.js';
import { sendGatewaySms } from '../factors/delivery/gateway.js';
import { DeliveryError } from '../factors/delivery/types.js';
import { E164_PATTERN, EMAIL_PATTERN } from '../directory/users.js';
import { listScopeRules, protectScope, unprotectScope, type ScopeRuleInput } from '../scopes/rules.js';
import { operation, ownedInput, ServiceError } from './service.js';


const id = (what: string) => z.string().min(1, `name the ${what}`).max(512, `no ${what} has a name that long`);

export const createClientOp = operation({
  kind: 'change',
  input: ownedInput<ClientInput>(),
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
  input: ownedInput<ResourceServerInput>(),
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
  input: ownedInput<PolicyInput>(),
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
  input: ownedInput<ScopeRuleInput>(),
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

export const updateClientOp = operation({
  kind: 'change',
  input: z.object({
    clientId: id('client'),
    name: z.string().optional(),
    redirectUris: z.array(z.string()).optional(),
    postLogoutRedirectUris: z.array(z.string()).optional(),
    scope: z.string().optional(),
    grantTypes: z.array(z.string()).optional(),
    requireConsent: z.boolean().optional(),
    mfaRequired: z.boolean().optional(),
    managerApproval: z.boolean().optional(),
  }),
  async run({ db }, { clientId, ...changes }) {
    const changed = await updateClient(db, clientId, changes);
    return { result: changed, change: Object.keys(changed).length ? { type: 'client.updated', subject: clientId, details: changed } : undefined };
  },
});

/** A new secret for a confidential client, returned once and never shown again. */
export const rotateClientSecretOp = operation({
  kind: 'change',
  input: z.object({ clientId: id('client') }),
  async run({ db, box }, { clientId }) {
    const secret = await rotateClientSecret(db, box, clientId);
    return { result: secret, change: { type: 'client.secret_rotated', subject: clientId } };
  },
});

export const updatePolicyOp = operation({
  kind: 'change',
  input: z.object({ name: id('policy'), changes: z.custom<PolicyChanges>((v) => typeof v === 'object' && v !== null) }),
  async run({ db }, { name, changes }) {
    const changed = await updatePolicy(db, name, changes);
    return { result: changed, change: Object.keys(changed).length ? { type: 'policy.updated', subject: name, details: changed } : undefined };
  },
});

/** Signing keys as the JWKS shows them: active ones sign, retired ones still verify what they signed. */
export const listKeysOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db }) {
    const keys = await db.selectFrom('keys').select(['kid', 'alg', 'use', 'status', 'created_at', 'retired_at']).where('use', '=', 'sig').orderBy('created_at', 'desc').execute();
    return { result: keys };
  },
});

/** Several settings of one section, all or none (a console form); secrets are never written to the audit log. */
export const setSettingsOp = operation({
  kind: 'change',
  input: z.object({ values: z.record(z.string().max(100), z.unknown()) }),
  async run({ db, box, mode }, { values }) {
    if (Object.keys(values).length === 0) return { result: undefined };
    const before = await loadSettings(db, box);
    await setSettings(db, box, values, (_before, after) => {
      keepsDelivery(mode)(before, after);
      // The admin console asks every administrator for a second factor: with no method left, nobody could sign in to it.
      // Recovery codes alone are no way in: they are made on /account, after a sign-in with another factor.
      const { recovery: _recovery, ...enrollable } = after.mfa.methods;
      if (!Object.values(enrollable).some(Boolean)) {
        throw new SettingsError('keep at least one method switched on: the admin console needs a second factor to sign in', 'mfa.methods.totp');
      }
    });
    // The record names what changed, not every field of the form.
    const after = await loadSettings(db, box);
    const changed = Object.keys(values).filter((path) => JSON.stringify(valueAt(before, path)) !== JSON.stringify(valueAt(after, path)));
    if (changed.length === 0) return { result: undefined };
    const shown = Object.fromEntries(changed.map((path) => [path, SECRET_PATHS.has(path) ? (values[path] === null ? '(removed)' : '********') : valueAt(after, path)]));
    return { result: undefined, change: { type: 'settings.changed', subject: changed[0]!.split('.')[0]!, details: shown } };
  },
});

/** What a test message brought back: the provider's answer, or why it failed. */
export interface DeliveryTest {
  ok: boolean;
  summary: string;
  answer: string | null;
}

/**
 * Sends a test message through one provider with the saved settings, switched on or not, and
 * reports what the server answered and (for the gateway) whether its criteria matched.
 */
export const testDeliveryOp = operation({
  kind: 'change',
  input: z
    .object({ provider: z.enum(['smtp', 'twilio', 'gateway']), to: z.string().trim().min(1, 'say where to send it').max(254) })
    .superRefine((v, ctx) => {
      if (v.provider === 'smtp' && !EMAIL_PATTERN.test(v.to)) ctx.addIssue({ code: 'custom', path: ['to'], message: 'must be an email address' });
      if (v.provider !== 'smtp' && !E164_PATTERN.test(v.to)) ctx.addIssue({ code: 'custom', path: ['to'], message: 'must be a phone number in E.164 form, e.g. +15555550100' });
    }),
  async run({ db, box }, { provider, to }): Promise<{ result: DeliveryTest; change: { type: 'delivery.tested'; subject: string; details: Record<string, unknown> } }> {
    const settings = await loadSettings(db, box);
    const message = { to, subject: `${settings.mfa.appName} test message`, text: `This is a test message from ${settings.mfa.appName}. No action is needed.` };
    let result: DeliveryTest;
    try {
      if (provider === 'smtp' && !settings.smtp.host) throw new ServiceError('set the SMTP host first', 'host');
      if (provider === 'gateway' && !settings.sms_gateway.url) throw new ServiceError('set the gateway URL first', 'url');
      const answer =
        provider === 'smtp' ? await sendMail(settings.smtp, message) : provider === 'twilio' ? await sendTwilioSms(settings.twilio, message) : await sendGatewaySms(settings.sms_gateway, message);
      result = { ok: true, summary: provider === 'gateway' ? 'the gateway answered and its success criteria matched' : 'the server accepted the message', answer };
    } catch (error) {
      if (!(error instanceof DeliveryError)) throw error;
      result = { ok: false, summary: error.message, answer: error.answer ?? null };
    }
    return { result, change: { type: 'delivery.tested', subject: provider, details: { to, ok: result.ok, summary: result.summary } } };
  },
});
