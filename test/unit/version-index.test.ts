import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { pythonJson } from '../../functions/oci/python-json';
import { compareBuilds, containerTags, renderVersionIndex, sameIndex, samePlace, type IndexRecord, type RenderedIndex } from '../../functions/gardenlinux/version-index';
import type { Descriptor, ImageIndex } from '../../functions/oci/descriptor';
import { InputError } from '../../functions/util/errors';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** A fake digest made of one repeated hex character. */
function d(c: string): string {
  return `sha256:${c.repeat(64)}`;
}

function containerEntry(arch: string, digest: string, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType: OCI_MANIFEST, digest, size: 406, platform: { architecture: arch, os: 'linux' }, ...extra };
}

function glEntry(base: string, arch: string, digest: string, featureSet = 'base', version = '1877.3'): Descriptor {
  return {
    mediaType: OCI_MANIFEST,
    digest,
    size: 3667,
    annotations: { cname: base, architecture: arch, feature_set: featureSet },
    platform: { architecture: arch, os: 'gardenlinux', 'os.version': version },
  };
}

function attestation(digest: string, refDigest: string): Descriptor {
  return {
    mediaType: OCI_MANIFEST,
    digest,
    size: 839,
    annotations: { 'vnd.docker.reference.digest': refDigest, 'vnd.docker.reference.type': 'attestation-manifest' },
    platform: { architecture: 'unknown', os: 'unknown' },
  };
}

function record(base: string, flavorArch: string, buildTime: string, parts: { container?: Descriptor; gardenlinux?: Descriptor }): IndexRecord {
  return { base, flavorArch, buildTime, ...parts };
}

/** A container build's record: its container entry and its Garden Linux entry. */
function containerRecord(arch: 'amd64' | 'arm64', commit: string, buildTime: string, c: string, g: string): IndexRecord {
  const base = `container-${arch}-1877.3-${commit}`;
  return record(base, `container-${arch}`, buildTime, {
    container: containerEntry(arch, d(c)),
    gardenlinux: glEntry(base, arch, d(g), '_slim,base,container'),
  });
}

/** A non-container build's record: only its Garden Linux entry. */
function glRecord(flavor: string, arch: 'amd64' | 'arm64', commit: string, buildTime: string, g: string): IndexRecord {
  const base = `${flavor}-${arch}-1877.3-${commit}`;
  return record(base, `${flavor}-${arch}`, buildTime, { gardenlinux: glEntry(base, arch, d(g)) });
}

function render(records: readonly IndexRecord[], current?: ImageIndex): RenderedIndex {
  const r = renderVersionIndex(records, current);
  assert.ok(r !== undefined, 'expected an index');
  return r;
}

function digests(r: RenderedIndex): string[] {
  return r.index.manifests.map((m) => m.digest);
}

function cnames(r: RenderedIndex): Array<string | undefined> {
  return r.index.manifests.map((m) => m.annotations?.cname);
}

const T1 = '2026-02-10T10:00:00Z';
const T2 = '2026-02-10T11:00:00Z';
const T3 = '2026-02-10T12:00:00Z';

