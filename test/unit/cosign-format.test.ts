import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256Digest } from '../../functions/oci/digest';
import {
  appendSignature,
  canonicalConfig,
  cosignRepositoryName,
  SIGNATURE_ANNOTATION,
  signatureLayer,
  signatureManifest,
  signaturePayload,
  signatureTag,
  SIMPLESIGNING,
} from '../../functions/signing/cosign-format';
import { fileSigner, parseSigningKey, regionOfKey, verifyPkcs1Sha256, type Signer } from '../../functions/signing/signer';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

describe('the signature known answers (signature spec §7)', () => {
  const repo = 'ghcr.io/gardenlinux/gardenlinux';
  const digest = 'sha256:95dd86f9a981b92596da582cd047f7d2b73eeddc6b9dce49c78bc2f340fc3b84';
  let signer: Signer;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gl-sign-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 4096 });
    await writeFile(join(dir, 'key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }));
    signer = await fileSigner(join(dir, 'key.pem'));
  });

  it('names the tag sha256-<hex>.sig', () => {
    assert.equal(signatureTag(digest), 'sha256-95dd86f9a981b92596da582cd047f7d2b73eeddc6b9dce49c78bc2f340fc3b84.sig');
  });

  it('writes the payload byte for byte: 247 bytes, sha256:729940ba…', () => {
    const payload = signaturePayload(repo, digest);
    assert.equal(
      payload.toString('utf8'),
      '{"critical":{"identity":{"docker-reference":"ghcr.io/gardenlinux/gardenlinux"},"image":{"docker-manifest-digest":"sha256:95dd86f9a981b92596da582cd047f7d2b73eeddc6b9dce49c78bc2f340fc3b84"},"type":"cosign container image signature"},"optional":null}',
    );
    assert.equal(payload.length, 247);
    assert.equal(sha256Digest(payload), 'sha256:729940bac4828274665f1ea3246c9a535ae6969828940af47077bb0473fcbcfc');
    assert.equal(signaturePayload('ghcr.io/gardenlinux/nightly', digest).length, 243);
  });

  it('writes the config (233 bytes, sha256:c5a8749a…) and a 1146-byte manifest for an RSA-4096 key', async () => {
    const payload = signaturePayload(repo, digest);
    const sig = await signer.signSha256Digest(sha256(payload));
    assert.equal(sig.length, 512);
    const b64 = sig.toString('base64');
    assert.equal(b64.length, 684);
    assert.ok(b64.endsWith('='));
    const { config, manifest, mediaType } = appendSignature(undefined, signatureLayer(payload, sig));
    assert.equal(mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(
      config.toString('utf8'),
      '{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["sha256:729940bac4828274665f1ea3246c9a535ae6969828940af47077bb0473fcbcfc"]},"config":{}}',
    );
    assert.equal(config.length, 233);
    assert.equal(sha256Digest(config), 'sha256:c5a8749aeab6ef2d1b759ad3b5cc5e99fe912fe7530f614de68f1b461c6cabda');
    assert.equal(manifest.length, 1146);
    assert.equal(
      manifest.toString('utf8'),
      `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"digest":"sha256:c5a8749aeab6ef2d1b759ad3b5cc5e99fe912fe7530f614de68f1b461c6cabda"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":247,"digest":"sha256:729940bac4828274665f1ea3246c9a535ae6969828940af47077bb0473fcbcfc","annotations":{"dev.cosignproject.cosign/signature":"${b64}"}}]}`,
    );
  });

  it('reproduces a real cosign run byte for byte (the traced payload and manifest digests)', () => {
    const payload = signaturePayload('index.docker.io/chihjenhuang/cosign1', 'sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d');
    assert.equal(payload.length, 252);
    assert.equal(sha256Digest(payload), 'sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc');
    const layer = signatureLayer(payload, Buffer.from('MEYCIQCPH7NJAIfrB6BZN91dV0o7l/i11muXrvrAh100jDMMhAIhAPsLH0oXb2OPITXRpWBMUd3vHtz5Ks5pql2Hr6t/IJXw', 'base64'));
    const manifest = signatureManifest(
      'application/vnd.oci.image.manifest.v1+json',
      { mediaType: 'application/vnd.oci.image.config.v1+json', size: 247, digest: 'sha256:85ad8e17d3d7c00664855c638832bd99f32d42542c2d587851410a45a7f60b95' },
      [layer],
    );
    assert.equal(manifest.length, 558);
    assert.equal(sha256Digest(manifest), 'sha256:7ebe8964225fa4619b53aa35416ef0246c037e36ddf81776b21b15e1dda2262b');
  });

  it('signs deterministically: from scratch twice gives the same .sig bytes', async () => {
    const payload = signaturePayload(repo, digest);
    const a = appendSignature(undefined, signatureLayer(payload, await signer.signSha256Digest(sha256(payload))));
    const b = appendSignature(undefined, signatureLayer(payload, await signer.signSha256Digest(sha256(payload))));
    assert.equal(sha256Digest(a.manifest), sha256Digest(b.manifest));
  });

  it('signs what crypto.sign signs (RSASSA-PKCS1-v1_5 over SHA-256), and the signature verifies', async () => {
    const payload = signaturePayload(repo, digest);
    const sig = await signer.signSha256Digest(sha256(payload));
    assert.ok(verifyPkcs1Sha256(signer.publicKey, payload, sig));
    const tampered = Buffer.from(sig);
    tampered[10] = (tampered[10] as number) ^ 1;
    assert.equal(verifyPkcs1Sha256(signer.publicKey, payload, tampered), false);
  });
});

