import type { Context } from 'koa';
import { HttpError } from '../http/errors.js';

/** A form field, trimmed ('' when absent). */
export const text = (fields: URLSearchParams, name: string): string => (fields.get(name) ?? '').trim();

/** An optional text field: empty means none. */
export const optional = (fields: URLSearchParams, name: string): string | null => text(fields, name) || null;

/** A path or query value naming a record; anything else is a page that is not there. */
export function named(value: unknown, max = 128): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) throw new HttpError(404, 'There is no such page.', 'Not found');
  return value;
}

export const param = (ctx: Context, name: string): string => named(ctx.params[name]);
export const queryParam = (ctx: Context, name: string): string => named(ctx.query[name], 512);
