import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { fanOut, type Slice } from '../../functions/orchestration/fan-out';
import { IntegrityError } from '../../functions/util/errors';

const T = { timeout: 10_000 };

/** Deterministic bytes that differ at every position, so a misplaced byte shows. */
function data(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0, n = 0; off < size; off += 32, n++) {
    createHash('sha256').update(`fan-out:${n}`).digest().copy(out, off, 0, Math.min(32, size - off));
  }
  return out;
}

/** A source that yields `bytes` in chunks of the given sizes, exactly (object mode keeps the boundaries). */
function source(bytes: Buffer, sizes: readonly number[]): Readable {
  const chunks: Buffer[] = [];
  let off = 0;
  for (let i = 0; off < bytes.length; i++) {
    const size = sizes[i % sizes.length] as number;
    chunks.push(bytes.subarray(off, off + size));
    off += size;
  }
  return Readable.from(chunks);
}

interface SinkOptions {
  highWaterMark?: number;
  /** answer each write later, so backpressure builds up */
  slow?: boolean;
  /** destroy itself once this many bytes arrived (a reader that gives up) */
  destroyAfter?: number;
  destroyError?: Error;
  /** never answer a write: the writer has to wait for 'drain' */
  stall?: boolean;
}

class Sink extends Writable {
  readonly chunks: Buffer[] = [];
  received = 0;
  error: Error | undefined;

  constructor(private readonly opts: SinkOptions = {}) {
    super({ highWaterMark: opts.highWaterMark ?? 16 * 1024 });
    this.on('error', (err) => {
      this.error = err;
    });
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    this.received += chunk.length;
    if (this.opts.stall) return;
    if (this.opts.destroyAfter !== undefined && this.received >= this.opts.destroyAfter) {
      cb();
      this.destroy(this.opts.destroyError);
      return;
    }
    if (this.opts.slow) setImmediate(() => cb());
    else cb();
  }
}

async function assertFinished(...sinks: Sink[]): Promise<void> {
  for (const s of sinks) {
    await finished(s);
    assert.equal(s.writableFinished, true);
    assert.equal(s.error, undefined);
  }
}

