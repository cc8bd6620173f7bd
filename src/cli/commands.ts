import { parseArgs } from 'node:util';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import type { Db } from '../db/index.js';
import { migrateToLatest } from '../db/migrate.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { Audit } from '../audit/audit.js';
import type { RemoteIo, SecretRequest } from '../db/data-dir-owner.js';
import { DomainError } from '../domain-error.js';
import { perform, type ServiceContext } from '../admin/service.js';
import {
  addMemberOp, createGroupOp, createUserOp, listGroupsOp, listUsersOp, removeGroupOp, removeMemberOp, removePasskeyOp, removeRecoveryCodesOp, removeUserOp, resetMfaOp,
  setPasswordOp, setStatusOp, showUserOp, unlockUserOp, updateUserOp,
} from '../admin/users.js';
import { listAuditOp } from '../admin/audit-log.js';
import { disablePortalOp, enablePortalOp, listPortalsOp } from '../admin/portals.js';
import { importTokensOp, tokenStockOp } from '../admin/tokens.js';
import { approveRestoreRequestOp, deleteRestoreRequestOp, listRestoreRequestsOp } from '../admin/restore.js';
import { disableJitOp, enableJitOp, listJitOp, listReservationsOp, releaseJitOp } from '../admin/jit.js';
import { JIT_MINUTES } from '../jit/shared-accounts.js';
import { PORTAL_ACTIONS } from '../portal/actions.js';
import {
  addApprovalPolicyOp, createApprovalProfileOp, listApprovalPoliciesOp, listApprovalProfilesOp, listApprovalRequestsOp, removeApprovalPolicyOp,
  removeApprovalProfileOp, setClientApprovalOp, setSponsorOp, testLdapOp, updateApprovalProfileOp,
} from '../admin/approvals.js';
import {
  allowApiOp, createApiOp, createClientOp, createPolicyOp, disallowApiOp, listApisOp, listClientsOp, listPoliciesOp, listScopeRulesOp, protectScopeOp,
  removeApiOp, removeClientOp, removePolicyOp, rotateKeysOp, setClientMfaOp, setClientScopeOp, setSettingOp, showSettingsOp, unprotectScopeOp,
} from '../admin/system.js';
import { ConfigError, type Mode } from '../config.js';
import { CLI_COMMAND, VERSION } from '../paths.js';
import { checkNewUser, DirectoryError, findUserByUsername } from '../directory/users.js';
import { passwordProblem } from '../directory/passwords.js';
import { GRANT_TYPES } from '../clients/clients.js';
import { parseSettingValue, SECRET_PATHS } from '../settings/settings.js';
import { OIDC_SCOPES } from '../oidc/account.js';
import { DEFAULT_SCOPE_MAX_AGE_SECONDS, describeRule } from '../scopes/rules.js';

/** Every flag any command takes; each command lists the ones it accepts. */
const FLAGS = {
  password: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  'no-password': { type: 'boolean' },
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
  'value-stdin': { type: 'boolean' },
  type: { type: 'string' },
  since: { type: 'string' },
  limit: { type: 'string' },
  api: { type: 'string' },
  'max-age': { type: 'string' },
  version: { type: 'boolean' },
  mode: { type: 'string' },
  deliver: { type: 'string' },
  'link-minutes': { type: 'string' },
  'default-recipient': { type: 'string' },
  subject: { type: 'string' },
  message: { type: 'string' },
  'base-url': { type: 'string' },
  directories: { type: 'string' },
  profile: { type: 'string' },
  attribute: { type: 'string' },
  value: { type: 'string' },
  client: { type: 'string' },
  position: { type: 'string' },
  status: { type: 'string' },
  'manager-approval': { type: 'boolean' },
  alias: { type: 'string' },
  actions: { type: 'string' },
  'token-types': { type: 'string' },
  minutes: { type: 'string' },
} as const;

type Flag = keyof typeof FLAGS;
type FlagValues = {
  [K in Flag]?: (typeof FLAGS)[K]['type'] extends 'boolean' ? boolean : (typeof FLAGS)[K] extends { multiple: true } ? string[] : string;
};

/** A mistake in how the command was typed: the message says which part, and usage follows. */
export class UsageError extends Error {}

/** Where a command runs: this process's database, or the owner's (a forwarded command). */
export interface CommandTarget {
  db: Db;
  box: SecretBox;
  audit: Audit;
  /** The mode of the process whose database this is: production refuses settings that would stop delivery. */
  mode: Mode;
  /** Called after a change, so a running server drops what it keeps of clients and APIs. */
  changed?: () => void;
}

interface CommandContext extends CommandTarget {
  io: RemoteIo;
  /** The service layer's view of this run: the operator at the terminal acts as an administrator. */
  service: ServiceContext;
  /** Positional arguments by name (the placeholder without its brackets). */
  arg: Record<string, string>;
  flags: FlagValues;
  /** The password from --password, --password-stdin or a prompt; checked against the password rules. */
  password(): Promise<string>;
}

/** The secret a command will ask the person at the terminal for, given its flags; null when it asks for none. */
type SecretFor = (arg: Record<string, string>, flags: FlagValues) => SecretRequest | null;

interface Command {
  args: string[];
  /** Flags that take true or false in this command (elsewhere they are switches without a value). */
  valueFlags?: Flag[];
  /** Trailing arguments that may be left out. */
  optionalArgs?: number;
  /** What it asks for at the terminal, so a local run can ask before it holds the database. */
  secret?: SecretFor;
  /** What can be refused before anything is asked or opened (a typo must not cost typing the password first). */
  check?(arg: Record<string, string>, flags: FlagValues): void;
  /** Arguments that name files: read where the command was typed, so a relative path is made absolute there. */
  fileArgs?: string[];
  flags: Flag[];
  usage: string;
  /** A domain error's field → the flag that carries it, so the message can name the flag. */
  fields?: Record<string, string>;
  /** Changes go through the service layer (src/admin), which checks, runs and audits them. */
  run(c: CommandContext): Promise<void>;
}

/** A new user from `user add`'s argument and flags. */
function newUserInput(arg: Record<string, string>, flags: FlagValues) {
  if (flags['phone-verified'] && !flags.phone) throw new UsageError('--phone-verified needs --phone');
  if (flags['email-verified'] && !flags.email) throw new UsageError('--email-verified needs --email');
  return {
    username: arg.username!,
    email: flags.email ?? null,
    emailVerified: flags['email-verified'] ?? false,
    phone: flags.phone ?? null,
    phoneVerified: flags['phone-verified'] ?? false,
    givenName: flags['given-name'] ?? null,
    familyName: flags['family-name'] ?? null,
  };
}

function intFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`${flag} takes a whole number (got "${value.slice(0, 40)}")`);
  return Number(value);
}

