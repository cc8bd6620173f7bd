import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AdapterPayload } from 'oidc-provider';
import { EVERY_TIME_SECONDS, stillSatisfies, unlockingPass, type RequestedScope, type ScopeRule } from '../../src/scopes/rules.js';
import type { FactorId } from '../../src/settings/settings.js';

const ANY: FactorId[] = ['email', 'sms', 'totp'];
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
    assert.deepEqual(unlockingPass(rule(), ledger, [], ANY, NOW), { factor: 'email', at: NOW - 300 });
    assert.equal(unlockingPass(rule({ maxAgeSeconds: 120 }), ledger, [], ANY, NOW), null, 'stale');
    assert.equal(unlockingPass(rule({ factors: ['totp'] }), ledger, [], ANY, NOW), null, 'not an allowed factor');
    assert.deepEqual(unlockingPass(rule({ factors: ['totp'] }), ledger, [{ factor: 'totp', at: NOW - 1 }], ANY, NOW), { factor: 'totp', at: NOW - 1 });
  });

  it('a factor the user\'s policy (or the switched-on methods) no longer allows does not unlock', () => {
    const ledger: Pass[] = [{ factor: 'email', at: NOW - 60 }];
    assert.equal(unlockingPass(rule(), ledger, [], ['sms', 'totp'], NOW), null);
    assert.deepEqual(unlockingPass(rule(), ledger, [], ['email'], NOW), { factor: 'email', at: NOW - 60 });
  });

  it('a window of 0 accepts only a factor passed on this consent screen', () => {
    const justNow: Pass[] = [{ factor: 'email', at: NOW }];
    assert.equal(unlockingPass(rule({ maxAgeSeconds: 0 }), justNow, [], ANY, NOW), null, 'the ledger never counts');
    assert.deepEqual(unlockingPass(rule({ maxAgeSeconds: 0 }), [], [{ factor: 'email', at: NOW - 40 }], ANY, NOW), { factor: 'email', at: NOW - 40 });
    assert.equal(unlockingPass(rule({ maxAgeSeconds: 0 }), [], [{ factor: 'email', at: NOW - EVERY_TIME_SECONDS - 1 }], ANY, NOW), null, 'a page left open too long');
  });

  it('a granted protected scope stands while its factor still satisfies the current rule', () => {
    const record = { resource: 'https://api.bank.example', scope: 'payments:write', factor: 'email' as const, factorAgeSeconds: 200, atConsent: false };
    assert.equal(stillSatisfies(rule(), record), true);
    assert.equal(stillSatisfies(rule({ factors: ['totp'] }), record), false, 'tightened to the app only');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 60 }), record), false, 'tightened window');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 0 }), { ...record, factorAgeSeconds: 40, atConsent: true }), true, 'passed on that consent screen');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 0 }), { ...record, factorAgeSeconds: 40 }), false, 'passed before it');
    assert.equal(stillSatisfies(rule({ maxAgeSeconds: 20 }), { ...record, factorAgeSeconds: 40, atConsent: true }), false, 'its real age counts against a window');
    assert.equal(stillSatisfies(rule(), undefined), false, 'granted before the scope was protected');
  });

  it('a grant loses the protected scopes whose step-up no longer satisfies the rule, and keeps everything else', async () => {
    const rules = [rule(), rule({ resource: null, scope: 'phone' })];
    const protecting = async (requested: RequestedScope[]) => rules.filter((r) => requested.some((q) => q.resource === r.resource && q.scope === r.scope));
    const payload = { accountId: 'a', clientId: 'c', openid: { scope: 'openid profile phone' }, resources: { 'https://api.bank.example': 'payments:read payments:write' } } as unknown as AdapterPayload;
    const guarded = (await guardGrant({ protecting }, payload, [{ resource: null, scope: 'phone', factor: 'sms', factorAgeSeconds: 0, atConsent: true }])) as unknown as { openid: { scope: string }; resources: Record<string, string> };
    assert.equal(guarded.openid.scope, 'openid profile phone', 'phone was granted with a factor');
    assert.equal(guarded.resources['https://api.bank.example'], 'payments:read', 'payments:write has no step-up record');
    assert.equal(await guardGrant({ protecting: async () => [] }, payload, []), payload, 'no rules: the grant as stored');
  });
});
