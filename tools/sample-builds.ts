/**
 * Generated Garden Linux builds, shaped like the real ones (spec §2): the files of `objects/<base>/`, a real
 * container image in the `.oci` archive of container builds, a real PXE bundle, and the metadata document as
 * PyYAML writes it (including the wrong sha256sum). Content is pseudo-random from a seed, so the same build
 * always has the same bytes and digests.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { makeTar } from './tar-writer';

export interface SampleFile {
  name: string;
  data: Buffer;
}

export interface SampleBuild {
  base: string;
  flavor: string;
  arch: 'amd64' | 'arm64';
  version: string;
  commit: string;
  platform: string;
  features: string[];
  files: SampleFile[];
  metadata: string;
  /** for PXE builds: the files inside the bundle */
  pxeMembers?: SampleFile[];
  /** for container builds: the image inside the .oci archive */
  image?: { manifestDigest: string; manifestSize: number; configDigest: string; layerDigest: string };
}

export interface BuildSpec {
  flavor: string;
  arch: 'amd64' | 'arm64';
  version?: string;
  commit?: string;
  platform?: string;
  features?: string[];
  /** ISO time for build_timestamp */
  buildTime?: string;
  /** size of the main disk image (.raw) for non-container builds, or of the container layer's rootfs */
  imageSize?: number;
  pxe?: boolean;
  /** older document shape: modifiers as a comma string, suffix without dot, epoch as a string */
  legacyMetadata?: boolean;
  /** skip the ref.name annotation in the archive's index.json (older builds) */
  noRefName?: boolean;
  /**
   * Only the files that make the build what it is: its `.release` and its image (`.raw`, `.oci` or `.pxe.tar.gz`),
   * without the logs, test results, SBOM and package lists. For tests about the version index, where those would
   * only be more uploads before the race.
   */
  lean?: boolean;
}

/**
 * Deterministic bytes that do not compress: the AES-256-CTR keystream of a key derived from the seed (about 1 GiB/s;
 * a hash per 32 bytes took a second for 15 MiB).
 */
export function pseudoRandom(seed: string, size: number): Buffer {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

/** An OCI image layout tar like `features/container/image.oci` makes: blobs first, then index.json, oci-layout. */
export function containerArchive(opts: { arch: string; refName?: string; rootfsSize: number; seed: string; version: string }) {
  const rootfs = makeTar([
    { path: 'etc/', type: 'Directory' },
    { path: 'etc/os-release', data: Buffer.from(`ID=gardenlinux\nNAME="Garden Linux"\nVERSION_ID=${opts.version}\n`) },
    { path: 'usr/', type: 'Directory' },
    { path: 'usr/lib/', type: 'Directory' },
    { path: 'usr/lib/payload.bin', data: pseudoRandom(`${opts.seed}:rootfs`, opts.rootfsSize) },
  ]);
  const layer = gzipSync(rootfs, { level: 1 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.arch,
      os: 'linux',
      config: { Cmd: ['/bin/bash'], Labels: { 'org.opencontainers.image.version': opts.version } },
      rootfs: { type: 'layers', diff_ids: [sha256(rootfs)] },
      history: [{}],
    }),
  );
  // Pretty-printed like the heredoc upstream, so its digest differs from any re-serialisation.
  const manifest = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
      },
      null,
      2,
    ) + '\n',
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(manifest),
          size: manifest.length,
          ...(opts.refName ? { annotations: { 'org.opencontainers.image.ref.name': opts.refName } } : {}),
        },
      ],
    }),
  );
  const blob = (b: Buffer) => ({ path: `blobs/sha256/${sha256(b).slice(7)}`, data: b });
  const archive = makeTar([
    { path: 'blobs/', type: 'Directory' },
    { path: 'blobs/sha256/', type: 'Directory' },
    blob(config),
    blob(layer),
    blob(manifest),
    { path: 'index.json', data: index },
    { path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion": "1.0.0"}') },
  ]);
  return { archive, manifest, config, layer, rootfs };
}

