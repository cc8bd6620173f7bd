import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import { renderToString } from './views.js';
import { strictCsp } from './security.js';

/**
 * oidc-provider answers some requests with a page that posts a form to itself by script: the
 * form_post response mode, and sign-out when there is no session to confirm. Tessera's policy
 * allows no script, so such a page would stay blank. This re-renders it as a Tessera page: the
 * same form with a visible Continue button (works without JavaScript), and one fixed inline
 * script, allowed by its hash alone, that presses it.
 */
export const AUTO_SUBMIT_SCRIPT = "document.getElementById('continue').submit();";
const SCRIPT_HASH = `'sha256-${createHash('sha256').update(AUTO_SUBMIT_SCRIPT).digest('base64')}'`;

const MARKER = '<title>Submitting Callback</title>';
const FORM = /<form method="post" action="([^"]*)">/;
const INPUT = /<input type="hidden" name="([^"]*)" value="([^"]*)"\/>/g;
const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };

function unescape(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|#39);/g, (entity) => ENTITIES[entity]!);
}

/** The action and fields of oidc-provider's self-submitting page, or null when the body is something else. */
export function readSelfSubmittingPage(body: unknown): { action: string; fields: [string, string][] } | null {
  if (typeof body !== 'string' || !body.includes(MARKER)) return null;
  const form = FORM.exec(body);
  if (!form) return null;
  return { action: unescape(form[1]!), fields: [...body.matchAll(INPUT)].map((m) => [unescape(m[1]!), unescape(m[2]!)] as [string, string]) };
}

export function scriptCsp(): string {
  return strictCsp().replace("script-src 'none'", `script-src ${SCRIPT_HASH}`);
}

export async function selfSubmittingPages(ctx: Context, next: Next): Promise<void> {
  await next();
  const page = readSelfSubmittingPage(ctx.body);
  if (!page) return;
  const signingOut = new URL(page.action, 'http://x').pathname.endsWith('/session/end/confirm');
  let destination: string | null = null;
  if (!signingOut && URL.canParse(page.action)) destination = new URL(page.action).host;
  ctx.body = renderToString('flows/continue', {
    title: signingOut ? 'Signing out' : 'Returning to the application',
    signingOut,
    destination,
    action: page.action,
    fields: page.fields,
    script: AUTO_SUBMIT_SCRIPT,
  });
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.set('Content-Security-Policy', scriptCsp());
}
