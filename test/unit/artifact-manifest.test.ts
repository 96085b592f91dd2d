import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  buildArtifactManifest,
  LAYER_ARCH_ANNOTATION,
  TITLE_ANNOTATION,
  type ArtifactLayer,
} from '../../functions/gardenlinux/artifact-manifest';
import type { BaseName } from '../../functions/gardenlinux/naming';
import { InputError } from '../../functions/util/errors';

const NAME: BaseName = { base: 'container-amd64-1877.3-75df9f40', flavor: 'container', arch: 'amd64', version: '1877.3', commit: '75df9f40' };
const FEATURES = '_slim,base,container';
const EMPTY_CONFIG_DIGEST = 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a';
const FOUR_MIB = 4 * 1024 * 1024;

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function d(c: string): string {
  return `sha256:${c.repeat(64)}`;
}

function layer(title: string, mediaType: string, size: number, digest: string): ArtifactLayer {
  return { title, mediaType, size, digest };
}

const RELEASE = layer('container-amd64-1877.3-75df9f40.release', 'application/io.gardenlinux.release', 812, d('a'));
const OCI = layer('container-amd64-1877.3-75df9f40.oci', 'application/io.gardenlinux.image.archive.format.oci', 52428800, d('b'));

/**
 * Spec §3 written out in Python's json.dumps form (", " and ": ", the spec's key order), with the standard
 * annotations python-gardenlinux-lib 1.0 reads. Layers are given in the expected order.
 */
function expectedJson(name: BaseName, featureSet: string, layers: ReadonlyArray<{ title: string; mediaType: string; size: number; digest: string }>, source = 'https://github.com/gardenlinux/gardenlinux'): string {
  const layerJson = layers
    .map(
      (l) =>
        `{"mediaType": "${l.mediaType}", "size": ${l.size}, "digest": "${l.digest}", ` +
        `"annotations": {"org.opencontainers.image.title": "${l.title}", "io.gardenlinux.image.layer.architecture": "${name.arch}"}}`,
    )
    .join(', ');
  return (
    `{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", ` +
    `"config": {"mediaType": "application/vnd.unknown.config.v1+json", "size": 2, "digest": "${EMPTY_CONFIG_DIGEST}", ` +
    `"annotations": {"cname": "${name.base}", "architecture": "${name.arch}"}}, ` +
    `"layers": [${layerJson}], ` +
    `"annotations": {"version": "${name.version}", "cname": "${name.base}", "architecture": "${name.arch}", ` +
    `"feature_set": "${featureSet}", "commit": "${name.commit}", ` +
    `"org.opencontainers.image.description": "Image: ${name.base} Flavor: ${name.flavor} Architecture: ${name.arch} Features: ${featureSet} Commit: ${name.commit} ", ` +
    `"org.opencontainers.image.architecture": "${name.arch}", "org.opencontainers.image.version": "${name.version}", ` +
    `"org.opencontainers.image.revision": "${name.commit}", "org.opencontainers.image.source": "${source}", ` +
    `"org.opencontainers.image.title": "Garden Linux"}}`
  );
}

function titles(bytes: Buffer): string[] {
  const m = JSON.parse(bytes.toString('utf8')) as { layers: Array<{ annotations: Record<string, string> }> };
  return m.layers.map((l) => l.annotations['org.opencontainers.image.title'] ?? '(none)');
}

