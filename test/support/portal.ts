import assert from 'node:assert/strict';
import { generate } from 'otplib';
import type { TestTessera } from './tessera.js';
import { Agent, formFor, type AgentResponse } from './agent.js';
import type { ServiceContext } from '../../src/admin/service.js';

/**
 * How a test user passes the second factor when Tessera asks: a code from the dev outbox, from
 * their app's secret, or typed as given (a hardware token's code with its PIN).
 */
export type Answer = { factor: 'email' | 'sms' } | { factor: 'totp'; secret: string } | { factor: 'totp'; typed: () => Promise<string> | string };

/** A page's words, without tags. */
export const pageText = (page: AgentResponse) => page.body.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');

/** Drives the account portal and Tessera's sign-in pages in a test, as a browser without JavaScript would. */
export function portalDriver(tessera: TestTessera, admin: ServiceContext) {
  const url = (path: string) => `${tessera.issuer}${path}`;

  /** The newest code sent to `to`; a code queued for delivery may land a moment after the page answered. */
  async function lastCode(to: string): Promise<string> {
    for (let waited = 0; ; waited += 50) {
      const row = await tessera.db.selectFrom('dev_outbox').select('body').where('recipient', '=', to).orderBy('id', 'desc').executeTakeFirst();
      if (row) return /\b(\d{6})\b/.exec(row.body)![1]!;
      if (waited >= 5000) throw new Error(`no code was sent to ${to}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Drives Tessera's pages (password, factor choice, code) from `start` until the browser is back on
   * a portal page; returns that page.
   */
  async function through(agent: Agent, start: AgentResponse, username: string, answer?: Answer, password = `${username}-password-1`): Promise<AgentResponse> {
    let page = await agent.follow(start);
    for (let step = 0; step < 8; step++) {
      const path = new URL(page.url).pathname;
      if (!path.startsWith('/interaction/')) return page;
      assert.equal(page.status, 200, `${path}: ${pageText(page).slice(0, 300)}`);
      if (page.body.includes('name="password"')) {
        const form = formFor(page, '/login');
        page = await agent.follow(await agent.post(form.action, { ...form.fields, username, password }));
      } else if (page.body.includes('name="code"')) {
        const form = formFor(page, '/code');
        const user = await tessera.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirstOrThrow();
        const code = answer!.factor !== 'totp'
          ? await lastCode(answer!.factor === 'email' ? user.email! : user.phone!)
          : 'secret' in answer! ? await generate({ secret: answer.secret }) : await answer!.typed();
        page = await agent.follow(await agent.post(form.action, { ...form.fields, code }));
      } else if (page.body.includes('name="factor" value=')) {
        assert.ok(answer, `a second factor was asked of ${username}`);
        const form = formFor(page, '/mfa');
        page = await agent.follow(await agent.post(form.action, { ...form.fields, factor: answer.factor }));
      } else {
        throw new Error(`no known step at ${path}: ${pageText(page).slice(0, 300)}`);
      }
    }
    throw new Error('did not come back to the portal');
  }

  async function signIn(username: string, answer?: Answer, path = '/account', password?: string): Promise<{ agent: Agent; page: AgentResponse }> {
    const agent = new Agent();
    const page = await through(agent, await agent.get(url(path)), username, answer, password);
    return { agent, page };
  }

  const events = async (type: string) => {
    // The CLI's events and the server's (some, like token.issued, are written shortly after the request).
    await Promise.all([admin.audit.flush(), tessera.audit.flush()]);
    return tessera.db.selectFrom('audit_events').selectAll().where('type', '=', type).orderBy('id').execute();
  };

  return { url, lastCode, through, signIn, events };
}

export type PortalDriver = ReturnType<typeof portalDriver>;
