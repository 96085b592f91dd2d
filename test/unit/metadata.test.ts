import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseMetadata, type BuildMetadata, type MetadataDocument } from '../../functions/gardenlinux/metadata';
import { InputError } from '../../functions/util/errors';
import { sampleBuild } from '../../tools/sample-builds';

const BASE = 'container-amd64-1877.3-75df9f40';
const PREFIX = `objects/${BASE}/`;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

/** Asserts that `fn` throws an InputError whose message matches every pattern. */
function throwsInput(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

function asBuild(doc: MetadataDocument): BuildMetadata {
  assert.equal(doc.kind, 'build', `expected a build, got ${JSON.stringify(doc)}`);
  if (doc.kind !== 'build') throw new Error('unreachable');
  return doc.build;
}

function assertNotABuild(doc: MetadataDocument): void {
  assert.equal(doc.kind, 'not-a-build');
  if (doc.kind !== 'not-a-build') throw new Error('unreachable');
  assert.equal(typeof doc.reason, 'string');
  assert.ok(doc.reason.length > 0, 'a not-a-build document must say why');
}

interface DocOptions {
  architecture?: string | null;
  version?: string | null;
  committish?: string | null;
  timestamp?: string | null;
  epoch?: string;
  modifiers?: string | null;
  platform?: string | null;
  paths?: string | null;
  extra?: string[];
}

function pathEntry(name: string, opts: { key?: string; md5?: string; suffix?: string } = {}): string {
  return [
    `- md5sum: ${opts.md5 ?? '8f487029575e920bc99d007c9e3cbefc'}`,
    `  name: ${name}`,
    '  s3_bucket_name: gardenlinux-github-releases',
    `  s3_key: ${opts.key ?? PREFIX + name}`,
    `  sha256sum: ${EMPTY_SHA256}`,
    `  suffix: ${opts.suffix ?? name.slice(BASE.length)}`,
  ].join('\n');
}

const DEFAULT_PATHS = [pathEntry(`${BASE}.oci`), pathEntry(`${BASE}.release`, { md5: '0123456789abcdef0123456789abcdef' })].join('\n');

/** A metadata document shaped like spec §2.1; `null` drops a key. */
function doc(o: DocOptions = {}): string {
  const line = (key: string, value: string | null | undefined, dflt: string): string[] =>
    value === null ? [] : [`${key}: ${value ?? dflt}`];
  return [
    ...line('architecture', o.architecture, 'amd64'),
    ...line('build_committish', o.committish, '75df9f401a842914563f312899ec3ce34b24515c'),
    ...line('build_timestamp', o.timestamp, '2026-02-10 11:12:42.317474'),
    `gardenlinux_epoch: ${o.epoch ?? '1877'}`,
    'logs: null',
    ...line('modifiers', o.modifiers, '[_slim, base, container]'),
    ...(o.paths === null ? [] : ['paths:', o.paths ?? DEFAULT_PATHS]),
    ...line('platform', o.platform, 'container'),
    'publishing_group: container',
    'require_uefi: false',
    'secureboot: false',
    'tpm2: false',
    's3_bucket: gardenlinux-github-releases',
    `s3_key: meta/singles/${BASE}`,
    'test_result: null',
    ...line('version', o.version, "'1877.3'"),
    ...(o.extra ?? []),
    '',
  ].join('\n');
}

describe('parseMetadata: the current document shape (spec §2.1)', () => {
  it('reads the spec example document', () => {
    const b = asBuild(parseMetadata(doc(), BASE));
    assert.deepEqual(b.name, { base: BASE, flavor: 'container', arch: 'amd64', version: '1877.3', commit: '75df9f40' });
    assert.equal(b.platform, 'container');
    assert.deepEqual(b.modifiers, ['_slim', 'base', 'container']);
    assert.equal(b.commitLong, '75df9f401a842914563f312899ec3ce34b24515c');
    assert.equal(b.publishingGroup, 'container');
    assert.deepEqual(b.files, [
      { name: `${BASE}.oci`, key: `${PREFIX}${BASE}.oci`, md5: '8f487029575e920bc99d007c9e3cbefc' },
      { name: `${BASE}.release`, key: `${PREFIX}${BASE}.release`, md5: '0123456789abcdef0123456789abcdef' },
    ]);
  });

  it('reads the YAML timestamp as UTC', () => {
    const b = asBuild(parseMetadata(doc(), BASE));
    assert.ok(b.buildTime instanceof Date);
    assert.equal(b.buildTime.toISOString(), '2026-02-10T11:12:42.317Z');
  });

  it('reads a generated container build: every file, with the md5 of its bytes', () => {
    const s = sampleBuild({ flavor: 'container', arch: 'amd64' });
    const b = asBuild(parseMetadata(s.metadata, s.base));
    assert.equal(b.files.length, s.files.length);
    assert.deepEqual(
      b.files,
      s.files.map((f) => ({ name: f.name, key: `objects/${s.base}/${f.name}`, md5: md5(f.data) })),
    );
    assert.deepEqual(b.modifiers, ['_slim', 'base', 'container']);
    assert.equal(b.publishingGroup, 'container');
  });

  it('reads a generated arm64 build with a mixed-case, dashed flavor', () => {
    const s = sampleBuild({ flavor: 'container-pythonDev', arch: 'arm64', version: '2150.0.0', commit: 'abcdef01' });
    const b = asBuild(parseMetadata(s.metadata, s.base));
    assert.deepEqual(b.name, {
      base: 'container-pythonDev-arm64-2150.0.0-abcdef01',
      flavor: 'container-pythonDev',
      arch: 'arm64',
      version: '2150.0.0',
      commit: 'abcdef01',
    });
  });

  it('never exposes the (wrong) sha256sum: a file carries only name, key and md5', () => {
    const b = asBuild(parseMetadata(doc(), BASE));
    for (const f of b.files) assert.deepEqual(Object.keys(f).sort(), ['key', 'md5', 'name']);
    assert.ok(!JSON.stringify(b).includes(EMPTY_SHA256));
  });

  it('lower-cases an upper-case md5', () => {
    const b = asBuild(parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { md5: '8F487029575E920BC99D007C9E3CBEFC' }) }), BASE));
    assert.equal(b.files[0]?.md5, '8f487029575e920bc99d007c9e3cbefc');
  });

  it('leaves md5 out when md5sum is null', () => {
    const b = asBuild(parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { md5: 'null' }) }), BASE));
    assert.deepEqual(b.files, [{ name: `${BASE}.oci`, key: `${PREFIX}${BASE}.oci` }]);
  });

  it('tolerates unknown keys', () => {
    const b = asBuild(
      parseMetadata(doc({ extra: ['some_future_key: {nested: [1, 2]}', 'another: value', 'glci_version: null', 'published_image_metadata: null'] }), BASE),
    );
    assert.equal(b.name.base, BASE);
    assert.equal(b.files.length, 2);
  });

  it('leaves publishingGroup out when the document has none (older documents)', () => {
    const b = asBuild(parseMetadata(doc().replace('publishing_group: container\n', ''), BASE));
    assert.equal(b.publishingGroup, undefined);
  });

  it('accepts an unquoted version that YAML reads as a number', () => {
    const b = asBuild(parseMetadata(doc({ version: '1877.3' }), BASE));
    assert.equal(b.name.version, '1877.3');
  });

  it('accepts any build_committish for a local build', () => {
    const base = 'container-amd64-1877.3-local';
    const text = doc({ committish: 'unknown', paths: `- name: ${base}.oci\n  s3_key: objects/${base}/${base}.oci` });
    const b = asBuild(parseMetadata(text, base));
    assert.equal(b.name.commit, 'local');
  });

  it('accepts a document without build_committish', () => {
    const b = asBuild(parseMetadata(doc({ committish: null }), BASE));
    assert.equal(b.commitLong, undefined);
  });

  it('gives empty modifiers when the document has none', () => {
    assert.deepEqual(asBuild(parseMetadata(doc({ modifiers: null }), BASE)).modifiers, []);
    assert.deepEqual(asBuild(parseMetadata(doc({ modifiers: 'null' }), BASE)).modifiers, []);
  });

  it('leaves buildTime out when the document has no build_timestamp', () => {
    assert.equal(asBuild(parseMetadata(doc({ timestamp: null }), BASE)).buildTime, undefined);
  });
});

