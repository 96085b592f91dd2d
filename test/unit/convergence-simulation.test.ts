/**
 * Bursts of writers of one version index, simulated (test/helpers/simulation.ts): the real convergence code
 * against an in-memory bucket and registry whose requests take seeded random latencies on a simulated clock.
 * The goal of issue 9: 128 writers arriving within 10 s end with no `conflict` failure and nothing lost, and the
 * container tags end on the newest build of each platform, as the index's container slots do. The same seed
 * always replays the same race, so a failure here can be rerun exactly.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildArtifactManifest } from '../../functions/gardenlinux/artifact-manifest';
import { artifactManifestTag, containerTag, flavorArch, parseBaseName, type BaseName } from '../../functions/gardenlinux/naming';
import type { IndexRecord } from '../../functions/gardenlinux/version-index';
import { sha256Digest } from '../../functions/oci/digest';
import type { Descriptor } from '../../functions/oci/descriptor';
import { OCI_MANIFEST } from '../../functions/oci/media-types';
import { convergeVersion, type IndexUpdate } from '../../functions/orchestration/converge';
import { retractBuild } from '../../functions/orchestration/retract';
import { StateStore } from '../../functions/storage/state-store';
import type { Target } from '../../functions/target/target';
import { Deadline } from '../../functions/util/deadline';
import { Logger } from '../../functions/util/log';
import { latency, MemoryRegistry, MemoryStore, seeded, VirtualClock } from '../helpers/simulation';

const VERSION = '1877.3';
const silent = new Logger({ sink: () => undefined });

interface SimBuild {
  name: BaseName;
  buildTime: string;
  manifest: { bytes: Buffer; entry: Descriptor };
  image?: { bytes: Buffer; entry: Descriptor };
}

/** `n` builds of one version: 8 container builds (4 commits per arch, each newer than the last), the rest disk images. */
function builds(n: number): SimBuild[] {
  const out: SimBuild[] = [];
  for (let i = 0; i < n; i++) {
    const container = i < 8;
    const arch = i % 2 === 0 ? 'amd64' : 'arm64';
    const flavor = container ? 'container' : `flavor${Math.floor(i / 2)}-gardener_prod`;
    const commit = (0x10000000 + i).toString(16);
    const name = parseBaseName(`${flavor}-${arch}-${VERSION}-${commit}`);
    const layer = { title: `${name.base}.raw`, mediaType: 'application/io.gardenlinux.image.archive.format.raw', digest: sha256Digest(name.base), size: 1000 + i };
    const m = buildArtifactManifest(name, 'base,server', [layer]);
    const b: SimBuild = { name, buildTime: new Date(Date.UTC(2026, 1, 10, 11, 0, i)).toISOString(), manifest: { bytes: m.bytes, entry: m.indexEntry } };
    if (container) {
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: sha256Digest(`config ${i}`) }, layers: [] }));
      b.image = { bytes, entry: { mediaType: OCI_MANIFEST, digest: sha256Digest(bytes), size: bytes.length, platform: { architecture: arch, os: 'linux' } } };
    }
    out.push(b);
  }
  return out;
}

interface Outcome {
  index: { manifests: Descriptor[] };
  tags: Map<string, string>;
  results: Array<PromiseSettledResult<{ update: IndexUpdate; finishedAt: number }>>;
  arrivals: number[];
  registry: MemoryRegistry;
  store: MemoryStore;
}

/** `count` writers arriving within `windowMs`; each pushes its manifests, writes its record and converges. */
async function simulate(seed: number, count: number, windowMs: number, slow = 1): Promise<Outcome> {
  const clock = new VirtualClock();
  const random = seeded(seed);
  const store = new MemoryStore(clock, latency(random, 15, 80 * slow));
  const state = new StateStore(store, 'oci-publisher/');
  const registry = new MemoryRegistry(clock);
  const all = builds(count);
  const arrivals = all.map(() => Math.round(windowMs * random()));
  const writer = async (b: SimBuild, arrival: number): Promise<{ update: IndexUpdate; finishedAt: number }> => {
    await clock.sleep(arrival);
    const target: Target = registry.connect({ head: latency(random, 20, 80 * slow), get: latency(random, 30, 150 * slow), put: () => 60 + 240 * slow * random() });
    await target.putManifest(b.manifest.bytes, OCI_MANIFEST, artifactManifestTag(b.name));
    if (b.image) await target.putManifest(b.image.bytes, OCI_MANIFEST, b.image.entry.digest);
    const record: IndexRecord = { base: b.name.base, flavorArch: flavorArch(b.name), buildTime: b.buildTime, gardenlinux: b.manifest.entry, ...(b.image ? { container: b.image.entry } : {}) };
    await state.putRecord(target.id, VERSION, record);
    const { update } = await convergeVersion({ state, target, version: VERSION, logger: silent, deadline: Deadline.none(), clock, random, own: { base: b.name.base, ...(b.image ? { platform: { architecture: b.name.arch, os: 'linux' } } : {}) } });
    return { update, finishedAt: clock.now() };
  };
  const results = await clock.run(Promise.allSettled(all.map((b, i) => writer(b, arrivals[i] as number))));
  const digest = registry.tags.get(VERSION);
  assert.ok(digest, 'an index was written');
  const index = JSON.parse((registry.manifests.get(digest)?.bytes as Buffer).toString('utf8')) as { manifests: Descriptor[] };
  return { index, tags: registry.tags, results, arrivals, registry, store };
}