describe('renderVersionIndex: the spec §5 layout', () => {
  it('returns undefined when there are no records and no current index', () => {
    assert.equal(renderVersionIndex([], undefined), undefined);
  });

  it('writes the exact spec bytes: container entries by arch, then Garden Linux entries', () => {
    const amd = containerRecord('amd64', '75df9f40', T1, '1', '3');
    const arm = containerRecord('arm64', '75df9f40', T1, '2', '4');
    const r = render([arm, amd], undefined);
    // Python's json.dumps form (", " and ": "), as gl-oci writes and digests it.
    const expected =
      '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [' +
      `{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "${d('1')}", "size": 406, "platform": {"architecture": "amd64", "os": "linux"}}, ` +
      `{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "${d('2')}", "size": 406, "platform": {"architecture": "arm64", "os": "linux"}}, ` +
      `{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "${d('3')}", "size": 3667, ` +
      '"annotations": {"cname": "container-amd64-1877.3-75df9f40", "architecture": "amd64", "feature_set": "_slim,base,container"}, ' +
      '"platform": {"architecture": "amd64", "os": "gardenlinux", "os.version": "1877.3"}}, ' +
      `{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "${d('4')}", "size": 3667, ` +
      '"annotations": {"cname": "container-arm64-1877.3-75df9f40", "architecture": "arm64", "feature_set": "_slim,base,container"}, ' +
      '"platform": {"architecture": "arm64", "os": "gardenlinux", "os.version": "1877.3"}}]}';
    assert.equal(r.bytes.toString('utf8'), expected);
    assert.equal(r.digest, sha256(expected));
    assert.deepEqual(r.index, JSON.parse(expected));
  });

  it('puts container entries before every Garden Linux entry whatever the record order', () => {
    const records = [glRecord('aws', 'amd64', '11111111', T1, 'a'), glRecord('metal', 'arm64', '22222222', T1, 'b'), containerRecord('arm64', '33333333', T1, 'c', 'd')];
    const r = render(records, undefined);
    assert.deepEqual(digests(r)[0], d('c'));
    assert.equal(r.index.manifests[0]?.annotations, undefined);
    assert.deepEqual(new Set(digests(r).slice(1)), new Set([d('a'), d('b'), d('d')]));
  });

  it('writes the OCI index media type', () => {
    assert.equal(render([glRecord('aws', 'amd64', '11111111', T1, 'a')]).index.mediaType, OCI_INDEX);
    assert.equal(render([glRecord('aws', 'amd64', '11111111', T1, 'a')]).index.schemaVersion, 2);
  });

  it('gives the same bytes for the same records in any order', () => {
    const records = [
      containerRecord('amd64', '11111111', T1, '1', '2'),
      containerRecord('arm64', '11111111', T1, '3', '4'),
      glRecord('aws', 'amd64', '11111111', T1, '5'),
      glRecord('metal', 'amd64', '11111111', T2, '6'),
      glRecord('metal', 'amd64', '22222222', T3, '7'),
    ];
    const a = render(records);
    const b = render([...records].reverse());
    const c = render([records[3]!, records[0]!, records[4]!, records[2]!, records[1]!]);
    assert.ok(a.bytes.equals(b.bytes));
    assert.ok(a.bytes.equals(c.bytes));
    assert.equal(a.digest, c.digest);
  });
});

describe('renderVersionIndex: several builds of one flavor-arch', () => {
  it('keeps one container entry per platform: the newest build wins, in either record order', () => {
    const old = containerRecord('amd64', '11111111', T1, '1', 'a');
    const newer = containerRecord('amd64', '22222222', T2, '2', 'b');
    for (const records of [[old, newer], [newer, old]]) {
      const r = render(records);
      const containers = r.index.manifests.filter((m) => m.platform?.os === 'linux');
      assert.deepEqual(containers, [containerEntry('amd64', d('2'))]);
    }
  });

  it('keeps every build’s Garden Linux entry, newest first', () => {
    const old = containerRecord('amd64', '11111111', T1, '1', 'a');
    const newer = containerRecord('amd64', '22222222', T2, '2', 'b');
    for (const records of [[old, newer], [newer, old]]) {
      assert.deepEqual(cnames(render(records)), [undefined, 'container-amd64-1877.3-22222222', 'container-amd64-1877.3-11111111']);
    }
  });

  it('groups Garden Linux entries by flavor-arch, newest first within a group', () => {
    const records = [
      glRecord('metal', 'amd64', '11111111', T1, '1'),
      glRecord('aws', 'amd64', '22222222', T2, '2'),
      glRecord('metal', 'amd64', '33333333', T3, '3'),
      glRecord('metal', 'arm64', '44444444', T1, '4'),
      glRecord('aws', 'amd64', '55555555', T1, '5'),
      glRecord('metal', 'amd64', '66666666', T2, '6'),
    ];
    const order = cnames(render(records));
    assert.equal(order.length, 6);
    // each flavor-arch is contiguous ...
    const groups = order.map((c) => c?.replace(/-1877\.3-[0-9a-f]{8}$/, ''));
    const runs = groups.filter((g, i) => i === 0 || groups[i - 1] !== g);
    assert.equal(new Set(runs).size, runs.length, `groups are split: ${groups.join(' ')}`);
    // ... and newest first inside it
    const within = (fa: string) => order.filter((c) => c?.startsWith(`${fa}-1877.3-`));
    assert.deepEqual(within('metal-amd64'), ['metal-amd64-1877.3-33333333', 'metal-amd64-1877.3-66666666', 'metal-amd64-1877.3-11111111']);
    assert.deepEqual(within('aws-amd64'), ['aws-amd64-1877.3-22222222', 'aws-amd64-1877.3-55555555']);
    assert.deepEqual(within('metal-arm64'), ['metal-arm64-1877.3-44444444']);
  });

  it('compares build times as instants, not as strings', () => {
    // 12:00+01:00 is 11:00Z, earlier than 11:30Z
    const a = glRecord('metal', 'amd64', '11111111', '2026-02-10T12:00:00+01:00', '1');
    const b = glRecord('metal', 'amd64', '22222222', '2026-02-10T11:30:00Z', '2');
    assert.deepEqual(cnames(render([a, b])), ['metal-amd64-1877.3-22222222', 'metal-amd64-1877.3-11111111']);
  });
});

