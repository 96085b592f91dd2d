import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Limiter, mapLimit } from '../../functions/util/limiter';

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('Limiter', () => {
  it('runs at most `limit` tasks at once, the rest in order', async () => {
    const limiter = new Limiter(2);
    let running = 0;
    let most = 0;
    const order: number[] = [];
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        limiter.run(async () => {
          running++;
          most = Math.max(most, running);
          order.push(i);
          await tick();
          running--;
        }),
      ),
    );
    assert.equal(most, 2);
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
  });

  it('once closed, starts none of the waiting tasks nor later ones: each fails with the reason', async () => {
    const limiter = new Limiter(1);
    const started: number[] = [];
    const boom = new Error('the publication failed');
    const first = limiter.run(async () => {
      started.push(0);
      await tick(20);
      return 'done';
    });
    const waiting = [1, 2].map((i) => limiter.run(async () => void started.push(i)));
    limiter.close(boom);
    for (const w of waiting) await assert.rejects(w, (err: unknown) => err === boom);
    await assert.rejects(limiter.run(async () => void started.push(3)), (err: unknown) => err === boom);
    assert.equal(await first, 'done', 'a task already running runs to its end');
    assert.deepEqual(started, [0]);
  });
});

describe('mapLimit', () => {
  it('starts nothing after the first failure and rejects with it once the others in flight settled', async () => {
    const started: number[] = [];
    let settled = 0;
    const boom = new Error('item 1');
    await assert.rejects(
      mapLimit([0, 1, 2, 3, 4], 2, async (i) => {
        started.push(i);
        await tick(i === 1 ? 1 : 20);
        settled++;
        if (i === 1) throw boom;
      }),
      (err: unknown) => err === boom,
    );
    assert.deepEqual(started, [0, 1]);
    assert.equal(settled, 2, 'the item in flight finished before the rejection');
  });
});