/** What the index and the tags must hold when the burst is over: every build once, the newest image per platform. */
function checkFinal(o: Outcome, all: SimBuild[], seed: number): void {
  const failed = o.results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : []));
  assert.deepEqual(failed, [], `seed ${seed}: every writer converged`);
  const cnames = o.index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
  assert.deepEqual([...cnames].sort(), all.map((b) => b.name.base).sort(), `seed ${seed}: every build's entry, once`);
  for (const b of all) {
    assert.ok(o.index.manifests.some((m) => m.digest === b.manifest.entry.digest), `seed ${seed}: ${b.name.base}'s manifest`);
  }
  for (const arch of ['amd64', 'arm64']) {
    const newest = all.filter((b) => b.image && b.name.arch === arch).sort((x, y) => (x.buildTime < y.buildTime ? 1 : -1))[0];
    assert.ok(newest?.image);
    const slot = o.index.manifests.filter((m) => m.annotations === undefined && m.platform?.architecture === arch);
    assert.deepEqual(slot.map((m) => m.digest), [newest.image.entry.digest], `seed ${seed}: the ${arch} container slot holds the newest build`);
    assert.equal(o.tags.get(containerTag(newest.name)), newest.image.entry.digest, `seed ${seed}: ${containerTag(newest.name)} names the newest build's image`);
  }
  assert.equal(o.index.manifests.length, all.length + 2, `seed ${seed}: nothing else, nothing twice`);
}

