import type { Context } from 'koa';
import { sql } from 'kysely';
import { perform, ServiceError } from '../../service.js';
import {
  addMemberOp, createGroupOp, createUserOp, listGroupsOp, removeAuthenticatorOp, removeGroupOp, removePasskeyOp, removeRecoveryCodesOp, removeMemberOp, removeUserOp, resetMfaOp, searchUsersOp,
  setPasswordOp, setStatusOp, showGroupOp, showUserOp, unlockUserOp, updateUserOp,
} from '../../users.js';
import { listAuditOp } from '../../audit-log.js';
import { setSponsorOp } from '../../approvals.js';
import { seeOther } from '../../../http/redirect.js';
import type { Db } from '../../../db/index.js';
import { optional, param, text } from '../../../web/form.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';

const userPath = (username: string) => `/admin/users/${encodeURIComponent(username)}`;
const pageNumber = (value: unknown) => (typeof value === 'string' && /^\d{1,6}$/.test(value) && Number(value) > 0 ? Math.min(Number(value), 100_000) : 1);

/**
 * Joining or leaving admins or auditors, or a group that carries an access policy, changes who runs
 * the console or who needs MFA: the administrator passes a factor first when theirs is stale.
 */
async function membershipIsSensitive(db: Db, group: string): Promise<boolean> {
  if (['admins', 'auditors'].includes(group)) return true;
  const row = await db
    .selectFrom('groups')
    .select((eb) => eb.exists(eb.selectFrom('access_policies').select('access_policies.id').where('subject_type', '=', 'group').whereRef('subject_id', '=', 'groups.id')).as('governed'))
    .where('name', '=', group)
    .executeTakeFirst();
  return Boolean(row?.governed);
}

