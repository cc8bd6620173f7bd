import { interactionPolicy, type KoaContextWithOIDC } from 'oidc-provider';
import { ACR } from './assurance.js';

const { Check, base } = interactionPolicy;

/**
 * oidc-provider's prompts (login, then consent) plus Tessera's checks on the login prompt:
 * - account_unavailable: the session's account was disabled or deleted since it signed in;
 * - mfa_required: the session signed in with a password only, but this client, request or the
 *   user's policy needs a second factor (step-up). Once a login result is present it never asks
 *   again, so it cannot loop.
 */
export function createInteractionPolicy(needsMfa: (ctx: KoaContextWithOIDC, accountId: string) => Promise<boolean>): interactionPolicy.DefaultPolicy {
  const policy = base();
  const login = policy.get('login')!;
  login.checks.add(
    new Check('account_unavailable', 'the signed-in account is no longer active', (ctx: KoaContextWithOIDC) =>
      ctx.oidc.session?.accountId && !ctx.oidc.account ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT,
    ),
    0,
  );
  login.checks.add(
    new Check('mfa_required', 'a second factor is required', async (ctx: KoaContextWithOIDC) => {
      const { session, account, result } = ctx.oidc;
      if (result?.login || !session?.accountId || !account || session.acr === ACR.mfa) return Check.NO_NEED_TO_PROMPT;
      return (await needsMfa(ctx, session.accountId)) ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT;
    }),
  );
  return policy;
}
