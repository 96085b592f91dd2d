/**
 * One publication to three real registries (issue 20): one refuses every upload, one is slow. Every file is read
 * from S3 once for all of them (counted at the store, against a publication to one registry); the two good ones
 * get the whole release, signed and verified; the job fails naming the bad one. Once that one takes uploads again,
 * running the job again uploads only there, and reads from S3 only what it lacks.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createHandler } from '../../functions/publish/handler';
import { createRuntime } from '../../functions/publish/runtime';
import type { JobSummary } from '../../functions/publish/run-job';
import type { ObjectStore } from '../../functions/storage/object-store';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const DENIED = JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] });

/** A key of the build (its files, its metadata), not of the publisher's records in the same bucket. */
const isBuild = (key: string): boolean => key.startsWith('objects/') || key.startsWith('meta/');

/** Bytes of builds read from the bucket, counted where they leave the store. */
function counting(store: ObjectStore, count: { bytes: number }): ObjectStore {
  return {
    description: store.description,
    parallelReads: store.parallelReads,
    async get(k, o) {
      const r = await store.get(k, o);
      if (r && isBuild(k)) count.bytes += r.bytes.length;
      return r;
    },
    async open(k, o) {
      const s = await store.open(k, o);
      if (isBuild(k)) s.on('data', (c: Buffer) => (count.bytes += c.length));
      return s;
    },
    list: (p) => store.list(p),
    listFolders: (p) => store.listFolders(p),
    put: (k, body, t) => store.put(k, body, t),
    delete: (k) => store.delete(k),
  } as ObjectStore;
}

