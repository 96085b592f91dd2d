import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mediaTypeForFile, PXE_BUNDLE_SUFFIX, UNKNOWN_MEDIA_TYPE } from '../../functions/gardenlinux/media-types';

const BASE = 'container-amd64-1877.3-75df9f40';

/** Every row of the spec §3.1 table, suffix → media type, written out literally. */
const SPEC_TABLE: ReadonlyArray<readonly [suffix: string, mediaType: string]> = [
  ['secureboot.pk.crt', 'application/io.gardenlinux.cert.secureboot.pk.crt'],
  ['secureboot.pk.der', 'application/io.gardenlinux.cert.secureboot.pk.der'],
  ['secureboot.pk.auth', 'application/io.gardenlinux.cert.secureboot.pk.auth'],
  ['secureboot.kek.crt', 'application/io.gardenlinux.cert.secureboot.kek.crt'],
  ['secureboot.kek.der', 'application/io.gardenlinux.cert.secureboot.kek.der'],
  ['secureboot.kek.auth', 'application/io.gardenlinux.cert.secureboot.kek.auth'],
  ['secureboot.db.crt', 'application/io.gardenlinux.cert.secureboot.db.crt'],
  ['secureboot.db.der', 'application/io.gardenlinux.cert.secureboot.db.der'],
  ['secureboot.db.auth', 'application/io.gardenlinux.cert.secureboot.db.auth'],
  ['secureboot.db.arn', 'application/io.gardenlinux.cert.secureboot.db.arn'],
  // Real trustedboot builds (issue 10): the null PK's auth file and the keys' openssl configs.
  ['secureboot.null.pk.auth', 'application/io.gardenlinux.cert.secureboot.null.pk.auth'],
  ['secureboot.pk.conf', 'application/io.gardenlinux.cert.secureboot.pk.conf'],
  ['secureboot.kek.conf', 'application/io.gardenlinux.cert.secureboot.kek.conf'],
  ['secureboot.db.conf', 'application/io.gardenlinux.cert.secureboot.db.conf'],
  ['secureboot.aws-efivars', 'application/io.gardenlinux.cert.secureboot.aws-efivars'],
  ['firecracker.tar.gz', 'application/io.gardenlinux.image.archive.format.firecracker.tar.gz'],
  ['platform.test.log', 'application/io.gardenlinux.io.platform.test.log'],
  ['platform.test.xml', 'application/io.gardenlinux.io.platform.test.xml'],
  ['chroot.test.log', 'application/io.gardenlinux.io.chroot.test.log'],
  ['chroot.test.xml', 'application/io.gardenlinux.io.chroot.test.xml'],
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
  ['qcow2', 'application/io.gardenlinux.image.format.qcow2'],
  ['vhd', 'application/io.gardenlinux.image.format.vhd'],
  ['vmdk', 'application/io.gardenlinux.image.format.vmdk'],
  ['ova', 'application/io.gardenlinux.image.format.ova'],
  ['sbom', 'application/vnd.cyclonedx+json'],
  ['tar', 'application/io.gardenlinux.image.archive.format.tar'],
  ['iso', 'application/io.gardenlinux.image.archive.format.iso'],
  ['oci', 'application/io.gardenlinux.image.archive.format.oci'],
  ['raw', 'application/io.gardenlinux.image.archive.format.raw'],
  ['efi', 'application/io.gardenlinux.efi'],
  ['uki', 'application/io.gardenlinux.uki'],
  ['log', 'application/io.gardenlinux.log'],
];