describe('renderVersionIndex: merging with the current index', () => {
  it('replaces a Garden Linux entry with the same cname', () => {
    const current: ImageIndex = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [glEntry('aws-amd64-1877.3-11111111', 'amd64', d('0')), glEntry('kvm-amd64-1877.3-11111111', 'amd64', d('9'))],
    };
    const r = render([glRecord('aws', 'amd64', '11111111', T1, '1')], current);
    assert.deepEqual(r.index.manifests, [glEntry('aws-amd64-1877.3-11111111', 'amd64', d('1')), glEntry('kvm-amd64-1877.3-11111111', 'amd64', d('9'))]);
  });

  it('replaces a container entry of the same os/architecture', () => {
    const current: ImageIndex = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [containerEntry('amd64', d('0')), containerEntry('arm64', d('8'))],
    };
    const r = render([containerRecord('amd64', '11111111', T1, '1', '2')], current);
    assert.deepEqual(r.index.manifests, [
      containerEntry('amd64', d('1')),
      containerEntry('arm64', d('8')),
      glEntry('container-amd64-1877.3-11111111', 'amd64', d('2'), '_slim,base,container'),
    ]);
  });

  it('replaces a container entry of the same os/architecture even when only one of them names a variant', () => {
    const current: ImageIndex = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: d('0'), size: 406, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }],
    };
    const r = render([containerRecord('arm64', '11111111', T1, '1', '2')], current);
    const containers = r.index.manifests.filter((m) => m.platform?.os === 'linux');
    assert.deepEqual(containers, [containerEntry('arm64', d('1'))], 'spec §5: one container entry per os/architecture');
  });

  it('keeps container entries of platforms no record covers, sorted in with the recorded ones', () => {
    const foreignArm = containerEntry('arm64', d('8'), { annotations: { 'org.opencontainers.image.ref.name': 'container-arm64' } });
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [foreignArm] };
    const r = render([containerRecord('amd64', '11111111', T1, '1', '2')], current);
    assert.deepEqual(r.index.manifests.slice(0, 2), [containerEntry('amd64', d('1')), foreignArm]);
    assert.equal(r.index.manifests.length, 3);
  });

  it("keeps another tool's Garden Linux entries, each in its flavor-arch group (issue 10)", () => {
    const foreignB = glEntry('kvm-arm64-1877.3-99999999', 'arm64', d('b'));
    const foreignA = glEntry('azure-amd64-1877.3-99999999', 'amd64', d('a'));
    const unnamed = glEntry('not a base name', 'amd64', d('c'));
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [foreignB, unnamed, foreignA] };
    const r = render([glRecord('metal', 'amd64', '11111111', T1, '1'), glRecord('aws', 'arm64', '11111111', T1, '2')], current);
    // aws-arm64, azure-amd64, kvm-arm64, metal-amd64; then an entry whose cname is not a base name.
    assert.deepEqual(digests(r), [d('2'), d('a'), d('b'), d('1'), d('c')]);
  });

  it("orders a flavor-arch by build time across the records and another tool's entries whose build time is known", () => {
    const older = glRecord('aws', 'amd64', '11111111', '2026-02-10T10:00:00Z', '1');
    const newer = glRecord('aws', 'amd64', '22222222', '2026-02-10T12:00:00Z', '2');
    const foreign = glEntry('aws-amd64-1877.3-33333333', 'amd64', d('3'));
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [foreign] };
    const at = (t: string) => renderVersionIndex([older, newer], current, { buildTimes: new Map([[foreign.annotations?.cname as string, t]]) }) as RenderedIndex;
    assert.deepEqual(digests(at('2026-02-10T13:00:00Z')), [d('3'), d('2'), d('1')], 'newer than both: first (consumers take it)');
    assert.deepEqual(digests(at('2026-02-10T11:00:00Z')), [d('2'), d('3'), d('1')], 'between them');
    assert.deepEqual(digests(at('2026-02-10T09:00:00Z')), [d('2'), d('1'), d('3')], 'older than both: last');
  });

  it("keeps another tool's entry of unknown build time ahead of the entries it was ahead of", () => {
    const r1 = glRecord('aws', 'amd64', '11111111', '2026-02-10T10:00:00Z', '1');
    const r2 = glRecord('aws', 'amd64', '22222222', '2026-02-10T12:00:00Z', '2');
    const f = glEntry('aws-amd64-1877.3-33333333', 'amd64', d('3'));
    const g = glEntry('aws-amd64-1877.3-44444444', 'amd64', d('4'));
    // Today: f, r1, g. r2 is new: the newest of the records.
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [f, r1.gardenlinux as Descriptor, g] };
    assert.deepEqual(digests(render([r1, r2], current)), [d('2'), d('3'), d('1'), d('4')]);
    // Rendering that again changes nothing.
    const again = render([r1, r2], render([r1, r2], current).index);
    assert.deepEqual(digests(again), [d('2'), d('3'), d('1'), d('4')]);
  });

  it('keeps other entries (attestations, entries without platform) at the end in their original order', () => {
    const att = attestation(d('e'), d('0'));
    const noPlatform: Descriptor = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('f'), size: 10, artifactType: 'application/vnd.example.sbom' };
    const windows = containerEntry('amd64', d('c'), { platform: { architecture: 'amd64', os: 'windows' } });
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [att, containerEntry('amd64', d('0')), noPlatform, windows] };
    const r = render([containerRecord('amd64', '11111111', T1, '1', '2'), glRecord('metal', 'arm64', '11111111', T1, '3')], current);
    assert.deepEqual(r.index.manifests, [
      containerEntry('amd64', d('1')),
      glEntry('container-amd64-1877.3-11111111', 'amd64', d('2'), '_slim,base,container'),
      glEntry('metal-arm64-1877.3-11111111', 'arm64', d('3')),
      att,
      noPlatform,
      windows,
    ]);
  });

  it('keeps unknown fields of foreign entries untouched', () => {
    const foreign = { ...glEntry('kvm-amd64-1877.3-99999999', 'amd64', d('9')), artifactType: 'application/vnd.gardenlinux', data: 'e30=' };
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [foreign] };
    const r = render([glRecord('metal', 'amd64', '11111111', T1, '1')], current);
    // kvm-amd64 before metal-amd64: the groups are in flavor-arch order.
    assert.deepEqual(r.index.manifests[0], foreign);
    assert.match(r.bytes.toString('utf8'), /"artifactType": "application\/vnd.gardenlinux", "data": "e30="/);
  });

  it('collapses exact duplicates of the current index', () => {
    const foreign = glEntry('kvm-amd64-1877.3-99999999', 'amd64', d('9'));
    const att = attestation(d('e'), d('0'));
    const arm = containerEntry('arm64', d('8'));
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [arm, foreign, att, { ...foreign }, arm, { ...att }] };
    const r = render([], current);
    assert.deepEqual(r.index.manifests, [arm, foreign, att]);
  });

  it('keeps the current index’s top-level fields such as annotations', () => {
    const current: ImageIndex = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [glEntry('aws-amd64-1877.3-11111111', 'amd64', d('0'))],
      annotations: { 'org.opencontainers.image.created': '2026-02-10T11:12:42Z' },
      subject: { mediaType: OCI_MANIFEST, digest: d('5'), size: 1 },
    };
    const r = render([glRecord('aws', 'amd64', '11111111', T1, '1')], current);
    assert.deepEqual(r.index.annotations, { 'org.opencontainers.image.created': '2026-02-10T11:12:42Z' });
    assert.deepEqual(r.index.subject, { mediaType: OCI_MANIFEST, digest: d('5'), size: 1 });
    assert.deepEqual(r.index.manifests, [glEntry('aws-amd64-1877.3-11111111', 'amd64', d('1'))]);
    const parsed = JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>;
    assert.deepEqual(parsed.annotations, { 'org.opencontainers.image.created': '2026-02-10T11:12:42Z' });
    assert.equal(r.digest, sha256(r.bytes));
  });

  it('renders a current index unchanged when there are no records', () => {
    const current: ImageIndex = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [containerEntry('amd64', d('1')), glEntry('aws-amd64-1877.3-11111111', 'amd64', d('2')), attestation(d('3'), d('1'))],
    };
    const r = render([], current);
    assert.deepEqual(r.index, current);
  });

  it('renders a current index without entries as an empty OCI index', () => {
    const r = render([], { schemaVersion: 2, manifests: [] });
    assert.equal(r.bytes.toString('utf8'), '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}');
  });

  it('merges into a Docker manifest list, keeping its entries and writing an OCI index', () => {
    const dockerAmd: Descriptor = { mediaType: DOCKER_MANIFEST, digest: d('a'), size: 528, platform: { architecture: 'amd64', os: 'linux' } };
    const dockerArm: Descriptor = { mediaType: DOCKER_MANIFEST, digest: d('b'), size: 528, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } };
    const current: ImageIndex = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [dockerAmd, dockerArm] };
    const r = render([glRecord('metal', 'amd64', '11111111', T1, '1')], current);
    assert.equal(r.index.mediaType, OCI_INDEX);
    assert.deepEqual(r.index.manifests, [dockerAmd, dockerArm, glEntry('metal-amd64-1877.3-11111111', 'amd64', d('1'))]);
    assert.equal(sameIndex(r, stored(current)), false);
  });

  it('replaces a Docker manifest list container entry by os/architecture', () => {
    const dockerAmd: Descriptor = { mediaType: DOCKER_MANIFEST, digest: d('a'), size: 528, platform: { architecture: 'amd64', os: 'linux' } };
    const current: ImageIndex = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [dockerAmd] };
    const r = render([containerRecord('amd64', '11111111', T1, '1', '2')], current);
    assert.deepEqual(digests(r), [d('1'), d('2')]);
  });

  it('rejects an index over 4 MiB', () => {
    const huge = (i: number): Descriptor => ({ ...attestation(d(String(i)), d('0')), annotations: { note: 'x'.repeat(1024 * 1024) } });
    const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [huge(1), huge(2), huge(3), huge(4), huge(5)] };
    assert.throws(
      () => renderVersionIndex([], current),
      (err: unknown) => {
        assert.ok(err instanceof InputError);
        assert.match(err.message, /4 MiB/);
        return true;
      },
    );
  });
});

