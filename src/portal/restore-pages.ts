import { randomInt, randomUUID } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { RestoreLoss, User } from '../db/schema.js';
import { DomainError } from '../domain-error.js';
import { readFormFields } from '../http/body.js';
import { assertCsrf } from '../http/csrf.js';
import { HttpError } from '../http/errors.js';
import { seeOther } from '../http/redirect.js';
import { addressKey, take } from '../rate-limits.js';
import { loadSettings } from '../settings/settings.js';
import { admitAttempt, EMAIL_PATTERN, findUserByUsername, passedAttempt, USERNAME_PATTERN } from '../directory/users.js';
import { hashPassword, passwordProblem, verifyPassword } from '../directory/passwords.js';
import { maskEmail, queueCode, type CodeMessage } from '../factors/index.js';
import { verifyChallenge } from '../factors/challenges.js';
import { verifyAuthenticatorCode } from '../factors/authenticators.js';
import type { Redisplay } from '../web/own-app.js';
import { text } from '../web/form.js';
import type { PortalDeps } from './app.js';
import { ALIAS_PATTERN } from './portals.js';
import { fileRestoreRequest, notifyAdministrators, provableFactors, tellAccountOwner, RESTORE_LOSSES, RestoreError, type RestoreProofs } from './restore.js';

/** Where a restore request stands while the person fills it in, sealed in a cookie of its own. */
const draftSchema = z.object({
  /** Files one request at most: a replayed draft files nothing. */
  id: z.uuid(),
  username: z.string(),
  userId: z.string().nullable(),
  portal: z.string().nullable(),
  lost: z.array(z.enum(RESTORE_LOSSES)),
  proofs: z.object({ token: z.boolean().optional(), password: z.boolean().optional(), email: z.boolean().optional() }),
  emailChallenge: z.string().nullable(),
  newPasswordHash: z.string().nullable(),
  newEmail: z.string().nullable(),
  newEmailChallenge: z.string().nullable(),
  newEmailVerified: z.boolean(),
  /** For a name without an account: the code sent to the new address, which opens nothing but reads alike. */
  decoyCode: z.string().nullable(),
  decoyTries: z.number().int().min(0).default(0),
  lastSentAt: z.number().nullable(),
  expires: z.number(),
});
type Draft = z.infer<typeof draftSchema>;

const COOKIE = 'tessera.restore';
const PURPOSE = 'restore-draft';
const DRAFT_MINUTES = 20;
// Someone with no account behind the name: the same pages, nothing filed.
const NO_ACCOUNT = '00000000-0000-0000-0000-000000000000';
/** Codes per hour for one name, and to one address, whether the name has an account or not. */
const CODES_PER_HOUR = 3;
const WRONG_CODE = 'the code is wrong or no longer valid: check it, or ask for a new one';

type Show = (ctx: Context, view: string, title: string, data?: Record<string, unknown>, status?: number) => void;

/**
 * "Restore access": someone who lost a token, their password or their email says what they lost,
 * proves who they are with what is left (password, a token's code, a code to the email on record),
 * may give a new password and a new (verified) email, and files a request an administrator
 * approves or deletes. The pages answer alike whether the name has an account or not.
 */
