import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { actionsInOrder } from '../../src/admin/console/pages/self-service.js';
import { applies, PORTAL_ACTIONS, type AccountFacts } from '../../src/portal/actions.js';

describe('portal actions', () => {
  it('the console orders the checked actions by their numbers, unnumbered ones after in the contract’s order', () => {
    const f = new URLSearchParams('actions=change-name&actions=resync&actions=register-token&actions=change-email&order-change-name=1&order-resync=02&order-set-pin=1');
    assert.deepEqual(actionsInOrder(f), ['change-name', 'resync', 'register-token', 'change-email'], 'a number on an unchecked action is ignored');
    assert.deepEqual(actionsInOrder(new URLSearchParams('actions=change-name&actions=register-token&order-change-name=5&order-register-token=5')), ['register-token', 'change-name'], 'ties keep the contract’s order');
    assert.deepEqual(actionsInOrder(new URLSearchParams('account-actions=change-name&account-order-change-name=3&actions=resync'), 'account-'), ['change-name']);
    assert.throws(() => actionsInOrder(new URLSearchParams('actions=fly&actions=change-name')), /unknown action "fly"/);
    assert.throws(() => actionsInOrder(new URLSearchParams('actions=resync&order-resync=-1')), /the position of "Resynchronize a token" is a whole number/);
    assert.throws(() => actionsInOrder(new URLSearchParams('actions=resync&order-resync=1e3')), /whole number/);
  });

  it('an action is shown only when it applies to the user', () => {
    const shown = (facts: AccountFacts) => PORTAL_ACTIONS.filter((a) => applies(a, facts));
    assert.deepEqual(shown({ source: 'local', hasPassword: true, tokens: [] }), ['register-token', 'register-existing-token', 'change-password', 'change-email', 'change-phone', 'change-login', 'change-name']);
    assert.deepEqual(shown({ source: 'local', hasPassword: false, tokens: [{ pin: true, disabled: false }] }), [
      'register-token', 'register-existing-token', 'reassign-token', 'unassign-token', 'resync', 'set-pin', 'remove-pin', 'create-password', 'change-email', 'change-phone', 'change-login', 'change-name',
    ]);
    assert.deepEqual(shown({ source: 'local', hasPassword: true, tokens: [{ pin: true, disabled: true }] }).slice(0, 5), ['register-token', 'register-existing-token', 'reassign-token', 'unassign-token', 'remove-pin'], 'a disabled token is not resynchronized or given a PIN');
    assert.deepEqual(shown({ source: 'ldap', hasPassword: false, tokens: [{ pin: false, disabled: false }] }), ['register-token', 'register-existing-token', 'reassign-token', 'unassign-token', 'resync', 'set-pin'], 'the directory keeps the rest');
  });
});
