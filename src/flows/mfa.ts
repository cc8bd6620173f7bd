import Router from '@koa/router';
import type { Context } from 'koa';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { HttpError } from '../http/errors.js';
import { renderPage } from '../http/views.js';
import { loadSettings, type FactorId } from '../settings/settings.js';
import type { Requirement } from '../policy/requirement.js';
import { beginEnrolment, confirmEnrolment, isWellFormedTotp } from '../factors/authenticators.js';
import { now } from '../sessions/ledger.js';
import { clientOf, loadInteraction, requestMeta, type FlowDeps } from './context.js';
import { loginRequirement } from '../policy/policies.js';
import { loadProgressAndUser, saveProgress, saveProgressStatement, type Progress } from './progress.js';
import { together } from '../db/index.js';
import { completeLogin } from './complete-login.js';
import { codeField } from '../factors/index.js';
import { addChallengeRoutes, challengeBase, showCode, showFactorChoice, type ChallengeHost, type ChallengeState } from './second-factor.js';
import { seeOther } from '../http/redirect.js';
import { PASSKEY_CSP } from '../http/security.js';
import { addPasskey, passkeyAddedNotice, PasskeyError, registrationOptions, relyingPartyOf } from '../factors/passkeys.js';
import { tellOwner } from '../factors/delivery/index.js';

interface MfaState extends ChallengeState {
  need: Requirement;
}


/**
 * The second-factor step of a login: one generic challenge over the factor registry, plus the
 * enrolment of an authenticator app where the requirement allows one. It reads the requirement
 * computed when the interaction learnt who the user is; it never works it out again.
 */
