import { z } from 'zod';

/** A username as typed, shown again on the sign-in page: without control characters. */
export const typedName = (value: string | undefined): string => (value ?? '').replace(/\p{Cc}/gu, '').slice(0, 128);

/** One message for unknown user, wrong password, disabled and locked accounts: none of them is disclosed. */
export const INVALID_CREDENTIALS = 'Invalid username or password.';

// Control characters can be in no username (and PostgreSQL refuses NUL): refused like a wrong name.
export const usernameField = z.string({ error: 'Enter your username.' }).trim().min(1, 'Enter your username.').max(128, INVALID_CREDENTIALS).regex(/^[^\p{Cc}]*$/u, INVALID_CREDENTIALS);