export function restoreRoutes(deps: PortalDeps, show: Show): Router {
  const { db, box, config, audit } = deps;
  const router = new Router({ prefix: '/account/restore' });
  const secure = deps.issuer.startsWith('https://');

  function readDraft(ctx: Context): Draft | null {
    const sealed = ctx.cookies.get(COOKIE);
    if (!sealed || sealed.length > 8192) return null;
    try {
      const draft = draftSchema.parse(JSON.parse(box.open(sealed, PURPOSE)));
      return draft.expires > Date.now() ? draft : null;
    } catch {
      return null;
    }
  }
  function writeDraft(ctx: Context, draft: Draft | null): void {
    ctx.cookies.set(COOKIE, draft ? box.seal(JSON.stringify(draft), PURPOSE) : null, {
      httpOnly: true, sameSite: 'lax', secure, path: '/account/restore', overwrite: true, ...(draft ? { maxAge: DRAFT_MINUTES * 60 * 1000 } : {}),
    });
  }
  function requireDraft(ctx: Context): Draft {
    const draft = readDraft(ctx);
    if (!draft) throw new HttpError(400, `This request was not started here, or more than ${DRAFT_MINUTES} minutes ago. Start again at /account/restore.`, 'Start again');
    return draft;
  }
  async function userOf(draft: Draft): Promise<User | null> {
    if (!draft.userId) return null;
    return (await db.selectFrom('users').selectAll().where('id', '=', draft.userId).where('status', '=', 'active').executeTakeFirst()) ?? null;
  }
  const meta = (ctx: Context) => ({ ip: ctx.ip, userAgent: ctx.get('user-agent') || null });

  /** A form of the flow: CSRF, no NUL, and a refusal drawn on the page again. */
  function post(path: string, draw: (ctx: Context, redisplay: Redisplay) => Promise<void>, run: (ctx: Context, fields: URLSearchParams) => Promise<void>): void {
    router.post(path, async (ctx) => {
      const fields = await readFormFields(ctx);
      assertCsrf(ctx, fields.get('csrf'));
      if ([...fields.values()].some((v) => v.includes('\u0000'))) throw new HttpError(400, 'The form holds a character Tessera cannot store (NUL).', 'Not sent');
      try {
        await run(ctx, fields);
      } catch (error) {
        if (!(error instanceof DomainError)) throw error;
        await draw(ctx, { values: fields, problem: { message: error.message, ...(error.field ? { field: error.field } : {}) } });
        if (ctx.status === 200) ctx.status = 400;
      }
    });
  }

  const codeMessage = (what: string): CodeMessage => (values) => ({
    subject: `Your ${values.app} code to restore access`,
    text: `Your ${values.app} code is ${values.code}.\n\n${what} It expires in ${values.minutes} minutes. If you did not ask to restore access to your account, tell your administrator.`,
  });

  /**
   * Sends a code to restore access. The limits (a cooldown per draft, so many an hour per name and
   * per address) are the same whether the name has an account, and the page does not wait for the
   * delivery: the answer tells nothing. To an address on record a code goes only for an account;
   * to a new address it always goes (for a name without an account, a code that opens nothing).
   */
  async function sendRestoreCode(ctx: Context, draft: Draft, user: User | null, to: string, purpose: 'restore' | 'restore-new-email', what: string): Promise<string | null> {
    const settings = await loadSettings(db, box);
    const cooldown = settings.mfa.otp.resendCooldownSeconds * 1000;
    if (draft.lastSentAt && Date.now() - draft.lastSentAt < cooldown) {
      throw new RestoreError(`a code was sent moments ago: wait ${Math.max(1, Math.ceil((draft.lastSentAt + cooldown - Date.now()) / 1000))} seconds`, 'code');
    }
    const limits: [string, number][] = [
      [`restore-code-name:${draft.username.toLowerCase()}`, CODES_PER_HOUR],
      [`restore-code-to:${to.toLowerCase()}`, CODES_PER_HOUR],
      [`otp-ip:${addressKey(ctx.ip)}`, settings.mfa.otp.perIpPerHour],
    ];
    for (const [key, max] of limits) {
      if (!(await take(db, key, { max, seconds: 3600 })).allowed) throw new RestoreError('too many codes were sent: try again later', 'code');
    }
    draft.lastSentAt = Date.now();
    const words = codeMessage(what);
    if (!user) {
      // About the database work a real code costs, so the answer takes as long.
      await db.transaction().execute((tx) => take(tx, `restore-decoy:${randomUUID()}`, { max: 1, seconds: 60 }));
      if (purpose === 'restore') return null;
      draft.decoyCode = randomInt(0, 10 ** settings.mfa.otp.length).toString().padStart(settings.mfa.otp.length, '0');
      draft.decoyTries = 0;
      const message = words({ code: draft.decoyCode, minutes: String(Math.round(settings.mfa.otp.lifetimeSeconds / 60)), app: settings.mfa.appName });
      void deps.delivery.send('email', settings, { to, subject: message.subject ?? message.text, text: message.text }).catch((error: unknown) => {
        deps.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'a restore code could not be delivered');
      });
      return null;
    }
    const outcome = await queueCode({ db, box, otpKey: deps.otpKey, delivery: deps.delivery, settings, user, interactionUid: `restore:${draft.id}`, ip: ctx.ip, purpose }, 'email', to, words, deps.log);
    if (outcome.kind === 'refused') throw new RestoreError('too many codes were sent: try again later', 'code');
    return outcome.challengeId;
  }

  /** The code to the verified address on record: for a name without one, the same limits and nothing sent. */
  function sendCodeOnRecord(ctx: Context, draft: Draft, user: User | null): Promise<string | null> {
    const verified = user?.email && user.email_verified ? user : null;
    const to = verified?.email ?? `${draft.username.toLowerCase()}@restore.invalid`;
    return sendRestoreCode(ctx, draft, verified, to, 'restore', 'Type it on the page where you asked to restore access.');
  }

  // 1. Who, and what was lost.
  const startPage = async (ctx: Context, redisplay?: Redisplay) => {
    const portal = typeof ctx.query.portal === 'string' && ALIAS_PATTERN.test(ctx.query.portal) ? ctx.query.portal : redisplay?.values.get('portal') ?? '';
    show(ctx, 'account/restore-start', 'Restore access', { redisplay, portal, losses: RESTORE_LOSSES });
  };
  router.get('/', (ctx) => startPage(ctx));
  post('/', startPage, async (ctx, f) => {
    const username = text(f, 'username').normalize('NFC');
    const lost = f.getAll('lost').filter((l): l is RestoreLoss => (RESTORE_LOSSES as readonly string[]).includes(l));
    if (!username || !USERNAME_PATTERN.test(username)) throw new RestoreError('type your username', 'username');
    if (lost.length === 0) throw new RestoreError('say what you lost', 'lost');
    const window = { max: 10, seconds: 3600 };
    for (const key of [`restore-ip:${addressKey(ctx.ip)}`, `restore-name:${username.toLowerCase()}`]) {
      const allowance = await take(db, key, window);
      if (!allowance.allowed) throw new RestoreError('too many requests to restore access from here or for this name: try again in an hour', 'username');
    }
    const found = await findUserByUsername(db, username);
    const user = found && found.status === 'active' && found.source === 'local' ? found : null;
    const portal = ALIAS_PATTERN.test(text(f, 'portal')) ? text(f, 'portal') : null;
    const draft: Draft = {
      id: randomUUID(), username, userId: user?.id ?? null, portal, lost: [...new Set(lost)], proofs: {}, emailChallenge: null,
      newPasswordHash: null, newEmail: null, newEmailChallenge: null, newEmailVerified: false, decoyCode: null, decoyTries: 0, lastSentAt: null, expires: Date.now() + DRAFT_MINUTES * 60 * 1000,
    };
    if (!draft.lost.includes('email')) {
      draft.emailChallenge = await sendCodeOnRecord(ctx, draft, user).catch((error: unknown) => {
        if (error instanceof RestoreError) return null;
        throw error;
      });
    }
    writeDraft(ctx, draft);
    await audit.record({ type: 'restore.requested', actor: username, subject: user?.id ?? null, ...meta(ctx), details: { step: 'started', lost: draft.lost, known: Boolean(user) } });
    seeOther(ctx, '/account/restore/verify');
  });

  // 2. Proof with what is left: the password, a token's code, the code sent to the email on record.
  const verifyPage = async (ctx: Context, redisplay?: Redisplay) => {
    const draft = requireDraft(ctx);
    // The same page whether the name has an account, an email address or a token: it tells nothing.
    show(ctx, 'account/restore-verify', 'Restore access', { redisplay, draft });
  };
  router.get('/verify', (ctx) => verifyPage(ctx));
  post('/verify/send', verifyPage, async (ctx) => {
    const draft = requireDraft(ctx);
    const user = await userOf(draft);
    if (draft.lost.includes('email')) throw new RestoreError('you said you lost access to your email', 'code');
    try {
      draft.emailChallenge = await sendCodeOnRecord(ctx, draft, user);
    } finally {
      writeDraft(ctx, draft);
    }
    seeOther(ctx, '/account/restore/verify');
  });
  post('/verify', verifyPage, async (ctx, f) => {
    const draft = requireDraft(ctx);
    const user = await userOf(draft);
    const password = f.get('password') ?? '';
    const tokenCode = text(f, 'token').replace(/[\s-]/g, '');
    const emailCode = text(f, 'code').replace(/[\s-]/g, '');
    const kept = (what: RestoreLoss) => !draft.lost.includes(what);
    // Every answer is admitted and counted toward the account's lockout before it is checked, as at sign-in.
    const guess = async (field: string, check: (u: User) => Promise<boolean>): Promise<boolean> => {
      // A locked account answers as a wrong answer does, like the sign-in page: the lock tells nothing.
      const admission = await admitAttempt(db, user?.id ?? NO_ACCOUNT, config.lockout);
      if (!user || !admission.admitted) {
        // The work a real check costs, so a wrong answer takes as long with or without an account.
        if (field === 'password') await verifyPassword(null, 'restore-decoy');
        else await verifyChallenge(db, deps.otpKey, randomUUID(), NO_ACCOUNT, '000000');
        return false;
      }
      const right = await check(user);
      if (right) await passedAttempt(db, user.id, admission);
      return right;
    };
    const problems: { field: string; message: string }[] = [];
    if (kept('password') && password) {
      draft.proofs.password = await guess('password', (u) => verifyPassword(u.password_hash, password));
      if (!draft.proofs.password) problems.push({ field: 'password', message: 'the password is wrong' });
    }
    if (kept('token') && tokenCode) {
      const settings = await loadSettings(db, box);
      draft.proofs.token = /^\d{6,16}$/.test(tokenCode) && (await guess('token', (u) => verifyAuthenticatorCode(db, box, settings.mfa.totp, u.id, tokenCode)));
      if (!draft.proofs.token) problems.push({ field: 'token', message: 'the code is not right for your token' });
    }
    if (kept('email') && emailCode) {
      const challenge = draft.emailChallenge;
      draft.proofs.email = /^\d{4,10}$/.test(emailCode) && (await guess('code', async (u) => challenge !== null && (await verifyChallenge(db, deps.otpKey, challenge, u.id, emailCode)).ok));
      if (!draft.proofs.email) problems.push({ field: 'code', message: WRONG_CODE });
    }
    writeDraft(ctx, draft);
    if (problems.length) throw new RestoreError(problems[0]!.message, problems[0]!.field);
    seeOther(ctx, draft.lost.includes('password') || draft.lost.includes('email') ? '/account/restore/new' : '/account/restore/review');
  });

  // 3. New data for what was lost: a password, an email address (verified by a code sent to it).
  const newPage = async (ctx: Context, redisplay?: Redisplay) => {
    const draft = requireDraft(ctx);
    show(ctx, 'account/restore-new', 'Restore access', { redisplay, draft, newEmailMasked: draft.newEmail ? maskEmail(draft.newEmail) : null });
  };
  router.get('/new', (ctx) => newPage(ctx));
  post('/new', newPage, async (ctx, f) => {
    const draft = requireDraft(ctx);
    const user = await userOf(draft);
    if (draft.lost.includes('password')) {
      const password = f.get('password') ?? '';
      if (password) {
        const problem = passwordProblem(password);
        if (problem) throw new RestoreError(problem.replace(/\.$/, ''), 'password');
        if (password !== (f.get('confirm') ?? '')) throw new RestoreError('the two passwords differ', 'confirm');
        draft.newPasswordHash = await hashPassword(password);
      }
    }
    if (draft.lost.includes('email')) {
      const email = text(f, 'email');
      if (email && email !== draft.newEmail) {
        if (email.length > 254 || !EMAIL_PATTERN.test(email)) throw new RestoreError('that is not an email address', 'email');
        draft.newEmail = email;
        draft.newEmailVerified = false;
        draft.newEmailChallenge = await sendRestoreCode(ctx, draft, user, email, 'restore-new-email', 'Type it on the page where you gave this address to restore access.');
        writeDraft(ctx, draft);
        return seeOther(ctx, '/account/restore/new/confirm');
      }
    }
    writeDraft(ctx, draft);
    seeOther(ctx, '/account/restore/review');
  });
  const confirmPage = async (ctx: Context, redisplay?: Redisplay) => {
    const draft = requireDraft(ctx);
    if (!draft.newEmail) return seeOther(ctx, '/account/restore/new');
    show(ctx, 'account/restore-new-email', 'Restore access', { redisplay, masked: maskEmail(draft.newEmail) });
  };
  router.get('/new/confirm', (ctx) => confirmPage(ctx));
  post('/new/confirm', confirmPage, async (ctx, f) => {
    const draft = requireDraft(ctx);
    const user = await userOf(draft);
    const code = text(f, 'code').replace(/[\s-]/g, '');
    if (!/^\d{4,10}$/.test(code)) throw new RestoreError('type the code we sent to the new address', 'code');
    let right: boolean;
    if (user && draft.newEmailChallenge) {
      right = (await verifyChallenge(db, deps.otpKey, draft.newEmailChallenge, user.id, code)).ok;
    } else {
      await verifyChallenge(db, deps.otpKey, randomUUID(), NO_ACCOUNT, code); // the time a real check takes
      right = draft.decoyCode !== null && draft.decoyCode === code;
    }
    if (!right) {
      // A code that opens nothing dies after as many tries as a real one.
      if (!user && ++draft.decoyTries >= (await loadSettings(db, box)).mfa.otp.maxAttempts) draft.decoyCode = null;
      writeDraft(ctx, draft);
      throw new RestoreError(WRONG_CODE, 'code');
    }
    draft.newEmailVerified = true;
    writeDraft(ctx, draft);
    seeOther(ctx, '/account/restore/review');
  });

  // 4. What the administrator will see, then the request.
  const reviewPage = async (ctx: Context, redisplay?: Redisplay) => {
    const draft = requireDraft(ctx);
    show(ctx, 'account/restore-review', 'Restore access', { redisplay, draft, newEmail: draft.newEmail && draft.newEmailVerified ? draft.newEmail : null });
  };
  router.get('/review', (ctx) => reviewPage(ctx));
  post('/review', reviewPage, async (ctx) => {
    const draft = requireDraft(ctx);
    const user = await userOf(draft);
    writeDraft(ctx, null);
    if (user) {
      const has = await provableFactors(db, user);
      // Each authenticator the user has, whether proved here; lost ones count as not proved; ones they never had are left out
      // (said to be lost all the same, the list shows it: the administrator should ask why).
      const proofs: RestoreProofs = {};
      for (const what of RESTORE_LOSSES) if (has[what]) proofs[what] = !draft.lost.includes(what) && draft.proofs[what] === true;
      const id = await fileRestoreRequest(db, {
        user, draftId: draft.id, portal: draft.portal, lost: draft.lost, proofs,
        newPasswordHash: draft.newPasswordHash, newEmail: draft.newEmail && draft.newEmailVerified ? draft.newEmail : null, ...meta(ctx),
      });
      await audit.record({ type: 'restore.requested', actor: user.username, subject: user.id, ...meta(ctx), details: { step: 'filed', request: id, lost: draft.lost, proofs, duplicate: id === null } });
      if (id) {
        const settings = await loadSettings(db, box);
        await Promise.all([
          notifyAdministrators(db, deps.delivery, settings, deps.log, { username: user.username, lost: draft.lost }, `${deps.issuer}/admin/user-issues`),
          // The owner hears of it at the address on record, even one said to be lost: a request someone else made does not go unseen.
          tellAccountOwner(deps.delivery, settings, deps.log, user, draft.lost),
        ]);
      }
    }
    seeOther(ctx, `/account/restore/sent${draft.portal ? `?portal=${draft.portal}` : ''}`);
  });
  router.get('/sent', (ctx) => {
    const portal = typeof ctx.query.portal === 'string' && ALIAS_PATTERN.test(ctx.query.portal) ? ctx.query.portal : null;
    show(ctx, 'account/restore-sent', 'Request sent', { portal });
  });

  return router;
}