describe('parseMetadata: older document shapes (spec §2.1)', () => {
  it('reads a generated legacy document (epoch string, comma modifiers, suffix without dot, ISO timestamp)', () => {
    const s = sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true, legacyMetadata: true });
    assert.match(s.metadata, /^modifiers: base,server,metal,_pxe$/m, 'the sample must really be the legacy shape');
    const b = asBuild(parseMetadata(s.metadata, s.base));
    assert.deepEqual(b.modifiers, ['base', 'server', 'metal', '_pxe']);
    assert.equal(b.platform, 'metal');
    assert.equal(b.buildTime?.toISOString(), '2026-02-10T11:12:42.317Z');
    assert.deepEqual(
      b.files,
      s.files.map((f) => ({ name: f.name, key: `objects/${s.base}/${f.name}`, md5: md5(f.data) })),
    );
  });

  it('accepts gardenlinux_epoch as a string', () => {
    const b = asBuild(parseMetadata(doc({ epoch: "'1877'" }), BASE));
    assert.equal(b.name.version, '1877.3');
  });

  it('splits modifiers given as a comma string, dropping blanks and spaces', () => {
    assert.deepEqual(asBuild(parseMetadata(doc({ modifiers: '_slim,base,container' }), BASE)).modifiers, ['_slim', 'base', 'container']);
    assert.deepEqual(asBuild(parseMetadata(doc({ modifiers: "'_slim, base,,container'" }), BASE)).modifiers, ['_slim', 'base', 'container']);
  });

  it('accepts suffix without the leading dot', () => {
    const b = asBuild(parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { suffix: 'oci' }) }), BASE));
    assert.equal(b.files[0]?.name, `${BASE}.oci`);
  });

  it('reads an ISO string timestamp without zone as UTC', () => {
    const b = asBuild(parseMetadata(doc({ timestamp: "'2026-02-10T11:12:42.317474'" }), BASE));
    assert.equal(b.buildTime?.toISOString(), '2026-02-10T11:12:42.317Z');
  });

  it('reads an ISO string timestamp with a space instead of T', () => {
    const b = asBuild(parseMetadata(doc({ timestamp: "'2026-02-10 11:12:42'" }), BASE));
    assert.equal(b.buildTime?.toISOString(), '2026-02-10T11:12:42.000Z');
  });

  it('honours a zone in an ISO string timestamp', () => {
    assert.equal(asBuild(parseMetadata(doc({ timestamp: "'2026-02-10T11:12:42+02:00'" }), BASE)).buildTime?.toISOString(), '2026-02-10T09:12:42.000Z');
    assert.equal(asBuild(parseMetadata(doc({ timestamp: "'2026-02-10T11:12:42Z'" }), BASE)).buildTime?.toISOString(), '2026-02-10T11:12:42.000Z');
  });

  it('ignores a timestamp string that is not a date instead of failing', () => {
    const b = asBuild(parseMetadata(doc({ timestamp: "'yesterday'" }), BASE));
    assert.equal(b.buildTime, undefined);
    assert.equal(b.files.length, 2);
  });
});

