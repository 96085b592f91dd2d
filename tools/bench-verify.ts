/**
 * `npm run bench:verify [-- --builds 100] [--latency 10]`: how long `verify` takes for a version with many builds,
 * against a baseline measured in the same run: the same checks one request at a time.
 *
 * The builds are published to a loopback docker-registry behind a proxy; for the measurements the proxy holds
 * every request for --latency milliseconds, as a registry across a network does (on loopback every request is
 * nearly free, and parallelism would show nothing). Each configuration runs twice, taking turns.
 */
import { performance } from 'node:perf_hooks';
import { verifyRelease, type VerifyReport } from '../functions/orchestration/verify-release';
import { loadConfig } from '../functions/publish/config';
import { createHandler } from '../functions/publish/handler';
import { createRuntime } from '../functions/publish/runtime';
import { StateStore } from '../functions/storage/state-store';
import { mapLimit } from '../functions/util/limiter';
import { Logger } from '../functions/util/log';
import { startFaultProxy, type RequestKind } from '../test/helpers/fault-proxy';
import { startRegistry } from '../test/helpers/registry';
import { s3Event, startLocalS3, uploadBuild } from './local-s3';
import { sampleBuild, type SampleBuild } from './sample-builds';

const BUCKET = 'gardenlinux-github-releases';
const VERSION = '1877.3';
const KINDS: RequestKind[] = ['blob-head', 'manifest-get', 'manifest-put', 'upload-post', 'upload-patch', 'upload-put', 'token', 'other'];

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} takes a whole number`);
  return v;
}

const count = option('builds', 100);
const latency = option('latency', 10);

const FLAVORS = ['aws-gardener_prod', 'gcp-gardener_prod', 'azure-gardener_prod', 'openstack-gardener_prod', 'kvm-gardener_prod', 'metal-gardener_prod', 'ali-gardener_prod', 'vmware-gardener_prod'];
const builds: SampleBuild[] = Array.from({ length: count }, (_, i) =>
  i < 2
    ? sampleBuild({ flavor: 'container', arch: i === 0 ? 'amd64' : 'arm64', commit: (0x50000000 + i).toString(16) })
    : sampleBuild({ flavor: FLAVORS[i % FLAVORS.length] as string, arch: i % 2 === 0 ? 'amd64' : 'arm64', commit: (0x50000000 + i).toString(16), imageSize: 4096 }),
);

const [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
const proxy = await startFaultProxy();
proxy.setUpstream(registry.url);
try {
  const env = { ...s3.env, REGISTRY: `http://${proxy.host}/bench`, LOG_LEVEL: 'error' };
  await mapLimit(builds, 8, (b) => uploadBuild(s3.client, BUCKET, b));
  const handler = createHandler({ env, logSink: () => undefined });
  const t0 = performance.now();
  await mapLimit(builds, 8, async (b) => {
    const r = (await handler(s3Event(BUCKET, `meta/singles/${b.base}`))) as { jobs: Array<{ outcome: string; error?: string }> };
    if (r.jobs[0]?.outcome !== 'published') throw new Error(`${b.base}: ${r.jobs[0]?.error ?? r.jobs[0]?.outcome}`);
  });
  process.stdout.write(`published ${count} builds of ${VERSION} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  const config = loadConfig(env);
  const rt = createRuntime(config, new Logger({ level: 'error', sink: () => undefined }));
  const state = new StateStore(rt.storeFor(BUCKET), config.statePrefix);
  proxy.behaviour.delayMs = Object.fromEntries(KINDS.map((k) => [k, latency]));

  const measure = async (concurrency: number): Promise<{ seconds: number; requests: number; report: VerifyReport }> => {
    const before = proxy.log.length;
    const start = performance.now();
    const report = await verifyRelease({ state, targets: [rt.targets.forJob().main], version: VERSION, templates: [], concurrency });
    const seconds = (performance.now() - start) / 1000;
    if (!report.ok) throw new Error(`the version does not verify: ${JSON.stringify(report.problems.slice(0, 3))}`);
    return { seconds, requests: proxy.log.length - before, report };
  };
  const runs: Record<'baseline' | 'verify', number[]> = { baseline: [], verify: [] };
  let last: Awaited<ReturnType<typeof measure>> | undefined;
  for (let round = 0; round < 2; round++) {
    for (const which of round === 0 ? (['baseline', 'verify'] as const) : (['verify', 'baseline'] as const)) {
      last = await measure(which === 'baseline' ? 1 : 16);
      runs[which].push(last.seconds);
    }
  }
  const best = (xs: number[]) => Math.min(...xs);
  const r = last?.report.repositories[0];
  process.stdout.write(
    `verify ${VERSION}: ${r?.entries} entries, ${r?.blobs} blobs, ${r?.tags} tags, ${last?.requests} registry requests, ${latency} ms each\n` +
      `  baseline (1 request at a time): ${best(runs.baseline).toFixed(2)} s  (runs ${runs.baseline.map((s) => s.toFixed(2)).join(', ')})\n` +
      `  verify (16 in flight):          ${best(runs.verify).toFixed(2)} s  (runs ${runs.verify.map((s) => s.toFixed(2)).join(', ')})\n` +
      `  ratio verify / baseline:        ${(best(runs.verify) / best(runs.baseline)).toFixed(3)}\n`,
  );
} finally {
  await Promise.all([proxy.close(), registry.stop(), s3.close()]);
}
