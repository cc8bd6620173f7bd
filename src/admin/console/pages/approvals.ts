import type { Context } from 'koa';
import { perform, ServiceError } from '../../service.js';
import {
  addApprovalPolicyOp, createApprovalProfileOp, listApprovalPoliciesOp, listApprovalProfilesOp, listApprovalRequestsOp, removeApprovalPolicyOp,
  removeApprovalProfileOp, testLdapOp, updateApprovalProfileOp,
} from '../../approvals.js';
import { setSettingsOp, showSettingsOp, listClientsOp } from '../../system.js';
import { valueAt } from '../../../settings/settings.js';
import { seeOther } from '../../../http/redirect.js';
import type { ApprovalStatus } from '../../../db/schema.js';
import { optional, queryParam, text } from '../../../web/form.js';
import { HttpError } from '../../../http/errors.js';
import { consoleOf, type Console, type Redisplay } from '../console.js';
import { forgetSecretsOnMove, readSettingsForm, shown, type SettingField } from './settings.js';

/** A profile's form, as the service layer takes it (empty fields: the defaults). */
function profileFields(f: URLSearchParams) {
  const minutes = text(f, 'linkMinutes');
  if (minutes && !/^\d{1,4}$/.test(minutes)) throw new ServiceError('must be a whole number of minutes', 'linkMinutes');
  const factors = f.getAll('factors');
  return {
    mode: f.get('mode') === 'inform' ? ('inform' as const) : ('approve' as const),
    delivery: f.get('delivery') === 'sms' ? ('sms' as const) : ('email' as const),
    ...(minutes ? { linkMinutes: Number(minutes) } : {}),
    baseUrl: optional(f, 'baseUrl'),
    message: optional(f, 'message'),
    ...(text(f, 'subject') ? { subject: text(f, 'subject') } : {}),
    defaultRecipient: optional(f, 'defaultRecipient'),
    directories: f.getAll('directories') as ('local' | 'ldap')[],
    factors: factors.length ? (factors as ('password' | 'email' | 'sms' | 'totp')[]) : null,
  };
}

const STATUSES: ApprovalStatus[] = ['pending', 'approved', 'rejected', 'expired', 'cancelled', 'informed', 'undeliverable'];

const LDAP_FORM: SettingField[] = [
  { path: 'ldap.url', label: 'URL', kind: 'text', hint: 'ldap://host:389 or ldaps://host:636; empty: no directory' },
  { path: 'ldap.bindDn', label: 'Service account DN', kind: 'text' },
  { path: 'ldap.bindPassword', label: 'Service account password', kind: 'secret' },
  { path: 'ldap.baseDn', label: 'Base DN of users', kind: 'text' },
  { path: 'ldap.userFilter', label: 'User filter', kind: 'text', hint: '{username} is filled in, escaped (RFC 4515)' },
  { path: 'ldap.startTls', label: 'Upgrade ldap:// with StartTLS', kind: 'bool' },
  { path: 'ldap.tlsVerify', label: 'Check the server’s certificate', kind: 'bool' },
  { path: 'ldap.caCertificate', label: 'CA certificate (PEM)', kind: 'textarea', hint: 'When the directory’s certificate is signed by a CA the system does not trust' },
  { path: 'ldap.timeoutSeconds', label: 'Timeout (seconds)', kind: 'number' },
  { path: 'ldap.attributes.username', label: 'Username attribute', kind: 'text' },
  { path: 'ldap.attributes.email', label: 'Email attribute', kind: 'text' },
  { path: 'ldap.attributes.phone', label: 'Phone attribute', kind: 'text' },
  { path: 'ldap.attributes.givenName', label: 'Given name attribute', kind: 'text' },
  { path: 'ldap.attributes.familyName', label: 'Family name attribute', kind: 'text' },
  { path: 'ldap.attributes.manager', label: 'Manager attribute (a DN)', kind: 'text' },
  { path: 'ldap.attributes.groups', label: 'Groups attribute', kind: 'text' },
];

