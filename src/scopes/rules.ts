import { z } from 'zod';
import { ExpiringCache } from '../cache.js';
import type { Db } from '../db/index.js';
import { DomainError, firstIssue } from '../domain-error.js';
import { FACTORS, type FactorId } from '../settings/settings.js';
import { OIDC_SCOPES } from '../oidc/account.js';
import { freshFactor, merged, now, type Pass } from '../sessions/ledger.js';

/**
 * A scope an administrator protected with a second factor: it is granted only on the consent
 * screen, after the user passes an allowed factor no older than the window.
 */
export interface ScopeRule {
  /** The API's identifier, or null for an OpenID scope. */
  resource: string | null;
  scope: string;
  /** The factors that unlock it; null: any the user may use. */
  factors: FactorId[] | null;
  /** How old the factor may be; 0: passed on this very consent screen. */
  maxAgeSeconds: number;
}

export const DEFAULT_SCOPE_MAX_AGE_SECONDS = 15 * 60;

export class ScopeRuleError extends DomainError {}

const scopeToken = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/;

export const scopeRuleInputSchema = z.object({
  scope: z.string().regex(scopeToken, 'a scope is printable ASCII without spaces, quotes or backslashes'),
  api: z.string().max(512).optional(),
  maxAgeSeconds: z.number().int('must be a whole number of seconds').min(0, 'must be 0 to 86400 seconds').max(86_400, 'must be 0 to 86400 seconds').default(DEFAULT_SCOPE_MAX_AGE_SECONDS),
  factors: z.array(z.enum(FACTORS, `each factor is one of ${FACTORS.join(', ')}`)).min(1, 'name at least one factor').nullable().default(null),
});

export type ScopeRuleInput = z.input<typeof scopeRuleInputSchema>;

// openid is asked for by every sign-in: protecting it would be MFA for everything, which is a policy's job.
const PROTECTABLE_OIDC_SCOPES = OIDC_SCOPES.filter((s) => s !== 'openid');

/** Protects a scope, or replaces its rule. An API's scope must be one the API defines. */
export async function protectScope(db: Db, input: ScopeRuleInput): Promise<ScopeRule> {
  const unknown = input.factors?.find((f) => !(FACTORS as readonly string[]).includes(f));
  if (unknown !== undefined) throw new ScopeRuleError(`unknown factor "${String(unknown).slice(0, 40)}" (each factor is one of ${FACTORS.join(', ')})`, 'factors');
  const parsed = scopeRuleInputSchema.safeParse(input);
  if (!parsed.success) throw firstIssue(parsed.error, (message, field) => new ScopeRuleError(message, field));
  const { scope, api, maxAgeSeconds, factors } = parsed.data;
  if (api) {
    const server = await db.selectFrom('resource_servers').select('scope').where('identifier', '=', api).executeTakeFirst();
    if (!server) throw new ScopeRuleError(`no API "${api}" (see: api list)`, 'api');
    if (!server.scope.split(' ').includes(scope)) throw new ScopeRuleError(`the API "${api}" has no scope "${scope}" (its scopes: ${server.scope})`, 'scope');
  } else if (!(PROTECTABLE_OIDC_SCOPES as readonly string[]).includes(scope)) {
    throw new ScopeRuleError(
      scope === 'openid'
        ? 'openid is part of every sign-in: require MFA for everyone with a policy instead'
        : `"${scope}" is not an OpenID scope (${PROTECTABLE_OIDC_SCOPES.join(', ')}); for an API's scope, choose its API (in the CLI: add --api <identifier>)`,
      'scope',
    );
  }
  const values = { resource: api ?? '', scope, factors: factors ? [...new Set(factors)] : null, max_age_seconds: maxAgeSeconds };
  await db
    .insertInto('scope_rules')
    .values(values)
    .onConflict((oc) => oc.columns(['resource', 'scope']).doUpdateSet({ factors: values.factors, max_age_seconds: values.max_age_seconds, updated_at: new Date() }))
    .execute();
  return { resource: api ?? null, scope, factors: values.factors, maxAgeSeconds };
}

export async function unprotectScope(db: Db, scope: string, api?: string): Promise<void> {
  const result = await db.deleteFrom('scope_rules').where('resource', '=', api ?? '').where('scope', '=', scope).executeTakeFirst();
  if (result.numDeletedRows === 0n) {
    // The same scope name protected for an API (or as an OpenID scope): say how to name it.
    const elsewhere = await db.selectFrom('scope_rules').select('resource').where('scope', '=', scope).execute();
    const hint = elsewhere.map((r) => (r.resource ? `--api ${r.resource}` : 'as an OpenID scope, without --api')).join(' or ');
    throw new ScopeRuleError(`the scope "${scope}"${api ? ` of ${api}` : ''} is not protected${hint ? ` (it is protected ${hint})` : ' (see: scope list)'}`, 'scope');
  }
}