export function pxeMembers(seed: string, squashfsSize: number): SampleFile[] {
  return [
    { name: 'vmlinuz', data: pseudoRandom(`${seed}:vmlinuz`, 40_000) },
    { name: 'initrd', data: pseudoRandom(`${seed}:initrd`, 70_000) },
    { name: 'cmdline', data: Buffer.from('console=ttyS0 gl.ovl=/:tmpfs\n') },
    { name: 'root.squashfs', data: pseudoRandom(`${seed}:squashfs`, squashfsSize) },
  ];
}

export function pxeBundle(members: readonly SampleFile[]): Buffer {
  return gzipSync(makeTar(members.map((m) => ({ path: m.name, data: m.data }))), { level: 1 });
}

export function sampleBuild(spec: BuildSpec): SampleBuild {
  const version = spec.version ?? '1877.3';
  const commit = spec.commit ?? '75df9f40';
  const base = `${spec.flavor}-${spec.arch}-${version}-${commit}`;
  const isContainer = spec.flavor.startsWith('container');
  const platform = spec.platform ?? (isContainer ? 'container' : spec.flavor.split(/[-_]/)[0] ?? 'metal');
  const features = spec.features ?? (isContainer ? ['_slim', 'base', 'container'] : ['base', 'server', platform, ...(spec.pxe ? ['_pxe'] : [])]);
  const seed = base;
  const size = spec.imageSize ?? 64 * 1024;
  const release = [
    'ID=gardenlinux',
    'NAME="Garden Linux"',
    `PRETTY_NAME="Garden Linux ${version}"`,
    `IMAGE_VERSION=${version}`,
    `VARIANT_ID=${spec.flavor}-${spec.arch}`,
    `GARDENLINUX_CNAME=${spec.flavor}-${spec.arch}-${version}`,
    `GARDENLINUX_PLATFORM=${platform}`,
    `GARDENLINUX_FEATURES=${features.join(',')}`,
    `GARDENLINUX_VERSION=${version}`,
    `GARDENLINUX_COMMIT_ID=${commit}`,
    `GARDENLINUX_COMMIT_ID_LONG=${commit}${'0'.repeat(32)}`,
    '',
  ].join('\n');
  const files: SampleFile[] = [
    { name: `${base}.release`, data: Buffer.from(release) },
    { name: `${base}.manifest`, data: Buffer.from('bash 5.2.15-2+b2\ncoreutils 9.1-1\nlibc6 2.36-9+deb12u4\n') },
    { name: `${base}.requirements`, data: Buffer.from(`arch=${spec.arch}\nsecureboot=false\ntpm2=false\nuefi=false\n`) },
    { name: `${base}.sbom`, data: Buffer.from(JSON.stringify({ bomFormat: 'CycloneDX', specVersion: '1.5', components: [] })) },
    { name: `${base}.tar`, data: makeTar([{ path: 'etc/os-release', data: Buffer.from(release) }]) },
    { name: `${base}.tar.log`, data: Buffer.from(`building ${base}.tar\n`) },
    { name: `${base}.chroot.test.log`, data: Buffer.from('all tests passed\n') },
    { name: `${base}.chroot.test.xml`, data: Buffer.from('<testsuite tests="1" failures="0"/>\n') },
  ];
  let image: SampleBuild['image'];
  let members: SampleFile[] | undefined;
  if (isContainer) {
    const c = containerArchive({
      arch: spec.arch,
      rootfsSize: size,
      seed,
      version,
      ...(spec.noRefName ? {} : { refName: `${spec.flavor}-${spec.arch}`.toLowerCase() }),
    });
    files.push({ name: `${base}.oci`, data: c.archive }, { name: `${base}.oci.log`, data: Buffer.from('oci image built\n') });
    image = { manifestDigest: sha256(c.manifest), manifestSize: c.manifest.length, configDigest: sha256(c.config), layerDigest: sha256(c.layer) };
  } else if (spec.pxe) {
    members = pxeMembers(seed, size);
    files.push({ name: `${base}.pxe.tar.gz`, data: pxeBundle(members) }, { name: `${base}.pxe.tar.gz.log`, data: Buffer.from('pxe built\n') });
  } else {
    files.push({ name: `${base}.raw`, data: pseudoRandom(`${seed}:raw`, size) }, { name: `${base}.raw.log`, data: Buffer.from('raw built\n') });
  }
  if (spec.lean) files.splice(0, files.length, ...files.filter((f) => /\.(release|raw|oci|pxe\.tar\.gz)$/.test(f.name)));
  files.sort((a, b) => (a.name < b.name ? -1 : 1));
  return { base, flavor: spec.flavor, arch: spec.arch, version, commit, platform, features, files, metadata: metadataYaml(spec, base, platform, features, files, version, commit), ...(image ? { image } : {}), ...(members ? { pxeMembers: members } : {}) };
}

