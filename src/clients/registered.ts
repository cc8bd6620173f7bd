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
}

/**
 * Registered clients as the running server sees them. Every token request and every login page
 * needs its client, so each instance keeps them for a few seconds instead of querying and opening
 * the sealed secret each time; a change made with the CLI reaches every instance within that time.
 */
export class RegisteredClients {
  private readonly cache = new Map<string, { client: RegisteredClient; until: number }>();

  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
    private readonly ttlMs: number,
  ) {}

  async get(clientId: string): Promise<RegisteredClient | undefined> {
    if (clientId.length === 0 || clientId.length > 128) return undefined;
    const hit = this.cache.get(clientId);
    if (hit && hit.until > Date.now()) return hit.client;
    const row = await this.db
      .selectFrom('clients')
      .select(['client_id', 'metadata', 'require_consent', 'mfa_required'])
      .where('client_id', '=', clientId)
      .executeTakeFirst();
    if (!row) {
      this.cache.delete(clientId);
      return undefined;
    }
    const { client_secret_sealed: sealed, ...metadata } = row.metadata as Record<string, unknown>;
    if (typeof sealed === 'string') metadata.client_secret = this.box.open(sealed, `${CLIENT_SECRET_PURPOSE}:${clientId}`);
    const client: RegisteredClient = {
      clientId,
      metadata,
      name: typeof metadata.client_name === 'string' ? metadata.client_name : clientId,
      requireConsent: row.require_consent,
      mfaRequired: row.mfa_required,
    };
    if (this.ttlMs > 0) {
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(clientId, { client, until: Date.now() + this.ttlMs });
    }
    return client;
  }
}
