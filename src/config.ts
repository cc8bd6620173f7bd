import { z } from 'zod';
// Plain wording for validation messages ("must be at most 65535", not zod's own).
import './domain-error.js';

/**
 * Every setting Tessera reads, validated once at start-up. The README's
 * "Configuration" table documents each variable; keep the two in step.
 */
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const positiveInt = z.coerce.number().int().positive();

const envSchema = z.object({
  TESSERA_MODE: z.enum(['dev', 'production']).optional(),
  NODE_ENV: z.string().optional(),
  PORT: z.string().trim().regex(/^\d+$/, 'must be a port number (0 to 65535)').transform(Number).pipe(z.number().max(65535, 'must be a port number (0 to 65535)')).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  ISSUER: z
    .string()
    .url()
    .refine((u) => /^https?:\/\/[^/]/.test(u), 'must be an http:// or https:// URL, such as https://id.example.com')
    .refine((u) => !u.endsWith('/'), 'must not end with a slash')
    .refine((u) => !URL.canParse(u) || (!new URL(u).search && !new URL(u).hash), 'must not have a query or fragment')
    .optional(),
  DATABASE_URL: z
    .string()
    .refine((u) => /^postgres(ql)?:\/\//.test(u), 'must be a postgres:// or postgresql:// URL')
    .optional(),
  DATABASE_POOL_SIZE: positiveInt.max(200).default(10),
  DATABASE_PREPARED_STATEMENTS: bool.default(true),
  DATA_DIR: z.string().min(1).default('./data'),
  TESSERA_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TRUST_PROXY: bool.default(false),
  LOCKOUT_THRESHOLD: positiveInt.max(1000).default(5),
  LOCKOUT_BASE_SECONDS: positiveInt.default(30),
  LOCKOUT_MAX_SECONDS: positiveInt.default(3600),
  LOGIN_ATTEMPTS_PER_IP: positiveInt.max(100000).default(100),
  LOGIN_ATTEMPTS_PER_USERNAME: positiveInt.max(100000).default(30),
  LOGIN_ATTEMPTS_WINDOW_SECONDS: positiveInt.max(86400).default(600),
  SESSION_TTL_SECONDS: positiveInt.default(14 * 24 * 3600),
  ACCESS_TOKEN_TTL_SECONDS: positiveInt.default(3600),
  REFRESH_TOKEN_TTL_SECONDS: positiveInt.default(30 * 24 * 3600),
  REFRESH_TOKEN_REUSE_SECONDS: z.coerce.number().int().min(0).max(60).default(10),
  PURGE_INTERVAL_SECONDS: positiveInt.default(600),
  DEMO: bool.optional(),
  METRICS: bool.default(false),
  CLIENT_CACHE_SECONDS: z.coerce.number().int().min(0).max(3600).default(10),
  ADMIN_IDLE_MINUTES: positiveInt.max(24 * 60).default(15),
  ADMIN_SESSION_HOURS: positiveInt.max(7 * 24).default(8),
  ADMIN_REVERIFY_MINUTES: z.coerce.number().int().min(0).max(24 * 60).default(5),
  ACCOUNT_IDLE_MINUTES: positiveInt.max(24 * 60).default(30),
  ACCOUNT_SESSION_HOURS: positiveInt.max(7 * 24).default(8),
  ACCOUNT_REVERIFY_MINUTES: z.coerce.number().int().min(0).max(24 * 60).default(5),
});

export type Mode = 'dev' | 'production';

/** Sessions of one of Tessera's own web apps: idle timeout, absolute lifetime, and how old a factor may be for a sensitive change. */
export interface AppSessionConfig {
  idleSeconds: number;
  absoluteSeconds: number;
  reverifySeconds: number;
}

export interface Config {
  mode: Mode;
  port: number;
  host: string;
  /** null until the listening port is known (PORT=0 in tests). */
  issuer: string | null;
  databaseUrl: string | null;
  databasePoolSize: number;
  /** Named prepared statements for the hot queries; off behind a PgBouncer that cannot keep them. */
  databasePreparedStatements: boolean;
  dataDir: string;
  secret: string | null;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  trustProxy: boolean;
  lockout: { threshold: number; baseSeconds: number; maxSeconds: number };
  /** Password attempts allowed per client IP and per submitted username in each window, before any hash is computed. */
  loginAttempts: { perIp: number; perUsername: number; windowSeconds: number };
  ttl: { sessionSeconds: number; accessTokenSeconds: number; refreshTokenSeconds: number; refreshTokenReuseSeconds: number };
  purgeIntervalSeconds: number;
  demo: boolean;
  /** Serve /metrics (Prometheus text format). Off by default: expose it only to your monitoring network. */
  metrics: boolean;
  /** How long an instance keeps a client's registration before reading it again. */
  clientCacheSeconds: number;
  /** The admin console: idle timeout and absolute lifetime of its sessions, and how old a factor may be for a sensitive change. */
  admin: AppSessionConfig;
  /** The account portal (/account, /selfservice/<alias>): the same, for users changing their own account. */
  account: AppSessionConfig;
}

const SENSITIVE = new Set(['TESSERA_SECRET', 'DATABASE_URL']);

export class ConfigError extends Error {}

/**
 * Reads and validates the environment. The CLI (`purpose: 'cli'`) serves no pages, so production
 * does not make it name the ISSUER.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, purpose: 'server' | 'cli' = 'server'): Config {
  // An empty variable (as docker-compose and .env files leave them) means "not set".
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    // Every bad variable at once, one line each, so a deployment is mended in one go.
    const lines = new Map<string, string>();
    for (const issue of parsed.error.issues) {
      const variable = String(issue.path[0] ?? 'environment');
      // Never echo values that may carry credentials.
      const value = SENSITIVE.has(variable) ? undefined : env[variable];
      if (!lines.has(variable)) lines.set(variable, `Invalid configuration: ${variable} ${issue.message}${value === undefined ? '' : ` (got "${truncate(value)}")`}`);
    }
    throw new ConfigError([...lines.values()].join('\n'));
  }
  const e = parsed.data;
  const mode: Mode = e.TESSERA_MODE ?? (e.NODE_ENV === 'production' ? 'production' : 'dev');
  const problems: string[] = [];
  if (mode === 'production') {
    if (!e.TESSERA_SECRET) problems.push('TESSERA_SECRET is required in production mode');
    if (!e.ISSUER && purpose === 'server') problems.push('ISSUER is required in production mode');
    if (!e.DATABASE_URL) problems.push('DATABASE_URL is required in production mode (the embedded database is for development)');
    if (e.DEMO) problems.push('DEMO=true is for dev mode only (the demo accounts have published passwords)');
  }
  if (e.LOCKOUT_MAX_SECONDS < e.LOCKOUT_BASE_SECONDS) problems.push('LOCKOUT_MAX_SECONDS must be at least LOCKOUT_BASE_SECONDS');
  if (problems.length > 0) throw new ConfigError(problems.map((p) => `Invalid configuration: ${p}`).join('\n'));
  return {
    mode,
    port: e.PORT,
    host: e.HOST,
    issuer: e.ISSUER ?? (e.PORT === 0 ? null : `http://localhost:${e.PORT}`),
    databaseUrl: e.DATABASE_URL ?? null,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS,
    dataDir: e.DATA_DIR,
    secret: e.TESSERA_SECRET ?? null,
    logLevel: e.LOG_LEVEL,
    trustProxy: e.TRUST_PROXY,
    lockout: { threshold: e.LOCKOUT_THRESHOLD, baseSeconds: e.LOCKOUT_BASE_SECONDS, maxSeconds: e.LOCKOUT_MAX_SECONDS },
    loginAttempts: { perIp: e.LOGIN_ATTEMPTS_PER_IP, perUsername: e.LOGIN_ATTEMPTS_PER_USERNAME, windowSeconds: e.LOGIN_ATTEMPTS_WINDOW_SECONDS },
    ttl: {
      sessionSeconds: e.SESSION_TTL_SECONDS,
      accessTokenSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTokenSeconds: e.REFRESH_TOKEN_TTL_SECONDS,
      refreshTokenReuseSeconds: e.REFRESH_TOKEN_REUSE_SECONDS,
    },
    purgeIntervalSeconds: e.PURGE_INTERVAL_SECONDS,
    demo: e.DEMO ?? mode === 'dev',
    metrics: e.METRICS,
    clientCacheSeconds: e.CLIENT_CACHE_SECONDS,
    admin: { idleSeconds: e.ADMIN_IDLE_MINUTES * 60, absoluteSeconds: e.ADMIN_SESSION_HOURS * 3600, reverifySeconds: e.ADMIN_REVERIFY_MINUTES * 60 },
    account: { idleSeconds: e.ACCOUNT_IDLE_MINUTES * 60, absoluteSeconds: e.ACCOUNT_SESSION_HOURS * 3600, reverifySeconds: e.ACCOUNT_REVERIFY_MINUTES * 60 },
  };
}

function truncate(value: string): string {
  return value.length > 40 ? `${value.slice(0, 40)}…` : value;
}
