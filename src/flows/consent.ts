import { createHmac } from 'node:crypto';
import Router from '@koa/router';
import type Provider from 'oidc-provider';
import type { Context } from 'koa';
import { z } from 'zod';
import { together, type Db } from '../db/index.js';
import type { User } from '../db/schema.js';
import type { RegisteredClient } from '../clients/registered.js';
import { OIDC_SCOPES } from '../oidc/account.js';
import { storageKeys, storedId } from '../oidc/adapter.js';
import { grantableScopes, type ResourceServer, type ResourceServers } from '../resource-servers/resource-servers.js';
import { findUserById } from '../directory/users.js';
import { assertCsrf } from '../http/csrf.js';
import { readFormFields } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { loadSettings, type FactorId, type Settings } from '../settings/settings.js';
import { loginRequirement, sharedSignInRequirement } from '../policy/policies.js';
import { FACTOR_ORDER } from '../policy/requirement.js';
import { factor as factorOf } from '../factors/index.js';
import { now, readLedger, type Pass } from '../sessions/ledger.js';
import { scopeKey, unlockingPass, type RequestedScope, type ScopeRule, type ScopeRules, type StepUpRecord } from '../scopes/rules.js';
import { recordStepUps } from '../scopes/grants.js';
import { clientOf, finishInteraction, loadInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { loadProgress, saveProgressStatement, type Progress } from './progress.js';
import { assuranceAfter, LEDGER_RESULT, reservationOfResult } from './complete-login.js';
import { reservationMember } from '../jit/shared-accounts.js';
import { addChallengeRoutes, type ChallengeHost, type ChallengeState } from './second-factor.js';
import { seeOther } from '../http/redirect.js';

export interface ScopeLine {
  name: string;
  description: string;
}

/** A protected scope on the consent screen: unlocked by a fresh enough factor, locked, or out of this user's reach. */
export interface ProtectedScope extends ScopeLine {
  key: string;
  rule: ScopeRule;
  /** The pass that unlocks it, if any. */
  pass: Pass | null;
  /** The factors the user could pass here to unlock it (empty: none, and the page says why). */
  usable: FactorId[];
}

/** The requested scopes with the descriptions the administrator gave them; unknown ones are shown by name. */
export async function describeScopes(scopeRules: ScopeRules, scopes: string[]): Promise<ScopeLine[]> {
  if (scopes.length === 0) return [];
  const byName = await scopeRules.descriptions();
  return scopes.map((name) => ({ name, description: byName.get(name) ?? name }));
}

function requestedScopes(details: InteractionDetails): string[] {
  const scope = typeof details.params.scope === 'string' ? details.params.scope : '';
  return [...new Set(scope.split(' ').filter(Boolean))];
}

/**
 * What the user is asked to allow: the OpenID scopes requested, and of each API the request names
 * (`resource`) the requested scopes this client may be given; anything else would not be granted.
 */
async function consentRequest(resourceServers: ResourceServers, details: InteractionDetails, client: RegisteredClient): Promise<{ items: RequestedScope[]; apis: { identifier: string; name: string }[] }> {
  const requested = requestedScopes(details);
  const { resource } = details.params;
  const identifiers = [...new Set((Array.isArray(resource) ? resource : [resource]).filter((r): r is string => typeof r === 'string'))];
  // The APIs as this instance keeps them (as the provider resolved them for this request).
  const apis = (await Promise.all(identifiers.map((id) => resourceServers.get(id)))).filter((a): a is ResourceServer => a !== undefined).sort((a, b) => a.name.localeCompare(b.name));
  const items: RequestedScope[] = requested.filter((s) => (OIDC_SCOPES as readonly string[]).includes(s)).map((scope) => ({ resource: null, scope }));
  for (const api of apis) {
    const grantable = new Set(grantableScopes(api, client.apiScopes[api.identifier]));
    for (const scope of requested) if (grantable.has(scope)) items.push({ resource: api.identifier, scope });
  }
  return { items, apis: apis.map(({ identifier, name }) => ({ identifier, name })) };
}

/** Everything the consent step shows and decides from. */
interface ConsentState {
  details: InteractionDetails;
  client: RegisteredClient;
  accountId: string;
  /** The user and settings, loaded only when a protected scope is asked for (to offer and run its step-up). */
  stepUp: { user: User; settings: Settings } | null;
  items: RequestedScope[];
  apis: { identifier: string; name: string }[];
  protectedScopes: ProtectedScope[];
  /** This interaction's progress: the factors passed on this consent screen. */
  progress: Progress;
}

const consentForm = z.object({
  csrf: z.string().max(128),
  decision: z.enum(['allow', 'deny']),
  // The unlocked protected scopes the user leaves ticked; a form carries a handful at most.
  protected: z.array(z.string().max(700)).max(50),
});

const UNLOCK_NAMES: Record<FactorId, string> = { webauthn: 'your passkey or security key', totp: 'your authenticator app', email: 'an email code', sms: 'a text message code', recovery: 'a recovery code' };

/**
 * The consent step: the client's request, with each protected scope locked until the user passes
 * an allowed factor fresh enough for its rule, right here (step-up). The user may grant all that
 * is unlocked, grant the rest without the locked ones, or deny.
 */
export function consentStep(deps: FlowDeps): { routes: Router; enter(ctx: Context, details: InteractionDetails): Promise<void> } {
  const { db, box, audit, config, provider } = deps;
  const router = new Router();
  const grantIdKey = box.deriveKey('consent-grant-id');

  async function load(ctx: Context): Promise<ConsentState | null> {
    const details = await loadInteraction(ctx, provider);
    const accountId = details.session?.accountId;
    if (details.prompt.name !== 'consent' || !accountId) {
      seeOther(ctx, `/interaction/${details.uid}`);
      return null;
    }
    return stateOf(details, accountId);
  }

  async function stateOf(details: InteractionDetails, accountId: string): Promise<ConsentState> {
    const client = await clientOf(deps, details);
    const { items, apis } = await consentRequest(deps.resourceServers, details, client);
    const fresh: Progress = { uid: details.uid, accountId, step: 'consent', methods: [], requirement: null, challengeId: null };
    const rules = await deps.scopeRules.protecting(items);
    // Nothing protected is asked for: consent as it always was, at no extra cost.
    if (rules.length === 0) return { details, client, accountId, stepUp: null, items, apis, protectedScopes: [], progress: fresh };
    const [user, settings, stored, ledger] = await Promise.all([
      findUserById(db, accountId),
      loadSettings(db, box),
      loadProgress(db, details.uid),
      details.session?.uid ? readLedger(db, details.session.uid, accountId) : Promise.resolve([]),
    ]);
    if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    const progress = stored?.step === 'consent' && stored.accountId === accountId ? stored : fresh;
    // Signed in as a shared account: the member who did answers with their own factors here too.
    const member = await memberOf(details);
    // What this user may use now (their policy, what is switched on; and of that, what they have set up).
    const [need, descriptionRows] = await Promise.all([
      member
        ? sharedSignInRequirement(db, settings, config.mode, user, member, client.mfaRequired, details.params)
        : loginRequirement(db, settings, config.mode, user, client.mfaRequired, details.params),
      describeScopes(deps.scopeRules, rules.map((r) => r.scope)),
    ]);
    const usable = need.usableFactors;
    const descriptions = new Map(descriptionRows.map((d) => [d.name, d.description]));
    const protectedScopes = rules.map((rule): ProtectedScope => {
      const pass = unlockingPass(rule, ledger, progress.methods, need.allowedFactors);
      return {
        key: scopeKey(rule),
        name: rule.scope,
        description: descriptions.get(rule.scope) ?? rule.scope,
        rule,
        pass,
        usable: pass ? [] : FACTOR_ORDER.filter((f) => usable.includes(f) && (!rule.factors || rule.factors.includes(f))),
      };
    });
    return { details, client, accountId, stepUp: { user: member ?? user, settings }, items, apis, protectedScopes, progress };
  }

  /** The member who signed this interaction's session in as a shared account (the login's result carries the reservation on). */
  async function memberOf(details: InteractionDetails): Promise<User | null> {
    const reservation = reservationOfResult(details.lastSubmission);
    return reservation ? ((await reservationMember(db, reservation)) ?? null) : null;
  }

  async function show(ctx: Context, s: ConsentState, message: string | null = null, status = 200): Promise<void> {
    const protectedKeys = new Set(s.protectedScopes.map((p) => p.key));
    const plain = [...new Set(s.items.filter((i) => !protectedKeys.has(scopeKey(i))).map((i) => i.scope))];
    const locked = s.protectedScopes.filter((p) => !p.pass);
    const unlockWith = FACTOR_ORDER.filter((f) => locked.some((p) => p.usable.includes(f)));
    renderPage(
      ctx,
      'flows/consent',
      {
        title: 'Allow access?',
        uid: s.details.uid,
        clientName: s.client.name,
        scopes: await describeScopes(deps.scopeRules, plain),
        apis: s.apis,
        protectedScopes: s.protectedScopes.map((p) => ({
          key: p.key,
          name: p.name,
          description: p.description,
          api: p.rule.resource ? (s.apis.find((a) => a.identifier === p.rule.resource)?.name ?? p.rule.resource) : null,
          unlocked: Boolean(p.pass),
          unavailable: !p.pass && p.usable.length === 0 ? unavailableReason(p.rule) : null,
          unlockWith: !p.pass && p.usable.length > 0 ? p.usable.map((f) => UNLOCK_NAMES[f]).join(' or ') : null,
        })),
        methods: s.stepUp ? unlockWith.map((f) => ({ factor: f, label: factorOf(f).describe(s.stepUp!.user) })) : [],
        message,
      },
      status,
    );
  }

  function unavailableReason(rule: ScopeRule): string {
    const names: Record<FactorId, string> = { webauthn: 'a passkey or security key', email: 'a verified email address', sms: 'a verified phone number', totp: 'an authenticator app', recovery: 'recovery codes' };
    const wanted = (rule.factors ?? FACTOR_ORDER).map((f) => names[f]);
    const own = (rule.factors ?? FACTOR_ORDER).includes('webauthn') ? 'Add a passkey on your account page (/account)' : 'Ask your administrator';
    return `This permission needs a verification with ${wanted.join(' or ')}, and none is set up for your account. ${own}, or allow the rest without it.`;
  }

  /**
   * Records the grant: the unprotected scopes asked for, and of the protected ones those the user
   * unlocked and kept (with the factor they were unlocked with); every other protected scope is
   * taken out of the grant and rejected, so an earlier grant cannot carry it on.
   */
  async function grant(s: ConsentState, chosen: Set<string>): Promise<{ grantId: string; granted: string[]; withheld: string[] }> {
    const { accountId } = s;
    const clientId = s.client.clientId;
    const existing = s.details.grantId ? await provider.Grant.find(s.details.grantId) : undefined;
    if (s.details.grantId && !existing) throw new HttpError(400, 'This consent has expired. Go back to the application and sign in again.', 'Sign-in expired');
    // A new grant's id follows from the interaction: a consent form sent again (or fifty at once)
    // rewrites one grant instead of leaving a new one behind each time.
    const g = existing ?? new provider.Grant({ jti: createHmac('sha256', grantIdKey).update(s.details.uid).digest('base64url'), accountId, clientId } as ConstructorParameters<Provider['Grant']>[0]);
    const missing = s.details.prompt.details as { missingOIDCClaims?: string[] };
    const protectedByKey = new Map(s.protectedScopes.map((p) => [p.key, p]));
    const records: StepUpRecord[] = [];
    const granted: string[] = [];
    const withheld: string[] = [];
    const at = now();
    for (const item of s.items) {
      const key = scopeKey(item);
      const rule = protectedByKey.get(key);
      const allow = !rule || (rule.pass !== null && chosen.has(key));
      if (allow) {
        if (item.resource) g.addResourceScope(item.resource, item.scope);
        else g.addOIDCScope(item.scope);
        unreject(g, item);
        granted.push(key);
        if (rule?.pass) {
          const atConsent = s.progress.methods.some((m) => m.factor === rule.pass!.factor && m.at === rule.pass!.at);
          records.push({ resource: item.resource, scope: item.scope, factor: rule.pass.factor as FactorId, factorAgeSeconds: Math.max(0, at - rule.pass.at), atConsent });
        }
      } else {
        withhold(g, item);
        withheld.push(key);
      }
    }
    if (missing.missingOIDCClaims) g.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await g.save();
    await recordStepUps(db, storedId(storageKeys(box).idKey, grantId), records, new Date(Date.now() + config.ttl.refreshTokenSeconds * 1000));
    return { grantId, granted, withheld };
  }

  /** Consents, then hands back to the provider; a factor passed here also updates what the session says of itself. */
  async function finish(ctx: Context, s: ConsentState, chosen: Set<string>, implicit: boolean): Promise<void> {
    const result = await grant(s, chosen);
    // A shared account's consent is given by the member who signed in as it.
    const actor = s.stepUp && s.stepUp.user.id !== s.accountId ? s.stepUp.user : await memberOf(s.details);
    await audit.record({
      type: 'consent.given', actor: actor?.username ?? null, subject: s.accountId, clientId: s.client.clientId, ...requestMeta(ctx),
      details: { scopes: requestedScopes(s.details), grant_id: result.grantId, ...(implicit ? { implicit: true } : {}), ...(result.withheld.length ? { withheld: result.withheld } : {}) },
    });
    if (s.progress.methods.length === 0) {
      await finishInteraction(ctx, s.details, { consent: { grantId: result.grantId }, [LEDGER_RESULT]: undefined }, true);
      return;
    }
    const { amr, acr, ts } = await assuranceAfter(deps, s.details, s.accountId, s.progress);
    // A shared account's session still ends with the browser.
    const remember = !(s.stepUp && s.stepUp.user.id !== s.accountId);
    await finishInteraction(ctx, s.details, { consent: { grantId: result.grantId }, login: { accountId: s.accountId, amr, acr, ts, remember }, [LEDGER_RESULT]: s.details.uid }, true);
  }

  /** Shows the consent page, or, for a first-party application with nothing locked, consents at once. */
  async function enter(ctx: Context, details: InteractionDetails): Promise<void> {
    const accountId = details.session?.accountId;
    if (!accountId) throw new HttpError(400, 'Sign in first.', 'Sign-in expired');
    const s = await stateOf(details, accountId);
    const allUnlocked = s.protectedScopes.every((p) => p.pass);
    if (!s.client.requireConsent && allUnlocked) {
      // First-party applications: consent is implied, but still recorded as a grant.
      return finish(ctx, s, new Set(s.protectedScopes.map((p) => p.key)), true);
    }
    await show(ctx, s);
  }

  router.post('/interaction/:uid/consent', async (ctx: Context) => {
    const fields = await readFormFields(ctx);
    // Ticked protected scopes come as one field repeated; the rest are single fields (the last counts).
    const form: Record<string, unknown> = { ...Object.fromEntries(fields), protected: fields.getAll('protected') };
    assertCsrf(ctx, form.csrf);
    const s = await load(ctx);
    if (!s) return;
    const { details } = s;
    const parsed = consentForm.safeParse(form);
    if (!parsed.success) return show(ctx, s, 'Choose Allow or Deny.', 400);
    if (parsed.data.decision === 'deny') {
      await audit.record({ type: 'consent.denied', subject: s.accountId, clientId: s.client.clientId, ...requestMeta(ctx), details: { scopes: requestedScopes(details) } });
      await finishInteraction(ctx, details, { error: 'access_denied', error_description: 'The user denied the request.' }, true);
      return;
    }
    const chosen = new Set(parsed.data.protected);
    const byKey = new Map(s.protectedScopes.map((p) => [p.key, p]));
    for (const key of chosen) {
      const p = byKey.get(key);
      // A tampered form: a scope that was not asked for, or one still locked.
      if (!p) return show(ctx, s, 'That permission was not requested. Choose again.', 400);
      if (!p.pass) {
        await audit.record({ type: 'consent.refused', subject: s.accountId, clientId: s.client.clientId, ...requestMeta(ctx), details: { scope: key, reason: 'locked' } });
        return show(ctx, s, `Verify it’s you before allowing ${p.name}.`, 403);
      }
    }
    await finish(ctx, s, chosen, false);
  });

  const host: ChallengeHost = {
    segment: 'consent/verify',
    purpose: 'step-up',
    async load(ctx) {
      const s = await load(ctx);
      if (!s) return null;
      if (!s.stepUp) {
        // Nothing protected is asked for: nothing to verify here.
        seeOther(ctx, `/interaction/${s.details.uid}`);
        return null;
      }
      const usable = FACTOR_ORDER.filter((f) => s.protectedScopes.some((p) => !p.pass && p.usable.includes(f)));
      return { details: s.details, progress: s.progress, user: s.stepUp.user, settings: s.stepUp.settings, usable, state: s } as ChallengeState & { state: ConsentState };
    },
    showChoice: (ctx, s, message, status) => show(ctx, (s as ChallengeState & { state: ConsentState }).state, message, status),
    codeNote(s) {
      const { state } = s as ChallengeState & { state: ConsentState };
      const locked = state.protectedScopes.filter((p) => !p.pass).map((p) => p.name);
      return `This lets you allow ${locked.join(', ')} for ${state.client.name}.`;
    },
    async passed(ctx, s, pass, giveBack) {
      const methods = [...s.progress.methods.filter((m) => m.factor !== pass.factor), pass];
      await Promise.all([
        together(db, [...(giveBack ? [giveBack] : []), saveProgressStatement(db, { ...s.progress, methods, challengeId: null })]),
        audit.record({ type: 'mfa.success', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: pass.factor, ...(pass.amr ? { amr: pass.amr } : {}), purpose: 'step-up' } }),
      ]);
      seeOther(ctx, `/interaction/${s.details.uid}`);
    },
  };
  addChallengeRoutes(router, deps, host);
  // The step-up's factor choice lives on the consent page itself.
  router.get('/interaction/:uid/consent/verify', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    seeOther(ctx, `/interaction/${details.uid}`);
  });

  return { routes: router, enter };
}

type ScopeHolder = { openid?: { scope?: string }; resources?: Record<string, string> };

/** Takes one scope out of what a grant (or its rejected part) holds. */
function dropScope(holder: ScopeHolder | undefined, item: RequestedScope): void {
  const without = (scopes: string) => scopes.split(' ').filter((s) => s && s !== item.scope).join(' ');
  if (item.resource && holder?.resources?.[item.resource]) holder.resources[item.resource] = without(holder.resources[item.resource]!);
  if (!item.resource && holder?.openid?.scope) holder.openid.scope = without(holder.openid.scope);
}

/** A scope granted now is no longer among the grant's rejected ones (oidc-provider would subtract it). */
function unreject(g: InstanceType<Provider['Grant']>, item: RequestedScope): void {
  dropScope((g as unknown as { rejected?: ScopeHolder }).rejected, item);
}

/** Takes a protected scope out of the grant (an earlier consent may hold it) and rejects it, so it is not asked again in this authorization. */
function withhold(g: InstanceType<Provider['Grant']>, item: RequestedScope): void {
  dropScope(g as unknown as ScopeHolder, item);
  if (item.resource) g.rejectResourceScope(item.resource, item.scope);
  else g.rejectOIDCScope(item.scope);
}
