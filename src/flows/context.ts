import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Config } from '../config.js';
import type { Db } from '../db/index.js';
import type { Audit } from '../audit/audit.js';
import type { Logger } from '../log.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Delivery } from '../factors/delivery/index.js';
import type { RegisteredClient, RegisteredClients } from '../clients/registered.js';
import { ACCOUNT_CLIENT_ID } from '../portal/registration.js';
import { ALIAS_PATTERN } from '../portal/portals.js';
import type { ScopeRules } from '../scopes/rules.js';
import type { ResourceServers } from '../resource-servers/resource-servers.js';
import { HttpError, SendOn, SESSION_EXPIRED_MESSAGE } from '../http/errors.js';

/** What an application hears when the user cancels on Tessera's pages (its own apps show their cancelled page for it). */
export const SIGN_IN_CANCELLED = 'The user cancelled the sign-in.';
import { seeOther } from '../http/redirect.js';
import type { ManagerLookup } from '../approvals/recipients.js';
import type { LdapDirectory } from '../directory/ldap.js';
import type { SharedAccountPresence } from '../jit/shared-accounts.js';

export interface FlowDeps {
  config: Config;
  db: Db;
  provider: Provider;
  audit: Audit;
  log: Logger;
  box: SecretBox;
  delivery: Delivery;
  /** Keys code hashes of OTP challenges. */
  otpKey: Buffer;
  clients: RegisteredClients;
  scopeRules: ScopeRules;
  resourceServers: ResourceServers;
  /** Keys the hashes of managers' approval links. */
  linkKey: Buffer;
  /** Where links point when an approval profile names no base URL. */
  issuer: string;
  /** With an LDAP directory: a user's manager's mail or mobile. */
  ldapManager: ManagerLookup | null;
  /** The LDAP directory (used when its settings are complete). */
  directory: LdapDirectory;
  /** Whether there are shared accounts (kept for a while). */
  sharedAccounts: SharedAccountPresence;
}

export type InteractionDetails = Awaited<ReturnType<Provider['interactionDetails']>>;

export const UID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Loads the interaction named in the URL; it must be the one this browser's interaction cookie
 * points to, so a copied link or a stale tab gets a clear "expired" page, not someone else's login.
 */
export async function loadInteraction(ctx: Context, provider: Provider): Promise<InteractionDetails> {
  const uid = ctx.params.uid;
  if (typeof uid !== 'string' || !UID_PATTERN.test(uid)) throw new HttpError(400, SESSION_EXPIRED_MESSAGE, 'Sign-in expired');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) throw new HttpError(400, SESSION_EXPIRED_MESSAGE, 'Sign-in expired');
  // A step already finished, its browser not yet gone on (a form sent twice, a page reloaded): the
  // browser goes where the first answer sent it, and nothing is decided again.
  if (details.result) throw new SendOn(details.returnTo);
  return details;
}

/**
 * Hands a step's result back to the provider and sends the browser on (303, so the next request is
 * a GET). Saves the interaction this request loaded, as provider.interactionResult would after
 * loading it (and its session) a second time.
 */
export async function finishInteraction(
  ctx: Context,
  details: InteractionDetails,
  result: Parameters<Provider['interactionResult']>[2],
  mergeWithLastSubmission: boolean,
): Promise<void> {
  details.result = mergeWithLastSubmission && !('error' in result) ? { ...details.lastSubmission, ...result } : result;
  await details.save(details.exp - Math.floor(Date.now() / 1000));
  seeOther(ctx, details.returnTo);
}

/** The client an interaction is for; gone means the application was removed mid-login. */
/**
 * The client of an interaction. A sign-in to an application's self-service portal is one of
 * Tessera's own account client: its pages name that application (when the portal exists).
 */
export async function clientOf(deps: Pick<FlowDeps, 'clients' | 'db'>, details: InteractionDetails): Promise<RegisteredClient & { portal: string | null }> {
  const client = await deps.clients.get(String(details.params.client_id));
  if (!client) throw new HttpError(400, 'The application that sent you here is no longer registered.', 'Unknown application');
  const alias = portalOf(details);
  if (client.clientId !== ACCOUNT_CLIENT_ID || !alias) return { ...client, portal: null };
  const portal = await deps.db.selectFrom('portals').select('client_id').where('alias', '=', alias).executeTakeFirst();
  const app = portal ? await deps.clients.get(portal.client_id) : undefined;
  return app ? { ...client, name: app.name, portal: alias } : { ...client, portal: null };
}

/** The portal alias a sign-in says it is for (checked against the portals by clientOf). */
export function portalOf(details: InteractionDetails): string | null {
  const alias = details.params.tessera_portal;
  return typeof alias === 'string' && ALIAS_PATTERN.test(alias) ? alias : null;
}

export function requestMeta(ctx: Context): { ip: string; userAgent: string | null } {
  return { ip: ctx.ip, userAgent: ctx.get('user-agent') || null };
}
