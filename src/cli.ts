import { loadConfig, type Config } from './config.js';
import { openDatabase } from './db/index.js';
import { migrateToLatest } from './db/migrate.js';
import { DataDirInUse, findOwner, forwardToOwner, type RemoteIo } from './db/data-dir-owner.js';
import { SecretBox } from './crypto/secret-box.js';
import { resolveMasterSecret } from './crypto/master-secret.js';
import { createLogger } from './log.js';
import { createAudit } from './audit/audit.js';
import { errorLines, parseCommand, runCommand, USAGE } from './cli/commands.js';
import { terminalIo } from './cli/terminal.js';

/** Opens the database in this process and runs the command against it. */
async function runHere(config: Config, argv: string[], io: RemoteIo): Promise<number> {
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const box = new SecretBox(resolveMasterSecret(config, log));
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 2, role: 'cli' });
  const audit = createAudit(database.db, log);
  try {
    await migrateToLatest(database.db);
    return await runCommand(argv, io, { db: database.db, box, audit });
  } finally {
    await audit.flush();
    await database.close();
  }
}

/**
 * `npm run cli -- …`. On PostgreSQL the command runs here. On the embedded database it runs in
 * the Tessera server that holds the data directory, when one does (PGlite cannot be shared
 * between processes); otherwise here, holding the directory for the command's duration.
 */
export async function main(argv: string[], io: RemoteIo = terminalIo()): Promise<number> {
  try {
    // Typing mistakes are told at once, before any database is opened.
    if (parseCommand(argv).help) {
      io.out(USAGE);
      return 0;
    }
    const config = loadConfig(process.env, 'cli');
    if (config.databaseUrl) return await runHere(config, argv, io);
    for (let attempt = 0; ; attempt++) {
      const owner = await findOwner(config.dataDir);
      if (owner?.role === 'server') return await forwardToOwner(owner, argv, io);
      try {
        return await runHere(config, argv, io);
      } catch (error) {
        // A server claimed the directory between our look and our claim: hand the command to it.
        if (error instanceof DataDirInUse && error.owner.role === 'server' && attempt < 3) continue;
        throw error;
      }
    }
  } catch (error) {
    for (const line of errorLines(error)) io.err(line);
    return 1;
  }
}

const invokedDirectly = process.argv[1] && /cli\.(ts|js)$/.test(process.argv[1]);
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    () => process.exit(1),
  );
}