describe('fanOut: wholes and slices', () => {
  it('gives every whole consumer every byte, across odd chunk sizes', T, async () => {
    const bytes = data(10_007);
    const a = new Sink();
    const b = new Sink({ highWaterMark: 64, slow: true });
    const n = await fanOut(source(bytes, [1, 7, 333, 4096, 13]), [a, b], [], bytes.length, 'blob');
    assert.equal(n, 10_007);
    await assertFinished(a, b);
    assert.deepEqual(a.bytes, bytes);
    assert.deepEqual(b.bytes, bytes);
  });

  it('gives each slice exactly its byte range', T, async () => {
    const bytes = data(10_007);
    const ranges: Array<[number, number]> = [
      [0, 1], // the first byte
      [1, 8], // spans the chunk boundary at 1 and 8
      [5, 5_000], // overlaps the previous one and spans several chunks
      [340, 341], // one byte inside a chunk
      [341, 4_437], // exactly one chunk (sizes 1, 7, 333, 4096 → 341..4437)
      [4_436, 4_438], // spans a boundary by one byte each side
      [9_000, 10_007], // up to the end
      [0, 10_007], // everything
    ];
    const slices: Slice[] = ranges.map(([start, end]) => ({ start, end, sink: new Sink() }));
    const whole = new Sink();
    const n = await fanOut(source(bytes, [1, 7, 333, 4096, 13]), [whole], slices, bytes.length, 'tar');
    assert.equal(n, bytes.length);
    for (const s of slices) {
      const sink = s.sink as Sink;
      await assertFinished(sink);
      assert.deepEqual(sink.bytes, bytes.subarray(s.start, s.end), `slice ${s.start}..${s.end}`);
    }
    await assertFinished(whole);
    assert.deepEqual(whole.bytes, bytes);
  });

  it('handles slices given out of order', T, async () => {
    const bytes = data(3_000);
    const late = { start: 2_000, end: 2_999, sink: new Sink() };
    const early = { start: 10, end: 1_500, sink: new Sink() };
    const middle = { start: 1_499, end: 2_001, sink: new Sink() };
    await fanOut(source(bytes, [17, 1024, 3]), [], [late, early, middle], bytes.length, 'unordered');
    for (const s of [late, early, middle]) {
      await assertFinished(s.sink);
      assert.deepEqual(s.sink.bytes, bytes.subarray(s.start, s.end));
    }
  });

  it('ends zero-length slices without writing to them, wherever they lie', T, async () => {
    const bytes = data(1_000);
    const atStart = { start: 0, end: 0, sink: new Sink() };
    const inside = { start: 500, end: 500, sink: new Sink() };
    const atEnd = { start: 1_000, end: 1_000, sink: new Sink() };
    const real = { start: 499, end: 501, sink: new Sink() };
    await fanOut(source(bytes, [333, 1, 666]), [], [atStart, inside, atEnd, real], bytes.length, 'empty slices');
    for (const s of [atStart, inside, atEnd]) {
      await assertFinished(s.sink);
      assert.equal(s.sink.received, 0);
      assert.equal(s.sink.chunks.length, 0);
    }
    await assertFinished(real.sink);
    assert.deepEqual(real.sink.bytes, bytes.subarray(499, 501));
  });

  it('ends a slice as soon as its range is done, before the source ends', T, async () => {
    const bytes = data(5_000);
    const first = new Sink();
    let deliveredWhenEnded = -1;
    let delivered = 0;
    const counting = new Writable({
      write(chunk: Buffer, _e, cb) {
        if (first.writableEnded && deliveredWhenEnded < 0) deliveredWhenEnded = delivered;
        delivered += chunk.length;
        cb();
      },
    });
    await fanOut(source(bytes, [100]), [counting], [{ start: 0, end: 250, sink: first }], bytes.length, 'early end');
    await assertFinished(first);
    assert.equal(delivered, bytes.length);
    // the slice ends with the chunk holding its last byte (200..300), long before the source's end
    assert.equal(deliveredWhenEnded, 300);
    assert.deepEqual(first.bytes, bytes.subarray(0, 250));
  });

  it('keeps backpressure: slow consumers with tiny buffers still get every byte', T, async () => {
    const bytes = data(200_003);
    const whole = new Sink({ highWaterMark: 1, slow: true });
    const s1 = { start: 1, end: 150_001, sink: new Sink({ highWaterMark: 1, slow: true }) };
    const s2 = { start: 100_000, end: 200_003, sink: new Sink({ highWaterMark: 1, slow: true }) };
    const n = await fanOut(source(bytes, [65_536, 1, 4_095]), [whole], [s1, s2], bytes.length, 'slow');
    assert.equal(n, bytes.length);
    await assertFinished(whole, s1.sink, s2.sink);
    assert.deepEqual(whole.bytes, bytes);
    assert.deepEqual(s1.sink.bytes, bytes.subarray(1, 150_001));
    assert.deepEqual(s2.sink.bytes, bytes.subarray(100_000));
  });

  it('reads no faster than a stalled consumer takes the bytes', T, async () => {
    let pulled = 0;
    const total = 1024 * 1024;
    const src = new Readable({
      highWaterMark: 1024,
      read() {
        if (pulled >= total) {
          this.push(null);
          return;
        }
        pulled += 1024;
        this.push(Buffer.alloc(1024, 7));
      },
    });
    const stalled = new Sink({ highWaterMark: 1024, stall: true });
    const p = fanOut(src, [stalled], [], total, 'stalled');
    p.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(pulled < total / 4, `pulled ${pulled} bytes while the consumer took none`);
    stalled.destroy();
    await assert.rejects(p);
  });

  it('passes an empty source through', T, async () => {
    const whole = new Sink();
    const slice = { start: 0, end: 0, sink: new Sink() };
    const n = await fanOut(Readable.from([] as Buffer[]), [whole], [slice], 0, 'empty');
    assert.equal(n, 0);
    await assertFinished(whole, slice.sink);
    assert.equal(whole.received, 0);
  });

  it('works with a byte-mode source', T, async () => {
    const bytes = data(70_001);
    let off = 0;
    const src = new Readable({
      highWaterMark: 1000,
      read() {
        if (off >= bytes.length) {
          this.push(null);
          return;
        }
        const n = Math.min(777, bytes.length - off);
        this.push(bytes.subarray(off, off + n));
        off += n;
      },
    });
    const whole = new Sink();
    const s = { start: 12_345, end: 54_321, sink: new Sink() };
    await fanOut(src, [whole], [s], bytes.length, 'byte mode');
    await assertFinished(whole, s.sink);
    assert.deepEqual(whole.bytes, bytes);
    assert.deepEqual(s.sink.bytes, bytes.subarray(12_345, 54_321));
  });
});

