import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  artifactManifestTag,
  baseFromMetadataKey,
  containerTag,
  flavorArch,
  isVersion,
  metadataKey,
  objectsPrefix,
  parseBaseName,
  type BaseName,
} from '../../functions/gardenlinux/naming';
import { InputError } from '../../functions/util/errors';

/** Asserts that `fn` throws an InputError whose message matches every pattern. */
function throwsInput(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

const CONTAINER_AMD64: BaseName = {
  base: 'container-amd64-1877.3-75df9f40',
  flavor: 'container',
  arch: 'amd64',
  version: '1877.3',
  commit: '75df9f40',
};

describe('parseBaseName', () => {
  describe('accepts the shapes of spec §1', () => {
    it('parses the spec example into flavor, arch, version and commit', () => {
      assert.deepEqual(parseBaseName('container-amd64-1877.3-75df9f40'), CONTAINER_AMD64);
    });

    it('keeps dashes inside the flavor (parsing from the right)', () => {
      assert.deepEqual(parseBaseName('aws-gardener_prod-arm64-1877.3-75df9f40'), {
        base: 'aws-gardener_prod-arm64-1877.3-75df9f40',
        flavor: 'aws-gardener_prod',
        arch: 'arm64',
        version: '1877.3',
        commit: '75df9f40',
      });
    });

    it('keeps mixed case and underscores in the flavor', () => {
      const n = parseBaseName('container-pythonDev-amd64-1877.3-75df9f40');
      assert.equal(n.flavor, 'container-pythonDev');
      assert.equal(n.arch, 'amd64');
      assert.equal(parseBaseName('metal_pxe-arm64-1877.3-0123abcd').flavor, 'metal_pxe');
    });

    it('accepts a flavor with several dashed parts', () => {
      const n = parseBaseName('kvm-gardener_prod-trustedboot-tpm2-amd64-1877.3-75df9f40');
      assert.equal(n.flavor, 'kvm-gardener_prod-trustedboot-tpm2');
      assert.equal(n.version, '1877.3');
    });

    it('accepts three-part versions like 2150.0.0', () => {
      const n = parseBaseName('container-arm64-2150.0.0-abcdef01');
      assert.equal(n.version, '2150.0.0');
      assert.equal(n.commit, 'abcdef01');
      assert.equal(n.arch, 'arm64');
    });

    it('accepts the literal commit "local"', () => {
      const n = parseBaseName('metal-amd64-1877.3-local');
      assert.equal(n.commit, 'local');
      assert.equal(n.flavor, 'metal');
    });

    it('keeps the whole input as base', () => {
      assert.equal(parseBaseName('gcp-gardener_prod-amd64-1877.3-75df9f40').base, 'gcp-gardener_prod-amd64-1877.3-75df9f40');
    });
  });

  describe('rejects anything else with an InputError that says what is wrong', () => {
    it('rejects the empty string', () => {
      throwsInput(() => parseBaseName(''), /empty/);
    });

    it('rejects names with fewer than four parts', () => {
      throwsInput(() => parseBaseName('amd64-1877.3-75df9f40'), /amd64-1877\.3-75df9f40/, /four/);
      throwsInput(() => parseBaseName('container'), /four/);
    });

    it('rejects a commit that is not 8 lowercase hex characters', () => {
      throwsInput(() => parseBaseName('container-amd64-1877.3-75DF9F40'), /commit/, /75DF9F40/);
      throwsInput(() => parseBaseName('container-amd64-1877.3-75df9f4'), /commit/);
      throwsInput(() => parseBaseName('container-amd64-1877.3-75df9f401'), /commit/);
      throwsInput(() => parseBaseName('container-amd64-1877.3-75dg9f40'), /commit/);
    });

    it('rejects a version that is not digits and dots', () => {
      throwsInput(() => parseBaseName('container-amd64-v1877.3-75df9f40'), /version/, /v1877\.3/);
      throwsInput(() => parseBaseName('container-amd64-1877.x-75df9f40'), /version/);
      throwsInput(() => parseBaseName('container-amd64-1877..3-75df9f40'), /version/);
    });

    it('rejects an architecture other than amd64 and arm64', () => {
      throwsInput(() => parseBaseName('container-x86_64-1877.3-75df9f40'), /architecture/, /x86_64/);
      throwsInput(() => parseBaseName('container-AMD64-1877.3-75df9f40'), /architecture/);
    });

    it('rejects a missing or malformed flavor', () => {
      throwsInput(() => parseBaseName('-amd64-1877.3-75df9f40'), /flavor/);
      throwsInput(() => parseBaseName('con tainer-amd64-1877.3-75df9f40'), /flavor/);
      throwsInput(() => parseBaseName('foo/bar-amd64-1877.3-75df9f40'), /flavor/);
      throwsInput(() => parseBaseName('a.b-amd64-1877.3-75df9f40'), /flavor/);
    });

    it('rejects names longer than 200 characters', () => {
      throwsInput(() => parseBaseName(`${'a'.repeat(190)}-amd64-1877.3-75df9f40`), /200/);
    });

    it('quotes the rejected name in the message', () => {
      throwsInput(() => parseBaseName('container-amd64-1877.3-zzzzzzzz'), /"container-amd64-1877\.3-zzzzzzzz"/);
    });
  });
});

describe('isVersion', () => {
  it('accepts DDDD.P and DDDD.P.0', () => {
    assert.equal(isVersion('1877.3'), true);
    assert.equal(isVersion('2150.0.0'), true);
  });
  it('rejects other shapes', () => {
    assert.equal(isVersion('1877.3-1'), false);
    assert.equal(isVersion('latest'), false);
    assert.equal(isVersion(''), false);
  });
});

describe('flavorArch', () => {
  it('joins flavor and arch with a dash', () => {
    assert.equal(flavorArch(CONTAINER_AMD64), 'container-amd64');
    assert.equal(
      flavorArch({ base: 'aws-gardener_prod-arm64-1877.3-75df9f40', flavor: 'aws-gardener_prod', arch: 'arm64', version: '1877.3', commit: '75df9f40' }),
      'aws-gardener_prod-arm64',
    );
  });
  it('is the same for two commits of one flavor-arch', () => {
    assert.equal(flavorArch(parseBaseName('metal-amd64-1877.3-11111111')), flavorArch(parseBaseName('metal-amd64-1877.3-22222222')));
  });
});

describe('artifactManifestTag', () => {
  it('is <version>-<base>-<arch> as gl-oci writes it (spec §3)', () => {
    assert.equal(artifactManifestTag(CONTAINER_AMD64), '1877.3-container-amd64-1877.3-75df9f40-amd64');
  });
  it('works for arm64 and three-part versions', () => {
    assert.equal(
      artifactManifestTag(parseBaseName('metal_pxe-arm64-2150.0.0-abcdef01')),
      '2150.0.0-metal_pxe-arm64-2150.0.0-abcdef01-arm64',
    );
  });
});

describe('containerTag', () => {
  it('is <arch>-<version> (spec §4)', () => {
    assert.equal(containerTag(CONTAINER_AMD64), 'amd64-1877.3');
    assert.equal(containerTag(parseBaseName('container-arm64-2150.0.0-abcdef01')), 'arm64-2150.0.0');
  });
});

describe('baseFromMetadataKey', () => {
  it('returns the base name of a key directly under meta/singles/', () => {
    assert.equal(baseFromMetadataKey('meta/singles/container-amd64-1877.3-75df9f40'), 'container-amd64-1877.3-75df9f40');
  });
  it('returns group document names as they are (validation is not its job)', () => {
    assert.equal(baseFromMetadataKey('meta/singles/container-1877.3-75df9f40'), 'container-1877.3-75df9f40');
  });
  it('returns undefined for the bare prefix', () => {
    assert.equal(baseFromMetadataKey('meta/singles/'), undefined);
  });
  it('returns undefined for keys in a sub-folder', () => {
    assert.equal(baseFromMetadataKey('meta/singles/sub/container-amd64-1877.3-75df9f40'), undefined);
    assert.equal(baseFromMetadataKey('meta/singles/container-amd64-1877.3-75df9f40/'), undefined);
  });
  it('returns undefined for keys outside meta/singles/', () => {
    assert.equal(baseFromMetadataKey('objects/container-amd64-1877.3-75df9f40/container-amd64-1877.3-75df9f40.oci'), undefined);
    assert.equal(baseFromMetadataKey('meta/single/container-amd64-1877.3-75df9f40'), undefined);
    assert.equal(baseFromMetadataKey('x/meta/singles/container-amd64-1877.3-75df9f40'), undefined);
    assert.equal(baseFromMetadataKey('meta/singles'), undefined);
  });
});

describe('S3 keys', () => {
  it('metadataKey is meta/singles/<base>', () => {
    assert.equal(metadataKey('container-amd64-1877.3-75df9f40'), 'meta/singles/container-amd64-1877.3-75df9f40');
  });
  it('objectsPrefix is objects/<base>/', () => {
    assert.equal(objectsPrefix('container-amd64-1877.3-75df9f40'), 'objects/container-amd64-1877.3-75df9f40/');
  });
});
