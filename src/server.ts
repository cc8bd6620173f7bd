import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type Provider from 'oidc-provider';
import type { Config } from './config.js';
import { openDatabase, type DatabaseHandle, type Db } from './db/index.js';
import { migrateToLatest } from './db/migrate.js';
import { SecretBox } from './crypto/secret-box.js';
import { resolveMasterSecret } from './crypto/master-secret.js';
import { createLogger, type Logger } from './log.js';
import { createAudit, type Audit } from './audit/audit.js';
import { ensureKeys, loadKeys } from './oidc/keys.js';
import { purgeExpired, storageKeys, upgradeStoredRecords } from './oidc/adapter.js';
import { createProvider } from './oidc/provider.js';
import { createApp } from './app.js';
import { RegisteredClients } from './clients/registered.js';
import { ScopeRules } from './scopes/rules.js';
import { purgeExpiredStepUps } from './scopes/grants.js';
import { purgeExpiredLedger } from './sessions/ledger.js';
import { purgeExpiredCeremonies } from './factors/passkeys.js';
import { isIP } from 'node:net';
import { ResourceServers } from './resource-servers/resource-servers.js';
import { runCommand } from './cli/commands.js';
import { ensureDemoData, retireDemoAccounts } from './demo/accounts.js';
import { setTemplateCaching } from './http/views.js';
import { loadSettings } from './settings/settings.js';
import { createDelivery, deliveryProblem } from './factors/delivery/index.js';
import { SharedAccountPresence } from './jit/shared-accounts.js';
import { purgeExpiredProgress } from './flows/progress.js';
import { purgeRateLimits } from './rate-limits.js';
import { CONSOLE_CLIENT } from './admin/console/registration.js';
import { ACCOUNT_CLIENT } from './portal/registration.js';
import { LdapDirectory } from './directory/ldap.js';
import { sweepApprovals } from './approvals/requests.js';
import { purgeAppSessions } from './web/sessions.js';
import { ensureOwnClient, internalOriginOf } from './web/relying-party.js';

export interface RunningTessera {
  issuer: string;
  port: number;
  db: Db;
  box: SecretBox;
  provider: Provider;
  log: Logger;
  database: DatabaseHandle;
  audit: Audit;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Reuse an open database (tests share one PGlite per file); it is then not closed with the server. */
  database?: DatabaseHandle;
}

/** Start-up in order: database → migrations → keys → provider → HTTP. */
export async function startTessera(config: Config, options: StartOptions = {}): Promise<RunningTessera> {
  const log = options.logger ?? createLogger(config.logLevel);
  const box = new SecretBox(resolveMasterSecret(config, log));
  const database =
    options.database ??
    (await openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      poolSize: config.databasePoolSize,
      preparedStatements: config.databasePreparedStatements,
      onWait: (owner) => log.warn({ pid: owner.pid, data_dir: config.dataDir }, 'waiting for a Tessera command that is using the data directory to finish'),
    }));
  try {
    return await startOn(database, config, options, log, box);
  } catch (error) {
    if (!options.database) await database.close();
    throw error;
  }
}

async function startOn(database: DatabaseHandle, config: Config, options: StartOptions, log: Logger, box: SecretBox): Promise<RunningTessera> {
  const { db } = database;
  const applied = await migrateToLatest(db);
  for (const m of applied) log.info({ migration: m.migrationName, status: m.status }, 'migration');
  const problem = deliveryProblem(await loadSettings(db, box), config.mode);
  if (problem) throw new Error(problem);
  await ensureKeys(db, box);
  const upgraded = await upgradeStoredRecords(db, storageKeys(box));
  if (upgraded > 0) log.info({ records: upgraded }, 'stored protocol records upgraded: ids hashed, token copies sealed');
  const keys = await loadKeys(db, box);
  setTemplateCaching(config.mode === 'production');

  // Listen first when the port is chosen by the OS, so the issuer can name it.
  // Requests that arrive while the provider is still being built (a health check racing start-up)
  // get a 503 at once; a server with no request handler would leave them hanging.
  let handle: http.RequestListener = (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '1', 'cache-control': 'no-store' });
    res.end('Tessera is starting\n');
  };
  const server = http.createServer((req, res) => handle(req, res));
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = config.issuer ?? `http://127.0.0.1:${port}`;
  // Browsers refuse WebAuthn on an IP address: passkeys need the issuer to be a host name.
  if (isIP(new URL(issuer).hostname) && config.mode === 'production') log.warn({ issuer }, 'the issuer is an IP address: browsers refuse passkeys there (WebAuthn needs a host name); set ISSUER to a name');
  if (issuer.startsWith('https://') && !config.trustProxy) {
    log.warn({ issuer }, 'the issuer is https but TRUST_PROXY is false: Tessera speaks plain HTTP, so requests will be refused until a TLS-terminating proxy sends X-Forwarded-Proto and TRUST_PROXY=true');
  }

  const audit = createAudit(db, log);
  const clients = new RegisteredClients(db, box, config.clientCacheSeconds * 1000);
  const resourceServers = new ResourceServers(db, config.clientCacheSeconds * 1000);
  const scopeRules = new ScopeRules(db, config.clientCacheSeconds * 1000);
  const provider = createProvider({ config, issuer, db, box, keys, audit, log, clients, resourceServers, scopeRules });
  const directory = new LdapDirectory();
  const delivery = createDelivery(db, config.mode, log);
  const sharedAccounts = new SharedAccountPresence(db, config.clientCacheSeconds * 1000);
  const changed = () => {
    sharedAccounts.forget();
    clients.forget();
    resourceServers.forget();
    scopeRules.forget();
  };
  try {
    for (const own of [CONSOLE_CLIENT, ACCOUNT_CLIENT]) await ensureOwnClient(db, issuer, own);
    // The demo relying party and its client library are loaded only when the demo is on.
    const demo = config.demo ? await import('./demo/demo.js') : null;
    if (demo) await ensureDemoData(db, box, issuer);
    else await retireDemoAccounts(db, log);
    handle = createApp({ config, issuer, db, box, provider, audit, log, clients, scopeRules, resourceServers, cookieKeys: keys.cookie, runningKeys: keys.signing.map((k) => ({ kid: k.kid, alg: k.alg })), demoRoutes: demo?.demoRoutes ?? null, internalOrigin: internalOriginOf(config.host, port), changed, directory, delivery, sharedAccounts }).callback();
  } catch (error) {
    server.close();
    throw error;
  }

  // CLI commands typed beside a server on the embedded database run here, on this process's database.
  database.owner?.serve((argv, io) =>
    runCommand(argv, io, { db, box, audit, mode: config.mode, changed }),
  );
  database.owner?.describe(issuer);

  const purge = setInterval(() => {
    Promise.all([purgeExpired(db), purgeExpiredProgress(db), purgeRateLimits(db), purgeExpiredLedger(db), purgeExpiredCeremonies(db), purgeExpiredStepUps(db), purgeAppSessions(db, { admin: config.admin.idleSeconds, account: config.account.idleSeconds }), sweepApprovals(db)])
      .then(([n]) => n > 0 && log.info({ purged: n }, 'purged expired protocol records'))
      .catch((error: unknown) => log.warn({ err: error }, 'purge failed'));
  }, config.purgeIntervalSeconds * 1000);
  purge.unref();

  return {
    issuer,
    port,
    db,
    box,
    provider,
    log,
    database,
    audit,
    async close() {
      clearInterval(purge);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await directory.close();
      delivery.close();
      await audit.flush();
      if (!options.database) await database.close();
    },
  };
}
