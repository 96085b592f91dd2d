import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, DEFAULT_RETRY, retryAfterMs, sleep, type RetryPolicy } from '../../functions/registry/retry';

const policy: RetryPolicy = { maxAttempts: 6, baseDelayMs: 100, maxDelayMs: 1_000, maxRetryAfterMs: 30_000 };

describe('backoffDelay', () => {
  it('lies between half the ceiling and the ceiling for attempt 1', () => {
    assert.equal(backoffDelay(policy, 1, () => 0), 50);
    assert.equal(backoffDelay(policy, 1, () => 0.5), 75);
    assert.equal(backoffDelay(policy, 1, () => 0.999999), 100);
  });

  it('doubles the ceiling with each attempt', () => {
    assert.deepEqual(
      [1, 2, 3, 4].map((a) => backoffDelay(policy, a, () => 0)),
      [50, 100, 200, 400],
    );
    assert.deepEqual(
      [1, 2, 3, 4].map((a) => backoffDelay(policy, a, () => 0.999999)),
      [100, 200, 400, 800],
    );
  });

  it('caps the ceiling at maxDelayMs', () => {
    for (const attempt of [5, 6, 10, 40]) {
      assert.equal(backoffDelay(policy, attempt, () => 0), 500, `attempt ${attempt}, random 0`);
      assert.equal(backoffDelay(policy, attempt, () => 0.999999), 1_000, `attempt ${attempt}, random ~1`);
    }
  });

  it('stays within [ceiling/2, ceiling] for many random values with the default policy', () => {
    for (let attempt = 1; attempt <= 8; attempt++) {
      const ceiling = Math.min(DEFAULT_RETRY.maxDelayMs, DEFAULT_RETRY.baseDelayMs * 2 ** (attempt - 1));
      for (let i = 0; i <= 20; i++) {
        const r = i / 20.0001;
        const d = backoffDelay(DEFAULT_RETRY, attempt, () => r);
        assert.ok(d >= ceiling / 2 && d <= ceiling, `attempt ${attempt}, random ${r}: ${d} not in [${ceiling / 2}, ${ceiling}]`);
      }
    }
  });

  it('uses the random source it is given (jitter)', () => {
    const low = backoffDelay(policy, 3, () => 0.1);
    const high = backoffDelay(policy, 3, () => 0.9);
    assert.equal(low, 220);
    assert.equal(high, 380);
  });

  it('returns whole milliseconds', () => {
    assert.equal(Number.isInteger(backoffDelay(policy, 2, () => 1 / 3)), true);
    assert.equal(backoffDelay(policy, 2, () => 1 / 3), 133);
  });

  it('defaults to Math.random and stays in bounds', () => {
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(DEFAULT_RETRY, 2);
      assert.ok(d >= 250 && d <= 500, String(d));
    }
  });
});

describe('retryAfterMs', () => {
  const now = Date.parse('2026-02-10T11:00:00Z');

  it('reads delta-seconds', () => {
    assert.equal(retryAfterMs('120', now), 120_000);
    assert.equal(retryAfterMs('0', now), 0);
    assert.equal(retryAfterMs(' 3 ', now), 3_000);
  });

  it('reads an HTTP date relative to now', () => {
    assert.equal(retryAfterMs('Tue, 10 Feb 2026 11:00:30 GMT', now), 30_000);
    assert.equal(retryAfterMs('Tue, 10 Feb 2026 11:02:00 GMT', now), 120_000);
  });

  it('never returns a negative delay for a date in the past', () => {
    assert.equal(retryAfterMs('Tue, 10 Feb 2026 10:59:00 GMT', now), 0);
  });

  it('takes the first value of an array header', () => {
    assert.equal(retryAfterMs(['7', '100'], now), 7_000);
  });

  it('returns undefined when absent, empty or unreadable', () => {
    assert.equal(retryAfterMs(undefined, now), undefined);
    assert.equal(retryAfterMs('', now), undefined);
    assert.equal(retryAfterMs('   ', now), undefined);
    assert.equal(retryAfterMs([], now), undefined);
    assert.equal(retryAfterMs('soon', now), undefined);
    assert.equal(retryAfterMs('not a date at all', now), undefined);
  });

  it('does not mistake a malformed value for a date in the past', () => {
    // "1.5" is neither delta-seconds nor an HTTP date; whatever the answer, it must not be "retry at once"
    const r = retryAfterMs('1.5', now);
    assert.ok(r === undefined || r === 1_500, `got ${String(r)}`);
  });

  it('uses the current time by default', () => {
    const inAMinute = new Date(Date.now() + 60_000).toUTCString();
    const ms = retryAfterMs(inAMinute);
    assert.ok(ms !== undefined && ms > 55_000 && ms <= 60_000, String(ms));
  });
});

describe('sleep', () => {
  it('returns at once for zero or negative delays', async () => {
    const started = Date.now();
    await sleep(0);
    await sleep(-5);
    assert.ok(Date.now() - started < 50);
  });

  it('waits about the given time', async () => {
    const started = Date.now();
    await sleep(30);
    assert.ok(Date.now() - started >= 25);
  });

  it('is cancelled by an abort signal', async () => {
    const ac = new AbortController();
    const p = sleep(10_000, ac.signal);
    ac.abort();
    await assert.rejects(p, (err: unknown) => err instanceof Error && err.name === 'AbortError');
  });
});