/** Users (search, create, edit, lock and factors, membership, recent events) and groups. */
export function directoryPages(c: Console, idleMinutes: number): void {
  const { pages, show, change } = c;

  pages.get('/', async (ctx) => {
    const { db } = consoleOf(ctx).service;
    const row = await db
      .selectNoFrom([
        sql<number>`(select count(*)::int from users)`.as('users'),
        sql<number>`(select count(*)::int from users where locked_until > now())`.as('locked'),
        sql<number>`(select count(*)::int from clients where not builtin)`.as('clients'),
        sql<number>`(select count(*)::int from access_policies)`.as('policies'),
        sql<number>`(select count(*)::int from scope_rules)`.as('rules'),
        sql<number>`(select count(*)::int from audit_events where type = 'login.failure' and at > now() - interval '1 day')`.as('failures'),
      ])
      .executeTakeFirstOrThrow();
    show(ctx, 'home', 'Admin console', { counts: row, idleMinutes });
  });

  // Users

  pages.get('/users', async (ctx) => {
    const query = typeof ctx.query.q === 'string' ? ctx.query.q.slice(0, 128) : '';
    const page = pageNumber(ctx.query.page);
    const { users, more } = await perform(consoleOf(ctx).service, searchUsersOp, { query, page });
    show(ctx, 'users', 'Users', { users, query, page, more });
  });

  const newUserPage = async (ctx: Context, redisplay?: Redisplay) => show(ctx, 'user-new', 'New user', { redisplay });
  pages.get('/users/new', (ctx) => newUserPage(ctx));
  change('/users/new', {
    label: 'Create a user',
    redisplay: newUserPage,
    async run(ctx, f, { service }) {
      const noPassword = f.has('noPassword');
      if (noPassword && f.get('password')) throw new ServiceError('leave the password empty for an account without one', 'password');
      if (noPassword && !f.has('emailVerified')) throw new ServiceError('an account without a password signs in with a code sent to its email: give a verified email', 'email');
      const user = await perform(service, createUserOp, {
        username: text(f, 'username'),
        password: noPassword ? null : f.get('password') ?? '',
        email: optional(f, 'email'),
        emailVerified: f.has('emailVerified'),
        phone: optional(f, 'phone'),
        phoneVerified: f.has('phoneVerified'),
        givenName: optional(f, 'givenName'),
        familyName: optional(f, 'familyName'),
      });
      seeOther(ctx, `${userPath(user.username)}?done=created`);
    },
  });

  const userPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const username = param(ctx, 'username');
    const [details, groups, events] = await Promise.all([
      perform(service, showUserOp, { username }),
      perform(service, listGroupsOp, {}),
      perform(service, listAuditOp, { user: username, limit: 20 }),
    ]);
    show(ctx, 'user', details.user.username, { details, groups: groups.map((g) => g.name).filter((g) => !details.groups.includes(g)), events, redisplay });
  };
  pages.get('/users/:username', (ctx) => userPage(ctx));

  change('/users/:username/profile', {
    label: 'Change a user’s profile',
    redisplay: userPage,
    async run(ctx, f, { service }) {
      const username = param(ctx, 'username');
      await perform(service, updateUserOp, {
        username,
        email: optional(f, 'email'),
        emailVerified: f.has('emailVerified'),
        phone: optional(f, 'phone'),
        phoneVerified: f.has('phoneVerified'),
        givenName: optional(f, 'givenName'),
        familyName: optional(f, 'familyName'),
      });
      seeOther(ctx, `${userPath(username)}?done=saved`);
    },
  });
  change('/users/:username/status', {
    label: 'Enable or disable a user',
    async run(ctx, f, { service }) {
      const status = f.get('status') === 'active' ? 'active' : 'disabled';
      await perform(service, setStatusOp, { username: param(ctx, 'username'), status });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=${status === 'active' ? 'enabled' : 'disabled'}`);
    },
  });
  change('/users/:username/sponsor', {
    label: (_f, ctx) => `Change the sponsor of ${param(ctx, 'username')}`,
    sensitive: true,
    redisplay: userPage,
    async run(ctx, f, { service }) {
      const username = param(ctx, 'username');
      await perform(service, setSponsorOp, { username, name: optional(f, 'sponsorName'), email: optional(f, 'sponsorEmail'), phone: optional(f, 'sponsorPhone') }).catch((error: unknown) => {
        // The operation names name, email, phone: on this page they are the sponsor's fields.
        if (error instanceof ServiceError && error.field) throw new ServiceError(error.message, `sponsor${error.field[0]!.toUpperCase()}${error.field.slice(1)}`);
        throw error;
      });
      seeOther(ctx, `${userPath(username)}?done=saved`);
    },
  });
  change('/users/:username/unlock', {
    label: 'Unlock a user',
    async run(ctx, _f, { service }) {
      await perform(service, unlockUserOp, { username: param(ctx, 'username') });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=unlocked`);
    },
  });
  change('/users/:username/password', {
    label: 'Set a user’s password',
    sensitive: true,
    redisplay: userPage,
    async run(ctx, f, { service }) {
      await perform(service, setPasswordOp, { username: param(ctx, 'username'), password: f.get('password') ?? '' });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=password-set`);
    },
  });
  change('/users/:username/authenticators/remove', {
    label: 'Remove an authenticator',
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removeAuthenticatorOp, { username: param(ctx, 'username'), authenticatorId: f.get('authenticator') ?? '' });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=authenticator-removed`);
    },
  });
  change('/users/:username/passkeys/remove', {
    label: 'Remove a passkey',
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removePasskeyOp, { username: param(ctx, 'username'), passkey: f.get('passkey') ?? '' });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=passkey-removed`);
    },
  });
  change('/users/:username/recovery-codes/remove', {
    label: 'Void a user’s recovery codes',
    sensitive: true,
    async run(ctx, _f, { service }) {
      await perform(service, removeRecoveryCodesOp, { username: param(ctx, 'username') });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=recovery-codes-removed`);
    },
  });
  change('/users/:username/reset-mfa', {
    label: 'Remove every authenticator app, passkey and recovery code of a user (reset MFA)',
    sensitive: true,
    async run(ctx, _f, { service }) {
      await perform(service, resetMfaOp, { username: param(ctx, 'username') });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=mfa-reset`);
    },
  });
  change('/users/:username/groups/add', {
    label: (f, ctx) => `Add ${param(ctx, 'username')} to the group ${text(f, 'group')}`,
    sensitive: (f, ctx) => membershipIsSensitive(consoleOf(ctx).service.db, text(f, 'group')),
    redisplay: userPage,
    async run(ctx, f, { service }) {
      const added = await perform(service, addMemberOp, { group: text(f, 'group'), username: param(ctx, 'username') });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=${added ? 'member-added' : 'already-member'}`);
    },
  });
  change('/users/:username/groups/remove', {
    label: (f, ctx) => `Remove ${param(ctx, 'username')} from the group ${text(f, 'group')}`,
    sensitive: (f, ctx) => membershipIsSensitive(consoleOf(ctx).service.db, text(f, 'group')),
    async run(ctx, f, { service }) {
      await perform(service, removeMemberOp, { group: text(f, 'group'), username: param(ctx, 'username') });
      seeOther(ctx, `${userPath(param(ctx, 'username'))}?done=member-removed`);
    },
  });
  change('/users/:username/remove', {
    label: (f) => `Remove the user ${f.get('confirm') ?? ''}`,
    sensitive: true,
    redisplay: userPage,
    async run(ctx, f, { service }) {
      const username = param(ctx, 'username');
      if (text(f, 'confirm') !== username) throw new ServiceError(`type the username "${username}" to confirm`, 'confirm');
      await perform(service, removeUserOp, { username });
      seeOther(ctx, '/admin/users?done=removed');
    },
  });

  // Groups

  const groupsPage = async (ctx: Context, redisplay?: Redisplay) => {
    const groups = await perform(consoleOf(ctx).service, listGroupsOp, {});
    show(ctx, 'groups', 'Groups', { groups, redisplay });
  };
  pages.get('/groups', (ctx) => groupsPage(ctx));
  change('/groups', {
    label: 'Create a group',
    redisplay: groupsPage,
    async run(ctx, f, { service }) {
      const group = await perform(service, createGroupOp, { name: text(f, 'name'), description: optional(f, 'description') });
      seeOther(ctx, `/admin/groups/${encodeURIComponent(group.name)}?done=created`);
    },
  });
  const groupPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { group, members } = await perform(consoleOf(ctx).service, showGroupOp, { name: param(ctx, 'name') });
    show(ctx, 'group', group.name, { group, members, redisplay });
  };
  pages.get('/groups/:name', (ctx) => groupPage(ctx));
  change('/groups/:name/members', {
    label: (f, ctx) => `Add ${f.get('username') ?? ''} to the group ${param(ctx, 'name')}`,
    sensitive: (_f, ctx) => membershipIsSensitive(consoleOf(ctx).service.db, param(ctx, 'name')),
    redisplay: groupPage,
    async run(ctx, f, { service }) {
      const added = await perform(service, addMemberOp, { group: param(ctx, 'name'), username: text(f, 'username') });
      seeOther(ctx, `/admin/groups/${encodeURIComponent(param(ctx, 'name'))}?done=${added ? 'member-added' : 'already-member'}`);
    },
  });
  change('/groups/:name/members/remove', {
    label: (f, ctx) => `Remove ${text(f, 'username')} from the group ${param(ctx, 'name')}`,
    sensitive: (_f, ctx) => membershipIsSensitive(consoleOf(ctx).service.db, param(ctx, 'name')),
    async run(ctx, f, { service }) {
      await perform(service, removeMemberOp, { group: param(ctx, 'name'), username: text(f, 'username') });
      seeOther(ctx, `/admin/groups/${encodeURIComponent(param(ctx, 'name'))}?done=member-removed`);
    },
  });
  change('/groups/:name/remove', {
    label: (_f, ctx) => `Remove the group ${param(ctx, 'name')} and its access policies`,
    sensitive: true,
    async run(ctx, _f, { service }) {
      await perform(service, removeGroupOp, { name: param(ctx, 'name') });
      seeOther(ctx, '/admin/groups?done=removed');
    },
  });
}
