/**
 * Network latency for tests on loopback: every manifest read and write of a target waits a random few
 * milliseconds first, like a registry across the internet. Without it, concurrent publishers on one machine
 * rarely interleave their index reads and writes, and a race would go unnoticed.
 */
import type { Config } from '../../functions/publish/config';
import { createRuntime, type Runtime } from '../../functions/publish/runtime';
import type { Target, TargetSet } from '../../functions/target/target';
import type { Logger } from '../../functions/util/log';
import { overriding } from './targets';

const pause = (maxMs: number) => new Promise((r) => setTimeout(r, Math.random() * maxMs));

function slow(target: Target, maxMs: number): Target {
  return overriding(target, {
    resolve: async (r) => (await pause(maxMs), target.resolve(r)),
    getManifest: async (r) => (await pause(maxMs), target.getManifest(r)),
    putManifest: async (b, m, r) => (await pause(maxMs), target.putManifest(b, m, r)),
  });
}

function slowSet(set: TargetSet, maxMs: number): TargetSet {
  return {
    main: slow(set.main, maxMs),
    repository: (p) => slow(set.repository(p), maxMs),
    forJob: (signal) => slowSet(set.forJob(signal), maxMs),
  };
}

export function withLatency(maxMs: number): (config: Config, logger: Logger) => Runtime {
  return (config, logger) => {
    const rt = createRuntime(config, logger);
    return { ...rt, targets: slowSet(rt.targets, maxMs) };
  };
}
