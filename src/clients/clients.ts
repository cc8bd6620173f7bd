import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { z } from 'zod';
import { isUniqueViolation, type Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { OIDC_SCOPES } from '../oidc/account.js';
import { DomainError, firstIssue } from '../domain-error.js';

/** Client secrets are sealed at rest; the provider's adapter opens them when it loads a client. */
export const CLIENT_SECRET_PURPOSE = 'client_secret';

export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials'] as const;

const redirectUri = z
  .string()
  .max(2000, 'is too long')
  .superRefine((u, ctx) => {
    if (!URL.canParse(u)) ctx.addIssue({ code: 'custom', message: `"${u.slice(0, 100)}" is not an absolute URL (e.g. https://app.example.com/callback)` });
    // Web applications only: a javascript:, data: or file: address can never receive a code.
    else if (!['http:', 'https:'].includes(new URL(u).protocol)) ctx.addIssue({ code: 'custom', message: `"${u.slice(0, 100)}" must be an http:// or https:// address` });
    else if (u.includes('#')) ctx.addIssue({ code: 'custom', message: `"${u.slice(0, 100)}" must not contain a fragment` });
  });

// A client's own scopes are OpenID Connect ones; API scopes are given to it per API (`api allow`).
const clientScope = z
  .string()
  .max(200)
  .refine((s) => s.split(' ').every((x) => (OIDC_SCOPES as readonly string[]).includes(x)), `scope is a space-separated list of ${OIDC_SCOPES.join(', ')} (an API's scopes are given with "api allow")`);

export const clientInputSchema = z
  .object({
    clientId: z.string().regex(/^[A-Za-z0-9._~-]{1,128}$/, 'client_id may use letters, digits and . _ ~ - (at most 128)'),
    secret: z.string().min(16, 'client secret must be at least 16 characters').max(512).optional(),
    public: z.boolean().default(false),
    name: z.string().min(1, 'must not be empty').max(200, 'is at most 200 characters').optional(),
    redirectUris: z.array(redirectUri).default([]),
    postLogoutRedirectUris: z.array(redirectUri).default([]),
    scope: clientScope.default('openid profile email phone offline_access'),
    grantTypes: z.array(z.enum(GRANT_TYPES, `must be one of ${GRANT_TYPES.join(', ')}`)).min(1).default(['authorization_code', 'refresh_token']),
    requireConsent: z.boolean().default(true),
    idTokenAlg: z.enum(['RS256', 'ES256'], 'must be RS256 or ES256').default('RS256'),
  })
  .superRefine((c, ctx) => {
    if (c.public && c.secret) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'a public client has no secret' });
    if (c.public && c.grantTypes.includes('client_credentials')) ctx.addIssue({ code: 'custom', path: ['grantTypes'], message: 'a public client cannot use client_credentials' });
    if (c.grantTypes.includes('authorization_code') && c.redirectUris.length === 0) ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: 'an authorization_code client needs at least one redirect URI' });
    if (!c.grantTypes.includes('authorization_code') && c.redirectUris.length > 0) ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: 'redirect URIs are only for clients with the authorization_code grant' });
    if (c.grantTypes.includes('refresh_token') && !c.grantTypes.includes('authorization_code')) ctx.addIssue({ code: 'custom', path: ['grantTypes'], message: 'refresh_token comes with authorization_code' });
  });

export type ClientInput = z.input<typeof clientInputSchema>;

export class ClientError extends DomainError {}

/** Creates a client; returns the generated secret for confidential clients created without one. */
export async function createClient(db: Db, box: SecretBox, input: ClientInput): Promise<{ clientId: string; secret: string | null }> {
  const parsed = clientInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ClientError(message, field));
  const c = parsed.data;
  const existing = await db.selectFrom('clients').select('client_id').where('client_id', '=', c.clientId).executeTakeFirst();
  if (existing) throw new ClientError(`client "${c.clientId}" already exists`, 'clientId');
  const secret = c.public ? null : (c.secret ?? randomBytes(32).toString('base64url'));
  const responseTypes = c.grantTypes.includes('authorization_code') ? ['code'] : [];
  const metadata: Record<string, unknown> = {
    client_id: c.clientId,
    client_name: c.name ?? c.clientId,
    redirect_uris: c.redirectUris,
    post_logout_redirect_uris: c.postLogoutRedirectUris,
    grant_types: c.grantTypes,
    response_types: responseTypes,
    scope: c.scope,
    token_endpoint_auth_method: c.public ? 'none' : 'client_secret_basic',
    id_token_signed_response_alg: c.idTokenAlg,
    ...(secret ? { client_secret_sealed: box.seal(secret, `${CLIENT_SECRET_PURPOSE}:${c.clientId}`) } : {}),
  };
  await db
    .insertInto('clients')
    .values({ client_id: c.clientId, metadata: JSON.stringify(metadata), require_consent: c.requireConsent })
    .execute()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new ClientError(`client "${c.clientId}" already exists`);
      throw error;
    });
  return { clientId: c.clientId, secret };
}

