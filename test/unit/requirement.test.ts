import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { effectivePolicy, requirement, type PolicyRule, type RequirementInput } from '../../src/policy/requirement.js';

const ALL = { email: true, sms: true, totp: true, webauthn: true, recovery: true };
const EVERYTHING = { emailVerified: true, phoneVerified: true, hasAuthenticator: true };
const NOTHING = { emailVerified: false, phoneVerified: false, hasAuthenticator: false };

function input(over: Partial<RequirementInput> = {}): RequirementInput {
  return { policies: [], clientRequiresMfa: false, mfaAcrRequested: false, methodsAvailable: ALL, user: { emailVerified: true, phoneVerified: false, hasAuthenticator: false }, ...over };
}
function rule(over: Partial<PolicyRule>): PolicyRule {
  return { name: 'p', source: 'user', priority: 100, mfa: 'required', allowedFactors: null, requireAuthenticatorApp: false, ...over };
}

describe('policy: which rule governs', () => {
  it('user policies outrank group policies, then priority, then strictness', () => {
    assert.equal(effectivePolicy([]), null);
    assert.equal(effectivePolicy([rule({ name: 'g', source: 'group', priority: 1 }), rule({ name: 'u', source: 'user', priority: 500, mfa: 'off' })])?.name, 'u');
    assert.equal(effectivePolicy([rule({ name: 'late', source: 'group', priority: 50 }), rule({ name: 'early', source: 'group', priority: 10, mfa: 'off' })])?.name, 'early');
    assert.equal(effectivePolicy([rule({ name: 'lax', source: 'group', mfa: 'optional' }), rule({ name: 'strict', source: 'group', mfa: 'required' })])?.name, 'strict');
  });

  it('at a priority tie, requiring an authenticator app is stricter than MFA with any method, whatever the order', () => {
    const any = rule({ name: 'any-method', source: 'group' });
    const app = rule({ name: 'app-only', source: 'group', requireAuthenticatorApp: true });
    assert.equal(effectivePolicy([any, app])?.name, 'app-only');
    assert.equal(effectivePolicy([app, any])?.name, 'app-only');
    const fewer = rule({ name: 'sms-only', source: 'group', allowedFactors: ['sms'] });
    assert.equal(effectivePolicy([any, fewer])?.name, 'sms-only', 'fewer allowed methods is stricter');
  });
});

