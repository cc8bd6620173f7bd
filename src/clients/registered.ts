import { ExpiringCache } from '../cache.js';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { CLIENT_SECRET_PURPOSE } from './clients.js';

export interface RegisteredClient {
  clientId: string;
  /** OIDC client metadata for oidc-provider, with the client secret opened. */
  metadata: Record<string, unknown>;
  name: string;
  requireConsent: boolean;
  mfaRequired: boolean;
  /** How old a second factor may be for this client; null: the mfa.maxAgeSeconds setting. */
  mfaMaxAgeSeconds: number | null;
  /** Sign-ins to this client go through manager approval. */
  managerApproval: boolean;
  /** The scopes of each API (by identifier) the client may obtain tokens for. */
  apiScopes: Record<string, string[]>;
}

/**
 * Registered clients as the running server sees them. Every token request and every login page
 * needs its client, so each instance keeps them for a few seconds instead of querying and opening
 * the sealed secret each time; a change made with the CLI reaches every instance within that time.
 */
export class RegisteredClients {
  private readonly cache: ExpiringCache<RegisteredClient>;

  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
    ttlMs: number,
  ) {
    this.cache = new ExpiringCache(ttlMs);
  }

  async get(clientId: string): Promise<RegisteredClient | undefined> {
    // A NUL can be in no client_id (and PostgreSQL would refuse the lookup).
    if (clientId.length === 0 || clientId.length > 128 || clientId.includes('\u0000')) return undefined;
    return this.cache.get(clientId, () => this.load(clientId));
  }

  /** Drops what this instance keeps, after a change made in this process. */
  forget(): void {
    this.cache.clear();
  }

  private async load(clientId: string): Promise<RegisteredClient | undefined> {
    const row = await this.db
      .selectFrom('clients')
      .select(['client_id', 'metadata', 'require_consent', 'mfa_required', 'mfa_max_age_seconds', 'manager_approval'])
      .select(sql<Record<string, string>>`coalesce((select jsonb_object_agg(a.resource_server, a.scope) from client_api_access a where a.client_id = clients.client_id), '{}')`.as('api_access'))
      .where('client_id', '=', clientId)
      .executeTakeFirst();
    if (!row) return undefined;
    const { client_secret_sealed: sealed, ...metadata } = row.metadata as Record<string, unknown>;
    if (typeof sealed === 'string') metadata.client_secret = this.box.open(sealed, `${CLIENT_SECRET_PURPOSE}:${clientId}`);
    return {
      clientId,
      metadata,
      name: typeof metadata.client_name === 'string' ? metadata.client_name : clientId,
      requireConsent: row.require_consent,
      mfaRequired: row.mfa_required,
      mfaMaxAgeSeconds: row.mfa_max_age_seconds,
      managerApproval: row.manager_approval,
      apiScopes: Object.fromEntries(Object.entries(row.api_access).map(([api, scope]) => [api, scope.split(' ')])),
    };
  }
}
