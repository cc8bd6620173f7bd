import { z } from 'zod';

/**
 * An error in what was asked (a name taken, a value out of range, a record missing), as opposed to
 * a fault. Its message is a sentence for the person who asked; `field` names the input it is
 * about, so the CLI can name the flag and a form the field.
 */
export class DomainError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** The first problem zod found, as the domain error of that kind, naming its field. */
export function firstIssue<E extends DomainError>(error: z.ZodError, make: (message: string, field?: string) => E): E {
  const issue = error.issues[0]!;
  const field = issue.path.length > 0 ? String(issue.path[0]) : undefined;
  return make(issue.message, field);
}

const UNITS: Record<string, string> = { string: ' characters', array: ' items', set: ' items' };

/**
 * Plain wording for zod's own messages ("Too small: expected number to be >=60" becomes "must be
 * at least 60"), wherever a schema gives none of its own. Set once for the process, here, because
 * every schema that reaches a person is in a module that imports this one.
 */
z.config({
  customError: (issue) => {
    switch (issue.code) {
      case 'too_small':
        return `must be at least ${String(issue.minimum)}${UNITS[issue.origin] ?? ''}`;
      case 'too_big':
        return `must be at most ${String(issue.maximum)}${UNITS[issue.origin] ?? ''}`;
      case 'invalid_type':
        return issue.input === undefined ? 'is missing' : `must be ${issue.expected === 'array' ? 'a list' : `a ${issue.expected}`}`;
      case 'invalid_value':
        return `must be one of ${issue.values.map(String).join(', ')}`;
      case 'invalid_format':
        return `is not a valid ${issue.format === 'url' ? 'URL' : issue.format}`;
      case 'not_multiple_of':
        return `must be a multiple of ${String(issue.divisor)}`;
      case 'unrecognized_keys':
        return `has unknown ${issue.keys.length === 1 ? 'key' : 'keys'} ${issue.keys.join(', ')}`;
      default:
        return undefined;
    }
  },
});
