import { interactionPolicy, type KoaContextWithOIDC } from 'oidc-provider';

const { Check, base } = interactionPolicy;

/**
 * oidc-provider's prompts (login, then consent) plus Tessera's checks. The login prompt is
 * requested again when the session's account has been disabled or deleted since it signed in,
 * instead of carrying a session whose account can no longer be found.
 */
export function createInteractionPolicy(): interactionPolicy.DefaultPolicy {
  const policy = base();
  const login = policy.get('login')!;
  login.checks.add(
    new Check('account_unavailable', 'the signed-in account is no longer active', (ctx: KoaContextWithOIDC) =>
      ctx.oidc.session?.accountId && !ctx.oidc.account ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT,
    ),
    0,
  );
  return policy;
}
