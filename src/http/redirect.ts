import type { Context } from 'koa';

/** Sends the browser on with 303 See Other, so the next request is a GET whatever this one was. */
export function seeOther(ctx: Context, url: string): void {
  ctx.status = 303;
  ctx.redirect(url);
}
