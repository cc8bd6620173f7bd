import { sql } from 'kysely';
import { z } from 'zod';
import { ExpiringCache } from '../cache.js';
import { isUniqueViolation, type Db } from '../db/index.js';
import { DomainError, firstIssue } from '../domain-error.js';

/** An API (OAuth resource server) that clients obtain access tokens for by naming it as `resource`. */
export interface ResourceServer {
  identifier: string;
  name: string;
  scopes: string[];
  /** jwt: self-contained, verified with the JWKS, never stored; opaque: stored, checked by introspection. */
  accessTokenFormat: 'jwt' | 'opaque';
  signingAlg: 'RS256' | 'ES256';
  accessTokenTtlSeconds: number;
}

export class ResourceServerError extends DomainError {}

const scopeToken = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/;

export const resourceServerInputSchema = z.object({
  // RFC 8707: an absolute URI without a fragment; it becomes the tokens' `aud`.
  identifier: z
    .string()
    .max(512)
    .refine((v) => URL.canParse(v) && !v.includes('#'), 'the identifier must be an absolute URI without a fragment, e.g. https://api.example.com'),
  name: z.string().min(1, 'must not be empty').max(200, 'is at most 200 characters'),
  scopes: z.array(z.string().regex(scopeToken, 'a scope is printable ASCII without spaces, quotes or backslashes')).min(1, 'an API defines at least one scope'),
  accessTokenFormat: z.enum(['jwt', 'opaque'], 'must be jwt or opaque').default('jwt'),
  // ES256 by default: a P-256 signature costs a tenth of an RS256 one. RS256 is for an API whose
  // library accepts only the algorithm RFC 9068 requires of everyone.
  signingAlg: z.enum(['RS256', 'ES256'], 'must be RS256 or ES256').default('ES256'),
  accessTokenTtlSeconds: z.number().int('must be a whole number of seconds').min(60, 'must be 60 to 86400 seconds').max(86_400, 'must be 60 to 86400 seconds').default(300),
});

export type ResourceServerInput = z.input<typeof resourceServerInputSchema>;

type Row = { identifier: string; name: string; scope: string; access_token_format: 'jwt' | 'opaque'; signing_alg: 'RS256' | 'ES256'; access_token_ttl: number };

function fromRow(r: Row): ResourceServer {
  return {
    identifier: r.identifier,
    name: r.name,
    scopes: r.scope.split(' '),
    accessTokenFormat: r.access_token_format,
    signingAlg: r.signing_alg,
    accessTokenTtlSeconds: r.access_token_ttl,
  };
}

const COLUMNS = ['identifier', 'name', 'scope', 'access_token_format', 'signing_alg', 'access_token_ttl'] as const;

export async function createResourceServer(db: Db, input: ResourceServerInput): Promise<ResourceServer> {
  const parsed = resourceServerInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ResourceServerError(message, field));
  const r = parsed.data;
  const row = await db
    .insertInto('resource_servers')
    .values({
      identifier: r.identifier,
      name: r.name,
      scope: [...new Set(r.scopes)].join(' '),
      access_token_format: r.accessTokenFormat,
      signing_alg: r.signingAlg,
      access_token_ttl: r.accessTokenTtlSeconds,
    })
    .returning(COLUMNS)
    .executeTakeFirstOrThrow()
    .catch((error: unknown) => {
      if (isUniqueViolation(error)) throw new ResourceServerError(`an API "${r.identifier}" already exists`, 'identifier');
      throw error;
    });
  return fromRow(row);
}

export async function listResourceServers(db: Db): Promise<ResourceServer[]> {
  return (await db.selectFrom('resource_servers').select(COLUMNS).orderBy('identifier').execute()).map(fromRow);
}

export async function findResourceServer(db: Db, identifier: string): Promise<ResourceServer | undefined> {
  const row = await db.selectFrom('resource_servers').select(COLUMNS).where('identifier', '=', identifier).executeTakeFirst();
  return row && fromRow(row);
}

