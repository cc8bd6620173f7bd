import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Whether a presented secret equals the expected one, in time that depends on neither. Both are
 * hashed first, so any input — another length, multi-byte characters, not a string — is simply
 * unequal (timingSafeEqual itself throws on buffers of different lengths).
 */
export function secretsEqual(presented: unknown, expected: string): boolean {
  if (typeof presented !== 'string') return false;
  const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();
  return timingSafeEqual(digest(presented), digest(expected));
}
