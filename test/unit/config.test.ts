import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { ConfigError, loadConfig } from '../../functions/publish/config';
import { InputError } from '../../functions/util/errors';

const REGISTRY = 'ghcr.io/gardenlinux/gardenlinux';
const base = { REGISTRY };

function assertConfigError(env: Record<string, string | undefined>, ...patterns: RegExp[]): void {
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      // ConfigError is an InputError: retrying cannot help
      assert.ok(err instanceof InputError);
      assert.equal(err.kind, 'input');
      for (const p of patterns) assert.match(err.message, p);
      return true;
    },
  );
}

describe('loadConfig: defaults', () => {
  it('fills in every default with only REGISTRY set', () => {
    const config = loadConfig({ REGISTRY });
    assert.deepEqual(config, {
      target: { kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gardenlinux/gardenlinux' },
      statePrefix: 'oci-publisher/',
      containerRepositories: {},
      s3: { forcePathStyle: false },
      blobConcurrency: 4,
      md5Check: 'etag',
      logLevel: 'info',
      registryTimeoutMs: 60_000,
      uploadChunkBytes: 16 * 1024 * 1024,
      chunkedUploads: false,
      maxConsecutiveFailures: 8,
      stopMarginMs: 30_000,
      s3Readers: 1,
      s3PartBytes: 8 * 1024 * 1024,
      signContainerImages: false,
      imageSource: 'https://github.com/gardenlinux/gardenlinux',
      aliasTemplates: [],
    });
    assert.equal('credentials' in config, false);
    assert.equal('stateBucket' in config, false);
    assert.equal('sourceDir' in config, false);
  });

  it('ignores unrelated variables', () => {
    const config = loadConfig({ REGISTRY, PATH: '/usr/bin', HOME: '/root', AWS_LAMBDA_FUNCTION_NAME: 'x' });
    assert.equal(config.blobConcurrency, 4);
    assert.equal(config.target.kind, 'registry');
  });

  it('takes every variable when set', () => {
    const config = loadConfig({
      REGISTRY: 'http://127.0.0.1:5000/gl/nightly',
      REGISTRY_USERNAME: 'robot',
      REGISTRY_PASSWORD: 's3cret',
      STATE_BUCKET: 'gl-state.bucket',
      STATE_PREFIX: 'publisher/state/',
      CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev","container-sslfips":"fips"}',
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:4568',
      S3_FORCE_PATH_STYLE: 'true',
      AWS_REGION: 'eu-central-1',
      SOURCE_DIR: '/data/bucket',
      BLOB_CONCURRENCY: '8',
      MD5_CHECK: 'off',
      LOG_LEVEL: 'debug',
      ALLOWED_BUCKETS: 'gardenlinux-github-releases, gl-state.bucket',
      REGISTRY_TIMEOUT_SECONDS: '2.5',
      UPLOAD_CHUNK_MIB: '5',
      CHUNKED_UPLOADS: 'true',
      MAX_CONSECUTIVE_FAILURES: '3',
      STOP_MARGIN_SECONDS: '0.5',
      S3_READERS: '4',
      S3_PART_MIB: '16',
      SIGNING_KEY: 'awskms:///alias/gardenlinux-oci-sign',
      SIGN_CONTAINER_IMAGES: 'true',
      AWS_ENDPOINT_URL_KMS: 'http://127.0.0.1:4566',
      ALIAS_TAGS: 'latest,{major}',
      VERIFY_PUBLIC_KEY: '/keys/oci-sign.pub',
      IMAGE_SOURCE: 'https://github.com/example/gardenlinux-fork',
    });
    assert.deepEqual(config, {
      target: { kind: 'registry', scheme: 'http', host: '127.0.0.1:5000', repository: 'gl/nightly' },
      credentials: { username: 'robot', password: 's3cret' },
      stateBucket: 'gl-state.bucket',
      statePrefix: 'publisher/state/',
      containerRepositories: { 'container-pythonDev': 'container-python-dev', 'container-sslfips': 'fips' },
      s3: { forcePathStyle: true, endpoint: 'http://127.0.0.1:4568', region: 'eu-central-1' },
      sourceDir: '/data/bucket',
      blobConcurrency: 8,
      md5Check: 'off',
      logLevel: 'debug',
      allowedBuckets: ['gardenlinux-github-releases', 'gl-state.bucket'],
      registryTimeoutMs: 2500,
      uploadChunkBytes: 5 * 1024 * 1024,
      chunkedUploads: true,
      maxConsecutiveFailures: 3,
      stopMarginMs: 500,
      s3Readers: 4,
      s3PartBytes: 16 * 1024 * 1024,
      signingKey: 'awskms:///alias/gardenlinux-oci-sign',
      signContainerImages: true,
      kmsEndpoint: 'http://127.0.0.1:4566',
      verifyPublicKey: '/keys/oci-sign.pub',
      imageSource: 'https://github.com/example/gardenlinux-fork',
      aliasTemplates: [
        { text: 'latest', placeholders: [] },
        { text: '{major}', placeholders: ['major'] },
      ],
    });
  });

  it('treats empty strings as unset', () => {
    const config = loadConfig({
      REGISTRY,
      REGISTRY_USERNAME: '',
      REGISTRY_PASSWORD: '',
      STATE_BUCKET: '',
      STATE_PREFIX: '',
      CONTAINER_REPOSITORIES: '',
      AWS_ENDPOINT_URL_S3: '',
      S3_FORCE_PATH_STYLE: '',
      AWS_REGION: '',
      SOURCE_DIR: '',
      BLOB_CONCURRENCY: '',
      MD5_CHECK: '',
      LOG_LEVEL: '',
      SIGNING_KEY: '',
      SIGN_CONTAINER_IMAGES: '',
      AWS_ENDPOINT_URL_KMS: '',
      ALIAS_TAGS: '',
      VERIFY_PUBLIC_KEY: '',
      IMAGE_SOURCE: '',
    });
    assert.deepEqual(config, {
      target: { kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gardenlinux/gardenlinux' },
      statePrefix: 'oci-publisher/',
      containerRepositories: {},
      s3: { forcePathStyle: false },
      blobConcurrency: 4,
      md5Check: 'etag',
      logLevel: 'info',
      registryTimeoutMs: 60_000,
      uploadChunkBytes: 16 * 1024 * 1024,
      chunkedUploads: false,
      maxConsecutiveFailures: 8,
      stopMarginMs: 30_000,
      s3Readers: 1,
      s3PartBytes: 8 * 1024 * 1024,
      signContainerImages: false,
      imageSource: 'https://github.com/gardenlinux/gardenlinux',
      aliasTemplates: [],
    });
  });

  it('treats undefined values as unset', () => {
    const config = loadConfig({ REGISTRY, BLOB_CONCURRENCY: undefined, REGISTRY_USERNAME: undefined });
    assert.equal(config.blobConcurrency, 4);
    assert.equal(config.credentials, undefined);
  });

  it('takes REGISTRY_CREDENTIALS_SECRET=none as no secret (a deployment parameter cannot be empty)', () => {
    assert.equal(loadConfig({ REGISTRY, REGISTRY_CREDENTIALS_SECRET: 'none' }).credentialsSecret, undefined);
    assert.equal(loadConfig({ REGISTRY, REGISTRY_CREDENTIALS_SECRET: 'gl/registry' }).credentialsSecret, 'gl/registry');
    // With no secret, static credentials may be given.
    assert.ok(loadConfig({ REGISTRY, REGISTRY_CREDENTIALS_SECRET: 'none', REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' }).credentials);
  });
});

describe('loadConfig: REGISTRY', () => {
  it('is required', () => {
    assertConfigError({}, /REGISTRY/, /required/);
  });

  it('is required even when set to an empty string', () => {
    assertConfigError({ REGISTRY: '' }, /REGISTRY/);
  });

  it('host/repository means HTTPS', () => {
    assert.deepEqual(loadConfig({ REGISTRY: 'registry.example.com:8443/gl/gardenlinux' }).target, {
      kind: 'registry',
      scheme: 'https',
      host: 'registry.example.com:8443',
      repository: 'gl/gardenlinux',
    });
  });

  it('http://host:port/repo means plain HTTP', () => {
    assert.deepEqual(loadConfig({ REGISTRY: 'http://localhost:5000/gl' }).target, {
      kind: 'registry',
      scheme: 'http',
      host: 'localhost:5000',
      repository: 'gl',
    });
  });

  it('https:// prefix is accepted', () => {
    assert.deepEqual(loadConfig({ REGISTRY: 'https://ghcr.io/gardenlinux/nightly' }).target, {
      kind: 'registry',
      scheme: 'https',
      host: 'ghcr.io',
      repository: 'gardenlinux/nightly',
    });
  });

  it('oci-layout:<dir> means a local layout, resolved to an absolute path', () => {
    assert.deepEqual(loadConfig({ REGISTRY: 'oci-layout:/tmp/layout' }).target, { kind: 'oci-layout', dir: '/tmp/layout' });
    assert.deepEqual(loadConfig({ REGISTRY: 'oci-layout:out/layout' }).target, { kind: 'oci-layout', dir: resolve('out/layout') });
  });

  it('a bad REGISTRY is a ConfigError naming REGISTRY', () => {
    assertConfigError({ REGISTRY: 'ftp://example.com/gl' }, /REGISTRY/, /ftp/);
    assertConfigError({ REGISTRY: 'ghcr.io' }, /REGISTRY/, /no repository/);
    assertConfigError({ REGISTRY: 'ghcr.io/GardenLinux' }, /REGISTRY/, /GardenLinux/);
    assertConfigError({ REGISTRY: 'oci-layout:' }, /REGISTRY/, /no directory/);
  });
});

describe('loadConfig: credentials', () => {
  it('come as a pair', () => {
    const config = loadConfig({ REGISTRY, REGISTRY_USERNAME: 'user', REGISTRY_PASSWORD: 'pass' });
    assert.deepEqual(config.credentials, { username: 'user', password: 'pass' });
  });

  it('a username alone is refused, naming both variables', () => {
    assertConfigError({ REGISTRY, REGISTRY_USERNAME: 'user' }, /REGISTRY_USERNAME/, /REGISTRY_PASSWORD/);
  });

  it('a password alone is refused, naming both variables', () => {
    assertConfigError({ REGISTRY, REGISTRY_PASSWORD: 'pass' }, /REGISTRY_USERNAME/, /REGISTRY_PASSWORD/);
  });

  it('a username with an empty password is refused (empty means unset)', () => {
    assertConfigError({ REGISTRY, REGISTRY_USERNAME: 'user', REGISTRY_PASSWORD: '' }, /REGISTRY_PASSWORD/);
  });
});

describe('loadConfig: STATE_PREFIX and STATE_BUCKET', () => {
  it('accepts a prefix ending with "/"', () => {
    assert.equal(loadConfig({ ...base, STATE_PREFIX: 'gl/state/' }).statePrefix, 'gl/state/');
  });

  it('refuses a prefix without a trailing "/"', () => {
    assertConfigError({ ...base, STATE_PREFIX: 'state' }, /STATE_PREFIX/, /end with "\/"/);
  });

  it('refuses a prefix under meta/ or objects/', () => {
    assertConfigError({ ...base, STATE_PREFIX: 'meta/' }, /STATE_PREFIX/, /meta\//);
    assertConfigError({ ...base, STATE_PREFIX: 'meta/singles/state/' }, /STATE_PREFIX/, /meta\//);
    assertConfigError({ ...base, STATE_PREFIX: 'objects/state/' }, /STATE_PREFIX/, /objects\//);
  });

  it('accepts prefixes that only look similar to meta/ or objects/', () => {
    assert.equal(loadConfig({ ...base, STATE_PREFIX: 'metadata/' }).statePrefix, 'metadata/');
    assert.equal(loadConfig({ ...base, STATE_PREFIX: 'state/meta/' }).statePrefix, 'state/meta/');
  });

  it('refuses a prefix starting with "/"', () => {
    assertConfigError({ ...base, STATE_PREFIX: '/state/' }, /STATE_PREFIX/);
  });

  it('refuses a STATE_BUCKET that is not a bucket name', () => {
    assertConfigError({ ...base, STATE_BUCKET: 'Not_A_Bucket' }, /STATE_BUCKET/);
    assertConfigError({ ...base, STATE_BUCKET: 'ab' }, /STATE_BUCKET/);
  });
});

describe('loadConfig: CONTAINER_REPOSITORIES', () => {
  it('parses a JSON map of flavor → repository path', () => {
    const config = loadConfig({ ...base, CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev","container-sslfips":"fips"}' });
    assert.deepEqual(config.containerRepositories, { 'container-pythonDev': 'container-python-dev', 'container-sslfips': 'fips' });
  });

  it('accepts an empty object and nested repository paths', () => {
    assert.deepEqual(loadConfig({ ...base, CONTAINER_REPOSITORIES: '{}' }).containerRepositories, {});
    assert.deepEqual(loadConfig({ ...base, CONTAINER_REPOSITORIES: '{"container_x":"a/b-c"}' }).containerRepositories, { container_x: 'a/b-c' });
  });

  it('refuses text that is not JSON', () => {
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: 'container-pythonDev=container-python-dev' }, /CONTAINER_REPOSITORIES/, /JSON object/);
  });

  it('refuses JSON that is not an object of strings', () => {
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '["fips"]' }, /CONTAINER_REPOSITORIES/);
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: 'null' }, /CONTAINER_REPOSITORIES/);
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"container-sslfips":1}' }, /CONTAINER_REPOSITORIES/);
  });

  it('refuses a value that is not a lowercase repository path', () => {
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"container-pythonDev":"Container-Python"}' }, /CONTAINER_REPOSITORIES/, /repository path/);
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"container-pythonDev":"a//b"}' }, /CONTAINER_REPOSITORIES/);
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"container-pythonDev":""}' }, /CONTAINER_REPOSITORIES/);
  });

  it('refuses a key that is not a flavor name', () => {
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"bad key!":"fips"}' }, /CONTAINER_REPOSITORIES/);
    assertConfigError({ ...base, CONTAINER_REPOSITORIES: '{"-container":"fips"}' }, /CONTAINER_REPOSITORIES/);
  });
});

