/**
 * The time a job has. In Lambda it comes from `context.getRemainingTimeInMillis()`; a margin is kept for
 * reporting. Work is checked against it before it starts (a blob upload whose estimated time does not fit is not
 * begun), and at the margin an abort signal stops transfers still running.
 *
 * The version index is not stopped at the margin: a writer that has put an index must list the records again
 * (converge.ts), and that last list comes out of the margin. Its requests stop only at the final point, a few
 * seconds before the invocation ends, which is kept for reporting (`finalSignal`).
 */
import { setMaxListeners } from 'node:events';
import { PublishError } from './errors';

export class TimeoutError extends PublishError {
  constructor(message: string) {
    // Retryable: the next attempt finds what this one finished and goes on from there.
    super('timeout', message, { retryable: true });
    this.name = 'TimeoutError';
  }
}

/** Kept for reporting at the very end, out of the margin: the final point comes this long before the end. */
const FINAL_MS = 3_000;

export class Deadline {
  private readonly controller = new AbortController();
  private readonly finalController = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  /**
   * @param remainingMs time left, measured now (Lambda's getRemainingTimeInMillis); undefined: no limit
   * @param marginMs kept back for reporting after the work stops
   */
  constructor(
    private readonly remainingMs: (() => number) | undefined,
    private readonly marginMs: number,
  ) {
    // Every request and read of the job listens to the signal; dozens at once are expected, not a leak.
    setMaxListeners(1000, this.controller.signal);
    setMaxListeners(1000, this.finalController.signal);
    if (remainingMs !== undefined) {
      // Polled rather than timed once: the clock is whatever remainingMs says (Lambda's, or a test's).
      const check = (): void => {
        if (this.left() <= 0 && !this.signal.aborted) {
          this.controller.abort(new TimeoutError(`stopped: the invocation's time ran out (margin ${Math.round(marginMs / 1000)} s)`));
        }
        if (this.finalLeft() <= 0) {
          this.finalController.abort(new TimeoutError('stopped: the invocation is about to end'));
          this.dispose();
        }
      };
      check();
      if (!this.finalSignal.aborted) this.timer = setInterval(check, 200).unref();
    }
  }

  static none(): Deadline {
    return new Deadline(undefined, 0);
  }

  /** Aborted when the time is up: in-flight transfers stop (a half-sent blob is never committed). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Aborted at the final point: even the version index's last requests stop, so the job can still report. */
  get finalSignal(): AbortSignal {
    return this.finalController.signal;
  }

  /** Milliseconds of work still allowed (Infinity without a limit). */
  left(): number {
    return this.remainingMs === undefined ? Infinity : this.remainingMs() - this.marginMs;
  }

  /** Milliseconds until the final point (Infinity without a limit). */
  finalLeft(): number {
    return this.remainingMs === undefined ? Infinity : this.remainingMs() - Math.min(this.marginMs, FINAL_MS);
  }

  /** Throws a TimeoutError unless `neededMs` more work fits: called before starting something. */
  ensure(what: string, neededMs: number): void {
    if (this.signal.aborted) throw this.signal.reason as Error;
    const left = this.left();
    if (left < neededMs) {
      throw new TimeoutError(`stopped before ${what}: it needs about ${Math.ceil(neededMs / 1000)} s and ${Math.max(0, Math.floor(left / 1000))} s are left`);
    }
  }

  dispose(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
