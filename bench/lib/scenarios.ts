import { createHash, randomBytes } from 'node:crypto';
import { generate } from 'otplib';
import { Browserless, basic, hiddenField, postForm, type Reply } from './http.js';
import type { Recorder } from './stats.js';
import { API, APIS, BENCH_PASSWORD, CLIENT, TOTP_SECRET, type BenchApi } from './fixtures.js';
import type { CodeMailbox } from './mailbox.js';

export class FlowError extends Error {}

function expect(reply: Reply, status: number, step: string): Reply {
  if (reply.status !== status) throw new FlowError(`${step}: expected ${status}, got ${reply.status}: ${reply.body.slice(0, 160)}`);
  return reply;
}

/**
 * Hands out users with a TOTP time step their authenticator has not used yet (a step is accepted
 * once per authenticator), so logins never trip replay protection: the current step, or the next
 * one, which the default drift tolerance (one step ahead) also accepts.
 */
export class UserPool {
  private next = 0;
  private readonly lastStep: number[];
  constructor(readonly usernames: string[]) {
    this.lastStep = usernames.map(() => -1);
  }

  take(): { username: string; step: number } {
    const current = Math.floor(Date.now() / 30_000);
    for (let tries = 0; tries < this.usernames.length; tries++) {
      const i = this.next;
      this.next = (this.next + 1) % this.usernames.length;
      const step = Math.max(current, this.lastStep[i]! + 1);
      if (step <= current + 1) {
        this.lastStep[i] = step;
        return { username: this.usernames[i]!, step };
      }
    }
    throw new FlowError('every bench user has logged in during this 30-second step: seed more users (--users)');
  }
}

const codes = new Map<number, string>();
async function totpFor(step: number): Promise<string> {
  let code = codes.get(step);
  if (!code) {
    code = await generate({ secret: TOTP_SECRET, epoch: step * 30 });
    codes.set(step, code);
  }
  return code;
}

export interface LoginResult {
  accessToken: string;
  refreshToken: string;
}

/** Hands out email-code users in turn (a code goes to each address; one login per user at a time). */
export class EmailUserPool {
  private next = 0;
  constructor(readonly usernames: string[]) {}
  take(): string {
    const u = this.usernames[this.next]!;
    this.next = (this.next + 1) % this.usernames.length;
    return u;
  }
}

/** How a login passes its second factor: an authenticator app, or a code from the local mailbox. */
export type SecondFactor = { kind: 'totp'; users: UserPool } | { kind: 'email'; users: EmailUserPool; mailbox: CodeMailbox; emailOf: (username: string) => string };

/**
 * The complete flow: authorize → login page → password → second factor → consent → code → token → userinfo.
 * With TOTP the code page comes at once; with email the user picks email, Tessera sends the code, and
 * the mailbox hands it over. The login also asks for the bench API, so the refresh token can later be
 * exchanged for its tokens.
 */
