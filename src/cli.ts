import { parseArgs } from 'node:util';
import { loadConfig, ConfigError } from './config.js';
import { openDatabase } from './db/index.js';
import { migrateToLatest } from './db/migrate.js';
import { SecretBox } from './crypto/secret-box.js';
import { resolveMasterSecret } from './crypto/master-secret.js';
import { createLogger } from './log.js';
import { createAudit } from './audit/audit.js';
import { createUser, DirectoryError, listUsers, setPassword, setStatus } from './directory/users.js';
import { addGroupMember, createGroup, listGroups } from './directory/groups.js';
import { passwordProblem } from './directory/passwords.js';
import { ClientError, createClient, GRANT_TYPES, listClients, removeClient, setClientScope } from './clients/clients.js';
import { ensureKeys, rotateKeys } from './oidc/keys.js';
import { loadSettings, maskSecrets, parseSettingValue, setSetting, SettingsError } from './settings/settings.js';
import { createPolicy, listPolicies, PolicyError, removePolicy } from './policy/policies.js';
import { allowClient, createResourceServer, disallowClient, listClientAccess, listResourceServers, removeResourceServer, ResourceServerError } from './resource-servers/resource-servers.js';

const USAGE = `Usage: npm run cli -- <command> [options]

  migrate                                   apply pending database migrations
  user add <username> --password <pw> [--email <e>] [--email-verified] [--phone <+E164>] [--phone-verified]
                      [--given-name <g>] [--family-name <f>]
  user set-password <username> --password <pw>
  user disable <username> | user enable <username>
  user list
  group add <name> [--description <text>]
  group add-member <group> <username>
  group list
  client add <client_id> [--secret <s>] [--public] [--name <n>] --redirect-uri <uri> [--redirect-uri <uri>...]
                      [--post-logout-redirect-uri <uri>...] [--scope "<scopes>"] [--grant-type <t>...] [--no-consent]
                      [--id-token-alg RS256|ES256]
  client list
  client remove <client_id>
  client set-mfa <client_id> on|off         require a second factor for every login to this client
  client set-scope <client_id> "<scopes>"   the scopes the client may request (replaces them)
  api add <identifier> --name <n> --scope "<scopes>" [--format jwt|opaque] [--signing-alg RS256|ES256] [--ttl <seconds>]
                                            register an API (resource server); clients name it as resource=<identifier>
  api allow <identifier> <client_id> [--scope "<scopes>"]   let a client get tokens for the API (all its scopes by default)
  api disallow <identifier> <client_id>
  api list
  api remove <identifier>
  keys rotate                               publish new signing and cookie keys; old ones stay for verification
  settings show                             all settings (secrets masked)
  settings set <section.key> <value>        e.g. mfa.otp.length 8, smtp.host mail.example.com, mfa.methods.sms false
  settings unset <section.key>              back to the default
  policy add <name> (--user <u> | --group <g>) --mfa required|optional|off [--priority <n>]
                      [--factors email,sms,totp] [--require-authenticator-app]
  policy list
  policy remove <name>`;

class UsageError extends Error {}

const options = {
  password: { type: 'string' },
  email: { type: 'string' },
  'email-verified': { type: 'boolean' },
  phone: { type: 'string' },
  'phone-verified': { type: 'boolean' },
  'given-name': { type: 'string' },
  'family-name': { type: 'string' },
  description: { type: 'string' },
  secret: { type: 'string' },
  public: { type: 'boolean' },
  name: { type: 'string' },
  'redirect-uri': { type: 'string', multiple: true },
  'post-logout-redirect-uri': { type: 'string', multiple: true },
  scope: { type: 'string' },
  'grant-type': { type: 'string', multiple: true },
  'no-consent': { type: 'boolean' },
  'id-token-alg': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  user: { type: 'string' },
  group: { type: 'string' },
  mfa: { type: 'string' },
  priority: { type: 'string' },
  factors: { type: 'string' },
  'require-authenticator-app': { type: 'boolean' },
  format: { type: 'string' },
  'signing-alg': { type: 'string' },
  ttl: { type: 'string' },
} as const;

function arg(positionals: string[], index: number, what: string): string {
  const value = positionals[index];
  if (!value) throw new UsageError(`missing ${what}`);
  return value;
}

function requirePassword(value: string | undefined): string {
  if (!value) throw new UsageError('missing --password');
  const problem = passwordProblem(value);
  if (problem) throw new UsageError(problem);
  return value;
}

