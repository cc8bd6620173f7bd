import type { Context } from 'koa';
import { perform, ServiceError } from '../../service.js';
import { disablePortalOp, enablePortalOp, listPortalsOp } from '../../portals.js';
import { importTokensOp, tokenStockOp } from '../../tokens.js';
import { approveRestoreRequestOp, deleteRestoreRequestOp, listRestoreRequestsOp } from '../../restore.js';
import { listClientsOp, setSettingsOp, showSettingsOp } from '../../system.js';
import { listGroupsOp } from '../../users.js';
import { ACTION_LINKS, PORTAL_ACTIONS, SELF_TOKEN_TYPES } from '../../../portal/actions.js';
import { seeOther } from '../../../http/redirect.js';
import { optional, text } from '../../../web/form.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';

/** A pasted token seed file: up to 5 MB of text (about 60,000 tokens). */
const SEED_FILE_BYTES = 5 * 1024 * 1024;
const ISSUE_STATUSES = ['open', 'approved', 'deleted', 'withdrawn', 'all'] as const;

/**
 * The checked actions in the order their numbers give (ties: the contract's order). Without
 * JavaScript, a number beside each action is how an administrator orders them.
 */
export function actionsInOrder(f: URLSearchParams, prefix = ''): string[] {
  const unknown = f.getAll(`${prefix}actions`).find((a) => !(PORTAL_ACTIONS as readonly string[]).includes(a));
  if (unknown !== undefined) throw new ServiceError(`unknown action "${unknown.slice(0, 40)}"`, `${prefix}actions`);
  const chosen = PORTAL_ACTIONS.map((action, index) => ({ action, index, checked: f.getAll(`${prefix}actions`).includes(action), order: text(f, `${prefix}order-${action}`) }))
    .filter((a) => a.checked);
  for (const a of chosen) if (a.order && !/^\d{1,3}$/.test(a.order)) throw new ServiceError(`the position of "${ACTION_LINKS[a.action].label}" is a whole number from 1 to 999`, `${prefix}actions`);
  return chosen
    .sort((a, b) => (a.order ? Number(a.order) : 1000 + a.index) - (b.order ? Number(b.order) : 1000 + b.index) || a.index - b.index)
    .map((a) => a.action);
}

/** Self-service portals per application, the hardware token stock, and the "User issues" (restore-access requests). */
export function selfServicePages(c: Console): void {
  const { pages, show, change } = c;

  const portalsPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const [settings, portals, clients, groups, stock] = await Promise.all([
      perform(service, showSettingsOp, {}),
      perform(service, listPortalsOp, {}),
      perform(service, listClientsOp, {}),
      perform(service, listGroupsOp, {}),
      perform(service, tokenStockOp, {}),
    ]);
    const editing = typeof ctx.query.client === 'string' ? portals.find((p) => p.clientId === ctx.query.client) ?? null : null;
    show(ctx, 'portals', 'Self-service portals', {
      account: settings.account, portals, clients: clients.filter((x) => !x.builtin), groups, stock, editing, redisplay,
      allActions: PORTAL_ACTIONS.map((a) => ({ action: a, label: ACTION_LINKS[a].label })), tokenTypes: SELF_TOKEN_TYPES,
    });
  };
  pages.get('/portals', (ctx) => portalsPage(ctx));
  change('/portals', {
    label: (f) => `Enable or change the self-service portal of ${text(f, 'clientId')}`,
    sensitive: true,
    redisplay: portalsPage,
    async run(ctx, f, { service }) {
      const types = f.getAll('tokenTypes');
      await perform(service, enablePortalOp, {
        clientId: text(f, 'clientId'),
        alias: text(f, 'alias'),
        actions: actionsInOrder(f),
        group: optional(f, 'group'),
        ...(types.length ? { tokenTypes: types as ['totp'] } : {}),
      });
      seeOther(ctx, '/admin/portals?done=saved');
    },
  });
  change('/portals/account', {
    label: 'Change the actions of every user’s account page',
    sensitive: true,
    redisplay: portalsPage,
    async run(ctx, f, { service }) {
      await perform(service, setSettingsOp, {
        values: {
          'account.actions': actionsInOrder(f, 'account-'),
          'account.tokenTypes': f.getAll('account-tokenTypes'),
          'account.notifyRestoreRequests': f.get('account-notify') === 'on',
        },
      });
      seeOther(ctx, '/admin/portals?done=saved');
    },
  });
  change('/portals/disable', {
    label: (f) => `Disable the self-service portal of ${text(f, 'clientId')}`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, disablePortalOp, { clientId: text(f, 'clientId') });
      seeOther(ctx, '/admin/portals?done=removed');
    },
  });
  change('/tokens/import', {
    label: 'Import hardware tokens',
    sensitive: true,
    formLimitBytes: SEED_FILE_BYTES + 4096,
    redisplay: portalsPage,
    async run(ctx, f, { service }) {
      const { imported } = await perform(service, importTokensOp, { csv: f.get('csv') ?? '' });
      seeOther(ctx, `/admin/portals?done=tokens-imported&n=${imported}`);
    },
  });

  const issuesPage = async (ctx: Context, redisplay?: Redisplay) => {
    const status = typeof ctx.query.status === 'string' && (ISSUE_STATUSES as readonly string[]).includes(ctx.query.status) ? (ctx.query.status as (typeof ISSUE_STATUSES)[number]) : 'open';
    const requests = await perform(consoleOf(ctx).service, listRestoreRequestsOp, { status, limit: 200 });
    show(ctx, 'user-issues', 'User issues', { requests, status, statuses: ISSUE_STATUSES, redisplay });
  };
  pages.get('/user-issues', (ctx) => issuesPage(ctx));
  change('/user-issues/approve', {
    label: (f) => `Approve the restore-access request ${text(f, 'id').slice(0, 8)}…`,
    sensitive: true,
    redisplay: issuesPage,
    async run(ctx, f, { service }) {
      await perform(service, approveRestoreRequestOp, { id: text(f, 'id') });
      seeOther(ctx, '/admin/user-issues?done=restore-approved');
    },
  });
  change('/user-issues/delete', {
    label: (f) => `Delete the restore-access request ${text(f, 'id').slice(0, 8)}…`,
    sensitive: true,
    redisplay: issuesPage,
    async run(ctx, f, { service }) {
      await perform(service, deleteRestoreRequestOp, { id: text(f, 'id') });
      seeOther(ctx, '/admin/user-issues?done=removed');
    },
  });
}
