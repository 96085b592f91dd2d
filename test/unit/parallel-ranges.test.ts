/** One object read as several ranges at once, handed on in order, with bounded memory and per-part retries. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { RegistryError } from '../../functions/registry/errors';
import { parallelRanges } from '../../functions/storage/parallel-ranges';

const data = Buffer.from(Array.from({ length: 100_003 }, (_, i) => i % 251));

/** A store that serves ranges of `data` after a random delay, in small chunks, and records what it was asked. */
function store(fail?: (start: number, call: number) => Error | undefined) {
  const calls: Array<{ start: number; end: number }> = [];
  let active = 0;
  let maxActive = 0;
  const open = async (start: number, end: number): Promise<Readable> => {
    calls.push({ start, end });
    const err = fail?.(start, calls.length);
    active++;
    maxActive = Math.max(maxActive, active);
    await new Promise((r) => setTimeout(r, Math.random() * 15));
    const slice = data.subarray(start, end + 1);
    const chunks = Array.from({ length: Math.ceil(slice.length / 999) }, (_, i) => slice.subarray(i * 999, (i + 1) * 999));
    return Readable.from(
      (async function* () {
        try {
          for (const [i, c] of chunks.entries()) {
            if (err && i === 2) throw err;
            yield c;
          }
        } finally {
          active--;
        }
      })(),
    );
  };
  return { open, calls, maxActive: () => maxActive };
}

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

describe('parallelRanges', () => {
  it('hands on every byte in order, whatever order the parts arrive in', async () => {
    const s = store();
    const out = await collect(parallelRanges(s.open, data.length, { partSize: 7_000, readers: 4 }));
    assert.ok(out.equals(data));
    assert.equal(s.calls.length, Math.ceil(data.length / 7_000));
    assert.deepEqual(s.calls.at(-1), { start: 98_000, end: 100_002 });
  });

  it('keeps at most `readers` parts in flight', async () => {
    const s = store();
    await collect(parallelRanges(s.open, data.length, { partSize: 5_000, readers: 3 }));
    assert.ok(s.maxActive() <= 3, `${s.maxActive()} at once`);
    assert.ok(s.maxActive() >= 2, 'and does read in parallel');
  });

  it('reads a failed part again, and only that part', async () => {
    const network = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    const s = store((start, call) => (start === 20_000 && call <= 6 ? network : undefined));
    const out = await collect(parallelRanges(s.open, data.length, { partSize: 10_000, readers: 4 }));
    assert.ok(out.equals(data));
    const reads = s.calls.filter((c) => c.start === 20_000).length;
    assert.equal(reads, 2, 'the part at 20000 was read twice');
    assert.equal(s.calls.length, Math.ceil(data.length / 10_000) + 1, 'every other part once');
  });

  it('ends the stream with an error that retrying cannot help', async () => {
    const s = store((start) => (start === 30_000 ? new RegistryError('denied', { code: 'DENIED' }) : undefined));
    await assert.rejects(collect(parallelRanges(s.open, data.length, { partSize: 10_000, readers: 2 })), /denied/);
  });

  it('refuses a range that returns fewer bytes than asked', async () => {
    const short = async (start: number, end: number) => Readable.from([data.subarray(start, end)]);
    await assert.rejects(collect(parallelRanges(short, data.length, { partSize: 10_000, readers: 2 })), /returned 9999 bytes, 10000 were asked for/);
  });

  it('reads a range that ended early again (a connection closed under it), like any broken read', async () => {
    const calls: number[] = [];
    const once = async (start: number, end: number) => {
      calls.push(start);
      const truncated = start === 40_000 && calls.filter((c) => c === 40_000).length === 1;
      return Readable.from([data.subarray(start, truncated ? end - 500 : end + 1)]);
    };
    const out = await collect(parallelRanges(once, data.length, { partSize: 10_000, readers: 3 }));
    assert.ok(out.equals(data));
    assert.equal(calls.filter((c) => c === 40_000).length, 2, 'the short part was read again');
  });

  it('aborts the other parts in flight when one fails for good', async () => {
    const signals: AbortSignal[] = [];
    const open = async (start: number, end: number, signal: AbortSignal): Promise<Readable> => {
      signals.push(signal);
      if (start === 0) throw new RegistryError('denied', { code: 'DENIED' });
      // The other parts hang until aborted, as a slow GET would.
      await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
      return Readable.from([data.subarray(start, end + 1)]);
    };
    await assert.rejects(collect(parallelRanges(open, data.length, { partSize: 10_000, readers: 3 })), /denied/);
    assert.equal(signals.length, 3);
    assert.ok(signals.every((s) => s.aborted), 'every part was told to stop');
  });
});