/** The metadata document as python-gardenlinux-lib writes it (PyYAML, sorted keys). */
export function metadataYaml(
  spec: BuildSpec,
  base: string,
  platform: string,
  features: string[],
  /** files with their bytes, or (large ones written elsewhere) with their md5 */
  files: ReadonlyArray<{ name: string; data?: Buffer; md5?: string }>,
  version: string,
  commit: string,
  bucket = 'gardenlinux-github-releases',
): string {
  const legacy = spec.legacyMetadata === true;
  const timestamp = (spec.buildTime ?? '2026-02-10T11:12:42.317474Z').replace('T', ' ').replace('Z', '');
  const lines = [
    `architecture: ${spec.arch}`,
    // PyYAML quotes a string that would read as a number.
    /^\d+$/.test(commit) ? `build_committish: '${commit}${'0'.repeat(32)}'` : `build_committish: ${commit}${'0'.repeat(32)}`,
    legacy ? `build_timestamp: '${timestamp.replace(' ', 'T')}'` : `build_timestamp: ${timestamp}`,
    legacy ? `gardenlinux_epoch: '${version.split('.')[0]}'` : `gardenlinux_epoch: ${version.split('.')[0]}`,
    'logs: null',
    legacy ? `modifiers: ${features.join(',')}` : `modifiers:\n${features.map((f) => `- ${f}`).join('\n')}`,
    'paths:',
    ...files.flatMap((f) => {
      const suffix = f.name.slice(base.length);
      return [
        `- md5sum: ${f.md5 ?? md5(f.data ?? Buffer.alloc(0))}`,
        `  name: ${f.name}`,
        `  s3_bucket_name: ${bucket}`,
        `  s3_key: objects/${base}/${f.name}`,
        // The upstream bug: the hash of the empty string, whatever the file.
        '  sha256sum: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
        `  suffix: ${legacy ? suffix.slice(1) : suffix}`,
      ];
    }),
    `platform: ${platform}`,
    ...(spec.flavor.startsWith('container') && !legacy ? [`publishing_group: ${spec.flavor}`] : []),
    'require_uefi: false',
    `s3_bucket: ${bucket}`,
    `s3_key: meta/singles/${base}`,
    'secureboot: false',
    'test_result: null',
    'tpm2: false',
    `version: '${version}'`,
    '',
  ];
  return lines.join('\n');
}

/** Writes a build into a directory laid out like the bucket (`objects/<base>/…`, `meta/singles/<base>`). */
export async function writeBuildDir(root: string, build: SampleBuild): Promise<void> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  await mkdir(join(root, 'objects', build.base), { recursive: true });
  await mkdir(join(root, 'meta', 'singles'), { recursive: true });
  for (const f of build.files) await writeFile(join(root, 'objects', build.base, f.name), f.data);
  await writeFile(join(root, 'meta', 'singles', build.base), build.metadata);
}
