import { Agent, formFor, type AgentResponse } from './agent.js';

export interface SignInOptions {
  username: string;
  password: string;
  consent?: 'allow' | 'deny';
  /** The client's redirect URI: following stops there and its URL is returned. */
  redirectUri: string;
}

/** Drives authorize → login page → password → consent → redirect back; returns the callback URL. */
export async function signIn(agent: Agent, authorizationUrl: string, options: SignInOptions): Promise<string> {
  const atCallback = (url: string) => url.startsWith(options.redirectUri);
  let page: AgentResponse = await agent.follow(await agent.get(authorizationUrl), atCallback);
  for (let step = 0; step < 6; step++) {
    if (page.location && atCallback(page.location)) return page.location;
    const path = new URL(page.url).pathname;
    if (page.status !== 200) throw new Error(`unexpected ${page.status} at ${path}: ${page.body.slice(0, 400)}`);
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