function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag} is ${allowed.join(' or ')} (got "${value.slice(0, 40)}")`);
  return value as T;
}

/** A --scope value: at least one scope. */
function scopeList(value: string): string[] {
  const scopes = value.split(/\s+/).filter(Boolean);
  if (scopes.length === 0) throw new UsageError('--scope names no scope');
  return scopes;
}

const PASSWORD_FLAGS: Flag[] = ['password', 'password-stdin'];

const passwordSecret: SecretFor = (_arg, flags) =>
  flags.password !== undefined || flags['no-password'] ? null : flags['password-stdin'] ? { source: 'stdin', label: 'password' } : { source: 'prompt', label: 'Password', confirm: true, stdinFlag: '--password-stdin' };

const settingSecret: SecretFor = (arg, flags) => {
  if (arg.value !== undefined) return null;
  if (flags['value-stdin']) return { source: 'stdin', label: 'value' };
  return SECRET_PATHS.has(arg['section.key'] ?? '') ? { source: 'prompt', label: `Value of ${arg['section.key']}`, stdinFlag: '--value-stdin' } : null;
};

const PROFILE_FLAGS: Flag[] = ['mode', 'deliver', 'link-minutes', 'default-recipient', 'subject', 'message', 'base-url', 'directories', 'factors'];
const PROFILE_FIELDS = { mode: '--mode', delivery: '--deliver', linkMinutes: '--link-minutes', defaultRecipient: '--default-recipient', subject: '--subject', message: '--message', baseUrl: '--base-url', directories: '--directories', factors: '--factors' };

/** An approval profile's flags, as the service layer takes them (only those given). */
function profileFlags(flags: FlagValues) {
  const list = (v: string | undefined) => v?.split(',').map((x) => x.trim()).filter(Boolean);
  const minutes = intFlag(flags['link-minutes'], '--link-minutes');
  const mode = oneOf(flags.mode, '--mode', ['inform', 'approve'] as const);
  const delivery = oneOf(flags.deliver, '--deliver', ['email', 'sms'] as const);
  return {
    ...(mode ? { mode } : {}),
    ...(delivery ? { delivery } : {}),
    ...(minutes !== undefined ? { linkMinutes: minutes } : {}),
    ...(flags['default-recipient'] !== undefined ? { defaultRecipient: flags['default-recipient'] || null } : {}),
    ...(flags.subject !== undefined ? { subject: flags.subject } : {}),
    ...(flags.message !== undefined ? { message: flags.message || null } : {}),
    ...(flags['base-url'] !== undefined ? { baseUrl: flags['base-url'] || null } : {}),
    ...(flags.directories !== undefined ? { directories: list(flags.directories) as ('local' | 'ldap')[] } : {}),
    ...(flags.factors !== undefined ? { factors: list(flags.factors) as ('password' | 'email' | 'sms' | 'totp')[] } : {}),
  };
}

/** The command table: one entry per command, run by runCommand in this process or in the data directory's owner. */
const COMMANDS: Record<string, Command> = {
  migrate: {
    args: [],
    flags: [],
    usage: 'migrate                                   apply pending database migrations',
    async run({ db, io }) {
      const applied = await migrateToLatest(db);
      io.out(applied.length ? applied.map((m) => `applied ${m.migrationName}`).join('\n') : 'database is up to date');
    },
  },
  'user add': {
    args: ['<username>'],
    flags: [...PASSWORD_FLAGS, 'no-password', 'email', 'email-verified', 'phone', 'phone-verified', 'given-name', 'family-name'],
    usage: `user add <username> [--password-stdin | --password <pw> | --no-password] [--email <e>] [--email-verified]
                      [--phone <+E164>] [--phone-verified] [--given-name <g>] [--family-name <f>]
                                            without a password flag, asks for the password at the terminal;
                                            --no-password: signs in to the portals with a code sent to the verified email`,
    fields: { email: '--email', emailVerified: '--email-verified', phone: '--phone', phoneVerified: '--phone-verified', givenName: '--given-name', familyName: '--family-name' },
    secret: passwordSecret,
    check: (arg, flags) => {
      if (flags['no-password'] && (flags.password !== undefined || flags['password-stdin'])) throw new UsageError('--no-password: give no password flag with it');
      if (flags['no-password'] && !flags['email-verified']) throw new UsageError('--no-password: the account signs in with a code sent to its email: give --email and --email-verified');
      checkNewUser(newUserInput(arg, flags));
    },
    async run({ db, arg, flags, io, password, service }) {
      const input = newUserInput(arg, flags);
      checkNewUser(input);
      if (await findUserByUsername(db, input.username)) throw new DirectoryError(`user "${input.username}" already exists`);
      const user = await perform(service, createUserOp, { ...input, password: flags['no-password'] ? null : await password() });
      io.out(`created user ${user.username} (${user.id})`);
    },
  },
  'user set-password': {
    args: ['<username>'],
    flags: PASSWORD_FLAGS,
    usage: 'user set-password <username> [--password-stdin | --password <pw>]',
    secret: passwordSecret,
    async run({ db, arg, io, password, service }) {
      if (!(await findUserByUsername(db, arg.username!))) throw new DirectoryError(`no user "${arg.username}"`);
      await perform(service, setPasswordOp, { username: arg.username!, password: await password() });
      io.out('password changed');
    },
  },
  'user disable': {
    args: ['<username>'],
    flags: [],
    usage: 'user disable <username> | user enable <username>',
    async run({ arg, io, service }) {
      await perform(service, setStatusOp, { username: arg.username!, status: 'disabled' });
      io.out('user disabled');
    },
  },
  'user enable': {
    args: ['<username>'],
    flags: [],
    usage: '',
    async run({ arg, io, service }) {
      await perform(service, setStatusOp, { username: arg.username!, status: 'active' });
      io.out('user enabled');
    },
  },
  'user list': {
    args: [],
    flags: [],
    usage: 'user list',
    async run({ io, service }) {
      for (const u of await perform(service, listUsersOp, {})) io.out([u.username, u.id, u.status, u.email ?? '-', u.phone ?? '-'].join('\t'));
    },
  },
  'user show': {
    args: ['<username>'],
    flags: [],
    usage: 'user show <username>                      the account, its groups, authenticators, passkeys, recovery codes and lockout',
    async run({ arg, io, service }) {
      const { user, groups, authenticators, policies, locked, passkeys, recoveryCodes } = await perform(service, showUserOp, { username: arg.username! });
      const flag = (verified: boolean) => (verified ? 'verified' : 'not verified');
      const lines: [string, string][] = [
        ['username', user.username],
        ['id', user.id],
        ['status', user.status],
        ['name', [user.given_name, user.family_name].filter(Boolean).join(' ') || '-'],
        ['email', user.email ? `${user.email} (${flag(user.email_verified)})` : '-'],
        ['phone', user.phone ? `${user.phone} (${flag(user.phone_verified)})` : '-'],
        ['source', user.source === 'ldap' ? `LDAP directory (${user.ldap_dn ?? '-'})` : 'local'],
        ['sponsor', [user.sponsor_name, user.sponsor_email, user.sponsor_phone].filter(Boolean).join(', ') || '-'],
        ['groups', groups.join(', ') || '-'],
        ['policies', policies.join(', ') || '-'],
        ['authenticators', authenticators.map((a) => `${a.label} (${a.type}, added ${a.created_at.toISOString().slice(0, 10)}${a.last_used_at ? `, last used ${a.last_used_at.toISOString().slice(0, 16)}Z` : ''})`).join('; ') || '-'],
        ['passkeys', passkeys.map((p) => `${p.name} (${p.synced ? 'synced' : 'device-bound'}, id ${p.id}, added ${p.createdAt.toISOString().slice(0, 10)}${p.lastUsedAt ? `, last used ${p.lastUsedAt.toISOString().slice(0, 16)}Z` : ''})`).join('; ') || '-'],
        ['recovery codes', recoveryCodes ? `${recoveryCodes.left} of ${recoveryCodes.total} left (made ${recoveryCodes.createdAt.toISOString().slice(0, 10)})` : '-'],
        ['failed attempts', String(user.failed_logins)],
        ['locked', locked ? `until ${user.locked_until!.toISOString()}` : 'no'],
        ['created', user.created_at.toISOString()],
      ];
      for (const [label, value] of lines) io.out(`${label.padEnd(15)} ${value}`);
    },
  },
  'user set': {
    args: ['<username>'],
    flags: ['email', 'email-verified', 'phone', 'phone-verified', 'given-name', 'family-name'],
    valueFlags: ['email-verified', 'phone-verified'],
    usage: `user set <username> [--email <e>] [--email-verified true|false] [--phone <+E164>] [--phone-verified true|false]
                      [--given-name <g>] [--family-name <f>]     an empty value ("") clears it`,
    fields: { email: '--email', emailVerified: '--email-verified', phone: '--phone', phoneVerified: '--phone-verified', givenName: '--given-name', familyName: '--family-name' },
    async run({ arg, flags, io, service }) {
      const truth = (flag: 'email-verified' | 'phone-verified') => {
        const value = flags[flag] as unknown as string | undefined;
        if (value === undefined) return undefined;
        if (value !== 'true' && value !== 'false') throw new UsageError(`--${flag} takes true or false (got "${value.slice(0, 40)}")`);
        return value === 'true';
      };
      const input = {
        username: arg.username!,
        ...(flags.email !== undefined ? { email: flags.email } : {}),
        ...(truth('email-verified') !== undefined ? { emailVerified: truth('email-verified') } : {}),
        ...(flags.phone !== undefined ? { phone: flags.phone } : {}),
        ...(truth('phone-verified') !== undefined ? { phoneVerified: truth('phone-verified') } : {}),
        ...(flags['given-name'] !== undefined ? { givenName: flags['given-name'] } : {}),
        ...(flags['family-name'] !== undefined ? { familyName: flags['family-name'] } : {}),
      };
      if (Object.keys(input).length === 1) throw new UsageError('say what to set: --email, --email-verified, --phone, --phone-verified, --given-name or --family-name');
      const user = await perform(service, updateUserOp, input);
      io.out(`updated ${user.username}: email ${user.email ?? '-'}${user.email ? (user.email_verified ? ' (verified)' : ' (not verified)') : ''}, phone ${user.phone ?? '-'}${user.phone ? (user.phone_verified ? ' (verified)' : ' (not verified)') : ''}`);
    },
  },
  'user unlock': {
    args: ['<username>'],
    flags: [],
    usage: 'user unlock <username>                    end a lockout after failed sign-ins now',
    async run({ arg, io, service }) {
      const user = await perform(service, unlockUserOp, { username: arg.username! });
      io.out(user.locked_until && user.locked_until > new Date() ? `${user.username} unlocked` : `${user.username} was not locked; failed attempts reset`);
    },
  },
  'user reset-mfa': {
    args: ['<username>'],
    flags: [],
    usage: 'user reset-mfa <username>                 remove the user\'s authenticator apps, passkeys and recovery codes (a lost phone)',
    async run({ arg, io, service }) {
      const { authenticators, passkeys, recoveryCodes } = await perform(service, resetMfaOp, { username: arg.username! });
      const parts = [
        authenticators ? `${authenticators} authenticator app${authenticators === 1 ? '' : 's'}` : '',
        passkeys ? `${passkeys} passkey${passkeys === 1 ? '' : 's'}` : '',
        recoveryCodes ? 'their recovery codes' : '',
      ].filter(Boolean);
      const list = parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}` : parts[0];
      io.out(parts.length === 0 ? `${arg.username} had no authenticator app, no passkey and no recovery codes` : `removed ${list} of ${arg.username}`);
    },
  },
  'user remove-passkey': {
    args: ['<username>', '<passkey>'],
    flags: [],
    usage: 'user remove-passkey <username> <passkey>  take one passkey off the user (its name, or its id from user show)',
    async run({ arg, io, service }) {
      const passkey = await perform(service, removePasskeyOp, { username: arg.username!, passkey: arg.passkey! });
      io.out(`removed the passkey "${passkey.name}" of ${arg.username}`);
    },
  },
  'user remove-recovery-codes': {
    args: ['<username>'],
    flags: [],
    usage: 'user remove-recovery-codes <username>     void the user\'s recovery codes (they may make a new set on /account)',
    async run({ arg, io, service }) {
      const { removed, unused } = await perform(service, removeRecoveryCodesOp, { username: arg.username! });
      io.out(`voided the recovery codes of ${arg.username} (${unused} of ${removed} were unused)`);
    },
  },
  'user remove': {
    args: ['<username>'],
    flags: [],
    usage: 'user remove <username>                    the account, its sessions, grants and tokens (the audit log keeps its history)',
    async run({ arg, io, service }) {
      const user = await perform(service, removeUserOp, { username: arg.username! });
      io.out(`removed user ${user.username}`);
    },
  },
  'group add': {
    args: ['<name>'],
    flags: ['description'],
    usage: 'group add <name> [--description <text>]',
    async run({ arg, flags, io, service }) {
      const group = await perform(service, createGroupOp, { name: arg.name!, description: flags.description ?? null });
      io.out(`created group ${group.name}`);
    },
  },
  'group add-member': {
    args: ['<group>', '<username>'],
    flags: [],
    usage: 'group add-member <group> <username>',
    async run({ arg, io, service }) {
      const added = await perform(service, addMemberOp, { group: arg.group!, username: arg.username! });
      io.out(added ? 'member added' : `${arg.username} is already a member of ${arg.group}`);
    },
  },
  'group remove-member': {
    args: ['<group>', '<username>'],
    flags: [],
    usage: 'group remove-member <group> <username>',
    async run({ arg, io, service }) {
      await perform(service, removeMemberOp, { group: arg.group!, username: arg.username! });
      io.out('member removed');
    },
  },
  'group remove': {
    args: ['<name>'],
    flags: [],
    usage: 'group remove <name>                       its memberships and access policies too (admins and auditors are built in)',
    async run({ arg, io, service }) {
      await perform(service, removeGroupOp, { name: arg.name! });
      io.out('group removed');
    },
  },
  'group list': {
    args: [],
    flags: [],
    usage: 'group list',
    async run({ io, service }) {
      for (const g of await perform(service, listGroupsOp, {})) io.out(`${g.name}\t${g.members} member(s)${g.builtin ? '\tbuilt in' : ''}`);
    },
  },
  'client add': {
    args: ['<client_id>'],
    flags: ['secret', 'public', 'name', 'redirect-uri', 'post-logout-redirect-uri', 'scope', 'grant-type', 'no-consent', 'id-token-alg'],
    usage: `client add <client_id> [--secret <s>] [--public] [--name <n>] --redirect-uri <uri> [--redirect-uri <uri>...]
                      [--post-logout-redirect-uri <uri>...] [--scope "<scopes>"] [--grant-type <t>...] [--no-consent]
                      [--id-token-alg RS256|ES256]`,
    fields: {
      secret: '--secret', name: '--name', redirectUris: '--redirect-uri', postLogoutRedirectUris: '--post-logout-redirect-uri',
      scope: '--scope', grantTypes: '--grant-type', idTokenAlg: '--id-token-alg',
    },
    async run({ arg, flags, io, service }) {
      const grantTypes = flags['grant-type'] ?? [];
      for (const [i, t] of grantTypes.entries()) {
        if (!(GRANT_TYPES as readonly string[]).includes(t)) throw new UsageError(`--grant-type: unknown grant type "${t.slice(0, 40)}" (use ${GRANT_TYPES.join(', ')})`);
        if (grantTypes.indexOf(t) !== i) throw new UsageError(`--grant-type ${t} is given twice`);
      }
      if (flags.public && flags.secret !== undefined) throw new UsageError('--public clients have no --secret');
      const idTokenAlg = oneOf(flags['id-token-alg'], '--id-token-alg', ['RS256', 'ES256'] as const);
      const created = await perform(service, createClientOp, {
        clientId: arg.client_id!,
        ...(flags.secret !== undefined ? { secret: flags.secret } : {}),
        public: flags.public ?? false,
        ...(flags.name !== undefined ? { name: flags.name } : {}),
        redirectUris: flags['redirect-uri'] ?? [],
        postLogoutRedirectUris: flags['post-logout-redirect-uri'] ?? [],
        ...(flags.scope !== undefined ? { scope: flags.scope } : {}),
        ...(flags['grant-type'] ? { grantTypes: flags['grant-type'] as (typeof GRANT_TYPES)[number][] } : {}),
        requireConsent: !flags['no-consent'],
        ...(idTokenAlg ? { idTokenAlg } : {}),
      });
      io.out(`created client ${created.clientId}`);
      if (created.secret && flags.secret === undefined) io.out(`client secret: ${created.secret}  (shown once; store it now)`);
    },
  },
  'client list': {
    args: [],
    flags: [],
    usage: 'client list',
    async run({ io, service }) {
      for (const c of await perform(service, listClientsOp, {})) {
        const m = c.metadata as { token_endpoint_auth_method?: string; redirect_uris?: string[]; grant_types?: string[] };
        io.out([c.client_id, m.token_endpoint_auth_method === 'none' ? 'public' : 'confidential', (m.grant_types ?? []).join(','), (m.redirect_uris ?? []).join(' ')].join('\t'));
      }
    },
  },
  'client remove': {
    args: ['<client_id>'],
    flags: [],
    usage: 'client remove <client_id>',
    async run({ arg, io, service }) {
      await perform(service, removeClientOp, { clientId: arg.client_id! });
      io.out('client removed');
    },
  },
  'client set-mfa': {
    args: ['<client_id>', 'on|off'],
    flags: [],
    usage: 'client set-mfa <client_id> on|off         require a second factor for every login to this client',
    async run({ arg, io, service }) {
      const flag = arg['on|off'];
      if (flag !== 'on' && flag !== 'off') throw new UsageError(`use "on" or "off" (got "${String(flag).slice(0, 40)}")`);
      await perform(service, setClientMfaOp, { clientId: arg.client_id!, required: flag === 'on' });
      io.out(`MFA ${flag === 'on' ? 'required' : 'no longer required'} for ${arg.client_id}`);
    },
  },
  'client set-approval': {
    args: ['<client_id>', 'on|off'],
    flags: [],
    usage: 'client set-approval <client_id> on|off    sign-ins to this client go through manager approval',
    async run({ arg, io, service }) {
      const flag = arg['on|off'];
      if (flag !== 'on' && flag !== 'off') throw new UsageError(`use "on" or "off" (got "${String(flag).slice(0, 40)}")`);
      await perform(service, setClientApprovalOp, { clientId: arg.client_id!, required: flag === 'on' });
      io.out(`manager approval ${flag === 'on' ? 'required' : 'no longer required'} for ${arg.client_id}`);
    },
  },
  'user set-sponsor': {
    args: ['<username>'],
    flags: ['name', 'email', 'phone'],
    usage: 'user set-sponsor <username> --name <n> --email <e> [--phone <+E164>]   the manager told of or approving a local user\'s sign-ins',
    fields: { name: '--name', email: '--email', phone: '--phone' },
    async run({ arg, flags, io, service }) {
      if (flags.name === undefined && flags.email === undefined && flags.phone === undefined) throw new UsageError('give --name, --email and/or --phone (an empty value removes one)');
      const before = (await perform(service, showUserOp, { username: arg.username! })).user;
      const pick = (flag: string | undefined, stored: string | null) => (flag === undefined ? stored : flag.trim() || null);
      await perform(service, setSponsorOp, {
        username: arg.username!,
        name: pick(flags.name, before.sponsor_name),
        email: pick(flags.email, before.sponsor_email),
        phone: pick(flags.phone, before.sponsor_phone),
      });
      const after = (await perform(service, showUserOp, { username: arg.username! })).user;
      io.out(after.sponsor_name || after.sponsor_email || after.sponsor_phone ? `sponsor of ${arg.username} set` : `sponsor of ${arg.username} removed`);
    },
  },
  'approval profile add': {
    args: ['<name>'],
    flags: PROFILE_FLAGS,
    usage: `approval profile add <name> --mode inform|approve --deliver email|sms [--link-minutes <n>]
                      [--default-recipient <email or +E164>] [--subject <text>] [--message <text>]
                      [--base-url <url>] [--directories local,ldap] [--factors password,email,sms,totp,webauthn,recovery]`,
    fields: PROFILE_FIELDS,
    async run({ arg, flags, io, service }) {
      const given = profileFlags(flags);
      if (!given.mode) throw new UsageError('missing --mode inform|approve');
      if (!given.delivery) throw new UsageError('missing --deliver email|sms');
      const profile = await perform(service, createApprovalProfileOp, { name: arg.name!, ...given, mode: given.mode, delivery: given.delivery });
      io.out(`created approval profile ${profile.name} (${profile.mode}, by ${profile.delivery}${profile.mode === 'approve' ? `, links valid ${profile.link_minutes} min` : ''})`);
    },
  },
  'approval profile set': {
    args: ['<name>'],
    flags: PROFILE_FLAGS,
    usage: 'approval profile set <name> [the flags of approval profile add]   its policies stay',
    fields: PROFILE_FIELDS,
    async run({ arg, flags, io, service }) {
      const changes = profileFlags(flags);
      if (Object.keys(changes).length === 0) throw new UsageError('give at least one flag to change');
      const changed = await perform(service, updateApprovalProfileOp, { name: arg.name!, changes });
      io.out(Object.keys(changed).length ? `approval profile ${arg.name} changed: ${Object.keys(changed).join(', ')}` : `approval profile ${arg.name} already had these values`);
    },
  },
  'approval profile list': {
    args: [],
    flags: [],
    usage: 'approval profile list',
    async run({ io, service }) {
      for (const p of await perform(service, listApprovalProfilesOp, {})) {
        io.out([p.name, p.mode, p.delivery, p.mode === 'approve' ? `links ${p.link_minutes} min` : 'no link', `default ${p.default_recipient ?? '-'}`, `directories ${p.directories.join(',')}`, `factors ${(p.factors ?? ['any']).join(',')}`].join('\t'));
      }
    },
  },
  'approval profile remove': {
    args: ['<name>'],
    flags: [],
    usage: 'approval profile remove <name>           its policies go with it',
    async run({ arg, io, service }) {
      const policies = await perform(service, removeApprovalProfileOp, { name: arg.name! });
      io.out(`removed approval profile ${arg.name}${policies.length ? ` and its policies ${policies.join(', ')}` : ''}`);
    },
  },
  'approval policy add': {
    args: ['<name>'],
    flags: ['profile', 'attribute', 'value', 'client', 'position'],
    usage: `approval policy add <name> --profile <profile> --attribute <attribute> --value <v>[,<v>…]
                      [--client <client_id>] [--position <n>]   first match wins, top to bottom`,
    fields: { profile: '--profile', attribute: '--attribute', values: '--value', clientId: '--client', position: '--position' },
    async run({ arg, flags, io, service }) {
      if (!flags.profile) throw new UsageError('missing --profile <profile>');
      if (!flags.attribute) throw new UsageError('missing --attribute <attribute>');
      if (flags.value === undefined) throw new UsageError('missing --value <v>[,<v>…]');
      const position = intFlag(flags.position, '--position');
      const policy = await perform(service, addApprovalPolicyOp, {
        name: arg.name!,
        profile: flags.profile,
        attribute: flags.attribute,
        values: flags.value.split(',').map((v) => v.trim()).filter(Boolean),
        clientId: flags.client ?? null,
        position: position ?? null,
      });
      io.out(`created approval policy ${policy.name} at position ${policy.position}`);
    },
  },
  'approval policy list': {
    args: [],
    flags: [],
    usage: 'approval policy list                      top to bottom: the order they are evaluated in',
    async run({ io, service }) {
      for (const p of await perform(service, listApprovalPoliciesOp, {})) {
        io.out([String(p.position), p.name, `profile ${p.profile}`, `${p.attribute} = ${p.values.join(',')}`, p.client_id ? `client ${p.client_id}` : 'any client'].join('\t'));
      }
    },
  },
  'approval policy remove': {
    args: ['<name>'],
    flags: [],
    usage: 'approval policy remove <name>',
    async run({ arg, io, service }) {
      await perform(service, removeApprovalPolicyOp, { name: arg.name! });
      io.out(`removed approval policy ${arg.name}`);
    },
  },
  'approval requests': {
    args: [],
    flags: ['status', 'limit'],
    usage: 'approval requests [--status pending|approved|rejected|expired|informed|undeliverable] [--limit <n>]',
    fields: { status: '--status', limit: '--limit' },
    async run({ flags, io, service }) {
      const limit = intFlag(flags.limit, '--limit');
      const rows = await perform(service, listApprovalRequestsOp, { ...(flags.status ? { status: flags.status as 'pending' } : {}), ...(limit !== undefined ? { limit } : {}) });
      for (const r of rows) {
        io.out([r.created_at.toISOString(), r.status, r.username, r.client_id, `profile ${r.profile}`, `to ${r.recipient ?? '-'} (${r.recipient_source})`, r.decided_at ? `decided ${r.decided_at.toISOString()} from ${r.decided_ip ?? '-'}` : ''].filter(Boolean).join('\t'));
      }
    },
  },
  'portal enable': {
    args: ['<client_id>'],
    flags: ['alias', 'actions', 'group', 'token-types'],
    usage: `portal enable <client_id> --alias <alias> --actions <a>[,<a>…] [--group <group>] [--token-types totp]
                      the portal at /selfservice/<alias>, its actions in display order: ${PORTAL_ACTIONS.join(', ')}`,
    fields: { clientId: '<client_id>', alias: '--alias', actions: '--actions', group: '--group', tokenTypes: '--token-types' },
    async run({ arg, flags, io, service }) {
      if (!flags.alias) throw new UsageError('missing --alias <alias>');
      if (flags.actions === undefined) throw new UsageError('missing --actions <a>[,<a>…]');
      const portal = await perform(service, enablePortalOp, {
        clientId: arg.client_id!,
        alias: flags.alias,
        actions: flags.actions.split(','),
        group: flags.group ?? null,
        ...(flags['token-types'] ? { tokenTypes: flags['token-types'].split(',').map((t) => t.trim()) as ['totp'] } : {}),
      });
      io.out(`portal of ${portal.clientId} at /selfservice/${portal.alias}: ${portal.actions.join(', ') || 'no actions'}${portal.group ? ` (members of ${portal.group})` : ' (every user)'}`);
    },
  },
  'portal disable': {
    args: ['<client_id>'],
    flags: [],
    usage: 'portal disable <client_id>',
    fields: { clientId: '<client_id>' },
    async run({ arg, io, service }) {
      await perform(service, disablePortalOp, { clientId: arg.client_id! });
      io.out(`portal of ${arg.client_id} disabled`);
    },
  },
  'portal list': {
    args: [],
    flags: [],
    usage: 'portal list',
    async run({ io, service }) {
      for (const p of await perform(service, listPortalsOp, {})) {
        io.out([p.clientId, `/selfservice/${p.alias}`, p.actions.join(',') || '-', p.group ? `group ${p.group}` : 'every user', `tokens ${p.tokenTypes.join(',')}`].join('\t'));
      }
    },
  },
  'token import': {
    args: ['<file.csv>'],
    fileArgs: ['file.csv'],
    flags: [],
    usage: `token import <file.csv>                  hardware tokens into the unassigned stock; one per line:
                      serial,seed,type,digits,period (seed hex or base32; type TOTP or HOTP; digits 6 or 8)`,
    fields: { file: '<file.csv>' },
    async run({ arg, io, service }) {
      let csv: string;
      try {
        csv = await readFile(arg['file.csv']!, 'utf8');
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        throw new UsageError(`cannot read ${arg['file.csv']}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (error as Error).message}`);
      }
      const { imported, totp, hotp } = await perform(service, importTokensOp, { csv });
      io.out(`imported ${imported} token${imported === 1 ? '' : 's'} (${totp} TOTP, ${hotp} HOTP) into the unassigned stock`);
    },
  },
  'token stock': {
    args: [],
    flags: [],
    usage: 'token stock                               how many hardware tokens are unassigned, assigned, disabled',
    async run({ io, service }) {
      const stock = await perform(service, tokenStockOp, {});
      io.out(`unassigned ${stock.unassigned}\tassigned ${stock.assigned}\tdisabled ${stock.disabled}`);
    },
  },
  'restore list': {
    args: [],
    flags: ['status', 'limit'],
    usage: `restore list [--status open|approved|deleted|withdrawn|all] [--limit <n>]
                      restore-access requests (the console's "User issues"); proofs: + proved, - not proved`,
    fields: { status: '--status', limit: '--limit' },
    async run({ flags, io, service }) {
      const limit = intFlag(flags.limit, '--limit');
      const rows = await perform(service, listRestoreRequestsOp, { ...(flags.status ? { status: flags.status as 'open' } : {}), ...(limit !== undefined ? { limit } : {}) });
      if (rows.length === 0) io.out(`no ${!flags.status || flags.status === 'all' ? (flags.status === 'all' ? '' : 'open ') : `${flags.status} `}request`);
      for (const r of rows) {
        const proofs = Object.entries(r.proofs).map(([what, ok]) => `${ok ? '+' : '-'}${what}`).join(' ') || 'no authenticators';
        const data = [r.newPassword ? 'new password' : '', r.newEmail ? `new email ${r.newEmail}` : ''].filter(Boolean).join(', ') || 'no new data';
        io.out([r.id, r.status, r.username, `lost ${r.lost.join(',')}`, `proofs ${proofs}`, data, r.createdAt.toISOString(), r.decidedBy ? `by ${r.decidedBy}` : ''].filter(Boolean).join('\t'));
      }
    },
  },
  'restore approve': {
    args: ['<id>'],
    flags: [],
    usage: 'restore approve <id>                      after checking who the person is: disables a lost token, applies the new data, revokes sessions',
    fields: { id: '<id>' },
    async run({ arg, io, service }) {
      const r = await perform(service, approveRestoreRequestOp, { id: arg.id! });
      const done = [r.disabledTokens ? `${r.disabledTokens} token${r.disabledTokens === 1 ? '' : 's'} disabled` : '', r.newPassword ? 'new password set' : '', r.newEmail ? `email now ${r.newEmail}` : '', 'sessions revoked', r.lost.includes('token') ? 'a new token is enrolled at the next sign-in' : ''];
      io.out(`approved the request of ${r.username}: ${done.filter(Boolean).join(', ')}`);
    },
  },
  'restore delete': {
    args: ['<id>'],
    flags: [],
    usage: 'restore delete <id>                       a request made by mistake or not by the user; nothing of the account changes',
    fields: { id: '<id>' },
    async run({ arg, io, service }) {
      const r = await perform(service, deleteRestoreRequestOp, { id: arg.id! });
      io.out(`deleted the request of ${r.username}`);
    },
  },
  'jit enable': {
    args: ['<shared-username>'],
    flags: ['group', 'minutes'],
    usage: `jit enable <shared-username> --group <group> [--minutes <n>]
                      a just-in-time shared account: members of <group> reserve it (${JIT_MINUTES.default} minutes by default) and sign in with their own code`,
    fields: { username: '<shared-username>', group: '--group', minutes: '--minutes' },
    async run({ arg, flags, io, service }) {
      if (!flags.group) throw new UsageError('missing --group <group>');
      const minutes = intFlag(flags.minutes, '--minutes');
      const { account, createdUser, createdGroup } = await perform(service, enableJitOp, { username: arg['shared-username']!, group: flags.group, ...(minutes !== undefined ? { minutes } : {}) });
      if (createdUser) io.out(`created user ${account.username} (${account.userId}), without a password`);
      if (createdGroup) io.out(`created group ${account.group}`);
      io.out(`${account.username} is shared just in time: members of ${account.group} reserve it for ${account.minutes} minute${account.minutes === 1 ? '' : 's'}`);
    },
  },
  'jit disable': {
    args: ['<shared-username>'],
    flags: [],
    usage: 'jit disable <shared-username>             no longer shared (a live reservation ends; the account and group stay)',
    fields: { username: '<shared-username>' },
    async run({ arg, io, service }) {
      await perform(service, disableJitOp, { username: arg['shared-username']! });
      io.out(`${arg['shared-username']} is no longer shared`);
    },
  },
  'jit release': {
    args: ['<shared-username>'],
    flags: [],
    usage: 'jit release <shared-username>             end the live reservation, whoever holds it',
    fields: { username: '<shared-username>' },
    async run({ arg, io, service }) {
      const { member } = await perform(service, releaseJitOp, { username: arg['shared-username']! });
      io.out(`released ${arg['shared-username']}${member ? ` (it was reserved by ${member})` : ''}`);
    },
  },
  'jit list': {
    args: [],
    flags: [],
    usage: 'jit list                                  shared accounts: group, reservation time, who holds each now',
    async run({ io, service }) {
      const accounts = await perform(service, listJitOp, {});
      if (accounts.length === 0) io.out('no shared account');
      for (const a of accounts) {
        io.out([a.username, a.userId, `group ${a.group}`, `${a.minutes} min`, a.active ? 'active' : 'disabled', a.holder ? `reserved by ${a.holder.username} until ${a.holder.until.toISOString()}` : 'free'].join('\t'));
      }
    },
  },
  'jit reservations': {
    args: [],
    flags: ['limit'],
    usage: 'jit reservations [--limit <n>]            current and past reservations, newest first',
    fields: { limit: '--limit' },
    async run({ flags, io, service }) {
      const limit = intFlag(flags.limit, '--limit');
      const rows = await perform(service, listReservationsOp, limit !== undefined ? { limit } : {});
      if (rows.length === 0) io.out('no reservation');
      for (const r of rows) io.out([r.id, r.shared, `by ${r.member}`, r.status, r.reservedAt.toISOString(), `until ${r.expiresAt.toISOString()}`].join('\t'));
    },
  },
  'ldap test': {
    args: [],
    flags: [],
    usage: 'ldap test                                 bind with the ldap.* settings and read the base DN',
    async run({ io, service }) {
      const { ok, message } = await perform(service, testLdapOp, {});
      if (!ok) throw new DomainError(`LDAP: ${message}`);
      io.out(`LDAP: ${message}`);
    },
  },
  'client set-scope': {
    args: ['<client_id>', '"<scopes>"'],
    flags: [],
    usage: 'client set-scope <client_id> "<scopes>"   the scopes the client may request (replaces them)',
    async run({ arg, io, service }) {
      await perform(service, setClientScopeOp, { clientId: arg.client_id!, scope: arg['"<scopes>"']! });
      io.out(`scopes of ${arg.client_id} set`);
    },
  },
  'api add': {
    args: ['<identifier>'],
    flags: ['name', 'scope', 'format', 'signing-alg', 'ttl'],
    usage: `api add <identifier> --name <n> --scope "<scopes>" [--format jwt|opaque] [--signing-alg ES256|RS256] [--ttl <seconds>]
                                            register an API (resource server); clients name it as resource=<identifier>`,
    fields: { name: '--name', scopes: '--scope', accessTokenFormat: '--format', signingAlg: '--signing-alg', accessTokenTtlSeconds: '--ttl' },
    async run({ arg, flags, io, service }) {
      if (flags.name === undefined) throw new UsageError('missing --name');
      if (flags.scope === undefined) throw new UsageError('missing --scope "<scopes>"');
      const format = oneOf(flags.format, '--format', ['jwt', 'opaque'] as const);
      const signingAlg = oneOf(flags['signing-alg'], '--signing-alg', ['RS256', 'ES256'] as const);
      if (format === 'opaque' && signingAlg) throw new UsageError('--signing-alg applies to --format jwt only (opaque tokens are not signed)');
      const ttl = intFlag(flags.ttl, '--ttl');
      const scopes = scopeList(flags.scope);
      const oidcScopes = scopes.filter((x) => (OIDC_SCOPES as readonly string[]).includes(x));
      if (oidcScopes.length) throw new UsageError(`--scope: ${oidcScopes.join(', ')} ${oidcScopes.length === 1 ? 'is an OpenID Connect scope' : 'are OpenID Connect scopes'}, not an API's; name the API's own (e.g. orders:read)`);
      const api = await perform(service, createApiOp, {
        identifier: arg.identifier!,
        name: flags.name,
        scopes,
        ...(format ? { accessTokenFormat: format } : {}),
        ...(signingAlg ? { signingAlg } : {}),
        ...(ttl !== undefined ? { accessTokenTtlSeconds: ttl } : {}),
      });
      io.out(`created API ${api.identifier}: ${api.accessTokenFormat} access tokens${api.accessTokenFormat === 'jwt' ? ` signed ${api.signingAlg}` : ''}, valid ${api.accessTokenTtlSeconds} s`);
      io.out(`let clients use it with: api allow ${api.identifier} <client_id> [--scope "${api.scopes.join(' ')}"]`);
    },
  },
  'api allow': {
    args: ['<identifier>', '<client_id>'],
    flags: ['scope'],
    usage: 'api allow <identifier> <client_id> [--scope "<scopes>"]   let a client get tokens for the API (all its scopes by default)',
    fields: { scopes: '--scope' },
    async run({ arg, flags, io, service }) {
      const scopes = await perform(service, allowApiOp, { identifier: arg.identifier!, clientId: arg.client_id!, ...(flags.scope === undefined ? {} : { scopes: scopeList(flags.scope) }) });
      io.out(`${arg.client_id} may obtain tokens for ${arg.identifier} with ${scopes.join(' ')}`);
    },
  },
  'api disallow': {
    args: ['<identifier>', '<client_id>'],
    flags: [],
    usage: 'api disallow <identifier> <client_id>',
    async run({ arg, io, service }) {
      await perform(service, disallowApiOp, { identifier: arg.identifier!, clientId: arg.client_id! });
      io.out('access removed; tokens already issued stay valid until they expire');
    },
  },
  'api list': {
    args: [],
    flags: [],
    usage: 'api list',
    async run({ io, service }) {
      for (const api of await perform(service, listApisOp, {})) {
        const clients = api.clients.map((a) => `${a.clientId}(${a.scope})`);
        io.out([api.identifier, api.name, api.scopes.join(' '), api.accessTokenFormat === 'jwt' ? `jwt ${api.signingAlg}` : 'opaque', `${api.accessTokenTtlSeconds} s`, clients.length ? `clients ${clients.join(' ')}` : 'no clients'].join('\t'));
      }
    },
  },
  'api remove': {
    args: ['<identifier>'],
    flags: [],
    usage: 'api remove <identifier>',
    async run({ arg, io, service }) {
      await perform(service, removeApiOp, { identifier: arg.identifier! });
      io.out('API removed');
    },
  },
  'keys rotate': {
    args: [],
    flags: [],
    usage: 'keys rotate                               publish new signing and cookie keys; old ones stay for verification',
    async run({ io, service }) {
      const kids = await perform(service, rotateKeysOp, {});
      io.out(`new signing keys: ${kids.join(', ')}\nrestart every Tessera instance to publish them and sign with them; the old keys stay published for verification`);
    },
  },
  'settings show': {
    args: [],
    flags: [],
    usage: 'settings show                             all settings (secrets masked)',
    async run({ io, service }) {
      io.out(JSON.stringify(await perform(service, showSettingsOp, {}), null, 2));
    },
  },
  'settings set': {
    args: ['<section.key>', '<value>'],
    optionalArgs: 1,
    flags: ['value-stdin'],
    usage: `settings set <section.key> <value>        e.g. mfa.otp.length 8, smtp.host mail.example.com, mfa.methods.sms false
  settings set <section.key> [--value-stdin]  a secret (smtp.password, …) from standard input, or asked for at the terminal`,
    secret: settingSecret,
    async run({ arg, flags, io, service }) {
      const key = arg['section.key']!;
      if (arg.value !== undefined && flags['value-stdin']) throw new UsageError('give the value or --value-stdin, not both');
      const request = settingSecret(arg, flags);
      if (!request && arg.value === undefined) throw new UsageError('missing <value>');
      const value = parseSettingValue(key, arg.value ?? (await io.readSecret(request!)));
      await perform(service, setSettingOp, { path: key, value });
      io.out(`${key} set`);
    },
  },
  'settings unset': {
    args: ['<section.key>'],
    flags: [],
    usage: 'settings unset <section.key>              back to the default',
    async run({ arg, io, service }) {
      const key = arg['section.key']!;
      await perform(service, setSettingOp, { path: key, value: null });
      io.out(`${key} reset to its default`);
    },
  },
  'policy add': {
    args: ['<name>'],
    flags: ['user', 'group', 'mfa', 'priority', 'factors', 'require-authenticator-app', 'manager-approval'],
    usage: `policy add <name> (--user <u> | --group <g>) --mfa required|optional|off [--priority <n>]
                      [--factors email,sms,totp,webauthn,recovery] [--require-authenticator-app] [--manager-approval]`,
    fields: { priority: '--priority', mfa: '--mfa', allowedFactors: '--factors', requireAuthenticatorApp: '--require-authenticator-app' },
    async run({ arg, flags, io, service }) {
      if ((flags.user === undefined) === (flags.group === undefined)) throw new UsageError('give exactly one of --user <username> or --group <name>');
      const mfa = oneOf(flags.mfa, '--mfa', ['required', 'optional', 'off'] as const);
      if (!mfa) throw new UsageError('missing --mfa required|optional|off');
      const priority = intFlag(flags.priority, '--priority');
      const subjectType = flags.user !== undefined ? 'user' : 'group';
      const subject = (flags.user ?? flags.group)!;
      await perform(service, createPolicyOp, {
        name: arg.name!,
        subjectType,
        subject,
        mfa,
        ...(priority !== undefined ? { priority } : {}),
        ...(flags.factors !== undefined ? { allowedFactors: flags.factors.split(',').map((f) => f.trim()).filter(Boolean) as ('email' | 'sms' | 'totp')[] } : {}),
        requireAuthenticatorApp: flags['require-authenticator-app'] ?? false,
        managerApproval: flags['manager-approval'] ?? false,
      }).catch((error: unknown) => {
        // The subject is named by whichever of --user and --group was given.
        if (error instanceof DomainError && error.field === 'subject') throw new UsageError(`--${subjectType}: ${error.message}`);
        throw error;
      });
      io.out(`created policy ${arg.name}`);
    },
  },
  'policy list': {
    args: [],
    flags: [],
    usage: 'policy list',
    async run({ io, service }) {
      for (const row of await perform(service, listPoliciesOp, {})) {
        io.out([row.name, row.subject_type === 'user' ? `user:${row.username}` : `group:${row.group_name}`, `priority ${row.priority}`, `mfa ${row.mfa}`, `factors ${(row.allowed_factors ?? ['any']).join(',')}`, row.require_authenticator_app ? 'authenticator app required' : '', row.manager_approval ? 'manager approval' : ''].filter(Boolean).join('\t'));
      }
    },
  },
  'policy remove': {
    args: ['<name>'],
    flags: [],
    usage: 'policy remove <name>',
    async run({ arg, io, service }) {
      await perform(service, removePolicyOp, { name: arg.name! });
      io.out('policy removed');
    },
  },
  'audit list': {
    args: [],
    flags: ['user', 'type', 'since', 'limit'],
    usage: `audit list [--user <username>] [--type <part of a type, e.g. login>] [--since <ISO time>] [--limit <n>]
                      newest first, one event a line: time, type, actor, subject, client`,
    fields: { user: '--user', type: '--type', since: '--since', limit: '--limit' },
    async run({ flags, io, service }) {
      const limit = intFlag(flags.limit, '--limit');
      const events = await perform(service, listAuditOp, {
        ...(flags.user !== undefined ? { user: flags.user } : {}),
        ...(flags.type !== undefined ? { type: flags.type } : {}),
        ...(flags.since !== undefined ? { since: flags.since } : {}),
        ...(limit !== undefined ? { limit } : {}),
      });
      for (const e of events) {
        io.out([e.at.toISOString(), e.type, e.actor ?? '-', e.subjectName ?? e.subject ?? '-', e.clientId ?? '-'].join('\t'));
      }
    },
  },
  'scope protect': {
    args: ['<scope>'],
    flags: ['api', 'max-age', 'factors'],
    usage: `scope protect <scope> [--api <identifier>] [--max-age <seconds>] [--factors email,sms,totp,webauthn,recovery]
                      grant it only after a second factor at consent (default: any factor, ${DEFAULT_SCOPE_MAX_AGE_SECONDS} s; 0 = every time)`,
    fields: { api: '--api', maxAgeSeconds: '--max-age', factors: '--factors' },
    async run({ arg, flags, io, service }) {
      const maxAgeSeconds = intFlag(flags['max-age'], '--max-age');
      const rule = await perform(service, protectScopeOp, {
        scope: arg.scope!,
        ...(flags.api !== undefined ? { api: flags.api } : {}),
        ...(maxAgeSeconds !== undefined ? { maxAgeSeconds } : {}),
        ...(flags.factors !== undefined ? { factors: flags.factors.split(',').map((f) => f.trim()).filter(Boolean) as ('email' | 'sms' | 'totp')[] } : {}),
      });
      io.out(`protected ${rule.scope}${rule.resource ? ` of ${rule.resource}` : ''}: ${describeRule(rule)}`);
    },
  },
  'scope unprotect': {
    args: ['<scope>'],
    flags: ['api'],
    usage: 'scope unprotect <scope> [--api <identifier>]',
    fields: { api: '--api' },
    async run({ arg, flags, io, service }) {
      await perform(service, unprotectScopeOp, { scope: arg.scope!, ...(flags.api !== undefined ? { api: flags.api } : {}) });
      io.out(`${arg.scope}${flags.api ? ` of ${flags.api}` : ''} is no longer protected`);
    },
  },
  'scope list': {
    args: [],
    flags: [],
    usage: 'scope list                                protected scopes: API (or openid), scope, factors and window',
    async run({ io, service }) {
      const rules = await perform(service, listScopeRulesOp, {});
      if (rules.length === 0) io.out('no scope is protected (see: scope protect)');
      for (const rule of rules) {
        io.out([rule.resource ?? 'openid', rule.scope, describeRule(rule)].join('\t'));
      }
    },
  },
};

