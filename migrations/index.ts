import type { Migration } from 'kysely';
import * as m0001 from './0001_core.js';
import * as m0002 from './0002_mfa.js';
import * as m0003 from './0003_resource_servers.js';
import * as m0004 from './0004_enrol_after_factor.js';
import * as m0005 from './0005_rate_limits.js';
import * as m0006 from './0006_scope_step_up.js';
import * as m0007 from './0007_admin_groups.js';
import * as m0008 from './0008_admin_console.js';
import * as m0009 from './0009_approvals.js';
import * as m0010 from './0010_self_service.js';
import * as m0011 from './0011_restore_drafts.js';
import * as m0012 from './0012_shared_accounts.js';
import * as m0013 from './0013_shared_sign_in.js';
import * as m0014 from './0014_recovery_codes.js';
import * as m0015 from './0015_passkeys.js';
import * as m0016 from './0016_refresh_rotation.js';

/** Every migration, in order. A new file is added here with the next number. */
export const migrations: Record<string, Migration> = {
  '0001_core': m0001,
  '0002_mfa': m0002,
  '0003_resource_servers': m0003,
  '0004_enrol_after_factor': m0004,
  '0005_rate_limits': m0005,
  '0006_scope_step_up': m0006,
  '0007_admin_groups': m0007,
  '0008_admin_console': m0008,
  '0009_approvals': m0009,
  '0010_self_service': m0010,
  '0011_restore_drafts': m0011,
  '0012_shared_accounts': m0012,
  '0013_shared_sign_in': m0013,
  '0014_recovery_codes': m0014,
  '0015_passkeys': m0015,
  '0016_refresh_rotation': m0016,
};
