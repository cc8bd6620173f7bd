// Before anything loads oidc-provider.
import './runtime-notice.js';
import { isIP } from 'node:net';
import { loadConfig, ConfigError } from './config.js';
import { startTessera } from './server.js';
import { DataDirInUse } from './db/data-dir-owner.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(2);
    }
    throw error;
  }
  const started = Date.now();
  const tessera = await startTessera(config);
  const { log, issuer } = tessera;
  log.info(
    { issuer, admin_console: `${issuer}/admin`, mode: config.mode, database: tessera.database.kind, startup_ms: Date.now() - started, rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20) },
    'Tessera is running',
  );
  if (config.demo) {
    // Plain lines for the newcomer at the terminal, beside the JSON log (written at once, so no log line lands among them).
    const lines: string[] = [];
    lines.push(`\n  Tessera ${config.mode} mode on ${tessera.database.kind === 'pglite' ? 'embedded PGlite' : 'PostgreSQL'}`);
    lines.push(`  Issuer:     ${issuer}`);
    lines.push(`  Discovery:  ${issuer}/.well-known/openid-configuration`);
    lines.push(`  Demo app:   ${issuer}/demo`);
    lines.push(`  Admin:      ${issuer}/admin`);
    if (isIP(new URL(issuer).hostname)) lines.push(`  Passkeys:   need a host name, and this issuer is an IP address: start with ISSUER=http://localhost:${new URL(issuer).port || 80} to try them`);
    const { DEMO_USER, DEMO_MFA_USER, DEMO_ADMIN, DEMO_APPROVAL_USER, DEMO_API, DEMO_SHARED, DEMO_TOKEN_SEED, demoSelfService, demoSharedAccountIsShared } = await import('./demo/accounts.js');
    const self = await demoSelfService(tessera.db);
    lines.push(`  Account:    ${issuer}/account   (every user's own page: authenticator apps, passkeys, recovery codes, password, email, phone, name)`);
    if (self.portal) {
      const actions = self.portal.actions === self.portal.of ? 'every action on' : `${self.portal.actions} of ${self.portal.of} actions on`;
      lines.push(`  Portal:     ${issuer}/selfservice/${self.portal.alias}   (the demo app's self-service portal, ${actions})`);
    }
    if (self.inStock.length) {
      lines.push(`  Tokens:     ${self.inStock.join(' and ')} in stock, seed ${DEMO_TOKEN_SEED}: add it to an authenticator app to play the token`);
    } else if (self.assigned.length) {
      lines.push(`  Tokens:     the demo tokens (${self.assigned.join(', ')}) are assigned; their seed is ${DEMO_TOKEN_SEED}`);
    }
    lines.push(`  Demo user:  ${DEMO_USER.username} / ${DEMO_USER.password}   (password; add a passkey or recovery codes at /account)`);
    lines.push(`              ${DEMO_MFA_USER.username} / ${DEMO_MFA_USER.password}   (MFA required: email, SMS, authenticator app or passkey)`);
    lines.push(`              ${DEMO_APPROVAL_USER.username} / ${DEMO_APPROVAL_USER.password}   (manager approval: ${DEMO_APPROVAL_USER.manager}'s link arrives in the dev outbox)`);
    lines.push(`  Demo admin: ${DEMO_ADMIN.username} / ${DEMO_ADMIN.password}   (the admin console; the code arrives in the dev outbox)`);
    if (await demoSharedAccountIsShared(tessera.db)) lines.push(`  Shared:     ${DEMO_SHARED.username} (no password)   (a just-in-time shared account: ${DEMO_SHARED.members.join(' or ')} presses Reserve at /account, then signs in to the demo app as ${DEMO_SHARED.username} with "Shared account?" and their own code)`);
    if (config.mode === 'dev') lines.push(`  Dev outbox: ${issuer}/dev/outbox   (codes sent by email and SMS land here)`);
    lines.push(`  Step-up:    the demo app's "ask for ${DEMO_API.write}": an MFA-protected scope, unlocked on the consent screen`);
    lines.push('');
    console.log(lines.join('\n'));
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'shutting down');
    tessera.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((error: unknown) => {
  if (error instanceof DataDirInUse) {
    console.error(error.message);
    process.exit(1);
  }
  const { code } = error as { code?: unknown };
  const hint = code === 'EADDRINUSE' ? ' (another process listens there: stop it, or set PORT to a free port)'
    : code === 'EACCES' ? ' (this user may not listen on that port: set PORT above 1023)'
    : code === 'EEXIST' || code === 'ENOTDIR' ? ' (DATA_DIR must name a directory, or a path where one can be made)'
    : '';
  console.error(`Tessera could not start: ${error instanceof Error ? error.message : String(error)}${hint}`);
  process.exit(1);
});
