/**
 * What the spec says a publication must produce, written out independently of the code under test: media types
 * from the spec's table, digests from the sample files' bytes, index entries from spec §5.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { SampleBuild } from '../../tools/sample-builds';

export const BUCKET = 'gardenlinux-github-releases';
export const EMPTY_CONFIG_DIGEST = 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a';

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

// Spec §3.1, for the suffixes the sample builds have.
const MEDIA_TYPES: Array<[string, string]> = [
  ['.pxe.tar.gz.log', 'application/io.gardenlinux.log'],
  ['.chroot.test.log', 'application/io.gardenlinux.io.chroot.test.log'],
  ['.chroot.test.xml', 'application/io.gardenlinux.io.chroot.test.xml'],
  ['.pxe.tar.gz', 'application/io.gardenlinux.image.archive.format.pxe.tar.gz'],
  ['.tar.log', 'application/io.gardenlinux.log'],
  ['.oci.log', 'application/io.gardenlinux.log'],
  ['.raw.log', 'application/io.gardenlinux.log'],
  ['.release', 'application/io.gardenlinux.release'],
  ['.manifest', 'application/io.gardenlinux.manifest'],
  ['.requirements', 'application/io.gardenlinux.image.requirements'],
  ['.sbom', 'application/vnd.cyclonedx+json'],
  ['.tar', 'application/io.gardenlinux.image.archive.format.tar'],
  ['.oci', 'application/io.gardenlinux.image.archive.format.oci'],
  ['.raw', 'application/io.gardenlinux.image.archive.format.raw'],
  ['vmlinuz', 'application/io.gardenlinux.kernel'],
  ['initrd', 'application/io.gardenlinux.initrd'],
  ['cmdline', 'application/io.gardenlinux.cmdline'],
  ['root.squashfs', 'application/io.gardenlinux.squashfs'],
];

function mediaType(title: string): string {
  const hit = MEDIA_TYPES.find(([suffix]) => title === suffix || title.endsWith(suffix));
  assert.ok(hit, `the test has no media type for ${title}`);
  return hit[1];
}

export function glTag(b: SampleBuild): string {
  return `${b.version}-${b.base}-${b.arch}`;
}

/** The artifact manifest spec §3 describes for a build, as a parsed object. */
export function expectedArtifactManifest(b: SampleBuild): unknown {
  const files = [...b.files, ...(b.pxeMembers ?? [])].sort((x, y) => (x.name < y.name ? -1 : 1));
  const featureSet = b.features.join(',');
  return {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.unknown.config.v1+json',
      size: 2,
      digest: EMPTY_CONFIG_DIGEST,
      annotations: { cname: b.base, architecture: b.arch },
    },
    layers: files.map((f) => ({
      mediaType: mediaType(f.name),
      size: f.data.length,
      digest: sha256(f.data),
      annotations: { 'org.opencontainers.image.title': f.name, 'io.gardenlinux.image.layer.architecture': b.arch },
    })),
    annotations: {
      version: b.version,
      cname: b.base,
      architecture: b.arch,
      feature_set: featureSet,
      commit: b.commit,
      'org.opencontainers.image.description': `Image: ${b.base} Flavor: ${b.flavor} Architecture: ${b.arch} Features: ${featureSet} Commit: ${b.commit} `,
      'org.opencontainers.image.architecture': b.arch,
      'org.opencontainers.image.version': b.version,
      'org.opencontainers.image.revision': b.commit,
      'org.opencontainers.image.source': 'https://github.com/gardenlinux/gardenlinux',
      'org.opencontainers.image.title': 'Garden Linux',
    },
  };
}

/** The newest container build of an arch: latest build time (`buildTimes`, ms by base), then the larger base name. */
export function newestContainer(builds: readonly SampleBuild[], arch: string, buildTimes?: ReadonlyMap<string, number>): SampleBuild | undefined {
  return builds.filter((b) => b.image && b.arch === arch).sort((x, y) => newerFirst(x, y, buildTimes))[0];
}

function newerFirst(x: SampleBuild, y: SampleBuild, buildTimes: ReadonlyMap<string, number> | undefined): number {
  const dt = (buildTimes?.get(y.base) ?? 0) - (buildTimes?.get(x.base) ?? 0);
  return dt !== 0 ? dt : x.base < y.base ? 1 : x.base > y.base ? -1 : 0;
}

/**
 * Spec §5 entry by entry: the container entries first (one per arch, the newest build's image, no annotations,
 * os linux), then one Garden Linux entry per build, grouped by flavor-arch with the newest build first;
 * `glManifests` gives each build's manifest digest and size as published, `buildTimes` (ms by base) which build
 * is newest when builds share an arch or a flavor-arch.
 */
export function expectedIndex(
  builds: readonly SampleBuild[],
  glManifests: ReadonlyMap<string, { digest: string; size: number }>,
  buildTimes?: ReadonlyMap<string, number>,
): unknown {
  const containers = ['amd64', 'arm64'].flatMap((arch) => {
    const b = newestContainer(builds.filter((x) => x.flavor === 'container'), arch, buildTimes);
    return b?.image ? [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: b.image.manifestDigest, size: b.image.manifestSize, platform: { architecture: arch, os: 'linux' } }] : [];
  });
  const group = (b: SampleBuild) => `${b.flavor}-${b.arch}`;
  const gardenlinux = [...builds]
    .sort((x, y) => (group(x) < group(y) ? -1 : group(x) > group(y) ? 1 : newerFirst(x, y, buildTimes)))
    .map((b) => {
      const m = glManifests.get(b.base);
      assert.ok(m, `no published manifest for ${b.base}`);
      return {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: m.digest,
        size: m.size,
        annotations: { cname: b.base, architecture: b.arch, feature_set: b.features.join(',') },
        platform: { architecture: b.arch, os: 'gardenlinux', 'os.version': b.version },
      };
    });
  return { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [...containers, ...gardenlinux] };
}

export function parse(bytes: string | Buffer): unknown {
  return JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
}
