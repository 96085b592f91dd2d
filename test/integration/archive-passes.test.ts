/**
 * The single read of an archive feeding several uploads, at its edges: an image with several large layers
 * stored in the reverse of manifest order on a small connection pool, an empty layer, an image moved to another
 * repository when the archive is already published, remembered facts that were damaged, and a PXE pass that
 * fails while it skips members it already published.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import { createRuntime } from '../../functions/publish/runtime';
import type { JobSummary } from '../../functions/publish/run-job';
import { registryTargets } from '../../functions/target/registry-target';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { metadataYaml, pseudoRandom, sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { makeTar } from '../../tools/tar-writer';
import { firstJob } from '../helpers/jobs';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, sha256 } from '../helpers/expectations';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';

/** A container build whose image has three 3 MiB layers and an empty one, stored last-layer-first. */
function multiLayerBuild(): SampleBuild & { layers: string[]; layerSizes: number[]; configSize: number } {
  const b = sampleBuild({ flavor: 'container', arch: 'amd64', version: '1877.9', commit: 'cafe0001' });
  const layers = [0, 1, 2].map((i) => gzipSync(makeTar([{ path: `layer${i}/payload`, data: pseudoRandom(`layer${i}`, 3 * 1024 * 1024) }]), { level: 0 }));
  const empty = Buffer.alloc(0);
  const all = [...layers, empty];
  const digest = (x: Buffer) => `sha256:${createHash('sha256').update(x).digest('hex')}`;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: all.map(digest) } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest(config), size: config.length },
      layers: all.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digest(l), size: l.length })),
    }),
  );
  const blob = (x: Buffer) => ({ path: `blobs/sha256/${digest(x).slice(7)}`, data: x });
  const archive = makeTar([
    ...[...layers].reverse().map(blob),
    blob(empty),
    blob(config),
    blob(manifest),
    { path: 'index.json', data: Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digest(manifest), size: manifest.length }] })) },
    { path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
  ]);
  const files = b.files.map((f) => (f.name.endsWith('.oci') ? { name: f.name, data: archive } : f));
  return {
    ...b,
    files,
    metadata: metadataYaml({ flavor: b.flavor, arch: b.arch, version: b.version, commit: b.commit }, b.base, b.platform, b.features, files, b.version, b.commit),
    image: { manifestDigest: digest(manifest), manifestSize: manifest.length, configDigest: digest(config), layerDigest: digest(layers[0] as Buffer) },
    layers: all.map(digest),
    layerSizes: all.map((l) => l.length),
    configSize: config.length,
  };
}

function run(handler: ReturnType<typeof createHandler>, b: SampleBuild): Promise<JobSummary> {
  return firstJob(handler(s3Event(BUCKET, `meta/singles/${b.base}`)));
}

/** Fails the test instead of hanging it. */
function within<T>(ms: number, p: Promise<T>): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`did not finish within ${ms} ms`)), ms).unref())]);
}

