/**
 * 32 concurrent Lambda processes: what concurrency.test.ts does with handlers in one process, here with one OS
 * process per build, as separate Lambda instances are. One real registry and one S3 serve them all; 32 builds of
 * one version (both arches, many flavors, several builds per flavor-arch, and four container builds per arch with
 * increasing build times, so four writers compete for each container slot and each `<arch>-<version>` tag) are
 * uploaded first. Every process loads the bundled handler and reports ready; only when all are ready are they
 * told to go, so all 32 converge on the one index at the same moment. Manifest requests get a few milliseconds
 * of random latency, as across a network.
 *
 * Afterwards every job must have been published, the index must hold exactly what spec §5 says for the 32
 * builds (the container slot of each arch holding the newest build's image), and each container tag must name
 * the image in its arch's slot.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, expectedArtifactManifest, expectedIndex, newestContainer, parse, sha256 } from '../helpers/expectations';
import { bundleLambdaChild, childEnv, startLambdaProcess, tail, withTimeout, type LambdaProcess } from '../helpers/lambda-processes';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const PROCESSES = 32;
const VERSION = '1950.1';
const REPO = 'gardenlinux';
const LATENCY_MS = 40;
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const ARCHES = ['amd64', 'arm64'] as const;

// How many builds of each flavor-arch: 32 in all, four container builds per arch.
const GROUPS: Array<{ flavor: string; arch: 'amd64' | 'arm64'; count: number; pxe?: boolean }> = [
  { flavor: 'container', arch: 'amd64', count: 4 },
  { flavor: 'container', arch: 'arm64', count: 4 },
  { flavor: 'aws-gardener_prod', arch: 'amd64', count: 3 },
  { flavor: 'aws-gardener_prod', arch: 'arm64', count: 3 },
  { flavor: 'gcp-gardener_prod', arch: 'amd64', count: 3 },
  { flavor: 'gcp-gardener_prod', arch: 'arm64', count: 2 },
  { flavor: 'azure-gardener_prod', arch: 'amd64', count: 2 },
  { flavor: 'azure-gardener_prod', arch: 'arm64', count: 3 },
  { flavor: 'metal_pxe', arch: 'amd64', count: 2, pxe: true },
  { flavor: 'metal_pxe', arch: 'arm64', count: 1, pxe: true },
  { flavor: 'openstack-gardener_prod', arch: 'amd64', count: 2 },
  { flavor: 'openstack-gardener_prod', arch: 'arm64', count: 2 },
  { flavor: 'kvm-gardener_prod', arch: 'amd64', count: 1 },
];

interface Planned {
  build: SampleBuild;
  /** milliseconds since the epoch of its build_timestamp: "newest" compares these */
  time: number;
}

/** The builds, round-robin over the groups; the i-th gets commit 0x30000000 + i (hex) and a build time i minutes after the first. */
function plan(): Planned[] {
  const specs: Array<(typeof GROUPS)[number]> = [];
  for (let round = 0; specs.length < PROCESSES; round++) {
    for (const g of GROUPS) if (round < g.count) specs.push(g);
  }
  const start = Date.UTC(2026, 1, 10, 11, 0, 0);
  return specs.map((g, i) => {
    const time = start + i * 60_000;
    const build = sampleBuild({
      flavor: g.flavor,
      arch: g.arch,
      ...(g.pxe ? { pxe: true } : {}),
      version: VERSION,
      commit: (0x30000000 + i).toString(16),
      buildTime: new Date(time).toISOString(),
      // The race is for the index: logs and test results would only be more uploads before it.
      lean: true,
    });
    return { build, time };
  });
}

interface Entry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; 'os.version'?: string };
}

async function get(url: string, accept = ACCEPT): Promise<{ body: Buffer; headerDigest: string | undefined }> {
  const res = await request(url, { headers: { accept } });
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200, `${url}: ${body.toString()}`);
  const header = res.headers['docker-content-digest'];
  return { body, headerDigest: Array.isArray(header) ? header[0] : header };
}

