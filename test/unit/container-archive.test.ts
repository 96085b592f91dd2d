import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspectContainerArchive, type MemberReader } from '../../functions/oci/container-archive';
import { indexTar, type TarMember } from '../../functions/oci/tar-index';
import { InputError, IntegrityError } from '../../functions/util/errors';
import { containerArchive } from '../../tools/sample-builds';
import { makeTar, type TarEntry } from '../../tools/tar-writer';

const WHAT = 'container-amd64-1877.3-75df9f40.oci';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const LAYOUT = Buffer.from('{"imageLayoutVersion": "1.0.0"}');

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

interface Opened {
  members: Map<string, TarMember>;
  read: MemberReader;
  reads: string[];
}

async function open(archive: Buffer): Promise<Opened> {
  const members = await indexTar(async (start, length) => archive.subarray(start, start + length), archive.length, WHAT);
  const reads: string[] = [];
  const read: MemberReader = async (m) => {
    reads.push(m.path);
    return Buffer.from(archive.subarray(m.offset, m.offset + m.size));
  };
  return { members, read, reads };
}

function slice(archive: Buffer, m: TarMember): Buffer {
  return archive.subarray(m.offset, m.offset + m.size);
}

/** One image: a config, a layer and a manifest, with a descriptor for the manifest. */
function image(opts: { arch?: string; os?: string; variant?: string; seed: string; configExtra?: Record<string, unknown> }) {
  const layer = Buffer.from(`layer bytes of ${opts.seed}`.repeat(20));
  const config = Buffer.from(
    JSON.stringify({
      ...(opts.arch !== undefined ? { architecture: opts.arch } : {}),
      ...(opts.os !== undefined ? { os: opts.os } : {}),
      ...(opts.variant !== undefined ? { variant: opts.variant } : {}),
      rootfs: { type: 'layers', diff_ids: [sha256(Buffer.from(opts.seed))] },
      ...opts.configExtra,
    }),
  );
  const manifestObj = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
    layers: [{ mediaType: LAYER, digest: sha256(layer), size: layer.length }],
  };
  const manifest = Buffer.from(JSON.stringify(manifestObj, null, 3));
  const descriptor = (extra: Record<string, unknown> = {}) => ({ mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length, ...extra });
  return { layer, config, manifest, descriptor };
}

function blobEntry(b: Buffer, prefix = ''): TarEntry {
  return { path: `${prefix}blobs/sha256/${sha256(b).slice(7)}`, data: b };
}

function layoutTar(opts: { index: unknown; blobs: Buffer[]; noLayout?: boolean; noIndex?: boolean; extra?: TarEntry[]; prefix?: string }): Buffer {
  const prefix = opts.prefix ?? '';
  return makeTar([
    ...(prefix ? [{ path: prefix, type: 'Directory' as const }] : []),
    { path: `${prefix}blobs/`, type: 'Directory' },
    { path: `${prefix}blobs/sha256/`, type: 'Directory' },
    ...opts.blobs.map((b) => blobEntry(b, prefix)),
    ...(opts.noIndex ? [] : [{ path: `${prefix}index.json`, data: Buffer.from(JSON.stringify(opts.index)) }]),
    ...(opts.noLayout ? [] : [{ path: `${prefix}oci-layout`, data: LAYOUT }]),
    ...(opts.extra ?? []),
  ]);
}

async function assertRejects(p: Promise<unknown>, cls: typeof InputError | typeof IntegrityError, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    for (const pat of patterns) assert.match((err as Error).message, pat);
    return true;
  });
}

