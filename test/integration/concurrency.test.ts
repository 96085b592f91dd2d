/**
 * Builds of both arches and many flavors of one version finish within seconds of each other, so several
 * publishers update the same version index at once, and registries have no compare-and-swap. Every trial
 * publishes 9 builds of a fresh version with 9 concurrent handlers (separate instances, like separate Lambdas)
 * and then checks that the index holds every build exactly once. Two of the builds are amd64 container builds
 * of different commits, the second built later, so two writers race for the amd64 container slot and the
 * `amd64-<version>` tag: both must end up naming the newer build's image. Manifest requests get a few
 * milliseconds of random latency, as across a network, so the publishers' index reads and writes really
 * interleave.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, expectedIndex, newestContainer, sha256 } from '../helpers/expectations';
import { startFaultProxy } from '../helpers/fault-proxy';
import { withLatency } from '../helpers/latency';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const TRIALS = Number(process.env.CONCURRENCY_TRIALS ?? 10);
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const ARCHES = ['amd64', 'arm64'] as const;
/** build_timestamp of every build but the newer amd64 container build, and of that one */
const BUILD_TIME = '2026-02-10T11:12:42.317Z';
const NEWER_BUILD_TIME = '2026-02-10T11:42:42.317Z';

// `newer`: a second build of its flavor-arch, of another commit and built later than the first.
const FLAVORS: Array<{ flavor: string; arch: 'amd64' | 'arm64'; pxe?: boolean; newer?: boolean }> = [
  { flavor: 'container', arch: 'amd64' },
  { flavor: 'container', arch: 'amd64', newer: true },
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

/** A manifest by tag, and its digest: the sha256 of its bytes, which Docker-Content-Digest must repeat. */
async function getTagged(url: string): Promise<{ digest: string; header: string | undefined }> {
  const res = await request(url, { headers: { accept: ACCEPT } });
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200, `${url}: ${body.toString()}`);
  const header = res.headers['docker-content-digest'];
  return { digest: sha256(body), header: Array.isArray(header) ? header[0] : header };
}

