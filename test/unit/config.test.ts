import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
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
      targets: [{ kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gardenlinux/gardenlinux' }],
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
      targets: [{ kind: 'registry', scheme: 'http', host: '127.0.0.1:5000', repository: 'gl/nightly' }],
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
      targets: [{ kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gardenlinux/gardenlinux' }],
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

  it('a bad REGISTRY is a ConfigError naming REGISTRY and the part that is wrong', () => {
    assertConfigError({ REGISTRY: 'ftp://example.com/gl' }, /REGISTRY/, /scheme other than http:\/\/ and https:\/\//);
    assertConfigError({ REGISTRY: 'ghcr.io' }, /REGISTRY/, /no repository/);
    assertConfigError({ REGISTRY: 'ghcr.io/GardenLinux' }, /REGISTRY/, /its repository \(after the host\) is not a repository path/);
    assertConfigError({ REGISTRY: 'oci-layout:' }, /REGISTRY/, /no directory/);
  });
});

describe('loadConfig: several destinations', () => {
  it('REGISTRY takes a comma-separated list, the first one first, layouts mixed in', () => {
    const c = loadConfig({ REGISTRY: 'ghcr.io/gardenlinux/gardenlinux, http://127.0.0.1:5000/gl ,oci-layout:/tmp/out' });
    assert.deepEqual(c.targets, [
      { kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gardenlinux/gardenlinux' },
      { kind: 'registry', scheme: 'http', host: '127.0.0.1:5000', repository: 'gl' },
      { kind: 'oci-layout', dir: '/tmp/out' },
    ]);
    assert.deepEqual(c.target, c.targets[0]);
  });

  it('REGISTRY_CREDENTIALS_SECRET as a JSON object gives each host its own secret', () => {
    const c = loadConfig({ REGISTRY: 'ghcr.io/gl,quay.io/gl', REGISTRY_CREDENTIALS_SECRET: '{"GHCR.io":"gl/ghcr","quay.io":"arn:aws:secretsmanager:eu-central-1:123456789012:secret:gl/quay"}' });
    assert.deepEqual(c.credentialsSecrets, { 'ghcr.io': 'gl/ghcr', 'quay.io': 'arn:aws:secretsmanager:eu-central-1:123456789012:secret:gl/quay' });
    assert.equal(c.credentialsSecret, undefined);
  });

  it('one secret name serves several hosts (its value keyed by host); static credentials serve one host with layouts', () => {
    assert.equal(loadConfig({ REGISTRY: 'ghcr.io/gl,quay.io/gl', REGISTRY_CREDENTIALS_SECRET: 'gl/registries' }).credentialsSecret, 'gl/registries');
    assert.ok(loadConfig({ REGISTRY: 'ghcr.io/gl,oci-layout:/tmp/x', REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' }).credentials);
    assert.ok(loadConfig({ REGISTRY: 'ghcr.io/gl,ghcr.io/gl2', REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' }).credentials, 'two repositories of one host');
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
    assertConfigError({ REGISTRY, SIGNING_KEY: 'alias/gardenlinux' }, /SIGNING_KEY must be awskms:\/\/\/<key id, key ARN or alias> or file:<path to a PEM private key>$/);
    assertConfigError({ REGISTRY, SIGNING_KEY: 'awskms:///gardenlinux' }, /SIGNING_KEY: what follows awskms:\/\/\[<host>\]\/ is not a KMS key id, key ARN, alias\/<name> or alias ARN$/);
    assertConfigError({ REGISTRY, AWS_ENDPOINT_URL_KMS: 'localhost' }, /AWS_ENDPOINT_URL_KMS must be a URL/);
  });

  it('refuses SIGN_CONTAINER_IMAGES without a key to sign with', () => {
    assertConfigError({ REGISTRY, SIGN_CONTAINER_IMAGES: 'true' }, /SIGN_CONTAINER_IMAGES=true needs a SIGNING_KEY/);
  });
});

/**
 * Issue 19, defect 3: a configuration error never repeats a configured value, since any value may be a secret (a
 * private key, a password, a token pasted into the wrong variable). Every error path of loadConfig is listed here
 * with a secret-looking value where its shape allows one: the message must name the variable, say what is
 * expected, and hold no part of the secret; where the value looks like key material, it must say so.
 */
describe('loadConfig: no error message repeats a configured value (issue 19)', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const PEM = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  const PUBLIC_PEM = publicKey.export({ format: 'pem', type: 'spki' }) as string;
  /** the PEM body alone: a long base64 blob without the armor */
  const BLOB = PEM.split('\n').filter((l) => l !== '' && !l.startsWith('-----')).join('');
  const MARKER = 'Zq7Marker4Secret';
  const marker = 'zq7marker4secret';
  /** letters only: what a placeholder may hold */
  const letters = 'zqmarkersecret';

  /** The first run of 12 characters (or the whole secret, if shorter) of `secret` that `text` contains, if any. */
  function leaked(text: string, secret: string): string | undefined {
    const flat = secret.replace(/\s+/g, '');
    const width = Math.min(12, flat.length);
    for (let i = 0; i + width <= flat.length; i++) {
      const part = flat.slice(i, i + width);
      if (text.includes(part)) return part;
    }
    return undefined;
  }

  interface Case {
    /** what is wrong */
    title: string;
    env: Record<string, string>;
    /** the variables the message must name */
    names: string[];
    /** what it must say is expected */
    expected: RegExp;
    /** what must not appear in it, in whole or in part */
    secret?: string;
    /** what the message must say the value looks like */
    looksLike?: RegExp;
  }

  const cases: Case[] = [
    { title: 'REGISTRY unset', env: {}, names: ['REGISTRY'], expected: /is required \(the CLI: -r, --registry\)/ },
    { title: 'REGISTRY holding a PEM private key', env: { REGISTRY: PEM }, names: ['REGISTRY'], expected: /expected "oci-layout:<dir>", "<host>\[:port\]\/<repository>"/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'REGISTRY with user:password@', env: { REGISTRY: `https://robot:${MARKER}@ghcr.io/gl` }, names: ['REGISTRY', 'REGISTRY_USERNAME', 'REGISTRY_PASSWORD'], expected: /must not contain credentials/, secret: MARKER },
    { title: 'REGISTRY with user:password@ and a "/" in the password', env: { REGISTRY: `https://robot:pa/${MARKER}@ghcr.io/gl` }, names: ['REGISTRY'], expected: /must not contain credentials/, secret: MARKER },
    { title: 'REGISTRY without a scheme, with user:password@ and a "/" in the password', env: { REGISTRY: `robot:pa/${MARKER}@ghcr.io/gl` }, names: ['REGISTRY'], expected: /must not contain credentials/, secret: MARKER },
    { title: 'REGISTRY oci-layout: without a directory', env: { REGISTRY: 'oci-layout:' }, names: ['REGISTRY'], expected: /names no directory; expected/ },
    { title: 'REGISTRY with another scheme', env: { REGISTRY: `ftp://${marker}.example.com/gl` }, names: ['REGISTRY'], expected: /scheme other than http:\/\/ and https:\/\/; expected/, secret: marker },
    { title: 'REGISTRY without a repository (a password pasted into it)', env: { REGISTRY: MARKER }, names: ['REGISTRY'], expected: /names no repository; expected/, secret: MARKER },
    { title: 'REGISTRY with a bad host', env: { REGISTRY: `${marker}_x/gl` }, names: ['REGISTRY'], expected: /host .*is not a host name with an optional port/, secret: marker },
    { title: 'REGISTRY with a bad repository', env: { REGISTRY: `ghcr.io/${MARKER}` }, names: ['REGISTRY'], expected: /repository .*is not a repository path \(lowercase/, secret: MARKER },
    { title: 'REGISTRY with an empty entry', env: { REGISTRY: 'ghcr.io/gl,,quay.io/gl' }, names: ['REGISTRY'], expected: /REGISTRY entry #2: it is empty/ },
    { title: 'REGISTRY with user:password@ in its second entry', env: { REGISTRY: `ghcr.io/gl,https://robot:${MARKER}@quay.io/gl` }, names: ['REGISTRY'], expected: /REGISTRY entry #2: REGISTRY must not contain credentials/, secret: MARKER },
    { title: 'REGISTRY with a bad repository in its third entry', env: { REGISTRY: `ghcr.io/gl,quay.io/gl,oci-layout:/tmp/${marker},ghcr.io/${MARKER}` }, names: ['REGISTRY'], expected: /REGISTRY entry #4: REGISTRY: its repository/, secret: MARKER },
    { title: 'REGISTRY naming one destination twice', env: { REGISTRY: `ghcr.io/gl,quay.io/gl,https://ghcr.io/gl` }, names: ['REGISTRY'], expected: /entry #3 names the same destination as an earlier one/ },
    { title: 'REGISTRY_USERNAME/PASSWORD with two registry hosts', env: { REGISTRY: 'ghcr.io/gl,quay.io/gl', REGISTRY_USERNAME: 'robot', REGISTRY_PASSWORD: MARKER }, names: ['REGISTRY_USERNAME', 'REGISTRY_PASSWORD', 'REGISTRY_CREDENTIALS_SECRET'], expected: /serve one registry, and REGISTRY names several hosts/, secret: MARKER },
    { title: 'REGISTRY_CREDENTIALS_SECRET starting with "{" that is no JSON', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: `{${MARKER}` }, names: ['REGISTRY_CREDENTIALS_SECRET'], expected: /is not a JSON object of registry host to secret name or ARN/, secret: MARKER },
    { title: 'REGISTRY_CREDENTIALS_SECRET mapping a host to no secret name', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: `{"ghcr.io":"${MARKER} x"}` }, names: ['REGISTRY_CREDENTIALS_SECRET'], expected: /expected a JSON object of registry host to secret name or ARN, such as/, secret: MARKER },
    { title: 'REGISTRY_CREDENTIALS_SECRET mapping a host REGISTRY does not name', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: `{"ghcr.io":"gl/a","${marker}.example.com":"gl/b"}` }, names: ['REGISTRY_CREDENTIALS_SECRET'], expected: /key #2 is not the host of a registry in REGISTRY/, secret: marker },
    { title: 'AWS_ENDPOINT_URL_SECRETS_MANAGER that is no URL', env: { REGISTRY, AWS_ENDPOINT_URL_SECRETS_MANAGER: MARKER }, names: ['AWS_ENDPOINT_URL_SECRETS_MANAGER'], expected: /must be a URL/, secret: MARKER },
    { title: 'AWS_ENDPOINT_URL_SECRETS_MANAGER with user:password@', env: { REGISTRY, AWS_ENDPOINT_URL_SECRETS_MANAGER: `http://robot:${MARKER}@127.0.0.1:4566` }, names: ['AWS_ENDPOINT_URL_SECRETS_MANAGER'], expected: /must not contain credentials \(user:password@\)/, secret: MARKER },
    { title: 'REGISTRY_USERNAME without REGISTRY_PASSWORD', env: { REGISTRY, REGISTRY_USERNAME: MARKER }, names: ['REGISTRY_USERNAME', 'REGISTRY_PASSWORD'], expected: /must be set together/, secret: MARKER },
    { title: 'REGISTRY_PASSWORD without REGISTRY_USERNAME', env: { REGISTRY, REGISTRY_PASSWORD: MARKER }, names: ['REGISTRY_USERNAME', 'REGISTRY_PASSWORD'], expected: /must be set together/, secret: MARKER },
    { title: 'REGISTRY_PASSWORD holding a PEM private key without REGISTRY_USERNAME', env: { REGISTRY, REGISTRY_PASSWORD: PEM }, names: ['REGISTRY_USERNAME', 'REGISTRY_PASSWORD'], expected: /must be set together/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'REGISTRY_CREDENTIALS_SECRET that is no secret name', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: `gl/registry ${MARKER}` }, names: ['REGISTRY_CREDENTIALS_SECRET'], expected: /must be a secret name or ARN/, secret: MARKER },
    { title: 'REGISTRY_CREDENTIALS_SECRET holding a PEM private key', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: PEM }, names: ['REGISTRY_CREDENTIALS_SECRET'], expected: /must be a secret name or ARN/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'REGISTRY_CREDENTIALS_SECRET and REGISTRY_USERNAME/PASSWORD', env: { REGISTRY, REGISTRY_CREDENTIALS_SECRET: 'gl/registry', REGISTRY_USERNAME: 'robot', REGISTRY_PASSWORD: MARKER }, names: ['REGISTRY_CREDENTIALS_SECRET', 'REGISTRY_USERNAME', 'REGISTRY_PASSWORD'], expected: /set either .* not both/, secret: MARKER },
    { title: 'REGISTRY_CREDENTIALS_SECRET with an oci-layout', env: { REGISTRY: 'oci-layout:/tmp/x', REGISTRY_CREDENTIALS_SECRET: `${MARKER}/registry` }, names: ['REGISTRY_CREDENTIALS_SECRET', 'REGISTRY'], expected: /needs a registry REGISTRY/, secret: MARKER },
    { title: 'STATE_BUCKET that is no bucket name', env: { REGISTRY, STATE_BUCKET: `${MARKER}_bucket` }, names: ['STATE_BUCKET'], expected: /must be an S3 bucket name/, secret: MARKER },
    { title: 'STATE_BUCKET holding a base64 blob', env: { REGISTRY, STATE_BUCKET: BLOB }, names: ['STATE_BUCKET'], expected: /must be an S3 bucket name/, secret: BLOB, looksLike: /base64/ },
    { title: 'STATE_PREFIX without a trailing "/"', env: { REGISTRY, STATE_PREFIX: MARKER }, names: ['STATE_PREFIX'], expected: /must end with "\/"/, secret: MARKER },
    { title: 'STATE_PREFIX starting with "/"', env: { REGISTRY, STATE_PREFIX: `/${MARKER}/` }, names: ['STATE_PREFIX'], expected: /must not start with "\/"/, secret: MARKER },
    { title: 'STATE_PREFIX under meta/', env: { REGISTRY, STATE_PREFIX: `meta/${MARKER}/` }, names: ['STATE_PREFIX'], expected: /must not be empty or under meta\/ or objects\//, secret: MARKER },
    { title: 'CONTAINER_REPOSITORIES that is not JSON', env: { REGISTRY, CONTAINER_REPOSITORIES: PEM }, names: ['CONTAINER_REPOSITORIES'], expected: /must be a JSON object such as/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'CONTAINER_REPOSITORIES that is no object', env: { REGISTRY, CONTAINER_REPOSITORIES: `["${MARKER}"]` }, names: ['CONTAINER_REPOSITORIES'], expected: /expected a JSON object/, secret: MARKER },
    { title: 'CONTAINER_REPOSITORIES with a key that is no flavor name', env: { REGISTRY, CONTAINER_REPOSITORIES: `{"container":"fips","${MARKER} x":"fips"}` }, names: ['CONTAINER_REPOSITORIES'], expected: /key #2 is not a flavor name \(letters, digits, "_" and "-"\)/, secret: MARKER },
    { title: 'CONTAINER_REPOSITORIES with a value that is no repository path', env: { REGISTRY, CONTAINER_REPOSITORIES: `{"container":"${MARKER}"}` }, names: ['CONTAINER_REPOSITORIES'], expected: /the value of key #1 is not a repository path \(lowercase/, secret: MARKER },
    { title: 'CONTAINER_REPOSITORIES with a value that is no string', env: { REGISTRY, CONTAINER_REPOSITORIES: `{"${MARKER}":1}` }, names: ['CONTAINER_REPOSITORIES'], expected: /the value of key #1 is not a repository path/, secret: MARKER },
    { title: 'AWS_ENDPOINT_URL_S3 that is no URL', env: { REGISTRY, AWS_ENDPOINT_URL_S3: `${MARKER} 4568` }, names: ['AWS_ENDPOINT_URL_S3'], expected: /must be a URL/, secret: MARKER },
    { title: 'AWS_ENDPOINT_URL_S3 with user:password@', env: { REGISTRY, AWS_ENDPOINT_URL_S3: `http://robot:${MARKER}@127.0.0.1:4568` }, names: ['AWS_ENDPOINT_URL_S3'], expected: /must not contain credentials \(user:password@\)/, secret: MARKER },
    { title: 'S3_FORCE_PATH_STYLE that is no boolean', env: { REGISTRY, S3_FORCE_PATH_STYLE: MARKER }, names: ['S3_FORCE_PATH_STYLE'], expected: /must be true or false/, secret: MARKER },
    { title: 'AWS_REGION that is no region name', env: { REGISTRY, AWS_REGION: PEM }, names: ['AWS_REGION'], expected: /must be a region name such as eu-central-1/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'SOURCE_DIR holding a PEM private key', env: { REGISTRY, SOURCE_DIR: PEM }, names: ['SOURCE_DIR'], expected: /must be the path of a directory/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'BLOB_CONCURRENCY that is no number', env: { REGISTRY, BLOB_CONCURRENCY: MARKER }, names: ['BLOB_CONCURRENCY'], expected: /must be a number/, secret: MARKER },
    { title: 'BLOB_CONCURRENCY that is a fraction', env: { REGISTRY, BLOB_CONCURRENCY: '2.5' }, names: ['BLOB_CONCURRENCY'], expected: /must be a whole number/ },
    { title: 'BLOB_CONCURRENCY below 1', env: { REGISTRY, BLOB_CONCURRENCY: '0' }, names: ['BLOB_CONCURRENCY'], expected: /must be at least 1/ },
    { title: 'BLOB_CONCURRENCY above 32', env: { REGISTRY, BLOB_CONCURRENCY: '33' }, names: ['BLOB_CONCURRENCY'], expected: /must be at most 32/ },
    { title: 'MD5_CHECK that is none of its values', env: { REGISTRY, MD5_CHECK: MARKER }, names: ['MD5_CHECK'], expected: /must be etag, stream or off/, secret: MARKER },
    { title: 'LOG_LEVEL that is none of its values', env: { REGISTRY, LOG_LEVEL: MARKER }, names: ['LOG_LEVEL'], expected: /must be debug, info, warn or error/, secret: MARKER },
    { title: 'ALLOWED_BUCKETS with a name that is no bucket name', env: { REGISTRY, ALLOWED_BUCKETS: `good-bucket,${MARKER}` }, names: ['ALLOWED_BUCKETS'], expected: /must be a comma-separated list of S3 bucket names/, secret: MARKER },
    { title: 'REGISTRY_TIMEOUT_SECONDS that is no number', env: { REGISTRY, REGISTRY_TIMEOUT_SECONDS: MARKER }, names: ['REGISTRY_TIMEOUT_SECONDS'], expected: /must be a number/, secret: MARKER },
    { title: 'REGISTRY_TIMEOUT_SECONDS of 0', env: { REGISTRY, REGISTRY_TIMEOUT_SECONDS: '0' }, names: ['REGISTRY_TIMEOUT_SECONDS'], expected: /must be positive/ },
    { title: 'REGISTRY_TIMEOUT_SECONDS above 900', env: { REGISTRY, REGISTRY_TIMEOUT_SECONDS: '901' }, names: ['REGISTRY_TIMEOUT_SECONDS'], expected: /must be at most 900/ },
    { title: 'UPLOAD_CHUNK_MIB that is no number', env: { REGISTRY, UPLOAD_CHUNK_MIB: MARKER }, names: ['UPLOAD_CHUNK_MIB'], expected: /must be a number/, secret: MARKER },
    { title: 'UPLOAD_CHUNK_MIB below 1', env: { REGISTRY, UPLOAD_CHUNK_MIB: '0.5' }, names: ['UPLOAD_CHUNK_MIB'], expected: /must be at least 1/ },
    { title: 'UPLOAD_CHUNK_MIB above 1024', env: { REGISTRY, UPLOAD_CHUNK_MIB: '1025' }, names: ['UPLOAD_CHUNK_MIB'], expected: /must be at most 1024/ },
    { title: 'CHUNKED_UPLOADS that is no boolean', env: { REGISTRY, CHUNKED_UPLOADS: MARKER }, names: ['CHUNKED_UPLOADS'], expected: /must be true or false/, secret: MARKER },
    { title: 'MAX_CONSECUTIVE_FAILURES that is no number', env: { REGISTRY, MAX_CONSECUTIVE_FAILURES: MARKER }, names: ['MAX_CONSECUTIVE_FAILURES'], expected: /must be a number/, secret: MARKER },
    { title: 'MAX_CONSECUTIVE_FAILURES that is a fraction', env: { REGISTRY, MAX_CONSECUTIVE_FAILURES: '1.5' }, names: ['MAX_CONSECUTIVE_FAILURES'], expected: /must be a whole number/ },
    { title: 'MAX_CONSECUTIVE_FAILURES below 1', env: { REGISTRY, MAX_CONSECUTIVE_FAILURES: '0' }, names: ['MAX_CONSECUTIVE_FAILURES'], expected: /must be at least 1/ },
    { title: 'MAX_CONSECUTIVE_FAILURES above 100', env: { REGISTRY, MAX_CONSECUTIVE_FAILURES: '101' }, names: ['MAX_CONSECUTIVE_FAILURES'], expected: /must be at most 100/ },
    { title: 'S3_READERS that is no number', env: { REGISTRY, S3_READERS: MARKER }, names: ['S3_READERS'], expected: /must be a number/, secret: MARKER },
    { title: 'S3_READERS that is a fraction', env: { REGISTRY, S3_READERS: '1.5' }, names: ['S3_READERS'], expected: /must be a whole number/ },
    { title: 'S3_READERS below 1', env: { REGISTRY, S3_READERS: '0' }, names: ['S3_READERS'], expected: /must be at least 1/ },
    { title: 'S3_READERS above 16', env: { REGISTRY, S3_READERS: '17' }, names: ['S3_READERS'], expected: /must be at most 16/ },
    { title: 'S3_PART_MIB that is no number', env: { REGISTRY, S3_PART_MIB: MARKER }, names: ['S3_PART_MIB'], expected: /must be a number/, secret: MARKER },
    { title: 'S3_PART_MIB that is a fraction', env: { REGISTRY, S3_PART_MIB: '1.5' }, names: ['S3_PART_MIB'], expected: /must be a whole number/ },
    { title: 'S3_PART_MIB below 1', env: { REGISTRY, S3_PART_MIB: '0' }, names: ['S3_PART_MIB'], expected: /must be at least 1/ },
    { title: 'S3_PART_MIB above 64', env: { REGISTRY, S3_PART_MIB: '65' }, names: ['S3_PART_MIB'], expected: /must be at most 64/ },
    { title: 'S3_READERS × S3_PART_MIB above 128 MiB', env: { REGISTRY, S3_READERS: '16', S3_PART_MIB: '16' }, names: ['S3_READERS', 'S3_PART_MIB'], expected: /at most 128 MiB/ },
    { title: 'SIGNING_KEY holding a PEM private key', env: { REGISTRY, SIGNING_KEY: PEM }, names: ['SIGNING_KEY'], expected: /expected awskms:\/\/\/<key id, key ARN or alias> or file:<path to a PEM private key>/, secret: PEM, looksLike: /PEM/ },
    { title: 'SIGNING_KEY holding a PEM private key after file:', env: { REGISTRY, SIGNING_KEY: `file:${PEM}` }, names: ['SIGNING_KEY'], expected: /file:<path to a PEM private key>/, secret: PEM, looksLike: /PEM/ },
    { title: 'SIGNING_KEY holding a base64 blob', env: { REGISTRY, SIGNING_KEY: BLOB }, names: ['SIGNING_KEY'], expected: /must be awskms:\/\/\/<key id, key ARN or alias> or file:<path to a PEM private key>/, secret: BLOB, looksLike: /base64/ },
    { title: 'SIGNING_KEY of neither form', env: { REGISTRY, SIGNING_KEY: `kms://${MARKER}` }, names: ['SIGNING_KEY'], expected: /must be awskms:\/\/\/<key id, key ARN or alias> or file:<path to a PEM private key>/, secret: MARKER },
    { title: 'SIGNING_KEY awskms:// with a bad host', env: { REGISTRY, SIGNING_KEY: `awskms://${MARKER} x/alias/gl` }, names: ['SIGNING_KEY'], expected: /host .*is not a host name/, secret: MARKER },
    { title: 'SIGNING_KEY awskms:// with no key id, ARN or alias', env: { REGISTRY, SIGNING_KEY: `awskms:///${MARKER}` }, names: ['SIGNING_KEY'], expected: /is not a KMS key id, key ARN, alias\/<name> or alias ARN/, secret: MARKER },
    { title: 'SIGNING_KEY file: without a path', env: { REGISTRY, SIGNING_KEY: 'file:' }, names: ['SIGNING_KEY'], expected: /needs a path to a PEM private key/ },
    { title: 'SIGN_CONTAINER_IMAGES that is no boolean', env: { REGISTRY, SIGN_CONTAINER_IMAGES: MARKER }, names: ['SIGN_CONTAINER_IMAGES'], expected: /must be true or false/, secret: MARKER },
    { title: 'SIGN_CONTAINER_IMAGES without SIGNING_KEY', env: { REGISTRY, SIGN_CONTAINER_IMAGES: 'true' }, names: ['SIGN_CONTAINER_IMAGES', 'SIGNING_KEY'], expected: /needs a SIGNING_KEY/ },
    { title: 'ALIAS_TAGS naming a template twice', env: { REGISTRY, ALIAS_TAGS: `${MARKER},${MARKER}` }, names: ['ALIAS_TAGS'], expected: /template #2 repeats template #1/, secret: MARKER },
    { title: 'ALIAS_TAGS with an unknown placeholder', env: { REGISTRY, ALIAS_TAGS: `latest,{${letters}}` }, names: ['ALIAS_TAGS'], expected: /template #2 uses a placeholder other than \{version\}, \{major\}, \{minor\} and \{patch\}/, secret: letters },
    { title: 'ALIAS_TAGS with a template that makes no tag', env: { REGISTRY, ALIAS_TAGS: `latest,${MARKER} x` }, names: ['ALIAS_TAGS'], expected: /template #2 does not make a valid tag \(letters/, secret: MARKER },
    { title: 'ALIAS_TAGS holding a PEM private key', env: { REGISTRY, ALIAS_TAGS: PEM }, names: ['ALIAS_TAGS'], expected: /does not make a valid tag/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'ALIAS_TAGS with a template that looks like a version', env: { REGISTRY, ALIAS_TAGS: 'latest,1877' }, names: ['ALIAS_TAGS'], expected: /template #2 looks like a version/ },
    { title: 'IMAGE_SOURCE that is no URL', env: { REGISTRY, IMAGE_SOURCE: MARKER }, names: ['IMAGE_SOURCE'], expected: /must be a URL, such as https:\/\/github.com\/gardenlinux\/gardenlinux/, secret: MARKER },
    { title: 'IMAGE_SOURCE longer than 512 characters', env: { REGISTRY, IMAGE_SOURCE: `https://github.com/${MARKER}/${'x'.repeat(600)}` }, names: ['IMAGE_SOURCE'], expected: /must be at most 512 characters/, secret: MARKER },
    { title: 'IMAGE_SOURCE with user:password@', env: { REGISTRY, IMAGE_SOURCE: `https://robot:${MARKER}@github.com/gardenlinux/gardenlinux` }, names: ['IMAGE_SOURCE'], expected: /must not contain credentials \(user:password@\)/, secret: MARKER },
    { title: 'VERIFY_PUBLIC_KEY holding a PEM public key instead of its path', env: { REGISTRY, VERIFY_PUBLIC_KEY: PUBLIC_PEM }, names: ['VERIFY_PUBLIC_KEY'], expected: /must be the path of a PEM public key file/, secret: PUBLIC_PEM, looksLike: /PEM/ },
    { title: 'VERIFY_PUBLIC_KEY holding a PEM private key', env: { REGISTRY, VERIFY_PUBLIC_KEY: PEM }, names: ['VERIFY_PUBLIC_KEY'], expected: /must be the path of a PEM public key file/, secret: PEM, looksLike: /PEM private key/ },
    { title: 'AWS_ENDPOINT_URL_KMS that is no URL', env: { REGISTRY, AWS_ENDPOINT_URL_KMS: MARKER }, names: ['AWS_ENDPOINT_URL_KMS'], expected: /must be a URL/, secret: MARKER },
    { title: 'AWS_ENDPOINT_URL_KMS with user:password@', env: { REGISTRY, AWS_ENDPOINT_URL_KMS: `http://robot:${MARKER}@127.0.0.1:4566` }, names: ['AWS_ENDPOINT_URL_KMS'], expected: /must not contain credentials \(user:password@\)/, secret: MARKER },
    { title: 'STOP_MARGIN_SECONDS that is no number', env: { REGISTRY, STOP_MARGIN_SECONDS: MARKER }, names: ['STOP_MARGIN_SECONDS'], expected: /must be a number/, secret: MARKER },
    { title: 'STOP_MARGIN_SECONDS below 0', env: { REGISTRY, STOP_MARGIN_SECONDS: '-1' }, names: ['STOP_MARGIN_SECONDS'], expected: /must not be negative/ },
    { title: 'STOP_MARGIN_SECONDS above 600', env: { REGISTRY, STOP_MARGIN_SECONDS: '601' }, names: ['STOP_MARGIN_SECONDS'], expected: /must be at most 600/ },
  ];

  for (const c of cases) {
    it(c.title, () => {
      assert.throws(
        () => loadConfig(c.env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
          const m = err.message;
          for (const name of c.names) assert.ok(m.includes(name), `names ${name}: ${m}`);
          assert.match(m, c.expected);
          assert.match(m, /^invalid configuration: /);
          assert.doesNotMatch(m, /\n/, 'one line');
          if (c.secret !== undefined) {
            const part = leaked(m, c.secret);
            assert.equal(part, undefined, `the message holds "${part}" of the value: ${m.slice(0, 300)}`);
          }
          if (c.looksLike) assert.match(m, c.looksLike);
          return true;
        },
      );
    });
  }

  it('a PEM private key in any variable is refused without a part of it, naming the variable', () => {
    // REGISTRY_USERNAME and REGISTRY_PASSWORD take any text (as a pair); every other variable refuses key material.
    const names = [
      'REGISTRY', 'REGISTRY_CREDENTIALS_SECRET', 'STATE_BUCKET', 'STATE_PREFIX', 'CONTAINER_REPOSITORIES', 'AWS_ENDPOINT_URL_S3',
      'S3_FORCE_PATH_STYLE', 'AWS_REGION', 'SOURCE_DIR', 'BLOB_CONCURRENCY', 'MD5_CHECK', 'LOG_LEVEL', 'ALLOWED_BUCKETS',
      'REGISTRY_TIMEOUT_SECONDS', 'UPLOAD_CHUNK_MIB', 'CHUNKED_UPLOADS', 'MAX_CONSECUTIVE_FAILURES', 'S3_READERS', 'S3_PART_MIB',
      'SIGNING_KEY', 'SIGN_CONTAINER_IMAGES', 'ALIAS_TAGS', 'IMAGE_SOURCE', 'VERIFY_PUBLIC_KEY', 'AWS_ENDPOINT_URL_KMS', 'STOP_MARGIN_SECONDS',
    ];
    const failures: string[] = [];
    for (const name of names) {
      try {
        loadConfig({ REGISTRY, [name]: PEM });
        failures.push(`${name}: accepted`);
      } catch (err) {
        const m = (err as Error).message;
        const part = leaked(m, PEM);
        if (!(err instanceof ConfigError)) failures.push(`${name}: ${String(err)}`);
        else if (!m.includes(name)) failures.push(`${name}: not named in ${m.slice(0, 200)}`);
        else if (part !== undefined) failures.push(`${name}: holds "${part}"`);
        else if (!/PEM/.test(m)) failures.push(`${name}: does not say it looks like a PEM key: ${m}`);
      }
    }
    assert.deepEqual(failures, []);
    // The pair takes it (a password may be any text), and the configuration holds it only where it belongs.
    const c = loadConfig({ REGISTRY, REGISTRY_USERNAME: 'robot', REGISTRY_PASSWORD: PEM });
    assert.equal(c.credentials?.password, PEM.trim());
  });
});
