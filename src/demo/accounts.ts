import { enablePortal, PortalError } from '../portal/portals.js';
import { importTokens, type TokenSeed } from '../admin/tokens.js';
import { PORTAL_ACTIONS } from '../portal/actions.js';
import type { Db } from '../db/index.js';
import type { Logger } from '../log.js';
import { createUser, DirectoryError, findUserByUsername, setStatus } from '../directory/users.js';
import { addGroupMember } from '../directory/groups.js';
import { ApprovalError, createProfile } from '../approvals/profiles.js';
import { loadSettings, setSetting } from '../settings/settings.js';
import { verifyPassword } from '../directory/passwords.js';
import { ClientError, createClient, findClient, setClientRedirectUris } from '../clients/clients.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { createPolicy, PolicyError } from '../policy/policies.js';
import { allowClient, createResourceServer, findResourceServer, ResourceServerError } from '../resource-servers/resource-servers.js';
import { protectScope } from '../scopes/rules.js';
import { enableSharedAccount, isSharedAccount, JitError } from '../jit/shared-accounts.js';

/** The demo API: its write scope is protected, so the demo app shows the step-up at consent. */
export const DEMO_API = { identifier: 'https://payments.demo.tessera', name: 'Demo payments API', read: 'payments:read', write: 'payments:write' } as const;

export const DEMO_CLIENT_ID = 'tessera-demo';
export const DEMO_USER = { username: 'demo', password: 'demo-password' } as const;
/** A second demo user whose policy requires MFA: every method works through the dev outbox. */
export const DEMO_MFA_USER = { username: 'demo-mfa', password: 'demo-password' } as const;

/** A demo administrator: a member of `admins`, signs in to /admin with a code from the dev outbox. */
export const DEMO_ADMIN = { username: 'demo-admin', password: 'demo-password' } as const;

/** A demo user whose sign-ins need their manager's approval (the manager's link lands in the dev outbox). */
export const DEMO_APPROVAL_USER = { username: 'demo-approval', password: 'demo-password', manager: 'demo-manager@example.com' } as const;

/** A demo shared account: `demo` and `demo-mfa` reserve it at /account and sign in to it with their own code. */
export const DEMO_SHARED = { username: 'demo-shared', group: 'JIT_demo-shared', members: [DEMO_USER.username, DEMO_MFA_USER.username] } as const;

/** The demo app's self-service portal: /selfservice/demo. */
export const DEMO_PORTAL_ALIAS = 'demo';
/** The demo tokens' seed (base32), published: anyone can compute their codes. */
export const DEMO_TOKEN_SEED = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const DEMO_TOKENS: TokenSeed[] = [
  { serial: 'DEMO-TOTP-1', secret: DEMO_TOKEN_SEED, type: 'totp', digits: 6, period: 30 },
  { serial: 'DEMO-HOTP-1', secret: DEMO_TOKEN_SEED, type: 'hotp', digits: 6, period: 30 },
];

