/**
 * One read of a source fanned out into several uploads that commit together or not at all.
 *
 * A pass reads a file once and hands its bytes to several consumers (fan-out.ts): the whole stream to some (the
 * file's own upload, a tar parser), byte ranges to others (the blobs inside an archive). Its uploads run as
 * parts of the pass:
 * - an upload whose digest is unknown is handed a commit gate and commits only once the pass is intact: the read
 *   ended at the expected size, every gate passed (a parser reached the end of its archive), and every upload of
 *   known digest has its bytes;
 * - an upload whose digest is known verifies its bytes itself and commits as soon as it has them.
 * On the first failure of any part, every part is stopped (sinks destroyed, gates aborted, the read ended). The
 * pass then waits until every part has settled and fails with the root cause: the first failure that is not a
 * consequence of the stop. So a registry's 503 or a reset connection of one upload is what the pass reports, and
 * is retryable as such, rather than the "consumer closed" the read sees after it.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { someCause } from '../util/errors';
import { ConsumerGoneError, fanOut, type Slice } from './fan-out';

/** What every part of a stopped pass is stopped with; never the root cause while a real failure is known. */
export class PassStopped extends Error {
  constructor(what: string, cause: unknown) {
    super(`${what}: stopped because another part of the read failed`, { cause });
    this.name = 'PassStopped';
  }
}

function isConsequence(err: unknown): boolean {
  return someCause(err, (e) => e instanceof PassStopped || e instanceof ConsumerGoneError);
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export class SinglePass {
  private readonly failures: unknown[] = [];
  private readonly parts: Array<Promise<unknown>> = [];
  /** uploads of known digest: the pass is intact only once they have their bytes */
  private readonly selfVerifying: Array<Promise<unknown>> = [];
  private readonly gates: Array<Promise<unknown>> = [];
  private readonly sinks: Writable[] = [];
  private readonly onStop: Array<(error: Error) => void> = [];
  private stopError: PassStopped | undefined;
  private readonly intact: Promise<void>;
  private markIntact!: () => void;
  private markBroken!: (err: Error) => void;

  constructor(readonly what: string) {
    this.intact = new Promise<void>((resolve, reject) => {
      this.markIntact = resolve;
      this.markBroken = reject;
    });
    this.intact.catch(() => undefined);
  }

  /** Set once the pass was stopped. */
  get stopped(): PassStopped | undefined {
    return this.stopError;
  }

  /**
   * A stream from the read to one consumer. Its failures reach the pass through the consumer and the fan-out,
   * so its 'error' event needs no other listener (an unheard one would crash the process).
   */
  sink(): PassThrough {
    const sink = new PassThrough({ highWaterMark: 1 << 20 });
    sink.on('error', () => undefined);
    if (this.stopError) sink.destroy(this.stopError);
    else this.sinks.push(sink);
    return sink;
  }

  /** Runs `fn` when the pass stops (to abort a parser, say). */
  whenStopped(fn: (error: Error) => void): void {
    if (this.stopError) fn(this.stopError);
    else this.onStop.push(fn);
  }

  /** A condition of the pass being intact; its failure fails the pass. */
  gate(condition: Promise<unknown>): void {
    this.gates.push(this.track(condition));
  }

  /**
   * Runs an upload as a part of the pass. `start` gets a commit gate when the upload's digest is unknown (it must
   * await it before it commits); an upload of known digest gets none.
   */
  upload<T>(knownDigest: boolean, start: (beforeCommit?: () => Promise<void>) => Promise<T>): Promise<T> {
    const p = this.track(start(knownDigest ? undefined : () => this.intact));
    if (knownDigest) this.selfVerifying.push(p);
    return p;
  }

  /** Fails the pass with `err` (a part found something wrong without a promise to carry it). */
  fail(err: unknown): void {
    this.failures.push(err);
    this.stop(err);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const tracked = p.catch((err: unknown) => {
      this.fail(err);
      throw err;
    });
    tracked.catch(() => undefined);
    this.parts.push(tracked);
    return tracked;
  }

  private stop(cause: unknown): void {
    if (this.stopError) return;
    const error = new PassStopped(this.what, cause);
    this.stopError = error;
    this.markBroken(error);
    for (const s of this.sinks) s.destroy(error);
    for (const fn of this.onStop) fn(error);
  }

  /**
   * Reads `source` once into `wholes` and `slices`, then waits for every part (parts may still be added while
   * the read goes on). Throws the root cause when any part failed; nothing of the pass runs on after that.
   */
  async run(source: Readable, size: number, wholes: readonly Writable[], slices: readonly Slice[]): Promise<void> {
    this.whenStopped((error) => source.destroy(error));
    const reading = this.track(fanOut(source, wholes, slices, size, this.what));
    void (async () => {
      await reading;
      await Promise.all(this.gates);
      await Promise.all(this.selfVerifying);
    })().then(
      () => this.markIntact(),
      () => undefined, // the failure stopped the pass already
    );
    for (let settled = 0; settled < this.parts.length; ) {
      const batch = this.parts.slice(settled);
      settled = this.parts.length;
      await Promise.allSettled(batch);
    }
    if (this.failures.length > 0) throw asError(this.rootCause());
  }

  /** The first failure that is not a consequence of stopping the pass; the first failure if all are. */
  private rootCause(): unknown {
    return this.failures.find((f) => !isConsequence(f)) ?? this.failures[0];
  }
}
