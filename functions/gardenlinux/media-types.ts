/**
 * Media types of Garden Linux artifact layers by file suffix (spec §3.1). The longest matching suffix wins, and
 * a bare file name (a PXE bundle member such as `vmlinuz`) matches its own entry.
 */
// Trustedboot builds also carry the null PK's auth file and the openssl configs of the keys (spec §3.1, revised).
const SECUREBOOT = [
  ...['pk', 'kek', 'db'].flatMap((k) => ['crt', 'der', 'auth', 'conf'].map((e) => `secureboot.${k}.${e}`)),
  'secureboot.null.pk.auth',
];

const TABLE: ReadonlyArray<readonly [suffix: string, mediaType: string]> = [
  ...[...SECUREBOOT, 'secureboot.db.arn', 'secureboot.aws-efivars'].map(
    (s) => [s, `application/io.gardenlinux.cert.${s}`] as const,
  ),
  ['firecracker.tar.gz', 'application/io.gardenlinux.image.archive.format.firecracker.tar.gz'],
  // The existing tool knows only the platform and chroot test outputs; cloud, oci and qemu test XML occur in S3
  // too and are named the same way (spec §3.1). Their `.test.log` files fall through to `log`.
  ...['platform.test.log', 'platform.test.xml', 'chroot.test.log', 'chroot.test.xml', 'cloud.test.xml', 'oci.test.xml', 'qemu.test.xml'].map(
    (s) => [s, `application/io.gardenlinux.io.${s}`] as const,
  ),
  ['gcpimage.tar.gz', 'application/io.gardenlinux.image.format.gcpimage.tar.gz'],
  ['pxe.tar.gz', 'application/io.gardenlinux.image.archive.format.pxe.tar.gz'],
  ['tar.gz', 'application/io.gardenlinux.image.archive.format.tar.gz'],
  ['initrd.unified', 'application/io.gardenlinux.initrd'],
  ['initrd', 'application/io.gardenlinux.initrd'],
  ['root.squashfs', 'application/io.gardenlinux.squashfs'],
  ['squashfs', 'application/io.gardenlinux.squashfs'],
  ['vmlinuz', 'application/io.gardenlinux.kernel'],
  ['cmdline', 'application/io.gardenlinux.cmdline'],
  ['requirements', 'application/io.gardenlinux.image.requirements'],
  ['test-log', 'application/io.gardenlinux.test-log'],
  ['manifest', 'application/io.gardenlinux.manifest'],
  ['release', 'application/io.gardenlinux.release'],
  ...['qcow2', 'vhd', 'vmdk', 'ova'].map((s) => [s, `application/io.gardenlinux.image.format.${s}`] as const),
  ['sbom', 'application/vnd.cyclonedx+json'],
  ['tar', 'application/io.gardenlinux.image.archive.format.tar'],
  ...['iso', 'oci', 'raw'].map((s) => [s, `application/io.gardenlinux.image.archive.format.${s}`] as const),
  ['efi', 'application/io.gardenlinux.efi'],
  ['uki', 'application/io.gardenlinux.uki'],
  ['log', 'application/io.gardenlinux.log'],
];

// Longest first, so the first match is the longest matching suffix.
const BY_LENGTH = [...TABLE].sort((a, b) => b[0].length - a[0].length);

export const UNKNOWN_MEDIA_TYPE = 'application/octet-stream';

/** The media type for a file name, or undefined when no suffix matches (the caller logs and uses octet-stream). */
export function mediaTypeForFile(fileName: string): string | undefined {
  for (const [suffix, mediaType] of BY_LENGTH) {
    if (fileName === suffix || fileName.endsWith(`.${suffix}`)) return mediaType;
  }
  return undefined;
}

export const PXE_BUNDLE_SUFFIX = '.pxe.tar.gz';