export const USAGE = `Usage: ${CLI_COMMAND} <command> [options]

${Object.values(COMMANDS)
  .filter((c) => c.usage)
  .map((c) => `  ${c.usage}`)
  .join('\n')}
  help                                      this text (also --help, -h); --version prints the version

Passwords: give --password-stdin and pipe the password in, or leave both flags out to be asked at the
terminal; --password <pw> also works but leaves the password in the shell history and process list.
With the embedded database, commands run inside the Tessera server that holds the data directory.`;

export type ParsedCommand =
  | { help: true }
  | { help: false; version: true }
  | { help: false; version?: false; name: string; command: Command; arg: Record<string, string>; flags: FlagValues };

/** Checks the command line against the table: unknown commands, flags and extra or missing arguments are refused. */
/** The command a line's leading words name (up to three: "approval profile add"). */
function commandName(words: readonly string[]): string | undefined {
  for (const n of [3, 2, 1]) {
    if (words.length >= n && COMMANDS[words.slice(0, n).join(' ')]) return words.slice(0, n).join(' ');
  }
  return undefined;
}

export function parseCommand(argv: string[]): ParsedCommand {
  // A command names itself first; its own flag types (a switch that takes true|false) apply to the rest.
  const leading = commandName(argv);
  const named = leading ? COMMANDS[leading] : undefined;
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { ...FLAGS };
  for (const flag of named?.valueFlags ?? []) options[flag] = { type: 'string' };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    const option = /'(-[^' ]+)/.exec(message)?.[1];
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      // A value that starts with a dash reads as an option: say how to give it.
      const value = /'(-[^']*)'/.exec(message)?.[1];
      // Only something like "-5" reads as a value given after its flag; "--bogus" is simply unknown.
      const looksLikeValue = value !== undefined && !value.startsWith('--');
      throw new UsageError(`unknown option ${value ?? option ?? ''}${looksLikeValue ? ` (a value that starts with "-" is given as --option=${value})` : ''}`);
    }
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      if (/does not take an argument/.test(message)) throw new UsageError(`${option ?? 'this option'} takes no value`);
      throw new UsageError(`${option ?? 'an option'} needs a value (one that starts with "-" is given as ${option ?? '--option'}=-value)`);
    }
    throw new UsageError(message);
  }
  const { values, positionals, tokens } = parsed;
  if (values.version) return { help: false, version: true };
  if (values.help || positionals.length === 0 || (positionals.length === 1 && positionals[0] === 'help')) return { help: true };

  const name = commandName(positionals) ?? positionals[0]!;
  const command = COMMANDS[name];
  if (!command) {
    // The longest family the words name ("approval profile", else "approval"), and what it takes next.
    const depth = Object.keys(COMMANDS).some((n) => n.startsWith(`${positionals.slice(0, 2).join(' ')} `)) && positionals.length >= 2 ? 2 : 1;
    const prefix = positionals.slice(0, depth).join(' ');
    const subcommands = [...new Set(Object.keys(COMMANDS).filter((n) => n.startsWith(`${prefix} `)).map((n) => n.split(' ')[depth]))];
    if (subcommands.length > 0) {
      throw new UsageError(positionals.length === depth ? `"${prefix}" needs a subcommand: ${subcommands.join(', ')}` : `unknown command "${positionals.slice(0, depth + 1).join(' ').slice(0, 60)}" ("${prefix}" takes ${subcommands.join(', ')})`);
    }
    throw new UsageError(`unknown command "${positionals.slice(0, 2).join(' ').slice(0, 60)}"`);
  }

  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    if (!command.flags.includes(token.name as Flag)) throw new UsageError(`${token.rawName} is not an option of "${name}"`);
    if (seen.has(token.name) && !('multiple' in FLAGS[token.name as Flag])) throw new UsageError(`${token.rawName} is given more than once`);
    seen.add(token.name);
  }

  const rest = positionals.slice(name.split(' ').length);
  const required = command.args.length - (command.optionalArgs ?? 0);
  if (rest.length < required) throw new UsageError(`missing ${command.args[rest.length]}`);
  if (rest.length > command.args.length) throw new UsageError(`unexpected argument "${rest[command.args.length]!.slice(0, 60)}"`);
  const arg = Object.fromEntries(rest.map((value, i) => [command.args[i]!.replace(/^<|>$/g, ''), value]));
  return { help: false, name, command, arg, flags: values as FlagValues };
}

