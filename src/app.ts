import { createRequire } from 'node:module';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Koa from 'koa';
import Router, { type RouterMiddleware } from '@koa/router';
import type Provider from 'oidc-provider';
import type { Config } from './config.js';
import type { Db } from './db/index.js';
import { isReachable, queryStats } from './db/index.js';
import type { SecretBox } from './crypto/secret-box.js';
import type { Audit } from './audit/audit.js';
import type { RegisteredClients } from './clients/registered.js';
import type { ScopeRules } from './scopes/rules.js';
import type { ResourceServers } from './resource-servers/resource-servers.js';
import type { Logger } from './log.js';
import { PUBLIC_DIR } from './paths.js';
import { csrf } from './http/csrf.js';
import { errorPages } from './http/errors.js';
import { pagePolicy, securityHeaders } from './http/security.js';
import { issuerOrigin } from './http/origin.js';
import { selfSubmittingPages } from './http/self-submitting.js';
import { interactionRoutes } from './flows/pipeline.js';
import type { demoRoutes } from './demo/demo.js';
import type { Delivery } from './factors/delivery/index.js';
import type { SharedAccountPresence } from './jit/shared-accounts.js';
import { renderPage } from './http/views.js';
import { createConsole } from './admin/console/console.js';
import type { LdapDirectory } from './directory/ldap.js';
import { ldapManagerLookup } from './approvals/recipients.js';
import { directoryPages } from './admin/console/pages/directory.js';
import { systemPages } from './admin/console/pages/system.js';
import { settingsPages } from './admin/console/pages/settings.js';
import { approvalPages } from './admin/console/pages/approvals.js';
import { selfServicePages } from './admin/console/pages/self-service.js';
import { sharedAccountPages } from './admin/console/pages/shared-accounts.js';
import { portalRoutes } from './portal/app.js';

export interface AppDeps {
  config: Config;
  issuer: string;
  db: Db;
  box: SecretBox;
  provider: Provider;
  audit: Audit;
  log: Logger;
  cookieKeys: string[];
  /** The signing keys this process took at start, in its order (a rotation takes effect at the next start). */
  runningKeys: { kid: string; alg: string }[];
  clients: RegisteredClients;
  scopeRules: ScopeRules;
  resourceServers: ResourceServers;
  /** The demo relying party's routes, when the demo is on (its module is loaded only then). */
  demoRoutes: typeof demoRoutes | null;
  /** The LDAP directory client (its connection is kept between sign-ins). */
  directory: LdapDirectory;
  /** This process as seen from itself (the admin console's back channel). */
  internalOrigin: string;
  /** After an administrative change: drop what this process keeps of clients, APIs and scope rules. */
  changed: () => void;
  /** Sends codes and notices (its SMTP connections are pooled, and closed by the server at shutdown). */
  delivery: Delivery;
  /** Whether there are shared accounts (kept for a while, forgotten by `changed`). */
  sharedAccounts: SharedAccountPresence;
}

/**
 * Stylesheets, images and the passkey pages' scripts from public/, and the WebAuthn browser library
 * from its package (served by Tessera itself, never a CDN), read once: a fixed, small set.
 */
function assetRoutes(): Router {
  const router = new Router({ prefix: '/assets' });
  const types: Record<string, string> = { '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.js': 'text/javascript; charset=utf-8' };
  const assets = new Map<string, { type: string; body: Buffer }>();
  for (const file of readdirSync(PUBLIC_DIR)) {
    const type = types[path.extname(file)];
    if (type) assets.set(file, { type, body: readFileSync(path.join(PUBLIC_DIR, file)) });
  }
  const webauthnBrowser = path.join(path.dirname(createRequire(import.meta.url).resolve('@simplewebauthn/browser')), '..', 'dist', 'bundle', 'index.umd.min.js');
  assets.set('simplewebauthn-browser.js', { type: types['.js']!, body: readFileSync(webauthnBrowser) });
  router.get('/:file', (ctx) => {
    const asset = assets.get(ctx.params.file ?? '');
    if (!asset) return;
    ctx.type = asset.type;
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = asset.body;
  });
  return router;
}

/**
 * Tessera's middleware and pages, mounted into oidc-provider (which is itself a Koa app) ahead of
 * its protocol routes: one Koa stack per request, not an outer app handing over to an inner one.
 */