export async function mfaLogin(base: string, factor: SecondFactor, rec: Recorder): Promise<LoginResult> {
  const agent = new Browserless();
  const taken = factor.kind === 'totp' ? factor.users.take() : { username: factor.users.take(), step: 0 };
  const { username } = taken;
  const verifier = randomBytes(32).toString('base64url');
  const auth = new URL(`${base}/auth`);
  auth.search = new URLSearchParams({
    client_id: CLIENT.id, response_type: 'code', redirect_uri: CLIENT.redirectUri, scope: `openid email offline_access ${API.scope}`, resource: API.identifier, prompt: 'consent',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', state: 'bench-state',
  }).toString();

  const toLogin = expect(await rec.time('authorize', () => agent.send(auth.href)), 303, 'authorize');
  const loginPage = expect(await rec.time('login_page', () => agent.send(toLogin.location!)), 200, 'login page');
  const csrf = hiddenField(loginPage.body, 'csrf');
  const toMfa = expect(await rec.time('password', () => agent.send(`${toLogin.location}/login`, { form: { csrf, username, password: BENCH_PASSWORD } })), 303, 'password');
  const mfaPage = expect(await rec.time('mfa_page', () => agent.send(toMfa.location!)), 200, 'code page');
  let toResume: Reply;
  if (factor.kind === 'totp') {
    const code = await totpFor(taken.step);
    toResume = expect(await rec.time('totp', () => agent.send(`${toLogin.location}/mfa/code`, { form: { csrf: hiddenField(mfaPage.body, 'csrf'), factor: 'totp', code } })), 303, 'totp');
  } else {
    const toCode = expect(await rec.time('send_code', () => agent.send(`${toLogin.location}/mfa`, { form: { csrf: hiddenField(mfaPage.body, 'csrf'), factor: 'email' } })), 303, 'send code');
    const codePage = expect(await rec.time('code_page', () => agent.send(toCode.location!)), 200, 'code page');
    const code = await factor.mailbox.codeFor(factor.emailOf(username));
    toResume = expect(await rec.time('email_code', () => agent.send(`${toLogin.location}/mfa/code`, { form: { csrf: hiddenField(codePage.body, 'csrf'), factor: 'email', code } })), 303, 'email code');
  }
  const toConsent = expect(await rec.time('resume', () => agent.send(toResume.location!)), 303, 'resume');
  const consentPage = expect(await rec.time('consent_page', () => agent.send(toConsent.location!)), 200, 'consent page');
  const toResume2 = expect(await rec.time('consent', () => agent.send(`${toConsent.location}/consent`, { form: { csrf: hiddenField(consentPage.body, 'csrf'), decision: 'allow' } })), 303, 'consent');
  const callback = expect(await rec.time('consent', () => agent.send(toResume2.location!)), 303, 'redirect with code');
  const authCode = new URL(callback.location!).searchParams.get('code');
  if (!authCode) throw new FlowError(`no code: ${callback.location}`);
  const tokens = await rec.time('token', () =>
    postForm(`${base}/token`, { grant_type: 'authorization_code', code: authCode, redirect_uri: CLIENT.redirectUri, code_verifier: verifier }, { authorization: basic(CLIENT.id, CLIENT.secret) }),
  );
  if (tokens.status !== 200) throw new FlowError(`token: ${tokens.status} ${JSON.stringify(tokens.json)}`);
  const accessToken = String(tokens.json.access_token);
  const info = await rec.time('userinfo', () => agent.send(`${base}/me`, { headers: { authorization: `Bearer ${accessToken}` } }));
  expect(info, 200, 'userinfo');
  return { accessToken, refreshToken: String(tokens.json.refresh_token) };
}

/** One client_credentials grant for `api`; returns the access token (a JWT or an opaque one, as the API says). */
export async function clientCredentials(base: string, rec: Recorder, api: BenchApi = APIS.es256, step = 'client_credentials'): Promise<string> {
  const r = await rec.time(step, () => postForm(`${base}/token`, { grant_type: 'client_credentials', resource: api.identifier, scope: api.scope }, { authorization: basic(CLIENT.id, CLIENT.secret) }));
  if (r.status !== 200) throw new FlowError(`${step}: ${r.status} ${JSON.stringify(r.json)}`);
  const token = String(r.json.access_token);
  const isJwt = token.split('.').length === 3;
  // A token of the other format would mean the run measured something else.
  if (isJwt !== (api.format === 'jwt')) throw new FlowError(`${step}: expected a ${api.format} access token`);
  if (api.alg && JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).alg !== api.alg) throw new FlowError(`${step}: the token is not signed ${api.alg}`);
  return token;
}

/** The API's tokens must be JWTs: an opaque one would mean the run measured something else. */
function expectJwt(r: { json: Record<string, unknown> }, step: string): void {
  if (String(r.json.access_token).split('.').length !== 3) throw new FlowError(`${step}: the access token is not a JWT`);
}

/** One refresh for an API token; returns the rotated refresh token, which the virtual user presents next. */
export async function refresh(base: string, token: string, rec: Recorder): Promise<string> {
  const r = await rec.time('refresh_token', () => postForm(`${base}/token`, { grant_type: 'refresh_token', refresh_token: token, resource: API.identifier }, { authorization: basic(CLIENT.id, CLIENT.secret) }));
  if (r.status !== 200) throw new FlowError(`refresh_token: ${r.status} ${JSON.stringify(r.json)}`);
  expectJwt(r, 'refresh_token');
  return String(r.json.refresh_token);
}

/** Introspects an access token as a resource server would, saying what kind of token it is. */
export async function introspect(base: string, token: string, rec: Recorder): Promise<void> {
  const r = await rec.time('introspection', () => postForm(`${base}/token/introspection`, { token, token_type_hint: 'access_token' }, { authorization: basic(CLIENT.id, CLIENT.secret) }));
  if (r.status !== 200 || r.json.active !== true) throw new FlowError(`introspection: ${r.status} ${JSON.stringify(r.json)}`);
}
