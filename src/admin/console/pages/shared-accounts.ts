import type { Context } from 'koa';
import { perform } from '../../service.js';
import { disableJitOp, enableJitOp, listJitOp, listReservationsOp, releaseJitOp } from '../../jit.js';
import { listGroupsOp } from '../../users.js';
import { JIT_MINUTES } from '../../../jit/shared-accounts.js';
import { seeOther } from '../../../http/redirect.js';
import { text } from '../../../web/form.js';
import { ServiceError } from '../../service.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';

/** Just-in-time shared accounts: which accounts, their groups and reservation times, who holds each, and every reservation. */
export function sharedAccountPages(c: Console): void {
  const { pages, show, change } = c;

  const sharedPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const [accounts, reservations, groups] = await Promise.all([
      perform(service, listJitOp, {}),
      perform(service, listReservationsOp, { limit: 100 }),
      perform(service, listGroupsOp, {}),
    ]);
    show(ctx, 'shared-accounts', 'Shared accounts', { accounts, reservations, groups: groups.filter((g) => !g.builtin), minutes: JIT_MINUTES, redisplay });
  };
  pages.get('/shared-accounts', (ctx) => sharedPage(ctx));

  change('/shared-accounts', {
    label: (f) => `Share ${text(f, 'username')} just in time`,
    sensitive: true,
    redisplay: sharedPage,
    async run(ctx, f, { service }) {
      const raw = text(f, 'minutes');
      if (raw && !/^\d{1,4}$/.test(raw)) throw new ServiceError(`a reservation lasts ${JIT_MINUTES.min} to ${JIT_MINUTES.max} minutes`, 'minutes');
      await perform(service, enableJitOp, { username: text(f, 'username'), group: text(f, 'group'), ...(raw ? { minutes: Number(raw) } : {}) });
      seeOther(ctx, '/admin/shared-accounts?done=saved');
    },
  });
  change('/shared-accounts/release', {
    label: (f) => `End the reservation of ${text(f, 'username')}`,
    redisplay: sharedPage,
    async run(ctx, f, { service }) {
      await perform(service, releaseJitOp, { username: text(f, 'username') });
      seeOther(ctx, '/admin/shared-accounts?done=jit-released');
    },
  });
  change('/shared-accounts/disable', {
    label: (f) => `Stop sharing ${text(f, 'username')}`,
    sensitive: true,
    redisplay: sharedPage,
    async run(ctx, f, { service }) {
      await perform(service, disableJitOp, { username: text(f, 'username') });
      seeOther(ctx, '/admin/shared-accounts?done=jit-disabled');
    },
  });
}