describe('parseMetadata: documents that are not builds (spec §2.1)', () => {
  it('reports a group document as not a build', () => {
    const group = [
      'glci_version: 0.4.2',
      'manifests:',
      '- container-amd64-1877.3-75df9f40',
      '- container-arm64-1877.3-75df9f40',
      'version: 1877.3',
      '',
    ].join('\n');
    assertNotABuild(parseMetadata(group, 'container-1877.3-75df9f40'));
  });

  it('reports a group document without glci_version as not a build', () => {
    assertNotABuild(parseMetadata('manifests:\n- a\n- b\n', 'aws-gardener_prod-1877.3-75df9f40'));
  });

  it('does not require a group document to be named like a build', () => {
    const doc = parseMetadata('manifests: []\nglci_version: 1.0.0\n', 'container-1877.3-75df9f40');
    assertNotABuild(doc);
  });

  it('reads a build document the cloud publisher rewrote (glci_version) like the original (revised spec §2.1)', () => {
    assert.deepEqual(parseMetadata(doc({ extra: ['glci_version: 0.4.2'] }), BASE), parseMetadata(doc(), BASE));
  });

  it('reads a build document rewritten with published_image_metadata like the original', () => {
    const extra = ['published_image_metadata:', '  published_aws_images:', '  - ami_id: ami-0123456789abcdef0', '    aws_region_id: eu-central-1', 'individual_published_image_metadata: {}'];
    assert.deepEqual(parseMetadata(doc({ extra }), BASE), parseMetadata(doc(), BASE));
  });

  it('reads a generated build rewritten by the cloud publisher like the original', () => {
    const s = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' });
    assert.deepEqual(parseMetadata(`${s.metadata}glci_version: 0.4.2\npublished_image_metadata: {}\n`, s.base), parseMetadata(s.metadata, s.base));
  });

  it('treats null glci_version / published_image_metadata as a build', () => {
    const b = asBuild(parseMetadata(doc({ extra: ['glci_version: null', 'published_image_metadata: ~'] }), BASE));
    assert.equal(b.name.base, BASE);
  });
});