describe('inspectContainerArchive: a Garden Linux container archive', () => {
  it('finds the manifest by ref name and locates the config and layer', async () => {
    const c = containerArchive({ arch: 'amd64', refName: 'container-amd64', rootfsSize: 5000, seed: 'gl', version: '1877.3' });
    const o = await open(c.archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.deepEqual(img.manifest.bytes, c.manifest);
    assert.equal(img.manifest.digest, sha256(c.manifest));
    assert.equal(img.manifest.size, c.manifest.length);
    assert.equal(img.manifest.mediaType, OCI_MANIFEST);
    assert.deepEqual(img.platform, { architecture: 'amd64', os: 'linux' });
    assert.deepEqual(
      img.blobs.map((b) => [b.digest, b.size]),
      [
        [sha256(c.config), c.config.length],
        [sha256(c.layer), c.layer.length],
      ],
    );
    const [configBlob, layerBlob] = img.blobs;
    assert.ok(configBlob && layerBlob);
    assert.deepEqual(slice(c.archive, configBlob.member), c.config);
    assert.deepEqual(slice(c.archive, layerBlob.member), c.layer);
    assert.equal(layerBlob.member.path, `blobs/sha256/${sha256(c.layer).slice(7)}`);
  });

  it('keeps the manifest bytes exactly (pretty-printed, not re-serialised)', async () => {
    const c = containerArchive({ arch: 'arm64', refName: 'container-arm64', rootfsSize: 100, seed: 'bytes', version: '1877.3' });
    const o = await open(c.archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-arm64', arch: 'arm64' }, WHAT);
    assert.ok(img.manifest.bytes.toString().includes('\n  "schemaVersion"'));
    assert.equal(img.manifest.bytes.toString(), c.manifest.toString());
    assert.deepEqual(img.platform, { architecture: 'arm64', os: 'linux' });
  });

  it('does not read the layers, only the small members', async () => {
    const c = containerArchive({ arch: 'amd64', refName: 'container-amd64', rootfsSize: 20_000, seed: 'small', version: '1877.3' });
    const o = await open(c.archive);
    await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(o.reads.includes(`blobs/sha256/${sha256(c.layer).slice(7)}`), false);
    assert.ok(o.reads.includes('index.json'));
    assert.ok(o.reads.includes(`blobs/sha256/${sha256(c.manifest).slice(7)}`));
    assert.ok(o.reads.includes(`blobs/sha256/${sha256(c.config).slice(7)}`));
  });

  it('matches the ref name case-insensitively', async () => {
    const c = containerArchive({ arch: 'amd64', refName: 'container-pythonDev-amd64', rootfsSize: 100, seed: 'py', version: '1877.3' });
    const o = await open(c.archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'CONTAINER-PYTHONDEV-AMD64', arch: 'amd64' }, WHAT);
    assert.equal(img.manifest.digest, sha256(c.manifest));
  });

  it('works without a ref name when the index holds exactly one manifest', async () => {
    const c = containerArchive({ arch: 'amd64', rootfsSize: 100, seed: 'noref', version: '1877.3' });
    const index = JSON.parse(slice(c.archive, (await open(c.archive)).members.get('index.json') as TarMember).toString()) as Record<string, unknown>;
    assert.equal('mediaType' in index, false, 'the sample index.json has no top-level mediaType');
    const o = await open(c.archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(img.manifest.digest, sha256(c.manifest));
  });

  it('takes the only manifest even when its ref name is another one', async () => {
    const c = containerArchive({ arch: 'amd64', refName: 'latest', rootfsSize: 100, seed: 'other', version: '1877.3' });
    const o = await open(c.archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(img.manifest.digest, sha256(c.manifest));
  });

  it('refuses an image built for another architecture', async () => {
    const c = containerArchive({ arch: 'arm64', refName: 'container-amd64', rootfsSize: 100, seed: 'arch', version: '1877.3' });
    const o = await open(c.archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /arm64/, /amd64/, new RegExp(WHAT.replace(/\./g, '\\.')));
  });
});

describe('inspectContainerArchive: choosing among manifests', () => {
  it('picks by ref name among several manifests', async () => {
    const amd = image({ arch: 'amd64', os: 'linux', seed: 'amd' });
    const arm = image({ arch: 'arm64', os: 'linux', seed: 'arm' });
    const archive = layoutTar({
      index: {
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          amd.descriptor({ annotations: { 'org.opencontainers.image.ref.name': 'container-amd64' } }),
          arm.descriptor({ annotations: { 'org.opencontainers.image.ref.name': 'container-arm64' } }),
        ],
      },
      blobs: [amd.config, amd.layer, amd.manifest, arm.config, arm.layer, arm.manifest],
    });
    const o = await open(archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-arm64', arch: 'arm64' }, WHAT);
    assert.equal(img.manifest.digest, sha256(arm.manifest));
    assert.deepEqual(
      img.blobs.map((b) => b.digest),
      [sha256(arm.config), sha256(arm.layer)],
    );
    assert.deepEqual(img.platform, { architecture: 'arm64', os: 'linux' });
  });

  it('refuses several manifests when none has the ref name', async () => {
    const a = image({ arch: 'amd64', os: 'linux', seed: 'a' });
    const b = image({ arch: 'amd64', os: 'linux', seed: 'b' });
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [a.descriptor({ annotations: { 'org.opencontainers.image.ref.name': 'x' } }), b.descriptor()] },
      blobs: [a.config, a.layer, a.manifest, b.config, b.layer, b.manifest],
    });
    const o = await open(archive);
    await assertRejects(
      inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT),
      InputError,
      /2 image manifests/,
      /container-amd64/,
    );
  });

  it('ignores descriptors of other media types in index.json', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'xml' });
    const other = Buffer.from('<xml/>');
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: 'application/xml', digest: sha256(other), size: other.length }, img.descriptor()] },
      blobs: [img.config, img.layer, img.manifest, other],
    });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(result.manifest.digest, sha256(img.manifest));
  });

  it('refuses an index that leads to no image manifest', async () => {
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [] }, blobs: [] });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /no image manifest/);
  });

  it('opens a nested index and narrows it to the architecture', async () => {
    const amd = image({ arch: 'amd64', os: 'linux', seed: 'n-amd' });
    const arm = image({ arch: 'arm64', os: 'linux', variant: 'v8', seed: 'n-arm' });
    const nested = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          amd.descriptor({ platform: { architecture: 'amd64', os: 'linux' } }),
          arm.descriptor({ platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }),
        ],
      }),
    );
    const archive = layoutTar({
      // like skopeo copy --all: index.json points at the index blob, without a top-level mediaType
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: sha256(nested), size: nested.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] },
      blobs: [nested, amd.config, amd.layer, amd.manifest, arm.config, arm.layer, arm.manifest],
    });
    const o = await open(archive);
    const forArm = await inspectContainerArchive(o.members, o.read, { refName: 'container-arm64', arch: 'arm64' }, WHAT);
    assert.equal(forArm.manifest.digest, sha256(arm.manifest));
    assert.deepEqual(forArm.platform, { architecture: 'arm64', os: 'linux', variant: 'v8' });
    const forAmd = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(forAmd.manifest.digest, sha256(amd.manifest));
    assert.deepEqual(forAmd.blobs.map((b) => b.digest), [sha256(amd.config), sha256(amd.layer)]);
  });

  it('recurses through two levels of nesting', async () => {
    const amd = image({ arch: 'amd64', os: 'linux', seed: 'deep' });
    const inner = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [amd.descriptor({ platform: { architecture: 'amd64', os: 'linux' } })] }));
    const outer = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: sha256(inner), size: inner.length }] }));
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: sha256(outer), size: outer.length }] },
      blobs: [outer, inner, amd.config, amd.layer, amd.manifest],
    });
    const o = await open(archive);
    const img = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(img.manifest.digest, sha256(amd.manifest));
  });

  it('refuses a nested index without an entry for the architecture', async () => {
    const arm = image({ arch: 'arm64', os: 'linux', seed: 'only-arm' });
    const nested = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [arm.descriptor({ platform: { architecture: 'arm64', os: 'linux' } })] }));
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: sha256(nested), size: nested.length }] },
      blobs: [nested, arm.config, arm.layer, arm.manifest],
    });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /no image manifest/);
  });

  it('refuses a nested index whose bytes do not match its digest', async () => {
    const amd = image({ arch: 'amd64', os: 'linux', seed: 'bad-nested' });
    const nested = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [amd.descriptor()] }));
    const tampered = Buffer.from(nested.toString().replace(/}$/, ' '));
    assert.equal(tampered.length, nested.length);
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: sha256(nested), size: nested.length }] },
      blobs: [amd.config, amd.layer, amd.manifest],
      extra: [{ path: `blobs/sha256/${sha256(nested).slice(7)}`, data: tampered }],
    });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), IntegrityError, new RegExp(sha256(nested)));
  });
});

