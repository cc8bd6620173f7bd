import { createHmac } from 'node:crypto';
import { CompiledQuery, sql } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';
import { prepared, type Db } from '../db/index.js';
import type { RegisteredClients } from '../clients/registered.js';
import type { SecretBox } from '../crypto/secret-box.js';

/**
 * How protocol records are kept so that a database dump or backup holds no usable credential: the
 * ids that are bearer credentials (tokens, codes, session and interaction ids) and the columns that
 * find rows by them are stored as keyed hashes; the copies inside the payload (`jti`, an
 * interaction's session cookie) are sealed. Ory Hydra likewise stores only token signatures.
 */
export interface StorageKeys {
  /** HMAC key for stored ids (derived from TESSERA_SECRET). */
  idKey: Buffer;
  box: SecretBox;
}

export function storageKeys(box: SecretBox): StorageKeys {
  return { idKey: box.deriveKey('oidc-stored-id'), box };
}

/** The stored form of an id, uid, user code or grant id: "h:" and its HMAC-SHA-256. */
export function storedId(idKey: Buffer, value: string): string {
  return `h:${createHmac('sha256', idKey).update(value).digest('base64url')}`;
}

// Models whose id is no credential (a grant is only ever found through a token; a replay record
// holds a digest): their copy of the id needs no sealing, which spares a cipher on every refresh.
const NOT_CREDENTIALS = new Set(['Grant', 'ReplayDetection']);

function sealPayload(model: string, payload: AdapterPayload, box: SecretBox): Record<string, unknown> {
  if (NOT_CREDENTIALS.has(model)) return { ...payload };
  const { jti, ...rest } = payload as AdapterPayload & { session?: { cookie?: string } };
  const out: Record<string, unknown> = { ...rest };
  if (typeof jti === 'string') out.jti_sealed = box.seal(jti, `oidc-jti:${model}`);
  const session = rest.session as { cookie?: unknown } | undefined;
  if (session && typeof session.cookie === 'string') {
    const { cookie, ...other } = session;
    out.session = { ...other, cookie_sealed: box.seal(cookie, `oidc-session-cookie:${model}`) };
  }
  return out;
}

function openPayload(model: string, stored: Record<string, unknown>, box: SecretBox): AdapterPayload {
  const { jti_sealed: jti, ...rest } = stored;
  const out: Record<string, unknown> = { ...rest };
  if (typeof jti === 'string') out.jti = box.open(jti, `oidc-jti:${model}`);
  const session = rest.session as { cookie_sealed?: unknown } | undefined;
  if (session && typeof session.cookie_sealed === 'string') {
    const { cookie_sealed: cookie, ...other } = session;
    out.session = { ...other, cookie: box.open(cookie, `oidc-session-cookie:${model}`) };
  }
  return out as AdapterPayload;
}

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

/**
 * The payload of a row still in force. A consumed row says so (oidc-provider then refuses it and,
 * for a code or refresh token, revokes its grant), except within `reuseMs` of its first use: a
 * client whose response was lost (a dropped connection, a database restart) may retry with it.
 */
function live(row: { payload: unknown; expires_at: Date | null; consumed_at: Date | null } | undefined, open: (stored: Record<string, unknown>) => AdapterPayload, reuseMs = 0): AdapterPayload | undefined {
  if (!row) return undefined;
  if (row.expires_at && row.expires_at.getTime() <= Date.now()) return undefined;
  const payload = open(row.payload as Record<string, unknown>);
  if (!row.consumed_at || Date.now() - row.consumed_at.getTime() < reuseMs) return payload;
  return { ...payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) };
}

// Fixed statements: every protocol request runs several, so they skip the query builder.
const UPSERT = prepared(`insert into oidc_models (model, id, payload, grant_id, user_code, uid, expires_at)
  values ($1, $2, $3, $4, $5, $6, $7)
  on conflict (model, id) do update set payload = excluded.payload, grant_id = excluded.grant_id,
    user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`);
/**
 * The same write for a machine's access token (client_credentials), committed without waiting for
 * the WAL to reach disk: half of PostgreSQL's CPU per token and of its latency. A PostgreSQL crash
 * can lose the tokens of the last fraction of a second (never a partial one); their clients get
 * 401 from the API and ask again, as they do when a token expires. set_config(…, true) lasts for
 * the statement's own transaction, so nothing else on the connection changes.
 */
