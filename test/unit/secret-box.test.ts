import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SecretBox } from '../../src/crypto/secret-box.js';
import { acrFor, ACR } from '../../src/oidc/assurance.js';

describe('secret box (AES-256-GCM at rest)', () => {
  const box = new SecretBox('unit-test-master-secret-0123456789abcdef');

  it('round-trips and never stores the plaintext', () => {
    const sealed = box.seal('totp-secret-JBSWY3DP', 'purpose-a');
    assert.ok(!sealed.includes('JBSWY3DP'));
    assert.equal(box.open(sealed, 'purpose-a'), 'totp-secret-JBSWY3DP');
    assert.notEqual(box.seal('same', 'p'), box.seal('same', 'p'), 'a fresh IV every time');
  });

  it('refuses another purpose, another key and tampering', () => {
    const sealed = box.seal('value', 'purpose-a');
    assert.throws(() => box.open(sealed, 'purpose-b'));
    assert.throws(() => new SecretBox('another-master-secret-0123456789abcdef').open(sealed, 'purpose-a'), /TESSERA_SECRET differs/);
    const parts = sealed.split('.');
    parts[2] = Buffer.from('forged').toString('base64url');
    assert.throws(() => box.open(parts.join('.'), 'purpose-a'));
    assert.throws(() => box.open('garbage', 'purpose-a'), /unknown format/);
  });

  it('derives distinct keys per purpose', () => {
    assert.notDeepEqual(box.deriveKey('csrf'), box.deriveKey('otp'));
    assert.deepEqual(box.deriveKey('csrf'), new SecretBox('unit-test-master-secret-0123456789abcdef').deriveKey('csrf'));
  });
});

describe('assurance', () => {
  it('password alone is the password acr; mfa in amr is the MFA acr', () => {
    assert.equal(acrFor(['pwd']), ACR.password);
    assert.equal(acrFor(['pwd', 'otp', 'mfa']), ACR.mfa);
  });
});