/** The secret a parsed command line will ask for at the terminal, if any. */
export function secretRequest(parsed: ParsedCommand): SecretRequest | null {
  return parsed.help || parsed.version ? null : (parsed.command.secret?.(parsed.arg, parsed.flags) ?? null);
}

/** The lines a failed command prints: one naming the problem (and the flag), plus a pointer to usage for typing mistakes. */
export function errorLines(error: unknown, command?: Command, cliCommand = CLI_COMMAND): string[] {
  if (error instanceof UsageError) return [`error: ${error.message} (see ${cliCommand} --help)`];
  if (error instanceof DomainError) {
    const flag = error.field ? command?.fields?.[error.field] : undefined;
    return [`error: ${flag ? `${flag}: ` : ''}${error.message}`];
  }
  if (error instanceof ConfigError) return [error.message];
  return [`error: ${error instanceof Error ? error.message : String(error)}`];
}

/** Help and the version need no database: printed here, true when the command line was one of them. */
export function answeredWithoutDatabase(parsed: ParsedCommand, io: RemoteIo): parsed is ParsedCommand & ({ help: true } | { version: true }) {
  if (parsed.help) io.out(USAGE);
  else if (parsed.version) io.out(`tessera ${VERSION}`);
  else return false;
  return true;
}

/**
 * Runs one command line against a database and prints through io; every change is audited with
 * the acting OS user. Resolves to the exit code (0, or 1 after printing why not).
 */