/** An index as the registry holds it: its digest, of the bytes given or of the form the publisher writes. */
function stored(index: ImageIndex, bytes: Buffer = Buffer.from(pythonJson(index))): { digest: string } {
  return { digest: sha256(bytes) };
}

describe('sameIndex', () => {
  const records = [containerRecord('amd64', '11111111', T1, '1', '2'), glRecord('metal', 'arm64', '11111111', T1, '3')];

  it('is true when the current index is what would be written', () => {
    const r = render(records);
    const current = JSON.parse(r.bytes.toString('utf8')) as ImageIndex;
    assert.equal(sameIndex(render(records, current), stored(current)), true);
  });

  it('is true for an index with foreign entries and annotations that the records do not change', () => {
    const first = render(records, {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [attestation(d('e'), d('1')), glEntry('kvm-amd64-1877.3-99999999', 'amd64', d('9'))],
      annotations: { a: 'b' },
    });
    const current = JSON.parse(first.bytes.toString('utf8')) as ImageIndex;
    assert.equal(sameIndex(render(records, current), stored(current)), true);
  });

  it('is false for the same content in the compact JSON an older release wrote: it is written once more', () => {
    const current = JSON.parse(render(records).bytes.toString('utf8')) as ImageIndex;
    assert.equal(sameIndex(render(records, current), stored(current, Buffer.from(JSON.stringify(current)))), false);
    assert.equal(sameIndex(render(records, current), stored(current)), true);
  });

  it('is false when there is no current index', () => {
    assert.equal(sameIndex(render(records), undefined), false);
  });

  it('is false when an entry would change', () => {
    const current = JSON.parse(render(records).bytes.toString('utf8')) as ImageIndex;
    const changed = [containerRecord('amd64', '11111111', T1, '1', '4'), records[1]!];
    assert.equal(sameIndex(render(changed, current), stored(current)), false);
  });

  it('is false when an entry would be added', () => {
    const current = JSON.parse(render(records).bytes.toString('utf8')) as ImageIndex;
    assert.equal(sameIndex(render([...records, glRecord('aws', 'amd64', '11111111', T1, '5')], current), stored(current)), false);
  });

  it('is false when the entries would be reordered', () => {
    const r = render(records);
    const current = JSON.parse(r.bytes.toString('utf8')) as ImageIndex;
    const reordered: ImageIndex = { ...current, manifests: [...current.manifests].reverse() };
    assert.equal(sameIndex(render(records, reordered), stored(reordered)), false);
  });

  it('is false when duplicates would be collapsed', () => {
    const current = JSON.parse(render(records).bytes.toString('utf8')) as ImageIndex;
    const withDup: ImageIndex = { ...current, manifests: [...current.manifests, current.manifests[2]!] };
    assert.equal(sameIndex(render(records, withDup), stored(withDup)), false);
  });

  it('is false when the current index lacks the media type that would be written', () => {
    const current = JSON.parse(render(records).bytes.toString('utf8')) as ImageIndex;
    const { mediaType: _m, ...withoutType } = current;
    assert.equal(sameIndex(render(records, withoutType), stored(withoutType)), false);
  });
});