export function createApp(deps: AppDeps): Koa {
  const { config, issuer, db, provider, log } = deps;
  const app = provider as unknown as Koa;
  app.proxy = config.trustProxy;
  // Behind a proxy the client's address is the last one it appended to X-Forwarded-For; anything to
  // its left came from the client and may be forged (per-address limits would count forgeries).
  app.maxIpsCount = 1;
  app.keys = deps.cookieKeys;
  // Errors are rendered by errorPages; Koa's own printer would only duplicate them.
  app.silent = true;

  // oidc-provider's machine-to-machine endpoints: Tessera has no page there. What only pages need
  // is skipped for them, and what they pass through is synchronous where it can be: every
  // middleware that waits for the response was a measurable share of a token request's CPU.
  const protocolOnly = new Set([...(['token', 'introspection', 'revocation', 'userinfo', 'jwks'] as const).map((name) => provider.pathFor(name)), '/.well-known/openid-configuration']);
  const tesseraOnly = (middleware: RouterMiddleware): RouterMiddleware => (ctx, next) => (protocolOnly.has(ctx.path) ? next() : middleware(ctx, next));
  app.use(errorPages(log));
  app.use(securityHeaders);
  app.use(issuerOrigin(issuer));
  app.use(tesseraOnly(pagePolicy));
  app.use(tesseraOnly(selfSubmittingPages));

  const ops = new Router();
  ops.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  ops.get('/readyz', async (ctx) => {
    const ready = await isReachable(db);
    ctx.status = ready ? 200 : 503;
    ctx.body = { status: ready ? 'ready' : 'database unreachable' };
  });
  if (config.metrics) {
    ops.get('/metrics', (ctx) => {
      const cpu = process.cpuUsage();
      const memory = process.memoryUsage();
      const metrics: [name: string, type: 'counter' | 'gauge', help: string, value: number | string][] = [
        ['tessera_db_queries_total', 'counter', 'Database queries sent by this process.', queryStats.queries],
        ['tessera_db_query_errors_total', 'counter', 'Database queries that failed.', queryStats.errors],
        ['tessera_db_query_seconds_total', 'counter', 'Time spent waiting for database queries.', (queryStats.millis / 1000).toFixed(3)],
        ['process_cpu_seconds_total', 'counter', 'User and system CPU time of this process.', ((cpu.user + cpu.system) / 1e6).toFixed(3)],
        ['process_resident_memory_bytes', 'gauge', 'Resident memory of this process.', memory.rss],
        ['nodejs_heap_used_bytes', 'gauge', 'V8 heap in use (JavaScript objects).', memory.heapUsed],
        ['nodejs_heap_total_bytes', 'gauge', 'V8 heap reserved.', memory.heapTotal],
        ['nodejs_external_memory_bytes', 'gauge', 'Memory outside the V8 heap held by JavaScript objects (buffers).', memory.external],
      ];
      ctx.type = 'text/plain; version=0.0.4';
      ctx.body = metrics.map(([name, type, help, value]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}\n`).join('');
    });
  }
  ops.get('/', (ctx) => {
    ctx.redirect(config.demo ? '/demo' : '/.well-known/openid-configuration');
  });
  app.use(tesseraOnly(ops.routes())).use(tesseraOnly(ops.allowedMethods()));
  const assets = assetRoutes();
  app.use(tesseraOnly(assets.routes())).use(tesseraOnly(assets.allowedMethods()));

  // Tessera's own pages: every one gets a CSRF token; unknown methods on them get 405.
  const pages = new Router();
  pages.use(csrf(deps.box.deriveKey('csrf'), issuer.startsWith('https://')));
  const { delivery } = deps;
  const otpKey = deps.box.deriveKey('otp-code');
  const interactions = interactionRoutes({
    config, db, provider, audit: deps.audit, log, box: deps.box,
    delivery,
    sharedAccounts: deps.sharedAccounts,
    otpKey,
    clients: deps.clients,
    scopeRules: deps.scopeRules,
    resourceServers: deps.resourceServers,
    linkKey: deps.box.deriveKey('approval-link'),
    issuer,
    directory: deps.directory,
    ldapManager: ldapManagerLookup(db, deps.box, deps.directory, log),
  });
  for (const router of interactions) pages.use(router.routes(), router.allowedMethods());
  // The admin console: an OIDC client of this Tessera, on the same service layer as the CLI.
  const admin = createConsole({ config, issuer, db, box: deps.box, audit: deps.audit, log, internalOrigin: deps.internalOrigin, changed: deps.changed });
  directoryPages(admin, config.admin.idleSeconds / 60);
  systemPages(admin);
  settingsPages(admin, deps.runningKeys);
  approvalPages(admin);
  selfServicePages(admin);
  sharedAccountPages(admin);
  admin.addFormFallbacks();
  pages.use(admin.signIn.routes(), admin.signIn.allowedMethods());
  pages.use(admin.pages.routes(), admin.pages.allowedMethods());
  // Every user's /account, and the self-service portals of applications at /selfservice/<alias>.
  for (const router of portalRoutes({ config, issuer, db, box: deps.box, audit: deps.audit, log, delivery, otpKey, directory: deps.directory, internalOrigin: deps.internalOrigin })) {
    pages.use(router.routes(), router.allowedMethods());
  }
  if (deps.demoRoutes) {
    const demo = deps.demoRoutes(issuer, log);
    pages.use(demo.routes(), demo.allowedMethods());
  }
  app.use(tesseraOnly(pages.routes())).use(tesseraOnly(pages.allowedMethods()));

  if (config.mode === 'dev') {
    // Messages that dev mode delivered to itself, so every MFA method works with nothing installed.
    const dev = new Router();
    dev.get('/dev/outbox', async (ctx) => {
      const messages = await db.selectFrom('dev_outbox').selectAll().orderBy('id', 'desc').limit(50).execute();
      renderPage(ctx, 'dev/outbox', { title: 'Dev outbox', messages });
    });
    app.use(tesseraOnly(dev.routes())).use(tesseraOnly(dev.allowedMethods()));
  }

  return app;
}
