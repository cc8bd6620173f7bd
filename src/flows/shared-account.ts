import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { User } from '../db/schema.js';
import { admitAttempt, findUserById, findUserByUsername, passedAttempt } from '../directory/users.js';
import { PASSWORD_MAX_LENGTH, verifyPassword } from '../directory/passwords.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { seeOther } from '../http/redirect.js';
import { loadSettings } from '../settings/settings.js';
import { sharedSignInRequirement } from '../policy/policies.js';
import type { Requirement } from '../policy/requirement.js';
import { isSharedAccount, liveReservation, spendReservation } from '../jit/shared-accounts.js';
import { ACCOUNT_CLIENT_ID } from '../portal/registration.js';
import { CONSOLE_CLIENT_ID } from '../admin/console/registration.js';
import { now, type Pass } from '../sessions/ledger.js';
import { clientOf, loadInteraction, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { completeLogin } from './complete-login.js';
import { loadProgress, saveProgress } from './progress.js';
import { showLogin, throttleSignIn } from './login.js';
import { INVALID_CREDENTIALS, typedName, usernameField } from './sign-in-fields.js';
import { addChallengeRoutes, showCode, showFactorChoice, type ChallengeHost, type ChallengeState } from './second-factor.js';

const NO_ACCOUNT = '00000000-0000-0000-0000-000000000000';

const sharedForm = z.object({
  csrf: z.string().max(128),
  username: usernameField,
  // Only a shared account an administrator gave a password asks for one.
  password: z.string().max(PASSWORD_MAX_LENGTH, INVALID_CREDENTIALS).optional(),
});

interface SharedState extends ChallengeState {
  need: Requirement;
  /** The shared account signing in (the state's `user` is the member whose factors answer). */
  shared: User;
}

/**
 * Signing in as a just-in-time shared account: no password of its own (unless an administrator
 * set one), then a one-time code from the reserving member's own email, phone or authenticator app.
 * The reservation is spent by that sign-in, and the session's tokens name the member (`act`).
 */
export function sharedAccountRoutes(deps: FlowDeps): Router {
  const { db, box, audit, provider } = deps;
  const router = new Router();

  // "Sign in to a shared account": the username alone (and its password where it has one).
  router.post('/interaction/:uid/login/shared', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (details.prompt.name !== 'login') return seeOther(ctx, `/interaction/${details.uid}`);
    const parsed = sharedForm.safeParse(form);
    if (!parsed.success) {
      return showLogin(ctx, deps, details, { error: parsed.error.issues[0]?.message ?? INVALID_CREDENTIALS, username: typedName(form.username), status: 400 });
    }
    const { username, password = '' } = parsed.data;
    const meta = requestMeta(ctx);
    const clientId = String(details.params.client_id);
    const user = await findUserByUsername(db, username);
    const throttled = await throttleSignIn(deps, username, user?.id ?? null, meta.ip);
    if (throttled) {
      await audit.record({ type: 'login.throttled', actor: username, clientId, ...meta, details: { scope: throttled.scope, retry_at: throttled.retryAt, with: 'shared account' } });
      return showLogin(ctx, deps, details, { error: 'Too many sign-in attempts. Try again later.', username, status: 429 });
    }
    const refuse = async (reason: string) => {
      await audit.record({ type: 'login.failure', actor: username, subject: user?.id ?? null, clientId, ...meta, details: { reason, with: 'shared account' } });
      await showLogin(ctx, deps, details, { error: INVALID_CREDENTIALS, username, status: 401 });
    };
    const shared = user && (await isSharedAccount(db, user.id)) ? user : null;
    if (!shared) {
      // The same work as for a shared account: an admission (that finds nothing) and a hash.
      await admitAttempt(db, NO_ACCOUNT, deps.config.lockout);
      await verifyPassword(null, password);
      return refuse(user ? 'not_shared' : 'unknown_user');
    }
    const methods: Pass[] = [];
    if (shared.password_hash) {
      const admission = await admitAttempt(db, shared.id, deps.config.lockout);
      if (!admission.admitted || !(await verifyPassword(shared.password_hash, password))) return refuse(admission.admitted ? 'wrong_password' : 'locked');
      await passedAttempt(db, shared.id, admission);
      methods.push({ factor: 'password', at: now() });
    } else {
      await verifyPassword(null, password);
    }
    if (shared.status !== 'active') return refuse('disabled');
    await beginSharedSignIn(ctx, deps, details, shared, methods);
  });

  async function load(ctx: Context): Promise<SharedState | null> {
    const details = await loadInteraction(ctx, provider);
    const progress = await loadProgress(db, details.uid);
    if (!progress?.reservationId || progress.step !== 'login' || !progress.requirement || details.prompt.name !== 'login') {
      seeOther(ctx, `/interaction/${details.uid}`);
      return null;
    }
    const [reservation, shared] = await Promise.all([liveReservation(db, { reservationId: progress.reservationId }), findUserById(db, progress.accountId)]);
    if (!shared || shared.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    if (!reservation) {
      reservationEnded(ctx, details, shared);
      return null;
    }
    const member = await findUserById(db, reservation.memberId);
    if (!member || member.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    const need = progress.requirement;
    return { details, progress, user: member, shared, settings: await loadSettings(db, box), usable: need.usableFactors, need };
  }

  function reservationEnded(ctx: Context, details: InteractionDetails, shared: User): void {
    renderPage(ctx, 'flows/shared-ended', { title: 'Reservation ended', uid: details.uid, shared: shared.username }, 403);
  }

  const host: ChallengeHost = {
    segment: 'shared',
    purpose: 'shared-sign-in',
    // Anyone who types the shared name while it is reserved reaches these pages: they show none of
    // the member's addresses, and their guesses count toward the shared account's lockout, not the member's.
    discreet: true,
    attemptsCountFor: (s) => (s as SharedState).shared.id,
    load,
    showChoice: (ctx, s, message, status) => showChoice(ctx, s as SharedState, message, status),
    codeNote: (s) => `You are signing in as ${(s as SharedState).shared.username} with your own code.`,
    async passed(ctx, state, pass, giveBack) {
      const id = pass.factor;
      const s = state as SharedState;
      // The guesses count toward the shared account's lockout, which this sign-in's completion does not clear.
      await giveBack?.execute();
      const meta = requestMeta(ctx);
      const clientId = String(s.details.params.client_id);
      await audit.record({ type: 'mfa.success', actor: s.user.username, subject: s.user.id, clientId, ...meta, details: { factor: id, shared_account: s.shared.username } });
      // The code is right: the reservation is spent now, once; a second tab with it (or one that ran out) signs nothing in.
      if (!(await spendReservation(db, s.progress.reservationId!))) {
        await audit.record({ type: 'jit.refused', actor: s.user.username, subject: s.shared.id, clientId, ...meta, details: { reason: 'reservation_ended', reservation: s.progress.reservationId } });
        return reservationEnded(ctx, s.details, s.shared);
      }
      await completeLogin(ctx, deps, s.details, s.shared, { ...s.progress, methods: [...s.progress.methods, pass] });
    },
  };

  function showChoice(ctx: Context, s: SharedState, message: string | null = null, status = 200): void {
    showFactorChoice(ctx, host, s, s.need, {
      message,
      status,
      lead: `You are signing in as ${s.shared.username}. Confirm with your own code: the one-time code of the member who reserved it.`,
    });
  }

  router.get('/interaction/:uid/shared', async (ctx: Context) => {
    const s = await load(ctx);
    if (!s) return;
    // An authenticator app as the only way: nothing to choose and nothing to send.
    if (s.need.usableFactors.length === 1 && s.need.usableFactors[0] === 'totp') return showCode(ctx, deps, host, s, 'totp');
    if (s.need.noUsableMethod) {
      await audit.record({ type: 'mfa.no_method', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { allowed: s.need.allowedFactors, shared_account: s.shared.username } });
    }
    showChoice(ctx, s);
  });
  addChallengeRoutes(router, deps, host);
  return router;
}

/**
 * The shared account's own credentials are right (its password where it has one): the sign-in
 * goes on with the reserving member's own code. Without a live reservation it is refused exactly
 * as a wrong password is. Tessera's own pages (the account page, the admin console) are for each
 * person's own account: a shared account does not sign in to them.
 */
export async function beginSharedSignIn(ctx: Context, deps: FlowDeps, details: InteractionDetails, shared: User, methods: Pass[]): Promise<void> {
  const { db, audit } = deps;
  const meta = requestMeta(ctx);
  const clientId = String(details.params.client_id);
  const reservation = await liveReservation(db, { sharedUserId: shared.id });
  const member = reservation ? await findUserById(db, reservation.memberId) : undefined;
  if (!reservation || !member || member.status !== 'active') {
    await audit.record({ type: 'login.failure', actor: shared.username, subject: shared.id, clientId, ...meta, details: { reason: reservation ? 'member_unavailable' : 'no_reservation', with: 'shared account' } });
    return showLogin(ctx, deps, details, { error: INVALID_CREDENTIALS, username: shared.username, status: 401 });
  }
  if (clientId === ACCOUNT_CLIENT_ID || clientId === CONSOLE_CLIENT_ID) {
    await audit.record({ type: 'jit.refused', actor: shared.username, subject: shared.id, clientId, ...meta, details: { reason: 'own_pages', reservation: reservation.id, member_id: member.id } });
    return showLogin(ctx, deps, details, { error: `${shared.username} is a shared account: it signs in to applications, not to Tessera’s own pages. Sign in here with your own account.`, status: 403 });
  }
  const client = await clientOf(deps, details);
  const requirement = await sharedSignInRequirement(db, await loadSettings(db, deps.box), deps.config.mode, shared, member, client.mfaRequired, details.params);
  await saveProgress(db, { uid: details.uid, accountId: shared.id, step: 'login', methods, requirement, challengeId: null, reservationId: reservation.id });
  // Nothing is proved yet (whoever types the name gets here while it is reserved): the member is named in the details.
  await audit.record({ type: 'jit.sign_in_started', actor: shared.username, subject: shared.id, clientId, ...meta, details: { reservation: reservation.id, member: member.username, member_id: member.id, factors: requirement.usableFactors } });
  seeOther(ctx, `/interaction/${details.uid}/shared`);
}