export async function runCli(argv: string[], out: (line: string) => void = console.log): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const { values: v, positionals: p } = parsed;
  if (v.help || p.length === 0) {
    out(USAGE);
    return;
  }
  const config = loadConfig();
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const box = new SecretBox(resolveMasterSecret(config, log));
  const { db, close } = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 2 });
  try {
    const applied = await migrateToLatest(db);
    const command = `${p[0]} ${p[1] ?? ''}`.trim();
    switch (command) {
      case 'migrate':
        out(applied.length ? applied.map((m) => `applied ${m.migrationName}`).join('\n') : 'database is up to date');
        break;
      case 'user add': {
        const user = await createUser(db, {
          username: arg(p, 2, '<username>'),
          password: requirePassword(v.password),
          email: v.email ?? null,
          emailVerified: v['email-verified'] ?? false,
          phone: v.phone ?? null,
          phoneVerified: v['phone-verified'] ?? false,
          givenName: v['given-name'] ?? null,
          familyName: v['family-name'] ?? null,
        });
        out(`created user ${user.username} (${user.id})`);
        break;
      }
      case 'user set-password':
        await setPassword(db, arg(p, 2, '<username>'), requirePassword(v.password));
        out('password changed');
        break;
      case 'user disable':
      case 'user enable':
        await setStatus(db, arg(p, 2, '<username>'), p[1] === 'disable' ? 'disabled' : 'active');
        out(`user ${p[1] === 'disable' ? 'disabled' : 'enabled'}`);
        break;
      case 'user list':
        for (const u of await listUsers(db)) {
          out([u.username, u.id, u.status, u.email ?? '-', u.phone ?? '-'].join('\t'));
        }
        break;
      case 'group add':
        out(`created group ${(await createGroup(db, arg(p, 2, '<name>'), v.description ?? null)).name}`);
        break;
      case 'group add-member':
        await addGroupMember(db, arg(p, 2, '<group>'), arg(p, 3, '<username>'));
        out('member added');
        break;
      case 'group list':
        for (const g of await listGroups(db)) out(`${g.name}\t${g.members} member(s)`);
        break;
      case 'client add': {
        const grantTypes = v['grant-type'];
        for (const t of grantTypes ?? []) {
          if (!(GRANT_TYPES as readonly string[]).includes(t)) throw new UsageError(`unknown grant type "${t}" (use ${GRANT_TYPES.join(', ')})`);
        }
        const created = await createClient(db, box, {
          clientId: arg(p, 2, '<client_id>'),
          ...(v.secret ? { secret: v.secret } : {}),
          public: v.public ?? false,
          ...(v.name ? { name: v.name } : {}),
          redirectUris: v['redirect-uri'] ?? [],
          postLogoutRedirectUris: v['post-logout-redirect-uri'] ?? [],
          ...(v.scope ? { scope: v.scope } : {}),
          ...(grantTypes ? { grantTypes: grantTypes as (typeof GRANT_TYPES)[number][] } : {}),
          requireConsent: !v['no-consent'],
          ...(v['id-token-alg'] ? { idTokenAlg: v['id-token-alg'] as 'RS256' | 'ES256' } : {}),
        });
        out(`created client ${created.clientId}`);
        if (created.secret && !v.secret) out(`client secret: ${created.secret}  (shown once; store it now)`);
        break;
      }
      case 'client list':
        for (const c of await listClients(db)) {
          const m = c.metadata as { token_endpoint_auth_method?: string; redirect_uris?: string[]; grant_types?: string[] };
          out([c.client_id, m.token_endpoint_auth_method === 'none' ? 'public' : 'confidential', (m.grant_types ?? []).join(','), (m.redirect_uris ?? []).join(' ')].join('\t'));
        }
        break;
      case 'client remove':
        await removeClient(db, arg(p, 2, '<client_id>'));
        out('client removed');
        break;
      case 'keys rotate': {
        await ensureKeys(db, box);
        const { kids } = await rotateKeys(db, box);
        await createAudit(db, log).record({ type: 'keys.rotated', actor: 'cli', details: { kids } });
        out(`new signing keys: ${kids.join(', ')}\nrestart Tessera instances to sign with them; the old keys stay published for verification`);
        break;
      }
      case 'client set-mfa': {
        const clientId = arg(p, 2, '<client_id>');
        const flag = arg(p, 3, 'on|off');
        if (flag !== 'on' && flag !== 'off') throw new UsageError('use "on" or "off"');
        const result = await db.updateTable('clients').set({ mfa_required: flag === 'on' }).where('client_id', '=', clientId).executeTakeFirst();
        if (result.numUpdatedRows === 0n) throw new ClientError(`no client "${clientId}"`);
        out(`MFA ${flag === 'on' ? 'required' : 'no longer required'} for ${clientId}`);
        break;
      }
      case 'api add': {
        if (!v.name) throw new UsageError('missing --name');
        if (!v.scope) throw new UsageError('missing --scope "<scopes>"');
        if (v.format && v.format !== 'jwt' && v.format !== 'opaque') throw new UsageError('--format is jwt or opaque');
        if (v['signing-alg'] && v['signing-alg'] !== 'RS256' && v['signing-alg'] !== 'ES256') throw new UsageError('--signing-alg is RS256 or ES256');
        const ttl = v.ttl === undefined ? undefined : Number(v.ttl);
        if (ttl !== undefined && !Number.isInteger(ttl)) throw new UsageError('--ttl takes a whole number of seconds');
        const api = await createResourceServer(db, {
          identifier: arg(p, 2, '<identifier>'),
          name: v.name,
          scopes: v.scope.split(' ').filter(Boolean),
          ...(v.format ? { accessTokenFormat: v.format as 'jwt' | 'opaque' } : {}),
          ...(v['signing-alg'] ? { signingAlg: v['signing-alg'] as 'RS256' | 'ES256' } : {}),
          ...(ttl !== undefined ? { accessTokenTtlSeconds: ttl } : {}),
        });
        out(`created API ${api.identifier}: ${api.accessTokenFormat} access tokens${api.accessTokenFormat === 'jwt' ? ` signed ${api.signingAlg}` : ''}, valid ${api.accessTokenTtlSeconds} s`);
        out(`let clients use it with: api allow ${api.identifier} <client_id> [--scope "${api.scopes.join(' ')}"]`);
        break;
      }
      case 'api allow': {
        const identifier = arg(p, 2, '<identifier>');
        const clientId = arg(p, 3, '<client_id>');
        const scopes = await allowClient(db, identifier, clientId, v.scope?.split(' ').filter(Boolean));
        out(`${clientId} may obtain tokens for ${identifier} with ${scopes.join(' ')}`);
        break;
      }
      case 'api disallow':
        await disallowClient(db, arg(p, 2, '<identifier>'), arg(p, 3, '<client_id>'));
        out('access removed; tokens already issued stay valid until they expire');
        break;
      case 'api list': {
        const access = await listClientAccess(db);
        for (const api of await listResourceServers(db)) {
          const clients = access.filter((a) => a.resource_server === api.identifier).map((a) => `${a.client_id}(${a.scope})`);
          out([api.identifier, api.name, api.scopes.join(' '), api.accessTokenFormat === 'jwt' ? `jwt ${api.signingAlg}` : 'opaque', `${api.accessTokenTtlSeconds} s`, clients.length ? `clients ${clients.join(' ')}` : 'no clients'].join('\t'));
        }
        break;
      }
      case 'api remove':
        await removeResourceServer(db, arg(p, 2, '<identifier>'));
        out('API removed');
        break;
      case 'client set-scope':
        await setClientScope(db, arg(p, 2, '<client_id>'), arg(p, 3, '"<scopes>"'));
        out(`scopes of ${p[2]} set`);
        break;
      case 'settings show':
        out(JSON.stringify(maskSecrets(await loadSettings(db, box)), null, 2));
        break;
      case 'settings set':
        await setSetting(db, box, arg(p, 2, '<section.key>'), parseSettingValue(arg(p, 3, '<value>')));
        out(`${p[2]} set`);
        break;
      case 'settings unset':
        await setSetting(db, box, arg(p, 2, '<section.key>'), null);
        out(`${p[2]} reset to its default`);
        break;
      case 'policy add': {
        if (Boolean(v.user) === Boolean(v.group)) throw new UsageError('give exactly one of --user <username> or --group <name>');
        if (!v.mfa) throw new UsageError('missing --mfa required|optional|off');
        const priority = v.priority === undefined ? undefined : Number(v.priority);
        if (priority !== undefined && !Number.isInteger(priority)) throw new UsageError('--priority takes a whole number');
        await createPolicy(db, {
          name: arg(p, 2, '<name>'),
          subjectType: v.user ? 'user' : 'group',
          subject: (v.user ?? v.group)!,
          mfa: v.mfa as 'required',
          ...(priority !== undefined ? { priority } : {}),
          ...(v.factors ? { allowedFactors: v.factors.split(',').map((f) => f.trim()) as ('email' | 'sms' | 'totp')[] } : {}),
          requireAuthenticatorApp: v['require-authenticator-app'] ?? false,
        });
        out(`created policy ${p[2]}`);
        break;
      }
      case 'policy list':
        for (const row of await listPolicies(db)) {
          out([row.name, row.subject_type === 'user' ? `user:${row.username}` : `group:${row.group_name}`, `priority ${row.priority}`, `mfa ${row.mfa}`, `factors ${(row.allowed_factors ?? ['any']).join(',')}`, row.require_authenticator_app ? 'authenticator app required' : ''].filter(Boolean).join('\t'));
        }
        break;
      case 'policy remove':
        await removePolicy(db, arg(p, 2, '<name>'));
        out('policy removed');
        break;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } finally {
    await close();
  }
}

const invokedDirectly = process.argv[1] && /cli\.(ts|js)$/.test(process.argv[1]);
if (invokedDirectly) {
  runCli(process.argv.slice(2)).catch((error: unknown) => {
    if (error instanceof UsageError) console.error(`error: ${error.message}\nrun "npm run cli -- --help" for usage`);
    else if (error instanceof ConfigError || error instanceof DirectoryError || error instanceof ClientError || error instanceof SettingsError || error instanceof PolicyError || error instanceof ResourceServerError) console.error(`error: ${error.message}`);
    else console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