describe("parseMetadata: the bash uploader's documents (upload_to_s3.sh, release branches; spec §2.1)", () => {
  it('takes exactly <base>/ off a file name written with its directory', () => {
    const paths = [pathEntry(`${BASE}/${BASE}.oci`, { key: `${PREFIX}${BASE}.oci`, suffix: '.oci' }), pathEntry(`${BASE}/${BASE}.release`, { key: `${PREFIX}${BASE}.release`, suffix: '.release' })].join('\n');
    const b = asBuild(parseMetadata(doc({ paths }), BASE));
    assert.deepEqual(b.files.map((f) => [f.name, f.key]), [
      [`${BASE}.oci`, `${PREFIX}${BASE}.oci`],
      [`${BASE}.release`, `${PREFIX}${BASE}.release`],
    ]);
  });

  it('takes off nothing else: another directory, or a deeper path, is refused', () => {
    throwsInput(() => parseMetadata(doc({ paths: pathEntry(`other-dir/${BASE}.oci`, { key: `${PREFIX}${BASE}.oci` }) }), BASE), /not a plain file name/);
    throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}/sub/${BASE}.oci`, { key: `${PREFIX}${BASE}.oci` }) }), BASE), /not a plain file name/);
    throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}/`, { key: PREFIX }) }), BASE), /not a plain file name/);
  });

  it('reads its build_timestamp, an ISO string with a comma and nanoseconds, to the millisecond', () => {
    assert.equal(asBuild(parseMetadata(doc({ timestamp: '2026-12-02T02:01:07,123456789+00:00' }), BASE)).buildTime?.toISOString(), '2026-12-02T02:01:07.123Z');
    assert.equal(asBuild(parseMetadata(doc({ timestamp: "'2026-12-02T02:01:07,000000000+01:00'" }), BASE)).buildTime?.toISOString(), '2026-12-02T01:01:07.000Z');
  });
});

describe('parseMetadata: values a YAML 1.1 reader takes for numbers', () => {
  it('takes md5sum from its source text: an md5 read as a float (Infinity) or as a huge integer', () => {
    const paths = [
      pathEntry(`${BASE}.oci`, { md5: '11988568201e48790915010587776724' }),
      pathEntry(`${BASE}.release`, { md5: '13225259095126792579184336680324' }),
    ].join('\n');
    const b = asBuild(parseMetadata(doc({ paths }), BASE));
    assert.deepEqual(b.files.map((f) => f.md5), ['11988568201e48790915010587776724', '13225259095126792579184336680324']);
  });
});

