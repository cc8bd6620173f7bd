import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseTokenCsv } from '../../src/admin/tokens.js';
import { splitPin } from '../../src/factors/authenticators.js';

describe('token seed files', () => {
  it('reads hex and base32 seeds, a header, comments, defaults for digits and period', () => {
    const { tokens, problems } = parseTokenCsv([
      'serial,seed,type,digits,period',
      '# batch 7',
      'HW-0001,3132333435363738393031323334353637383930,TOTP,6,30',
      'HW-0002;GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ;hotp;8;',
      '"HW-0003","3132333435363738393031323334353637383930",totp,,60',
      '',
    ].join('\r\n'));
    assert.deepEqual(problems, []);
    assert.deepEqual(tokens.map((t) => [t.serial, t.secret, t.type, t.digits, t.period]), [
      ['HW-0001', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'totp', 6, 30],
      ['HW-0002', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'hotp', 8, 30],
      ['HW-0003', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'totp', 6, 60],
    ]);
  });

  it('names every bad line and imports nothing from a file with one', () => {
    const { problems } = parseTokenCsv([
      'A1,3132333435363738393031323334353637383930,totp',
      'a1,3132333435363738393031323334353637383930,totp',
      'bad serial!,3132333435363738393031323334353637383930,totp',
      'A2,zz-not-a-seed,totp',
      'A3,31323334,totp',
      'A4,3132333435363738393031323334353637383930,ocra',
      'A5,3132333435363738393031323334353637383930,totp,7',
      'A6,3132333435363738393031323334353637383930,totp,6,5',
      'A7,3132333435363738393031323334353637383930,totp,6,30,extra',
    ].join('\n'));
    assert.equal(problems.length, 8);
    assert.match(problems[0]!, /^line 2: serial a1 is listed twice/);
    assert.match(problems[1]!, /^line 3: a serial number/);
    assert.match(problems[2]!, /^line 4: the seed of A2 is neither hex nor base32/);
    assert.match(problems[3]!, /^line 5: the seed of A3 is 4 bytes/);
    assert.match(problems[4]!, /^line 6: the type of A4 is TOTP or HOTP/);
    assert.match(problems[5]!, /^line 7: A5 shows 6 or 8 digits/);
    assert.match(problems[6]!, /^line 8: the period of A6/);
    assert.match(problems[7]!, /^line 9: more than five columns/);
    assert.deepEqual(parseTokenCsv('serial,seed,type\n').problems, ['the file lists no token']);
  });

  it('splits a PIN from the code on the side its owner chose', () => {
    const before = { digits: 6, pin_hash: 'h', pin_position: 'before' as const };
    const after = { digits: 6, pin_hash: 'h', pin_position: 'after' as const };
    assert.deepEqual(splitPin(before, '1111123456'), { pin: '1111', otp: '123456' });
    assert.deepEqual(splitPin(after, '1234561111'), { pin: '1111', otp: '123456' });
    assert.deepEqual(splitPin(after, '12345611112222'), { pin: '11112222', otp: '123456' });
    assert.equal(splitPin(after, '123456'), null, 'a token with a PIN needs it');
    assert.equal(splitPin(after, '123456111122223'), null, 'a PIN is at most 8 digits');
    assert.deepEqual(splitPin({ digits: 8, pin_hash: null, pin_position: null }, '12345678'), { pin: null, otp: '12345678' });
    assert.equal(splitPin({ digits: 6, pin_hash: null, pin_position: null }, '1234561111'), null);
  });
});
