import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { HttpError } from './errors.js';

export const FORM_LIMIT_BYTES = 16 * 1024;

/** Reads an application/x-www-form-urlencoded body (size-limited); repeated fields keep the last value. */
export async function readForm(ctx: Context): Promise<Record<string, string>> {
  const form: Record<string, string> = {};
  for (const [key, value] of await readFormFields(ctx)) form[key] = value;
  return form;
}

/** The same body with every value of a repeated field (a group of checkboxes); a form that carries a file's text may allow more. */
export async function readFormFields(ctx: Context, limitBytes = FORM_LIMIT_BYTES): Promise<URLSearchParams> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new HttpError(415, 'This form must be sent as a web form.', 'Request refused');
  }
  let raw: string;
  try {
    raw = await getRawBody(ctx.req, { limit: limitBytes, encoding: 'utf8', length: ctx.get('content-length') || undefined });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') throw new HttpError(413, 'The form you sent is too large.', 'Request refused');
    throw new HttpError(400, 'The form could not be read.', 'Request refused');
  }
  return new URLSearchParams(raw);
}
