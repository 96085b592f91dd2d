import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { isRepositoryPath, parseTargetLocation } from '../../functions/registry/location';
import { InputError } from '../../functions/util/errors';

function assertInputError(value: string, ...patterns: RegExp[]): void {
  assert.throws(
    () => parseTargetLocation(value),
    (err: unknown) => {
      assert.ok(err instanceof InputError, `expected an InputError for ${value}, got ${String(err)}`);
      for (const p of patterns) assert.match(err.message, p);
      return true;
    },
    `"${value}" should be refused`,
  );
}

describe('isRepositoryPath', () => {
  it('accepts paths of lowercase components', () => {
    for (const p of [
      'gardenlinux',
      'gardenlinux/gardenlinux',
      'gardenlinux/nightly',
      'gl/fips',
      'container-python-dev',
      'a/b/c/d',
      'a0/9z',
      'a.b',
      'a_b',
      'a__b',
      'a-b',
      'a--b',
      'a---b',
      'a.b_c-d__e',
      '0',
    ]) {
      assert.equal(isRepositoryPath(p), true, p);
    }
  });

  it('refuses uppercase letters', () => {
    assert.equal(isRepositoryPath('GardenLinux'), false);
    assert.equal(isRepositoryPath('gl/Fips'), false);
  });

  it('refuses empty paths and empty components', () => {
    for (const p of ['', '/', 'a/', '/a', 'a//b']) assert.equal(isRepositoryPath(p), false, JSON.stringify(p));
  });

  it('refuses separators at the edges of a component or in invalid runs', () => {
    for (const p of ['-a', 'a-', '.a', 'a.', '_a', 'a_', 'a..b', 'a___b', 'a._b', 'a_-b', 'a.-b', 'gl/-x']) {
      assert.equal(isRepositoryPath(p), false, p);
    }
  });

  it('refuses characters outside the grammar (tags, digests, spaces)', () => {
    for (const p of ['a:tag', 'a@sha256:00', 'a b', 'a+b', 'ä', 'a\\b']) assert.equal(isRepositoryPath(p), false, p);
  });

  it('limits the length to 255 characters', () => {
    assert.equal(isRepositoryPath('a'.repeat(255)), true);
    assert.equal(isRepositoryPath('a'.repeat(256)), false);
    assert.equal(isRepositoryPath(`${'a'.repeat(127)}/${'b'.repeat(128)}`), false);
  });
});

describe('parseTargetLocation: registries', () => {
  it('host/repository is HTTPS', () => {
    assert.deepEqual(parseTargetLocation('ghcr.io/gardenlinux/gardenlinux'), {
      kind: 'registry',
      scheme: 'https',
      host: 'ghcr.io',
      repository: 'gardenlinux/gardenlinux',
    });
  });

  it('keeps a port with the host', () => {
    assert.deepEqual(parseTargetLocation('registry.example.com:5000/gl'), {
      kind: 'registry',
      scheme: 'https',
      host: 'registry.example.com:5000',
      repository: 'gl',
    });
    assert.deepEqual(parseTargetLocation('localhost:5000/a/b'), { kind: 'registry', scheme: 'https', host: 'localhost:5000', repository: 'a/b' });
  });

  it('http:// means plain HTTP', () => {
    assert.deepEqual(parseTargetLocation('http://127.0.0.1:5000/gl'), { kind: 'registry', scheme: 'http', host: '127.0.0.1:5000', repository: 'gl' });
  });

  it('https:// is accepted explicitly', () => {
    assert.deepEqual(parseTargetLocation('https://ghcr.io/gardenlinux/nightly'), {
      kind: 'registry',
      scheme: 'https',
      host: 'ghcr.io',
      repository: 'gardenlinux/nightly',
    });
  });

  it('takes the scheme case-insensitively', () => {
    const t = parseTargetLocation('HTTP://localhost:5000/gl');
    assert.ok(t.kind === 'registry');
    assert.equal(t.scheme, 'http');
  });

  it('lowercases the host but never the repository', () => {
    assert.deepEqual(parseTargetLocation('GHCR.io/gardenlinux/gardenlinux'), {
      kind: 'registry',
      scheme: 'https',
      host: 'ghcr.io',
      repository: 'gardenlinux/gardenlinux',
    });
  });

  it('trims whitespace and trailing slashes', () => {
    assert.deepEqual(parseTargetLocation('  ghcr.io/gardenlinux/gardenlinux//  '), {
      kind: 'registry',
      scheme: 'https',
      host: 'ghcr.io',
      repository: 'gardenlinux/gardenlinux',
    });
  });

  it('accepts an IPv6 literal with a port', () => {
    assert.deepEqual(parseTargetLocation('http://[::1]:5000/gl'), { kind: 'registry', scheme: 'http', host: '[::1]:5000', repository: 'gl' });
  });

  it('accepts the separators of the distribution grammar in the repository', () => {
    const t = parseTargetLocation('localhost/a.b_c__d---e/f');
    assert.ok(t.kind === 'registry');
    assert.equal(t.repository, 'a.b_c__d---e/f');
  });
});

