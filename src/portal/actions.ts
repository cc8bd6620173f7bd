import type { PortalAction } from '../db/schema.js';

export type { PortalAction } from '../db/schema.js';

/** Every self-service action, in the order the seed (and the CLI's contract) lists them. */
export const PORTAL_ACTIONS = [
  'register-token', 'register-existing-token', 'reassign-token', 'unassign-token', 'resync', 'set-pin', 'remove-pin',
  'create-password', 'change-password', 'change-email', 'change-phone', 'change-login', 'change-name',
] as const satisfies readonly PortalAction[];

/** What /account offers when an administrator has not chosen: Keycloak's account console, and a way to add a factor. */
export const DEFAULT_ACCOUNT_ACTIONS: PortalAction[] = ['register-token', 'unassign-token', 'create-password', 'change-password', 'change-email', 'change-phone', 'change-name'];

/** Token types a user may register themselves: an authenticator app (time-based). */
export const SELF_TOKEN_TYPES = ['totp'] as const;
export type SelfTokenType = (typeof SELF_TOKEN_TYPES)[number];

/** How each action is named on the portal page, and the page it opens (under the portal's address). */
export const ACTION_LINKS: Record<PortalAction, { label: string; path: string }> = {
  'register-token': { label: 'Register a new token', path: '/tokens/new' },
  'register-existing-token': { label: 'Register an existing token', path: '/tokens/existing' },
  'reassign-token': { label: 'Re-assign a token', path: '/tokens/reassign' },
  'unassign-token': { label: 'Unassign a token', path: '/tokens/unassign' },
  resync: { label: 'Resynchronize a token', path: '/tokens/resync' },
  'set-pin': { label: 'Set a PIN', path: '/tokens/pin' },
  'remove-pin': { label: 'Remove a PIN', path: '/tokens/pin/remove' },
  'create-password': { label: 'Create a password', path: '/password/new' },
  'change-password': { label: 'Change password', path: '/password' },
  'change-email': { label: 'Change email', path: '/email' },
  'change-phone': { label: 'Change phone number', path: '/phone' },
  'change-login': { label: 'Change login', path: '/login-name' },
  'change-name': { label: 'Change name', path: '/name' },
};

/** What decides whether an action applies to a user now. */
export interface AccountFacts {
  source: 'local' | 'ldap';
  hasPassword: boolean;
  tokens: { pin: boolean; disabled: boolean }[];
}

/**
 * Whether an enabled action is shown to this user: token actions need a token (resync and a new
 * PIN a working one), removing a PIN needs a token with one; a directory user's password, names and addresses follow the directory.
 */
export function applies(action: PortalAction, facts: AccountFacts): boolean {
  const local = facts.source === 'local';
  switch (action) {
    case 'register-token':
    case 'register-existing-token':
      return true;
    case 'reassign-token':
    case 'unassign-token':
      return facts.tokens.length > 0;
    case 'resync':
    case 'set-pin':
      return facts.tokens.some((t) => !t.disabled);
    case 'remove-pin':
      return facts.tokens.some((t) => t.pin);
    case 'create-password':
      return local && !facts.hasPassword;
    case 'change-password':
      return local && facts.hasPassword;
    case 'change-email':
    case 'change-phone':
    case 'change-login':
    case 'change-name':
      return local;
  }
}

/** Parses an administrator's list ("register-token,change-name"): known names, each once, in the order given. */
export function parseActions(list: readonly string[]): { actions: PortalAction[]; unknown: string[]; repeated: string[] } {
  const known = new Set<string>(PORTAL_ACTIONS);
  const actions: PortalAction[] = [];
  const unknown: string[] = [];
  const repeated: string[] = [];
  for (const raw of list) {
    const name = raw.trim();
    if (!name) continue;
    if (!known.has(name)) unknown.push(name);
    else if (actions.includes(name as PortalAction)) repeated.push(name);
    else actions.push(name as PortalAction);
  }
  return { actions, unknown, repeated };
}