export async function ensureDemoData(db: Db, box: SecretBox, issuer: string): Promise<void> {
  if (!(await findUserByUsername(db, DEMO_USER.username))) {
    await createUser(db, {
      username: DEMO_USER.username,
      password: DEMO_USER.password,
      email: 'demo@example.com',
      emailVerified: true,
      phone: '+15555550100',
      phoneVerified: true,
      givenName: 'Demo',
      familyName: 'User',
    }).catch((error: unknown) => {
      // Another instance created it first.
      if (!(error instanceof DirectoryError)) throw error;
    });
  }
  if (!(await findUserByUsername(db, DEMO_MFA_USER.username))) {
    try {
      await createUser(db, {
        username: DEMO_MFA_USER.username, password: DEMO_MFA_USER.password,
        email: 'demo-mfa@example.com', emailVerified: true, phone: '+15555550101', phoneVerified: true,
        givenName: 'Demo', familyName: 'MFA',
      });
      await createPolicy(db, { name: 'demo-mfa requires MFA', subjectType: 'user', subject: DEMO_MFA_USER.username, mfa: 'required' });
    } catch (error) {
      if (!(error instanceof DirectoryError || error instanceof PolicyError)) throw error;
    }
  }
  if (!(await findUserByUsername(db, DEMO_ADMIN.username))) {
    try {
      await createUser(db, {
        username: DEMO_ADMIN.username, password: DEMO_ADMIN.password,
        email: 'demo-admin@example.com', emailVerified: true, givenName: 'Demo', familyName: 'Administrator',
      });
      await addGroupMember(db, 'admins', DEMO_ADMIN.username);
    } catch (error) {
      if (!(error instanceof DirectoryError)) throw error;
    }
  }
  if (!(await findUserByUsername(db, DEMO_APPROVAL_USER.username))) {
    try {
      await createUser(db, {
        username: DEMO_APPROVAL_USER.username, password: DEMO_APPROVAL_USER.password,
        email: 'demo-approval@example.com', emailVerified: true, givenName: 'Demo', familyName: 'Approval',
      });
      await db.updateTable('users').set({ sponsor_name: 'Demo Manager', sponsor_email: DEMO_APPROVAL_USER.manager }).where('username', '=', DEMO_APPROVAL_USER.username).execute();
      if (!(await db.selectFrom('approval_profiles').select('name').where('name', '=', 'Demo manager approval').executeTakeFirst())) {
        await createProfile(db, { name: 'Demo manager approval', mode: 'approve', delivery: 'email', linkMinutes: 30 });
      }
      // The default profile (no approval policies): wherever approval is asked for, the demo profile answers.
      if (!(await loadSettings(db, box)).approval.defaultProfile) await setSetting(db, box, 'approval.defaultProfile', 'Demo manager approval');
      await createPolicy(db, { name: 'demo-approval needs approval', subjectType: 'user', subject: DEMO_APPROVAL_USER.username, mfa: 'optional', managerApproval: true });
    } catch (error) {
      if (!(error instanceof DirectoryError || error instanceof PolicyError || error instanceof ApprovalError)) throw error;
    }
  }
  // Created once; an administrator's later changes (another group, another time, no longer shared) are kept.
  if (!(await findUserByUsername(db, DEMO_SHARED.username))) {
    try {
      await enableSharedAccount(db, { username: DEMO_SHARED.username, group: DEMO_SHARED.group });
      for (const member of DEMO_SHARED.members) await addGroupMember(db, DEMO_SHARED.group, member);
    } catch (error) {
      if (!(error instanceof DirectoryError || error instanceof JitError)) throw error;
    }
  }
  // The demo app lives at this issuer: its redirect URIs follow the issuer at every start (PORT or ISSUER may have changed).
  const redirectUris = [`${issuer}/demo/callback`];
  const postLogoutRedirectUris = [`${issuer}/demo`];
  if (await findClient(db, DEMO_CLIENT_ID)) {
    await setClientRedirectUris(db, DEMO_CLIENT_ID, redirectUris, postLogoutRedirectUris);
  } else {
    await createClient(db, box, {
      clientId: DEMO_CLIENT_ID,
      name: 'Tessera demo app',
      public: true,
      redirectUris,
      postLogoutRedirectUris,
      scope: 'openid profile email phone offline_access',
      grantTypes: ['authorization_code', 'refresh_token'],
    }).catch((error: unknown) => {
      if (!(error instanceof ClientError)) throw error;
    });
  }
  // The demo app's self-service portal, with every action, for every user; created once (an administrator's changes are kept).
  if (!(await db.selectFrom('portals').select('alias').where('client_id', '=', DEMO_CLIENT_ID).executeTakeFirst())) {
    await enablePortal(db, { clientId: DEMO_CLIENT_ID, alias: DEMO_PORTAL_ALIAS, actions: [...PORTAL_ACTIONS], group: null, tokenTypes: ['totp'] }).catch((error: unknown) => {
      if (!(error instanceof PortalError)) throw error;
    });
  }
  // Two hardware tokens in stock, whose seed is published here: add it to an authenticator app (or
  // compute HOTP codes from it) to play the token at "Register an existing token".
  const present = await db.selectFrom('authenticators').select('serial').where('serial', 'in', DEMO_TOKENS.map((t) => t.serial)).execute();
  const toImport = DEMO_TOKENS.filter((t) => !present.some((p) => p.serial === t.serial));
  if (toImport.length) {
    // Instances started together on one database race to this: the one that loses finds them there.
    await importTokens(db, box, toImport).catch(async (error: unknown) => {
      const there = await db.selectFrom('authenticators').select('serial').where('serial', 'in', toImport.map((t) => t.serial)).execute();
      if (there.length < toImport.length) throw error;
    });
  }
  // Created once; an administrator's later changes to the API or its rule are kept.
  if (!(await findResourceServer(db, DEMO_API.identifier))) {
    try {
      await createResourceServer(db, { identifier: DEMO_API.identifier, name: DEMO_API.name, scopes: [DEMO_API.read, DEMO_API.write], accessTokenFormat: 'jwt', signingAlg: 'ES256' });
      await allowClient(db, DEMO_API.identifier, DEMO_CLIENT_ID, [DEMO_API.read, DEMO_API.write]);
      await protectScope(db, { scope: DEMO_API.write, api: DEMO_API.identifier });
      await db
        .insertInto('scopes')
        .values([{ name: DEMO_API.read, description: 'See your payments' }, { name: DEMO_API.write, description: 'Make payments in your name' }])
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
    } catch (error) {
      if (!(error instanceof ResourceServerError)) throw error;
    }
  }
}