describe('buildArtifactManifest: the manifest bytes (spec §3)', () => {
  it("writes exactly the spec layout in Python's json.dumps form, key order as in the spec example", () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE]);
    assert.equal(
      m.bytes.toString('utf8'),
        '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "appli' +
        'cation/vnd.unknown.config.v1+json", "size": 2, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77' +
        'e8310c060f61caaff8a", "annotations": {"cname": "container-amd64-1877.3-75df9f40", "architecture": "amd64"}}, "' +
        'layers": [{"mediaType": "application/io.gardenlinux.release", "size": 812, "digest": "sha256:aaaaaaaaaaaaaaaaa' +
        'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "annotations": {"org.opencontainers.image.title": "container' +
        '-amd64-1877.3-75df9f40.release", "io.gardenlinux.image.layer.architecture": "amd64"}}], "annotations": {"versi' +
        'on": "1877.3", "cname": "container-amd64-1877.3-75df9f40", "architecture": "amd64", "feature_set": "_slim,base' +
        ',container", "commit": "75df9f40", "org.opencontainers.image.description": "Image: container-amd64-1877.3-75df' +
        '9f40 Flavor: container Architecture: amd64 Features: _slim,base,container Commit: 75df9f40 ", "org.opencontain' +
        'ers.image.architecture": "amd64", "org.opencontainers.image.version": "1877.3", "org.opencontainers.image.revi' +
        'sion": "75df9f40", "org.opencontainers.image.source": "https://github.com/gardenlinux/gardenlinux", "org.openc' +
        'ontainers.image.title": "Garden Linux"}}',
    );
  });

  it("pins gl-oci's description, its trailing space included", () => {
    const m = JSON.parse(buildArtifactManifest(NAME, FEATURES, [RELEASE]).bytes.toString('utf8')) as { annotations: Record<string, string> };
    assert.equal(
      m.annotations['org.opencontainers.image.description'],
      'Image: container-amd64-1877.3-75df9f40 Flavor: container Architecture: amd64 Features: _slim,base,container Commit: 75df9f40 ',
    );
  });

  it('adds the standard annotations from the build, keeping every existing one, with a configurable source', () => {
    const m = JSON.parse(buildArtifactManifest(NAME, FEATURES, [RELEASE], 'https://github.com/example/gardenlinux-fork').bytes.toString('utf8')) as {
      annotations: Record<string, string>;
    };
    assert.deepEqual(Object.keys(m.annotations), [
      'version',
      'cname',
      'architecture',
      'feature_set',
      'commit',
      'org.opencontainers.image.description',
      'org.opencontainers.image.architecture',
      'org.opencontainers.image.version',
      'org.opencontainers.image.revision',
      'org.opencontainers.image.source',
      'org.opencontainers.image.title',
    ]);
    assert.equal(m.annotations['org.opencontainers.image.architecture'], 'amd64');
    assert.equal(m.annotations['org.opencontainers.image.version'], '1877.3');
    assert.equal(m.annotations['org.opencontainers.image.revision'], '75df9f40');
    assert.equal(m.annotations['org.opencontainers.image.source'], 'https://github.com/example/gardenlinux-fork');
    assert.equal(m.annotations['org.opencontainers.image.title'], 'Garden Linux');
  });

  it('writes one layer per file with its media type, size, digest, title and architecture', () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE, OCI]);
    assert.equal(m.bytes.toString('utf8'), expectedJson(NAME, FEATURES, [OCI, RELEASE]));
  });

  it('uses the 2-byte {} config blob', () => {
    const m = JSON.parse(buildArtifactManifest(NAME, FEATURES, [RELEASE]).bytes.toString('utf8')) as {
      config: { size: number; digest: string };
    };
    assert.equal(m.config.size, 2);
    assert.equal(m.config.digest, sha256('{}'));
    assert.equal(m.config.digest, EMPTY_CONFIG_DIGEST);
  });

  it('puts the architecture on every layer, also for arm64', () => {
    const arm: BaseName = { base: 'metal_pxe-arm64-2150.0.0-abcdef01', flavor: 'metal_pxe', arch: 'arm64', version: '2150.0.0', commit: 'abcdef01' };
    const layers = [
      layer('vmlinuz', 'application/io.gardenlinux.kernel', 40000, d('1')),
      layer('metal_pxe-arm64-2150.0.0-abcdef01.pxe.tar.gz', 'application/io.gardenlinux.image.archive.format.pxe.tar.gz', 123456, d('2')),
    ];
    const m = buildArtifactManifest(arm, 'base,server,metal,_pxe', layers);
    assert.equal(m.bytes.toString('utf8'), expectedJson(arm, 'base,server,metal,_pxe', [layers[1]!, layers[0]!]));
    const parsed = JSON.parse(m.bytes.toString('utf8')) as { layers: Array<{ annotations: Record<string, string> }> };
    for (const l of parsed.layers) assert.equal(l.annotations['io.gardenlinux.image.layer.architecture'], 'arm64');
  });

  it('writes a local build with commit "local"', () => {
    const local: BaseName = { base: 'metal-amd64-1877.3-local', flavor: 'metal', arch: 'amd64', version: '1877.3', commit: 'local' };
    const l = layer('metal-amd64-1877.3-local.raw', 'application/io.gardenlinux.image.archive.format.raw', 10, d('c'));
    assert.equal(buildArtifactManifest(local, 'base,metal', [l]).bytes.toString('utf8'), expectedJson(local, 'base,metal', [l]));
  });

  it('exports the annotation keys the spec names', () => {
    assert.equal(TITLE_ANNOTATION, 'org.opencontainers.image.title');
    assert.equal(LAYER_ARCH_ANNOTATION, 'io.gardenlinux.image.layer.architecture');
  });
});

