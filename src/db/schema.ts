import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;
/** A JSON column with a database default: optional on insert. */
type JsonWithDefault<T> = ColumnType<T, string | undefined, string>;

export interface UsersTable {
  id: Generated<string>;
  username: string;
  email: string | null;
  email_verified: Generated<boolean>;
  phone: string | null;
  phone_verified: Generated<boolean>;
  given_name: string | null;
  family_name: string | null;
  password_hash: string | null;
  status: Generated<'active' | 'disabled'>;
  failed_logins: Generated<number>;
  locked_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  attributes: JsonWithDefault<Record<string, unknown>>;
  /** local: the password is checked here; ldap: by the directory, this record follows it at each sign-in. */
  source: Generated<'local' | 'ldap'>;
  ldap_dn: string | null;
  /** A local user's manager, told of or approving their sign-ins. */
  sponsor_name: string | null;
  sponsor_email: string | null;
  sponsor_phone: string | null;
  /** Enrol a new factor at the next sign-in (after an approved access restore). */
  must_enrol: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface GroupsTable {
  id: Generated<string>;
  name: string;
  description: string | null;
  /** admins and auditors: they decide who may use the admin console, and cannot be removed. */
  builtin: Generated<boolean>;
  created_at: Timestamp;
}

export interface GroupMembersTable {
  group_id: string;
  user_id: string;
}

export interface ClientsTable {
  client_id: string;
  metadata: Json<Record<string, unknown>>;
  require_consent: Generated<boolean>;
  mfa_required: Generated<boolean>;
  /** Registered by Tessera itself (the admin console): not removed or loosened by administrators. */
  builtin: Generated<boolean>;
  /** How old a second factor may be for this client; null: the mfa.maxAgeSeconds setting. */
  mfa_max_age_seconds: number | null;
  /** Sign-ins to this client go through the manager approval step. */
  manager_approval: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ApprovalProfilesTable {
  name: string;
  mode: 'inform' | 'approve';
  base_url: string | null;
  message: string;
  link_minutes: number;
  delivery: 'email' | 'sms';
  subject: string;
  default_recipient: string | null;
  directories: ('local' | 'ldap')[];
  factors: string[] | null;
  created_at: Timestamp;
}

export interface ApprovalPoliciesTable {
  name: string;
  profile: string;
  attribute: string;
  values: string[];
  client_id: string | null;
  position: number;
  created_at: Timestamp;
}

export type ApprovalStatus = 'informed' | 'pending' | 'approved' | 'rejected' | 'expired' | 'undeliverable' | 'cancelled';

export interface ApprovalRequestsTable {
  id: Generated<string>;
  token_hash: string | null;
  profile: string;
  mode: 'inform' | 'approve';
  user_id: string;
  client_id: string;
  interaction_uid: string | null;
  status: ApprovalStatus;
  recipient: string | null;
  /** Where the recipient came from: ldap-manager, sponsor or default. */
  recipient_source: string;
  ip: string | null;
  user_agent: string | null;
  created_at: Timestamp;
  expires_at: ColumnType<Date, Date, Date>;
  decided_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  decided_ip: string | null;
}

export interface SessionApprovalsTable {
  session_uid: string;
  client_id: string;
  request_id: string;
  expires_at: ColumnType<Date, Date, Date>;
}

/** Sessions of Tessera's own web apps (the admin console, the account portal); only the hash of the id is stored. */
export interface AppSessionsTable {
  id_hash: string;
  app: 'admin' | 'account';
  user_id: string;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  expires_at: ColumnType<Date, Date, Date>;
  /** When the user last authenticated (auth_time), and last passed a second factor (null: not in this session). */
  auth_at: ColumnType<Date, Date, Date>;
  factor_at: ColumnType<Date | null, Date | null, Date | null>;
  pending: string | null;
}

export type PortalAction =
  | 'register-token' | 'register-existing-token' | 'reassign-token' | 'unassign-token' | 'resync' | 'set-pin' | 'remove-pin'
  | 'create-password' | 'change-password' | 'change-email' | 'change-phone' | 'change-login' | 'change-name';

export interface PortalsTable {
  client_id: string;
  alias: string;
  actions: PortalAction[];
  group_id: string | null;
  token_types: ('totp' | 'hotp')[];
  created_at: Timestamp;
  updated_at: Timestamp;
}

export type RestoreLoss = 'token' | 'password' | 'email';

export interface RestoreRequestsTable {
  id: Generated<string>;
  user_id: string;
  portal: string | null;
  lost: RestoreLoss[];
  /** Each authenticator the user has: whether it was proved in the request (true), failed or not tried (false). Absent: the user has none. */
  proofs: ColumnType<Partial<Record<'password' | 'email' | 'token', boolean>>, string, string>;
  new_password_hash: string | null;
  new_email: string | null;
  status: Generated<'open' | 'approved' | 'deleted' | 'withdrawn'>;
  ip: string | null;
  user_agent: string | null;
  created_at: Timestamp;
  decided_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  decided_by: string | null;
  /** The draft that filed it: a draft files one request at most. */
  draft_id: string | null;
}

/** A just-in-time shared account: its sign-ins are reserved by members of its group. */
export interface SharedAccountsTable {
  user_id: string;
  group_id: string;
  minutes: Generated<number>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface JitReservationsTable {
  id: Generated<string>;
  shared_user_id: string;
  member_id: string;
  /** live: the member may sign in as the shared account; spent: by that sign-in; expired; released by the member or an administrator. */
  status: Generated<'live' | 'spent' | 'expired' | 'released'>;
  reserved_at: Timestamp;
  expires_at: ColumnType<Date, Date | string, Date | string>;
  ended_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  ip: string | null;
  /** The session a spent reservation signed in. */
  session_uid: ColumnType<string | null, string | null | undefined, string | null>;
  /** The authorization code issued for the sign-in (its stored id): that code's tokens name the member. */
  code_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface RecoveryCodesTable {
  user_id: string;
  /** HMAC-SHA-256 of the normalised code under a key derived from the master secret. */
  code_hash: string;
  created_at: Timestamp;
  used_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
}

export interface WebauthnCredentialsTable {
  /** The credential id, base64url. */
  id: string;
  user_id: string;
  name: string;
  /** The COSE public key as registered. */
  public_key: Buffer;
  counter: ColumnType<string, number | string | undefined, number | string>;
  transports: ColumnType<string[], string[] | undefined, string[]>;
  device_type: 'singleDevice' | 'multiDevice';
  backed_up: ColumnType<boolean, boolean | undefined, boolean>;
  aaguid: string;
  created_at: Timestamp;
  last_used_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
}

export interface WebauthnChallengesTable {
  user_id: string;
  ceremony: 'register' | 'authenticate';
  bound_to: string;
  challenge: string;
  expires_at: ColumnType<Date, Date, Date>;
}

export interface ResourceServersTable {
  identifier: string;
  name: string;
  scope: string;
  access_token_format: 'jwt' | 'opaque';
  signing_alg: 'RS256' | 'ES256';
  access_token_ttl: number;
  created_at: Timestamp;
}

export interface ClientApiAccessTable {
  client_id: string;
  resource_server: string;
  scope: string;
  created_at: Timestamp;
}

export interface ScopesTable {
  name: string;
  description: string;
  created_at: Timestamp;
}

export interface OidcModelsTable {
  model: string;
  id: string;
  payload: Json<Record<string, unknown>>;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  expires_at: ColumnType<Date | null, Date | null, Date | null>;
  consumed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /** A rotated refresh token's successor (stored id). */
  successor: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface KeysTable {
  kid: string;
  use: 'sig' | 'cookie';
  alg: string;
  /** The private JWK (or cookie key), sealed with the master key. */
  secret: string;
  status: Generated<'active' | 'retired'>;
  created_at: Timestamp;
  retired_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface AuditEventsTable {
  id: Generated<string>;
  at: Timestamp;
  type: string;
  actor: string | null;
  subject: string | null;
  client_id: string | null;
  ip: string | null;
  user_agent: string | null;
  details: JsonWithDefault<Record<string, unknown>>;
}

export interface SettingsTable {
  section: string;
  value: Json<Record<string, unknown>>;
  updated_at: Timestamp;
}

export interface AuthenticatorsTable {
  id: Generated<string>;
  /** Null for an imported hardware token nobody has registered yet. */
  user_id: string | null;
  type: 'totp' | 'hotp';
  /** app: enrolled by QR code; hardware: imported by serial number. */
  kind: Generated<'app' | 'hardware'>;
  serial: string | null;
  /** HOTP: the next counter value accepted (bigint, as a string). */
  counter: ColumnType<string | null, number | null | undefined, number | null>;
  /** TOTP: the device's clock offset in time steps, learnt by a resync. */
  drift_steps: Generated<number>;
  pin_hash: string | null;
  pin_position: 'before' | 'after' | null;
  disabled_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  label: string;
  /** The shared secret (base32), sealed with the master key. */
  secret: string;
  digits: Generated<number>;
  period: Generated<number>;
  algorithm: Generated<string>;
  /** bigint: comes back as a string. */
  last_used_step: ColumnType<string | null, number | null | undefined, number | null>;
  confirmed_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  last_used_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  /** The sign-in (interaction uid) a pending authenticator was shown to; null once confirmed. */
  enrolment_uid: string | null;
  created_at: Timestamp;
}

export type ChallengeFactor = 'email' | 'sms';

export interface OtpChallengesTable {
  id: Generated<string>;
  user_id: string;
  factor: ChallengeFactor;
  destination: string;
  code_hash: string;
  purpose: Generated<string>;
  interaction_uid: string | null;
  ip: string | null;
  attempts: Generated<number>;
  max_attempts: number;
  expires_at: ColumnType<Date, Date, Date>;
  consumed_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  delivered: Generated<boolean>;
  created_at: Timestamp;
}

export type MfaMode = 'required' | 'optional' | 'off';

export interface AccessPoliciesTable {
  id: Generated<string>;
  name: string;
  subject_type: 'user' | 'group';
  subject_id: string;
  priority: Generated<number>;
  mfa: MfaMode;
  allowed_factors: string[] | null;
  require_authenticator_app: Generated<boolean>;
  manager_approval: Generated<boolean>;
  created_at: Timestamp;
}

export interface InteractionProgressTable {
  uid: string;
  account_id: string;
  methods: Json<{ method: string; at: number }[]>;
  challenge_id: string | null;
  enrol_after_factor: Generated<boolean>;
  factor_passed: string | null;
  requirement: ColumnType<unknown, string | null | undefined, string | null>;
  step: Generated<'login' | 'approval' | 'consent'>;
  /** A sign-in as a shared account: the reservation it spends (and so the member signing in). */
  reservation_id: ColumnType<string | null, string | null | undefined, string | null>;
  expires_at: ColumnType<Date, Date, Date>;
  updated_at: Timestamp;
}

export interface ScopeRulesTable {
  resource: string;
  scope: string;
  factors: string[] | null;
  max_age_seconds: number;
  updated_at: Timestamp;
}

export interface SessionFactorsTable {
  session_uid: string;
  factor: string;
  account_id: string;
  passed_at: ColumnType<Date, Date | string, Date | string>;
  expires_at: ColumnType<Date, Date, Date>;
  /** What the pass proved, where the factor alone does not say (a passkey: hwk or swk, and user). */
  amr: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
}

export interface GrantStepUpsTable {
  grant_id: string;
  resource: string;
  scope: string;
  factor: string;
  factor_age_seconds: number;
  at_consent: boolean;
  granted_at: Timestamp;
  expires_at: ColumnType<Date, Date, Date>;
}

export interface RateLimitsTable {
  key: string;
  window_started: Generated<Date>;
  count: number;
}

export interface DevOutboxTable {
  id: Generated<string>;
  at: Timestamp;
  channel: string;
  recipient: string;
  subject: string | null;
  body: string;
}

export interface Database {
  users: UsersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  clients: ClientsTable;
  scopes: ScopesTable;
  resource_servers: ResourceServersTable;
  client_api_access: ClientApiAccessTable;
  oidc_models: OidcModelsTable;
  keys: KeysTable;
  audit_events: AuditEventsTable;
  settings: SettingsTable;
  authenticators: AuthenticatorsTable;
  otp_challenges: OtpChallengesTable;
  access_policies: AccessPoliciesTable;
  interaction_progress: InteractionProgressTable;
  dev_outbox: DevOutboxTable;
  rate_limits: RateLimitsTable;
  scope_rules: ScopeRulesTable;
  session_factors: SessionFactorsTable;
  grant_step_ups: GrantStepUpsTable;
  app_sessions: AppSessionsTable;
  portals: PortalsTable;
  restore_requests: RestoreRequestsTable;
  shared_accounts: SharedAccountsTable;
  jit_reservations: JitReservationsTable;
  recovery_codes: RecoveryCodesTable;
  webauthn_credentials: WebauthnCredentialsTable;
  webauthn_challenges: WebauthnChallengesTable;
  approval_profiles: ApprovalProfilesTable;
  approval_policies: ApprovalPoliciesTable;
  approval_requests: ApprovalRequestsTable;
  session_approvals: SessionApprovalsTable;
}

export type User = Selectable<UsersTable>;
export type NewUser = Insertable<UsersTable>;
export type UserUpdate = Updateable<UsersTable>;
export type Group = Selectable<GroupsTable>;
export type ClientRow = Selectable<ClientsTable>;
export type AuditEvent = Selectable<AuditEventsTable>;
export type Authenticator = Selectable<AuthenticatorsTable>;
export type OtpChallenge = Selectable<OtpChallengesTable>;
export type AccessPolicy = Selectable<AccessPoliciesTable>;
export type ApprovalProfile = Selectable<ApprovalProfilesTable>;
export type ApprovalPolicy = Selectable<ApprovalPoliciesTable>;
export type ApprovalRequest = Selectable<ApprovalRequestsTable>;
