import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Readable, type PassThrough } from 'node:stream';
import { ConsumerGoneError } from '../../functions/orchestration/fan-out';
import { PassStopped, SinglePass } from '../../functions/orchestration/single-pass';
import { isRetryable, RegistryError } from '../../functions/registry/errors';
import { InputError } from '../../functions/util/errors';

const T = { timeout: 10_000 };

function source(size: number, chunk = 4096): Readable {
  const bytes = Buffer.alloc(size, 7);
  const parts: Buffer[] = [];
  for (let i = 0; i < size; i += chunk) parts.push(bytes.subarray(i, i + chunk));
  return Readable.from(parts);
}

/** Reads the sink to its end, as an upload does; returns the bytes it got. */
async function drain(sink: PassThrough): Promise<number> {
  let n = 0;
  for await (const c of sink) n += (c as Buffer).length;
  return n;
}

/**
 * An upload that takes `failAt` bytes, then closes its sink without an error (as an HTTP client does with its
 * body once the request failed) and only some time later reports the registry's error: the read has long seen
 * "the consumer closed" by then.
 */
async function failingUpload(sink: PassThrough, failAt: number, error: Error): Promise<never> {
  let n = 0;
  for await (const c of sink) {
    n += (c as Buffer).length;
    if (n >= failAt) break; // leaving the loop destroys the sink, without an error
  }
  await new Promise((r) => setTimeout(r, 50));
  throw error;
}

describe('SinglePass', () => {
  it('hands every byte to every part and commits the unknown-digest upload only after the read and the others', T, async () => {
    const pass = new SinglePass('file.oci');
    const whole = pass.sink();
    const part = pass.sink();
    const events: string[] = [];
    const gated = pass.upload(false, async (beforeCommit) => {
      assert.ok(beforeCommit, 'an upload of unknown digest gets a commit gate');
      const n = await drain(whole);
      events.push('whole: all bytes sent');
      await beforeCommit();
      events.push('whole: committed');
      return n;
    });
    const verifying = pass.upload(true, async (beforeCommit) => {
      assert.equal(beforeCommit, undefined, 'an upload of known digest commits by itself');
      const n = await drain(part);
      await new Promise((r) => setTimeout(r, 30));
      events.push('blob: committed');
      return n;
    });
    await pass.run(source(100_000), 100_000, [whole], [{ start: 1000, end: 3000, sink: part }]);
    assert.equal(await gated, 100_000);
    assert.equal(await verifying, 2000);
    assert.deepEqual(events, ['whole: all bytes sent', 'blob: committed', 'whole: committed']);
  });

  it("fails with an upload's own error, retryable, not with the 'consumer closed' the read saw first", T, async () => {
    const pass = new SinglePass('file.oci');
    const whole = pass.sink();
    const part = pass.sink();
    const registry503 = new RegistryError('PUT blob: HTTP 503 UNAVAILABLE', { status: 503, code: 'UNAVAILABLE', retryable: true });
    let gateResult: unknown;
    void pass.upload(false, async (beforeCommit) => {
      await drain(whole).catch(() => undefined);
      try {
        await beforeCommit?.();
        gateResult = 'committed';
      } catch (err) {
        gateResult = err;
        throw err;
      }
    });
    void pass.upload(true, () => failingUpload(part, 8192, registry503));
    await assert.rejects(pass.run(source(200_000), 200_000, [whole], [{ start: 0, end: 100_000, sink: part }]), (err: unknown) => {
      assert.equal(err, registry503);
      assert.ok(isRetryable(err));
      return true;
    });
    assert.ok(gateResult instanceof PassStopped, 'the other upload was not committed');
  });

  it('a consumer-gone error alone is never taken for the cause while a real one is known', T, async () => {
    const pass = new SinglePass('bundle');
    const a = pass.sink();
    const b = pass.sink();
    const bad = new InputError('bundle: not a valid gzip-compressed tar');
    void pass.upload(false, async () => {
      for await (const _ of a) break;
      throw new ConsumerGoneError();
    });
    pass.gate(new Promise((_, reject) => setTimeout(() => reject(bad), 40)));
    void pass.upload(false, () => drain(b));
    await assert.rejects(pass.run(source(50_000, 1024), 50_000, [a, b], []), (err: unknown) => err === bad);
  });

  it('a gate that fails stops every part, and is the cause', T, async () => {
    const pass = new SinglePass('bundle');
    const whole = pass.sink();
    const parser = new InputError('bundle: not a valid gzip-compressed tar (invalid header)');
    let uploadError: unknown;
    void pass.upload(false, async (beforeCommit) => {
      try {
        await drain(whole);
        await beforeCommit?.();
      } catch (err) {
        uploadError = err;
        throw err;
      }
    });
    pass.gate(Promise.reject(parser));
    await assert.rejects(pass.run(source(10_000_000, 65536), 10_000_000, [whole], []), (err: unknown) => err === parser);
    assert.ok(uploadError instanceof PassStopped, `the upload was stopped by the pass: ${String(uploadError)}`);
  });

  it('a source that breaks is the cause', T, async () => {
    const pass = new SinglePass('file');
    const whole = pass.sink();
    const broken = new Error('socket hang up');
    async function* breaking() {
      yield Buffer.alloc(1000);
      throw broken;
    }
    void pass.upload(false, async (beforeCommit) => {
      await drain(whole);
      await beforeCommit?.();
    });
    await assert.rejects(pass.run(Readable.from(breaking()), 5000, [whole], []), (err: unknown) => err === broken);
  });

  it('waits for parts added while the read goes on', T, async () => {
    const pass = new SinglePass('bundle');
    const whole = pass.sink();
    let late: Promise<number> | undefined;
    let finishedLate = false;
    void pass.upload(false, async () => {
      let n = 0;
      for await (const c of whole) {
        n += (c as Buffer).length;
        late ??= pass.upload(true, async () => {
          await new Promise((r) => setTimeout(r, 60));
          finishedLate = true;
          return 1;
        });
      }
      return n;
    });
    await pass.run(source(20_000), 20_000, [whole], []);
    assert.ok(late);
    assert.ok(finishedLate, 'run() returned only after the part added during the read had finished');
  });
});