const UPSERT_MACHINE_TOKEN = prepared(`with durability as (select set_config('synchronous_commit', 'off', true))
  insert into oidc_models (model, id, payload, grant_id, user_code, uid, expires_at)
  select $1, $2, $3, $4, $5, $6, $7 from durability
  on conflict (model, id) do update set payload = excluded.payload, grant_id = excluded.grant_id,
    user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`);
const FIND = {
  id: prepared('select id, grant_id, payload, expires_at, consumed_at from oidc_models where model = $1 and id = $2'),
  uid: prepared('select id, grant_id, payload, expires_at, consumed_at from oidc_models where model = $1 and uid = $2'),
  user_code: prepared('select id, grant_id, payload, expires_at, consumed_at from oidc_models where model = $1 and user_code = $2'),
} as const;
// A grant comes with the factors its protected scopes were granted with, in the same statement.
const FIND_GRANT = prepared(`select id, grant_id, payload, expires_at, consumed_at,
  (select json_agg(json_build_object('resource', s.resource, 'scope', s.scope, 'factor', s.factor, 'age', s.factor_age_seconds, 'here', s.at_consent))
     from grant_step_ups s where s.grant_id = oidc_models.id) as step_ups
  from oidc_models where model = $1 and id = $2`);
// A token with its grant (read ahead for the grant lookup that follows in the same request, with
// the factors its protected scopes were granted with). Several models are looked up at once when
// oidc-provider asks for one value as either (introspection: an access token or a client's). A
// statement per count of models, each with one parameter per model: with an array parameter
// PostgreSQL would plan the statement again at every run.
const TOKEN_COLUMNS = `t.model, t.id, t.grant_id, t.payload, t.expires_at, t.consumed_at,
  g.id as grant_row_id, g.payload as grant_payload, g.expires_at as grant_expires_at, g.consumed_at as grant_consumed_at,
  case when g.id is null then null else
    (select json_agg(json_build_object('resource', s.resource, 'scope', s.scope, 'factor', s.factor, 'age', s.factor_age_seconds, 'here', s.at_consent))
       from grant_step_ups s where s.grant_id = g.id) end as grant_step_ups
  from oidc_models t left join oidc_models g on g.model = 'Grant' and g.id = t.grant_id`;
const FIND_TOKEN = [1, 2, 3].map((n) => prepared(`select ${TOKEN_COLUMNS}
  where t.id = $1 and t.model in (${Array.from({ length: n }, (_, i) => `$${i + 2}`).join(', ')})`));
// A refresh token's rotation: the used token consumed and its successor stored in one call, or
// nothing (migration 0016 says how concurrent and repeated presentations are decided).
const ROTATE = prepared('select rotate_refresh_token($1, $2, $3, $4::jsonb, $5, $6, $7, $8::timestamptz) as outcome');
// The first use counts: a retry within the reuse window does not move it.
const CONSUME = prepared('update oidc_models set consumed_at = coalesce(consumed_at, now()) where model = $1 and id = $2');
// A code (or device code, CIBA request) is exchanged once: of requests presenting it at once, one consumes it.
const CONSUME_ONCE = prepared('update oidc_models set consumed_at = now() where model = $1 and id = $2 and consumed_at is null returning 1');
const GRANT_OF = prepared(`select payload->>'grantId' as grant_id from oidc_models where model = $1 and id = $2`);
const DESTROY = prepared('delete from oidc_models where model = $1 and id = $2');
const REVOKE = prepared('delete from oidc_models where grant_id = $1');
// What oidc-provider's revocation of a grant does: its tokens and the grant itself go.
const REVOKE_GRANT = prepared(`delete from oidc_models where grant_id = $1 or (model = 'Grant' and id = $1)`);

/** Models whose value is exchanged for tokens once; presenting one again revokes its grant. */
const GRANT_SOURCES: Record<string, string> = {
  AuthorizationCode: 'authorization code',
  DeviceCode: 'device code',
  BackchannelAuthenticationRequest: 'backchannel authentication request',
};