export async function runCommand(argv: string[], io: RemoteIo, target: CommandTarget): Promise<number> {
  let parsed: ParsedCommand | undefined;
  try {
    parsed = parseCommand(argv);
    if (answeredWithoutDatabase(parsed, io)) return 0;
    const { command, flags } = parsed;
    await command.run({
      ...target,
      io,
      service: { ...target, actor: { label: `cli:${io.actor}`, role: 'admin' }, via: { command: parsed.name } },
      arg: parsed.arg,
      flags,
      async password() {
        if (flags.password !== undefined && flags['password-stdin']) throw new UsageError('give --password or --password-stdin, not both');
        const password = flags.password ?? (await io.readSecret(passwordSecret(parsed!.help || parsed!.version ? {} : parsed!.arg, flags)!));
        const problem = passwordProblem(password);
        if (problem) throw new DomainError(problem);
        return password;
      },
    });
    return 0;
  } catch (error) {
    // A forwarded command's hints name the CLI as the person at the terminal runs it.
    for (const line of errorLines(error, parsed && !parsed.help && !parsed.version ? parsed.command : undefined, io.cliCommand)) io.err(line);
    return 1;
  }
}

/**
 * The directory the person typed the command in: `npm run cli` runs in the project's folder and
 * says where it was started in INIT_CWD; `node dist/src/cli.js` runs where it was typed.
 */
export function typedIn(env: NodeJS.ProcessEnv = process.env): string {
  return env.npm_lifecycle_event === 'cli' && env.INIT_CWD ? env.INIT_CWD : process.cwd();
}

/**
 * The command line with its file arguments made absolute against the directory it was typed in: a
 * command handed to the server that holds the embedded database reads the file the person meant.
 */
export function withAbsolutePaths(parsed: ParsedCommand, argv: string[], base = typedIn()): string[] {
  if (parsed.help || parsed.version === true || !parsed.command.fileArgs) return argv;
  const out = [...argv];
  const from = parsed.name.split(' ').length;
  for (const name of parsed.command.fileArgs) {
    const value = parsed.arg[name];
    if (!value) continue;
    const at = out.indexOf(value, from);
    if (at >= 0) out[at] = path.resolve(base, value);
  }
  return out;
}
