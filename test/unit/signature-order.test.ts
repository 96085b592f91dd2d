/**
 * Putting a signature first (sign-first, after a key rotation): the pure reordering of a cosign signature image with
 * known bytes, the manual payload that asks for it, and the key fingerprint that verify reports.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { sha256Digest } from '../../functions/oci/digest';
import type { Descriptor } from '../../functions/oci/descriptor';
import { normaliseEvent } from '../../functions/publish/events';
import {
  appendSignature,
  canonicalConfig,
  moveSignatureFirst,
  SignatureConfigSchema,
  signatureLayer,
  signaturePayload,
  type SignatureImage,
} from '../../functions/signing/cosign-format';
import { keyFingerprint } from '../../functions/signing/signer';

const DIGEST = 'sha256:95dd86f9a981b92596da582cd047f7d2b73eeddc6b9dce49c78bc2f340fc3b84';
/** signature spec §7: the payload for ghcr.io/gardenlinux/gardenlinux and DIGEST */
const P = 'sha256:729940bac4828274665f1ea3246c9a535ae6969828940af47077bb0473fcbcfc';
const ZERO = '{"created":"0001-01-01T00:00:00Z"}';
const OCI = 'application/vnd.oci.image.manifest.v1+json';
const SIMPLE = 'application/vnd.dev.cosign.simplesigning.v1+json';

const payload = signaturePayload('ghcr.io/gardenlinux/gardenlinux', DIGEST);
/** The old key's and the new key's signatures of the same payload (8 bytes each: only the bytes matter here). */
const oldKey = signatureLayer(payload, Buffer.alloc(8, 0xaa)); // qqqqqqqqqqo=
const newKey = signatureLayer(payload, Buffer.alloc(8, 0xbb)); // u7u7u7u7u7s=
/** A manual `cosign sign` through a mirror: another payload. */
const mirror = signatureLayer(signaturePayload('mirror.example/gl', DIGEST), Buffer.alloc(8, 0xff));

/** An image as the registry holds it after `appendSignature` wrote these layers one by one (cosign's way). */
function written(layers: readonly Descriptor[]): { image: SignatureImage; config: Buffer; manifest: Buffer } {
  let image: SignatureImage | undefined;
  let last: ReturnType<typeof appendSignature> | undefined;
  for (const l of layers) {
    last = appendSignature(image, l);
    image = {
      mediaType: last.mediaType,
      layers: [...(image?.layers ?? []), l],
      config: { descriptor: { mediaType: 'application/vnd.oci.image.config.v1+json', size: last.config.length, digest: sha256Digest(last.config) }, content: SignatureConfigSchema.parse(JSON.parse(last.config.toString('utf8'))) },
    };
  }
  assert.ok(image && last);
  return { image, config: last.config, manifest: last.manifest };
}

const layerJson = (l: Descriptor) => `{"mediaType":"${SIMPLE}","size":${l.size},"digest":"${l.digest}","annotations":{"dev.cosignproject.cosign/signature":"${l.annotations?.['dev.cosignproject.cosign/signature']}"}}`;

