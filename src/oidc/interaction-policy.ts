import { interactionPolicy, type KoaContextWithOIDC } from 'oidc-provider';

const { Check, base } = interactionPolicy;

export interface PolicyChecks {
  /** The signed-in session lacks a second factor fresh enough for this client, request or user policy. */
  needsMfa(ctx: KoaContextWithOIDC): Promise<boolean>;
  /** The request asks for a protected scope the session may not have without stepping up at consent. */
  needsScopeStepUp(ctx: KoaContextWithOIDC): Promise<boolean>;
  /** Sign-ins to this client (or of this user) need a manager's approval, and this session has none for it. */
  needsApproval(ctx: KoaContextWithOIDC): Promise<boolean>;
  /** The session's account is a just-in-time shared account. */
  isSharedAccount(ctx: KoaContextWithOIDC): Promise<boolean>;
}

/**
 * oidc-provider's prompts (login, then consent) plus Tessera's checks:
 * - login/account_unavailable: the session's account was disabled or deleted since it signed in;
 * - login/mfa_required: the session lacks a fresh enough second factor for this client, request or
 *   the user's policy (step-up). Once a login result is present it never asks again, so it cannot loop;
 * - login/shared_account: the session is a shared account's: every authorization signs it in
 *   again with a new reservation (single sign-on never reuses one);
 * - login/approval_required: the client or the user's policy needs a manager's approval and the
 *   session holds none for this client (single sign-on from elsewhere does not skip it);
 * - consent/scope_step_up: a protected scope is asked for and the session has no fresh enough
 *   allowed factor, or the grant does not hold it: an earlier grant never stands in for the factor.
 *   With prompt=none the answer is interaction_required.
 */
export function createInteractionPolicy(checks: PolicyChecks): interactionPolicy.DefaultPolicy {
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
      if (result?.login || !session?.accountId || !account) return Check.NO_NEED_TO_PROMPT;
      return (await checks.needsMfa(ctx)) ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT;
    }),
  );
  login.checks.add(
    new Check('shared_account', 'a shared account signs in again for every authorization', 'login_required', async (ctx: KoaContextWithOIDC) => {
      const { session, account, result } = ctx.oidc;
      if (result?.login || !session?.accountId || !account) return Check.NO_NEED_TO_PROMPT;
      return (await checks.isSharedAccount(ctx)) ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT;
    }),
  );
  login.checks.add(
    new Check('approval_required', 'a manager must approve this sign-in', async (ctx: KoaContextWithOIDC) => {
      const { session, account, result } = ctx.oidc;
      if (result?.login || !session?.accountId || !account) return Check.NO_NEED_TO_PROMPT;
      return (await checks.needsApproval(ctx)) ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT;
    }),
  );
  policy.get('consent')!.checks.add(
    new Check('scope_step_up', 'a protected scope needs a second factor', 'interaction_required', async (ctx: KoaContextWithOIDC) => {
      if (ctx.oidc.result?.consent || !ctx.oidc.session?.accountId) return Check.NO_NEED_TO_PROMPT;
      return (await checks.needsScopeStepUp(ctx)) ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT;
    }),
  );
  return policy;
}