describe('compareBuilds', () => {
  const a = glRecord('metal', 'amd64', '11111111', T1, '1');
  const b = glRecord('metal', 'amd64', '22222222', T2, '2');

  it('is positive when the first build is newer', () => {
    assert.ok(compareBuilds(b, a) > 0);
  });

  it('is negative when the first build is older', () => {
    assert.ok(compareBuilds(a, b) < 0);
  });

  it('compares instants across time zones', () => {
    const x = glRecord('metal', 'amd64', 'aaaaaaaa', '2026-02-10T12:00:00+01:00', '1'); // 11:00Z
    const y = glRecord('metal', 'amd64', 'bbbbbbbb', '2026-02-10T11:30:00Z', '2');
    assert.ok(compareBuilds(y, x) > 0);
    assert.ok(compareBuilds(x, y) < 0);
  });

  it('breaks ties of equal build time by base name, antisymmetrically', () => {
    const x = glRecord('metal', 'amd64', '11111111', T1, '1');
    const y = glRecord('metal', 'amd64', '22222222', T1, '2');
    assert.ok(compareBuilds(x, y) < 0);
    assert.ok(compareBuilds(y, x) > 0);
  });

  it('is zero for the same build', () => {
    assert.equal(compareBuilds(a, { ...a }), 0);
  });
});