/** Replaces the OpenID Connect scopes a client may request. */
export async function setClientScope(db: Db, clientId: string, scope: string): Promise<void> {
  const parsed = clientScope.safeParse(scope);
  if (!parsed.success) throw firstIssue(parsed.error, (message) => new ClientError(message, 'scope'));
  const result = await db
    .updateTable('clients')
    .set({ metadata: sql`jsonb_set(metadata, '{scope}', to_jsonb(${parsed.data}::text))`, updated_at: new Date() })
    .where('client_id', '=', clientId)
    .where('builtin', '=', false)
    .executeTakeFirst();
  if (result.numUpdatedRows === 0n) await refuseMissingOrBuiltin(db, clientId);
}

/** Replaces a client's redirect URIs (after login and after logout); no write when they are already these. */
export async function setClientRedirectUris(db: Db, clientId: string, redirectUris: string[], postLogoutRedirectUris: string[]): Promise<void> {
  const uris = z.array(redirectUri);
  for (const [field, list] of [['redirectUris', redirectUris], ['postLogoutRedirectUris', postLogoutRedirectUris]] as const) {
    const parsed = uris.safeParse(list);
    if (!parsed.success) throw firstIssue(parsed.error, (message) => new ClientError(message, field));
  }
  const result = await db
    .updateTable('clients')
    .set({
      metadata: sql`metadata || jsonb_build_object('redirect_uris', ${JSON.stringify(redirectUris)}::jsonb, 'post_logout_redirect_uris', ${JSON.stringify(postLogoutRedirectUris)}::jsonb)`,
      updated_at: new Date(),
    })
    .where('client_id', '=', clientId)
    .where(sql<boolean>`(metadata->'redirect_uris', metadata->'post_logout_redirect_uris') is distinct from (${JSON.stringify(redirectUris)}::jsonb, ${JSON.stringify(postLogoutRedirectUris)}::jsonb)`)
    .executeTakeFirst();
  if (result.numUpdatedRows === 0n && !(await findClient(db, clientId))) throw new ClientError(`no client "${clientId}"`);
}

/** Whether every login to this client needs a second factor. */
export async function setClientMfa(db: Db, clientId: string, required: boolean): Promise<void> {
  const result = await db.updateTable('clients').set({ mfa_required: required, updated_at: new Date() }).where('client_id', '=', clientId).where('builtin', '=', false).executeTakeFirst();
  if (result.numUpdatedRows === 0n) await refuseMissingOrBuiltin(db, clientId);
}

/** Why a change touched no row: no such client, or one Tessera registered itself (the admin console). */
async function refuseMissingOrBuiltin(db: Db, clientId: string): Promise<never> {
  const row = await db.selectFrom('clients').select('builtin').where('client_id', '=', clientId).executeTakeFirst();
  if (row?.builtin) throw new ClientError(`"${clientId}" is registered by Tessera itself and cannot be changed or removed`, 'clientId');
  throw new ClientError(`no client "${clientId}"`, 'clientId');
}

export async function removeClient(db: Db, clientId: string): Promise<void> {
  const result = await db.deleteFrom('clients').where('client_id', '=', clientId).where('builtin', '=', false).executeTakeFirst();
  if (result.numDeletedRows === 0n) await refuseMissingOrBuiltin(db, clientId);
  // Its tokens, codes and grants stop working with it.
  await db.deleteFrom('oidc_models').where(sql<boolean>`payload->>'clientId' = ${clientId}`).execute();
}

export function listClients(db: Db) {
  return db.selectFrom('clients').select(['client_id', 'metadata', 'require_consent', 'mfa_required', 'manager_approval', 'builtin', 'created_at']).orderBy('client_id').execute();
}