describe('convergence of one version index under bursts of writers (simulated)', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`128 writers within 10 s (seed ${seed}): no conflict, nothing lost, tags on the newest builds`, async () => {
      const o = await simulate(seed, 128, 10_000);
      checkFinal(o, builds(128), seed);
      const done = o.results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const rounds = done.map((d) => d.update.rounds);
      const settledAt = Math.max(...done.map((d) => d.finishedAt));
      const indexPuts = o.registry.writes.filter((w) => w.reference === VERSION).length;
      process.stdout.write(
        `# seed ${seed}: rounds max ${Math.max(...rounds)}, mean ${(rounds.reduce((a, b) => a + b, 0) / rounds.length).toFixed(1)}; ` +
          `${indexPuts} index puts; the last writer done ${((settledAt - Math.max(...o.arrivals)) / 1000).toFixed(1)} s after the last arrival; ` +
          `registry HEAD ${o.registry.counts.head}, GET ${o.registry.counts.get}, PUT ${o.registry.counts.put}; S3 requests ${o.store.requests}\n`,
      );
    });
  }

  it('30 more races of 32 writers within 1 s, with latencies up to 4 times as long: the same end state', async () => {
    let contended = 0;
    for (let seed = 100; seed < 130; seed++) {
      const o = await simulate(seed, 32, 1_000, 4);
      checkFinal(o, builds(32), seed);
      if (o.results.some((r) => r.status === 'fulfilled' && r.value.update.rounds > 2)) contended++;
    }
    assert.ok(contended > 20, `the writers really raced (${contended} of 30 races had a writer with more than two rounds)`);
  });

  it('a writer whose index put lands after the stop margin began still lists again, and repairs what its stale put removed', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock, () => 10);
    const state = new StateStore(store, 'oci-publisher/');
    const registry = new MemoryRegistry(clock);
    const [a, b] = builds(10).slice(8) as [SimBuild, SimBuild];
    const record = (x: SimBuild): IndexRecord => ({ base: x.name.base, flavorArch: flavorArch(x.name), buildTime: x.buildTime, gardenlinux: x.manifest.entry });
    // A's index PUT takes 2 s; B's requests are quick.
    const slowA = registry.connect({ head: () => 10, get: () => 10, put: (ref) => (ref === VERSION ? 2_000 : 10) });
    const quickB = registry.connect({ head: () => 10, get: () => 10, put: () => 10 });
    for (const [x, t] of [[a, slowA], [b, quickB]] as const) await clock.run(t.putManifest(x.manifest.bytes, OCI_MANIFEST, artifactManifestTag(x.name)));
    // 41 s left with a 30 s margin when A starts: room for one round (10 s), and after its put less than that.
    const start = clock.now();
    const deadline = new Deadline(() => 41_000 - (clock.now() - start), 30_000);
    const timeline: string[] = [];
    const writerA = (async () => {
      await state.putRecord(slowA.id, VERSION, record(a));
      const r = await convergeVersion({ state, target: slowA, version: VERSION, logger: silent, deadline, clock, own: { base: a.name.base } });
      timeline.push(`A done at ${clock.now() - start} ms, ${deadline.left()} ms left before the margin`);
      return r;
    })();
    const writerB = (async () => {
      await clock.sleep(100);
      await state.putRecord(quickB.id, VERSION, record(b));
      const r = await convergeVersion({ state, target: quickB, version: VERSION, logger: silent, deadline: Deadline.none(), clock, own: { base: b.name.base } });
      timeline.push(`B done at ${clock.now() - start} ms`);
      return r;
    })();
    try {
      const [ra, rb] = await clock.run(Promise.all([writerA, writerB]));
      // B finished (its job would say "published") before A's stale put of {A} landed at about 2 s.
      assert.match(timeline[0] ?? '', /^B done/, timeline.join('; '));
      const stale = registry.writes.find((w) => w.reference === VERSION && w.at >= 2_000);
      assert.ok(stale, 'A put an index rendered from its old listing');
      assert.ok(registry.writes.some((w) => w.reference === VERSION && w.at < stale.at), 'B had written its index before');
      assert.ok(ra.update.rounds >= 2 && rb.update.rounds >= 1, timeline.join('; '));
      assert.ok(deadline.left() < 10_000, 'A ran its last round out of the margin');
      const index = JSON.parse((registry.manifests.get(registry.tags.get(VERSION) as string)?.bytes as Buffer).toString()) as { manifests: Descriptor[] };
      assert.deepEqual(index.manifests.map((m) => m.annotations?.cname).sort(), [a.name.base, b.name.base].sort(), 'B is back in the index');
    } finally {
      deadline.dispose();
    }
  });

  it('a build retracted while its tag write is under way: the writer puts the tag back on the build that holds the slot', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock, () => 10);
    const state = new StateStore(store, 'oci-publisher/');
    const registry = new MemoryRegistry(clock);
    const [y, , z] = builds(8) as [SimBuild, SimBuild, SimBuild]; // two amd64 container builds, z newer than y
    const quick = registry.connect({ head: () => 10, get: () => 10, put: () => 10 });
    // Z's tag PUT takes 2 s; everything else is quick.
    const slowTag = registry.connect({ head: () => 10, get: () => 10, put: (ref) => (ref === containerTag(z.name) ? 2_000 : 10) });
    const record = (x: SimBuild): IndexRecord => ({ base: x.name.base, flavorArch: flavorArch(x.name), buildTime: x.buildTime, gardenlinux: x.manifest.entry, container: x.image?.entry as Descriptor });
    const own = (x: SimBuild) => ({ base: x.name.base, platform: { architecture: x.name.arch, os: 'linux' } });
    const publish = async (x: SimBuild, target: Target) => {
      await target.putManifest(x.manifest.bytes, OCI_MANIFEST, artifactManifestTag(x.name));
      await target.putManifest(x.image?.bytes as Buffer, OCI_MANIFEST, x.image?.entry.digest as string);
      await state.putRecord(target.id, VERSION, record(x));
      return convergeVersion({ state, target, version: VERSION, logger: silent, deadline: Deadline.none(), clock, own: own(x) });
    };
    await clock.run(publish(y, quick));
    assert.equal(registry.tags.get(containerTag(y.name)), y.image?.entry.digest);
    const zDone = publish(z, slowTag);
    const retracted = (async () => {
      await clock.sleep(500);
      return retractBuild(state, [quick], z.name.base, silent, Deadline.none(), { clock });
    })();
    const [rz, rr] = await clock.run(Promise.all([zDone, retracted]));
    assert.ok(rz.update.rounds >= 2 && rr.indexes.length === 1);
    const index = JSON.parse((registry.manifests.get(registry.tags.get(VERSION) as string)?.bytes as Buffer).toString()) as { manifests: Descriptor[] };
    assert.deepEqual(index.manifests.filter((m) => m.annotations === undefined).map((m) => m.digest), [y.image?.entry.digest], 'the slot is back on y');
    assert.equal(registry.tags.get(containerTag(y.name)), y.image?.entry.digest, 'and so is the tag, although z wrote it after the retraction');
    assert.ok(registry.writes.some((w) => w.reference === containerTag(z.name) && w.digest === z.image?.entry.digest && w.at > 500), 'z wrote the tag after the retraction');
  });

  it('replays the same race for the same seed', async () => {
    const a = await simulate(7, 48, 8_000);
    const b = await simulate(7, 48, 8_000);
    assert.deepEqual(a.registry.writes, b.registry.writes);
  });
});
