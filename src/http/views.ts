import { readFileSync } from 'node:fs';
import path from 'node:path';
import ejs from 'ejs';
import type { Context } from 'koa';
import { VIEWS_DIR } from '../paths.js';

export interface PageData {
  title: string;
  [key: string]: unknown;
}

const cache = new Map<string, ejs.TemplateFunction>();

function template(name: string, useCache: boolean): ejs.TemplateFunction {
  let fn = useCache ? cache.get(name) : undefined;
  if (!fn) {
    const file = path.join(VIEWS_DIR, `${name}.ejs`);
    fn = ejs.compile(readFileSync(file, 'utf8'), { filename: file, async: false }) as ejs.TemplateFunction;
    if (useCache) cache.set(name, fn);
  }
  return fn;
}

let cacheTemplates = true;
/** Dev mode re-reads templates on every render so edits show without a restart. */
export function setTemplateCaching(on: boolean): void {
  cacheTemplates = on;
  cache.clear();
}

/** Renders a page into the one layout; every page is HTML with a strict CSP (set by securityHeaders). */
export function renderPage(ctx: Context, name: string, data: PageData, status = 200, layout = 'layout'): void {
  const locals = { ...data, csrfToken: ctx.state.csrfToken as string | undefined };
  const body = template(name, cacheTemplates)(locals);
  ctx.status = status;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = template(layout, cacheTemplates)({ ...locals, body });
}

export function renderToString(name: string, data: PageData & { csrfToken?: string }): string {
  const body = template(name, cacheTemplates)(data);
  return template('layout', cacheTemplates)({ ...data, body });
}