describe('renderVersionIndex: what it leaves out', () => {
  const old = containerRecord('amd64', '00000001', '2026-02-10T10:00:00Z', '1', '2');
  const newer = containerRecord('amd64', '00000002', '2026-02-10T11:00:00Z', '3', '4');
  const aws = glRecord('aws-gardener_prod', 'amd64', '00000003', '2026-02-10T10:00:00Z', '5');
  const foreign = glEntry('kvm-amd64-1877.3-0badc0de', 'amd64', d('6'));
  const current: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [foreign, containerEntry('arm64', d('7'))] };

  it('drops entries whose manifest is gone, recorded or not, and gives a gone slot to the next newest build', () => {
    const r = renderVersionIndex([old, newer, aws], current, { gone: new Set([d('3'), d('6')]) }) as RenderedIndex;
    assert.deepEqual(r.index.manifests.map((m) => m.digest), [d('1'), d('7'), d('5'), d('4'), d('2')]);
  });

  it('drops a retracted build wherever its entries come from: by cname, and by the digests its record named', () => {
    const stillListed = renderVersionIndex([old, aws], { ...current, manifests: [...current.manifests, newer.gardenlinux as Descriptor, newer.container as Descriptor] }, {
      retracted: [{ base: newer.base, digests: [d('3'), d('4')] }, { base: foreign.annotations?.cname as string, digests: [] }],
    }) as RenderedIndex;
    assert.deepEqual(stillListed.index.manifests.map((m) => m.digest), [d('1'), d('7'), d('5'), d('2')]);
    // A record still there for a retracted base (written before the retraction) is left out too.
    const withRecord = renderVersionIndex([old, newer, aws], undefined, { retracted: [{ base: newer.base, digests: [] }] }) as RenderedIndex;
    assert.deepEqual(withRecord.index.manifests.map((m) => m.digest), [d('1'), d('5'), d('2')]);
  });
});