describe(`${PROCESSES} concurrent Lambda processes publishing one version`, () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let workDir: string;
  let bundle: string;
  const processes: LambdaProcess[] = [];

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'gl-lambda-processes-'));
    [registry, s3, bundle] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), bundleLambdaChild(workDir)]);
  });
  after(async () => {
    for (const p of processes) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    await Promise.all([registry?.stop(), s3?.close()]);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it('publishes every build, the index holds each once in spec order, and each tag names its arch slot’s image', async () => {
    const planned = plan();
    assert.equal(planned.length, PROCESSES);
    await Promise.all(planned.map((p) => uploadBuild(s3.client, BUCKET, p.build)));

    // The processes are Lambdas, not part of this test run.
    const env = childEnv({ ...s3.env, REGISTRY: `http://${registry.host}/${REPO}`, LATENCY_MS: String(LATENCY_MS) });

    const spawned = performance.now();
    for (const p of planned) processes.push(startLambdaProcess(bundle, p.build.base, s3Event(BUCKET, `meta/singles/${p.build.base}`), env));
    await withTimeout(Promise.all(processes.map((p) => p.ready)), 60_000, `starting ${PROCESSES} processes`);
    const loadMs = performance.now() - spawned;

    const go = performance.now();
    for (const p of processes) p.proc.stdin?.end('go\n');
    const codes = await withTimeout(Promise.all(processes.map((p) => p.exited)), 90_000, `${PROCESSES} processes publishing`);
    const wallMs = performance.now() - go;

    const bad = processes.filter((p, i) => codes[i] !== 0 || p.result === undefined);
    assert.deepEqual(
      bad.map((p) => p.name),
      [],
      bad.map((p) => `${p.name} (exit ${p.proc.exitCode}): ${JSON.stringify(p.result)}\n${tail(p)}`).join('\n\n'),
    );

    const jobs = processes.map((p, i) => {
      assert.equal(p.result?.length, 1, `${p.name}: one job per invocation`);
      return { build: (planned[i] as Planned).build, job: p.result?.[0] as JobSummary };
    });
    const unpublished = jobs.filter(({ job }) => job.outcome !== 'published' || job.errorKind === 'conflict');
    assert.deepEqual(unpublished.map(({ job }) => job), [], 'every job published, none failed, no conflict');
    for (const { build: b, job } of jobs) assert.equal(job.base, b.base, 'each process published its own build');

    const rounds = jobs.map(({ job }) => job.indexes?.[0]?.rounds ?? 0);
    // Warnings the processes logged (a request tried again, say): the run passed, but they say what it met.
    const warnings = processes.flatMap((p) => p.stderr.join('').split('\n').filter((l) => l.includes('"level":"warn"')));
    const warned = [
      ...new Set(
        warnings.map((l) => {
          let w: { msg?: string; request?: string; status?: number; code?: string; error?: unknown };
          try {
            w = JSON.parse(l) as typeof w;
          } catch {
            return l.slice(0, 200);
          }
          const what = [w.request, w.status, w.code, w.error === undefined ? undefined : JSON.stringify(w.error).slice(0, 160)].filter((x) => x !== undefined);
          return `${w.msg ?? '?'}${what.length > 0 ? `: ${what.join(' ')}` : ''}`;
        }),
      ),
    ];
    const histogram = [...new Set(rounds)].sort((a, b) => a - b).map((r) => `${r}:${rounds.filter((x) => x === r).length}`);
    process.stdout.write(
      `# lambda-processes: ${PROCESSES} processes ready in ${(loadMs / 1000).toFixed(1)} s, published and converged ${(wallMs / 1000).toFixed(1)} s after go; ` +
        `rounds per writer (rounds:writers) ${histogram.join(' ')}, max ${Math.max(...rounds)}; ` +
        `${warnings.length} warnings logged${warned.length > 0 ? ` (${warned.join('; ')})` : ''}\n` +
        `# lambda-processes: rounds by writer (flavor-arch/commit=rounds): ` +
        `${jobs.map(({ build: b }, i) => `${b.flavor}-${b.arch}/${b.commit}=${rounds[i]}`).join(' ')}\n`,
    );

    // Each published artifact manifest is the one spec §3 describes for its build.
    const gl = new Map<string, { digest: string; size: number }>();
    for (const { build: b, job } of jobs) {
      const { body } = await get(`${registry.url}/v2/${REPO}/manifests/${job.manifest?.digest}`);
      assert.deepEqual(parse(body), expectedArtifactManifest(b), b.base);
      gl.set(b.base, { digest: sha256(body), size: body.length });
    }

    const { body: indexBytes } = await get(`${registry.url}/v2/${REPO}/manifests/${VERSION}`);
    const index = parse(indexBytes) as { manifests: Entry[] };
    const cnames = index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
    assert.deepEqual([...cnames].sort(), planned.map((p) => p.build.base).sort(), 'one Garden Linux entry per build');
    assert.equal(index.manifests.length, PROCESSES + ARCHES.length, 'one container entry per arch, nothing else, nothing twice');
    const times = new Map(planned.map((p) => [p.build.base, p.time]));
    assert.deepEqual(index, expectedIndex(planned.map((p) => p.build), gl, times), 'the index entry by entry, in spec order');

    // Each container tag names the image of its arch's newest build, the one in the index's slot.
    for (const arch of ARCHES) {
      const newest = newestContainer(planned.map((p) => p.build), arch, times);
      assert.ok(newest, `a container build of ${arch}`);
      const slot = index.manifests.find((m) => m.annotations === undefined && m.platform?.os === 'linux' && m.platform.architecture === arch);
      assert.equal(slot?.digest, newest.image?.manifestDigest, `the ${arch} container slot holds ${newest.base}`);
      const tag = `${arch}-${VERSION}`;
      const { body, headerDigest } = await get(`${registry.url}/v2/${REPO}/manifests/${tag}`);
      assert.equal(sha256(body), slot?.digest, `${tag} names the image in the ${arch} slot (${newest.base})`);
      if (headerDigest !== undefined) assert.equal(headerDigest, slot?.digest, `${tag}: Docker-Content-Digest`);
    }
  });
});