export function mfaRoutes(deps: FlowDeps): Router {
  const { db, box, audit } = deps;
  const router = new Router();

  async function load(ctx: Context): Promise<MfaState | null> {
    const details = await loadInteraction(ctx, deps.provider);
    const loaded = await loadProgressAndUser(db, details.uid);
    const progress = loaded?.progress;
    // A sign-in as a shared account is answered by the member's factors, on its own step's pages.
    if (!progress || progress.step !== 'login' || !progress.requirement || progress.reservationId || details.prompt.name !== 'login') {
      seeOther(ctx, `/interaction/${details.uid}`);
      return null;
    }
    const user = loaded.user;
    if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
    const need = progress.requirement;
    // Before a first passkey, a code to the user's own address or phone proves the password's typist is the user.
    const proof = need.enrolPasskey && !progress.factorPassed ? need.passkeyProof ?? [] : [];
    return { details, progress, user, settings: await loadSettings(db, box), usable: [...need.usableFactors, ...proof], need };
  }

  /** A first passkey may be added now: the policy's first-logon enrolment, with the proof code passed where one is asked. */
  function passkeyOpen(s: MfaState): boolean {
    const proof = s.need.passkeyProof ?? [];
    return Boolean(s.need.enrolPasskey) && (proof.length === 0 || proof.includes(s.progress.factorPassed as FactorId));
  }

  const host: ChallengeHost = {
    segment: 'mfa',
    purpose: 'login',
    load,
    showChoice: (ctx, s, message, status) => showChoice(ctx, s as MfaState, message, status),
    hasOtherWays: (state) => {
      const s = state as MfaState;
      return s.need.enrolAuthenticator !== 'no' || passkeyOpen(s);
    },
    async passed(ctx, state, pass, giveBack) {
      const s = state as MfaState;
      const id = pass.factor;
      const success = audit.record({ type: 'mfa.success', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: id, ...(pass.amr ? { amr: pass.amr } : {}) } });
      const methods = [...s.progress.methods, pass];
      const goOn = (progress: Progress) => together(db, [...(giveBack ? [giveBack] : []), saveProgressStatement(db, progress)]);
      if (s.need.enrolPasskey && (s.need.passkeyProof ?? []).includes(id)) {
        // The code proved it is the user; it is not the policy's second factor: the passkey is.
        await Promise.all([success, goOn({ ...s.progress, methods, challengeId: null, factorPassed: id })]);
        return seeOther(ctx, `/interaction/${s.details.uid}/mfa/passkey`);
      }
      // After a code (or a recovery code: the app may be what was lost) the user may add an app.
      if (id !== 'totp' && id !== 'webauthn' && ((s.progress.enrolAfterFactor && s.need.enrolAuthenticator === 'after-factor') || s.need.enrolAuthenticator === 'after-code')) {
        // The code proved it is the user: now they may add an authenticator app, then the login completes.
        await Promise.all([success, goOn({ ...s.progress, methods, challengeId: null, factorPassed: id })]);
        return seeOther(ctx, `${challengeBase(host, s.details.uid)}/enrol`);
      }
      // Together, so both audit events go out in one write. The completed sign-in clears the failure count.
      await Promise.all([success, completeLogin(ctx, deps, s.details, s.user, { ...s.progress, methods }, { giveBack })]);
    },
  };

  function showChoice(ctx: Context, s: MfaState, message: string | null = null, status = 200): void {
    showFactorChoice(ctx, host, s, { ...s.need, usableFactors: s.usable }, {
      message,
      status,
      canEnrol: s.need.enrolAuthenticator === 'required' || s.need.enrolAuthenticator === 'offered',
      canEnrolPasskey: passkeyOpen(s),
      ...(s.need.enrolPasskey && !passkeyOpen(s) ? { lead: 'Your account needs a passkey. First confirm it’s you with a code, then add one.' } : {}),
      // An app may be added in this sign-in once one of the other methods is passed.
      enrolAfterFactor: s.need.enrolAuthenticator === 'after-factor' ? (s.progress.enrolAfterFactor ? 'chosen' : 'offered') : s.need.enrolAuthenticator === 'after-code' ? 'restored' : 'no',
    });
  }

  async function showEnrolment(ctx: Context, s: MfaState, error: string | null = null, status = 200): Promise<void> {
    const enrolment = await beginEnrolment(db, box, s.user, s.settings.mfa.appName, s.details.uid);
    renderPage(
      ctx,
      'flows/mfa-enrol',
      {
        title: 'Set up your authenticator app',
        uid: s.details.uid,
        qr: enrolment.qrDataUrl,
        key: enrolment.secret.replace(/(.{4})/g, '$1 ').trim(),
        uri: enrolment.uri,
        required: s.need.enrolAuthenticator === 'required',
        restored: s.need.reasons.includes('restored'),
        // After a code was passed, the app is an addition the user may skip.
        skippable: s.need.enrolAuthenticator === 'after-factor',
        error,
      },
      status,
    );
  }

  /**
   * A first factor added with the password alone (a policy's first-logon enrolment) is judged on what
   * the user holds now, not when the password was typed: a tab left open must not add an app or a
   * passkey beside one set up since (or a second one after the first).
   */
  async function needNow(s: MfaState): Promise<Requirement> {
    const client = await clientOf(deps, s.details);
    return loginRequirement(db, s.settings, deps.config.mode, s.user, client.mfaRequired, s.details.params);
  }

  /** Enrolment is open when a policy asks for it, or after a code was passed in this sign-in. */
  const mayEnrol = (s: MfaState) =>
    s.need.enrolAuthenticator === 'required' || s.need.enrolAuthenticator === 'offered' ||
    ((s.need.enrolAuthenticator === 'after-factor' || s.need.enrolAuthenticator === 'after-code') && Boolean(s.progress.factorPassed));

  const step = (handler: (ctx: Context, s: MfaState) => Promise<void>) => async (ctx: Context) => {
    const s = await load(ctx);
    if (s) await handler(ctx, s);
  };

  router.get('/interaction/:uid/mfa', step(async (ctx, s) => {
    if (s.need.enrolAuthenticator === 'required' || (s.progress.factorPassed && mayEnrol(s))) return showEnrolment(ctx, s);
    // An authenticator app or a passkey as the only way: nothing to choose and nothing to send, so it is asked for at once.
    const only = s.need.usableFactors.length === 1 ? s.need.usableFactors[0]! : null;
    if ((only === 'totp' || only === 'webauthn') && s.need.enrolAuthenticator === 'no') {
      return showCode(ctx, deps, host, s, only);
    }
    // A passkey is the only way forward (a policy allows nothing else and the user has none yet): straight to adding one.
    if (passkeyOpen(s) && s.need.enrolAuthenticator === 'no' && s.need.usableFactors.length === 0) return showPasskeyEnrolment(ctx, s);
    if (s.need.noUsableMethod) {
      await audit.record({ type: 'mfa.no_method', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { allowed: s.need.allowedFactors } });
    }
    showChoice(ctx, s);
  }));

  addChallengeRoutes(router, deps, {
    ...host,
    // Choosing a factor is closed while the policy demands an app the user has yet to enrol.
    load: async (ctx) => {
      const s = await load(ctx);
      return s && s.need.enrolAuthenticator === 'required' ? { ...s, usable: [] as FactorId[] } : s;
    },
  });

  router.post('/interaction/:uid/mfa/enrol-after', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (s.need.enrolAuthenticator !== 'after-factor') return showChoice(ctx, s, null, 400);
    await saveProgress(db, { ...s.progress, enrolAfterFactor: true });
    seeOther(ctx, challengeBase(host, s.details.uid));
  }));

  router.get('/interaction/:uid/mfa/enrol', step(async (ctx, s) => {
    if (!mayEnrol(s)) return seeOther(ctx, challengeBase(host, s.details.uid));
    await showEnrolment(ctx, s);
  }));

  router.post('/interaction/:uid/mfa/enrol', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    // A password alone must not add authenticators to an account.
    if (!mayEnrol(s)) return showChoice(ctx, s, null, 400);
    if ((s.need.enrolAuthenticator === 'required' || s.need.enrolAuthenticator === 'offered') && (await needNow(s)).enrolAuthenticator !== s.need.enrolAuthenticator) {
      return showChoice(ctx, s, 'Your account has a second factor now: use it to sign in.', 400);
    }
    const code = codeField.safeParse(form.code ?? '');
    const enrolment = await beginEnrolment(db, box, s.user, s.settings.mfa.appName, s.details.uid);
    if (!code.success || !isWellFormedTotp(code.data)) return showEnrolment(ctx, s, 'Enter the 6-digit code your app shows.', 400);
    const id = enrolment.authenticatorId;
    if (!(await confirmEnrolment(db, box, s.settings.mfa.totp, s.user.id, id, code.data))) {
      await audit.record({ type: 'mfa.failure', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: 'totp', enrolment: true } });
      return showEnrolment(ctx, s, 'That code is not right. Check that your app shows the account you just added, and try the next code.', 401);
    }
    await audit.record({ type: 'mfa.enrolled', subject: s.user.id, clientId: String(s.details.params.client_id), ...requestMeta(ctx), details: { factor: 'totp', authenticator: id } });
    await host.passed(ctx, s, { factor: 'totp', at: now() }, null);
  }));

  // A first passkey at sign-in, where a policy demands MFA and the user has nothing yet (as an app may be set up there).
  const passkeyBinding = (s: MfaState) => `sign-in:${s.details.uid}`;
  async function showPasskeyEnrolment(ctx: Context, s: MfaState, error: string | null = null, status = 200, name = ''): Promise<void> {
    const options = await registrationOptions(db, relyingPartyOf(deps.issuer, s.settings.mfa.appName), s.user, passkeyBinding(s));
    renderPage(ctx, 'flows/mfa-passkey-enrol', { title: 'Add a passkey', uid: s.details.uid, options: JSON.stringify(options), app: s.need.enrolAuthenticator === 'offered', others: s.need.enrolAuthenticator === 'offered' || s.usable.length > 0, error, name: name.slice(0, 64) }, status);
    ctx.set('Content-Security-Policy', PASSKEY_CSP);
  }
  router.get('/interaction/:uid/mfa/passkey', step(async (ctx, s) => {
    if (!passkeyOpen(s) || !(await needNow(s)).enrolPasskey) return seeOther(ctx, challengeBase(host, s.details.uid));
    await showPasskeyEnrolment(ctx, s);
  }));
  router.post('/interaction/:uid/mfa/passkey', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    // A password alone adds a passkey only where the policy's first-logon enrolment allows it, and only while the user has nothing.
    if (!passkeyOpen(s)) return showChoice(ctx, s, null, 400);
    if (!(await needNow(s)).enrolPasskey) return showChoice(ctx, s, 'Your account has a second factor now: use it to sign in.', 400);
    let passkey;
    try {
      passkey = await addPasskey(db, relyingPartyOf(deps.issuer, s.settings.mfa.appName), s.user, passkeyBinding(s), form.response ?? '', form.name ?? '');
    } catch (error) {
      if (!(error instanceof PasskeyError)) throw error;
      const message = error.message.charAt(0).toUpperCase() + error.message.slice(1);
      return showPasskeyEnrolment(ctx, s, form.response ? `${message}.` : 'Your browser did not create a passkey. Adding one needs JavaScript: turn it on and try again.', 400, form.name ?? '');
    }
    const meta = requestMeta(ctx);
    await audit.record({ type: 'mfa.enrolled', subject: s.user.id, clientId: String(s.details.params.client_id), ...meta, details: { factor: 'webauthn', passkey: passkey.name, synced: passkey.synced } });
    void tellOwner(deps.delivery, s.settings, deps.log, s.user, passkeyAddedNotice(s.settings.mfa.appName, s.user.username, passkey.name));
    await host.passed(ctx, s, { factor: 'webauthn', at: now(), amr: passkey.amr }, null);
  }));

  // Not now: the code already passed completes the sign-in without an app.
  router.post('/interaction/:uid/mfa/enrol/skip', step(async (ctx, s) => {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    if (!s.progress.factorPassed || s.need.enrolAuthenticator !== 'after-factor') return showChoice(ctx, s, null, 400);
    await completeLogin(ctx, deps, s.details, s.user, s.progress);
  }));

  return router;
}