describe('containerTags', () => {
  it('names the image of the newest build of each platform, the one the container slot holds', () => {
    const records = [
      containerRecord('amd64', '00000001', '2026-02-10T10:00:00Z', '1', '2'),
      containerRecord('amd64', '00000002', '2026-02-10T11:00:00Z', '3', '4'),
      containerRecord('arm64', '00000003', '2026-02-10T09:00:00Z', '5', '6'),
      glRecord('aws-gardener_prod', 'amd64', '00000004', '2026-02-10T12:00:00Z', '7'),
    ];
    assert.deepEqual(
      containerTags(records, '1877.3').map((t) => [t.tag, t.entry.digest, t.base]),
      [
        ['amd64-1877.3', d('3'), 'container-amd64-1877.3-00000002'],
        ['arm64-1877.3', d('5'), 'container-arm64-1877.3-00000003'],
      ],
    );
    const slot = (renderVersionIndex(records, undefined) as RenderedIndex).index.manifests.filter((m) => m.annotations === undefined).map((m) => m.digest);
    assert.deepEqual(slot, [d('3'), d('5')], 'the same images as the index');
    assert.deepEqual(containerTags(records, '1877.3', { gone: new Set([d('3')]) }).map((t) => t.entry.digest), [d('1'), d('5')]);
  });
});

describe('samePlace', () => {
  const a1 = glRecord('aws-gardener_prod', 'amd64', '00000001', '2026-02-10T10:00:00Z', '1');
  const a2 = glRecord('aws-gardener_prod', 'amd64', '00000002', '2026-02-10T11:00:00Z', '2');
  const gcp = glRecord('gcp-gardener_prod', 'amd64', '00000003', '2026-02-10T10:00:00Z', '3');
  const c = containerRecord('amd64', '00000004', '2026-02-10T10:00:00Z', '4', '5');
  const index = (...m: Descriptor[]): ImageIndex => ({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: m });

  it("compares only the build's flavor-arch entries, in order, and its platform's container slot", () => {
    const g = (r: IndexRecord) => r.gardenlinux as Descriptor;
    assert.ok(samePlace(index(g(a2), g(a1), g(gcp)), index(g(a2), g(a1)), a1), 'another flavor does not matter');
    assert.ok(!samePlace(index(g(a2), g(a1)), index(g(a1), g(a2)), a1), 'the order within the flavor-arch does');
    assert.ok(!samePlace(index(g(a2), g(a1)), index(g(a1)), a1), 'a missing build of the same flavor-arch does');
    assert.ok(samePlace(index(c.container as Descriptor, g(c)), index(c.container as Descriptor, g(c), g(a1)), c));
    assert.ok(!samePlace(index(c.container as Descriptor, g(c)), index(containerEntry('amd64', d('9')), g(c)), c), 'the container slot does');
  });
});