export async function listScopeRules(db: Db): Promise<ScopeRule[]> {
  const rows = await db.selectFrom('scope_rules').selectAll().orderBy('resource').orderBy('scope').execute();
  return rows.map((r) => ({ resource: r.resource || null, scope: r.scope, factors: (r.factors as FactorId[] | null) ?? null, maxAgeSeconds: r.max_age_seconds }));
}

/** A requested scope as the rules see it. */
export interface RequestedScope {
  resource: string | null;
  scope: string;
}

const keyOf = (s: RequestedScope) => `${s.resource ?? ''} ${s.scope}`;

/**
 * The rules as the running server sees them: kept for a few seconds, like registered clients, so a
 * sign-in that asks for no protected scope costs no query; a change reaches every instance within
 * that time.
 */
export class ScopeRules {
  private readonly cache: ExpiringCache<Map<string, ScopeRule>>;
  private readonly described: ExpiringCache<Map<string, string>>;

  constructor(
    private readonly db: Db,
    ttlMs: number,
  ) {
    this.cache = new ExpiringCache(ttlMs, 1);
    this.described = new ExpiringCache(ttlMs, 1);
  }

  /** The descriptions administrators gave scopes, by name (the consent screen shows them). */
  async descriptions(): Promise<Map<string, string>> {
    return (await this.described.get('all', async () => new Map((await this.db.selectFrom('scopes').select(['name', 'description']).execute()).map((r) => [r.name, r.description]))))!;
  }

  private async all(): Promise<Map<string, ScopeRule>> {
    return (await this.cache.get('all', async () => new Map((await listScopeRules(this.db)).map((r) => [keyOf(r), r]))))!;
  }

  /** Whether any scope is protected at all. */
  async any(): Promise<boolean> {
    return (await this.all()).size > 0;
  }

  /** The rules of those of these scopes that are protected. */
  async protecting(requested: RequestedScope[]): Promise<ScopeRule[]> {
    const rules = await this.all();
    if (rules.size === 0) return [];
    return requested.map((s) => rules.get(keyOf(s))).filter((r): r is ScopeRule => r !== undefined);
  }

  forget(): void {
    this.cache.clear();
    this.described.clear();
  }
}

/** A window of 0 ("every time"): a factor passed on this consent screen, no longer ago than this. */
export const EVERY_TIME_SECONDS = 300;

/**
 * The pass that unlocks a protected scope: a factor the rule allows and the user may use now (their
 * policy, the methods switched on: `userAllowed`), fresh enough. `here` are the factors passed on
 * this consent screen; a window of 0 accepts only those.
 */
export function unlockingPass(rule: ScopeRule, ledger: Pass[], here: Pass[], userAllowed: readonly FactorId[], at = now()): Pass | null {
  const factors = userAllowed.filter((f) => !rule.factors || rule.factors.includes(f));
  if (rule.maxAgeSeconds === 0) return freshFactor(here, factors, EVERY_TIME_SECONDS, at);
  return freshFactor(merged(ledger, here), factors, rule.maxAgeSeconds, at);
}

/** What a grant keeps of the factor a protected scope was granted with. */
export interface StepUpRecord {
  resource: string | null;
  scope: string;
  factor: FactorId;
  /** How old the factor was when the scope was granted. */
  factorAgeSeconds: number;
  /** It was passed on that consent screen. */
  atConsent: boolean;
}

/** Whether a protected scope, granted with this factor, still stands under the scope's current rule. */
export function stillSatisfies(rule: ScopeRule, record: StepUpRecord | undefined): boolean {
  if (!record) return false;
  if (rule.factors && !rule.factors.includes(record.factor)) return false;
  if (rule.maxAgeSeconds === 0) return record.atConsent && record.factorAgeSeconds <= EVERY_TIME_SECONDS;
  return record.factorAgeSeconds <= rule.maxAgeSeconds;
}

export function describeRule(rule: ScopeRule): string {
  const window = rule.maxAgeSeconds === 0 ? 'every time' : `within ${rule.maxAgeSeconds} s`;
  return `${rule.factors ? rule.factors.join(', ') : 'any factor'}, ${window}`;
}

export { keyOf as scopeKey };
