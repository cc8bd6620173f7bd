import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Slots } from '../../src/directory/passwords.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('slots', () => {
  it('runs at most its size at once, the rest in the order they came', async () => {
    const slots = new Slots(2);
    let running = 0;
    let most = 0;
    const started: number[] = [];
    const releases: (() => void)[] = [];
    const all = Array.from({ length: 6 }, (_, i) =>
      slots.run(async () => {
        started.push(i);
        running++;
        most = Math.max(most, running);
        await new Promise<void>((resolve) => releases.push(resolve));
        running--;
        return i;
      }));
    await tick();
    assert.deepEqual(started, [0, 1]);
    while (releases.length) {
      releases.shift()!();
      await tick();
    }
    assert.deepEqual(await Promise.all(all), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(started, [0, 1, 2, 3, 4, 5]);
    assert.equal(most, 2);
  });

  it('gives the slot back when the work fails', async () => {
    const slots = new Slots(1);
    await assert.rejects(slots.run(() => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await slots.run(() => Promise.resolve('next')), 'next');
  });
});