describe('mediaTypeForFile', () => {
  describe('every row of the spec §3.1 table, on a build file name', () => {
    for (const [suffix, mediaType] of SPEC_TABLE) {
      it(`<base>.${suffix} → ${mediaType}`, () => {
        assert.equal(mediaTypeForFile(`${BASE}.${suffix}`), mediaType);
      });
    }
  });

  describe('bare names match their own entry (PXE bundle members)', () => {
    const bare: Array<[string, string]> = [
      ['vmlinuz', 'application/io.gardenlinux.kernel'],
      ['initrd', 'application/io.gardenlinux.initrd'],
      ['cmdline', 'application/io.gardenlinux.cmdline'],
      ['root.squashfs', 'application/io.gardenlinux.squashfs'],
      ['squashfs', 'application/io.gardenlinux.squashfs'],
      ['initrd.unified', 'application/io.gardenlinux.initrd'],
    ];
    for (const [name, mediaType] of bare) {
      it(`${name} → ${mediaType}`, () => {
        assert.equal(mediaTypeForFile(name), mediaType);
      });
    }
  });

  describe('the longest matching suffix wins', () => {
    const cases: Array<[string, string]> = [
      [`${BASE}.pxe.tar.gz`, 'application/io.gardenlinux.image.archive.format.pxe.tar.gz'],
      [`${BASE}.gcpimage.tar.gz`, 'application/io.gardenlinux.image.format.gcpimage.tar.gz'],
      [`${BASE}.firecracker.tar.gz`, 'application/io.gardenlinux.image.archive.format.firecracker.tar.gz'],
      [`${BASE}.other.tar.gz`, 'application/io.gardenlinux.image.archive.format.tar.gz'],
      [`${BASE}.chroot.test.log`, 'application/io.gardenlinux.io.chroot.test.log'],
      [`${BASE}.platform.test.xml`, 'application/io.gardenlinux.io.platform.test.xml'],
      [`${BASE}.initrd.unified`, 'application/io.gardenlinux.initrd'],
      [`${BASE}.secureboot.db.auth`, 'application/io.gardenlinux.cert.secureboot.db.auth'],
    ];
    for (const [name, mediaType] of cases) {
      it(`${name.slice(BASE.length)} → ${mediaType}`, () => {
        assert.equal(mediaTypeForFile(name), mediaType);
      });
    }
  });

  describe('logs of artifacts are plain logs', () => {
    for (const suffix of ['tar.log', 'oci.log', 'raw.log', 'pxe.tar.gz.log', 'qcow2.log', 'cloud.test.log', 'oci.test.log', 'qemu.test.log']) {
      it(`.${suffix} → application/io.gardenlinux.log`, () => {
        assert.equal(mediaTypeForFile(`${BASE}.${suffix}`), 'application/io.gardenlinux.log');
      });
    }
  });

  describe('test XML the existing tool lacks is named like the chroot one (spec §3.1)', () => {
    for (const kind of ['cloud', 'oci', 'qemu']) {
      it(`.${kind}.test.xml → application/io.gardenlinux.io.${kind}.test.xml`, () => {
        assert.equal(mediaTypeForFile(`${BASE}.${kind}.test.xml`), `application/io.gardenlinux.io.${kind}.test.xml`);
      });
    }
  });

  it('gives .esp.tar the tar media type', () => {
    assert.equal(mediaTypeForFile(`${BASE}.esp.tar`), 'application/io.gardenlinux.image.archive.format.tar');
  });

  describe('unknown suffixes give undefined', () => {
    for (const name of [`${BASE}.bin`, `${BASE}.txt`, `${BASE}.secureboot.pk.key`, `${BASE}.tar.zst`, 'README', '']) {
      it(`${JSON.stringify(name)} → undefined`, () => {
        assert.equal(mediaTypeForFile(name), undefined);
      });
    }
  });

  it('matches suffixes only at a dot boundary', () => {
    assert.equal(mediaTypeForFile(`${BASE}.mytar`), undefined);
    assert.equal(mediaTypeForFile(`${BASE}.catalog`), undefined);
    assert.equal(mediaTypeForFile('myvmlinuz'), undefined);
    // `xinitrd` must not become an initrd, and `foo.xraw` not a raw image
    assert.equal(mediaTypeForFile(`${BASE}.xinitrd`), undefined);
    assert.equal(mediaTypeForFile(`${BASE}.xraw`), undefined);
  });

  it('is case-sensitive like the table', () => {
    assert.equal(mediaTypeForFile(`${BASE}.TAR`), undefined);
  });
});

describe('constants', () => {
  it('unknown files are published as application/octet-stream', () => {
    assert.equal(UNKNOWN_MEDIA_TYPE, 'application/octet-stream');
  });
  it('the PXE bundle suffix is .pxe.tar.gz', () => {
    assert.equal(PXE_BUNDLE_SUFFIX, '.pxe.tar.gz');
  });
});
