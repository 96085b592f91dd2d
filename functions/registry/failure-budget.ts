/**
 * How many registry failures a job rides out before it gives up.
 *
 * Failures are counted per operation (one request and its retries; one blob upload and its restarts), so a
 * burst of 503s spread over several uploads running at once (GHCR's 502 bursts look like this) does not add up
 * to one job-wide streak: each operation gets MAX_CONSECUTIVE_FAILURES of its own. A registry that is really
 * down still ends the job fast: an operation that keeps failing gives up on its own, and once every request of
 * the job has failed for FAILING_SPAN_MS with nothing succeeding in between, every further failure is final
 * (throttling, 429, does not count there: the registry is up and says when to come back).
 */
import { TimeoutError } from '../util/deadline';
import type { RegistryError } from './errors';

/** One operation's failures in a row: a request and its retries, or an upload and its restarts. */
export class Operation {
  consecutive = 0;
}

/** With no request of the job succeeding for this long (and failures enough), the registry counts as down. */
export const FAILING_SPAN_MS = 10_000;

/** Per job: its abort signal, its time, and its failures. */
export class JobScope {
  /** failures of the whole job since its last success, and when the first of them came */
  private streak = 0;
  private streakSince: number | undefined;

  constructor(
    readonly signal?: AbortSignal,
    readonly maxConsecutiveFailures = 8,
    /** milliseconds the job's requests may still take (a wait longer than this is not begun); undefined: no limit */
    private readonly timeLeft?: () => number,
    private readonly now: () => number = Date.now,
  ) {}

  succeeded(op: Operation): void {
    op.consecutive = 0;
    this.streak = 0;
    this.streakSince = undefined;
  }

  /** Counts a failure worth retrying; when it is one too many, returns it as final instead. */
  failed(err: RegistryError, op: Operation): RegistryError {
    op.consecutive++;
    // A registry that throttles (429) is up and says when to come back: that is not a streak of failures.
    if (err.status !== 429) {
      this.streak++;
      this.streakSince ??= this.now();
    }
    if (op.consecutive >= this.maxConsecutiveFailures) {
      return err.withRetryable(false, `${err.message} (the registry failed ${op.consecutive} times in a row; giving up)`);
    }
    if (this.down) {
      const seconds = Math.round((this.now() - (this.streakSince ?? this.now())) / 1000);
      return err.withRetryable(false, `${err.message} (the registry failed ${this.streak} times in a row over ${seconds} s, nothing succeeding; giving up)`);
    }
    return err;
  }

  /** Every request of the job failed for a while: further failures are final. */
  private get down(): boolean {
    return this.streak >= this.maxConsecutiveFailures && this.streakSince !== undefined && this.now() - this.streakSince >= FAILING_SPAN_MS;
  }

  /** True when `op` must not be tried again. */
  exhausted(op: Operation): boolean {
    return op.consecutive >= this.maxConsecutiveFailures || this.down;
  }

  /** Throws when waiting `ms` before the next attempt would run past the job's time: then waiting cannot help. */
  checkWait(ms: number, failure: RegistryError): void {
    const left = this.timeLeft?.();
    if (left !== undefined && ms > left) {
      throw new TimeoutError(
        `${failure.message} (the next attempt would wait ${Math.ceil(ms / 1000)} s, and ${Math.max(0, Math.floor(left / 1000))} s are left)`,
      );
    }
  }

  throwIfAborted(): void {
    if (this.signal?.aborted) throw this.signal.reason instanceof Error ? this.signal.reason : new Error('aborted');
  }
}
