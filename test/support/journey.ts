import { Agent, formFor, type AgentResponse } from './agent.js';

export interface SignInOptions {
  username: string;
  password: string;
  consent?: 'allow' | 'deny';
  /** The client's redirect URI: following stops there and its URL is returned. */
  redirectUri: string;
  /** Sees each page on the way (to check what the user was shown). */
  onPage?: (body: string) => void;
}

/** Drives authorize → login page → password → consent → redirect back; returns the callback URL. */
export async function signIn(agent: Agent, authorizationUrl: string, options: SignInOptions): Promise<string> {
  const atCallback = (url: string) => url.startsWith(options.redirectUri);
  let page: AgentResponse = await agent.follow(await agent.get(authorizationUrl), atCallback);
  for (let step = 0; step < 6; step++) {
    if (page.location && atCallback(page.location)) return page.location;
    const path = new URL(page.url).pathname;
    if (page.status !== 200) throw new Error(`unexpected ${page.status} at ${path}: ${page.body.slice(0, 400)}`);
    options.onPage?.(page.body);
    if (page.body.includes('/login"')) {
      const form = formFor(page, '/login');
      page = await agent.follow(await agent.post(form.action, { ...form.fields, username: options.username, password: options.password }), atCallback);
    } else if (page.body.includes('/consent"')) {
      const form = formFor(page, '/consent');
      page = await agent.follow(await agent.post(form.action, { ...form.fields, decision: options.consent ?? 'allow' }), atCallback);
    } else {
      throw new Error(`no known step at ${path}: ${page.body.slice(0, 400)}`);
    }
  }
  throw new Error('sign-in did not reach the redirect URI');
}

/** An authorization request for the demo client (public, PKCE S256) — enough to reach the login page. */
export async function demoAuthorizationUrl(issuer: string, scope = 'openid profile'): Promise<string> {
  const verifier = 'v'.repeat(43);
  const { createHash } = await import('node:crypto');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const url = new URL(`${issuer}/auth`);
  url.search = new URLSearchParams({
    client_id: 'tessera-demo', response_type: 'code', scope, redirect_uri: `${issuer}/demo/callback`,
    code_challenge: challenge, code_challenge_method: 'S256', state: 'state-1234', nonce: 'nonce-1234',
  }).toString();
  return url.href;
}

/** Opens the login page of a new interaction in this agent. */
export async function openLoginPage(agent: Agent, issuer: string): Promise<AgentResponse> {
  const page = await agent.follow(await agent.get(await demoAuthorizationUrl(issuer)));
  if (!page.body.includes('name="password"')) throw new Error(`expected the login page, got ${page.status}: ${page.body.slice(0, 300)}`);
  return page;
}

/** Exchanges a demo-app callback's code at the token endpoint (public client, the fixed PKCE verifier) and returns the ID token's claims. */
export async function exchangeDemoCode(issuer: string, callbackUrl: string): Promise<Record<string, unknown>> {
  const code = new URL(callbackUrl).searchParams.get('code');
  if (!code) throw new Error(`no code in ${callbackUrl}`);
  const response = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: `${issuer}/demo/callback`, client_id: 'tessera-demo', code_verifier: 'v'.repeat(43) }),
  });
  const tokens = (await response.json()) as { id_token?: string; error?: string };
  if (!tokens.id_token) throw new Error(`token endpoint: ${JSON.stringify(tokens)}`);
  return JSON.parse(Buffer.from(tokens.id_token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Opens a login for the demo app and submits the password; returns the page that follows (the MFA step when one is needed). */
export async function passwordStep(agent: Agent, issuer: string, username: string, password: string, authorizationUrl?: string): Promise<AgentResponse> {
  const page = await agent.follow(await agent.get(authorizationUrl ?? (await demoAuthorizationUrl(issuer))));
  const form = formFor(page, '/login');
  return agent.follow(await agent.post(form.action, { ...form.fields, username, password }), (u) => u.includes('/demo/callback'));
}
