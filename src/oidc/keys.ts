import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';

export const SIGNING_ALGORITHMS = ['RS256', 'ES256'] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export interface PrivateJwk {
  kid: string;
  alg: string;
  use: 'sig';
  kty: string;
  [member: string]: unknown;
}

export interface KeyMaterial {
  /** Active keys first (the provider signs with the first key of each algorithm), then retired ones for verification. */
  signing: PrivateJwk[];
  /** Newest first: the first signs cookies, the rest still verify them. */
  cookie: string[];
}

const KEY_LOCK = 7_311_042_001; // advisory lock id: only one instance generates keys at a time

function generateSigningKey(alg: SigningAlgorithm): PrivateJwk {
  const kid = randomUUID();
  const pair =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...(pair.privateKey.export({ format: 'jwk' }) as Record<string, unknown>), kid, alg, use: 'sig' } as PrivateJwk;
}

function purpose(use: 'sig' | 'cookie', kid: string): string {
  return `key:${use}:${kid}`;
}

async function insertSigningKey(db: Db, box: SecretBox, alg: SigningAlgorithm): Promise<void> {
  const jwk = generateSigningKey(alg);
  await db.insertInto('keys').values({ kid: jwk.kid, use: 'sig', alg, secret: box.seal(JSON.stringify(jwk), purpose('sig', jwk.kid)) }).execute();
}

async function insertCookieKey(db: Db, box: SecretBox): Promise<void> {
  const kid = randomUUID();
  await db.insertInto('keys').values({ kid, use: 'cookie', alg: 'HS256', secret: box.seal(randomBytes(32).toString('base64url'), purpose('cookie', kid)) }).execute();
}

/** Creates whatever keys are missing, under an advisory lock so that two instances starting together agree. */
export async function ensureKeys(db: Db, box: SecretBox): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(${KEY_LOCK})`.execute(tx);
    const active = await tx.selectFrom('keys').select(['use', 'alg']).where('status', '=', 'active').execute();
    for (const alg of SIGNING_ALGORITHMS) {
      if (!active.some((k) => k.use === 'sig' && k.alg === alg)) await insertSigningKey(tx, box, alg);
    }
    if (!active.some((k) => k.use === 'cookie')) await insertCookieKey(tx, box);
  });
}

/**
 * Publishes new signing keys (and a new cookie key). The previous ones stay in the JWKS, retired,
 * so tokens they signed still verify until they expire. Instances sign with the new keys after restart.
 */
export async function rotateKeys(db: Db, box: SecretBox): Promise<{ kids: string[] }> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(${KEY_LOCK})`.execute(tx);
    await tx.updateTable('keys').set({ status: 'retired', retired_at: sql`now()` }).where('status', '=', 'active').execute();
    for (const alg of SIGNING_ALGORITHMS) await insertSigningKey(tx, box, alg);
    await insertCookieKey(tx, box);
    const rows = await tx.selectFrom('keys').select('kid').where('status', '=', 'active').where('use', '=', 'sig').execute();
    return { kids: rows.map((r) => r.kid) };
  });
}

/** Retired keys older than this are dropped from the JWKS: nothing they signed can still be valid. */
export const RETIRED_KEY_GRACE_DAYS = 90;

export async function loadKeys(db: Db, box: SecretBox): Promise<KeyMaterial> {
  const rows = await db
    .selectFrom('keys')
    .selectAll()
    .where((eb) => eb.or([eb('status', '=', 'active'), eb('retired_at', '>', sql<Date>`now() - make_interval(days => ${RETIRED_KEY_GRACE_DAYS})`)]))
    .orderBy(sql`status = 'active'`, 'desc')
    .orderBy('created_at', 'desc')
    .execute();
  const signing: PrivateJwk[] = [];
  const cookie: string[] = [];
  for (const row of rows) {
    const plain = box.open(row.secret, purpose(row.use, row.kid));
    if (row.use === 'sig') signing.push(JSON.parse(plain) as PrivateJwk);
    else cookie.push(plain);
  }
  return { signing, cookie };
}
