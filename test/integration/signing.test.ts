/**
 * Signatures with a KMS key, end to end: builds in s3rver, a real docker-registry, and a test KMS on 127.0.0.1
 * reached by the real AWS SDK (SigV4, the JSON protocol, its retries). Every artifact manifest the version index
 * names must pass both verifications a consumer runs (cosign's and gardenlinux-update's), written again in
 * test/helpers/cosign-rules.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { checkSignature } from '../../functions/signing/verify-signature';
import { OciLayoutTarget } from '../../functions/target/oci-layout-target';
import { Logger } from '../../functions/util/log';
import { sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { cosignAccepts, registryReader, updaterAccepts } from '../helpers/cosign-rules';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob, jobsOf } from '../helpers/jobs';
import { ecKey, rsaKey, startKms, type TestKey, type TestKms } from '../helpers/kms-server';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ALIAS = 'alias/gardenlinux-oci-sign';
const REPO = 'gardenlinux/gardenlinux';

interface Line {
  level: string;
  msg: string;
  [k: string]: unknown;
}

describe('signing artifact manifests with a KMS key (cosign .sig)', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let kms: TestKms;
  let release: TestKey;
  let other: TestKey;
  const logs: string[] = [];
  const lines = () => logs.map((l) => JSON.parse(l) as Line);
  const v1 = [
    sampleBuild({ flavor: 'container', arch: 'amd64' }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true }),
  ];

  before(async () => {
    [registry, s3, kms] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), startKms()]);
    release = rsaKey('0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0');
    other = rsaKey('11111111-2222-3333-4444-555555555555', 2048);
    kms.addKey(release, ALIAS);
    kms.addKey(other);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), kms?.close()]);
  });

  const env = (extra: Record<string, string> = {}) => ({
    ...s3.env,
    REGISTRY: `http://${registry.host}/${REPO}`,
    SIGNING_KEY: `awskms:///${ALIAS}`,
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    ...extra,
  });
  const handler = (extra: Record<string, string> = {}) => createHandler({ env: env(extra), logSink: (l) => logs.push(l) });
  const reader = (repo = REPO) => registryReader(registry.url, repo);
  const publish = (h: ReturnType<typeof handler>, b: SampleBuild) => firstJob(h(s3Event(BUCKET, `meta/singles/${b.base}`)));

  async function index(version: string, repo = REPO): Promise<{ digest: string; manifests: Array<{ digest: string; annotations?: Record<string, string> }> }> {
    const bytes = await reader(repo).getManifest(version);
    assert.ok(bytes, `no index ${version}`);
    return { digest: sha256(bytes), ...(JSON.parse(bytes.toString('utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> }) };
  }
  async function sigManifest(digest: string, repo = REPO): Promise<{ digest: string; layers: Array<{ digest: string; annotations: Record<string, string> }> }> {
    const bytes = await reader(repo).getManifest(`${digest.replace(':', '-')}.sig`);
    assert.ok(bytes, `no signature for ${digest}`);
    return { digest: sha256(bytes), ...(JSON.parse(bytes.toString('utf8')) as { layers: Array<{ digest: string; annotations: Record<string, string> }> }) };
  }
  const both = async (digest: string, key: TestKey, repo = REPO) => {
    const r = reader(repo);
    return { cosign: await cosignAccepts(r.getManifest, r.getBlob, digest, key.publicKey), updater: await updaterAccepts(r.getManifest, r.getBlob, digest, key.publicKey) };
  };

  let firstRun: JobSummary[] = [];
  it('signs every artifact manifest it publishes, with one GetPublicKey per cold start and one Sign per manifest', async () => {
    for (const b of v1) await uploadBuild(s3.client, BUCKET, b);
    const h = handler();
    for (const b of v1) firstRun.push(await publish(h, b));
    for (const j of firstRun) {
      assert.equal(j.outcome, 'published', JSON.stringify(j));
      assert.equal(j.signatures?.length, 1);
      assert.equal(j.signatures?.[0]?.written, true);
      assert.equal(j.signatures?.[0]?.signed, j.manifest?.digest);
    }
    assert.equal(kms.calls.GetPublicKey, 1);
    assert.equal(kms.calls.Sign, v1.length);
    assert.equal(kms.badSignatures, 0, 'every request the SDK signed verified');
    assert.ok(lines().some((l) => l.msg === 'signing artifact manifests' && l.key === `awskms:///${ALIAS}` && l.keyBits === 4096));
  });

  it("signs PKCS#1 v1.5 although the key lists PSS first, as moto does: cosign's pick would fail the updater", async () => {
    const { DescribeKeyCommand, KMSClient } = await import('@aws-sdk/client-kms');
    const described = await new KMSClient({ endpoint: kms.endpoint, region: 'us-east-1' }).send(new DescribeKeyCommand({ KeyId: ALIAS }));
    assert.equal(described.KeyMetadata?.SigningAlgorithms?.[0], 'RSASSA_PSS_SHA_256');
    assert.deepEqual(await both(firstRun[0]?.manifest?.digest as string, release), { cosign: true, updater: true });
  });

  it('writes what cosign writes: one simple-signing layer over the payload naming the repository and digest', async () => {
    const digest = firstRun[0]?.manifest?.digest as string;
    const m = await sigManifest(digest);
    assert.equal(m.layers.length, 1);
    const payload = await reader().getBlob(m.layers[0]?.digest as string);
    assert.equal(
      payload?.toString('utf8'),
      `{"critical":{"identity":{"docker-reference":"${registry.host}/${REPO}"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`,
    );
    assert.equal(m.layers[0]?.annotations['dev.cosignproject.cosign/signature']?.length, 684);
  });

  it('passes cosign verify and gardenlinux-update for every Garden Linux entry of the index, and fails with another key', async () => {
    const idx = await index('1877.3');
    const gl = idx.manifests.filter((m) => m.annotations?.cname);
    assert.equal(gl.length, v1.length);
    for (const e of gl) {
      assert.deepEqual(await both(e.digest, release), { cosign: true, updater: true }, e.annotations?.cname);
      assert.deepEqual(await both(e.digest, other), { cosign: false, updater: false }, e.annotations?.cname);
    }
    // The container image is not signed unless SIGN_CONTAINER_IMAGES says so, as in Garden Linux's CI.
    const container = idx.manifests.find((m) => !m.annotations?.cname);
    assert.ok(container);
    assert.equal(await reader().getManifest(`${container.digest.replace(':', '-')}.sig`), undefined);
  });

  it('rejects a signature whose annotation or payload was altered', async () => {
    const digest = firstRun[1]?.manifest?.digest as string;
    const tag = `${digest.replace(':', '-')}.sig`;
    const original = (await reader().getManifest(tag)) as Buffer;
    const m = JSON.parse(original.toString('utf8')) as { layers: Array<{ digest: string; size: number; annotations: Record<string, string> }> };
    const layer = m.layers[0] as (typeof m.layers)[0];
    const sig = Buffer.from(layer.annotations['dev.cosignproject.cosign/signature'] as string, 'base64');
    sig[100] = (sig[100] as number) ^ 0xff;
    try {
      layer.annotations['dev.cosignproject.cosign/signature'] = sig.toString('base64');
      await putManifest(tag, Buffer.from(JSON.stringify(m)));
      assert.deepEqual(await both(digest, release), { cosign: false, updater: false }, 'altered annotation');

      // A payload that names another manifest, with the original signature: the bytes no longer match it.
      const forged = Buffer.from((await reader().getBlob(layer.digest))?.toString('utf8').replace(digest, `sha256:${'0'.repeat(64)}`) as string);
      await putBlob(forged);
      const f = JSON.parse(original.toString('utf8')) as typeof m;
      Object.assign(f.layers[0] as object, { digest: sha256(forged), size: forged.length });
      await putManifest(tag, Buffer.from(JSON.stringify(f)));
      assert.deepEqual(await both(digest, release), { cosign: false, updater: false }, 'altered payload');
    } finally {
      await putManifest(tag, original);
    }
    assert.deepEqual(await both(digest, release), { cosign: true, updater: true });
  });

  it('re-runs without a KMS Sign call and without an upload', async () => {
    const signsBefore = kms.calls.Sign;
    const sigsBefore = await Promise.all(firstRun.map((j) => sigManifest(j.manifest?.digest as string)));
    const h = handler();
    for (const b of v1) {
      const j = await publish(h, b);
      assert.equal(j.outcome, 'unchanged', JSON.stringify(j));
      assert.equal(j.bytesUploaded, 0);
      assert.equal(j.blobsUploaded, 0);
      assert.equal(j.signatures?.[0]?.written, false);
    }
    assert.equal(kms.calls.Sign, signsBefore);
    const sigsAfter = await Promise.all(firstRun.map((j) => sigManifest(j.manifest?.digest as string)));
    assert.deepEqual(sigsAfter.map((s) => s.digest), sigsBefore.map((s) => s.digest));
  });

  it('ends with one signature layer when two publishers sign the same build at once', async () => {
    const b = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', version: '1877.4' });
    await uploadBuild(s3.client, BUCKET, b);
    const [x, y] = await Promise.all([publish(handler(), b), publish(handler(), b)]);
    assert.equal(x.outcome, 'published', JSON.stringify(x));
    assert.notEqual(y.outcome, 'failed', JSON.stringify(y));
    const digest = x.manifest?.digest as string;
    assert.equal((await sigManifest(digest)).layers.length, 1);
    assert.deepEqual(await both(digest, release), { cosign: true, updater: true });
  });

  it("keeps a .sig that holds another key's signature first, appends its own, and says the updater will refuse it", async () => {
    const b = sampleBuild({ flavor: 'azure-gardener_prod', arch: 'amd64', version: '1877.5' });
    await uploadBuild(s3.client, BUCKET, b);
    // Published first without signing, then signed by hand with another key (a manual `cosign sign`).
    const unsigned = await firstJob(createHandler({ env: { ...env(), SIGNING_KEY: '' }, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`)));
    const digest = unsigned.manifest?.digest as string;
    const payload = Buffer.from(
      `{"critical":{"identity":{"docker-reference":"mirror.example/gl"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`,
    );
    const foreignSig = sign('sha256', payload, other.privateKey).toString('base64');
    const config = Buffer.from(
      `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["${sha256(payload)}"]},"config":{}}`,
    );
    await putBlob(payload);
    await putBlob(config);
    const foreignLayer = { mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', size: payload.length, digest: sha256(payload), annotations: { 'dev.cosignproject.cosign/signature': foreignSig } };
    await putManifest(
      `${digest.replace(':', '-')}.sig`,
      Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: config.length, digest: sha256(config) }, layers: [foreignLayer] })),
    );

    logs.length = 0;
    const j = await publish(handler(), b);
    assert.equal(j.outcome, 'published', JSON.stringify(j));
    const m = await sigManifest(digest);
    assert.equal(m.layers.length, 2);
    assert.deepEqual(m.layers[0], foreignLayer, 'the foreign layer stays first, unchanged');
    assert.deepEqual(await both(digest, release), { cosign: true, updater: false });
    assert.deepEqual(await both(digest, other), { cosign: true, updater: true });
    const error = lines().find((l) => l.level === 'error' && /first signature layer is not a valid signature of the configured key/.test(l.msg));
    assert.ok(error, 'an error names the problem');
    // The config went on as cosign's does: one diff_id and one history entry more.
    const sigBytes = (await reader().getManifest(`${digest.replace(':', '-')}.sig`)) as Buffer;
    const cfgDigest = (JSON.parse(sigBytes.toString('utf8')) as { config: { digest: string } }).config.digest;
    const cfg = JSON.parse(((await reader().getBlob(cfgDigest)) as Buffer).toString('utf8')) as { rootfs: { diff_ids: string[] }; history: unknown[] };
    assert.deepEqual(cfg.rootfs.diff_ids, m.layers.map((l) => l.digest));
    assert.equal(cfg.history.length, 2);
  });

  it('fails the job fast when KMS refuses to sign, and leaves the index as it was', async () => {
    const b = sampleBuild({ flavor: 'openstack-gardener_prod', arch: 'amd64' });
    await uploadBuild(s3.client, BUCKET, b);
    const before = await index('1877.3');
    const signs = kms.calls.Sign;
    kms.fail('Sign', 'AccessDeniedException');
    try {
      const j = await publish(handler(), b);
      assert.equal(j.outcome, 'failed');
      assert.equal(j.errorKind, 'signing');
      assert.match(j.error ?? '', /KMS Sign with alias\/gardenlinux-oci-sign: AccessDeniedException/);
      assert.equal(kms.calls.Sign - signs, 1, 'AccessDenied is not retried');
    } finally {
      kms.clearFaults();
    }
    const afterFailure = await index('1877.3');
    assert.equal(afterFailure.digest, before.digest, 'the index did not change');
    // Once KMS signs again, the build lands, signed.
    const j = await publish(handler(), b);
    assert.equal(j.outcome, 'published', JSON.stringify(j));
    const entry = (await index('1877.3')).manifests.find((m) => m.annotations?.cname === b.base);
    assert.ok(entry);
    assert.deepEqual(await both(entry.digest, release), { cosign: true, updater: true });
  });

  it('rides out KMS throttling through the SDK retries', async () => {
    const b = sampleBuild({ flavor: 'vmware-gardener_prod', arch: 'amd64' });
    await uploadBuild(s3.client, BUCKET, b);
    const signs = kms.calls.Sign;
    kms.fail('Sign', 'ThrottlingException', { times: 2 });
    try {
      const j = await publish(handler(), b);
      assert.equal(j.outcome, 'published', JSON.stringify(j));
      assert.equal(kms.calls.Sign - signs, 3);
      assert.deepEqual(await both(j.manifest?.digest as string, release), { cosign: true, updater: true });
    } finally {
      kms.clearFaults();
    }
  });

  it('signs the container images too with SIGN_CONTAINER_IMAGES, in their own repository', async () => {
    const b = sampleBuild({ flavor: 'container', arch: 'arm64', version: '1877.6' });
    await uploadBuild(s3.client, BUCKET, b);
    const j = await publish(handler({ SIGN_CONTAINER_IMAGES: 'true', CONTAINER_REPOSITORIES: '{"container":"container-images"}' }), b);
    assert.equal(j.outcome, 'published', JSON.stringify(j));
    assert.equal(j.signatures?.length, 2);
    const image = b.image?.manifestDigest as string;
    assert.deepEqual(await both(image, release, `${REPO}/container-images`), { cosign: true, updater: true });
    assert.deepEqual(await both(j.manifest?.digest as string, release), { cosign: true, updater: true });
  });

  describe('refuses at start a key that cannot sign for Garden Linux, before any job', () => {
    const cases: Array<[string, () => TestKey, RegExp]> = [
      ['an EC key', () => ecKey('22222222-2222-3333-4444-555555555555'), /spec is ECC_NIST_P256, not RSA_2048\/3072\/4096 \(an EC key cannot satisfy gardenlinux-update/],
      ['an encryption key', () => ({ ...rsaKey('33333333-2222-3333-4444-555555555555', 2048), usage: 'ENCRYPT_DECRYPT' as const, algorithms: [] }), /usage is ENCRYPT_DECRYPT, not SIGN_VERIFY/],
      ['a disabled key', () => ({ ...rsaKey('44444444-2222-3333-4444-555555555555', 2048), enabled: false }), /DisabledException/],
    ];
    for (const [what, make, message] of cases) {
      it(what, async () => {
        const key = make();
        kms.addKey(key);
        const gets = kms.calls.GetPublicKey;
        const b = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', version: '1877.7' });
        const own: string[] = [];
        const h = createHandler({ env: env({ SIGNING_KEY: `awskms:///${key.id}` }), logSink: (l) => own.push(l) });
        await assert.rejects(h(s3Event(BUCKET, `meta/singles/${b.base}`)), message);
        assert.equal(kms.calls.GetPublicKey - gets, 1);
        assert.ok(own.some((l) => (JSON.parse(l) as Line).msg === 'signing key rejected'));
        assert.ok(!own.some((l) => (JSON.parse(l) as Line).msg === 'publishing build'), 'no job ran');
      });
    }
    it('a key that does not exist', async () => {
      await assert.rejects(
        jobsOf(createHandler({ env: env({ SIGNING_KEY: 'awskms:///alias/nothing-here' }), logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${v1[0]?.base}`))),
        /NotFoundException/,
      );
    });
  });

  async function putBlob(bytes: Buffer): Promise<void> {
    const start = await fetch(`${registry.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    assert.equal(start.status, 202);
    const location = new URL(start.headers.get('location') as string, registry.url);
    location.searchParams.set('digest', sha256(bytes));
    const put = await fetch(location, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(put.status, 201, await put.text());
  }
  async function putManifest(tag: string, bytes: Buffer): Promise<void> {
    const res = await fetch(`${registry.url}/v2/${REPO}/manifests/${tag}`, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(res.status, 201, await res.text());
  }
});

describe('signing with a file: key from the CLI, into an OCI layout', () => {
  let dir: string;
  let clients: ClientSandbox;
  const builds = [sampleBuild({ flavor: 'container', arch: 'amd64' }), sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64' })];
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 4096 });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-sign-cli-'));
    for (const b of builds) await writeBuildDir(join(dir, 'bucket'), b);
    await writeFile(join(dir, 'oci-sign.key'), privateKey.export({ format: 'pem', type: 'pkcs1' }), { mode: 0o600 });
    clients = await clientSandbox();
  });
  after(async () => {
    await clients?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Reads the layout as files: index.json names the tags, blobs/sha256/ holds the bytes. */
  const layoutReader = (layout: string) => ({
    async getManifest(tag: string): Promise<Buffer | undefined> {
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
      const d = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)?.digest;
      return d ? readFile(join(layout, 'blobs', 'sha256', d.slice(7))) : undefined;
    },
    getBlob: (d: string) => readFile(join(layout, 'blobs', 'sha256', d.slice(7))).catch(() => undefined),
  });

  it('publishes and signs every build with -k file:<pem>; both verifications accept what is in the layout', async () => {
    const layout = join(dir, 'layout');
    for (const b of builds) {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['bin/gl-oci-publish.mjs', '-r', `oci-layout:${layout}`, '-k', `file:${join(dir, 'oci-sign.key')}`, 'publish', b.base, '--dir', join(dir, 'bucket')],
        { env: { ...process.env, REGISTRY: '', SIGNING_KEY: '' }, timeout: 120_000 },
      );
      const job = (JSON.parse(stdout) as { jobs: JobSummary[] }).jobs[0];
      assert.equal(job?.outcome, 'published', stdout);
      assert.equal(job?.signatures?.[0]?.written, true);
      const digest = job?.manifest?.digest as string;
      const tag = `${digest.replace(':', '-')}.sig`;
      // skopeo finds the signature under its tag in the layout.
      const raw = await clients.skopeo(['inspect', '--raw', `oci:${layout}:${tag}`]);
      assert.equal((JSON.parse(raw) as { layers: Array<{ mediaType: string }> }).layers[0]?.mediaType, 'application/vnd.dev.cosign.simplesigning.v1+json');
      const r = layoutReader(layout);
      assert.equal(await cosignAccepts(r.getManifest, r.getBlob, digest, publicKey), true);
      assert.equal(await updaterAccepts(r.getManifest, r.getBlob, digest, publicKey), true);
      // The publisher's own check agrees with both.
      const own = await checkSignature(new OciLayoutTarget(layout, 'check', new Logger({ sink: () => undefined })), digest, publicKey);
      assert.deepEqual({ cosign: own.cosign, updater: own.updater }, { cosign: true, updater: true });
      const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
      assert.equal(await updaterAccepts(r.getManifest, r.getBlob, digest, wrong), false);
      assert.equal((await checkSignature(new OciLayoutTarget(layout, 'check', new Logger({ sink: () => undefined })), digest, wrong)).updater, false);
    }
  });
});
