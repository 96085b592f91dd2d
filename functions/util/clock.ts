/** Time as the code that waits sees it: the real clock, or a simulated one in tests that must be deterministic. */
import { setTimeout as sleepTimer } from 'node:timers/promises';

export interface Clock {
  now(): number;
  /** waits `ms`; rejects when `signal` aborts first */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: async (ms, signal) => {
    if (ms > 0) await sleepTimer(ms, undefined, signal ? { signal } : undefined);
  },
};
