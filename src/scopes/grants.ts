import { sql } from 'kysely';
import type { AdapterPayload } from 'oidc-provider';
import type { Db } from '../db/index.js';
import type { FactorId } from '../settings/settings.js';
import { scopeKey, stillSatisfies, type ScopeRules, type StepUpRecord } from './rules.js';

interface GrantScopes {
  openid?: { scope?: string };
  resources?: Record<string, string>;
}

/**
 * A grant as it stands under today's rules: a protected scope it holds without a step-up that
 * still satisfies the scope's rule is taken out (not rejected), so a refresh yields tokens without
 * it and the next authorization that asks for it shows the consent step again.
 */
export async function guardGrant(rules: Pick<ScopeRules, 'protecting'>, payload: AdapterPayload, records: StepUpRecord[]): Promise<AdapterPayload> {
  const grant = payload as AdapterPayload & GrantScopes;
  const held = [
    ...(grant.openid?.scope?.split(' ') ?? []).map((scope) => ({ resource: null, scope })),
    ...Object.entries(grant.resources ?? {}).flatMap(([resource, scopes]) => scopes.split(' ').map((scope) => ({ resource, scope }))),
  ];
  const protectedHeld = await rules.protecting(held);
  if (protectedHeld.length === 0) return payload;
  const byKey = new Map(records.map((r) => [scopeKey(r), r]));
  const lapsed = protectedHeld.filter((rule) => !stillSatisfies(rule, byKey.get(scopeKey(rule))));
  if (lapsed.length === 0) return payload;
  const without = (scopes: string, resource: string | null) =>
    scopes.split(' ').filter((s) => !lapsed.some((rule) => rule.resource === resource && rule.scope === s)).join(' ');
  return {
    ...payload,
    ...(grant.openid?.scope ? { openid: { ...grant.openid, scope: without(grant.openid.scope, null) } } : {}),
    ...(grant.resources ? { resources: Object.fromEntries(Object.entries(grant.resources).map(([r, s]) => [r, without(s, r)])) } : {}),
  } as AdapterPayload;
}

/** The step-up records kept with a grant (read together with the grant itself). */
export function parseStepUps(value: unknown): StepUpRecord[] {
  if (!Array.isArray(value)) return [];
  return value.map((r: { resource: string; scope: string; factor: string; age: number; here: boolean }) => ({
    resource: r.resource || null,
    scope: r.scope,
    factor: r.factor as FactorId,
    factorAgeSeconds: r.age,
    atConsent: r.here,
  }));
}

/** Keeps, for each protected scope just granted, the factor it was granted with (replacing an earlier one). */
export async function recordStepUps(db: Db, storedGrantId: string, records: StepUpRecord[], expiresAt: Date): Promise<void> {
  if (records.length === 0) return;
  await db
    .insertInto('grant_step_ups')
    .values(records.map((r) => ({ grant_id: storedGrantId, resource: r.resource ?? '', scope: r.scope, factor: r.factor, factor_age_seconds: r.factorAgeSeconds, at_consent: r.atConsent, expires_at: expiresAt })))
    .onConflict((oc) => oc.columns(['grant_id', 'resource', 'scope']).doUpdateSet((eb) => ({
      factor: eb.ref('excluded.factor'),
      factor_age_seconds: eb.ref('excluded.factor_age_seconds'),
      at_consent: eb.ref('excluded.at_consent'),
      granted_at: new Date(),
      expires_at: eb.ref('excluded.expires_at'),
    })))
    .execute();
}

export async function purgeExpiredStepUps(db: Db): Promise<void> {
  await db.deleteFrom('grant_step_ups').where('expires_at', '<', sql<Date>`now()`).execute();
}