describe('policy: the requirement', () => {
  it('no policy, no client flag: no MFA unless the user enrolled an app', () => {
    assert.equal(requirement(input()).mfaRequired, false);
    const enrolled = requirement(input({ user: { ...NOTHING, hasAuthenticator: true } }));
    assert.equal(enrolled.mfaRequired, true);
    assert.deepEqual(enrolled.reasons, ['enrolled']);
    assert.deepEqual(enrolled.usableFactors, ['totp']);
  });

  it('user policy × group policy × client flag × acr request', () => {
    const groupRequired = [rule({ source: 'group', mfa: 'required' })];
    const userOff = [rule({ source: 'user', mfa: 'off' }), ...groupRequired];
    for (const policies of [[], groupRequired, userOff]) {
      for (const clientRequiresMfa of [false, true]) {
        for (const mfaAcrRequested of [false, true]) {
          const r = requirement(input({ policies, clientRequiresMfa, mfaAcrRequested }));
          const expected = policies === groupRequired || clientRequiresMfa || mfaAcrRequested;
          assert.equal(r.mfaRequired, expected, JSON.stringify({ policies: policies.map((p) => `${p.source}:${p.mfa}`), clientRequiresMfa, mfaAcrRequested }));
          if (clientRequiresMfa) assert.ok(r.reasons.includes('client'));
          if (mfaAcrRequested) assert.ok(r.reasons.includes('acr'));
        }
      }
    }
    // A user policy saying "off" does not beat a client that requires MFA.
    assert.equal(requirement(input({ policies: userOff, clientRequiresMfa: true })).mfaRequired, true);
  });

  it('allowed methods: system switches ∩ policy; usable: what the user has', () => {
    const r = requirement(input({ policies: [rule({ allowedFactors: ['email', 'sms'] })], user: EVERYTHING }));
    assert.deepEqual(r.allowedFactors, ['email', 'sms']);
    assert.deepEqual(r.usableFactors, ['email', 'sms']);
    const switchedOff = requirement(input({ policies: [rule({})], methodsAvailable: { ...ALL, email: false }, user: EVERYTHING }));
    assert.deepEqual(switchedOff.allowedFactors, ['webauthn', 'totp', 'sms', 'recovery']);
    const phoneUnverified = requirement(input({ policies: [rule({})], user: { emailVerified: true, phoneVerified: false, hasAuthenticator: false } }));
    assert.deepEqual(phoneUnverified.usableFactors, ['email']);
  });

  it('"authenticator app required" forces enrolment first and allows nothing else', () => {
    const r = requirement(input({ policies: [rule({ requireAuthenticatorApp: true, mfa: 'optional' })], user: { ...EVERYTHING, hasAuthenticator: false } }));
    assert.equal(r.mfaRequired, true);
    assert.equal(r.enrolAuthenticator, 'required');
    assert.deepEqual(r.allowedFactors, ['totp']);
    assert.deepEqual(r.usableFactors, []);
    assert.equal(r.noUsableMethod, false);
    const enrolled = requirement(input({ policies: [rule({ requireAuthenticatorApp: true })], user: EVERYTHING }));
    assert.equal(enrolled.enrolAuthenticator, 'no');
    assert.deepEqual(enrolled.usableFactors, ['totp']);
  });

  it('restored after a lost token: a code to the user’s own address or phone first, then a new app; the password alone only when there is no code method', () => {
    const r = requirement(input({ user: { emailVerified: true, phoneVerified: true, hasAuthenticator: false, mustEnrol: true } }));
    assert.deepEqual([r.mfaRequired, r.reasons, r.enrolAuthenticator, r.usableFactors], [true, ['restored'], 'after-code', ['email', 'sms']]);
    assert.deepEqual([...r.allowedFactors].sort(), ['email', 'sms', 'totp']);
    const appPolicy = requirement(input({ policies: [rule({ requireAuthenticatorApp: true })], user: { emailVerified: true, phoneVerified: false, hasAuthenticator: false, mustEnrol: true } }));
    assert.deepEqual([appPolicy.enrolAuthenticator, appPolicy.usableFactors], ['after-code', ['email']], 'even where a policy allows only apps, the code comes first');
    const noCode = requirement(input({ user: { ...NOTHING, mustEnrol: true } }));
    assert.deepEqual([noCode.enrolAuthenticator, noCode.usableFactors], ['required', []]);
    const smsOff = requirement(input({ methodsAvailable: { ...ALL, email: false, sms: false }, user: { emailVerified: true, phoneVerified: false, hasAuthenticator: false, mustEnrol: true } }));
    assert.equal(smsOff.enrolAuthenticator, 'required', 'codes switched off: the app alone');
    const enrolled = requirement(input({ user: { ...EVERYTHING, mustEnrol: true } }));
    assert.ok(!enrolled.reasons.includes('restored'), 'a new app is there: nothing more to do');
  });

  it('a user with code methods but no app may add one after passing a code; never when apps are not allowed', () => {
    const r = requirement(input({ policies: [rule({})], user: { emailVerified: true, phoneVerified: true, hasAuthenticator: false } }));
    assert.equal(r.enrolAuthenticator, 'after-factor');
    assert.deepEqual(r.usableFactors, ['email', 'sms']);
    assert.equal(r.noUsableMethod, false);
    assert.equal(requirement(input({ policies: [rule({ allowedFactors: ['email'] })] })).enrolAuthenticator, 'no');
    assert.equal(requirement(input({ policies: [rule({})], user: EVERYTHING })).enrolAuthenticator, 'no', 'already has an app');
    assert.equal(requirement(input({ policies: [rule({ mfa: 'off' })] })).enrolAuthenticator, 'no', 'no MFA step at all');
  });

  it('required with nothing usable: enrolment is offered when apps are allowed, else the "no usable method" page', () => {
    const offered = requirement(input({ policies: [rule({})], user: NOTHING }));
    assert.equal(offered.enrolAuthenticator, 'offered');
    assert.equal(offered.noUsableMethod, false);
    const stuck = requirement(input({ policies: [rule({ allowedFactors: ['sms'] })], user: NOTHING }));
    assert.equal(stuck.noUsableMethod, true);
    const appsOff = requirement(input({ policies: [rule({ requireAuthenticatorApp: true })], methodsAvailable: { ...ALL, totp: false }, user: EVERYTHING }));
    assert.equal(appsOff.noUsableMethod, true, 'the policy demands an app but apps are switched off');
  });

  it('a first factor is enrolled with a password alone only when a policy demands MFA, never for acr_values or a client flag', () => {
    for (const over of [{ mfaAcrRequested: true }, { clientRequiresMfa: true }]) {
      const need = requirement(input({ ...over, user: NOTHING }));
      assert.equal(need.mfaRequired, true);
      assert.equal(need.enrolAuthenticator, 'no');
      assert.equal(need.noUsableMethod, true, 'the "no usable method" page, not a QR code');
    }
    assert.equal(requirement(input({ mfaAcrRequested: true, policies: [rule({})], user: NOTHING })).enrolAuthenticator, 'offered');
  });
});

