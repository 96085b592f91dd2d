/**
 * The pure parts of `pull`: which layers of an artifact manifest are files of the upload (PXE members are not),
 * which index entry names a build, what happens to a file already in the output directory, and the metadata
 * document, which parseMetadata must read back as the same build.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { buildArtifactManifest, type ArtifactLayer } from '../../functions/gardenlinux/artifact-manifest';
import { mediaTypeForFile } from '../../functions/gardenlinux/media-types';
import { parseMetadata, type BuildMetadata } from '../../functions/gardenlinux/metadata';
import { parseBaseName } from '../../functions/gardenlinux/naming';
import { findBuildEntry, outputAction, planPull, renderMetadata, type PullPlan } from '../../functions/gardenlinux/pulled-build';
import type { ImageIndex } from '../../functions/oci/descriptor';
import { InputError } from '../../functions/util/errors';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const md5 = (b: Buffer | string): string => createHash('md5').update(b).digest('hex');

/** The artifact manifest the publisher makes of a sample build (members of a PXE bundle included). */
function manifestOf(b: SampleBuild): Buffer {
  const layers: ArtifactLayer[] = [...b.files, ...(b.pxeMembers ?? [])].map((f) => ({
    title: f.name,
    mediaType: mediaTypeForFile(f.name) ?? 'application/octet-stream',
    digest: sha256(f.data),
    size: f.data.length,
  }));
  return buildArtifactManifest(parseBaseName(b.base), b.features.join(','), layers).bytes;
}

function throwsInput(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof InputError && pattern.test(err.message));
}

function parsed(text: string, base: string): BuildMetadata {
  const doc = parseMetadata(text, base);
  assert.equal(doc.kind, 'build');
  return (doc as { build: BuildMetadata }).build;
}

/** The plan and facts of a sample build, as a pull of it has them. */
function pulled(b: SampleBuild): { plan: PullPlan; text: string } {
  const plan = planPull(manifestOf(b), parseBaseName(b.base), 'test');
  const byName = new Map(b.files.map((f) => [f.name, f.data]));
  const text = renderMetadata(plan, {
    md5: new Map(plan.files.map((f) => [f.name, md5(byName.get(f.name) as Buffer)])),
    release: byName.get(`${b.base}.release`)?.toString('utf8') as string,
    ...(byName.has(`${b.base}.requirements`) ? { requirements: (byName.get(`${b.base}.requirements`) as Buffer).toString('utf8') } : {}),
    source: 'registry.example/gl@sha256:0',
  });
  return { plan, text };
}