type Row = { id: string; grant_id: string | null; payload: unknown; expires_at: Date | null; consumed_at: Date | null; step_ups?: unknown };
type TokenRow = Row & { model: string; grant_row_id: string | null; grant_payload: unknown; grant_expires_at: Date | null; grant_consumed_at: Date | null; grant_step_ups: unknown };

/**
 * Rows read ahead within one request, by stored id: a token's grant comes with the token, so the
 * grant lookup oidc-provider makes next costs no query (null: the token's grant does not exist).
 * Taken once; a grant stored or removed in the request drops its entry.
 */
const readAhead = new WeakMap<object, Map<string, Row | null>>();
/**
 * Token lookups of one request waiting for the next tick, by stored id, so that one query serves
 * them all. Never shared between requests: each request reads what is stored when it asks.
 */
const tokenLookups = new WeakMap<object, Map<string, { models: Set<string>; rows: Promise<Map<string, TokenRow>> }>>();

/** How a refresh token's rotation ended (migration 0016). */
export type RotationOutcome = 'rotated' | 'reused' | 'gone';

/**
 * A refresh token used in this request and the successor oidc-provider made for it. Both are
 * written by finishRotation once the response is known to succeed, so a request that fails after
 * the successor was made (an unknown `resource`, say) leaves the token unused.
 */
const rotations = new WeakMap<object, { adapter: KyselyAdapter; used: string; successor?: { id: string; payload: AdapterPayload; expiresIn?: number } }>();

/** The request being served (oidc-provider's context), if any: what read-ahead and rotation are kept for. */
function currentRequest(): KoaContextWithOIDC | undefined {
  return Provider.ctx ?? undefined;
}

/** Whether this request used a refresh token whose rotation is still to be stored. */
export function rotationPending(request: object): boolean {
  return rotations.get(request)?.successor !== undefined;
}

/** Stores the rotation this request prepared (its response is about to succeed) and says how it ended, and in which grant. */
export async function finishRotation(request: object): Promise<{ outcome: RotationOutcome; grantId: string } | undefined> {
  const pending = rotations.get(request);
  rotations.delete(request);
  if (!pending?.successor) return undefined;
  const { id, payload, expiresIn } = pending.successor;
  return { outcome: await pending.adapter.rotate(pending.used, id, payload, expiresIn), grantId: String(payload.grantId) };
}

/** Forgets the rotation this request prepared: its response is an error, so the token stays unused. */
export function abandonRotation(request: object): void {
  rotations.delete(request);
}

/** Holds a grant loaded from storage against today's scope rules (src/scopes/grants.ts). */
export interface GrantGuard {
  /** Whether any scope is protected: without rules a grant is read as stored, without its step-ups. */
  active(): Promise<boolean>;
  apply(payload: AdapterPayload, stepUps: unknown): Promise<AdapterPayload>;
}

/**
 * PostgreSQL stores no NUL character (in text or jsonb): a request carrying one in any parameter
 * is refused here, where everything the provider keeps or looks up passes, as invalid_request —
 * and a NUL in a token or id simply matches nothing.
 */
const NUL = '\u0000';
function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes(NUL);
  if (Array.isArray(value)) return value.some(containsNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes(NUL) || containsNul(v));
  return false;
}
function refuseNul(payload: AdapterPayload): void {
  if (containsNul(payload)) throw new errors.InvalidRequest('request parameters must not contain NUL characters');
}

/** Every model oidc-provider stores, in one table keyed by (model, id). */
export class KyselyAdapter implements Adapter {
  private readonly reuseMs: number;

  constructor(
    protected readonly db: Db,
    private readonly model: string,
    private readonly keys: StorageKeys,
    /** How long a rotated refresh token may be presented again (REFRESH_TOKEN_REUSE_SECONDS). */
    refreshTokenReuseSeconds = 0,
    private readonly grantGuard?: GrantGuard,
  ) {
    this.reuseMs = model === 'RefreshToken' ? refreshTokenReuseSeconds * 1000 : 0;
  }

  /** An id as stored (see storedId). */
  protected hash(value: string): string {
    return storedId(this.keys.idKey, value);
  }

  private async run<R>(statement: string, parameters: unknown[]): Promise<R[]> {
    const query = CompiledQuery.raw(statement, parameters);
    try {
      return (await this.db.executeQuery<R>(query)).rows;
    } catch (error) {
      // Every statement here is a transaction of its own: one PostgreSQL chose to end as a deadlock's
      // victim (a grant revoked while one of its tokens rotates) had no effect and runs again.
      if ((error as { code?: unknown }).code !== '40P01') throw error;
      return (await this.db.executeQuery<R>(query)).rows;
    }
  }