describe('parseMetadata: errors', () => {
  it('rejects text that is not YAML', () => {
    throwsInput(() => parseMetadata('architecture: [amd64\npaths: {', BASE), /YAML/, new RegExp(BASE));
  });

  it('rejects YAML that is not a mapping', () => {
    throwsInput(() => parseMetadata('- architecture\n- paths\n', BASE), /mapping/);
    throwsInput(() => parseMetadata('just a string\n', BASE), /mapping/);
    throwsInput(() => parseMetadata('42\n', BASE), /mapping/);
    throwsInput(() => parseMetadata('', BASE), /mapping/);
  });

  it('rejects a document larger than 16 MiB', () => {
    throwsInput(() => parseMetadata(doc({ extra: [`padding: ${'x'.repeat(16 * 1024 * 1024)}`] }), BASE), /larger than 16 MiB/);
  });

  describe('missing required fields', () => {
    it('rejects a build without architecture', () => {
      throwsInput(() => parseMetadata(doc({ architecture: null }), BASE), /architecture/);
    });
    it('rejects a build without paths', () => {
      throwsInput(() => parseMetadata(doc({ paths: null }), BASE), /paths/);
    });
    it('rejects a build with an empty file list', () => {
      throwsInput(() => parseMetadata(doc({ paths: '[]' }).replace('paths:\n[]', 'paths: []'), BASE), /paths/);
    });
    it('rejects a build without platform', () => {
      throwsInput(() => parseMetadata(doc({ platform: null }), BASE), /platform/);
    });
    it('rejects a build without version', () => {
      throwsInput(() => parseMetadata(doc({ version: null }), BASE), /version/);
    });
    it('rejects a file entry without s3_key', () => {
      throwsInput(() => parseMetadata(doc({ paths: `- name: ${BASE}.oci\n  md5sum: 8f487029575e920bc99d007c9e3cbefc` }), BASE), /s3_key/);
    });
    it('rejects a file entry without name', () => {
      throwsInput(() => parseMetadata(doc({ paths: `- s3_key: ${PREFIX}${BASE}.oci` }), BASE), /name/);
    });
  });

  describe('disagreement with the base name', () => {
    it('rejects an unsupported architecture', () => {
      throwsInput(() => parseMetadata(doc({ architecture: 'x86_64' }), BASE), /architecture/);
    });
    it('rejects architecture arm64 in an amd64 build', () => {
      throwsInput(() => parseMetadata(doc({ architecture: 'arm64' }), BASE), /architecture/, /arm64/, /amd64/);
    });
    it('rejects a version other than the base name says', () => {
      throwsInput(() => parseMetadata(doc({ version: "'1877.4'" }), BASE), /version/, /1877\.4/, /1877\.3/);
    });
    it('rejects a build_committish that does not start with the commit', () => {
      throwsInput(
        () => parseMetadata(doc({ committish: 'deadbeef1a842914563f312899ec3ce34b24515c' }), BASE),
        /committish|commit/,
        /deadbeef/,
        /75df9f40/,
      );
    });
    it('rejects a build document whose key is not a base name', () => {
      throwsInput(() => parseMetadata(doc(), 'container-amd64-1877.3'), /base name/);
    });
  });

  describe('files', () => {
    it('rejects a key in another build’s folder', () => {
      const other = 'container-amd64-1877.3-00000000';
      throwsInput(
        () => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { key: `objects/${other}/${BASE}.oci` }) }), BASE),
        /paths\.0/,
        new RegExp(`objects/${other}/`),
      );
    });
    it('rejects a key outside objects/', () => {
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(BASE, { key: `meta/singles/${BASE}` }) }), BASE), /meta\/singles/);
    });
    it('rejects a key whose file name differs from name', () => {
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { key: `${PREFIX}${BASE}.raw` }) }), BASE), /paths\.0/, /\.raw/);
    });
    it('rejects a file name with a path in it', () => {
      throwsInput(
        () => parseMetadata(doc({ paths: pathEntry(`../${BASE}.oci`, { key: `objects/${BASE}.oci` }) }), BASE),
        /paths\.0/,
        /not a plain file name/,
      );
      throwsInput(() => parseMetadata(doc({ paths: pathEntry('sub/x.oci') }), BASE), /sub\/x\.oci/);
    });
    it('rejects a key in a sub-folder of the build', () => {
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { key: `${PREFIX}sub/${BASE}.oci` }) }), BASE), /paths\.0/);
    });
    it('rejects a file listed twice', () => {
      const paths = [pathEntry(`${BASE}.oci`), pathEntry(`${BASE}.release`), pathEntry(`${BASE}.oci`)].join('\n');
      throwsInput(() => parseMetadata(doc({ paths }), BASE), /paths\.2/, /twice|duplicate/i, new RegExp(`${BASE}\\.oci`));
    });
    it('rejects an md5sum that is not 32 hex characters', () => {
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { md5: 'not-an-md5' }) }), BASE), /md5sum/);
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { md5: '8f487029575e920bc99d007c9e3cbef' }) }), BASE), /md5sum/);
      throwsInput(() => parseMetadata(doc({ paths: pathEntry(`${BASE}.oci`, { md5: '8f487029575e920bc99d007c9e3cbefg' }) }), BASE), /md5sum/);
    });
  });
});