describe(`concurrent publication of one version (${TRIALS} trials of ${FLAVORS.length} builds)`, () => {
  let registry: TestRegistry;
  let s3: LocalS3;

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
  });

  it('ends every trial with all 9 Garden Linux entries and both container entries (the newest image per arch, as its tag names), none twice', async () => {
    const repo = `${registry.host}/gardenlinux`;
    let contended = 0;
    let containerRaces = 0;
    for (let trial = 0; trial < TRIALS; trial++) {
      const version = `1900.${trial}`;
      const builds: SampleBuild[] = FLAVORS.map(({ newer, ...f }) =>
        sampleBuild({
          ...f,
          version,
          commit: ((newer ? 0x20000000 : 0x10000000) + trial).toString(16),
          buildTime: newer ? NEWER_BUILD_TIME : BUILD_TIME,
          // The race is for the index: logs and test results would only be more uploads before it.
          lean: true,
        }),
      );
      const time = new Map(FLAVORS.map((f, i) => [(builds[i] as SampleBuild).base, Date.parse(f.newer ? NEWER_BUILD_TIME : BUILD_TIME)]));
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
      if (jobs.some((j) => j.base?.startsWith('container-amd64-') && (j.indexes?.[0]?.rounds ?? 0) > 1)) containerRaces++;

      const index = JSON.parse((await get(`${registry.url}/v2/gardenlinux/manifests/${version}`, ACCEPT)).toString()) as {
        manifests: Array<{ digest: string; annotations?: { cname?: string }; platform?: { os: string; architecture: string } }>;
      };
      const cnames = index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
      assert.deepEqual([...cnames].sort(), builds.map((b) => b.base).sort(), `trial ${trial}: Garden Linux entries`);
      const containers = index.manifests.filter((m) => m.annotations === undefined && m.platform?.os === 'linux');
      assert.deepEqual(containers.map((m) => m.platform?.architecture), ['amd64', 'arm64'], `trial ${trial}: container entries`);
      assert.equal(index.manifests.length, 11, `trial ${trial}: nothing else, nothing twice`);

      // And entry by entry as spec §5 orders them.
      const gl = new Map<string, { digest: string; size: number }>();
      for (const j of jobs) {
        const raw = await get(`${registry.url}/v2/gardenlinux/manifests/${j.manifest?.digest}`, ACCEPT);
        gl.set(j.base as string, { digest: sha256(raw), size: raw.length });
      }
      assert.deepEqual(index, expectedIndex(builds, gl, time), `trial ${trial}: spec order`);

      // The container slot of each arch holds the newest build's image, and `<arch>-<version>` names that image.
      for (const arch of ARCHES) {
        const newest = newestContainer(builds, arch, time);
        assert.ok(newest?.image, `trial ${trial}: a container build of ${arch}`);
        const slot = containers.find((m) => m.platform?.architecture === arch);
        assert.equal(slot?.digest, newest.image.manifestDigest, `trial ${trial}: the ${arch} container entry is the image of ${newest.base}`);
        const tag = await getTagged(`${registry.url}/v2/gardenlinux/manifests/${arch}-${version}`);
        assert.equal(tag.digest, newest.image.manifestDigest, `trial ${trial}: ${arch}-${version} names the image of ${newest.base}`);
        if (tag.header !== undefined) assert.equal(tag.header, tag.digest, `trial ${trial}: ${arch}-${version}: Docker-Content-Digest`);
      }
    }
    // How often the writers actually raced (a writer needed more than one round); informational.
    process.stdout.write(
      `# concurrency: ${TRIALS} trials passed, ${contended} with writers that needed more than one round, ` +
        `${containerRaces} in which an amd64 container writer did\n`,
    );
  });

  it("a tag write of the older build that lands after the newer build finished: the tag ends on the newer image, as the slot", async () => {
    const version = '1901.1';
    const older = sampleBuild({ flavor: 'container', arch: 'amd64', version, commit: '0a1de701', buildTime: BUILD_TIME });
    const newer = sampleBuild({ flavor: 'container', arch: 'amd64', version, commit: '0a1de702', buildTime: NEWER_BUILD_TIME });
    await Promise.all([older, newer].map((b) => uploadBuild(s3.client, BUCKET, b)));
    // Both publishers reach the registry through a proxy that holds the first PUT of the tag (the older build's) until told.
    const proxy = await startFaultProxy();
    proxy.setUpstream(registry.url);
    let held!: () => void;
    let release!: () => void;
    const holding = new Promise<void>((r) => (held = r));
    proxy.rules.push({
      kind: 'manifest-put',
      pathEndsWith: `/manifests/amd64-${version}`,
      fault: { type: 'hold' },
      before: () => {
        held();
        return new Promise<void>((r) => (release = r));
      },
    });
    try {
      const publish = (b: SampleBuild) =>
        createHandler({ env: { ...s3.env, REGISTRY: `http://${proxy.host}/gardenlinux` }, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`)) as Promise<HandlerResult>;
      const first = publish(older);
      await holding;
      // The newer build is published start to finish meanwhile: slot and tag on its image.
      const second = await publish(newer);
      assert.equal(second.jobs[0]?.outcome, 'published', second.jobs[0]?.error);
      assert.equal((await getTagged(`${registry.url}/v2/gardenlinux/manifests/amd64-${version}`)).digest, newer.image?.manifestDigest);
      // Then the held PUT of the older image lands.
      release();
      const done = await first;
      assert.equal(done.jobs[0]?.outcome, 'published', done.jobs[0]?.error);
      assert.equal(done.jobs[0]?.container?.tagged, false, 'the older build does not hold the tag');
      const index = JSON.parse((await get(`${registry.url}/v2/gardenlinux/manifests/${version}`, ACCEPT)).toString()) as { manifests: Array<{ digest: string; annotations?: unknown }> };
      assert.deepEqual(index.manifests.filter((m) => m.annotations === undefined).map((m) => m.digest), [newer.image?.manifestDigest], 'the slot holds the newer image');
      assert.equal((await getTagged(`${registry.url}/v2/gardenlinux/manifests/amd64-${version}`)).digest, newer.image?.manifestDigest, 'and so does the tag');
      assert.ok(proxy.log.some((e) => e.fault === 'hold' && e.status === 201), 'the held PUT of the older image did land');
    } finally {
      await proxy.close();
    }
  });
});