/** Removes an API; its stored (opaque) tokens stop working with it. JWTs already issued live until they expire. */
export async function removeResourceServer(db: Db, identifier: string): Promise<void> {
  const result = await db.deleteFrom('resource_servers').where('identifier', '=', identifier).executeTakeFirst();
  if (result.numDeletedRows === 0n) throw new ResourceServerError(`no API "${identifier}"`);
  await db.deleteFrom('oidc_models').where(sql<boolean>`payload->>'aud' = ${identifier}`).execute();
  // Its scopes' MFA rules go with it: an API added again under the same identifier starts unprotected.
  await db.deleteFrom('scope_rules').where('resource', '=', identifier).execute();
}

/**
 * Lets a client obtain tokens for an API, with the given scopes of it (all of them when none are
 * given). Allowing again replaces the scopes.
 */
export async function allowClient(db: Db, identifier: string, clientId: string, scopes?: string[]): Promise<string[]> {
  const api = await findResourceServer(db, identifier);
  if (!api) throw new ResourceServerError(`no API "${identifier}"`);
  const client = await db.selectFrom('clients').select(['client_id', 'builtin']).where('client_id', '=', clientId).executeTakeFirst();
  if (!client) throw new ResourceServerError(`no client "${clientId}"`);
  if (client.builtin) throw new ResourceServerError(`"${clientId}" is registered by Tessera itself and obtains no API tokens`, 'clientId');
  const chosen = scopes && scopes.length > 0 ? [...new Set(scopes)] : api.scopes;
  const unknown = chosen.filter((s) => !api.scopes.includes(s));
  if (unknown.length > 0) throw new ResourceServerError(`${identifier} has no scope ${unknown.join(', ')} (it has ${api.scopes.join(' ')})`, 'scopes');
  await db
    .insertInto('client_api_access')
    .values({ client_id: clientId, resource_server: identifier, scope: chosen.join(' ') })
    .onConflict((oc) => oc.columns(['client_id', 'resource_server']).doUpdateSet({ scope: chosen.join(' ') }))
    .execute();
  return chosen;
}

/** Stops a client obtaining new tokens for an API (tokens it holds live until they expire). */
export async function disallowClient(db: Db, identifier: string, clientId: string): Promise<void> {
  const result = await db.deleteFrom('client_api_access').where('resource_server', '=', identifier).where('client_id', '=', clientId).executeTakeFirst();
  if (result.numDeletedRows === 0n) throw new ResourceServerError(`client "${clientId}" was not allowed to use ${identifier}`);
}

export function listClientAccess(db: Db) {
  return db.selectFrom('client_api_access').select(['resource_server', 'client_id', 'scope']).orderBy('resource_server').orderBy('client_id').execute();
}

/**
 * The scopes of an API a client may be given: those the API still defines among those the
 * client was allowed. None means the client may not use the API at all.
 */
export function grantableScopes(api: Pick<ResourceServer, 'scopes'>, allowed: readonly string[] | undefined): string[] {
  return allowed ? api.scopes.filter((s) => allowed.includes(s)) : [];
}

/**
 * Registered APIs as the running server sees them, kept per instance like clients: every token
 * request that names a resource needs one.
 */
export class ResourceServers {
  private readonly cache: ExpiringCache<ResourceServer>;

  constructor(
    private readonly db: Db,
    ttlMs: number,
  ) {
    this.cache = new ExpiringCache(ttlMs);
  }

  get(identifier: string): Promise<ResourceServer | undefined> {
    if (identifier.length === 0 || identifier.length > 512 || identifier.includes('\u0000')) return Promise.resolve(undefined);
    return this.cache.get(identifier, () => findResourceServer(this.db, identifier));
  }

  /** Drops what this instance keeps, after a change made in this process. */
  forget(): void {
    this.cache.clear();
  }
}