describe('appending to an existing signature image (signature spec §5)', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const foreignPayload = signaturePayload('mirror.example/gl', digest);
  const foreign = { ...signatureLayer(foreignPayload, Buffer.from('foreign')), annotations: { [SIGNATURE_ANNOTATION]: 'Zm9yZWlnbg==', 'x.other': 'kept' } };
  const ours = signatureLayer(signaturePayload('ghcr.io/gardenlinux/gardenlinux', digest), Buffer.from('ours'));

  it('keeps the existing layers in their order and extends a cosign config: the same as cosign writing both', () => {
    const first = appendSignature(undefined, foreign);
    const cfg = JSON.parse(first.config.toString('utf8')) as Record<string, unknown>;
    const next = appendSignature(
      { mediaType: first.mediaType, layers: [foreign], config: { descriptor: { mediaType: 'x', size: first.config.length, digest: sha256Digest(first.config) }, content: cfg } },
      ours,
    );
    const m = JSON.parse(next.manifest.toString('utf8')) as { layers: Array<{ digest: string; annotations: Record<string, string> }> };
    assert.deepEqual(m.layers.map((l) => l.digest), [foreign.digest, ours.digest]);
    assert.equal(m.layers[0]?.annotations['x.other'], 'kept');
    assert.equal(next.config.toString('utf8'), canonicalConfig([foreign, ours]).toString('utf8'));
  });

  it("keeps a foreign config's own fields and a Docker media type", () => {
    const content = { architecture: '', created: '2024-05-01T10:00:00Z', history: [{ created: '2024-05-01T10:00:00Z' }], os: '', rootfs: { type: 'layers', diff_ids: [foreign.digest] }, config: {} };
    const next = appendSignature(
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', layers: [foreign], config: { descriptor: { mediaType: 'x', size: 1, digest }, content } },
      ours,
    );
    const cfg = JSON.parse(next.config.toString('utf8')) as typeof content;
    assert.equal(cfg.created, '2024-05-01T10:00:00Z');
    assert.deepEqual(cfg.history, [{ created: '2024-05-01T10:00:00Z' }, { created: '0001-01-01T00:00:00Z' }]);
    assert.deepEqual(cfg.rootfs.diff_ids, [foreign.digest, ours.digest]);
    assert.equal(next.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.match(next.manifest.toString('utf8'), /"config":\{"mediaType":"application\/vnd\.docker\.container\.image\.v1\+json"/);
  });

  it('gives the layer the simple signing media type, the payload size and digest', () => {
    assert.equal(ours.mediaType, SIMPLESIGNING);
    assert.equal(ours.size, signaturePayload('ghcr.io/gardenlinux/gardenlinux', digest).length);
  });
});

describe('repository names and key URIs', () => {
  it('names Docker Hub repositories as cosign does', () => {
    assert.equal(cosignRepositoryName('docker.io', 'gardenlinux'), 'index.docker.io/library/gardenlinux');
    assert.equal(cosignRepositoryName('docker.io', 'gardenlinux/nightly'), 'index.docker.io/gardenlinux/nightly');
    assert.equal(cosignRepositoryName('ghcr.io', 'gardenlinux/gardenlinux'), 'ghcr.io/gardenlinux/gardenlinux');
    assert.equal(cosignRepositoryName('127.0.0.1:5000', 'gl'), '127.0.0.1:5000/gl');
  });

  it('accepts the key forms cosign accepts', () => {
    const arn = 'arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    assert.deepEqual(parseSigningKey(`awskms:///${arn}`), { kind: 'kms', keyId: arn });
    assert.deepEqual(parseSigningKey('awskms://kms.eu-central-1.amazonaws.com/alias/gardenlinux-oci'), {
      kind: 'kms',
      host: 'kms.eu-central-1.amazonaws.com',
      keyId: 'alias/gardenlinux-oci',
    });
    assert.deepEqual(parseSigningKey('awskms:///1234abcd-12ab-34cd-56ef-1234567890ab'), { kind: 'kms', keyId: '1234abcd-12ab-34cd-56ef-1234567890ab' });
    assert.deepEqual(parseSigningKey('awskms:///mrk-1234abcd12ab34cd56ef1234567890ab'), { kind: 'kms', keyId: 'mrk-1234abcd12ab34cd56ef1234567890ab' });
    assert.deepEqual(parseSigningKey('awskms:///arn:aws:kms:us-east-1:123456789012:alias/gl'), { kind: 'kms', keyId: 'arn:aws:kms:us-east-1:123456789012:alias/gl' });
    assert.deepEqual(parseSigningKey('file:./k.pem'), { kind: 'file', path: './k.pem' });
    assert.equal(regionOfKey(arn), 'eu-central-1');
    assert.equal(regionOfKey('alias/gl'), undefined);
  });

  it('refuses what is no key, saying what is expected', () => {
    assert.throws(() => parseSigningKey('kms://alias/x'), /awskms:\/\/\/<key id, key ARN or alias> or file:/);
    assert.throws(() => parseSigningKey('awskms:///not-a-key'), /is not a KMS key id, key ARN, alias/);
    assert.throws(() => parseSigningKey('awskms://bad host/alias/x'), /not a host name/);
    assert.throws(() => parseSigningKey('file:'), /needs a path/);
  });

  it('refuses a PEM key that gardenlinux-update cannot verify (EC), and a file that is no key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gl-sign-'));
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(join(dir, 'ec.pem'), (privateKey as KeyObject).export({ format: 'pem', type: 'pkcs8' }));
    await assert.rejects(fileSigner(join(dir, 'ec.pem')), /is a ec key; gardenlinux-update verifies only RSA/);
    await writeFile(join(dir, 'junk.pem'), 'not a key');
    await assert.rejects(fileSigner(join(dir, 'junk.pem')), /is not a PEM private key/);
    await assert.rejects(fileSigner(join(dir, 'missing.pem')), /cannot read the signing key/);
  });

  it('signs with a PKCS#1 PEM key what crypto.sign signs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gl-sign-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await writeFile(join(dir, 'rsa.pem'), privateKey.export({ format: 'pem', type: 'pkcs1' }));
    const s = await fileSigner(join(dir, 'rsa.pem'));
    const data = Buffer.from('payload');
    assert.deepEqual(await s.signSha256Digest(sha256(data)), sign('sha256', data, privateKey));
  });
});
