import { z } from 'zod';
import {
  addPolicy, ApprovalError, createProfile, listPolicies, listProfiles, removePolicy, removeProfile, updateProfile, type PolicyInput, type ProfileChanges, type ProfileInput,
} from '../approvals/profiles.js';
import { listRequests } from '../approvals/requests.js';
import { requireUser, E164_PATTERN, EMAIL_PATTERN } from '../directory/users.js';
import { ClientError } from '../clients/clients.js';
import { operation, ownedInput } from './service.js';
import { LdapDirectory } from '../directory/ldap.js';
import { loadSettings } from '../settings/settings.js';


const name = (what: string) => z.string().min(1, `name the ${what}`).max(100, `no ${what} has a name that long`);

export const createApprovalProfileOp = operation({
  kind: 'change',
  input: ownedInput<ProfileInput>(),
  async run({ db }, input) {
    const profile = await createProfile(db, input);
    return {
      result: profile,
      change: { type: 'approval.profile_created', subject: profile.name, details: { mode: profile.mode, delivery: profile.delivery, link_minutes: profile.link_minutes, default_recipient: profile.default_recipient, directories: profile.directories, factors: profile.factors } },
    };
  },
});

export const updateApprovalProfileOp = operation({
  kind: 'change',
  input: z.object({ name: name('profile'), changes: ownedInput<ProfileChanges>() }),
  async run({ db }, { name, changes }) {
    const changed = await updateProfile(db, name, changes);
    return { result: changed, change: Object.keys(changed).length ? { type: 'approval.profile_updated', subject: name, details: changed } : undefined };
  },
});

export const removeApprovalProfileOp = operation({
  kind: 'change',
  input: z.object({ name: name('profile') }),
  async run({ db }, { name }) {
    const { policies } = await removeProfile(db, name);
    return { result: policies, change: { type: 'approval.profile_removed', subject: name, details: { policies } } };
  },
});

export const listApprovalProfilesOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listProfiles(db) }) });

export const addApprovalPolicyOp = operation({
  kind: 'change',
  input: ownedInput<PolicyInput>(),
  async run({ db }, input) {
    const policy = await addPolicy(db, input);
    return { result: policy, change: { type: 'approval.policy_created', subject: policy.name, details: { profile: policy.profile, attribute: policy.attribute, values: policy.values, client_id: policy.client_id, position: policy.position } } };
  },
});

export const removeApprovalPolicyOp = operation({
  kind: 'change',
  input: z.object({ name: name('policy') }),
  async run({ db }, { name }) {
    await removePolicy(db, name);
    return { result: undefined, change: { type: 'approval.policy_removed', subject: name } };
  },
});

export const listApprovalPoliciesOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listPolicies(db) }) });

export const listApprovalRequestsOp = operation({
  kind: 'read',
  input: z.object({
    status: z.enum(['informed', 'pending', 'approved', 'rejected', 'expired', 'undeliverable', 'cancelled'], 'must be informed, pending, approved, rejected, expired, undeliverable or cancelled').optional(),
    limit: z.number().int().min(1).max(1000).default(50),
  }),
  run: async ({ db }, input) => ({ result: await listRequests(db, input) }),
});

/** A local user's sponsor: the manager who is told of, or approves, their sign-ins. */
export const setSponsorOp = operation({
  kind: 'change',
  input: z
    .object({
      username: z.string().min(1).max(128),
      name: z.string().trim().max(200).nullable(),
      email: z.string().trim().max(254).regex(EMAIL_PATTERN, 'must be an email address').nullable(),
      phone: z.string().trim().regex(E164_PATTERN, 'must be in E.164 form, e.g. +15555550100').nullable(),
    }),
  async run({ db }, { username, name, email, phone }) {
    const user = await requireUser(db, username);
    if (email && email.toLowerCase() === user.email?.toLowerCase()) throw new ApprovalError('a user cannot be their own sponsor: this is their own email address', 'email');
    if (phone && phone === user.phone) throw new ApprovalError('a user cannot be their own sponsor: this is their own phone number', 'phone');
    await db.updateTable('users').set({ sponsor_name: name || null, sponsor_email: email || null, sponsor_phone: phone || null, updated_at: new Date() }).where('id', '=', user.id).execute();
    return { result: undefined, change: { type: 'user.sponsor_changed', subject: user.id, details: { username: user.username, sponsor_name: name, sponsor_email: email, sponsor_phone: phone } } };
  },
});

/** Whether sign-ins to a client go through manager approval. */
export const setClientApprovalOp = operation({
  kind: 'change',
  input: z.object({ clientId: z.string().min(1).max(128), required: z.boolean() }),
  async run({ db }, { clientId, required }) {
    const result = await db.updateTable('clients').set({ manager_approval: required, updated_at: new Date() }).where('client_id', '=', clientId).where('builtin', '=', false).executeTakeFirst();
    if (result.numUpdatedRows === 0n) throw new ClientError(`no client "${clientId}" (or one Tessera registered itself)`, 'clientId');
    return { result: undefined, change: { type: 'client.updated', subject: clientId, details: { manager_approval: required } } };
  },
});

/** Binds to the LDAP directory with the saved settings and reads the base DN: what worked, or why not. */
export const testLdapOp = operation({
  kind: 'read',
  input: z.object({}),
  async run({ db, box }) {
    const directory = new LdapDirectory();
    try {
      return { result: await directory.test((await loadSettings(db, box)).ldap) };
    } finally {
      await directory.close();
    }
  },
});