/**
 * With the demo off, demo accounts that still have the published password are disabled: a database
 * that once ran the demo must not keep accounts anyone can sign in to.
 */
export async function retireDemoAccounts(db: Db, log: Logger): Promise<void> {
  for (const account of [DEMO_USER, DEMO_MFA_USER, DEMO_ADMIN, DEMO_APPROVAL_USER]) {
    const user = await findUserByUsername(db, account.username);
    if (!user || user.status !== 'active' || !(await verifyPassword(user.password_hash, account.password))) continue;
    await setStatus(db, account.username, 'disabled');
    log.warn({ username: account.username }, 'demo is off: disabled the demo account that still had the published password');
  }
  // The demo shared account has no password: its members are the demo users, but it goes too.
  const shared = await findUserByUsername(db, DEMO_SHARED.username);
  if (shared && shared.status === 'active' && !shared.password_hash && (await isSharedAccount(db, shared.id))) {
    await setStatus(db, DEMO_SHARED.username, 'disabled');
    log.warn({ username: DEMO_SHARED.username }, 'demo is off: disabled the demo shared account');
  }
  // The demo tokens' seed is published: they must not sign anyone in.
  const tokens = await db.updateTable('authenticators').set({ disabled_at: new Date() }).where('serial', 'in', DEMO_TOKENS.map((t) => t.serial)).where('disabled_at', 'is', null).returning('serial').execute();
  if (tokens.length) log.warn({ serials: tokens.map((t) => t.serial) }, 'demo is off: disabled the demo hardware tokens (their seed is published)');
}

/** What the start banner says of the demo portal and tokens: as they are now, after any change an administrator made. */
export async function demoSelfService(db: Db): Promise<{ portal: { alias: string; actions: number; of: number } | null; inStock: string[]; assigned: string[] }> {
  const portal = await db.selectFrom('portals').select(['alias', 'actions']).where('client_id', '=', DEMO_CLIENT_ID).executeTakeFirst();
  const tokens = await db.selectFrom('authenticators').select(['serial', 'type', 'user_id', 'disabled_at']).where('serial', 'in', DEMO_TOKENS.map((t) => t.serial)).orderBy('serial', 'desc').execute();
  return {
    portal: portal ? { alias: portal.alias, actions: portal.actions.length, of: PORTAL_ACTIONS.length } : null,
    inStock: tokens.filter((t) => !t.user_id && !t.disabled_at).map((t) => `${t.serial} (${t.type.toUpperCase()})`),
    assigned: tokens.filter((t) => t.user_id).map((t) => t.serial!),
  };
}


/** Whether the demo shared account is still shared (an administrator may have stopped it): the start banner says so only then. */
export async function demoSharedAccountIsShared(db: Db): Promise<boolean> {
  const user = await findUserByUsername(db, DEMO_SHARED.username);
  return Boolean(user && user.status === 'active' && (await isSharedAccount(db, user.id)));
}