describe('loadConfig: BLOB_CONCURRENCY', () => {
  it('accepts the bounds 1 and 32', () => {
    assert.equal(loadConfig({ ...base, BLOB_CONCURRENCY: '1' }).blobConcurrency, 1);
    assert.equal(loadConfig({ ...base, BLOB_CONCURRENCY: '32' }).blobConcurrency, 32);
  });

  it('refuses 0 and 33', () => {
    assertConfigError({ ...base, BLOB_CONCURRENCY: '0' }, /BLOB_CONCURRENCY/, /at least 1/);
    assertConfigError({ ...base, BLOB_CONCURRENCY: '33' }, /BLOB_CONCURRENCY/, /at most 32/);
    assertConfigError({ ...base, BLOB_CONCURRENCY: '-4' }, /BLOB_CONCURRENCY/);
  });

  it('refuses a fraction and text', () => {
    assertConfigError({ ...base, BLOB_CONCURRENCY: '2.5' }, /BLOB_CONCURRENCY/, /whole number/);
    assertConfigError({ ...base, BLOB_CONCURRENCY: 'many' }, /BLOB_CONCURRENCY/, /number/);
  });
});

describe('loadConfig: S3_READERS and S3_PART_MIB', () => {
  it('accept their bounds while the buffers of one file stay within 128 MiB', () => {
    const c = loadConfig({ ...base, S3_READERS: '16', S3_PART_MIB: '8' });
    assert.deepEqual([c.s3Readers, c.s3PartBytes], [16, 8 * 1024 * 1024]);
    const d = loadConfig({ ...base, S3_READERS: '2', S3_PART_MIB: '64' });
    assert.deepEqual([d.s3Readers, d.s3PartBytes], [2, 64 * 1024 * 1024]);
  });

  it('refuse values out of range, fractions and text, naming the variable', () => {
    assertConfigError({ ...base, S3_READERS: '0' }, /S3_READERS must be at least 1/);
    assertConfigError({ ...base, S3_READERS: '17' }, /S3_READERS must be at most 16/);
    assertConfigError({ ...base, S3_READERS: 'two' }, /S3_READERS must be a number/);
    assertConfigError({ ...base, S3_PART_MIB: '0' }, /S3_PART_MIB must be at least 1/);
    assertConfigError({ ...base, S3_PART_MIB: '65' }, /S3_PART_MIB must be at most 64/);
    assertConfigError({ ...base, S3_PART_MIB: '1.5' }, /S3_PART_MIB must be a whole number/);
  });

  it('refuse a combination whose buffers exceed 128 MiB per file', () => {
    assertConfigError({ ...base, S3_READERS: '16', S3_PART_MIB: '16' }, /S3_READERS × S3_PART_MIB is 256 MiB of buffers per file; at most 128 MiB/);
  });
});

