import { sql } from 'kysely';
import { z } from 'zod';
import { ScureBase32Plugin } from 'otplib';
import type { Db } from '../db/index.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { SERIAL_PATTERN, sealTokenSecret } from '../factors/authenticators.js';
import { operation, ServiceError } from './service.js';

/** One hardware token as a vendor's seed file lists it. */
export interface TokenSeed {
  serial: string;
  /** The seed, base32 (as otplib and authenticator apps take it). */
  secret: string;
  type: 'totp' | 'hotp';
  digits: 6 | 8;
  period: number;
}

const MAX_TOKENS_PER_FILE = 10_000;
const base32 = new ScureBase32Plugin();

/** A seed as vendors ship it: hex (even length, 0-9a-f) or base32; 16 to 64 bytes. */
function seedBytes(text: string): Uint8Array | null {
  const seed = text.replace(/\s/g, '');
  if (/^[0-9a-fA-F]+$/.test(seed) && seed.length % 2 === 0) return Buffer.from(seed, 'hex');
  if (!/^[A-Za-z2-7]+=*$/.test(seed)) return null;
  try {
    return base32.decode(seed.toUpperCase().replace(/=+$/, ''));
  } catch {
    return null;
  }
}

/**
 * Reads a token seed file: one token per line as `serial,seed,type,digits,period` (a header line
 * naming the columns and lines starting with # are skipped; digits default to 6, a TOTP period to
 * 30 seconds). Every problem is reported with its line number; nothing is imported unless all are right.
 */
export function parseTokenCsv(text: string): { tokens: TokenSeed[]; problems: string[] } {
  const tokens: TokenSeed[] = [];
  const problems: string[] = [];
  const serials = new Set<string>();
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    const at = `line ${index + 1}`;
    if (!line || line.startsWith('#') || (index === 0 && /^serial\s*[,;]/i.test(line))) return;
    const [serial = '', seed = '', type = '', digits = '', period = '', ...rest] = line.split(/[,;]/).map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
    if (rest.some((c) => c !== '')) return problems.push(`${at}: more than five columns (serial, seed, type, digits, period)`);
    if (!SERIAL_PATTERN.test(serial)) return problems.push(`${at}: a serial number is 1 to 64 letters, digits, dots, dashes or underscores`);
    if (serials.has(serial.toLowerCase())) return problems.push(`${at}: serial ${serial} is listed twice`);
    const bytes = seedBytes(seed);
    if (!bytes) return problems.push(`${at}: the seed of ${serial} is neither hex nor base32`);
    if (bytes.length < 16 || bytes.length > 64) return problems.push(`${at}: the seed of ${serial} is ${bytes.length} bytes; a seed is 16 to 64 bytes`);
    const kind = type.toLowerCase();
    if (kind !== 'totp' && kind !== 'hotp') return problems.push(`${at}: the type of ${serial} is TOTP or HOTP, not "${type}"`);
    const n = digits === '' ? 6 : Number(digits);
    if (n !== 6 && n !== 8) return problems.push(`${at}: ${serial} shows 6 or 8 digits, not "${digits}"`);
    const seconds = period === '' ? 30 : Number(period);
    if (kind === 'totp' && !(Number.isInteger(seconds) && seconds >= 10 && seconds <= 300)) return problems.push(`${at}: the period of ${serial} is 10 to 300 seconds, not "${period}"`);
    serials.add(serial.toLowerCase());
    tokens.push({ serial, secret: base32.encode(bytes, { padding: false }), type: kind, digits: n, period: kind === 'totp' ? seconds : 30 });
    return undefined;
  });
  if (tokens.length > MAX_TOKENS_PER_FILE) problems.push(`a file holds at most ${MAX_TOKENS_PER_FILE} tokens; split it`);
  if (tokens.length === 0 && problems.length === 0) problems.push('the file lists no token');
  return { tokens, problems };
}

/** The serials of a file that are in the stock or assigned already, as a problem to show; null when none is. */
async function alreadyImported(db: Db, tokens: TokenSeed[]): Promise<string | null> {
  if (tokens.length === 0) return null;
  const taken = await db.selectFrom('authenticators').select('serial').where(sql<string>`lower(serial)`, 'in', tokens.map((t) => t.serial.toLowerCase())).execute();
  return taken.length ? `already imported: ${taken.map((t) => t.serial).slice(0, 10).join(', ')}${taken.length > 10 ? ` and ${taken.length - 10} more` : ''}` : null;
}

/**
 * Adds hardware tokens to the unassigned stock, their seeds sealed; in one transaction, so a file
 * with a serial already in stock (or assigned) imports nothing.
 */
export async function importTokens(db: Db, box: SecretBox, tokens: TokenSeed[]): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const taken = await alreadyImported(tx, tokens);
    if (taken) throw new ServiceError(taken, 'file');
    for (let i = 0; i < tokens.length; i += 500) {
      await tx
        .insertInto('authenticators')
        .values(tokens.slice(i, i + 500).map((t) => {
          const id = crypto.randomUUID();
          return {
            id, user_id: null, kind: 'hardware', type: t.type, serial: t.serial, label: `Token ${t.serial}`,
            secret: sealTokenSecret(box, id, t.secret), digits: t.digits, period: t.period, counter: t.type === 'hotp' ? 0 : null,
          };
        }))
        .execute();
    }
  });
}

/** Imports a token seed file (its text): every line checked first, then all tokens at once. */
export const importTokensOp = operation({
  kind: 'change',
  input: z.object({ csv: z.string().max(5_000_000, 'the file is larger than 5 MB: split it') }),
  async run({ db, box }, { csv }) {
    const { tokens, problems } = parseTokenCsv(csv);
    // Every problem at once: the bad lines and the serials already in stock.
    const taken = problems.length ? await alreadyImported(db, tokens) : null;
    if (taken) problems.push(taken);
    if (problems.length) throw new ServiceError(problems.slice(0, 20).join('; ') + (problems.length > 20 ? `; and ${problems.length - 20} more problems` : ''), 'file');
    await importTokens(db, box, tokens);
    const byType = { totp: tokens.filter((t) => t.type === 'totp').length, hotp: tokens.filter((t) => t.type === 'hotp').length };
    return { result: { imported: tokens.length, ...byType }, change: { type: 'token.imported', subject: 'hardware tokens', details: { count: tokens.length, ...byType, first: tokens[0]!.serial, last: tokens.at(-1)!.serial } } };
  },
});

/** The hardware token stock: how many are unassigned, assigned and disabled. */
export const tokenStockOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db }) {
    const row = await db
      .selectFrom('authenticators')
      .where('kind', '=', 'hardware')
      .select((eb) => [
        eb.fn.countAll<string>().filterWhere('user_id', 'is', null).filterWhere('disabled_at', 'is', null).as('unassigned'),
        eb.fn.countAll<string>().filterWhere('user_id', 'is not', null).filterWhere('disabled_at', 'is', null).as('assigned'),
        eb.fn.countAll<string>().filterWhere('disabled_at', 'is not', null).as('disabled'),
      ])
      .executeTakeFirstOrThrow();
    return { result: { unassigned: Number(row.unassigned), assigned: Number(row.assigned), disabled: Number(row.disabled) } };
  },
});
