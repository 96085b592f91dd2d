/**
 * The rules of the simulated world (test/helpers/sim-world.ts) that the whole-publisher simulation relies on: a
 * seed replays the same history, the registry refuses what distribution refuses, faults and kills do what they
 * say, and the bucket reads ranges and pinned versions as S3 does.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { hashBuffer, sha256Digest } from '../../functions/oci/digest';
import { OCI_INDEX, OCI_MANIFEST } from '../../functions/oci/media-types';
import { RegistryError, isRetryable } from '../../functions/registry/errors';
import type { BlobSource, Target } from '../../functions/target/target';
import { IntegrityError, SourceError } from '../../functions/util/errors';
import { formatHistory, Killed, SimWorld, type Connection } from '../helpers/sim-world';

function source(bytes: Buffer, extra: Partial<BlobSource> = {}): BlobSource {
  return { size: bytes.length, what: 'test blob', open: async () => Readable.from([bytes]), ...extra };
}

function imageManifest(config: string, layers: string[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 2 },
      layers: layers.map((digest) => ({ mediaType: 'application/octet-stream', digest, size: 1 })),
    }),
  );
}

function index(manifests: string[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: manifests.map((digest) => ({ mediaType: OCI_MANIFEST, digest, size: 1 })) }));
}

async function read(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Tries `fn` until it succeeds or fails for good, as a retrying client would; at most `n` times. */
async function retried<T>(world: SimWorld, fn: () => Promise<T>, n = 6): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || attempt >= n) throw err;
      await world.clock.sleep(100 * attempt);
    }
  }
}

/** Three writers on both stores, with every kind of fault and one killed midway. */
async function scenario(seed: number): Promise<{ world: SimWorld; results: PromiseSettledResult<unknown>[] }> {
  const world = new SimWorld(seed, { faults: { error: 0.1, throttle: 0.05, lost: 0.1, slow: 0.05 }, slowMs: 3_000 });
  world.bucket.putObject('builds/a/rootfs.raw', Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 253)));
  const writer = async (conn: Connection, n: number): Promise<void> => {
    const store = world.bucket.connect(conn);
    const { main, repository } = world.registry.targets('gardenlinux', conn);
    await world.clock.sleep(Math.floor(world.random() * 500));
    for (let round = 0; round < 3; round++) {
      const start = n * 10 + round;
      const raw = await retried(world, async () => read(await store.open('builds/a/rootfs.raw', { start, end: start + 999 })));
      const config = await retried(world, () => main.pushBlob(source(Buffer.from('{}'), { digest: sha256Digest('{}') })));
      const layer = await retried(world, () => main.pushBlob(source(raw)));
      const manifest = imageManifest(config.digest, [layer.digest]);
      const digest = await retried(world, () => main.putManifest(manifest, OCI_MANIFEST, `build-${n}-${round}`));
      await retried(world, () => main.resolve('latest'));
      await retried(world, () => main.putManifest(index([digest]), OCI_INDEX, 'latest'));
      await retried(world, () => repository('container').pushBlob(source(Buffer.from(`image ${n} ${round}`))));
      await retried(world, () => store.put(`state/${n}.json`, Buffer.from(JSON.stringify({ n, round, digest }))));
      await retried(world, () => store.list('state/'));
      await retried(world, () => store.delete(`state/${(n + 1) % 3}.json`));
    }
  };
  const conns = [0, 1, 2].map((n) => world.connect(`writer${n}`, { faulty: true }));
  conns[2]?.killAt(2_500);
  const results = await world.run(Promise.allSettled(conns.map((c, n) => writer(c, n))));
  return { world, results };
}

