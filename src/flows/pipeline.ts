import Router from '@koa/router';
import type { Context } from 'koa';
import { HttpError } from '../http/errors.js';
import { assertCsrf } from '../http/csrf.js';
import { readForm } from '../http/body.js';
import { findUserById } from '../directory/users.js';
import { loadSettings } from '../settings/settings.js';
import { loginRequirement } from '../policy/policies.js';
import { clientOf, finishInteraction, loadInteraction, SIGN_IN_CANCELLED, type FlowDeps, type InteractionDetails } from './context.js';
import { showLogin, submitLogin } from './login.js';
import { consentStep } from './consent.js';
import { mfaRoutes } from './mfa.js';
import { emailSignInRoutes } from './email-sign-in.js';
import { approvalRoutes } from './approval.js';
import { sharedAccountRoutes } from './shared-account.js';
import { completeLogin } from './complete-login.js';
import { loadProgress, saveProgress, type Progress } from './progress.js';
import { seeOther } from '../http/redirect.js';

/** What each step sees of the interaction when deciding whether it applies. */
interface Visit {
  ctx: Context;
  details: InteractionDetails;
  /** The login's progress while it is at its factors. */
  progress: Progress | null;
  /** The interaction's progress at whatever step it is. */
  stored: Progress | null;
}

/** One step of an interaction: whether it applies now, and how it starts (a page, or a redirect to its pages). */
interface Step {
  name: string;
  applies(visit: Visit): boolean;
  enter(visit: Visit): Promise<void>;
}

// Login reasons a signed-in session answers with a second factor alone; any other reason
// (prompt=login, max_age, no session, another account) is a new authentication from the password on.
const STEP_UP_REASONS = new Set(['mfa_required', 'essential_acr', 'essential_acrs', 'approval_required']);
// Of those, the ones a second factor answers; approval_required alone goes straight to the approval step.
const FACTOR_REASONS = new Set(['mfa_required', 'essential_acr', 'essential_acrs']);

/** The session is signed in and only lacks a (fresh enough) second factor. */
function isStepUp(details: InteractionDetails): boolean {
  return Boolean(details.session?.accountId) && details.prompt.reasons.length > 0 && details.prompt.reasons.every((r) => STEP_UP_REASONS.has(r));
}

/**
 * The interaction pipeline. oidc-provider says which prompt is unmet (login, then consent) and
 * why; these are the steps that answer, in order, each deciding whether it applies. The first that
 * applies runs; a step that finishes hands its result back to the provider, which decides what
 * comes next. New steps (approval, shared accounts, …) go into this list.
 */
export function interactionRoutes(deps: FlowDeps): Router[] {
  const { db, provider, config, box } = deps;
  const consent = consentStep(deps);

  const steps: Step[] = [
    {
      // Waiting for the manager: back to the waiting page (a reload, the back button).
      name: 'approval',
      applies: ({ details, stored }) => details.prompt.name === 'login' && stored?.step === 'approval',
      enter: async ({ ctx, details }) => seeOther(ctx, `/interaction/${details.uid}/approval`),
    },
    {
      name: 'password',
      applies: ({ details, progress }) => details.prompt.name === 'login' && !progress && !isStepUp(details),
      enter: ({ ctx, details }) => showLogin(ctx, deps, details),
    },
    {
      // A sign-in as a shared account: the reserving member's own code, on the shared account's pages.
      name: 'shared-account',
      applies: ({ details, progress }) => details.prompt.name === 'login' && Boolean(progress?.reservationId),
      enter: async ({ ctx, details }) => seeOther(ctx, `/interaction/${details.uid}/shared`),
    },
    {
      name: 'second-factor',
      applies: ({ details }) => details.prompt.name === 'login',
      async enter({ ctx, details, progress }) {
        if (!progress) {
          // A step-up: the requirement is worked out now, once, and kept with the interaction's progress.
          const user = await findUserById(db, details.session!.accountId);
          if (!user || user.status !== 'active') throw new HttpError(403, 'This account cannot sign in. Contact your administrator.', 'Sign-in refused');
          const client = await clientOf(deps, details);
          const requirement = await loginRequirement(db, await loadSettings(db, box), config.mode, user, client.mfaRequired, details.params);
          const fresh: Progress = { uid: details.uid, accountId: user.id, step: 'login', methods: [], requirement, challengeId: null };
          // Signed in with fresh enough factors, only the manager's approval is missing (another application, say).
          if (!details.prompt.reasons.some((r) => FACTOR_REASONS.has(r))) return completeLogin(ctx, deps, details, user, fresh);
          if (!requirement.mfaRequired) return showLogin(ctx, deps, details);
          await saveProgress(db, fresh);
        }
        seeOther(ctx, `/interaction/${details.uid}/mfa`);
      },
    },
    {
      name: 'consent',
      applies: ({ details }) => details.prompt.name === 'consent',
      enter: ({ ctx, details }) => consent.enter(ctx, details),
    },
  ];

  const router = new Router({ prefix: '/interaction/:uid' });
  router.get('/', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const progress = details.prompt.name === 'login' ? await loadProgress(db, details.uid) : null;
    const visit: Visit = { ctx, details, progress: progress?.step === 'login' ? progress : null, stored: progress };
    const step = steps.find((s) => s.applies(visit));
    if (!step) throw new HttpError(400, 'This sign-in step is not supported.', 'Request refused');
    await step.enter(visit);
  });
  router.post('/login', submitLogin(deps));
  router.post('/abort', async (ctx: Context) => {
    const details = await loadInteraction(ctx, provider);
    const form = await readForm(ctx);
    assertCsrf(ctx, form.csrf);
    await finishInteraction(ctx, details, { error: 'access_denied', error_description: SIGN_IN_CANCELLED }, false);
  });
  return [emailSignInRoutes(deps), sharedAccountRoutes(deps), router, mfaRoutes(deps), approvalRoutes(deps), consent.routes];
}
