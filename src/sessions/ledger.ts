import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import { FACTORS, type FactorId } from '../settings/settings.js';
import { amrOf } from '../factors/index.js';
import { acrFor, isAuthenticationMethod, type AuthenticationMethod } from '../oidc/assurance.js';

/** Something a user proved: the password, or one of the second factors. */
export type Proof = 'password' | FactorId;

/** One pass of a proof, at a time in epoch seconds. */
export interface Pass {
  factor: Proof;
  at: number;
  /** What it proved where the factor alone does not say: a passkey's hwk or swk, and user. */
  amr?: AuthenticationMethod[];
}

const PROOFS = new Set<string>(['password', ...FACTORS]);

export function isPass(value: unknown): value is Pass {
  const v = value as Partial<Pass> | null;
  return typeof v === 'object' && v !== null && typeof v.factor === 'string' && PROOFS.has(v.factor) && typeof v.at === 'number' &&
    (v.amr === undefined || (Array.isArray(v.amr) && v.amr.every((m) => isAuthenticationMethod(m))));
}

export const now = (): number => Math.floor(Date.now() / 1000);

/**
 * The factor ledger: which proofs a browser session passed, and when (the latest pass of each).
 * oidc-provider's session keeps one acr, one amr and one login time; every "is there a fresh
 * enough second factor?" question is answered here instead, with the asker's own age limit.
 */
export async function readLedger(db: Db, sessionUid: string, accountId: string): Promise<Pass[]> {
  const rows = await db
    .selectFrom('session_factors')
    .select(['factor', 'passed_at', 'amr'])
    .where('session_uid', '=', sessionUid)
    .where('account_id', '=', accountId)
    .where('expires_at', '>', sql<Date>`now()`)
    .execute();
  return rows.map((r) => ({ factor: r.factor as Proof, at: Math.floor(r.passed_at.getTime() / 1000), ...(r.amr ? { amr: r.amr.filter(isAuthenticationMethod) } : {}) }));
}

/**
 * Moves what an interaction proved (kept with its progress) into its session's ledger, in one
 * statement, once oidc-provider has signed the session in and its uid is final. A new sign-in
 * with the password (prompt=login, max_age, another account), or as a shared account, starts the
 * ledger over: what the session proved before no longer counts.
 */
export async function commitInteractionPasses(db: Db, interactionUid: string, sessionUid: string, sessionSeconds: number): Promise<void> {
  await sql`
    with moved as (delete from interaction_progress where uid = ${interactionUid} returning account_id, methods, reservation_id),
    -- A sign-in as a shared account: the session it made is the one whose tokens name the member.
    signed as (update jit_reservations set session_uid = ${sessionUid} where id = (select reservation_id from moved) and status = 'spent'),
    passes as (
      select distinct on (p->>'factor') p->>'factor' as factor, to_timestamp((p->>'at')::bigint) as passed_at, moved.account_id,
        case when jsonb_typeof(p->'amr') = 'array' then array(select jsonb_array_elements_text(p->'amr')) end as amr
      from moved, jsonb_array_elements(moved.methods) p
      where p ? 'factor'
      order by p->>'factor', (p->>'at')::bigint desc
    ),
    superseded as (
      delete from session_factors
      where session_uid = ${sessionUid}
        and (exists (select 1 from passes where factor = 'password') or exists (select 1 from moved where reservation_id is not null))
        and factor not in (select factor from passes)
    )
    insert into session_factors (session_uid, factor, account_id, passed_at, expires_at, amr)
    select ${sessionUid}, factor, account_id, passed_at, now() + make_interval(secs => ${sessionSeconds}), amr from passes
    on conflict (session_uid, factor) do update
      set amr = case when excluded.passed_at >= session_factors.passed_at then excluded.amr else session_factors.amr end,
        passed_at = greatest(session_factors.passed_at, excluded.passed_at), account_id = excluded.account_id, expires_at = excluded.expires_at`.execute(db);
}

export async function purgeExpiredLedger(db: Db): Promise<void> {
  await db.deleteFrom('session_factors').where('expires_at', '<', sql<Date>`now()`).execute();
}

/** The latest pass of each proof among several lists (the ledger and this interaction's progress). */
export function merged(...lists: Pass[][]): Pass[] {
  const latest = new Map<Proof, Pass>();
  for (const p of lists.flat()) {
    const seen = latest.get(p.factor);
    if (!seen || p.at >= seen.at) latest.set(p.factor, p);
  }
  return [...latest.values()];
}

/**
 * The freshest pass of an allowed second factor no older than maxAgeSeconds, or null.
 * `allowed` null: any second factor.
 */
export function freshFactor(passes: Pass[], allowed: readonly FactorId[] | null, maxAgeSeconds: number, at = now()): Pass | null {
  let best: Pass | null = null;
  for (const p of passes) {
    if (p.factor === 'password' || (allowed && !allowed.includes(p.factor))) continue;
    if (at - p.at > maxAgeSeconds) continue;
    if (!best || p.at > best.at) best = p;
  }
  return best;
}

/** What the ID token, access tokens and UserInfo say of a session: every proof it passed, and when it last passed one. */
export function assuranceOf(passes: Pass[]): { amr: AuthenticationMethod[]; acr: string; ts: number } {
  // In the order they were passed (the password first at a tie), as RFC 8176 lists are read.
  const ordered = [...passes].sort((a, b) => a.at - b.at || (a.factor === 'password' ? -1 : b.factor === 'password' ? 1 : 0));
  const amr = amrOf(ordered);
  return { amr, acr: acrFor(amr), ts: Math.max(0, ...passes.map((p) => p.at)) };
}