describe('loadConfig: booleans and log level', () => {
  it('S3_FORCE_PATH_STYLE and CHUNKED_UPLOADS take true/false, 1/0, yes/no', () => {
    for (const [value, expected] of [
      ['true', true],
      ['1', true],
      ['yes', true],
      ['false', false],
      ['0', false],
      ['no', false],
    ] as const) {
      const config = loadConfig({ ...base, CHUNKED_UPLOADS: value, S3_FORCE_PATH_STYLE: value });
      assert.equal(config.chunkedUploads, expected, `CHUNKED_UPLOADS=${value}`);
      assert.equal(config.s3.forcePathStyle, expected, `S3_FORCE_PATH_STYLE=${value}`);
    }
  });

  it('refuses other boolean values, naming the variable', () => {
    assertConfigError({ ...base, CHUNKED_UPLOADS: 'maybe' }, /CHUNKED_UPLOADS/, /true or false/);
    assertConfigError({ ...base, S3_FORCE_PATH_STYLE: 'on' }, /S3_FORCE_PATH_STYLE/);
  });

  it('MD5_CHECK takes etag (the default), stream or off', () => {
    for (const value of ['etag', 'stream', 'off'] as const) assert.equal(loadConfig({ ...base, MD5_CHECK: value }).md5Check, value);
    assertConfigError({ ...base, MD5_CHECK: 'true' }, /MD5_CHECK must be etag, stream or off/);
  });

  it('LOG_LEVEL takes the four levels and refuses others', () => {
    for (const level of ['debug', 'info', 'warn', 'error'] as const) {
      assert.equal(loadConfig({ ...base, LOG_LEVEL: level }).logLevel, level);
    }
    assertConfigError({ ...base, LOG_LEVEL: 'trace' }, /LOG_LEVEL/);
  });

  it('refuses an AWS_ENDPOINT_URL_S3 that is not a URL', () => {
    assertConfigError({ ...base, AWS_ENDPOINT_URL_S3: 'localhost 4568' }, /AWS_ENDPOINT_URL_S3/);
  });
});