describe('planPull: the files of the upload in an artifact manifest', () => {
  it('takes every layer of a plain build, by name', () => {
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' });
    const plan = planPull(manifestOf(b), parseBaseName(b.base), 'test');
    assert.deepEqual(
      plan.files.map((f) => [f.name, f.digest, f.size]),
      b.files.map((f) => [f.name, sha256(f.data), f.data.length]),
    );
    assert.deepEqual(plan.bundleMembers, []);
    assert.equal(plan.featureSet, b.features.join(','));
  });

  it('takes the PXE bundle and leaves out the layers unpacked from it', () => {
    const b = sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true });
    const plan = planPull(manifestOf(b), parseBaseName(b.base), 'test');
    assert.deepEqual(plan.files.map((f) => f.name), b.files.map((f) => f.name));
    assert.ok(plan.files.some((f) => f.name === `${b.base}.pxe.tar.gz` && f.mediaType === 'application/io.gardenlinux.image.archive.format.pxe.tar.gz'));
    assert.deepEqual(plan.bundleMembers, ['cmdline', 'initrd', 'root.squashfs', 'vmlinuz']);
  });

  it('keeps a file not named after the build when there is no PXE bundle (the metadata may name any plain file)', () => {
    const name = parseBaseName('kvm-amd64-1877.3-75df9f40');
    const bytes = buildArtifactManifest(name, 'kvm', [
      { title: 'README', mediaType: 'application/octet-stream', digest: sha256('r'), size: 1 },
      { title: `${name.base}.raw`, mediaType: 'application/io.gardenlinux.image.archive.format.raw', digest: sha256('x'), size: 1 },
    ]).bytes;
    assert.deepEqual(planPull(bytes, name, 'test').files.map((f) => f.name), ['README', `${name.base}.raw`]);
  });

  it("refuses another build's manifest, another architecture, and manifests that name no files", () => {
    const b = sampleBuild({ flavor: 'container', arch: 'amd64', lean: true });
    throwsInput(() => planPull(manifestOf(b), parseBaseName('container-amd64-1877.3-75df9f41'), 'm'), /m is the artifact manifest of container-amd64-1877\.3-75df9f40, not of container-amd64-1877\.3-75df9f41/);
    const m = JSON.parse(manifestOf(b).toString()) as { annotations: Record<string, string>; layers: unknown[]; config: { annotations: Record<string, string> } };
    throwsInput(() => planPull(Buffer.from(JSON.stringify({ ...m, annotations: { ...m.annotations, architecture: 'arm64' } })), parseBaseName(b.base), 'm'), /for arm64/);
    throwsInput(() => planPull(Buffer.from(JSON.stringify({ ...m, annotations: {}, config: { ...m.config, annotations: {} } })), parseBaseName(b.base), 'm'), /no Garden Linux artifact manifest/);
    throwsInput(() => planPull(Buffer.from(JSON.stringify({ ...m, layers: [] })), parseBaseName(b.base), 'm'), /names no file/);
    throwsInput(() => planPull(Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'), parseBaseName(b.base), 'm'), /not valid|not an image manifest/);
  });

  it('refuses layer titles that are no plain file names, twice the same title, and digests other than sha256', () => {
    const b = sampleBuild({ flavor: 'container', arch: 'amd64', lean: true });
    const m = JSON.parse(manifestOf(b).toString()) as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
    const withLayer = (patch: (l: { digest: string; annotations?: Record<string, string> }) => void): Buffer => {
      const copy = structuredClone(m);
      patch(copy.layers[0] as { digest: string; annotations?: Record<string, string> });
      return Buffer.from(JSON.stringify(copy));
    };
    for (const title of ['../escape', 'a/b', '.', '..', '', 'x\u0000y', 'x'.repeat(256)]) {
      throwsInput(() => planPull(withLayer((l) => ((l.annotations as Record<string, string>)['org.opencontainers.image.title'] = title)), parseBaseName(b.base), 'm'), /not a plain file name/);
    }
    throwsInput(() => planPull(withLayer((l) => delete l.annotations), parseBaseName(b.base), 'm'), /has no title/);
    throwsInput(() => planPull(withLayer((l) => (l.digest = `sha512:${'a'.repeat(128)}`)), parseBaseName(b.base), 'm'), /not a sha256 digest/);
    const twice = structuredClone(m);
    twice.layers.push(twice.layers[0] as never);
    throwsInput(() => planPull(Buffer.from(JSON.stringify(twice)), parseBaseName(b.base), 'm'), /two layers are titled/);
  });
});

describe('findBuildEntry: the version index entry of a build', () => {
  const name = parseBaseName('container-amd64-1877.3-75df9f40');
  const entry = (cname: string | undefined, arch: string, mediaType = 'application/vnd.oci.image.manifest.v1+json', digest = 'sha256:' + 'a'.repeat(64)) => ({
    mediaType,
    digest,
    size: 1,
    ...(cname ? { annotations: { cname, architecture: arch, feature_set: 'x' } } : {}),
    platform: { architecture: arch, os: cname ? 'gardenlinux' : 'linux' },
  });
  it('takes the first entry naming the base name for its architecture; container entries never match', () => {
    const first = entry(name.base, 'amd64', undefined, 'sha256:' + 'b'.repeat(64));
    const index: ImageIndex = {
      schemaVersion: 2,
      manifests: [entry(undefined, 'amd64'), entry('container-amd64-1877.3-75df9f4', 'amd64'), entry(name.base, 'arm64'), entry(name.base, 'amd64', 'application/vnd.oci.image.index.v1+json'), first, entry(name.base, 'amd64')],
    };
    assert.equal(findBuildEntry(index, name), first);
    assert.equal(findBuildEntry({ schemaVersion: 2, manifests: [entry(undefined, 'amd64')] }, name), undefined);
  });
});