/** Manager approval (profiles, policies, requests, defaults), sponsors, and the LDAP directory. */
export function approvalPages(c: Console): void {
  const { pages, show, change } = c;

  const approvalsPage = async (ctx: Context, redisplay?: Redisplay) => {
    const { service } = consoleOf(ctx);
    const status = typeof ctx.query.status === 'string' && (STATUSES as string[]).includes(ctx.query.status) ? (ctx.query.status as ApprovalStatus) : undefined;
    const [profiles, policies, requests, settings, clients] = await Promise.all([
      perform(service, listApprovalProfilesOp, {}),
      perform(service, listApprovalPoliciesOp, {}),
      perform(service, listApprovalRequestsOp, { limit: 50, ...(status ? { status } : {}) }),
      perform(service, showSettingsOp, {}),
      perform(service, listClientsOp, {}),
    ]);
    show(ctx, 'approvals', 'Manager approval', {
      profiles, policies, requests, statuses: STATUSES, status: status ?? '',
      approval: valueAt(settings, 'approval'), clients: clients.filter((x) => !x.builtin), redisplay,
    });
  };
  pages.get('/approvals', (ctx) => approvalsPage(ctx));

  change('/approvals/profiles', {
    label: (f) => `Create the approval profile ${text(f, 'name')}`,
    sensitive: true,
    redisplay: approvalsPage,
    async run(ctx, f, { service }) {
      await perform(service, createApprovalProfileOp, { name: text(f, 'name'), ...profileFields(f) });
      seeOther(ctx, '/admin/approvals?done=created');
    },
  });
  const profilePage = async (ctx: Context, redisplay?: Redisplay) => {
    const name = redisplay?.values.get('name') ?? queryParam(ctx, 'name');
    const profile = (await perform(consoleOf(ctx).service, listApprovalProfilesOp, {})).find((p) => p.name === name);
    if (!profile) throw new HttpError(404, `There is no approval profile "${name}".`, 'Not found');
    show(ctx, 'approval-profile', `Approval profile ${profile.name}`, { profile, redisplay });
  };
  pages.get('/approvals/profile', (ctx) => profilePage(ctx));
  change('/approvals/profile', {
    label: (f) => `Change the approval profile ${text(f, 'name')}`,
    sensitive: true,
    redisplay: profilePage,
    async run(ctx, f, { service }) {
      await perform(service, updateApprovalProfileOp, { name: text(f, 'name'), changes: profileFields(f) });
      seeOther(ctx, '/admin/approvals?done=saved');
    },
  });
  change('/approvals/profiles/remove', {
    label: (f) => `Remove the approval profile ${text(f, 'name')} and its policies`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removeApprovalProfileOp, { name: text(f, 'name') });
      seeOther(ctx, '/admin/approvals?done=removed');
    },
  });
  change('/approvals/policies', {
    label: (f) => `Create the approval policy ${text(f, 'name')}`,
    sensitive: true,
    redisplay: approvalsPage,
    async run(ctx, f, { service }) {
      const position = text(f, 'position');
      if (position && !/^\d{1,6}$/.test(position)) throw new ServiceError('must be a whole number', 'position');
      await perform(service, addApprovalPolicyOp, {
        name: text(f, 'name'),
        profile: text(f, 'profile'),
        attribute: text(f, 'attribute'),
        values: text(f, 'values').split(',').map((v) => v.trim()).filter(Boolean),
        clientId: optional(f, 'clientId'),
        position: position ? Number(position) : null,
      });
      seeOther(ctx, '/admin/approvals?done=created');
    },
  });
  change('/approvals/policies/remove', {
    label: (f) => `Remove the approval policy ${text(f, 'name')}`,
    sensitive: true,
    async run(ctx, f, { service }) {
      await perform(service, removeApprovalPolicyOp, { name: text(f, 'name') });
      seeOther(ctx, '/admin/approvals?done=removed');
    },
  });
  change('/approvals/defaults', {
    label: 'Change the default approval profile',
    sensitive: true,
    redisplay: approvalsPage,
    async run(ctx, f, { service }) {
      await perform(service, setSettingsOp, { values: { 'approval.defaultProfile': optional(f, 'defaultProfile'), 'approval.unmatched': f.get('unmatched') === 'default' ? 'default' : 'deny' } });
      seeOther(ctx, '/admin/approvals?done=saved');
    },
  });

  const ldapPage = async (ctx: Context, redisplay?: Redisplay, test?: { ok: boolean; message: string }) => {
    const settings = await perform(consoleOf(ctx).service, showSettingsOp, {});
    show(ctx, 'ldap', 'LDAP directory', { fields: LDAP_FORM, settings, at: valueAt, shown, redisplay, test: test ?? null });
  };
  pages.get('/ldap', (ctx) => ldapPage(ctx));
  change('/ldap', {
    label: 'Change the LDAP directory settings',
    sensitive: true,
    redisplay: ldapPage,
    async run(ctx, f, { service }) {
      const values = readSettingsForm(LDAP_FORM, f);
      // The service account's password belongs to the directory it was typed for.
      forgetSecretsOnMove(LDAP_FORM, 'ldap.url', values, await perform(service, showSettingsOp, {}));
      await perform(service, setSettingsOp, { values });
      seeOther(ctx, '/admin/ldap?done=saved');
    },
  });
  change('/ldap/test', {
    label: 'Test the LDAP connection',
    async run(ctx, _f, { service }) {
      await ldapPage(ctx, undefined, await perform(service, testLdapOp, {}));
    },
  });
}
