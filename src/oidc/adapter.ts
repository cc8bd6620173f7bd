import { sql } from 'kysely';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { CLIENT_SECRET_PURPOSE } from '../clients/clients.js';

// Models whose rows are found again by grant, uid or user code.
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'ClientCredentials',
  'BackchannelAuthenticationRequest',
]);

function expiry(expiresIn?: number): Date | null {
  return expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
}

function live(row: { payload: unknown; expires_at: Date | null; consumed_at: Date | null } | undefined): AdapterPayload | undefined {
  if (!row) return undefined;
  if (row.expires_at && row.expires_at.getTime() <= Date.now()) return undefined;
  const payload = row.payload as AdapterPayload;
  return row.consumed_at ? { ...payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) } : payload;
}

/** Every model oidc-provider stores, in one table keyed by (model, id). */
export class KyselyAdapter implements Adapter {
  constructor(
    private readonly db: Db,
    private readonly model: string,
  ) {}

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const row = {
      model: this.model,
      id,
      payload: JSON.stringify(payload),
      grant_id: GRANTABLE.has(this.model) ? (payload.grantId ?? null) : null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      expires_at: expiry(expiresIn),
    };
    await this.db
      .insertInto('oidc_models')
      .values(row)
      .onConflict((oc) =>
        oc.columns(['model', 'id']).doUpdateSet({
          payload: row.payload,
          grant_id: row.grant_id,
          user_code: row.user_code,
          uid: row.uid,
          expires_at: row.expires_at,
        }),
      )
      .execute();
  }

  private async findBy(column: 'id' | 'uid' | 'user_code', value: string): Promise<AdapterPayload | undefined> {
    const row = await this.db
      .selectFrom('oidc_models')
      .select(['payload', 'expires_at', 'consumed_at'])
      .where('model', '=', this.model)
      .where(column, '=', value)
      .executeTakeFirst();
    return live(row);
  }

  find(id: string): Promise<AdapterPayload | undefined> {
    return this.findBy('id', id);
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.findBy('uid', uid);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.findBy('user_code', userCode);
  }

  async consume(id: string): Promise<void> {
    await this.db
      .updateTable('oidc_models')
      .set({ consumed_at: sql`now()` })
      .where('model', '=', this.model)
      .where('id', '=', id)
      .execute();
  }

  async destroy(id: string): Promise<void> {
    await this.db.deleteFrom('oidc_models').where('model', '=', this.model).where('id', '=', id).execute();
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await this.db.deleteFrom('oidc_models').where('grant_id', '=', grantId).execute();
  }
}

/** Clients live in their own table (managed by the CLI and later the admin console); the provider only reads them. */
export class ClientAdapter implements Adapter {
  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
  ) {}

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (id.length > 128) return undefined;
    const row = await this.db.selectFrom('clients').select('metadata').where('client_id', '=', id).executeTakeFirst();
    if (!row) return undefined;
    const { client_secret_sealed: sealed, ...metadata } = row.metadata as Record<string, unknown>;
    if (typeof sealed === 'string') metadata.client_secret = this.box.open(sealed, `${CLIENT_SECRET_PURPOSE}:${id}`);
    return metadata as AdapterPayload;
  }

  private readOnly(): never {
    throw new Error('clients are managed by Tessera, not by the provider');
  }

  async upsert(): Promise<void> { this.readOnly(); }
  async findByUid(): Promise<undefined> { return undefined; }
  async findByUserCode(): Promise<undefined> { return undefined; }
  async consume(): Promise<void> { this.readOnly(); }
  async destroy(): Promise<void> { this.readOnly(); }
  async revokeByGrantId(): Promise<void> { return undefined; }
}

/** Drops rows that expired, so the table does not grow without bound. */
export async function purgeExpired(db: Db): Promise<number> {
  const result = await db.deleteFrom('oidc_models').where('expires_at', '<', sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
