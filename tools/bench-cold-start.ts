/**
 * The Lambda's cold start, part of `npm run bench` (alone: `npm run bench -- --cold-start`): fresh processes that
 * import the function's bundle (dist/publish/, copied alone into an empty folder as Lambda unpacks it) with the
 * NODE_OPTIONS serverless.yml gives it, and handle one event:
 * - a skipped document (a group document under meta/singles/: one S3 read, nothing for the registry);
 * - an unchanged re-run of a published build (S3 reads, the registry's answers, no upload);
 * against bare `node` running the same child script without a bundle. Each is the median of ten processes, run in
 * turns; the figures are the wall time from spawn to exit and the peak RSS (VmHWM).
 *
 * To see where a cold start's time goes: BENCH_COLD_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' writes a CPU
 * profile per process (the bundle's source maps name the files).
 */
import { spawn } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { startRegistry } from '../test/helpers/registry';
import { s3Event, startLocalS3, uploadBuild } from './local-s3';
import { functionNodeOptions, lambdaNodeArgs } from './lambda-runtime';
import { sampleBuild } from './sample-builds';

const BUCKET = 'gardenlinux-github-releases';
const RUNS = 10;

interface Cold {
  wallMs: number;
  maxRssKiB: number;
  outcome: string;
}

function coldProcess(nodeArgs: string[], args: string[], env: Record<string, string | undefined>): Promise<Cold> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const p = spawn(process.execPath, [...nodeArgs, ...(process.env.BENCH_COLD_NODE_ARGS ? process.env.BENCH_COLD_NODE_ARGS.split(' ') : []), 'tools/cold-start-child.mjs', ...args], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (c: Buffer) => (stderr += c));
    p.on('close', (code) => {
      const wallMs = performance.now() - started;
      const line = stderr.split('\n').find((l) => l.startsWith('COLD '));
      if (code !== 0 || !line) return reject(new Error(`cold start exited with ${code}:\n${stderr.slice(-3000)}`));
      resolve({ wallMs, ...(JSON.parse(line.slice(5)) as { maxRssKiB: number; outcome: string }) });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

export interface ColdStartResult {
  rows: Array<{ name: string; wallMs: number; maxRssKiB: number; overBareMs: number }>;
  packageBytes: { code: number; map: number };
}

/** Measures the bundle in `bundleDir` (dist/publish: npm run build first). */
export async function measureColdStart(bundleDir = 'dist/publish'): Promise<ColdStartResult> {
  const nodeOptions = await functionNodeOptions();
  const nodeArgs = await lambdaNodeArgs();
  const task = await mkdtemp(join(tmpdir(), 'gl-cold-'));
  const s3 = await startLocalS3([BUCKET]);
  const registry = await startRegistry();
  try {
    // What the deployment package holds, as Lambda unpacks it into /var/task.
    await cp(bundleDir, task, { recursive: true });
    const files = (await readdir(task, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    const sizes = await Promise.all(files.map(async (f) => ({ f, size: (await stat(f)).size })));
    const packageBytes = {
      code: sizes.filter((s) => s.f.endsWith('.mjs')).reduce((n, s) => n + s.size, 0),
      map: sizes.filter((s) => s.f.endsWith('.map')).reduce((n, s) => n + s.size, 0),
    };
    const bundle = join(task, 'index.mjs');
    const env = {
      PATH: process.env.PATH,
      ...s3.env,
      REGISTRY: `http://${registry.host}/gardenlinux`,
      ALLOWED_BUCKETS: BUCKET,
      NODE_OPTIONS: nodeOptions,
    };

    const group = 'meta/singles/gardener-1877.3-c0ffee01';
    await s3.client.send(
      new PutObjectCommand({ Bucket: BUCKET, Key: group, Body: 'version: 1877.3\nbuild_committish: c0ffee01\nglci_version: 1\nmanifests: [a, b]\n' }),
    );
    const build = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', commit: 'c0ffee02' });
    await uploadBuild(s3.client, BUCKET, build);
    const buildEvent = JSON.stringify(s3Event(BUCKET, `meta/singles/${build.base}`));
    const first = await coldProcess(nodeArgs, [bundle, buildEvent], env);
    if (first.outcome !== 'published') throw new Error(`the first publication ended ${first.outcome}`);

    const cases = [
      { name: 'bare node', args: [] as string[], outcome: 'none' },
      { name: 'import + one skipped document', args: [bundle, JSON.stringify(s3Event(BUCKET, group))], outcome: 'skipped' },
      { name: 'import + an unchanged re-run', args: [bundle, buildEvent], outcome: 'unchanged' },
    ];
    const samples = cases.map(() => [] as Cold[]);
    // In turns, so that whatever else the machine does falls on every case alike.
    for (let i = 0; i < RUNS; i++) {
      for (const [k, c] of cases.entries()) {
        // Bare node is started like the function, by the same runtime command line.
        const r = await coldProcess(nodeArgs, c.args, c.args.length ? env : { PATH: process.env.PATH, NODE_OPTIONS: nodeOptions });
        if (r.outcome !== c.outcome) throw new Error(`${c.name}: the job ended ${r.outcome}, not ${c.outcome}`);
        samples[k]?.push(r);
      }
    }
    const bare = median((samples[0] ?? []).map((s) => s.wallMs));
    return {
      packageBytes,
      rows: cases.map((c, k) => {
        const wallMs = median((samples[k] ?? []).map((s) => s.wallMs));
        return { name: c.name, wallMs, maxRssKiB: median((samples[k] ?? []).map((s) => s.maxRssKiB)), overBareMs: wallMs - bare };
      }),
    };
  } finally {
    await registry.stop();
    await s3.close();
    await rm(task, { recursive: true, force: true });
  }
}

/** The section of docs/benchmarks.md, and what the README quotes. */
export function coldStartTable(r: ColdStartResult): string {
  const lines = r.rows.map(
    (x) => `| ${x.name} | ${(x.wallMs / 1000).toFixed(3)} s | ${x.name === 'bare node' ? '—' : `+${(x.overBareMs / 1000).toFixed(3)} s`} | ${(x.maxRssKiB / 1024).toFixed(0)} MiB |`,
  );
  return [
    '| fresh process | wall time (median of 10) | over bare node | peak RSS (median) |',
    '|---|---|---|---|',
    ...lines,
    '',
    `Deployment package, unzipped: ${(r.packageBytes.code / 1024).toFixed(0)} KiB of code, ${(r.packageBytes.map / 1024).toFixed(0)} KiB of source map.`,
  ].join('\n');
}