describe('loadConfig: reliability settings', () => {
  it('rejects values out of range, naming the variable', () => {
    assertConfigError({ REGISTRY, ALLOWED_BUCKETS: 'good-bucket,Bad_Bucket' }, /ALLOWED_BUCKETS must be a comma-separated list of S3 bucket names/);
    assertConfigError({ REGISTRY, REGISTRY_TIMEOUT_SECONDS: '0' }, /REGISTRY_TIMEOUT_SECONDS must be positive/);
    assertConfigError({ REGISTRY, UPLOAD_CHUNK_MIB: '0.5' }, /UPLOAD_CHUNK_MIB must be at least 1/);
    assertConfigError({ REGISTRY, MAX_CONSECUTIVE_FAILURES: '2.5' }, /MAX_CONSECUTIVE_FAILURES must be a whole number/);
    assertConfigError({ REGISTRY, STOP_MARGIN_SECONDS: '-1' }, /STOP_MARGIN_SECONDS must not be negative/);
    assertConfigError({ REGISTRY, CHUNKED_UPLOADS: 'sometimes' }, /CHUNKED_UPLOADS must be true or false/);
  });
});

describe('loadConfig: signing', () => {
  it('is off without SIGNING_KEY', () => {
    const c = loadConfig({ REGISTRY });
    assert.equal(c.signingKey, undefined);
    assert.equal(c.signContainerImages, false);
  });

  it('takes a KMS key URI or a PEM file, with an optional KMS endpoint', () => {
    const arn = 'arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const c = loadConfig({ REGISTRY, SIGNING_KEY: `awskms:///${arn}`, SIGN_CONTAINER_IMAGES: 'true', AWS_ENDPOINT_URL_KMS: 'http://127.0.0.1:4566' });
    assert.equal(c.signingKey, `awskms:///${arn}`);
    assert.equal(c.signContainerImages, true);
    assert.equal(c.kmsEndpoint, 'http://127.0.0.1:4566');
    assert.equal(loadConfig({ REGISTRY, SIGNING_KEY: 'file:/keys/oci-sign.pem' }).signingKey, 'file:/keys/oci-sign.pem');
  });

  it('refuses a key that is neither, naming the variable and the forms', () => {
    assertConfigError({ REGISTRY, SIGNING_KEY: 'alias/gardenlinux' }, /SIGNING_KEY must be awskms:\/\/\/<key id, key ARN or alias> or file:<PEM private key>/);
    assertConfigError({ REGISTRY, SIGNING_KEY: 'awskms:///gardenlinux' }, /SIGNING_KEY: "gardenlinux" is not a KMS key id, key ARN, alias\/<name> or alias ARN/);
    assertConfigError({ REGISTRY, AWS_ENDPOINT_URL_KMS: 'localhost' }, /AWS_ENDPOINT_URL_KMS must be a URL/);
  });

  it('refuses SIGN_CONTAINER_IMAGES without a key to sign with', () => {
    assertConfigError({ REGISTRY, SIGN_CONTAINER_IMAGES: 'true' }, /SIGN_CONTAINER_IMAGES=true needs a SIGNING_KEY/);
  });
});
