import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The command line parsed, or one line naming what is wrong and the usage (no stack trace), exit 2. */
export function parseArgsOrUsage<T extends ParseArgsConfig>(config: T, usage: string): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    console.error(`${error instanceof Error ? error.message : String(error)}\nusage: ${usage}`);
    process.exit(2);
  }
}
