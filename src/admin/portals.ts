import { z } from 'zod';
import { operation } from './service.js';
import { parseActions, SELF_TOKEN_TYPES } from '../portal/actions.js';
import { disablePortal, enablePortal, listPortals, PortalError } from '../portal/portals.js';

const clientId = z.string().min(1, 'name the client').max(128, 'no client has an id that long');

/** A list of action names, as typed ("register-token,change-name") or as a form's checked boxes. */
const actionList = z.array(z.string().max(64)).max(32).transform((list, ctx) => {
  const { actions, unknown, repeated } = parseActions(list);
  if (unknown.length) ctx.addIssue({ code: 'custom', message: `unknown action${unknown.length > 1 ? 's' : ''} ${unknown.map((a) => `"${a}"`).join(', ')}` });
  if (repeated.length) ctx.addIssue({ code: 'custom', message: `${repeated.map((a) => `"${a}"`).join(', ')} named twice` });
  return actions;
});

/** Enables an application's self-service portal, or changes its alias, actions (in order), group or token types. */
export const enablePortalOp = operation({
  kind: 'change',
  input: z.object({
    clientId,
    alias: z.string().min(1, 'give the portal an alias').max(64, 'an alias is at most 64 characters'),
    actions: actionList,
    group: z.string().min(1).max(128).nullable().default(null),
    tokenTypes: z.array(z.enum(SELF_TOKEN_TYPES, 'the token type a user registers is totp')).min(1, 'offer at least one token type').default(['totp']),
  }),
  async run({ db }, input) {
    const portal = await enablePortal(db, input);
    return { result: portal, change: { type: 'portal.enabled', subject: portal.clientId, details: { alias: portal.alias, actions: portal.actions, group: portal.group, token_types: portal.tokenTypes } } };
  },
});

export const disablePortalOp = operation({
  kind: 'change',
  input: z.object({ clientId }),
  async run({ db }, { clientId }) {
    if (!(await disablePortal(db, clientId))) throw new PortalError(`"${clientId}" has no portal`, 'clientId');
    return { result: undefined, change: { type: 'portal.disabled', subject: clientId } };
  },
});

export const listPortalsOp = operation({ kind: 'read', input: z.object({}), run: async ({ db }) => ({ result: await listPortals(db) }) });
