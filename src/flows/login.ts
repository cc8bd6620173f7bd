import type { Context } from 'koa';
import { z } from 'zod';
import { ACCOUNT_CLIENT_ID } from '../portal/registration.js';
import { CONSOLE_CLIENT_ID } from '../admin/console/registration.js';
import { beginSharedSignIn } from './shared-account.js';
import { admitAttempt, DirectoryError, findUserByUsername, passedAttempt, passedAttemptStatement, syncDirectoryUser, type Admission } from '../directory/users.js';
import { DirectoryUnavailable, ldapConfigured } from '../directory/ldap.js';
import { PASSWORD_MAX_LENGTH, verifyPassword } from '../directory/passwords.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { renderPage } from '../http/views.js';
import { seeOther } from '../http/redirect.js';
import { loadSettings } from '../settings/settings.js';
import { loginRequirement, userMfaFacts } from '../policy/policies.js';
import { clientOf, loadInteraction, portalOf, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { completeLogin } from './complete-login.js';
import { saveProgressStatement } from './progress.js';
import { together } from '../db/index.js';
import { addressKey, takeInOrder } from '../rate-limits.js';
import { now } from '../sessions/ledger.js';

const NO_ACCOUNT = '00000000-0000-0000-0000-000000000000';

import { INVALID_CREDENTIALS, typedName, usernameField } from './sign-in-fields.js';

export { INVALID_CREDENTIALS, usernameField };


const loginForm = z.object({
  csrf: z.string().max(128),
  username: usernameField,
  password: z.string({ error: 'Enter your password.' }).min(1, 'Enter your password.').max(PASSWORD_MAX_LENGTH, INVALID_CREDENTIALS),
});

/** The sign-in page; the way in for shared accounts is offered where there are any. */
export async function showLogin(ctx: Context, deps: Pick<FlowDeps, 'clients' | 'db' | 'sharedAccounts'>, details: InteractionDetails, options: { error?: string; username?: string; status?: number } = {}): Promise<void> {
  const hint = typeof details.params.login_hint === 'string' ? details.params.login_hint.slice(0, 128) : '';
  const [client, sharedAccounts] = await Promise.all([clientOf(deps, details), deps.sharedAccounts.any()]);
  const own = client.clientId === ACCOUNT_CLIENT_ID || client.clientId === CONSOLE_CLIENT_ID;
  renderPage(
    ctx,
    'flows/login',
    {
      title: 'Sign in', uid: details.uid, clientName: client.name, username: options.username ?? hint, error: options.error ?? null,
      // Tessera's own account portal offers a way back in to someone who lost a factor or the password.
      restoreAccess: client.clientId === ACCOUNT_CLIENT_ID, portal: portalOf(details),
      // Applications (not Tessera's own pages) may be signed in to as a reserved shared account.
      sharedAccounts: sharedAccounts && !own,
    },
    options.status ?? 200,
  );
}

/**
 * The sign-in's own limits, per client address and per account (or per name as typed, for a name
 * with no account), taken before any password is hashed or any code sent; null when both allow it.
 */
export async function throttleSignIn(deps: Pick<FlowDeps, 'db' | 'config'>, username: string, userId: string | null, ip: string): Promise<{ scope: 'ip' | 'username'; retryAt: Date } | null> {
  const { db, config } = deps;
  const window = config.loginAttempts.windowSeconds;
  const nameKey = userId ? `login-account:${userId}` : `login-username:${username.normalize('NFC').toLowerCase()}`;
  const scopes = ['ip', 'username'] as const;
  const taken = await takeInOrder(db, [
    { key: `login-ip:${addressKey(ip)}`, max: config.loginAttempts.perIp, seconds: window },
    { key: nameKey, max: config.loginAttempts.perUsername, seconds: window },
  ]);
  return taken.allowed ? null : { scope: scopes[taken.index]!, retryAt: taken.retryAt };
}

export function submitLogin(deps: FlowDeps) {
  const { db, provider, audit, config } = deps;
  return async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (details.prompt.name !== 'login') {
      // Already past this step (e.g. a replayed form): carry on from where the login is.
      return seeOther(ctx, `/interaction/${details.uid}`);
    }
    const client = await clientOf(deps, details);
    const parsed = loginForm.safeParse(form);
    if (!parsed.success) {
      await showLogin(ctx, deps, details, { error: parsed.error.issues[0]?.message ?? INVALID_CREDENTIALS, username: typedName(form.username), status: 400 });
      return;
    }
    const { username, password } = parsed.data;
    const meta = requestMeta(ctx);
    const clientId = String(details.params.client_id);
    let user = await findUserByUsername(db, username);
    // Before any hash: password spraying from one address, and guessing at one account (or, for a
    // name with no account, at that name as typed: the answer says nothing about which it is).
    const throttled = await throttleSignIn(deps, username, user?.id ?? null, meta.ip);
    if (throttled) {
      await audit.record({ type: 'login.throttled', actor: username, clientId, ...meta, details: { scope: throttled.scope, retry_at: throttled.retryAt } });
      const minutes = Math.max(1, Math.ceil((throttled.retryAt.getTime() - Date.now()) / 60_000));
      await showLogin(ctx, deps, details, { error: `Too many sign-in attempts ${throttled.scope === 'ip' ? 'from your network' : 'for this username'}. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`, username, status: 429 });
      return;
    }
    const refuse = async (reason: string) => {
      await audit.record({ type: 'login.failure', actor: username, subject: user?.id ?? null, clientId, ...meta, details: { reason } });
      await showLogin(ctx, deps, details, { error: INVALID_CREDENTIALS, username, status: 401 });
    };

    const settings = await loadSettings(db, deps.box);
    // A local account's attempt, admitted before its hash: given back below once the password proved right.
    let passed: (Admission & { admitted: true }) | null = null;
    // Users the directory knows sign in with its password: any name with no local account, and the
    // local records of directory users. Local accounts keep their own password.
    const viaDirectory = ldapConfigured(settings.ldap) && (!user || user.source === 'ldap');
    if (viaDirectory) {
      // A directory user seen before counts toward the lockout like a local one; a first sign-in has
      // no record yet, and the per-name and per-address limits above are what hold it.
      const admission = user ? await admitAttempt(db, user.id, config.lockout) : null;
      if (admission && !admission.admitted) {
        await audit.record({ type: 'login.locked', actor: username, subject: user?.id ?? null, clientId, ...meta, details: { locked_until: admission.lockedUntil } });
        await showLogin(ctx, deps, details, { error: INVALID_CREDENTIALS, username, status: 401 });
        return;
      }
      let entry;
      try {
        // The same hash as a local account's check, alongside: the answer's timing tells no local name from a directory one.
        [entry] = await Promise.all([deps.directory.authenticate(settings.ldap, username, password), verifyPassword(null, password)]);
      } catch (error) {
        if (!(error instanceof DirectoryUnavailable)) throw error;
        // The directory did not answer: no password was checked, so the attempt is given back.
        if (user && admission?.admitted) await passedAttempt(db, user.id, admission);
        await audit.record({ type: 'directory.unavailable', actor: username, subject: user?.id ?? null, clientId, ...meta, details: { reason: error.message } });
        await showLogin(ctx, deps, details, { error: 'The user directory cannot be reached just now. Please try again in a moment.', username, status: 503 });
        return;
      }
      if (!entry) {
        if (admission?.lockStarted && user) {
          await audit.record({ type: 'account.locked', actor: username, subject: user.id, clientId, ...meta, details: { failed_logins: admission.failedLogins, locked_until: admission.lockedUntil } });
        }
        return refuse(user ? 'wrong_password' : 'unknown_user');
      }
      const synced = await syncDirectoryUser(db, entry).catch((error: unknown) => {
        if (error instanceof DirectoryError) return null;
        throw error;
      });
      if (!synced) return refuse('directory_user_unusable');
      if (user && admission?.admitted) await passedAttempt(db, user.id, admission);
      user = synced;
      if (user.status !== 'active') return refuse('disabled');
    } else {
      if (!user) {
        // The same work as for an account: an admission (that finds nothing) and a hash.
        await admitAttempt(db, NO_ACCOUNT, config.lockout);
        await verifyPassword(null, password);
        return refuse('unknown_user');
      }
      // Admitted and counted before the hash is computed: a burst cannot check more than the lockout threshold.
      const admission = await admitAttempt(db, user.id, config.lockout);
      if (!admission.admitted) {
        // The same work and the same answer as a wrong password, so the lock tells nothing; the lock is not extended.
        await verifyPassword(null, password);
        await audit.record({ type: 'login.locked', actor: username, subject: user.id, clientId, ...meta, details: { locked_until: admission.lockedUntil } });
        await showLogin(ctx, deps, details, { error: INVALID_CREDENTIALS, username, status: 401 });
        return;
      }
      const valid = await verifyPassword(user.password_hash, password);
      if (!valid) {
        if (admission.lockStarted) {
          await audit.record({ type: 'account.locked', actor: username, subject: user.id, clientId, ...meta, details: { failed_logins: admission.failedLogins, locked_until: admission.lockedUntil } });
        }
        return refuse('wrong_password');
      }
      if (user.status !== 'active') {
        await passedAttempt(db, user.id, admission);
        return refuse('disabled');
      }
      passed = admission;
    }

    const facts = await userMfaFacts(db, user.id);
    // A shared account an administrator gave a password: the reserving member's own code comes next.
    if (facts.shared && !viaDirectory) {
      if (passed) await passedAttempt(db, user.id, passed);
      return beginSharedSignIn(ctx, deps, details, user, [{ factor: 'password', at: now() }]);
    }
    const need = await loginRequirement(db, settings, config.mode, user, client.mfaRequired, details.params, facts);
    const progress = { uid: details.uid, accountId: user.id, step: 'login' as const, methods: [{ factor: 'password' as const, at: now() }], requirement: need, challengeId: null };
    // A completed sign-in clears the failure count, this attempt's with it.
    if (!need.mfaRequired) return completeLogin(ctx, deps, details, user, progress);
    // The password is right, but this login needs a second factor: remember the first, and what the
    // login needs, and go on to it. The attempt is given back, but the failure count stays until the
    // whole login succeeds, so guessing the second factor still locks.
    await together(db, [...(passed ? [passedAttemptStatement(db, user.id, passed)] : []), saveProgressStatement(db, progress)]);
    await audit.record({ type: 'login.password_verified', actor: username, subject: user.id, clientId, ...meta, details: { mfa: need.reasons, policy: need.policy } });
    seeOther(ctx, `/interaction/${details.uid}/mfa`);
  };
}