describe('inspectContainerArchive: platform', () => {
  it('reads architecture, os and variant from the config', async () => {
    const img = image({ arch: 'arm64', os: 'linux', variant: 'v8', seed: 'variant' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer, img.manifest] });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-arm64', arch: 'arm64' }, WHAT);
    assert.deepEqual(result.platform, { architecture: 'arm64', os: 'linux', variant: 'v8' });
  });

  it('takes the os from the config even when it is not linux', async () => {
    const img = image({ arch: 'amd64', os: 'freebsd', seed: 'bsd' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer, img.manifest] });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.deepEqual(result.platform, { architecture: 'amd64', os: 'freebsd' });
  });

  it('falls back to the build architecture and linux when the config says nothing', async () => {
    const img = image({ seed: 'bare' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer, img.manifest] });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-arm64', arch: 'arm64' }, WHAT);
    assert.deepEqual(result.platform, { architecture: 'arm64', os: 'linux' });
  });
});

describe('inspectContainerArchive: broken archives', () => {
  it('refuses an archive without oci-layout', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'nolayout' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer, img.manifest], noLayout: true });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /oci-layout/);
  });

  it('refuses an archive without index.json', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'noindex' });
    const archive = layoutTar({ index: null, blobs: [img.config, img.layer, img.manifest], noIndex: true });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /index\.json/);
  });

  it('refuses an index.json that is not JSON or not an index', async () => {
    for (const text of ['{not json', '{"schemaVersion":1,"manifests":[]}', '{"schemaVersion":2}']) {
      const archive = makeTar([
        { path: 'index.json', data: Buffer.from(text) },
        { path: 'oci-layout', data: LAYOUT },
      ]);
      const o = await open(archive);
      await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /index\.json/);
    }
  });

  it('refuses a manifest whose layer blob is missing', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'nolayer' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.manifest] });
    const o = await open(archive);
    await assertRejects(
      inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT),
      InputError,
      /does not contain/,
      new RegExp(sha256(img.layer)),
    );
  });

  it('refuses an index whose manifest blob is missing', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'nomanifest' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer] });
    const o = await open(archive);
    await assertRejects(
      inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT),
      InputError,
      /does not contain/,
      new RegExp(sha256(img.manifest)),
    );
  });

  it('refuses a manifest whose bytes do not match its digest', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'tampered' });
    const tampered = Buffer.from(img.manifest);
    tampered[tampered.length - 2] = 0x20; // same size, different bytes
    assert.notDeepEqual(tampered, img.manifest);
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [img.descriptor()] },
      blobs: [img.config, img.layer],
      extra: [{ path: `blobs/sha256/${sha256(img.manifest).slice(7)}`, data: tampered }],
    });
    const o = await open(archive);
    await assertRejects(
      inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT),
      IntegrityError,
      new RegExp(sha256(img.manifest)),
      new RegExp(sha256(tampered)),
    );
  });

  it('refuses a config whose bytes do not match its digest', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'badconfig' });
    const tampered = Buffer.from(img.config.toString().replace('"linux"', '"LINUX"'));
    assert.equal(tampered.length, img.config.length);
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [img.descriptor()] },
      blobs: [img.layer, img.manifest],
      extra: [{ path: `blobs/sha256/${sha256(img.config).slice(7)}`, data: tampered }],
    });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), IntegrityError, new RegExp(sha256(img.config)));
  });

  it('refuses a blob whose size differs from its descriptor', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'size' });
    const manifestObj = JSON.parse(img.manifest.toString()) as { layers: Array<{ size: number }> };
    const layer0 = manifestObj.layers[0];
    assert.ok(layer0);
    layer0.size += 1;
    const manifest = Buffer.from(JSON.stringify(manifestObj));
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length }] },
      blobs: [img.config, img.layer, manifest],
    });
    const o = await open(archive);
    await assertRejects(
      inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT),
      InputError,
      new RegExp(sha256(img.layer)),
      new RegExp(`${img.layer.length} bytes`),
    );
  });

  it('refuses index.json given as a symbolic link', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'link' });
    const archive = makeTar([
      blobEntry(img.config),
      blobEntry(img.layer),
      blobEntry(img.manifest),
      { path: 'real-index.json', data: Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [img.descriptor()] })) },
      { path: 'index.json', type: 'SymbolicLink', linkpath: 'real-index.json' },
      { path: 'oci-layout', data: LAYOUT },
    ]);
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /index\.json/, /link/);
  });

  it('refuses a digest algorithm other than sha256', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'sha512' });
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: `sha512:${'ab'.repeat(64)}`, size: img.manifest.length }] },
      blobs: [img.config, img.layer, img.manifest],
    });
    const o = await open(archive);
    await assertRejects(inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT), InputError, /sha512/);
  });
});

