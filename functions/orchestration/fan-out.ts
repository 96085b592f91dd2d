/**
 * Reads a source stream once and hands its bytes to several consumers: the whole stream to some, byte ranges of
 * it to others (the members of a tar whose offsets are known). Backpressure is kept: the source is read only as
 * fast as the slowest consumer takes the bytes, so memory stays at a few buffers whatever the size.
 */
import type { Readable, Writable } from 'node:stream';
import { IntegrityError } from '../util/errors';

/** A consumer went away before it took all its bytes: a consequence of that consumer's own failure. */
export class ConsumerGoneError extends Error {
  constructor() {
    super('the consumer closed before taking all bytes');
    this.name = 'ConsumerGoneError';
  }
}

export interface Slice {
  /** first byte, inclusive */
  start: number;
  /** end, exclusive */
  end: number;
  sink: Writable;
  /** called once, just before the slice's first byte (or its end, when empty) reaches the sink */
  onStart?: () => void;
}

/** Resolves when `w` can take more; rejects when it fails or goes away first (its reader gave up). */
function drained(w: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      w.off('drain', onDrain);
      w.off('error', onError);
      w.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onError = (err: Error): void => done(err);
    const onClose = (): void => done(new ConsumerGoneError());
    w.on('drain', onDrain);
    w.on('error', onError);
    w.on('close', onClose);
  });
}

async function write(w: Writable, chunk: Buffer): Promise<void> {
  if (w.destroyed) throw w.errored ?? new ConsumerGoneError();
  if (!w.write(chunk)) await drained(w);
}

export async function fanOut(source: Readable, wholes: readonly Writable[], slices: readonly Slice[], expectedSize: number, what: string): Promise<number> {
  const pending = [...slices].sort((a, b) => a.start - b.start);
  const ended = new Set<Slice>();
  const started = new Set<Slice>();
  const start = (s: Slice): void => {
    if (!started.has(s)) {
      started.add(s);
      s.onStart?.();
    }
  };
  const endSlice = (s: Slice): void => {
    if (!ended.has(s)) {
      ended.add(s);
      start(s);
      s.sink.end();
    }
  };
  let pos = 0;
  try {
    for (const s of pending) if (s.end <= s.start) endSlice(s);
    let first = 0;
    for await (const data of source) {
      const chunk = data as Buffer;
      const end = pos + chunk.length;
      for (const w of wholes) await write(w, chunk);
      while (first < pending.length && (pending[first] as Slice).end <= pos) first++;
      for (let j = first; j < pending.length && (pending[j] as Slice).start < end; j++) {
        const s = pending[j] as Slice;
        const a = Math.max(s.start, pos) - pos;
        const b = Math.min(s.end, end) - pos;
        if (b > a) {
          start(s);
          await write(s.sink, chunk.subarray(a, b));
        }
        if (s.end <= end) endSlice(s);
      }
      pos = end;
    }
    if (pos !== expectedSize) throw new IntegrityError(`${what}: read ${pos} bytes, expected ${expectedSize}`);
    for (const w of wholes) w.end();
    for (const s of pending) endSlice(s);
    return pos;
  } catch (err) {
    source.destroy();
    const error = err instanceof Error ? err : new Error(String(err));
    for (const w of wholes) w.destroy(error);
    for (const s of pending) if (!ended.has(s)) s.sink.destroy(error);
    throw err;
  }
}