describe('buildArtifactManifest: layer order', () => {
  it('sorts layers by title whatever the input order', () => {
    const b = 'metal_pxe-amd64-1877.3-75df9f40';
    const input = [`${b}.tar`, 'vmlinuz', `${b}.pxe.tar.gz`, 'root.squashfs', 'initrd', `${b}.release`, 'cmdline', `${b}.manifest`];
    const m = buildArtifactManifest({ ...NAME, base: b, flavor: 'metal_pxe' }, 'base', input.map((t, i) => layer(t, 'application/io.gardenlinux.log', i, d(String(i)))));
    assert.deepEqual(titles(m.bytes), [
      'cmdline',
      'initrd',
      `${b}.manifest`,
      `${b}.pxe.tar.gz`,
      `${b}.release`,
      `${b}.tar`,
      'root.squashfs',
      'vmlinuz',
    ]);
  });

  it('sorts in UTF-16 code-unit order, not locale order', () => {
    const input = ['vmlinuz', '_x', 'Zimage', '.z', '-y', 'a.tar.gz', 'a.tar', 'a.tar-log', 'a.tarX', 'B', 'a'];
    const m = buildArtifactManifest(NAME, FEATURES, input.map((t, i) => layer(t, 'application/octet-stream', i, d('e'))));
    // '-' 0x2D < '.' 0x2E < 'B' 0x42 < 'Z' 0x5A < '_' 0x5F < 'a' 0x61 < 'v' 0x76; shorter prefix first
    assert.deepEqual(titles(m.bytes), ['-y', '.z', 'B', 'Zimage', '_x', 'a', 'a.tar', 'a.tar-log', 'a.tar.gz', 'a.tarX', 'vmlinuz']);
  });

  it('orders characters outside the BMP by code unit (surrogates before U+FF21)', () => {
    const emoji = 'x\u{1F600}';
    const fullwidth = 'x\uFF21';
    const m = buildArtifactManifest(NAME, FEATURES, [layer(fullwidth, 'application/octet-stream', 1, d('1')), layer(emoji, 'application/octet-stream', 2, d('2'))]);
    assert.deepEqual(titles(m.bytes), [emoji, fullwidth]);
  });

  it('gives the same bytes and digest for the same input in any order', () => {
    const layers = [
      RELEASE,
      OCI,
      layer('container-amd64-1877.3-75df9f40.tar', 'application/io.gardenlinux.image.archive.format.tar', 100, d('c')),
      layer('container-amd64-1877.3-75df9f40.sbom', 'application/vnd.cyclonedx+json', 200, d('d')),
    ];
    const a = buildArtifactManifest(NAME, FEATURES, layers);
    const b = buildArtifactManifest(NAME, FEATURES, [...layers].reverse());
    const c = buildArtifactManifest(NAME, FEATURES, [layers[2]!, layers[0]!, layers[3]!, layers[1]!]);
    assert.ok(a.bytes.equals(b.bytes));
    assert.ok(a.bytes.equals(c.bytes));
    assert.equal(a.digest, b.digest);
    assert.equal(a.digest, c.digest);
  });

  it('does not reorder the caller’s array', () => {
    const layers = [RELEASE, OCI];
    buildArtifactManifest(NAME, FEATURES, layers);
    assert.deepEqual(layers, [RELEASE, OCI]);
  });
});

