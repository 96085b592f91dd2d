import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkPolicy, chunkLimitsFor } from '../../functions/registry/chunk-policy';
import { RegistryError } from '../../functions/registry/errors';
import { FAILING_SPAN_MS, JobScope, Operation } from '../../functions/registry/failure-budget';
import { TimeoutError } from '../../functions/util/deadline';

const MiB = 1024 * 1024;
const unavailable = () => new RegistryError('POST upload: HTTP 503 UNAVAILABLE', { status: 503, code: 'UNAVAILABLE', retryable: true });

describe('JobScope: the failure budget', () => {
  it('counts the failures of concurrent operations apart: 12 failures over 4 uploads within 2 s are all retryable', () => {
    let now = 0;
    const scope = new JobScope(undefined, 8, undefined, () => now);
    const ops = [new Operation(), new Operation(), new Operation(), new Operation()];
    for (let i = 0; i < 12; i++) {
      now = i * 150;
      const counted = scope.failed(unavailable(), ops[i % 4] as Operation);
      assert.equal(counted.retryable, true, `failure ${i + 1}`);
    }
    assert.ok(ops.every((op) => !scope.exhausted(op)));
  });

  it('gives up on one operation that fails MAX_CONSECUTIVE_FAILURES times in a row', () => {
    const scope = new JobScope(undefined, 8, undefined, () => 0);
    const op = new Operation();
    for (let i = 1; i < 8; i++) assert.equal(scope.failed(unavailable(), op).retryable, true);
    const last = scope.failed(unavailable(), op);
    assert.equal(last.retryable, false);
    assert.match(last.message, /HTTP 503 UNAVAILABLE \(the registry failed 8 times in a row; giving up\)/);
    assert.equal(last.code, 'UNAVAILABLE');
    assert.ok(scope.exhausted(op));
  });

  it('a success of the operation starts its count again', () => {
    const scope = new JobScope(undefined, 3, undefined, () => 0);
    const op = new Operation();
    scope.failed(unavailable(), op);
    scope.failed(unavailable(), op);
    scope.succeeded(op);
    assert.equal(scope.failed(unavailable(), op).retryable, true);
    assert.equal(scope.failed(unavailable(), op).retryable, true);
    assert.equal(scope.failed(unavailable(), op).retryable, false);
  });

  it('counts the registry as down once every request failed for FAILING_SPAN_MS, nothing succeeding', () => {
    let now = 0;
    const scope = new JobScope(undefined, 8, undefined, () => now);
    // Each failure from a fresh operation (a new request each time), as when every request of a job fails.
    for (let i = 0; i < 40; i++) {
      now = i * 400;
      const counted = scope.failed(unavailable(), new Operation());
      if (now < FAILING_SPAN_MS) assert.equal(counted.retryable, true, `at ${now} ms`);
      else {
        assert.equal(counted.retryable, false, `at ${now} ms`);
        assert.match(counted.message, /failed \d+ times in a row over \d+ s, nothing succeeding; giving up/);
        return;
      }
    }
    assert.fail('never counted as down');
  });

  it('does not count throttling (429) as the registry being down: only each request\'s own attempts bound it', () => {
    let now = 0;
    const scope = new JobScope(undefined, 8, undefined, () => now);
    const ops = [new Operation(), new Operation(), new Operation(), new Operation()];
    const throttled = () => new RegistryError('PUT: HTTP 429 TOOMANYREQUESTS', { status: 429, code: 'TOOMANYREQUESTS', retryable: true, retryAfterMs: 4000 });
    for (let i = 0; i < 16; i++) {
      now = Math.floor(i / 4) * 4000;
      assert.equal(scope.failed(throttled(), ops[i % 4] as Operation).retryable, true, `429 number ${i + 1} at ${now} ms`);
    }
  });

  it('a success anywhere in the job ends the streak', () => {
    let now = 0;
    const scope = new JobScope(undefined, 8, undefined, () => now);
    for (let i = 0; i < 40; i++) {
      now = i * 400;
      assert.equal(scope.failed(unavailable(), new Operation()).retryable, true, `at ${now} ms`);
      if (i % 10 === 9) scope.succeeded(new Operation());
    }
  });

  it('refuses a wait that runs past the time left', () => {
    let left = 20_000;
    const scope = new JobScope(undefined, 8, () => left);
    scope.checkWait(19_000, unavailable());
    left = 5_000;
    assert.throws(
      () => scope.checkWait(60_000, unavailable()),
      (err: unknown) => err instanceof TimeoutError && /the next attempt would wait 60 s, and 5 s are left/.test(err.message),
    );
    new JobScope().checkWait(3_600_000, unavailable());
  });
});

describe('ChunkPolicy', () => {
  it('uploads whole until a body is refused, then halves chunks until they fit', () => {
    const shrunk: number[] = [];
    const p = new ChunkPolicy({ fromStart: false, minBytes: MiB, onShrink: (n) => shrunk.push(n) });
    assert.equal(p.size(0), undefined);
    assert.equal(p.shrink(13 * MiB, 0), true);
    assert.equal(p.size(0), 6.5 * MiB);
    assert.equal(p.shrink(6.5 * MiB, 0), true);
    assert.equal(p.size(0), 3.25 * MiB);
    assert.deepEqual(shrunk, [6.5 * MiB, 3.25 * MiB]);
  });

  it('never goes below the minimum the registry advertises or is known for (ECR: 5 MiB)', () => {
    const ecr = new ChunkPolicy({ fromStart: false, ...chunkLimitsFor('123456789012.dkr.ecr.eu-central-1.amazonaws.com') });
    assert.equal(ecr.shrink(13 * MiB, 0), true);
    assert.equal(ecr.size(0), 6.5 * MiB);
    assert.equal(ecr.shrink(6.5 * MiB, 0), true);
    assert.equal(ecr.size(0), 5 * MiB, 'not 3.25 MiB: ECR refuses parts below 5 MiB');
    assert.equal(ecr.shrink(5 * MiB, 0), false, 'cannot shrink further');
    const advertised = new ChunkPolicy({ fromStart: true, chunkBytes: 16 * MiB, minBytes: MiB });
    assert.equal(advertised.shrink(16 * MiB, 12 * MiB), true);
    assert.equal(advertised.size(12 * MiB), 12 * MiB);
  });

  it('keeps chunks at or below a known maximum (GHCR: 4 MiB), from the start and after a refusal', () => {
    const ghcr = new ChunkPolicy({ fromStart: true, chunkBytes: 16 * MiB, ...chunkLimitsFor('ghcr.io') });
    assert.equal(ghcr.size(0), 4 * MiB);
    const after = new ChunkPolicy({ fromStart: false, ...chunkLimitsFor('ghcr.io') });
    assert.equal(after.shrink(100 * MiB, 0), true);
    assert.equal(after.size(0), 4 * MiB);
    assert.deepEqual(chunkLimitsFor('registry.example:5000'), { minBytes: MiB });
  });
});