  /** A record's columns as stored: model, id, payload, grant, user code, uid, expiry. */
  private stored(id: string, payload: AdapterPayload, expiresIn?: number): unknown[] {
    const grantId = GRANTABLE.has(this.model) ? payload.grantId : undefined;
    return [
      this.model,
      this.hash(id),
      JSON.stringify(sealPayload(this.model, payload, this.keys.box)),
      grantId ? this.hash(grantId) : null,
      payload.userCode ? this.hash(payload.userCode) : null,
      payload.uid ? this.hash(payload.uid) : null,
      expiry(expiresIn),
    ];
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    refuseNul(payload);
    const request = currentRequest();
    if (request && this.model === 'Grant') readAhead.get(request)?.delete(this.hash(id));
    const rotation = request && this.model === 'RefreshToken' ? rotations.get(request) : undefined;
    if (rotation && !rotation.successor) {
      rotation.successor = { id, payload, expiresIn };
      return;
    }
    await this.run(this.model === 'ClientCredentials' ? UPSERT_MACHINE_TOKEN : UPSERT, this.stored(id, payload, expiresIn));
  }

  /** Consumes a used refresh token and stores its successor, or neither (migration 0016). */
  async rotate(usedId: string, id: string, payload: AdapterPayload, expiresIn?: number): Promise<RotationOutcome> {
    const [, ...successor] = this.stored(id, payload, expiresIn);
    const [row] = await this.run<{ outcome: RotationOutcome }>(ROTATE, [this.hash(usedId), this.reuseMs / 1000, ...successor]);
    return row!.outcome;
  }

  private async findBy(column: keyof typeof FIND, value: string): Promise<AdapterPayload | undefined> {
    if (value.includes(NUL)) return undefined;
    const stored = this.hash(value);
    if (this.model === 'Grant' && column === 'id') {
      const request = currentRequest();
      const ahead = request ? readAhead.get(request) : undefined;
      if (ahead?.has(stored)) {
        const row = ahead.get(stored)!;
        ahead.delete(stored);
        const payload = live(row ?? undefined, (p) => openPayload(this.model, p, this.keys.box));
        return payload && this.grantGuard && (await this.grantGuard.active()) ? this.grantGuard.apply(payload, row!.step_ups) : payload;
      }
    }
    if (this.grantGuard && column === 'id' && (await this.grantGuard.active())) {
      const [grant] = await this.run<Row>(FIND_GRANT, [this.model, stored]);
      const payload = live(grant, (p) => openPayload(this.model, p, this.keys.box));
      return payload && this.grantGuard.apply(payload, grant!.step_ups);
    }
    const [row] = column === 'id' && GRANTABLE.has(this.model) ? [await this.findToken(stored)] : await this.run<Row>(FIND[column], [this.model, stored]);
    return live(row, (stored) => openPayload(this.model, stored, this.keys.box), this.reuseMs);
  }