describe('buildArtifactManifest: digest and descriptors', () => {
  it('digest is the sha256 of the bytes', () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE, OCI]);
    assert.equal(m.digest, sha256(expectedJson(NAME, FEATURES, [OCI, RELEASE])));
    assert.equal(m.digest, sha256(m.bytes));
  });

  it('a different feature set gives a different digest', () => {
    const a = buildArtifactManifest(NAME, FEATURES, [RELEASE]);
    const b = buildArtifactManifest(NAME, 'base,container', [RELEASE]);
    assert.notEqual(a.digest, b.digest);
  });

  it('descriptor is {mediaType, digest, size} of the manifest', () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE, OCI]);
    const json = expectedJson(NAME, FEATURES, [OCI, RELEASE]);
    assert.deepEqual(m.descriptor, { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(json), size: Buffer.byteLength(json) });
  });

  it('index entry carries exactly cname, architecture, feature_set and the gardenlinux platform (spec §5)', () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE, OCI]);
    const json = expectedJson(NAME, FEATURES, [OCI, RELEASE]);
    assert.deepEqual(m.indexEntry, {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256(json),
      size: Buffer.byteLength(json),
      annotations: { cname: 'container-amd64-1877.3-75df9f40', architecture: 'amd64', feature_set: '_slim,base,container' },
      platform: { architecture: 'amd64', os: 'gardenlinux', 'os.version': '1877.3' },
    });
  });

  it('index entry serialises in the spec key order', () => {
    const m = buildArtifactManifest(NAME, FEATURES, [RELEASE]);
    const json = expectedJson(NAME, FEATURES, [RELEASE]);
    assert.equal(
      JSON.stringify(m.indexEntry),
      `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"${sha256(json)}","size":${Buffer.byteLength(json)},` +
        '"annotations":{"cname":"container-amd64-1877.3-75df9f40","architecture":"amd64","feature_set":"_slim,base,container"},' +
        '"platform":{"architecture":"amd64","os":"gardenlinux","os.version":"1877.3"}}',
    );
  });
});

describe('buildArtifactManifest: rejections', () => {
  it('rejects two layers with the same title', () => {
    const dup = layer(RELEASE.title, 'application/io.gardenlinux.release', 1, d('f'));
    assert.throws(
      () => buildArtifactManifest(NAME, FEATURES, [RELEASE, OCI, dup]),
      (err: unknown) => {
        assert.ok(err instanceof InputError);
        assert.match(err.message, /container-amd64-1877\.3-75df9f40\.release/);
        assert.match(err.message, /two layers|duplicate/i);
        return true;
      },
    );
  });

  it('rejects a manifest over 4 MiB', () => {
    const overhead = Buffer.byteLength(expectedJson(NAME, FEATURES, [{ ...RELEASE, title: '' }]));
    const big = { ...RELEASE, title: 'x'.repeat(FOUR_MIB + 1 - overhead) };
    assert.throws(
      () => buildArtifactManifest(NAME, FEATURES, [big]),
      (err: unknown) => {
        assert.ok(err instanceof InputError);
        assert.match(err.message, /4 MiB/);
        assert.match(err.message, new RegExp(String(FOUR_MIB + 1)));
        return true;
      },
    );
  });

  it('accepts a manifest just under 4 MiB', () => {
    const overhead = Buffer.byteLength(expectedJson(NAME, FEATURES, [{ ...RELEASE, title: '' }]));
    const big = { ...RELEASE, title: 'x'.repeat(FOUR_MIB - 1 - overhead) };
    const m = buildArtifactManifest(NAME, FEATURES, [big]);
    assert.equal(m.bytes.length, FOUR_MIB - 1);
  });
});