describe('single-pass archive transfers at their edges', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let clients: ClientSandbox;
  const proxies: FaultProxy[] = [];
  const multi = multiLayerBuild();

  before(async () => {
    [registry, s3, clients] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    await uploadBuild(s3.client, BUCKET, multi);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), clients?.cleanup(), ...proxies.map((p) => p.close())]);
  });

  const env = (extra: Record<string, string> = {}) => ({ ...s3.env, REGISTRY: `http://${registry.host}/edge`, ...extra });
  const blobExists = async (repo: string, digest: string): Promise<boolean> => {
    const res = await request(`${registry.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    await res.body.dump();
    return res.statusCode === 200;
  };

  it('publishes layers stored out of order through a pool of two connections', async () => {
    const handler = createHandler({
      env: env(),
      logSink: () => undefined,
      runtime: (config, logger) => ({
        ...createRuntime(config, logger),
        targets: registryTargets({ scheme: 'http', host: registry.host, repository: 'edge', logger, connections: 2 }),
      }),
    });
    const job = await within(60_000, run(handler, multi));
    assert.equal(job.outcome, 'published', job.error);
    assert.equal(job.container?.digest, multi.image?.manifestDigest);
    for (const d of multi.layers) assert.ok(await blobExists('edge', d), d);
    await clients.skopeo(['copy', '--src-tls-verify=false', `docker://${registry.host}/edge:amd64-1877.9`, `oci:${clients.dir}/multi:x`]);
  });

  it('moves the image to a sub-repository reading only its blobs, the empty one included', async () => {
    const handler = createHandler({ env: env({ CONTAINER_REPOSITORIES: '{"container":"moved"}' }), logSink: () => undefined });
    const job = await run(handler, multi);
    assert.equal(job.outcome, 'published', job.error);
    assert.equal(job.container?.repository, `${registry.host}/edge/moved`);
    // The image's blobs by their byte ranges, and the few windows that locate them: nothing else of the archive.
    const blobBytes = multi.layerSizes.reduce((n, x) => n + x, 0) + multi.configSize;
    assert.ok(job.bytesRead <= blobBytes + 128 * 1024, `read ${job.bytesRead} bytes for ${blobBytes} bytes of image blobs`);
    assert.ok(job.bytesRead >= blobBytes);
    assert.ok(await blobExists('edge/moved', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'));
    await clients.skopeo(['copy', '--src-tls-verify=false', `docker://${registry.host}/edge/moved:amd64-1877.9`, `oci:${clients.dir}/moved:x`]);
  });

  it('does not trust remembered manifest bytes that no longer match their digest', async () => {
    const key = `oci-publisher/digests/${BUCKET}/objects/${multi.base}/${multi.base}.oci.json`;
    const facts = JSON.parse((await (await fetch(`${s3.endpoint}/${BUCKET}/${key}`)).text()) || '{}') as { container?: { manifestBytes: string } };
    assert.ok(facts.container, 'the archive was remembered');
    facts.container.manifestBytes = Buffer.from('{"damaged":true}').toString('base64');
    await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: JSON.stringify(facts) }));
    const job = await run(createHandler({ env: env(), logSink: () => undefined }), multi);
    assert.equal(job.outcome, 'unchanged', job.error);
    assert.equal(job.container?.digest, multi.image?.manifestDigest);
    assert.ok(job.bytesRead > 0, 'the archive was looked at again');
    const tagged = await request(`${registry.url}/v2/edge/manifests/amd64-1877.9`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(sha256(Buffer.from(await tagged.body.arrayBuffer())), multi.image?.manifestDigest);
  });

  it('a PXE pass that fails while it skips published members ends promptly with the registry error', async () => {
    const pxe = sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true, imageSize: 2 * 1024 * 1024, commit: 'cafe0002' });
    await uploadBuild(s3.client, BUCKET, pxe);
    const first = await run(createHandler({ env: env({ STATE_PREFIX: 'oci-publisher/pxe/' }), logSink: () => undefined }), pxe);
    assert.equal(first.outcome, 'published', first.error);
    // The kernel goes missing from the registry; the rest of the bundle is still there.
    const vmlinuz = pxe.pxeMembers?.find((m) => m.name === 'vmlinuz');
    assert.ok(vmlinuz);
    const del = await request(`${registry.url}/v2/edge/blobs/${sha256(vmlinuz.data)}`, { method: 'DELETE' });
    await del.body.dump();
    assert.equal(del.statusCode, 202);

    const proxy = await startFaultProxy();
    proxies.push(proxy);
    proxy.setUpstream(registry.url);
    proxy.rules.push({ kind: 'upload-put', fault: { type: 'status', status: 500 }, times: Infinity });
    const handler = createHandler({ env: env({ REGISTRY: `http://${proxy.host}/edge`, STATE_PREFIX: 'oci-publisher/pxe/' }), logSink: () => undefined });
    const started = Date.now();
    const job = await within(60_000, run(handler, pxe));
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'registry', job.error);
    assert.match(job.error ?? '', /HTTP 500/);
    assert.doesNotMatch(job.error ?? '', /not a valid gzip/);
    assert.ok(Date.now() - started < 30_000);
  });
});