describe('outputAction: a file already in the output directory', () => {
  const expected = { digest: sha256('x'), size: 1 };
  it('writes where nothing is, keeps the same bytes, refuses other bytes unless forced, never writes over what is no file', () => {
    assert.equal(outputAction({ kind: 'absent' }, expected, false), 'write');
    assert.equal(outputAction({ kind: 'file', size: 1, digest: sha256('x') }, expected, false), 'keep');
    assert.equal(outputAction({ kind: 'file', size: 1, digest: sha256('x') }, expected, true), 'keep');
    assert.equal(outputAction({ kind: 'file', size: 1, digest: sha256('y') }, expected, false), 'conflict');
    assert.equal(outputAction({ kind: 'file', size: 2 }, expected, false), 'conflict');
    assert.equal(outputAction({ kind: 'file', size: 2 }, expected, true), 'replace');
    assert.equal(outputAction({ kind: 'other', what: 'a directory' }, expected, true), 'conflict');
  });
});

describe('renderMetadata: the metadata document of a pulled build', () => {
  for (const spec of [
    { flavor: 'container', arch: 'amd64' as const },
    { flavor: 'metal_pxe', arch: 'arm64' as const, pxe: true },
    { flavor: 'aws-gardener_prod', arch: 'amd64' as const, legacyMetadata: true },
    { flavor: 'container', arch: 'arm64' as const, version: '2150.0.0', commit: 'local', lean: true },
    { flavor: 'kvm-gardener_prod', arch: 'amd64' as const, version: '1877.10', commit: '12345678' },
  ]) {
    it(`reads back as the same build: ${JSON.stringify(spec)}`, () => {
      const b = sampleBuild(spec);
      const { text } = pulled(b);
      const original = parsed(b.metadata, b.base);
      const back = parsed(text, b.base);
      assert.deepEqual(back.name, original.name);
      assert.equal(back.platform, original.platform);
      assert.deepEqual(back.modifiers, original.modifiers);
      assert.equal(back.commitLong, original.commitLong);
      assert.deepEqual(back.files, [...original.files].sort((x, y) => (x.name < y.name ? -1 : 1)));
      // Not in the registry.
      assert.equal(back.buildTime, undefined);
      assert.equal(back.publishingGroup, undefined);
    });
  }

  it('carries the real sha256 of each file, the requirements as booleans, nulls for what the registry lacks; same input, same bytes', () => {
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' });
    const { text } = pulled(b);
    assert.equal(text, pulled(b).text);
    assert.match(text, /^# The metadata document of aws-gardener_prod-amd64-1877\.3-75df9f40, made by gl-oci-publish pull from registry\.example\/gl@sha256:0\./);
    const raw = b.files.find((f) => f.name.endsWith('.raw'));
    assert.ok(raw);
    assert.ok(text.includes(`  sha256sum: ${sha256(raw.data).slice(7)}\n`));
    for (const line of ['build_timestamp: null', 's3_bucket: null', 'require_uefi: false', 'secureboot: false', 'tpm2: false', "version: '1877.3'", 'gardenlinux_epoch: 1877', `s3_key: meta/singles/${b.base}`]) {
      assert.ok(text.includes(`\n${line}\n`), line);
    }
  });

  it('quotes what a YAML 1.1 reader would take for a number or a boolean, and reads md5s and versions back as written', () => {
    const name = parseBaseName('kvm-amd64-1877.10-12345678');
    const plan: PullPlan = {
      name,
      featureSet: 'on,base,1e5',
      files: [{ name: `${name.base}.raw`, digest: sha256('x'), size: 1, mediaType: 'application/io.gardenlinux.image.archive.format.raw' }],
      bundleMembers: [],
    };
    const text = renderMetadata(plan, { md5: new Map([[`${name.base}.raw`, '13225259095126792579184336680324']]), release: 'GARDENLINUX_COMMIT_ID_LONG=1234567800000000000000000000000000000000\n', source: 's' });
    const back = parsed(text, name.base);
    assert.equal(back.name.version, '1877.10');
    assert.deepEqual(back.modifiers, ['on', 'base', '1e5']);
    assert.equal(back.files[0]?.md5, '13225259095126792579184336680324');
    assert.equal(back.commitLong, '1234567800000000000000000000000000000000');
    // Without a .release, the platform is the flavor's first part, and no long commit is claimed.
    assert.equal(back.platform, 'kvm');
    assert.equal(parsed(renderMetadata(plan, { md5: new Map(), source: 's' }), name.base).commitLong, undefined);
  });
});