describe('moving a signature to layer 0 (moveSignatureFirst)', () => {
  it("after a rotation (the old key's layer, then the new key's, one payload): the new key's goes first, the config stays byte for byte", () => {
    const before = written([oldKey, newKey]);
    assert.equal(sha256Digest(before.manifest), 'sha256:5faaed1ecda109ec4d58c39e20a9c62d7f4fc170fd102dea962c536d0f526e2d');
    const config = `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[${ZERO},${ZERO}],"os":"","rootfs":{"type":"layers","diff_ids":["${P}","${P}"]},"config":{}}`;
    assert.equal(before.config.toString('utf8'), config);

    const moved = moveSignatureFirst(before.image, 1);
    // Both layers carry the same payload, so the diff_ids read the same in either order: 342 bytes (233 + 109).
    assert.equal(moved.config.toString('utf8'), config);
    assert.equal(moved.config.length, 342);
    assert.equal(sha256Digest(moved.config), 'sha256:e2c7e9b9f977d48ff86f658b48bfeb06a94c8d765f239777e69be9c62de9639c');
    assert.equal(moved.mediaType, OCI);
    assert.equal(
      moved.manifest.toString('utf8'),
      `{"schemaVersion":2,"mediaType":"${OCI}","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":342,"digest":"sha256:e2c7e9b9f977d48ff86f658b48bfeb06a94c8d765f239777e69be9c62de9639c"},"layers":[${layerJson(newKey)},${layerJson(oldKey)}]}`,
    );
    assert.match(moved.manifest.toString('utf8'), /"layers":\[\{[^}]*"annotations":\{"dev\.cosignproject\.cosign\/signature":"u7u7u7u7u7s="\}\},\{[^}]*"qqqqqqqqqqo="/);
    assert.equal(moved.manifest.length, 701);
    assert.equal(sha256Digest(moved.manifest), 'sha256:3c80e556846194f52323ec616d23580be4d10167a05d367ca98227b810530a18');
    assert.deepEqual(moved.layers, [newKey, oldKey]);
  });

  it('with other payloads, the diff_ids follow their layers: the very bytes cosign writes signing in the new order', () => {
    const before = written([mirror, oldKey, newKey]);
    const moved = moveSignatureFirst(before.image, 2);
    assert.deepEqual(moved.layers, [newKey, mirror, oldKey], 'the moved layer first, the others in their order');
    assert.equal(
      moved.config.toString('utf8'),
      `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[${ZERO},${ZERO},${ZERO}],"os":"","rootfs":{"type":"layers","diff_ids":["${P}","${mirror.digest}","${P}"]},"config":{}}`,
    );
    assert.equal(mirror.digest, 'sha256:9a110cbed6b9ef518688a960b58d2064a61d65f24c45ee2063973610441c1210');
    assert.equal(moved.config.length, 233 + 2 * 109);
    assert.equal(moved.config.toString('utf8'), canonicalConfig([newKey, mirror, oldKey]).toString('utf8'));
    const scratch = written([newKey, mirror, oldKey]);
    assert.equal(moved.manifest.toString('utf8'), scratch.manifest.toString('utf8'));
    assert.equal(sha256Digest(moved.manifest), sha256Digest(scratch.manifest));

    // The middle one: [oldKey, mirror, newKey] from [mirror, oldKey, newKey].
    assert.deepEqual(moveSignatureFirst(before.image, 1).layers, [oldKey, mirror, newKey]);
  });

  it('layer 0 stays where it is, byte for byte, and moving back restores the original bytes', () => {
    const before = written([mirror, oldKey, newKey]);
    const same = moveSignatureFirst(before.image, 0);
    assert.equal(same.manifest.toString('utf8'), before.manifest.toString('utf8'));
    assert.equal(same.config.toString('utf8'), before.config.toString('utf8'));

    const twoLayers = written([oldKey, mirror]);
    const swapped = moveSignatureFirst(twoLayers.image, 1);
    const back = moveSignatureFirst(
      { mediaType: swapped.mediaType, layers: swapped.layers, config: { descriptor: { mediaType: 'x', size: swapped.config.length, digest: sha256Digest(swapped.config) }, content: SignatureConfigSchema.parse(JSON.parse(swapped.config.toString('utf8'))) } },
      1,
    );
    assert.equal(back.manifest.toString('utf8'), twoLayers.manifest.toString('utf8'));
  });

  it("keeps a foreign config's fields, moves its history entries with their layers, and keeps Docker media types", () => {
    const content = {
      architecture: '',
      created: '2024-05-01T10:00:00Z',
      history: [{ created: '2024-05-01T10:00:00Z' }, { created: '2025-01-02T03:04:05Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: [mirror.digest, P] },
      config: {},
    };
    const moved = moveSignatureFirst({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', layers: [mirror, newKey], config: { descriptor: { mediaType: 'x', size: 1, digest: DIGEST }, content } }, 1);
    const cfg = JSON.parse(moved.config.toString('utf8')) as typeof content;
    assert.equal(cfg.created, '2024-05-01T10:00:00Z');
    assert.deepEqual(cfg.history, [{ created: '2025-01-02T03:04:05Z' }, { created: '2024-05-01T10:00:00Z' }]);
    assert.deepEqual(cfg.rootfs.diff_ids, [P, mirror.digest]);
    assert.equal(moved.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.match(moved.manifest.toString('utf8'), /^\{"schemaVersion":2,"mediaType":"application\/vnd\.docker\.distribution\.manifest\.v2\+json","config":\{"mediaType":"application\/vnd\.docker\.container\.image\.v1\+json"/);
  });

  it('lists diff_ids anew when the config has not one per layer, and writes a missing config as cosign would', () => {
    const content = { rootfs: { type: 'layers', diff_ids: [P] } };
    const moved = moveSignatureFirst({ mediaType: OCI, layers: [mirror, newKey], config: { descriptor: { mediaType: 'x', size: 1, digest: DIGEST }, content } }, 1);
    assert.deepEqual((JSON.parse(moved.config.toString('utf8')) as typeof content).rootfs.diff_ids, [P, mirror.digest]);
    const bare = moveSignatureFirst({ mediaType: OCI, layers: [mirror, newKey] }, 1);
    assert.equal(bare.config.toString('utf8'), canonicalConfig([newKey, mirror]).toString('utf8'));
  });

  it('refuses a layer that is not there', () => {
    const { image } = written([oldKey, newKey]);
    for (const i of [-1, 2, 0.5]) assert.throws(() => moveSignatureFirst(image, i), RangeError);
  });
});

describe('the sign-first payload', () => {
  it('becomes one sign-first job for the version', () => {
    assert.deepEqual(normaliseEvent({ action: 'sign-first', version: '1877.3' }), { jobs: [{ kind: 'sign-first', version: '1877.3', origin: 'manual' }], sqs: false });
    assert.deepEqual(normaliseEvent('{"action":"sign-first","version":"2150.0.0"}').jobs[0], { kind: 'sign-first', version: '2150.0.0', origin: 'manual' });
  });
  it('refuses what it does not take: a bad version, a missing one, unknown fields', () => {
    assert.throws(() => normaliseEvent({ action: 'sign-first', version: 'latest' }), /invalid sign-first payload: version: expected a Garden Linux version/);
    assert.throws(() => normaliseEvent({ action: 'sign-first' }), /invalid sign-first payload: version/);
    assert.throws(() => normaliseEvent({ action: 'sign-first', version: '1877.3', first: true }), /invalid sign-first payload: .*first/);
    assert.throws(() => normaliseEvent({ action: 'sign-first', version: '1877.3', bucket: 'gardenlinux-github-releases' }), /invalid sign-first payload: .*bucket/);
  });
  it('is named among the accepted actions', () => {
    assert.throws(() => normaliseEvent({ action: 'rotate' }), /unknown action "rotate": expected .*"sign-first"/);
  });
});

describe('key fingerprints', () => {
  it('is sha256: and 16 hex digits of SHA-256 over the SPKI DER, the same for the private key and its public half', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const expected = `sha256:${createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)}`;
    assert.equal(keyFingerprint(publicKey), expected);
    assert.equal(keyFingerprint(privateKey), expected);
    assert.notEqual(keyFingerprint(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey), expected);
  });
});
