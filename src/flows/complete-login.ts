import type { Context } from 'koa';
import type { User } from '../db/schema.js';
import { recordSuccessfulLogin } from '../directory/users.js';
import { acrFor, type AuthenticationMethod } from '../oidc/assurance.js';
import { finishInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { clearProgress } from './progress.js';

/** The amr of a login: its methods, plus "mfa" when they include a factor besides the password (RFC 8176). */
export function amrOf(methods: AuthenticationMethod[]): AuthenticationMethod[] {
  const amr = [...new Set(methods)];
  if (amr.includes('pwd') && amr.some((m) => m !== 'pwd' && m !== 'mfa') && !amr.includes('mfa')) amr.push('mfa');
  return amr;
}

/** Every login ends here: the account is signed in with what it proved, and the provider carries on. */
export async function completeLogin(ctx: Context, deps: FlowDeps, details: InteractionDetails, user: User, methods: AuthenticationMethod[]): Promise<void> {
  const amr = amrOf(methods);
  await Promise.all([
    recordSuccessfulLogin(deps.db, user),
    clearProgress(deps.db, details.uid),
    deps.audit.record({ type: 'login.success', actor: user.username, subject: user.id, clientId: String(details.params.client_id), ...requestMeta(ctx), details: { amr } }),
  ]);
  await finishInteraction(ctx, details, { login: { accountId: user.id, acr: acrFor(amr), amr, remember: true } }, false);
}