describe('inspectContainerArchive: layout variants', () => {
  it('reads an archive with "./" prefixes and directory entries', async () => {
    const img = image({ arch: 'amd64', os: 'linux', seed: 'dot' });
    const archive = layoutTar({ index: { schemaVersion: 2, manifests: [img.descriptor()] }, blobs: [img.config, img.layer, img.manifest], prefix: './' });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.equal(result.manifest.digest, sha256(img.manifest));
    assert.deepEqual(slice(archive, (result.blobs[1] as { member: TarMember }).member), img.layer);
  });

  it('lists a blob shared by config and layer once', async () => {
    const shared = Buffer.from('{"architecture":"amd64","os":"linux"}');
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(shared), size: shared.length },
        layers: [
          { mediaType: LAYER, digest: sha256(shared), size: shared.length },
          { mediaType: LAYER, digest: sha256(shared), size: shared.length },
        ],
      }),
    );
    const archive = layoutTar({
      index: { schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length }] },
      blobs: [shared, manifest],
    });
    const o = await open(archive);
    const result = await inspectContainerArchive(o.members, o.read, { refName: 'container-amd64', arch: 'amd64' }, WHAT);
    assert.deepEqual(
      result.blobs.map((b) => b.digest),
      [sha256(shared)],
    );
  });
});