describe('fanOut: failures', () => {
  it('a source shorter than expected is an IntegrityError, and the consumers are failed', T, async () => {
    const bytes = data(1_000);
    const whole = new Sink();
    const open = { start: 900, end: 1_001, sink: new Sink() };
    await assert.rejects(fanOut(source(bytes, [300]), [whole], [open], 1_001, 'blob sha256:abc'), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.match(err.message, /blob sha256:abc/);
      assert.match(err.message, /1000/);
      assert.match(err.message, /1001/);
      return true;
    });
    // a consumer must not mistake the short stream for a complete one
    assert.equal(whole.destroyed, true);
    assert.equal(whole.writableFinished, false);
    await new Promise((r) => setImmediate(r)); // 'error' is emitted on a later tick
    assert.ok(whole.error instanceof IntegrityError);
    assert.equal(open.sink.destroyed, true);
    assert.equal(open.sink.writableFinished, false);
  });

  it('a source longer than expected is an IntegrityError', T, async () => {
    const bytes = data(1_000);
    const whole = new Sink();
    await assert.rejects(fanOut(source(bytes, [333]), [whole], [], 999, 'file.raw'), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.match(err.message, /file\.raw/);
      assert.match(err.message, /1000/);
      assert.match(err.message, /999/);
      return true;
    });
    assert.equal(whole.writableFinished, false);
    assert.equal(whole.destroyed, true);
  });

  it('a whole consumer destroyed mid-way makes fanOut reject instead of hanging', T, async () => {
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) yield Buffer.alloc(1000, 1);
    }
    const src = Readable.from(endless());
    const quitter = new Sink({ destroyAfter: 5_000 });
    const other = new Sink();
    await assert.rejects(fanOut(src, [other, quitter], [], Number.MAX_SAFE_INTEGER, 'endless'));
    assert.equal(src.destroyed, true, 'the source is released');
    assert.equal(other.destroyed, true, 'the other consumers are failed too');
    assert.equal(other.writableFinished, false);
  });

  it('a slice consumer destroyed before its range makes fanOut reject', T, async () => {
    const bytes = data(50_000);
    const gone = new Sink();
    gone.destroy();
    const whole = new Sink();
    await assert.rejects(fanOut(source(bytes, [1000]), [whole], [{ start: 20_000, end: 30_000, sink: gone }], bytes.length, 'member'));
    assert.equal(whole.writableFinished, false);
    assert.equal(whole.destroyed, true);
  });

  it('a slice consumer destroyed inside its range makes fanOut reject', T, async () => {
    const bytes = data(50_000);
    const quitter = new Sink({ destroyAfter: 3_000 });
    const other = { start: 0, end: 50_000, sink: new Sink() };
    await assert.rejects(
      fanOut(source(bytes, [512]), [], [{ start: 10_000, end: 40_000, sink: quitter }, other], bytes.length, 'member'),
    );
    assert.equal(other.sink.writableFinished, false);
  });

  it('a consumer destroyed while fanOut waits for it to drain makes fanOut reject', T, async () => {
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) yield Buffer.alloc(4096, 2);
    }
    const stalled = new Sink({ highWaterMark: 1, stall: true });
    const p = fanOut(Readable.from(endless()), [stalled], [], Number.MAX_SAFE_INTEGER, 'stall');
    const timer = setTimeout(() => stalled.destroy(), 50);
    try {
      await assert.rejects(p, /closed|destroyed|premature/i);
    } finally {
      clearTimeout(timer);
    }
  });

  it('a consumer failing with an error makes fanOut reject', T, async () => {
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) yield Buffer.alloc(4096, 3);
    }
    const boom = new Error('upload refused');
    const failing = new Sink({ destroyAfter: 10_000, destroyError: boom, highWaterMark: 1, slow: true });
    await assert.rejects(fanOut(Readable.from(endless()), [failing], [], Number.MAX_SAFE_INTEGER, 'failing'));
    assert.equal(failing.error, boom);
  });

  it('a failing source makes fanOut reject with its error and fails the consumers', T, async () => {
    const boom = new Error('S3 read reset');
    async function* breaking(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(100, 1);
      yield Buffer.alloc(100, 2);
      throw boom;
    }
    const whole = new Sink();
    const s = { start: 50, end: 400, sink: new Sink() };
    await assert.rejects(fanOut(Readable.from(breaking()), [whole], [s], 400, 'breaking'), (err: unknown) => err === boom);
    assert.equal(whole.destroyed, true);
    assert.equal(whole.writableFinished, false);
    assert.equal(s.sink.destroyed, true);
    assert.equal(s.sink.writableFinished, false);
  });
});