describe('one publication, several registries', () => {
  let s3: LocalS3;
  let good: TestRegistry;
  let refusing: TestRegistry;
  let slow: TestRegistry;
  let single: TestRegistry;
  let refusal: FaultProxy;
  let latency: FaultProxy;
  let dir: string;
  let keyFile: string;
  const builds: SampleBuild[] = [
    // Large enough to stream (its digest computed on the way), and a PXE bundle unpacked in the same read.
    sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', commit: 'c0ffee01', pxe: true, imageSize: 5 * 1024 * 1024, lean: true }),
    // A container build whose image goes to a sub-repository.
    sampleBuild({ flavor: 'container', arch: 'arm64', commit: 'c0ffee02', lean: true }),
  ];

  before(async () => {
    [s3, good, refusing, slow, single, refusal, latency] = await Promise.all([
      startLocalS3([BUCKET]),
      startRegistry(),
      startRegistry(),
      startRegistry(),
      startRegistry(),
      startFaultProxy(),
      startFaultProxy(),
    ]);
    refusal.setUpstream(refusing.url);
    latency.setUpstream(slow.url);
    // Refuses every upload, as a registry whose token lacks push does; everything else goes through.
    refusal.rules.push({ kind: 'upload-post', fault: { type: 'status', status: 403, body: DENIED, contentType: 'application/json' }, times: Infinity });
    latency.behaviour.delayMs = { 'upload-put': 150, 'upload-patch': 150, 'manifest-put': 100 };
    dir = await mkdtemp(join(tmpdir(), 'gl-several-'));
    keyFile = join(dir, 'sign.pem');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await Promise.all(builds.map((b) => uploadBuild(s3.client, BUCKET, b)));
  });
  after(async () => {
    await Promise.all([s3?.close(), good?.stop(), refusing?.stop(), slow?.stop(), single?.stop(), refusal?.close(), latency?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const destinations = (): string => [good.url, refusal.url, latency.url].map((u) => `${u}/gl`).join(',');
  const run = async (registry: string, event: object, statePrefix: string, read = { bytes: 0 }, extra: Record<string, string> = {}): Promise<JobSummary> => {
    const handler = createHandler({
      env: {
        ...s3.env,
        REGISTRY: registry,
        STATE_PREFIX: statePrefix,
        SIGNING_KEY: `file:${keyFile}`,
        CONTAINER_REPOSITORIES: JSON.stringify({ container: 'container' }),
        ALIAS_TAGS: 'latest',
        ...extra,
      },
      logSink: () => undefined,
      runtime: (config, logger) => {
        const rt = createRuntime(config, logger);
        return { ...rt, storeFor: (bucket: string) => counting(rt.storeFor(bucket), read) };
      },
    });
    return firstJob(handler(event));
  };
  const publish = (registry: string, b: SampleBuild, statePrefix: string, read?: { bytes: number }) =>
    run(registry, s3Event(BUCKET, `meta/singles/${b.base}`), statePrefix, read);

  const firstRead = new Map<string, number>();

  it('the good registries get the release from one read; the job fails naming the one that refused', async () => {
    for (const b of builds) {
      const alone = { bytes: 0 };
      const one = await publish(`${single.url}/gl`, b, 'oci-publisher/alone/', alone);
      assert.equal(one.outcome, 'published', one.error);
      const read = { bytes: 0 };
      const job = await publish(destinations(), b, 'oci-publisher/several/', read);
      firstRead.set(b.base, read.bytes);
      assert.equal(job.outcome, 'failed');
      assert.match(job.error ?? '', /^1 of 3 destinations failed: 127\.0\.0\.1:\d+\/gl: .*403/);
      assert.equal(job.errorKind, 'registry');
      const byTarget = new Map((job.targets ?? []).map((t) => [t.target, t]));
      assert.equal(byTarget.get(`${good.host}/gl`)?.outcome, 'published');
      assert.equal(byTarget.get(`${latency.host}/gl`)?.outcome, 'published');
      assert.equal(byTarget.get(`${refusal.host}/gl`)?.outcome, 'failed');
      assert.equal(byTarget.get(`${refusal.host}/gl`)?.bytesUploaded, 0);
      // Read once for three registries: what one registry alone needed, not more.
      assert.equal(read.bytes, alone.bytes, `${b.base}: bytes read for three registries against one`);
      assert.equal(job.bytesRead, one.bytesRead, 'the job reports the same bytes read as with one registry');
      const total = b.files.reduce((n, f) => n + f.data.length, 0);
      assert.ok(read.bytes >= total, `${b.base}: every byte of the build was read (${read.bytes} of ${total})`);
      // Each good registry got every byte (the PXE members come on top of the files).
      for (const t of [byTarget.get(`${good.host}/gl`), byTarget.get(`${latency.host}/gl`)]) {
        assert.ok((t?.bytesUploaded ?? 0) >= total, `${t?.target} got ${t?.bytesUploaded} bytes of ${total}`);
      }
    }
    // Both good registries hold a complete, signed release; verify checks them in one job.
    const verify = await run(`${good.url}/gl,${latency.url}/gl`, { action: 'verify', version: '1877.3', bucket: BUCKET }, 'oci-publisher/several/');
    assert.equal(verify.outcome, 'unchanged', verify.error);
    assert.ok(verify.verify?.ok, JSON.stringify(verify.verify?.problems));
    assert.deepEqual(new Set(verify.verify?.repositories.map((r) => r.repository)), new Set([`${good.host}/gl`, `${good.host}/gl/container`, `${latency.host}/gl`, `${latency.host}/gl/container`]));
    assert.equal(verify.targets?.length, 2);
    // The refusing registry has no version index: nothing half-published there.
    const bad = await run(`${refusal.url}/gl`, { action: 'verify', version: '1877.3', bucket: BUCKET }, 'oci-publisher/several/');
    assert.equal(bad.verify?.ok, false);
  });

  it('run again once the bad registry takes uploads: only it gets bytes, and only what it lacks is read', async () => {
    refusal.rules.length = 0;
    for (const b of builds) {
      const read = { bytes: 0 };
      const job = await publish(destinations(), b, 'oci-publisher/several/', read);
      assert.equal(job.outcome, 'published', job.error);
      const byTarget = new Map((job.targets ?? []).map((t) => [t.target, t]));
      assert.equal(byTarget.get(`${good.host}/gl`)?.outcome, 'unchanged');
      assert.equal(byTarget.get(`${good.host}/gl`)?.bytesUploaded, 0);
      assert.equal(byTarget.get(`${latency.host}/gl`)?.outcome, 'unchanged');
      assert.equal(byTarget.get(`${latency.host}/gl`)?.bytesUploaded, 0);
      assert.equal(byTarget.get(`${refusal.host}/gl`)?.outcome, 'published');
      assert.ok((byTarget.get(`${refusal.host}/gl`)?.bytesUploaded ?? 0) > 0);
      assert.ok(read.bytes <= (firstRead.get(b.base) ?? 0), `${b.base}: read ${read.bytes} bytes again, the first run read ${firstRead.get(b.base)}`);
    }
    const verify = await run(destinations(), { action: 'verify', version: '1877.3', bucket: BUCKET }, 'oci-publisher/several/');
    assert.ok(verify.verify?.ok, JSON.stringify(verify.verify?.problems));
    assert.equal(verify.targets?.length, 3);
    // A third run has nothing to do anywhere.
    const read = { bytes: 0 };
    const again = await publish(destinations(), builds[0] as SampleBuild, 'oci-publisher/several/', read);
    assert.equal(again.outcome, 'unchanged', again.error);
    assert.equal(again.bytesUploaded, 0);
    assert.ok(read.bytes < 64 * 1024, `nothing but the metadata read again (${read.bytes} bytes)`);
  });

  it('a registry whose upload breaks half way gets one more round on its own, and the job completes', async () => {
    const b = sampleBuild({ flavor: 'kvm', arch: 'amd64', commit: 'c0ffee03', imageSize: 5 * 1024 * 1024, lean: true });
    await uploadBuild(s3.client, BUCKET, b);
    const image = b.files.find((f) => f.name.endsWith('.raw'))?.data.length ?? 0;
    latency.log.length = 0;
    // The streamed upload of the image to the slow registry is cut off after 1 MiB, once.
    latency.rules.push({ kind: 'upload-patch', minBodyBytes: 0, fault: { type: 'reset', afterBytes: 1024 * 1024 }, times: 1 });
    const read = { bytes: 0 };
    const job = await publish(destinations(), b, 'oci-publisher/several/', read);
    assert.equal(job.outcome, 'published', job.error);
    assert.deepEqual(
      (job.targets ?? []).map((t) => t.outcome),
      ['published', 'published', 'published'],
    );
    assert.ok(latency.log.some((e) => e.faulted && e.kind === 'upload-patch'), 'the fault struck');
    // The image was read a second time for that registry alone; the others did not get it twice.
    assert.ok(read.bytes >= 2 * image && read.bytes < 3 * image, `read ${read.bytes} bytes for an image of ${image}`);
    const verify = await run(destinations(), { action: 'verify', version: '1877.3', bucket: BUCKET }, 'oci-publisher/several/');
    assert.ok(verify.verify?.ok, JSON.stringify(verify.verify?.problems));
  });

  it('a file whose bytes differ from its md5: the job fails as the source\'s fault, and no registry commits the bytes', async () => {
    const b = sampleBuild({ flavor: 'openstack', arch: 'amd64', commit: 'c0ffee04', imageSize: 5 * 1024 * 1024, lean: true });
    await uploadBuild(s3.client, BUCKET, b);
    const raw = b.files.find((f) => f.name.endsWith('.raw'));
    assert.ok(raw);
    // Same size, one byte changed: only the md5 of the metadata tells.
    const bad = Buffer.from(raw.data);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0xff;
    await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `objects/${b.base}/${raw.name}`, Body: bad }));
    refusal.rules.length = 0;
    const job = await run(destinations(), s3Event(BUCKET, `meta/singles/${b.base}`), 'oci-publisher/several/', undefined, { MD5_CHECK: 'stream' });
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'integrity', job.error);
    assert.equal(job.targets, undefined, 'no destination is blamed');
    for (const r of [good, refusing, slow]) {
      for (const digest of [sha256(bad), sha256(raw.data)]) {
        const res = await fetch(`${r.url}/v2/gl/blobs/${digest}`, { method: 'HEAD' });
        assert.equal(res.status, 404, `${r.host} holds no blob of the image`);
      }
    }
  });

  it('a registry that keeps failing after its one more round ends failed, with nothing of the build in its index', async () => {
    const b = sampleBuild({ flavor: 'gcp', arch: 'amd64', commit: 'c0ffee05', imageSize: 5 * 1024 * 1024, lean: true });
    await uploadBuild(s3.client, BUCKET, b);
    refusal.rules.length = 0;
    latency.rules.length = 0;
    // Every large upload to the slow registry fails with a 503: retryable, but it does not pass.
    latency.rules.push({ kind: 'upload-patch', minBodyBytes: 0, fault: { type: 'status', status: 503 }, times: Infinity });
    latency.rules.push({ kind: 'upload-put', minBodyBytes: 1024 * 1024, fault: { type: 'status', status: 503 }, times: Infinity });
    // Fewer retries than by default, to keep the test short; the outcome does not depend on how many.
    const job = await run(destinations(), s3Event(BUCKET, `meta/singles/${b.base}`), 'oci-publisher/several/', undefined, { MAX_CONSECUTIVE_FAILURES: '2' });
    latency.rules.length = 0;
    assert.equal(job.outcome, 'failed');
    const byTarget = new Map((job.targets ?? []).map((t) => [t.target, t]));
    assert.equal(byTarget.get(`${good.host}/gl`)?.outcome, 'published');
    assert.equal(byTarget.get(`${refusal.host}/gl`)?.outcome, 'published');
    const bad = byTarget.get(`${latency.host}/gl`);
    assert.equal(bad?.outcome, 'failed', 'not reported complete');
    assert.equal(bad?.retryable, true, JSON.stringify(bad));
    assert.match(bad?.error ?? '', /503/);
    const index = (await (await fetch(`${slow.url}/v2/gl/manifests/1877.3`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } })).json()) as { manifests: Array<{ annotations?: Record<string, string> }> };
    assert.ok(!index.manifests.some((m) => m.annotations?.cname === b.base), 'the slow registry names nothing of the build');
  });

  it('when every registry fails once on the way, each gets its one more round, and the job completes', async () => {
    const b = sampleBuild({ flavor: 'azure', arch: 'amd64', commit: 'c0ffee06', imageSize: 5 * 1024 * 1024, lean: true });
    await uploadBuild(s3.client, BUCKET, b);
    for (const p of [refusal, latency]) {
      p.rules.length = 0;
      p.rules.push({ kind: 'upload-patch', minBodyBytes: 0, fault: { type: 'reset', afterBytes: 512 * 1024 }, times: 1 });
    }
    const read = { bytes: 0 };
    const job = await publish([refusal.url, latency.url].map((u) => `${u}/gl`).join(','), b, 'oci-publisher/several/', read);
    assert.equal(job.outcome, 'published', job.error);
    assert.deepEqual((job.targets ?? []).map((t) => t.outcome), ['published', 'published']);
    for (const p of [refusal, latency]) assert.ok(p.log.some((e) => e.faulted), 'the fault struck both');
  });
});
