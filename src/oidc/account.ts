import type { Account, FindAccount, KoaContextWithOIDC } from 'oidc-provider';
import type { Actor } from '../jit/shared-accounts.js';
import type { User } from '../db/schema.js';

/** The claims a user can release, by the standard claim names; the provider filters them by granted scope. */
export function claimsOf(user: User): { sub: string; [claim: string]: unknown } {
  const name = [user.given_name, user.family_name].filter(Boolean).join(' ');
  return {
    sub: user.id,
    preferred_username: user.username,
    ...(name ? { name } : {}),
    ...(user.given_name ? { given_name: user.given_name } : {}),
    ...(user.family_name ? { family_name: user.family_name } : {}),
    updated_at: Math.floor(new Date(user.updated_at).getTime() / 1000),
    ...(user.email ? { email: user.email, email_verified: user.email_verified } : {}),
    ...(user.phone ? { phone_number: user.phone, phone_number_verified: user.phone_verified } : {}),
  };
}

/**
 * A disabled or deleted user is no account: their tokens stop refreshing and userinfo refuses them.
 * UserInfo also says how the session signed in (acr, amr, auth_time), as the access token presented
 * carries it (from the factor ledger, through extraTokenClaims). A shared account's ID token names
 * the member who signed in as it (`act`, found from the code's session), as its access tokens do.
 */
export function accountFinder(userOf: (ctx: KoaContextWithOIDC, sub: string) => Promise<User | undefined>, actorOf: (ctx: KoaContextWithOIDC) => Promise<Actor | null>): FindAccount {
  return async (ctx, sub, token): Promise<Account | undefined> => {
    const user = await userOf(ctx, sub);
    if (!user || user.status !== 'active') return undefined;
    const extra = (token as { extra?: Record<string, unknown> } | undefined)?.extra;
    const carried = extra ? Object.fromEntries(['acr', 'amr', 'auth_time', 'act'].filter((k) => extra[k] !== undefined).map((k) => [k, extra[k]])) : {};
    const act = token?.kind === 'AuthorizationCode' ? await actorOf(ctx) : null;
    return {
      accountId: user.id,
      claims: (use) => (use === 'userinfo' ? { ...claimsOf(user), ...carried } : { ...claimsOf(user), ...(act ? { act } : {}) }),
    };
  };
}

/** The OpenID Connect scopes Tessera serves; an API's own scopes are granted per client (`api allow`). */
export const OIDC_SCOPES = ['openid', 'offline_access', 'profile', 'email', 'phone'] as const;

export const CLAIMS_BY_SCOPE = {
  // act: who really signed in as a shared account (RFC 8693 §4.1).
  openid: ['sub', 'acr', 'amr', 'auth_time', 'act'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username', 'updated_at'],
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
};
