/**
 * Bad input of every kind ends with an error that names the problem, and the registry is left as it was: no tag,
 * no manifest, no index changes. What can be found before writing is found before writing (nothing uploaded).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { containerArchive, metadataYaml, pseudoRandom, sampleBuild, writeBuildDir, type SampleBuild, type SampleFile } from '../../tools/sample-builds';
import { makeTar } from '../../tools/tar-writer';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { PASSWORD, startTokenRegistry, USER, type RegistryStack } from '../helpers/registry-stack';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

/** A build like `sampleBuild`, with some files replaced (and the metadata's md5s following them). */
function variant(spec: Parameters<typeof sampleBuild>[0], change: (f: SampleFile) => Buffer | undefined, metadata?: (m: string) => string): SampleBuild {
  const b = sampleBuild(spec);
  const files = b.files.map((f) => ({ name: f.name, data: change(f) ?? f.data }));
  const m = metadataYaml(spec, b.base, b.platform, b.features, files, b.version, b.commit);
  return { ...b, files, metadata: metadata ? metadata(m) : m };
}

/** A GL-style .oci archive rebuilt from its parts, so that one part can be wrong. */
function archive(arch: string, edit: (parts: ReturnType<typeof containerArchive>) => Parameters<typeof makeTar>[0]): Buffer {
  return makeTar(edit(containerArchive({ arch, refName: `container-${arch}`, rootfsSize: 20_000, seed: `bad-${arch}`, version: '1877.3' })));
}
const blobEntry = (b: Buffer, data: Buffer = b) => ({ path: `blobs/sha256/${sha256(b).slice(7)}`, data });
const indexOf = (...manifests: Buffer[]) =>
  Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: manifests.map((m) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(m), size: m.length })) }));