describe('the simulated world', () => {
  it('replays the same history from the same seed', async () => {
    const a = await scenario(42);
    const b = await scenario(42);
    assert.ok(a.world.history.length > 60, `a scenario of some length (${a.world.history.length} requests)`);
    assert.deepEqual(b.world.history, a.world.history);
    assert.deepEqual(
      b.results.map((r) => r.status),
      a.results.map((r) => r.status),
    );
    assert.deepEqual(b.world.registry.tagsOf('gardenlinux'), a.world.registry.tagsOf('gardenlinux'));
    assert.deepEqual([...b.world.bucket.objects.keys()], [...a.world.bucket.objects.keys()]);
    const other = await scenario(43);
    assert.notDeepEqual(other.world.history, a.world.history, 'another seed, another run');
    // Faults did strike, and the history reads as one line per request.
    const outcomes = new Set(a.world.history.map((e) => e.outcome));
    assert.ok(outcomes.has('ok') && outcomes.has('killed'), [...outcomes].join(', '));
    const text = formatHistory(a.world.history, 10);
    assert.equal(text.split('\n').length, 11);
    assert.match(text, /earlier requests/);
  });

  it('refuses a manifest that names a blob or a manifest the repository lacks', async () => {
    const world = new SimWorld(1);
    const conn = world.connect('w');
    const { main, repository } = world.registry.targets('gl', conn);
    const sub = repository('container');
    await world.run(
      (async () => {
        const config = await main.pushBlob(source(Buffer.from('{}')));
        const layer = Buffer.from('layer');
        const manifest = imageManifest(config.digest, [sha256Digest(layer)]);
        await assert.rejects(main.putManifest(manifest, OCI_MANIFEST, 'v1'), (err: unknown) => err instanceof RegistryError && err.code === 'MANIFEST_BLOB_UNKNOWN' && err.status === 400 && !err.retryable);
        assert.equal(world.registry.manifest('gl', 'v1'), undefined);
        // A blob of another repository does not count.
        await sub.pushBlob(source(layer));
        await assert.rejects(main.putManifest(manifest, OCI_MANIFEST, 'v1'), /MANIFEST_BLOB_UNKNOWN/);
        await main.pushBlob(source(layer));
        const digest = await main.putManifest(manifest, OCI_MANIFEST, 'v1');
        assert.equal(digest, sha256Digest(manifest));
        assert.equal(await main.resolve('v1'), digest);
        // An index: every manifest it names must be in the repository.
        await assert.rejects(sub.putManifest(index([digest]), OCI_INDEX, 'latest'), /MANIFEST_BLOB_UNKNOWN/);
        const idx = await main.putManifest(index([digest]), OCI_INDEX, 'latest');
        assert.equal((await main.getManifest('latest'))?.digest, idx);
        // A tag moves to the last write (no compare-and-swap).
        await main.putManifest(manifest, OCI_MANIFEST, 'latest');
        assert.equal(world.registry.tagsOf('gl').get('latest'), digest);
        assert.deepEqual(world.registry.repositories(), ['gl', 'gl/container']);
      })(),
    );
    const refused = world.history.filter((e) => e.outcome === 'refused');
    assert.deepEqual(
      refused.map((e) => [e.kind, e.ref, e.effect]),
      [
        ['manifest-put', 'gl:v1', false],
        ['manifest-put', 'gl:v1', false],
        ['manifest-put', 'gl/container:latest', false],
      ],
    );
  });

  it('checks uploads as distribution does: the digest, the size, beforeCommit before the blob is there', async () => {
    const world = new SimWorld(2);
    const { main } = world.registry.targets('gl', world.connect('w'));
    const bytes = Buffer.from('some layer bytes');
    await world.run(
      (async () => {
        await assert.rejects(main.pushBlob(source(bytes, { digest: sha256Digest('other') })), (err: unknown) => err instanceof RegistryError && err.code === 'DIGEST_INVALID' && !err.retryable);
        assert.equal(world.registry.hasBlob('gl', sha256Digest('other')), false);
        await assert.rejects(main.pushBlob(source(bytes, { size: bytes.length - 1 })), IntegrityError);
        await assert.rejects(main.pushBlob(source(bytes, { md5: '0'.repeat(32) })), IntegrityError);
        let seenBefore: boolean | undefined;
        let counted = 0;
        const result = await main.pushBlob(
          source(bytes, {
            md5: createHash('md5').update(bytes).digest('hex'),
            onBytes: (n) => (counted += n),
            beforeCommit: async () => {
              seenBefore = world.registry.hasBlob('gl', sha256Digest(bytes));
              await world.clock.sleep(10);
            },
          }),
        );
        assert.equal(seenBefore, false);
        assert.equal(counted, bytes.length);
        assert.deepEqual(result, hashBuffer(bytes, true));
        assert.equal(await main.blobSize(result.digest), bytes.length);
        assert.deepEqual(await main.fetchBlob(result.digest, 1000), bytes);
        const opened = await main.openBlob(result.digest);
        assert.deepEqual(opened && (await read(opened.stream)), bytes);
        // Checked upstream: counted here, digest from upstream, and still compared with the content.
        const wrong = { digest: sha256Digest('not these bytes'), size: bytes.length };
        await assert.rejects(main.pushBlob(source(bytes, { checkedUpstream: () => wrong })), /DIGEST_INVALID/);
        const right = hashBuffer(bytes, false);
        assert.deepEqual(await main.pushBlob(source(bytes, { checkedUpstream: () => right })), right);
      })(),
    );
  });

  it('applies a write whose answer is lost, then fails it as retryable', async () => {
    const world = new SimWorld(3, { faults: { lost: 1 } });
    const conn = world.connect('w', { faulty: true });
    const { main } = world.registry.targets('gl', conn);
    const store = world.bucket.connect(conn);
    const config = world.registry.addBlob('gl', Buffer.from('{}'));
    const manifest = imageManifest(config, []);
    await world.run(
      (async () => {
        await assert.rejects(main.putManifest(manifest, OCI_MANIFEST, 'v1'), (err: unknown) => err instanceof RegistryError && err.code === 'NETWORK' && isRetryable(err));
        await assert.rejects(store.put('k', Buffer.from('x')), (err: unknown) => err instanceof SourceError && isRetryable(err));
        // Reads are never "lost": the answer arrives.
        assert.equal(await main.resolve('v1'), sha256Digest(manifest));
      })(),
    );
    assert.equal(world.registry.manifest('gl', 'v1')?.digest, sha256Digest(manifest));
    assert.deepEqual(world.bucket.objects.get('k')?.bytes, Buffer.from('x'));
    assert.deepEqual(
      world.history.map((e) => [e.kind, e.outcome, e.effect]),
      [
        ['manifest-put', 'lost', true],
        ['put', 'lost', true],
        ['manifest-head', 'ok', false],
      ],
    );
  });

  it('rejects every pending and later request of a killed connection, and the clock run ends', async () => {
    const world = new SimWorld(4, { faults: { slow: 1 }, slowMs: 600_000 });
    const conn = world.connect('job', { faulty: true });
    const { main } = world.registry.targets('gl', conn);
    const store = world.bucket.connect(conn);
    world.bucket.putObject('k', Buffer.from('bytes'));
    conn.killAt(1_000);
    const pending = [main.resolve('v1'), main.pushBlob(source(Buffer.from('blob'))), store.get('k'), store.put('other', Buffer.from('x')), store.open('k')];
    const results = await world.run(Promise.allSettled(pending));
    assert.equal(world.clock.now(), 1_000, 'nothing waited for the slow answers once killed');
    for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof Killed, String(r.status === 'rejected' ? r.reason : 'fulfilled'));
    await assert.rejects(world.run(main.getManifest('v1')), Killed);
    const killed = world.history.filter((e) => e.outcome === 'killed');
    assert.equal(killed.length, 6);
    // A write in flight may or may not have happened; the history says which, and the stores agree.
    const put = world.history.find((e) => e.kind === 'put');
    assert.equal(world.bucket.objects.has('other'), put?.effect);
    const blob = world.history.find((e) => e.kind === 'blob-put');
    assert.equal(world.registry.hasBlob('gl', sha256Digest('blob')), blob?.effect);
    for (const e of killed.filter((x) => x.kind === 'manifest-head' || x.kind === 'get' || x.kind === 'open')) assert.equal(e.effect, false);
  });

  it('fails the stream of a connection killed while it is read', async () => {
    const world = new SimWorld(5);
    const conn = world.connect('job');
    world.bucket.putObject('big', Buffer.alloc(300_000, 1));
    const stream = await world.run(world.bucket.connect(conn).open('big'));
    conn.kill();
    await assert.rejects(read(stream), Killed);
  });

  it('never strikes a connection that is not faulty', async () => {
    const world = new SimWorld(6, { faults: { error: 0.4, throttle: 0.3, lost: 0.2, slow: 0.1 } });
    const calm = world.connect('calm');
    const faulty = world.connect('faulty', { faulty: true });
    world.bucket.putObject('k', Buffer.from('v'));
    const work = async (conn: Connection): Promise<void> => {
      const { main }: { main: Target } = world.registry.targets('gl', conn);
      const store = world.bucket.connect(conn);
      for (let i = 0; i < 40; i++) {
        await Promise.allSettled([store.get('k'), store.put(`p/${conn.name}/${i}`, Buffer.from([i])), main.pushBlob(source(Buffer.from([i]))), main.resolve('x')]);
      }
    };
    await world.run(Promise.all([work(calm), work(faulty)]));
    const calmOutcomes = new Set(world.history.filter((e) => e.conn === 'calm').map((e) => e.outcome));
    assert.deepEqual([...calmOutcomes], ['ok']);
    const struck = new Set(world.history.filter((e) => e.conn === 'faulty').map((e) => e.outcome));
    for (const f of ['error', 'throttle', 'lost', 'slow']) assert.ok(struck.has(f as never), `the faulty connection saw ${f}`);
    // The world's own bucket methods are fault-free too.
    world.faults.set({ error: 1 });
    assert.deepEqual((await world.run(world.bucket.get('k')))?.bytes, Buffer.from('v'));
  });

  it('opens byte ranges (inclusive end) and refuses a changed object', async () => {
    const world = new SimWorld(7);
    const store = world.bucket.connect(world.connect('r'));
    const bytes = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 31) % 251));
    world.bucket.putObject('obj', bytes);
    const etag = createHash('md5').update(bytes).digest('hex');
    await world.run(
      (async () => {
        const info = (await store.list(''))[0];
        assert.equal(info?.etag, etag);
        assert.deepEqual(await read(await store.open('obj')), bytes);
        assert.deepEqual(await read(await store.open('obj', { start: 70_000, end: 140_000 })), bytes.subarray(70_000, 140_001));
        assert.deepEqual(await read(await store.open('obj', { start: 199_990, end: 300_000, etag })), bytes.subarray(199_990));
        assert.deepEqual(await read(await store.open('obj', { start: 0, end: 0 })), bytes.subarray(0, 1));
        await assert.rejects(store.open('obj', { etag: 'f'.repeat(32) }), (err: unknown) => err instanceof SourceError && /changed/.test(err.message) && !err.retryable);
        await assert.rejects(store.get('obj', { etag: 'f'.repeat(32) }), /changed/);
        assert.deepEqual((await store.get('obj', { etag }))?.bytes, bytes);
        await assert.rejects(store.get('obj', { maxBytes: 10 }), SourceError);
        await assert.rejects(store.open('missing'), /does not exist/);
        assert.equal(await store.get('missing'), undefined);
        // A new version: the old etag no longer opens it.
        await store.put('obj', Buffer.from('new'));
        await assert.rejects(store.open('obj', { etag }), /changed/);
        // Last modified when the put took effect, on the simulated clock.
        assert.equal((await store.get('obj'))?.info.lastModified?.getTime(), world.history.find((e) => e.kind === 'put')?.at);
      })(),
    );
  });
});
