/**
 * A counting semaphore: at most `limit` tasks run at once, the rest wait in order. Once closed, no waiting or
 * later task starts: each fails with the reason given (the work they belong to has failed already).
 */
export class Limiter {
  private active = 0;
  private readonly waiting: Array<{ resolve: () => void; reject: (reason: unknown) => void }> = [];
  private closed: { reason: unknown } | undefined;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  }

  close(reason: unknown): void {
    if (this.closed) return;
    this.closed = { reason };
    for (const w of this.waiting.splice(0)) w.reject(reason);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.closed) throw this.closed.reason;
    if (this.active >= this.limit) await new Promise<void>((resolve, reject) => this.waiting.push({ resolve, reject }));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.resolve();
    }
  }
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. Unlike Promise.all over a mapped array it starts no new
 * item after the first failure, and it waits for the ones in flight before rejecting, so nothing runs on after
 * the caller has moved on.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}
