/** The young generation is collected after every YOUNG_GC_STEP_BYTES read, where gc() is exposed (Lambda). */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { bytesStreamed, YOUNG_GC_STEP_BYTES } from '../../functions/util/young-garbage';

it('collects the young generation after every 4 MiB read where gc() is exposed, and does nothing where it is not', () => {
  const g = globalThis as { gc?: unknown };
  const before = g.gc;
  const calls: unknown[] = [];
  try {
    delete g.gc;
    bytesStreamed(3 * YOUNG_GC_STEP_BYTES);
    g.gc = (options: unknown) => calls.push(options);
    const quarter = YOUNG_GC_STEP_BYTES / 4;
    for (let i = 0; i < 3; i++) bytesStreamed(quarter);
    assert.equal(calls.length, 0, 'bytes read while gc() was missing do not count');
    bytesStreamed(quarter);
    assert.deepEqual(calls, [{ type: 'minor' }]);
    bytesStreamed(YOUNG_GC_STEP_BYTES - 1);
    assert.equal(calls.length, 1);
    bytesStreamed(1);
    assert.deepEqual(calls, [{ type: 'minor' }, { type: 'minor' }]);
  } finally {
    if (before === undefined) delete g.gc;
    else g.gc = before;
  }
});
