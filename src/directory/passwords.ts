import { availableParallelism } from 'node:os';
import { hash, verify, Algorithm } from '@node-rs/argon2';

/**
 * argon2id with OWASP's recommended floor (Password Storage Cheat Sheet): m = 19 MiB, t = 2, p = 1.
 * Changing these only affects new hashes; old ones carry their parameters and still verify.
 */
export const PASSWORD_HASH_PARAMETERS = {
  algorithm: Algorithm.Argon2id,
  memoryCost: 19 * 1024,
  timeCost: 2,
  parallelism: 1,
} as const;

export const PASSWORD_MAX_LENGTH = 1024;
export const PASSWORD_MIN_LENGTH = 8;

/** At most `size` pieces of work at once; the rest wait their turn, first come first served. */
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(size: number) {
    this.free = size;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await work();
    } finally {
      // The slot passes straight to the next in line, so a newcomer cannot overtake it.
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

// argon2 runs on libuv's four threads: more hashes at once than cores only share the cores, while
// each holds its 19 MiB (a burst of logins on two cores peaked 38 MiB higher with four at once).
const hashing = new Slots(availableParallelism());

export function hashPassword(password: string): Promise<string> {
  return hashing.run(() => hash(password, PASSWORD_HASH_PARAMETERS));
}

// Verified against when the username is unknown, so that the answer takes as long as for a real user.
let decoyHash: Promise<string> | undefined;

export async function verifyPassword(passwordHash: string | null, password: string): Promise<boolean> {
  if (!passwordHash) {
    decoyHash ??= hashPassword('tessera-decoy-password');
    const decoy = await decoyHash;
    await hashing.run(() => verify(decoy, password)).catch(() => false);
    return false;
  }
  try {
    return await hashing.run(() => verify(passwordHash, password));
  } catch {
    return false;
  }
}

export function passwordProblem(password: string): string | null {
  if (password.length < PASSWORD_MIN_LENGTH) return `Password must be at least ${PASSWORD_MIN_LENGTH} characters.`;
  if (password.length > PASSWORD_MAX_LENGTH) return `Password must be at most ${PASSWORD_MAX_LENGTH} characters.`;
  return null;
}
