import Provider, { errors, type AdapterPayload, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { Config } from '../config.js';
import { DatabaseUnavailable, type Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { RegisteredClients } from '../clients/registered.js';
import { grantableScopes, type ResourceServers } from '../resource-servers/resource-servers.js';
import type { Audit } from '../audit/audit.js';
import type { Logger } from '../log.js';
import { renderToString } from '../http/views.js';
import { strictCsp } from '../http/security.js';
import { abandonRotation, ClientAdapter, finishRotation, KyselyAdapter, rotationPending, storageKeys, storedId } from './adapter.js';
import { accountFinder, CLAIMS_BY_SCOPE, OIDC_SCOPES } from './account.js';
import { ACR_VALUES } from './assurance.js';
import type { KeyMaterial } from './keys.js';
import { createInteractionPolicy, type PolicyChecks } from './interaction-policy.js';
import { commitInteractionPasses, freshFactor, readLedger, type Pass } from '../sessions/ledger.js';
import { unlockingPass, type RequestedScope, type ScopeRules } from '../scopes/rules.js';
import { guardGrant, parseStepUps } from '../scopes/grants.js';
import { APPROVAL_RESULT, LEDGER_RESULT, reservationOfResult } from '../flows/complete-login.js';
import { hasSessionApproval, recordSessionApproval } from '../approvals/requests.js';
import { loadSettings } from '../settings/settings.js';
import { loginRequirement } from '../policy/policies.js';
import { actorOf, bindCode, findAccountUser, type Actor } from '../jit/shared-accounts.js';

export interface ProviderDeps {
  config: Config;
  issuer: string;
  db: Db;
  box: SecretBox;
  clients: RegisteredClients;
  resourceServers: ResourceServers;
  scopeRules: ScopeRules;
  keys: KeyMaterial;
  audit: Audit;
  log: Logger;
}

function page(ctx: KoaContextWithOIDC, status: number, name: string, data: { title: string; [k: string]: unknown }): void {
  ctx.status = status;
  ctx.type = 'html';
  ctx.set('Content-Security-Policy', strictCsp());
  ctx.set('Cache-Control', 'no-store');
  ctx.body = renderToString(name, data);
}

/**
 * Authorization codes, stored as every model is; a code issued by a shared account's sign-in (its
 * login result names the reservation, carried on through consent) is bound to that reservation as
 * it is saved, before the application can present it.
 */
class SharedSignInCodes extends KyselyAdapter {
  override async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    await super.upsert(id, payload, expiresIn);
    const reservation = reservationOfResult((Provider.ctx as KoaContextWithOIDC | undefined)?.oidc?.result);
    // One code per reservation: a second one (the resume raced from several tabs) is refused, not issued without its member.
    if (reservation && !(await bindCode(this.db, reservation, this.hash(id)))) {
      await this.destroy(id);
      throw new errors.AccessDenied('this reservation was already used by another sign-in: reserve the shared account again');
    }
  }
}

export function createProvider(deps: ProviderDeps): Provider {
  const { config, issuer, db, box, keys, audit, log, clients, resourceServers, scopeRules } = deps;
  const secureCookies = issuer.startsWith('https://');
  const storage = storageKeys(box);

  /** A value worked out at most once per request, whichever check asks for it first. */
  const perRequest = <T>(load: (ctx: KoaContextWithOIDC) => Promise<T>) => {
    const kept = new WeakMap<KoaContextWithOIDC, Promise<T>>();
    return (ctx: KoaContextWithOIDC): Promise<T> => {
      let value = kept.get(ctx);
      if (!value) kept.set(ctx, (value = load(ctx)));
      return value;
    };
  };
  // The account a request is about, with whether it is a shared one: loaded once per request, however many hooks ask.
  const accountKept = new WeakMap<KoaContextWithOIDC, Map<string, ReturnType<typeof findAccountUser>>>();
  const accountOf = (ctx: KoaContextWithOIDC, sub: string): ReturnType<typeof findAccountUser> => {
    let kept = accountKept.get(ctx);
    if (!kept) accountKept.set(ctx, (kept = new Map()));
    let user = kept.get(sub);
    if (!user) kept.set(sub, (user = findAccountUser(db, sub)));
    return user;
  };
  const isShared = async (ctx: KoaContextWithOIDC, sub: string | undefined) => Boolean(sub && (await accountOf(ctx, sub))?.shared);
  // The session's factor ledger.
  const ledgerOf = perRequest(({ oidc: { session } }) =>
    session?.uid && session.accountId ? readLedger(db, session.uid, session.accountId) : Promise.resolve([] as Pass[]),
  );
  // What the signed-in user needs for this client and request, and the settings it was worked out with.
  const requirementOf = perRequest(async (ctx) => {
    const user = ctx.oidc.session?.accountId ? await accountOf(ctx, ctx.oidc.session.accountId) : undefined;
    const client = ctx.oidc.client && (await clients.get(ctx.oidc.client.clientId));
    if (!user || !client) return null;
    const settings = await loadSettings(db, box);
    const need = await loginRequirement(db, settings, config.mode, user, client.mfaRequired, ctx.oidc.params ?? {});
    return { settings, need, maxAgeSeconds: client.mfaMaxAgeSeconds ?? settings.mfa.maxAgeSeconds };
  });

  // The member whose reservation this code was issued for (null for everyone else's codes).
  const codeActor = perRequest(async (ctx) => {
    const code = ctx.oidc.entities.AuthorizationCode;
    // Only a shared account's codes are bound to a reservation.
    return code && (await isShared(ctx, code.accountId)) ? actorOf(db, { codeId: storedId(storage.idKey, code.jti) }) : null;
  });

  const checks: PolicyChecks = {
    async needsMfa(ctx) {
      const requirement = await requirementOf(ctx);
      if (!requirement?.need.mfaRequired) return false;
      // An MFA counts for as long as mfa.maxAgeSeconds (or the client's own window), not for the whole session.
      // A window of 0 (the admin console) asks at every sign-in, even a second after the last.
      return requirement.maxAgeSeconds === 0 || !freshFactor(await ledgerOf(ctx), requirement.need.allowedFactors, requirement.maxAgeSeconds);
    },
    async needsApproval(ctx) {
      const client = ctx.oidc.client && (await clients.get(ctx.oidc.client.clientId));
      if (!client || !ctx.oidc.session?.uid) return false;
      if (!client.managerApproval && !(await requirementOf(ctx))?.need.managerApproval) return false;
      return !(await hasSessionApproval(db, ctx.oidc.session.uid, client.clientId));
    },
    isSharedAccount: (ctx) => isShared(ctx, ctx.oidc.session?.accountId),
    async needsScopeStepUp(ctx) {
      const { grant } = ctx.oidc;
      const requested: RequestedScope[] = [...ctx.oidc.requestParamOIDCScopes].map((scope) => ({ resource: null, scope }));
      for (const [indicator, server] of Object.entries(ctx.oidc.resourceServers ?? {})) {
        for (const scope of ctx.oidc.requestParamScopes) if (server.scopes.has(scope)) requested.push({ resource: indicator, scope });
      }
      const rules = await scopeRules.protecting(requested);
      if (rules.length === 0) return false;
      // The factors this user may use now: a policy narrowed since the step-up locks the scope again.
      const [ledger, requirement] = await Promise.all([ledgerOf(ctx), requirementOf(ctx)]);
      if (!requirement) return true;
      return rules.some((rule) => {
        const held = (rule.resource ? grant?.getResourceScope(rule.resource) : grant?.getOIDCScope())?.split(' ').includes(rule.scope);
        return !held || !unlockingPass(rule, ledger, [], requirement.need.allowedFactors);
      });
    },
  };

  const configuration: Configuration = {
    adapter: (name: string) => {
      if (name === 'Client') return new ClientAdapter(clients);
      // A grant is held against today's scope rules whenever it is loaded (authorization, refresh, UserInfo).
      const guard = name === 'Grant'
        ? { active: () => scopeRules.any(), apply: (payload: AdapterPayload, stepUps: unknown) => guardGrant(scopeRules, payload, parseStepUps(stepUps)) }
        : undefined;
      if (name === 'AuthorizationCode') return new SharedSignInCodes(db, name, storage);
      return new KyselyAdapter(db, name, storage, config.ttl.refreshTokenReuseSeconds, guard);
    },
    findAccount: accountFinder(accountOf, codeActor),
    jwks: { keys: keys.signing as never },
    cookies: {
      keys: keys.cookie,
      long: { httpOnly: true, sameSite: 'lax', secure: secureCookies, signed: true },
      short: { httpOnly: true, sameSite: 'lax', secure: secureCookies, signed: true },
      names: { session: 'tessera.session', interaction: 'tessera.interaction', resume: 'tessera.resume' },
    },
    claims: CLAIMS_BY_SCOPE,
    acrValues: ACR_VALUES,
    scopes: [...OIDC_SCOPES],
    responseTypes: ['code'],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256'],
      userinfoSigningAlgValues: ['RS256', 'ES256'],
    },
    // Which application portal (/selfservice/<alias>) a sign-in of Tessera's own account client is for: its sign-in page names that application.
    extraParams: ['tessera_portal'],
    // PKCE (S256) for every authorization-code client, confidential ones included.
    pkce: { required: () => true },
    // Discovery advertises only what a Tessera client can be registered with.
    clientAuthMethods: ['client_secret_basic', 'none'],
    features: {
      devInteractions: { enabled: false },
      // Pushed authorization requests (RFC 9126): the request's parameters go to /request first, over the back channel.
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      // Sender-constrained (DPoP) tokens are not offered: nothing in Tessera's APIs checks the proof.
      dPoP: { enabled: false },
      // Any confidential client (resource servers are registered as such) may introspect; a public client only its own tokens.
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === ctx.oidc.client?.clientId,
      },
      // A client may revoke only the tokens issued to it.
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      clientCredentials: { enabled: true },
      userinfo: { enabled: true },
      // APIs registered with `api add`. Without `resource` a token is for UserInfo only (opaque, as before).
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: async (ctx, indicator, client) => {
          const api = await resourceServers.get(indicator);
          if (!api) throw new errors.InvalidTarget('the resource is not a registered API');
          const scopes = grantableScopes(api, (await clients.get(client.clientId))?.apiScopes[api.identifier]);
          if (scopes.length === 0) throw new errors.InvalidTarget('this client is not allowed to use the API');
          // A client asking for its own token with scopes of which it may have none would get a token
          // that allows nothing (and a response that does not say so): refused, naming them.
          const asked = ctx.oidc.params?.grant_type === 'client_credentials' && typeof ctx.oidc.params.scope === 'string' ? ctx.oidc.params.scope.split(' ').filter(Boolean) : [];
          if (asked.length > 0 && !asked.some((scope) => scopes.includes(scope))) {
            throw new errors.InvalidScope('this client is not allowed any of the requested scopes at this API', asked.join(' '));
          }
          return {
            scope: scopes.join(' '),
            audience: api.identifier,
            accessTokenTTL: api.accessTokenTtlSeconds,
            accessTokenFormat: api.accessTokenFormat,
            ...(api.accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: api.signingAlg } } } : {}),
          };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          page(ctx, 200, 'flows/logout', { title: 'Sign out', form, client: ctx.oidc.client?.clientName ?? ctx.oidc.client?.clientId ?? null });
        },
        postLogoutSuccessSource: async (ctx) => {
          page(ctx, 200, 'flows/logged-out', { title: 'Signed out', client: ctx.oidc.client?.clientName ?? ctx.oidc.client?.clientId ?? null });
        },
      },
    },
    interactions: { policy: createInteractionPolicy(checks), url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // How the user signed in travels with their access tokens (RFC 9068 §2.2.1), so an API can demand MFA.
    // A shared account's session also says who really signed in: RFC 8693's actor claim.
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== 'AccessToken') return undefined;
      const source = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken;
      if (!source) return undefined;
      const act = await codeActor(ctx);
      return { auth_time: source.authTime, acr: source.acr, amr: source.amr, ...(act ? { act } : {}) };
    },
    // Refresh tokens for every client allowed the grant (as Keycloak does); offline_access makes them
    // outlive the session. A shared account gets none: each use of it is one reserved sign-in.
    issueRefreshToken: async (ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') && !(await isShared(ctx, code.accountId)),
    rotateRefreshToken: () => true,
    ttl: {
      // A token for an API lives as long as the API chose; one for UserInfo as configured.
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.ttl.accessTokenSeconds,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.ttl.accessTokenSeconds,
      AuthorizationCode: () => 60,
      IdToken: () => 3600,
      RefreshToken: () => config.ttl.refreshTokenSeconds,
      // Long enough for a manager's approval link (at most 120 minutes) to run its course.
      Interaction: () => 3 * 3600,
      Session: () => config.ttl.sessionSeconds,
      Grant: () => config.ttl.refreshTokenSeconds,
    },
    renderError: async (ctx, out, error) => {
      if (error instanceof Error && !('expose' in error && error.expose)) log.error({ err: error }, 'provider error');
      page(ctx, ctx.status >= 400 ? ctx.status : 400, 'error', {
        title: 'Sign-in could not continue',
        message: out.error === 'server_error' ? 'Tessera could not complete this request. Please try again in a moment.' : (out.error_description ?? 'The request was not valid.'),
        code: out.error,
      });
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.proxy = config.trustProxy;
  keepBuiltClients(provider, clients);

  // Once oidc-provider has signed the session in (and its uid is final), what the interaction
  // proved moves from its progress into the session's factor ledger. The resume route is a GET:
  // POSTs (every token request) pass straight through.
  provider.use((ctx, next) => (ctx.method === 'GET' || ctx.method === 'HEAD' ? commitPassesOnResume(ctx as KoaContextWithOIDC, next) : next()));
  async function commitPassesOnResume(ctx: KoaContextWithOIDC, next: () => Promise<unknown>): Promise<void> {
    await next();
    const { oidc } = ctx;
    const interactionUid = oidc?.route === 'resume' ? (oidc.result as Record<string, unknown> | undefined)?.[LEDGER_RESULT] : undefined;
    if (typeof interactionUid === 'string' && oidc.session?.uid) {
      await commitInteractionPasses(db, interactionUid, oidc.session.uid, config.ttl.sessionSeconds);
      if ((oidc.result as Record<string, unknown>)[APPROVAL_RESULT]) await recordSessionApproval(db, interactionUid, oidc.session.uid, config.ttl.sessionSeconds);
    }
  }

  // A refresh token's rotation is stored once its response is known to succeed (src/oidc/adapter.ts).
  // One that lost to another use of the same token answers invalid_grant instead, and an error
  // after the successor was made leaves the token unused.
  provider.use(async (ctx, next) => {
    await next();
    if (!rotationPending(ctx)) return;
    if (ctx.status !== 200) {
      abandonRotation(ctx);
      return;
    }
    try {
      const rotation = (await finishRotation(ctx))!;
      if (rotation.outcome === 'rotated') {
        recordIssued(ctx as KoaContextWithOIDC);
        return;
      }
      if (rotation.outcome === 'reused') provider.emit('grant.revoked', ctx, rotation.grantId);
      throw new errors.InvalidGrant(rotation.outcome === 'reused' ? 'refresh token already used' : 'refresh token not found');
    } catch (error) {
      // The token endpoint's own error handler has run: answer as it would. Nothing was stored, so
      // any other failure is one the client may retry with the same token.
      const refusal = error instanceof errors.OIDCProviderError ? error : new DatabaseUnavailable(error);
      if (refusal.statusCode >= 500) {
        log.warn({ err: error }, 'refresh token rotation failed');
        ctx.set('Retry-After', '5');
      }
      ctx.status = refusal.statusCode;
      ctx.body = { error: refusal.error, error_description: refusal.error_description };
    }
  });

  function recordIssued(ctx: KoaContextWithOIDC): void {
    const { AccessToken, ClientCredentials, Client } = ctx.oidc.entities;
    const act = AccessToken?.extra?.act as Actor | undefined;
    audit.note({
      type: 'token.issued',
      actor: act?.preferred_username ?? null,
      subject: AccessToken?.accountId ?? null,
      clientId: Client?.clientId ?? null,
      ip: ctx.ip,
      details: { grant_type: ctx.oidc.params?.grant_type, client_credentials: Boolean(ClientCredentials) },
    });
  }
  // A rotating refresh is recorded when its rotation is stored (above).
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    if (!rotationPending(ctx)) recordIssued(ctx);
  });
  provider.on('grant.revoked', (ctx: KoaContextWithOIDC, grantId: string) => {
    audit.note({ type: 'token.revoked', clientId: ctx.oidc.client?.clientId ?? null, ip: ctx.ip, details: { grant_id: grantId } });
  });
  provider.on('end_session.success', (ctx: KoaContextWithOIDC) => {
    const session = ctx.oidc.session;
    void (async () => {
      // A shared account's sign-out is the member's who signed it in.
      const actor = session?.uid && session.accountId ? await actorOf(db, { sessionUid: session.uid }).catch(() => null) : null;
      audit.note({ type: 'logout', actor: actor?.preferred_username ?? null, subject: session?.accountId ?? null, clientId: ctx.oidc.client?.clientId ?? null, ip: ctx.ip });
    })();
  });
  provider.on('server_error', (_ctx: KoaContextWithOIDC, error: Error) => log.error({ err: error }, 'provider server_error'));
  return provider;
}

/**
 * oidc-provider finds the Client it built for stored metadata by hashing that metadata (JSON and
 * SHA-256) on every lookup: a share of every token request's CPU. The metadata object Tessera keeps
 * stays the same until it is read again (src/clients/registered.ts), so the Client built for it is
 * kept beside it, and a changed client, read afresh, gets a new one.
 */
function keepBuiltClients(provider: Provider, clients: RegisteredClients): void {
  const ClientModel = provider.Client;
  const find = ClientModel.find.bind(ClientModel);
  const built = new WeakMap<object, InstanceType<typeof ClientModel>>();
  ClientModel.find = async (id: string) => {
    const registered = typeof id === 'string' ? await clients.get(id) : undefined;
    if (!registered) return find(id);
    const kept = built.get(registered.metadata);
    if (kept) return kept;
    const client = await find(id);
    if (client) built.set(registered.metadata, client);
    return client;
  };
}
