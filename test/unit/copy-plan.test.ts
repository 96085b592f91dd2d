/**
 * The planning part of `copy` (copy-plan.ts), without I/O: what a consumer of a version needs, and the order that
 * never lets a reader of the destination meet a reference to something missing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { phases, planCopy, referencesOf, wantedTags, type ManifestStep, type RepositorySnapshot } from '../../functions/gardenlinux/copy-plan';
import { parseAliasTemplates } from '../../functions/gardenlinux/release-aliases';
import { sha256Digest } from '../../functions/oci/digest';
import { IndexSchema, parseJson } from '../../functions/oci/descriptor';
import { OCI_INDEX, OCI_MANIFEST } from '../../functions/oci/media-types';
import type { FetchedManifest } from '../../functions/target/target';
import { InputError } from '../../functions/util/errors';

const V = '1877.3';
const blob = (name: string, size = 10) => ({ mediaType: 'application/octet-stream', digest: sha256Digest(name), size });
const manifest = (json: unknown, mediaType: string): FetchedManifest => {
  const bytes = Buffer.from(JSON.stringify(json));
  return { bytes, mediaType, digest: sha256Digest(bytes) };
};
const image = (name: string, layers: string[]) =>
  manifest({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: blob(`${name}:config`, 2), layers: layers.map((l) => blob(l)) }, OCI_MANIFEST);
const desc = (m: FetchedManifest, extra: Record<string, unknown> = {}) => ({ mediaType: m.mediaType, digest: m.digest, size: m.bytes.length, ...extra });
const index = (entries: unknown[]) => manifest({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }, OCI_INDEX);

// The main repository: a multi-arch container image (an image index of two images sharing a layer), an artifact
// manifest of a PXE build, both signed, and the version index naming the image index and the artifact manifest.
const amd64 = image('amd64', ['shared-layer', 'amd64-layer']);
const arm64 = image('arm64', ['shared-layer', 'arm64-layer']);
const images = index([desc(amd64, { platform: { architecture: 'amd64', os: 'linux' } }), desc(arm64, { platform: { architecture: 'arm64', os: 'linux' } })]);
const pxeBase = `metal_pxe-amd64-${V}-75df9f40`;
const pxe = image('pxe', ['vmlinuz', 'initrd', 'shared-layer']);
const versionIndex = index([
  desc(images, { platform: { architecture: 'amd64', os: 'linux' } }),
  desc(pxe, { annotations: { cname: pxeBase, architecture: 'amd64', feature_set: 'base,_pxe' }, platform: { architecture: 'amd64', os: 'gardenlinux', 'os.version': V } }),
]);
const sigOf = (signed: string) => image(`sig:${signed}`, [`payload:${signed}`]);
const otherIndex = index([]);

// A container sub-repository with one image.
const sub = image('sub', ['sub-layer']);
const subIndex = index([desc(sub, { platform: { architecture: 'arm64', os: 'linux' } })]);

function mainSnapshot(tags: RepositorySnapshot['tags']): RepositorySnapshot {
  return {
    repository: '',
    version: V,
    index: versionIndex,
    manifests: new Map([images, amd64, arm64, pxe].map((m) => [m.digest, m])),
    signatures: new Map([pxe.digest, images.digest].map((d) => [d, sigOf(d)])),
    tags,
  };
}
const subSnapshot: RepositorySnapshot = {
  repository: 'container-python-dev',
  version: V,
  index: subIndex,
  manifests: new Map([[sub.digest, sub]]),
  signatures: new Map(),
  tags: [{ wanted: { tag: `arm64-${V}`, kind: 'container', arch: 'arm64' }, digest: sub.digest }],
};

describe('copy: what a manifest names', () => {
  it('an index names its entries, an image manifest its config and layers', () => {
    assert.deepEqual(referencesOf(versionIndex, 'index').manifests.map((d) => d.digest), [images.digest, pxe.digest]);
    assert.deepEqual(referencesOf(versionIndex, 'index').blobs, []);
    const r = referencesOf(pxe, 'pxe');
    assert.deepEqual(r.manifests, []);
    assert.deepEqual(r.blobs.map((b) => b.digest), [blob('pxe:config').digest, blob('vmlinuz').digest, blob('initrd').digest, blob('shared-layer').digest]);
  });

  it('refuses what is no manifest, naming it', () => {
    assert.throws(() => referencesOf({ bytes: Buffer.from('not json') }, 'x:1877.3'), (e: unknown) => e instanceof InputError && /x:1877\.3 is not a JSON manifest/.test(e.message));
    assert.throws(() => referencesOf({ bytes: Buffer.from('{"layers":[{"digest":"nope"}]}') }, 'm'), /m: layers\[0\] is not a descriptor/);
  });
});

describe('copy: the tags consumers use', () => {
  const parsed = parseJson(IndexSchema, versionIndex.bytes, 'index');

  it("each artifact manifest's <version>-<cname>-<arch>, and <arch>-<version> for each architecture with an image", () => {
    assert.deepEqual(wantedTags(V, parsed, []), [
      { tag: `${V}-${pxeBase}-amd64`, kind: 'artifact' },
      { tag: `amd64-${V}`, kind: 'container', arch: 'amd64' },
    ]);
  });

  it('with the alias templates: each alias of the version, and its <arch>-<alias>; a template that does not apply is left out', () => {
    const tags = wantedTags(V, parsed, parseAliasTemplates('latest,{major},{major}.{minor}.{patch}'));
    assert.deepEqual(
      tags.filter((t) => t.kind === 'alias' || t.kind === 'arch-alias').map((t) => t.tag),
      ['latest', 'amd64-latest', '1877', 'amd64-1877'],
    );
  });
});

describe('copy: the plan', () => {
  const tags: RepositorySnapshot['tags'] = [
    { wanted: { tag: `${V}-${pxeBase}-amd64`, kind: 'artifact' }, digest: pxe.digest },
    { wanted: { tag: `amd64-${V}`, kind: 'container', arch: 'amd64' }, digest: images.digest },
    { wanted: { tag: 'latest', kind: 'alias' }, digest: versionIndex.digest },
    { wanted: { tag: 'amd64-latest', kind: 'arch-alias', arch: 'amd64' }, digest: images.digest },
    { wanted: { tag: '1877', kind: 'alias' }, digest: otherIndex.digest },
    { wanted: { tag: 'amd64-1877', kind: 'arch-alias', arch: 'amd64' }, digest: amd64.digest },
    { wanted: { tag: '1877.3.0', kind: 'alias' }, digest: undefined },
  ];
  const plan = planCopy([mainSnapshot(tags), subSnapshot]);
  const refs = (steps: readonly ManifestStep[]) => steps.map((s) => `${s.repository}:${s.reference}`);

  it('every blob once per repository, the signatures’ too, with their bytes counted', () => {
    const main = plan.blobs.filter((b) => b.repository === '').map((b) => b.descriptor.digest);
    const expected = [
      ...['amd64:config', 'shared-layer', 'amd64-layer', 'arm64:config', 'arm64-layer', 'pxe:config', 'vmlinuz', 'initrd'],
      ...[pxe.digest, images.digest].flatMap((d) => [`sig:${d}:config`, `payload:${d}`]),
    ].map((n) => sha256Digest(n));
    assert.deepEqual([...main].sort(), [...expected].sort());
    assert.equal(new Set(main).size, main.length, 'the shared layer once');
    assert.deepEqual(plan.blobs.filter((b) => b.repository !== '').map((b) => b.descriptor.digest), [sha256Digest('sub:config'), sha256Digest('sub-layer')]);
    assert.equal(plan.bytes, plan.blobs.reduce((n, b) => n + b.descriptor.size, 0));
  });

  it('manifests by digest in waves: the images before the image index naming them', () => {
    assert.equal(plan.manifests.length, 2);
    assert.deepEqual(new Set(plan.manifests[0]?.map((s) => s.reference)), new Set([amd64.digest, arm64.digest, pxe.digest, sub.digest]));
    assert.deepEqual(plan.manifests[1]?.map((s) => s.reference), [images.digest]);
  });

  it('the version indexes after the signatures, the main repository last; tags, then <arch>-<alias> before its alias', () => {
    assert.deepEqual(
      phases(plan).map((p) => p.phase),
      ['blobs', 'manifests', 'manifests', 'signatures', 'indexes', 'tags', 'aliases'],
    );
    assert.deepEqual(refs(plan.indexes), [`container-python-dev:${V}`, `:${V}`]);
    assert.deepEqual(refs(plan.signatures).sort(), [pxe.digest, images.digest].map((d) => `:${d.replace(':', '-')}.sig`).sort());
    assert.deepEqual(refs(plan.tags), [`container-python-dev:arm64-${V}`, `:${V}-${pxeBase}-amd64`, `:amd64-${V}`]);
    assert.deepEqual(refs(plan.aliases), [':amd64-latest', ':latest']);
    assert.equal(plan.aliases[1]?.manifest, versionIndex, 'the alias gets the exact bytes of the index');
  });

  it("leaves out aliases that hold another version, and says why; an alias missing at the source is no problem", () => {
    assert.deepEqual(
      plan.left.map((l) => [l.tag, l.reason.replace(/sha256:[0-9a-f]{12}…/, 'D')]),
      [
        ['1877', `holds D, not the index of ${V}`],
        ['amd64-1877', `names D, not an image of ${V}`],
      ],
    );
  });

  it('leaves out an artifact tag that names another manifest, and one the source lacks', () => {
    const p = planCopy([
      mainSnapshot([
        { wanted: { tag: `${V}-${pxeBase}-amd64`, kind: 'artifact' }, digest: sha256Digest('elsewhere') },
        { wanted: { tag: `amd64-${V}`, kind: 'container', arch: 'amd64' }, digest: undefined },
      ]),
    ]);
    assert.deepEqual(p.tags, []);
    assert.deepEqual(p.left.map((l) => [l.kind, l.reason.replace(/sha256:[0-9a-f]{12}…/, 'D')]), [
      ['artifact', `names D, which ${V} does not name`],
      ['container', 'not at the source'],
    ]);
  });

  it('run in its order, every step finds what it names already there (children before parents)', () => {
    const there = new Set<string>();
    const key = (repo: string, d: string) => `${repo}@${d}`;
    for (const { steps } of phases(plan)) {
      const wrote: string[] = [];
      for (const step of steps) {
        if ('descriptor' in step) {
          wrote.push(key(step.repository, step.descriptor.digest));
          continue;
        }
        const r = referencesOf(step.manifest, step.reference);
        for (const d of [...r.blobs, ...r.manifests]) assert.ok(there.has(key(step.repository, d.digest)), `${step.repository}:${step.reference} names ${d.digest} before it is there`);
        wrote.push(key(step.repository, step.manifest.digest));
      }
      // Steps of one phase run at once: they become visible together, after the phase.
      for (const w of wrote) there.add(w);
    }
  });

  it('refuses an index that names itself through its entries', () => {
    const a = index([{ mediaType: OCI_INDEX, digest: sha256Digest('b'), size: 1 }]);
    const looping: RepositorySnapshot = {
      repository: '',
      version: V,
      index: index([desc(a)]),
      manifests: new Map([
        [a.digest, a],
        [sha256Digest('b'), { bytes: Buffer.from(JSON.stringify({ manifests: [desc(a)] })), mediaType: OCI_INDEX, digest: sha256Digest('b') }],
      ]),
      signatures: new Map(),
      tags: [],
    };
    assert.throws(() => planCopy([looping]), /names itself through its entries/);
  });
});
