import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AdapterPayload } from 'oidc-provider';
import { stillSatisfies, unlockingPass, type RequestedScope, type ScopeRule } from '../../src/scopes/rules.js';
import { guardGrant } from '../../src/scopes/grants.js';
import { assuranceOf, freshFactor, merged, type Pass } from '../../src/sessions/ledger.js';
import { ACR } from '../../src/oidc/assurance.js';

const NOW = 1_800_000_000;
const rule = (over: Partial<ScopeRule> = {}): ScopeRule => ({ resource: 'https://api.bank.example', scope: 'payments:write', factors: null, maxAgeSeconds: 900, ...over });

describe('factor ledger', () => {
  it('the freshest allowed second factor within the age counts; the password never does', () => {
    const passes: Pass[] = [{ factor: 'password', at: NOW - 10 }, { factor: 'email', at: NOW - 600 }, { factor: 'totp', at: NOW - 2000 }];
    assert.deepEqual(freshFactor(passes, null, 900, NOW), { factor: 'email', at: NOW - 600 });
    assert.equal(freshFactor(passes, ['totp'], 900, NOW), null, 'the app was passed too long ago');
    assert.deepEqual(freshFactor(passes, ['totp'], 3600, NOW), { factor: 'totp', at: NOW - 2000 });
    assert.equal(freshFactor(passes, ['sms'], 86_400, NOW), null, 'never passed');
    assert.equal(freshFactor([{ factor: 'password', at: NOW }], null, 900, NOW), null);
  });

  it('merging keeps the latest pass of each proof', () => {
    assert.deepEqual(
      merged([{ factor: 'password', at: 1 }, { factor: 'email', at: 5 }], [{ factor: 'email', at: 9 }, { factor: 'totp', at: 3 }]),
      [{ factor: 'password', at: 1 }, { factor: 'email', at: 9 }, { factor: 'totp', at: 3 }],
    );
  });

  it('acr, amr and auth_time say what the session passed and when it last passed something', () => {
    assert.deepEqual(assuranceOf([{ factor: 'password', at: 100 }]), { amr: ['pwd'], acr: ACR.password, ts: 100 });
    assert.deepEqual(assuranceOf([{ factor: 'sms', at: 300 }, { factor: 'password', at: 100 }]), { amr: ['pwd', 'sms', 'mfa'], acr: ACR.mfa, ts: 300 });
    assert.deepEqual(assuranceOf([{ factor: 'password', at: 100 }, { factor: 'email', at: 200 }, { factor: 'totp', at: 250 }]).amr, ['pwd', 'otp', 'mfa'], 'email and app codes are both "otp"');
  });
});

describe('scope rules', () => {
  it('a protected scope unlocks with an allowed factor young enough for its window', () => {
    const ledger: Pass[] = [{ factor: 'password', at: NOW - 5000 }, { factor: 'email', at: NOW - 300 }];
    assert.deepEqual(unlockingPass(rule(), ledger, [], NOW), { factor: 'email', at: NOW - 300 });
    assert.equal(unlockingPass(rule({ maxAgeSeconds: 120 }), ledger, [], NOW), null, 'stale');
    assert.equal(unlockingPass(rule({ factors: ['totp'] }), ledger, [], NOW), null, 'not an allowed factor');
    assert.deepEqual(unlockingPass(rule({ factors: ['totp'] }), ledger, [{ factor: 'totp', at: NOW - 1 }], NOW), { factor: 'totp', at: NOW - 1 });
  });

  it('a window of 0 accepts only a factor passed on this consent screen', () => {
    const justNow: Pass[] = [{ factor: 'email', at: NOW }];
    assert.equal(unlockingPass(rule({ maxAgeSeconds: 0 }), justNow, [], NOW), null, 'the ledger never counts');
    assert.deepEqual(unlockingPass(rule({ maxAgeSeconds: 0 }), [], [{ factor: 'email', at: NOW - 40 }], NOW), { factor: 'email', at: NOW - 40 });
  });

  it('a granted protected scope stands while its factor still satisfies the current rule', () => {
    const record = { resource: 'https://api.bank.example', scope: 'payments:write', factor: 'email' as const, factorAgeSeconds: 200 };
    assert.equal(stillSatisfies(rule(), record), true);
    assert.equal(stillSatisfies(rule({ factors: ['totp'] }), record), false, 'tightened to the app only');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 60 }), record), false, 'tightened window');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 0 }), { ...record, factorAgeSeconds: 0 }), true, 'passed at that consent');
    assert.equal(stillSatisfies(rule(), undefined), false, 'granted before the scope was protected');
  });

  it('a grant loses the protected scopes whose step-up no longer satisfies the rule, and keeps everything else', async () => {
    const rules = [rule(), rule({ resource: null, scope: 'phone' })];
    const protecting = async (requested: RequestedScope[]) => rules.filter((r) => requested.some((q) => q.resource === r.resource && q.scope === r.scope));
    const payload = { accountId: 'a', clientId: 'c', openid: { scope: 'openid profile phone' }, resources: { 'https://api.bank.example': 'payments:read payments:write' } } as unknown as AdapterPayload;
    const guarded = (await guardGrant({ protecting }, payload, [{ resource: null, scope: 'phone', factor: 'sms', factorAgeSeconds: 0 }])) as unknown as { openid: { scope: string }; resources: Record<string, string> };
    assert.equal(guarded.openid.scope, 'openid profile phone', 'phone was granted with a factor');
    assert.equal(guarded.resources['https://api.bank.example'], 'payments:read', 'payments:write has no step-up record');
    assert.equal(await guardGrant({ protecting: async () => [] }, payload, []), payload, 'no rules: the grant as stored');
  });
});
