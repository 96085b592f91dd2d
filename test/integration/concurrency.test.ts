/**
 * Builds of both arches and many flavors of one version finish within seconds of each other, so several
 * publishers update the same version index at once, and registries have no compare-and-swap. Every trial
 * publishes 8 builds of a fresh version with 8 concurrent handlers (separate instances, like separate Lambdas)
 * and then checks that the index holds every build exactly once. Manifest requests get a few milliseconds of
 * random latency, as across a network, so the publishers' index reads and writes really interleave.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, expectedIndex, sha256 } from '../helpers/expectations';
import { withLatency } from '../helpers/latency';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const TRIALS = Number(process.env.CONCURRENCY_TRIALS ?? 20);
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

const FLAVORS: Array<{ flavor: string; arch: 'amd64' | 'arm64'; pxe?: boolean }> = [
  { flavor: 'container', arch: 'amd64' },
  { flavor: 'container', arch: 'arm64' },
  { flavor: 'aws-gardener_prod', arch: 'amd64' },
  { flavor: 'aws-gardener_prod', arch: 'arm64' },
  { flavor: 'gcp-gardener_prod', arch: 'amd64' },
  { flavor: 'azure-gardener_prod', arch: 'arm64' },
  { flavor: 'metal_pxe', arch: 'amd64', pxe: true },
  { flavor: 'openstack-gardener_prod', arch: 'amd64' },
];

async function get(url: string, accept?: string): Promise<Buffer> {
  const res = await request(url, { headers: accept ? { accept } : {} });
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200, `${url}: ${body.toString()}`);
  return body;
}

describe(`concurrent publication of one version (${TRIALS} trials of 8 builds)`, () => {
  let registry: TestRegistry;
  let s3: LocalS3;

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
  });

  it('ends every trial with all 8 Garden Linux entries and both container entries, none twice', async () => {
    const repo = `${registry.host}/gardenlinux`;
    let contended = 0;
    for (let trial = 0; trial < TRIALS; trial++) {
      const version = `1900.${trial}`;
      const builds: SampleBuild[] = FLAVORS.map((f) => sampleBuild({ ...f, version, commit: (0x10000000 + trial).toString(16) }));
      await Promise.all(builds.map((b) => uploadBuild(s3.client, BUCKET, b)));

      const results = (await Promise.all(
        builds.map((b) =>
          createHandler({ env: { ...s3.env, REGISTRY: `http://${repo}` }, logSink: () => undefined, runtime: withLatency(40) })(
            s3Event(BUCKET, `meta/singles/${b.base}`),
          ),
        ),
      )) as HandlerResult[];
      const jobs = results.flatMap((r) => r.jobs);
      assert.ok(jobs.every((j) => j.outcome === 'published'), `trial ${trial}: ${JSON.stringify(jobs.filter((j) => j.outcome !== 'published'))}`);
      if (jobs.some((j) => (j.indexes?.[0]?.rounds ?? 0) > 1)) contended++;

      const index = JSON.parse((await get(`${registry.url}/v2/gardenlinux/manifests/${version}`, ACCEPT)).toString()) as {
        manifests: Array<{ digest: string; annotations?: { cname?: string }; platform?: { os: string; architecture: string } }>;
      };
      const cnames = index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
      assert.deepEqual([...cnames].sort(), builds.map((b) => b.base).sort(), `trial ${trial}: Garden Linux entries`);
      const containers = index.manifests.filter((m) => m.annotations === undefined && m.platform?.os === 'linux');
      assert.deepEqual(containers.map((m) => m.platform?.architecture), ['amd64', 'arm64'], `trial ${trial}: container entries`);
      assert.equal(index.manifests.length, 10, `trial ${trial}: nothing else, nothing twice`);

      // And entry by entry as spec §5 orders them.
      const gl = new Map<string, { digest: string; size: number }>();
      for (const j of jobs) {
        const raw = await get(`${registry.url}/v2/gardenlinux/manifests/${j.manifest?.digest}`, ACCEPT);
        gl.set(j.base as string, { digest: sha256(raw), size: raw.length });
      }
      assert.deepEqual(index, expectedIndex(builds, gl), `trial ${trial}: spec order`);
    }
    // How often the writers actually raced (a writer needed more than one round); informational.
    process.stdout.write(`# concurrency: ${TRIALS} trials passed, ${contended} with writers that needed more than one round\n`);
  });
});