const layoutFile = { path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') };

describe('bad input', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  const proxies: FaultProxy[] = [];
  let dir: string;

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    dir = await mkdtemp(join(tmpdir(), 'gl-bad-'));
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), ...proxies.map((p) => p.close()), dir ? rm(dir, { recursive: true, force: true }) : undefined]);
  });

  const tags = async (repo: string): Promise<string[]> => {
    const res = await request(`${registry.url}/v2/${repo}/tags/list`);
    const body = (await res.body.json()) as { tags?: string[] | null };
    return res.statusCode === 404 ? [] : [...(body.tags ?? [])].sort();
  };
  const run = async (repo: string, event: unknown, extra: Record<string, string> = {}): Promise<JobSummary> => {
    const handler = createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: `oci-publisher/${repo}/`, ...extra }, logSink: () => undefined });
    return firstJob(handler(event));
  };

  describe('events', () => {
    it('a malformed JSON event is refused, naming the problem', async () => {
      const handler = createHandler({ env: { REGISTRY: `http://${registry.host}/events` }, logSink: () => undefined });
      await assert.rejects(handler('{"Records": [ {"s3": '), /the event is a string that is not JSON/);
    });
    it('an unknown event shape is refused, listing the accepted ones', async () => {
      const handler = createHandler({ env: { REGISTRY: `http://${registry.host}/events` }, logSink: () => undefined });
      await assert.rejects(handler({ Records: [{ eventSource: 'aws:dynamodb' }] }), /unrecognised event; accepted are S3 notifications/);
    });
    it('an event naming a bucket outside ALLOWED_BUCKETS is refused', async () => {
      const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad00000' });
      await uploadBuild(s3.client, BUCKET, b);
      const job = await run('buckets', s3Event(BUCKET, `meta/singles/${b.base}`), { ALLOWED_BUCKETS: 'some-other-bucket' });
      assert.equal(job.outcome, 'failed');
      assert.match(job.error ?? '', /the bucket "gardenlinux-github-releases" is not one this publisher reads \(ALLOWED_BUCKETS: some-other-bucket\)/);
      assert.deepEqual(await tags('buckets'), []);
    });
  });

  // Each: a build with one defect, the error it must produce, whether it is found before any upload.
  const cases: Array<{ name: string; build: () => SampleBuild; key?: (b: SampleBuild) => string; error: RegExp; beforeWrites: boolean }> = [
    {
      name: 'a metadata document that is not YAML',
      build: () => variant({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad00001' }, () => undefined, () => 'architecture: [amd64\npaths: {\n'),
      error: /is not valid YAML/,
      beforeWrites: true,
    },
    {
      name: 'a metadata document missing a required field',
      build: () => variant({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad00002' }, () => undefined, (m) => m.replace(/^platform: .*\n/m, '')),
      error: /is not a valid build document: platform: /,
      beforeWrites: true,
    },
    {
      name: 'a metadata document naming files outside objects/<base>/',
      build: () => variant({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad00003' }, () => undefined, (m) => m.replace(/s3_key: objects\/[^/]+\/(\S+\.sbom)/, 's3_key: objects/other-amd64-1877.3-00000000/$1')),
      error: /is not objects\/aws-gardener_prod-amd64-1877\.3-bad00003\/.*a build may only name its own files/,
      beforeWrites: true,
    },
    {
      name: 'a key that does not parse as a base name',
      build: () => sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad00004' }),
      key: () => 'meta/singles/aws-gardener_prod-amd64-1877.3',
      error: /"aws-gardener_prod-amd64-1877\.3" is not a Garden Linux base name/,
      beforeWrites: true,
    },
    {
      name: 'a truncated .oci archive',
      build: () => variant({ flavor: 'container', arch: 'amd64', commit: 'bad00005' }, (f) => (f.name.endsWith('.oci') ? f.data.subarray(0, f.data.length - 3000) : undefined)),
      error: /\.oci: truncated/,
      beforeWrites: true,
    },
    {
      name: 'an .oci archive that is not a tar',
      build: () => variant({ flavor: 'container', arch: 'amd64', commit: 'bad00006' }, (f) => (f.name.endsWith('.oci') ? pseudoRandom('not a tar', 40_000) : undefined)),
      error: /\.oci: not a tar archive/,
      beforeWrites: true,
    },
    {
      name: 'an .oci member whose bytes do not match its digest',
      build: () =>
        variant({ flavor: 'container', arch: 'amd64', commit: 'bad00007' }, (f) =>
          f.name.endsWith('.oci')
            ? archive('amd64', (p) => [blobEntry(p.config), blobEntry(p.layer, pseudoRandom('other bytes', p.layer.length)), blobEntry(p.manifest), { path: 'index.json', data: indexOf(p.manifest) }, layoutFile])
            : undefined,
        ),
      error: /blob sha256:[0-9a-f]{64}: digest sha256:[0-9a-f]{64}, expected|DIGEST_INVALID/,
      beforeWrites: false,
    },
    {
      name: 'an .oci archive referencing a blob it does not contain',
      build: () =>
        variant({ flavor: 'container', arch: 'amd64', commit: 'bad00008' }, (f) =>
          f.name.endsWith('.oci') ? archive('amd64', (p) => [blobEntry(p.config), blobEntry(p.manifest), { path: 'index.json', data: indexOf(p.manifest) }, layoutFile]) : undefined,
        ),
      error: /it references blob sha256:[0-9a-f]{64}, which it does not contain/,
      beforeWrites: true,
    },
    {
      name: 'an .oci archive with a path-traversal member',
      build: () =>
        variant({ flavor: 'container', arch: 'amd64', commit: 'bad00009' }, (f) =>
          f.name.endsWith('.oci')
            ? archive('amd64', (p) => [{ path: '../../etc/cron.d/evil', data: Buffer.from('* * * * * root true\n') }, blobEntry(p.config), blobEntry(p.layer), blobEntry(p.manifest), { path: 'index.json', data: indexOf(p.manifest) }, layoutFile])
            : undefined,
        ),
      error: /member "\.\.\/\.\.\/etc\/cron\.d\/evil" climbs out of the archive/,
      beforeWrites: true,
    },
    {
      name: 'an .oci archive with several manifests and no matching ref name',
      build: () =>
        variant({ flavor: 'container', arch: 'amd64', commit: 'bad0000a' }, (f) => {
          if (!f.name.endsWith('.oci')) return undefined;
          return archive('amd64', (p) => {
            const second = Buffer.from(p.manifest.toString().replace('"schemaVersion": 2', '"schemaVersion": 2, "annotations": {"x": "y"}'));
            return [blobEntry(p.config), blobEntry(p.layer), blobEntry(p.manifest), blobEntry(second), { path: 'index.json', data: indexOf(p.manifest, second) }, layoutFile];
          });
        }),
      error: /it holds 2 image manifests and none has the ref name "container-amd64"/,
      beforeWrites: true,
    },
    {
      name: 'a PXE bundle that is corrupt gzip',
      build: () =>
        variant({ flavor: 'metal_pxe', arch: 'amd64', pxe: true, commit: 'bad0000b' }, (f) =>
          f.name.endsWith('.pxe.tar.gz') ? Buffer.concat([gzipSync(Buffer.from('')).subarray(0, 10), pseudoRandom('corrupt', 50_000)]) : undefined,
        ),
      error: /\.pxe\.tar\.gz: not a valid gzip-compressed tar/,
      beforeWrites: false,
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const b = c.build();
      await uploadBuild(s3.client, BUCKET, b);
      const key = c.key?.(b) ?? `meta/singles/${b.base}`;
      if (c.key) await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: b.metadata }));
      const repo = `bad/${b.commit}`;
      const job = await run(repo, s3Event(BUCKET, key));
      assert.equal(job.outcome, 'failed');
      assert.match(job.error ?? '', c.error);
      assert.deepEqual(await tags(repo), [], 'no tag, no manifest, no index');
      if (c.beforeWrites) assert.equal(job.bytesUploaded, 0, 'found before anything was uploaded');
    });
  }

  it('a build whose artifact manifest would exceed 4 MiB', async () => {
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad0000c' });
    // 9,000 files with long names: the manifest would be about 5 MB. A local directory serves them quickly.
    const many = [...b.files, ...Array.from({ length: 9000 }, (_, i) => ({ name: `${b.base}.part-${i}-${'x'.repeat(200)}.log`, data: Buffer.from(`${i}\n`) }))];
    const big = { ...b, files: many, metadata: metadataYaml({ flavor: b.flavor, arch: b.arch, commit: b.commit }, b.base, b.platform, b.features, many, b.version, b.commit) };
    const bucketDir = join(dir, 'many');
    await writeBuildDir(bucketDir, big);
    const job = await run('bad/toomany', { action: 'publish', bucket: 'local-directory', base: b.base }, { SOURCE_DIR: bucketDir });
    assert.equal(job.outcome, 'failed');
    assert.match(job.error ?? '', /the artifact manifest of aws-gardener_prod-amd64-1877\.3-bad0000c \(9\d{3} files\) would exceed the 4 MiB registries accept/);
    assert.equal(job.bytesUploaded, 0);
    assert.deepEqual(await tags('bad/toomany'), []);
  });

  it('a version index that would exceed 4 MiB', async () => {
    const repo = 'bad/bigindex';
    // An index another tool wrote, just under 4 MiB, naming one manifest many times.
    const put = async (ref: string, type: string, body: Buffer) => {
      const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': type }, body });
      await res.body.dump();
      assert.equal(res.statusCode, 201, ref);
    };
    const config = Buffer.from('{}');
    const post = await request(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    await post.body.dump();
    const loc = new URL(String(post.headers.location), registry.url);
    loc.searchParams.set('digest', sha256(config));
    const up = await request(loc, { method: 'PUT', body: config, headers: { 'content-type': 'application/octet-stream' } });
    await up.body.dump();
    const child = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: 2 }, layers: [] }));
    await put(sha256(child), 'application/vnd.oci.image.manifest.v1+json', child);
    // Within a kilobyte or two of the 4 MiB limit: no room for this build's entries.
    const entries: unknown[] = [];
    for (let i = 0, length = 0; length < 4 * 1024 * 1024 - 1500; i++) {
      const entry = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(child), size: child.length, annotations: { cname: `foreign-amd64-1877.3-${i.toString(16).padStart(8, '0')}`, note: 'x'.repeat(120) } };
      entries.push(entry);
      length += JSON.stringify(entry).length + 1;
    }
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }));
    await put('1877.3', 'application/vnd.oci.image.index.v1+json', index);

    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bad0000d' });
    await uploadBuild(s3.client, BUCKET, b);
    const job = await run(repo, s3Event(BUCKET, `meta/singles/${b.base}`));
    assert.equal(job.outcome, 'failed');
    assert.match(job.error ?? '', /1877\.3 is \d+ bytes; with this build it would exceed the 4 MiB registries accept/);
    assert.equal(job.bytesUploaded, 0);
    const after = await request(`${registry.url}/v2/${repo}/manifests/1877.3`, { headers: { accept: ACCEPT } });
    assert.equal(sha256(Buffer.from(await after.body.arrayBuffer())), sha256(index), 'the index is as it was');
  });

  it('a registry that answers a manifest read with something that is not JSON', async () => {
    const proxy = await startFaultProxy();
    proxies.push(proxy);
    proxy.setUpstream(registry.url);
    proxy.rules.push({ kind: 'manifest-get', fault: { type: 'garbage' }, times: Infinity });
    // The index must exist for a read to return a body at all.
    const seed = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'bad0000e' });
    await uploadBuild(s3.client, BUCKET, seed);
    assert.equal((await run('bad/garbage', s3Event(BUCKET, `meta/singles/${seed.base}`))).outcome, 'published');
    const before = await tags('bad/garbage');
    const b = sampleBuild({ flavor: 'azure-gardener_prod', arch: 'amd64', commit: 'bad0000e' });
    await uploadBuild(s3.client, BUCKET, b);
    const job = await run('bad/garbage', s3Event(BUCKET, `meta/singles/${b.base}`), { REGISTRY: `http://${proxy.host}/bad/garbage` });
    assert.equal(job.outcome, 'failed');
    assert.match(job.error ?? '', /GET manifest bad\/garbage:1877\.3: the registry returned something that is not a JSON manifest/);
    assert.deepEqual(await tags('bad/garbage'), before);
  });

  describe('a token server that answers with something that is not JSON', () => {
    let stack: RegistryStack;
    before(async () => {
      stack = await startTokenRegistry();
    });
    after(() => stack?.stop());
    it('fails saying so', async () => {
      const proxy = await startFaultProxy();
      proxies.push(proxy);
      proxy.setUpstream(stack.registry.url, stack.tokens.realm.replace(/\/token$/, ''));
      proxy.rules.push({ kind: 'token', fault: { type: 'garbage' }, times: Infinity });
      const b = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'arm64', commit: 'bad0000f' });
      await uploadBuild(s3.client, BUCKET, b);
      const job = await run('bad/token', s3Event(BUCKET, `meta/singles/${b.base}`), { REGISTRY: `http://${proxy.host}/bad/token`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: PASSWORD });
      assert.equal(job.outcome, 'failed');
      assert.match(job.error ?? '', /the token server http:\/\/127\.0\.0\.1:\d+ did not answer with a token/);
      assert.equal(job.bytesUploaded, 0);
    });
  });
});
