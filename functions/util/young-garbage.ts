/**
 * Lambda's Node.js runtime starts node with a young generation of a tenth of the function's memory (two semi-spaces
 * of 102 MB at 2048 MB) and with gc() exposed. A transfer's chunks die young, but their memory is given back only
 * when the young generation is collected, which with that much room comes late, and dead chunks pile up. A minor
 * collection (a scavenge: little is alive in the young generation) after every STEP bytes read keeps them few.
 * npm run bench starts the function with the runtime's arguments; for a 2 GiB image it measured, without, after
 * every 16 MiB and after every 4 MiB: a peak RSS of 141, 138 and 114 MiB, and 17.3, 12.2 and 6.8 CPU-seconds.
 * Where gc() is not exposed (the CLI, the tests), nothing is done and V8 collects as it sees fit.
 */
export const YOUNG_GC_STEP_BYTES = 4 * 1024 * 1024;

type Gc = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;
let sinceLast = 0;

/** Counts `bytes` just read; collects the young generation when a step's bytes were read since the last time. */
export function bytesStreamed(bytes: number): void {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (gc === undefined) return;
  sinceLast += bytes;
  if (sinceLast < YOUNG_GC_STEP_BYTES) return;
  sinceLast = 0;
  gc({ type: 'minor' });
}
