/**
 * End to end through the handler: generated builds in an in-process S3, published to a real docker-registry,
 * checked with podman and skopeo as real clients.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, expectedArtifactManifest, expectedIndex, glTag, parse, sha256 } from '../helpers/expectations';
import { startRegistry, type TestRegistry } from '../helpers/registry';

describe('publishing builds from S3 to docker-registry', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let clients: ClientSandbox;
  let repo: string;
  const builds: SampleBuild[] = [
    sampleBuild({ flavor: 'container', arch: 'amd64' }),
    sampleBuild({ flavor: 'container', arch: 'arm64' }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', legacyMetadata: true }),
  ];
  const logs: string[] = [];
  let first: JobSummary[] = [];
  const ref = (tag: string) => `docker://${repo}:${tag}`;

  before(async () => {
    [registry, s3, clients] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    repo = `${registry.host}/gardenlinux/gardenlinux`;
    for (const b of builds) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), clients?.cleanup()]);
  });

  const handler = () =>
    createHandler({ env: { ...s3.env, REGISTRY: `http://${repo}`, LOG_LEVEL: 'debug' }, logSink: (l) => logs.push(l) });

  it('publishes every build through the handler, each from its own S3 event', async () => {
    // One handler per build: separate Lambda instances finishing at the same moment.
    const results = (await Promise.all(builds.map((b) => handler()(s3Event(BUCKET, `meta/singles/${b.base}`))))) as HandlerResult[];
    first = results.flatMap((r) => r.jobs);
    assert.equal(first.length, builds.length);
    for (const j of first) {
      assert.equal(j.outcome, 'published', JSON.stringify(j));
      assert.ok(j.bytesUploaded > 0);
      assert.match(j.manifest?.digest ?? '', /^sha256:[0-9a-f]{64}$/);
    }
    const containers = first.filter((j) => j.container);
    assert.deepEqual(containers.map((j) => j.container?.tag).sort(), ['amd64-1877.3', 'arm64-1877.3']);
  });

  it('pushes each container image byte for byte, so podman pulls it from the version index by arch', async () => {
    for (const b of builds.filter((x) => x.image)) {
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref(`${b.arch}-1877.3`)]);
      assert.equal(sha256(raw), b.image?.manifestDigest, 'the manifest bytes are those of the archive');
      await clients.podman(['pull', '--tls-verify=false', '--arch', b.arch, `${repo}:1877.3`]);
      const inspected = parse(await clients.podman(['image', 'inspect', `${repo}:1877.3`])) as Array<{
        Id: string;
        RepoDigests: string[];
        Architecture: string;
        Os: string;
      }>;
      // podman picked the entry for this arch from the index: the instance digest and the image id (its config).
      assert.ok(inspected[0]?.RepoDigests.includes(`${repo}@${b.image?.manifestDigest}`), JSON.stringify(inspected[0]?.RepoDigests));
      assert.equal(`sha256:${inspected[0]?.Id}`, b.image?.configDigest);
      assert.equal(inspected[0]?.Architecture, b.arch);
      assert.equal(inspected[0]?.Os, 'linux');
      await clients.podman(['rmi', '--force', `${repo}:1877.3`]);
    }
  });

  it('writes each Garden Linux artifact manifest as spec §3 describes, and skopeo copies every blob', async () => {
    for (const b of builds) {
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref(glTag(b))]);
      assert.deepEqual(parse(raw), expectedArtifactManifest(b), b.base);
      const summary = first.find((j) => j.base === b.base);
      assert.equal(sha256(raw), summary?.manifest?.digest);
      // skopeo checks every blob it copies against its digest.
      const out = join(clients.dir, `copy-${b.base}`);
      await clients.skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', ref(glTag(b)), `oci:${out}:x`]);
    }
  });

  it('merges everything into the version index in spec §5 order, container entries first', async () => {
    const glManifests = new Map<string, { digest: string; size: number }>();
    for (const b of builds) {
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref(glTag(b))]);
      glManifests.set(b.base, { digest: sha256(raw), size: Buffer.byteLength(raw) });
    }
    const index = parse(await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref('1877.3')]));
    assert.deepEqual(index, expectedIndex(builds, glManifests));
  });

  it('publishes the same builds again without uploading a byte or changing a digest', async () => {
    const indexBefore = sha256(await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref('1877.3')]));
    const results = (await Promise.all(builds.map((b) => handler()(s3Event(BUCKET, `meta/singles/${b.base}`))))) as HandlerResult[];
    for (const j of results.flatMap((r) => r.jobs)) {
      assert.equal(j.outcome, 'unchanged', JSON.stringify(j));
      assert.equal(j.bytesUploaded, 0);
      assert.equal(j.blobsUploaded, 0);
      assert.equal(j.bytesRead, 0, 'digests come from the state store, so no S3 object is read again');
      const earlier = first.find((x) => x.base === j.base);
      assert.equal(j.manifest?.digest, earlier?.manifest?.digest);
      assert.equal(j.container?.digest, earlier?.container?.digest);
      assert.equal(j.indexes?.[0]?.changed, false);
    }
    const indexAfter = sha256(await clients.skopeo(['inspect', '--raw', '--tls-verify=false', ref('1877.3')]));
    assert.equal(indexAfter, indexBefore);
  });
});

describe('a registry that answers with relative Location headers', () => {
  it('publishes a container build all the same', async () => {
    const [registry, s3] = await Promise.all([startRegistry({ relativeUrls: true }), startLocalS3([BUCKET])]);
    try {
      const b = sampleBuild({ flavor: 'container', arch: 'arm64', version: '2150.0.0', commit: 'local' });
      await uploadBuild(s3.client, BUCKET, b);
      const r = (await createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/gl` }, logSink: () => undefined })(
        s3Event(BUCKET, `meta/singles/${b.base}`),
      )) as HandlerResult;
      assert.equal(r.jobs[0]?.outcome, 'published');
      assert.equal(r.jobs[0]?.container?.digest, b.image?.manifestDigest);
      assert.equal(r.jobs[0]?.manifest?.tag, '2150.0.0-container-arm64-2150.0.0-local-arm64');
    } finally {
      await Promise.all([registry.stop(), s3.close()]);
    }
  });
});