describe('parseTargetLocation: oci-layout', () => {
  it('keeps an absolute directory', () => {
    assert.deepEqual(parseTargetLocation('oci-layout:/var/tmp/layout'), { kind: 'oci-layout', dir: '/var/tmp/layout' });
  });

  it('resolves a relative directory against the working directory', () => {
    assert.deepEqual(parseTargetLocation('oci-layout:out/layout'), { kind: 'oci-layout', dir: resolve(process.cwd(), 'out/layout') });
    assert.deepEqual(parseTargetLocation('oci-layout:./x/../y'), { kind: 'oci-layout', dir: resolve(process.cwd(), 'y') });
  });

  it('refuses oci-layout without a directory', () => {
    assertInputError('oci-layout:', /no directory/, /oci-layout:/);
  });
});

describe('parseTargetLocation: refusals', () => {
  it('refuses schemes other than http and https, saying what is expected', () => {
    for (const value of ['ftp://example.com/gl', 'docker://ghcr.io/gardenlinux/gardenlinux', 'oci://ghcr.io/gl', 's3://bucket/prefix']) {
      assertInputError(value, /REGISTRY has a scheme other than http:\/\/ and https:\/\/; expected "oci-layout:<dir>"/);
    }
  });

  it('refuses a value without a repository, saying what is expected', () => {
    assertInputError('ghcr.io', /names no repository/, /<host>\[:port\]\/<repository>/);
    assertInputError('ghcr.io/', /names no repository/);
    assertInputError('https://ghcr.io', /names no repository/);
    assertInputError('/gardenlinux', /names no repository/);
    assertInputError('', /names no repository/);
  });

  it('refuses a bad host, saying which part is wrong', () => {
    assertInputError('host_name/gl', /its host \(before the first "\/"\) is not a host name/);
    assertInputError('-ghcr.io/gl', /its host .* is not a host name/);
    assertInputError('ghcr.io:/gl', /not a host name/);
    assertInputError('ghcr.io:port/gl', /not a host name/);
    assertInputError('user@ghcr.io/gl', /must not contain credentials/);
  });

  it('refuses a bad repository, saying which part is wrong', () => {
    assertInputError('ghcr.io/GardenLinux', /its repository \(after the host\) is not a repository path/);
    assertInputError('ghcr.io/gardenlinux:1877.3', /is not a repository path/);
    assertInputError('ghcr.io//gl', /is not a repository path/);
    assertInputError('ghcr.io/gl/-x', /is not a repository path/);
    assertInputError('ghcr.io/a___b', /is not a repository path/);
  });

  it('never repeats the configured value or a part of it (issue 19: it may be a secret in the wrong place)', () => {
    for (const value of ['ftp://Zq7secret.example.com/gl', 'Zq7secret', 'Zq7secret_x/gl', 'ghcr.io/Zq7secret', 'oci-layout:', 'ghcr.io/gl@sha256:Zq7secret']) {
      assert.throws(
        () => parseTargetLocation(value),
        (err: unknown) => err instanceof InputError && !err.message.includes('Zq7secret') && !err.message.includes('example.com') && /^REGISTRY/.test(err.message),
        value,
      );
    }
  });
});

describe('parseTargetLocation: credentials in the location', () => {
  for (const value of [
    'https://robot:ghp_SECRETTOKEN@ghcr.io/gardenlinux/gardenlinux',
    'robot:ghp_SECRETTOKEN@ghcr.io/gardenlinux/gardenlinux',
    'http://robot@127.0.0.1:5000/gl',
    // A "/" in the password hid the "@" from the check before issue 19, and the value went into the message.
    'https://robot:ghp_/SECRETTOKEN@ghcr.io/gardenlinux/gardenlinux',
    'robot:ghp_/SECRETTOKEN@ghcr.io/gardenlinux/gardenlinux',
  ]) {
    it(`refuses ${value.replace('ghp_SECRETTOKEN', '…')} without repeating it`, () => {
      assert.throws(
        () => parseTargetLocation(value),
        (err: unknown) => {
          assert.ok(err instanceof Error);
          assert.match(err.message, /must not contain credentials: set REGISTRY_USERNAME and REGISTRY_PASSWORD/);
          assert.ok(!err.message.includes('SECRETTOKEN') && !err.message.includes('robot'));
          return true;
        },
      );
    });
  }
});
