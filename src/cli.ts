// Before anything loads oidc-provider.
import './runtime-notice.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, type Config } from './config.js';
import { openDatabase } from './db/index.js';
import { migrateToLatest } from './db/migrate.js';
import { DataDirInUse, findOwner, forwardToOwner, type RemoteIo } from './db/data-dir-owner.js';
import { SecretBox } from './crypto/secret-box.js';
import { resolveMasterSecret } from './crypto/master-secret.js';
import { createLogger } from './log.js';
import { createAudit } from './audit/audit.js';
import { answeredWithoutDatabase, errorLines, parseCommand, runCommand, secretRequest, withAbsolutePaths, type ParsedCommand } from './cli/commands.js';
import { terminalIo } from './cli/terminal.js';
import { CLI_COMMAND } from './paths.js';

/** Opens the database in this process and runs the command against it. */
async function runHere(config: Config, argv: string[], io: RemoteIo, migrateFirst: boolean): Promise<number> {
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const box = new SecretBox(resolveMasterSecret(config, log));
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    poolSize: 2,
    role: 'cli',
    onWait: (owner) => io.err(`waiting for the Tessera command (pid ${owner.pid}) that is using ${config.dataDir} to finish…`),
  });
  const audit = createAudit(database.db, log);
  try {
    // The migrate command reports what it applies itself.
    if (migrateFirst) await migrateToLatest(database.db);
    return await runCommand(argv, io, { db: database.db, box, audit, mode: config.mode });
  } finally {
    await audit.flush();
    await database.close();
  }
}

/**
 * The embedded database holds the directory for the command's duration: what the command asks at
 * the terminal is asked first, so a person slow to type does not keep a starting server waiting.
 */
async function askFirst(parsed: ParsedCommand, io: RemoteIo): Promise<RemoteIo> {
  const request = secretRequest(parsed);
  if (!request) return io;
  const answer = await io.readSecret(request);
  return { ...io, readSecret: async () => answer };
}

/**
 * `npm run cli -- …`. On PostgreSQL the command runs here. On the embedded database it runs in
 * the Tessera server that holds the data directory, when one does (PGlite cannot be shared
 * between processes); otherwise here, holding the directory for the command's duration.
 */
export async function main(argv: string[], io: RemoteIo = terminalIo()): Promise<number> {
  let parsed: ParsedCommand | undefined;
  try {
    // Typing mistakes are told at once, before any database is opened or anything asked.
    parsed = parseCommand(argv);
    if (answeredWithoutDatabase(parsed, io)) return 0;
    parsed.command.check?.(parsed.arg, parsed.flags);
    argv = withAbsolutePaths(parsed, argv);
    const config = loadConfig(process.env, 'cli');
    const migrateFirst = parsed.name !== 'migrate';
    if (config.databaseUrl) return await runHere(config, argv, io, migrateFirst);
    for (let attempt = 0; ; attempt++) {
      const owner = await findOwner(config.dataDir);
      if (owner?.role === 'server') return await forwardToOwner(owner, argv, io);
      // Run from the wrong directory (DATA_DIR is relative) or before the first start, a command would
      // quietly make a new, empty database and write there.
      if (parsed.name !== 'migrate' && !existsSync(path.join(config.dataDir, 'pglite', 'PG_VERSION'))) {
        throw new Error(
          `there is no Tessera database in ${path.resolve(config.dataDir)}: start Tessera once (npm start), run "${CLI_COMMAND} migrate" to create it, or set DATA_DIR (or DATABASE_URL) to the one you use`,
        );
      }
      try {
        return await runHere(config, argv, await askFirst(parsed, io), migrateFirst);
      } catch (error) {
        // A server claimed the directory between our look and our claim: hand the command to it.
        if (error instanceof DataDirInUse && error.owner.role === 'server' && attempt < 3) continue;
        throw error;
      }
    }
  } catch (error) {
    for (const line of errorLines(error, parsed && !parsed.help && !parsed.version ? parsed.command : undefined)) io.err(line);
    return 1;
  }
}

const invokedDirectly = process.argv[1] && /cli\.(ts|js)$/.test(process.argv[1]);
if (invokedDirectly) {
  // Exit once what was printed has been handed on: a pipe takes 64 KiB at a time.
  const exit = (code: number) => process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
  main(process.argv.slice(2)).then(exit, () => exit(1));
}