  /**
   * A token row, its grant read ahead for this request. Lookups of one value made in the same tick
   * (as several models) share one query.
   */
  private async findToken(stored: string): Promise<Row | undefined> {
    const request = currentRequest();
    if (!request) {
      const [row] = await this.run<TokenRow>(FIND_TOKEN[0]!, [stored, this.model]);
      return row;
    }
    let pending = tokenLookups.get(request);
    if (!pending) tokenLookups.set(request, (pending = new Map()));
    let lookup = pending.get(stored);
    if (!lookup) {
      const models = new Set<string>();
      const queue = pending;
      const rows = new Promise<void>((resolve) => process.nextTick(resolve)).then(async () => {
        queue.delete(stored);
        // oidc-provider asks for a value as at most three models at once (introspection without a hint).
        const all = [...models];
        const groups = Array.from({ length: Math.ceil(all.length / FIND_TOKEN.length) }, (_, i) => all.slice(i * FIND_TOKEN.length, (i + 1) * FIND_TOKEN.length));
        const found = (await Promise.all(groups.map((group) => this.run<TokenRow>(FIND_TOKEN[group.length - 1]!, [stored, ...group])))).flat();
        return new Map(found.map((r) => [r.model, r]));
      });
      lookup = { models, rows };
      pending.set(stored, lookup);
    }
    lookup.models.add(this.model);
    const row = (await lookup.rows).get(this.model);
    if (row?.grant_id) {
      let ahead = readAhead.get(request);
      if (!ahead) readAhead.set(request, (ahead = new Map()));
      ahead.set(row.grant_id, row.grant_row_id === null ? null : {
        id: row.grant_row_id, grant_id: null, payload: row.grant_payload, expires_at: row.grant_expires_at, consumed_at: row.grant_consumed_at, step_ups: row.grant_step_ups,
      });
    }
    return row;
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
    if (id.includes(NUL)) return;
    // A refresh token is consumed together with the storing of its successor (oidc-provider makes
    // it next), when the response is known to succeed: see finishRotation.
    const request = currentRequest();
    if (request && this.model === 'RefreshToken') {
      rotations.set(request, { adapter: this, used: id });
      return;
    }
    const label = GRANT_SOURCES[this.model];
    if (!label) {
      await this.run(CONSUME, [this.model, this.hash(id)]);
      return;
    }
    if ((await this.run(CONSUME_ONCE, [this.model, this.hash(id)])).length > 0) return;
    // Another request exchanged it first (oidc-provider's own check saw it unused): presented twice,
    // it may have leaked, so its grant goes as oidc-provider revokes one.
    const [source] = await this.run<{ grant_id: string | null }>(GRANT_OF, [this.model, this.hash(id)]);
    if (source?.grant_id) await this.revokeGrant(source.grant_id);
    throw new errors.InvalidGrant(`${label} already consumed`);
  }

  /** Deletes a grant and every token of it, and says so (oidc-provider's `grant.revoked`). */
  private async revokeGrant(grantId: string): Promise<void> {
    const request = currentRequest();
    if (request) readAhead.get(request)?.delete(this.hash(grantId));
    await this.run(REVOKE_GRANT, [this.hash(grantId)]);
    if (request) request.oidc.provider.emit('grant.revoked', request, grantId);
  }

  async destroy(id: string): Promise<void> {
    if (id.includes(NUL)) return;
    const request = currentRequest();
    if (request && this.model === 'Grant') readAhead.get(request)?.delete(this.hash(id));
    await this.run(DESTROY, [this.model, this.hash(id)]);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (grantId.includes(NUL)) return;
    const request = currentRequest();
    if (request) readAhead.get(request)?.delete(this.hash(grantId));
    await this.run(REVOKE, [this.hash(grantId)]);
  }
}

/** Clients live in their own table (managed by the CLI and later the admin console); the provider only reads them. */
export class ClientAdapter implements Adapter {
  constructor(private readonly clients: RegisteredClients) {}

  async find(id: string): Promise<AdapterPayload | undefined> {
    return (await this.clients.get(id))?.metadata as AdapterPayload | undefined;
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

/**
 * Rows stored before ids were hashed (an upgrade from an earlier Tessera): hashed and sealed once,
 * at start-up, under an advisory lock so that instances starting together do it once.
 */
export async function upgradeStoredRecords(db: Db, keys: StorageKeys): Promise<number> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(7311042002)`.execute(tx);
    const rows = await tx
      .selectFrom('oidc_models')
      .select(['model', 'id', 'payload', 'grant_id', 'user_code', 'uid'])
      .where('id', 'not like', 'h:%')
      .execute();
    for (const row of rows) {
      const hash = (value: string | null) => (value === null ? null : storedId(keys.idKey, value));
      await tx
        .updateTable('oidc_models')
        .set({
          id: storedId(keys.idKey, row.id),
          payload: JSON.stringify(sealPayload(row.model, row.payload as AdapterPayload, keys.box)),
          grant_id: hash(row.grant_id),
          user_code: hash(row.user_code),
          uid: hash(row.uid),
        })
        .where('model', '=', row.model)
        .where('id', '=', row.id)
        .execute();
    }
    return rows.length;
  });
}

/** Drops rows that expired, so the table does not grow without bound. */
export async function purgeExpired(db: Db): Promise<number> {
  const result = await db.deleteFrom('oidc_models').where('expires_at', '<', sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