describe('policy: a sign-in as a shared account', () => {
  it('always asks a code, of the member’s own factors; never enrols anything, whatever the shared account’s policy', () => {
    const plain = requirement(input({ sharedSignIn: true, user: { ...NOTHING, phoneVerified: true } }));
    assert.equal(plain.mfaRequired, true);
    assert.deepEqual(plain.reasons, ['shared']);
    assert.deepEqual(plain.usableFactors, ['sms']);
    assert.equal(plain.enrolAuthenticator, 'no');
    // A policy demanding an app: only the member's app counts, and none is enrolled in this sign-in.
    const appOnly = requirement(input({ sharedSignIn: true, policies: [rule({ requireAuthenticatorApp: true })], user: { ...EVERYTHING, hasAuthenticator: false, mustEnrol: true } }));
    assert.deepEqual(appOnly.usableFactors, []);
    assert.equal(appOnly.enrolAuthenticator, 'no');
    assert.equal(appOnly.noUsableMethod, true);
    assert.ok(!appOnly.reasons.includes('restored'), 'the member’s own restore does not apply to the shared account');
    const narrowed = requirement(input({ sharedSignIn: true, policies: [rule({ allowedFactors: ['totp', 'email'] })], user: EVERYTHING }));
    assert.deepEqual(narrowed.usableFactors, ['totp', 'email']);
  });

  it('passkeys and recovery codes: offered first and last; the phishing-resistant acr allows passkeys only', () => {
    const all = { ...EVERYTHING, hasPasskey: true, hasRecoveryCodes: true };
    assert.deepEqual(requirement(input({ policies: [rule({})], user: all })).usableFactors, ['webauthn', 'totp', 'email', 'sms', 'recovery']);
    const phr = requirement(input({ phishingResistantRequested: true, user: all }));
    assert.deepEqual([phr.mfaRequired, phr.allowedFactors, phr.usableFactors], [true, ['webauthn'], ['webauthn']]);
    const phrWithout = requirement(input({ phishingResistantRequested: true, user: EVERYTHING }));
    assert.equal(phrWithout.noUsableMethod, true, 'no passkey: no way to the phishing-resistant acr');
    const noRecovery = requirement(input({ policies: [rule({ allowedFactors: ['webauthn', 'totp'] })], user: all }));
    assert.deepEqual(noRecovery.usableFactors, ['webauthn', 'totp'], 'a policy may leave recovery codes out');
  });

  it('a first passkey is added at sign-in only where a policy demands MFA and the user has nothing usable', () => {
    const keysOnly = requirement(input({ policies: [rule({ allowedFactors: ['webauthn'] })], user: NOTHING }));
    assert.deepEqual([keysOnly.enrolPasskey, keysOnly.enrolAuthenticator, keysOnly.noUsableMethod, keysOnly.passkeyProof], [true, 'no', false, []]);
    const withEmail = requirement(input({ policies: [rule({ allowedFactors: ['webauthn'] })], user: { ...NOTHING, emailVerified: true } }));
    assert.deepEqual([withEmail.enrolPasskey, withEmail.usableFactors, withEmail.passkeyProof], [true, [], ['email']], 'a code to the user’s own address first');
    assert.equal(requirement(input({ policies: [rule({})], user: NOTHING })).enrolPasskey, true, 'beside the app');
    assert.equal(requirement(input({ phishingResistantRequested: true, user: NOTHING })).enrolPasskey, false, 'a request alone never lets a password add one');
    assert.equal(requirement(input({ clientRequiresMfa: true, user: NOTHING })).enrolPasskey, false);
    assert.equal(requirement(input({ policies: [rule({})], user: EVERYTHING })).enrolPasskey, false, 'something usable: sign in with it first');
    const phrWithApp = requirement(input({ policies: [rule({})], phishingResistantRequested: true, user: { ...NOTHING, hasAuthenticator: true } }));
    assert.deepEqual([phrWithApp.enrolPasskey, phrWithApp.noUsableMethod], [false, true], 'asking for phr never lets a password add a passkey beside the app');
    assert.equal(requirement(input({ policies: [rule({ requireAuthenticatorApp: true, allowedFactors: ['totp'] })], user: NOTHING })).enrolPasskey, false);
  });

  it('a passkey of their own makes MFA asked of the user; recovery codes alone do not', () => {
    assert.deepEqual(requirement(input({ user: { ...NOTHING, hasPasskey: true } })).reasons, ['enrolled']);
    assert.equal(requirement(input({ user: { ...NOTHING, emailVerified: true, hasRecoveryCodes: true } })).mfaRequired, false);
  });

  it('a shared account is signed in to with a code: the member’s passkeys and recovery codes do not answer it', () => {
    const r = requirement(input({ sharedSignIn: true, user: { ...EVERYTHING, hasPasskey: true, hasRecoveryCodes: true } }));
    assert.deepEqual(r.usableFactors, ['totp', 'email', 'sms']);
  });
});
