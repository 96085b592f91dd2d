/**
 * Reads one large object as several ranged requests at once and hands the bytes on in order, as one stream.
 * A single S3 GET is capped well below what a Lambda can upload; a few parallel ranges lift that cap. Memory is
 * bounded: at most `readers` parts in flight and one handed on, each `partSize` bytes. A part whose read fails
 * is read again on its own (up to 3 times), not the whole object.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRetryable } from '../registry/errors';
import { SourceError } from '../util/errors';

export interface ParallelRangeOptions {
  partSize: number;
  readers: number;
  signal?: AbortSignal;
}

const PART_ATTEMPTS = 3;

async function readFully(stream: Readable, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for await (const chunk of stream) {
    const c = chunk as Buffer;
    if (at + c.length > length) {
      stream.destroy();
      throw new SourceError(`a range returned more than the ${length} bytes asked for`);
    }
    c.copy(out, at);
    at += c.length;
  }
  // A response that ended early (a connection closed under it) is worth reading again, like any broken read.
  if (at !== length) throw new SourceError(`a range returned ${at} bytes, ${length} were asked for`, { retryable: true });
  return out;
}

/**
 * `open` gets a signal that aborts when the stream is destroyed (a part failed for good, or the reader gave up),
 * so the other parts' requests stop too.
 */
export function parallelRanges(
  open: (start: number, end: number, signal: AbortSignal) => Promise<Readable>,
  size: number,
  options: ParallelRangeOptions,
): Readable {
  const parts = Math.ceil(size / options.partSize);
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const inFlight = new Map<number, Promise<Buffer>>();
  let scheduled = 0;
  let next = 0;
  let stopped = false;

  const fetchPart = async (i: number): Promise<Buffer> => {
    const start = i * options.partSize;
    const length = Math.min(size, start + options.partSize) - start;
    for (let attempt = 1; ; attempt++) {
      try {
        return await readFully(await open(start, start + length - 1, signal), length);
      } catch (err) {
        if (stopped || attempt >= PART_ATTEMPTS || !isRetryable(err)) throw err;
        await sleep(200 * attempt, undefined, { signal });
      }
    }
  };
  const schedule = (): void => {
    while (!stopped && inFlight.size < options.readers && scheduled < parts) {
      const p = fetchPart(scheduled);
      p.catch(() => undefined); // awaited in order below; a part that fails early must not go unhandled
      inFlight.set(scheduled++, p);
    }
  };

  return new Readable({
    // One part waits to be taken; the rest of the memory is the parts in flight.
    highWaterMark: options.partSize,
    read() {
      if (next >= parts) {
        this.push(null);
        return;
      }
      schedule();
      const current = inFlight.get(next) as Promise<Buffer>;
      current.then(
        (buf) => {
          inFlight.delete(next++);
          schedule();
          this.push(buf);
        },
        (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
      );
    },
    destroy(err, callback) {
      stopped = true;
      stop.abort(err ?? new Error('the ranged read was stopped'));
      inFlight.clear();
      callback(err);
    },
  });
}