export function findClient(db: Db, clientId: string) {
  return db.selectFrom('clients').select(['client_id', 'metadata', 'require_consent', 'mfa_required', 'manager_approval', 'builtin', 'created_at']).where('client_id', '=', clientId).executeTakeFirst();
}

/** What an administrator may change of a registered client; its id and type (public or confidential) stay. */
export interface ClientChanges {
  name?: string;
  redirectUris?: string[];
  postLogoutRedirectUris?: string[];
  scope?: string;
  grantTypes?: string[];
  requireConsent?: boolean;
  mfaRequired?: boolean;
  managerApproval?: boolean;
}

/** The form of a stored client, as createClient takes it. */
function inputOf(row: { client_id: string; metadata: Record<string, unknown>; require_consent: boolean }): ClientInput {
  const m = row.metadata;
  const list = (v: unknown) => (Array.isArray(v) ? v.map(String) : []);
  return {
    clientId: row.client_id,
    public: m.token_endpoint_auth_method === 'none',
    name: typeof m.client_name === 'string' ? m.client_name : row.client_id,
    redirectUris: list(m.redirect_uris),
    postLogoutRedirectUris: list(m.post_logout_redirect_uris),
    scope: typeof m.scope === 'string' ? m.scope : undefined,
    grantTypes: list(m.grant_types) as ClientInput['grantTypes'],
    requireConsent: row.require_consent,
    idTokenAlg: m.id_token_signed_response_alg === 'ES256' ? 'ES256' : 'RS256',
  };
}

/**
 * Changes a client's settings, checked by the same rules as a new client (an authorization_code
 * client keeps a redirect URI, a public one gets no client_credentials). Returns what changed.
 */
export async function updateClient(db: Db, clientId: string, changes: ClientChanges): Promise<Record<string, unknown>> {
  const row = await findClient(db, clientId);
  if (!row) throw new ClientError(`no client "${clientId}"`, 'clientId');
  if (row.builtin) await refuseMissingOrBuiltin(db, clientId);
  const before = inputOf(row);
  const { mfaRequired, managerApproval, ...metadataChanges } = changes;
  const parsed = clientInputSchema.safeParse({ ...before, ...Object.fromEntries(Object.entries(metadataChanges).filter(([, v]) => v !== undefined)) });
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ClientError(message, field));
  const c = parsed.data;
  const metadata = {
    ...row.metadata,
    client_name: c.name ?? c.clientId,
    redirect_uris: c.redirectUris,
    post_logout_redirect_uris: c.postLogoutRedirectUris,
    grant_types: c.grantTypes,
    response_types: c.grantTypes.includes('authorization_code') ? ['code'] : [],
    scope: c.scope,
  };
  const after = { ...inputOf({ client_id: clientId, metadata, require_consent: c.requireConsent }), mfaRequired: mfaRequired ?? row.mfa_required, managerApproval: managerApproval ?? row.manager_approval };
  const stored = { ...before, mfaRequired: row.mfa_required, managerApproval: row.manager_approval } as Record<string, unknown>;
  const changed = Object.fromEntries(Object.entries(after).filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(stored[key])));
  if (Object.keys(changed).length === 0) return changed;
  await db
    .updateTable('clients')
    .set({ metadata: JSON.stringify(metadata), require_consent: c.requireConsent, mfa_required: after.mfaRequired, manager_approval: after.managerApproval, updated_at: new Date() })
    .where('client_id', '=', clientId)
    .where('builtin', '=', false)
    .execute();
  return changed;
}

/** Gives a confidential client a new secret (returned once); the old one stops working at once. */
export async function rotateClientSecret(db: Db, box: SecretBox, clientId: string): Promise<string> {
  const row = await findClient(db, clientId);
  if (!row) throw new ClientError(`no client "${clientId}"`, 'clientId');
  if (row.builtin) await refuseMissingOrBuiltin(db, clientId);
  if (row.metadata.token_endpoint_auth_method === 'none') throw new ClientError(`"${clientId}" is a public client: it has no secret`, 'clientId');
  const secret = randomBytes(32).toString('base64url');
  await db
    .updateTable('clients')
    .set({ metadata: sql`metadata || jsonb_build_object('client_secret_sealed', ${box.seal(secret, `${CLIENT_SECRET_PURPOSE}:${clientId}`)}::text)`, updated_at: new Date() })
    .where('client_id', '=', clientId)
    .execute();
  return secret;
}
