/**
 * Puts a cosign signature next to a manifest (`sha256-<hex>.sig` in its repository), as cosign's `sign` does:
 * look first, sign only when no layer holds a valid signature of ours, append and never reorder.
 *
 * Idempotent: a re-run finds its layer (the same payload, a signature that verifies with the configured key) and
 * makes no KMS call and no write. RSA PKCS#1 v1.5 is deterministic, so two publishers that sign one manifest at
 * once write identical bytes and the tag ends with one layer.
 */
import { createHash } from 'node:crypto';
import { sha256Digest } from '../oci/digest';
import { parseJson, type Descriptor } from '../oci/descriptor';
import {
  appendSignature,
  canonicalConfig,
  parseSignatureManifest,
  SIGNATURE_ANNOTATION,
  SignatureConfigSchema,
  signatureLayer,
  signaturePayload,
  signatureTag,
  SIMPLESIGNING,
  type SignatureImage,
} from '../signing/cosign-format';
import { SigningError, verifyPkcs1Sha256, type Signer } from '../signing/signer';
import type { Target } from '../target/target';
import { IntegrityError } from '../util/errors';
import type { Logger } from '../util/log';
import type { FileTransfer } from './file-transfer';

/** Payloads and configs of signature images are small; anything larger is not cosign's. */
const MAX_SIGNATURE_BLOB = 64 * 1024;

export interface SignatureResult {
  /** the signed manifest */
  signed: string;
  tag: string;
  /** the signature image's digest */
  digest: string;
  /** false: a valid signature of this key was there already */
  written: boolean;
  layers: number;
}

/** Whether a layer is a signature of `payload` by `signer`'s key. */
function signs(layer: Descriptor, payload: Buffer, payloadDigest: string, signer: Signer): boolean {
  const b64 = layer.annotations?.[SIGNATURE_ANNOTATION];
  if (layer.mediaType !== SIMPLESIGNING || layer.digest !== payloadDigest || typeof b64 !== 'string') return false;
  return verifyPkcs1Sha256(signer.publicKey, payload, Buffer.from(b64, 'base64'));
}

export async function ensureSignature(target: Target, signed: string, signer: Signer, transfer: FileTransfer, log: Logger): Promise<SignatureResult> {
  const tag = signatureTag(signed);
  const where = `${target.display}:${tag}`;
  const payload = signaturePayload(target.repositoryName, signed);
  const payloadDigest = sha256Digest(payload);

  let image: SignatureImage | undefined;
  const current = await target.getManifest(tag);
  if (current) {
    const parsed = parseSignatureManifest(current.bytes, where);
    const own = parsed.layers.findIndex((l) => signs(l, payload, payloadDigest, signer));
    if (own >= 0) {
      // Ours is there. The blobs it names must be too: the updater fetches the payload, registries the config.
      await transfer.ensureBuffer(target, payload, `signature payload of ${signed}`, payloadDigest);
      const canonical = canonicalConfig(parsed.layers);
      if (sha256Digest(canonical) === parsed.config.digest) {
        await transfer.ensureBuffer(target, canonical, `signature config of ${signed}`);
      } else if (!(await target.hasBlob(parsed.config.digest))) {
        throw new IntegrityError(`${where} names the config blob ${parsed.config.digest}, which is gone; delete the tag to sign again`);
      }
      if (own > 0) await warnFirstLayer(target, parsed.layers[0] as Descriptor, signed, signer, where, log);
      return { signed, tag, digest: current.digest, written: false, layers: parsed.layers.length };
    }
    const configBytes = await target.fetchBlob(parsed.config.digest, MAX_SIGNATURE_BLOB);
    if (configBytes === undefined) throw new IntegrityError(`${where} names the config blob ${parsed.config.digest}, which is gone`);
    image = {
      mediaType: parsed.mediaType,
      layers: parsed.layers,
      config: { descriptor: parsed.config, content: parseJson(SignatureConfigSchema, configBytes, `the config of ${where}`) },
    };
  }

  const signature = await signer.signSha256Digest(createHash('sha256').update(payload).digest());
  // Nothing is written with a signature the key's own public half does not accept.
  if (!verifyPkcs1Sha256(signer.publicKey, payload, signature)) {
    throw new SigningError(`${signer.description} returned a signature of ${signed} that does not verify with its public key (PKCS#1 v1.5, SHA-256)`);
  }
  const next = appendSignature(image, signatureLayer(payload, signature));
  // Blobs before the manifest: registries refuse a manifest that names a missing blob.
  await transfer.ensureBuffer(target, payload, `signature payload of ${signed}`, payloadDigest);
  await transfer.ensureBuffer(target, next.config, `signature config of ${signed}`);
  const digest = await target.putManifest(next.manifest, next.mediaType, tag);
  if (digest !== sha256Digest(next.manifest)) throw new IntegrityError(`${where} was stored with digest ${digest}`);
  if (image && image.layers.length > 0) await warnFirstLayer(target, image.layers[0] as Descriptor, signed, signer, where, log);
  log.info('signature written', { signed, tag, repository: target.display, digest, layers: image ? image.layers.length + 1 : 1 });
  return { signed, tag, digest, written: true, layers: (image?.layers.length ?? 0) + 1 };
}

/**
 * gardenlinux-update reads only the first layer. One that is not a valid signature of this key (another key, a
 * manual `cosign sign`) makes every updater refuse the manifest although `cosign verify` passes; reordering is an
 * operator's decision, so it is said loudly and left.
 */
async function warnFirstLayer(target: Target, first: Descriptor, signed: string, signer: Signer, where: string, log: Logger): Promise<void> {
  const payload = first.mediaType === SIMPLESIGNING ? await target.fetchBlob(first.digest, MAX_SIGNATURE_BLOB) : undefined;
  let names: unknown;
  try {
    names = payload ? (JSON.parse(payload.toString('utf8')) as { critical?: { image?: Record<string, unknown> } }).critical?.image?.['docker-manifest-digest'] : undefined;
  } catch {
    names = undefined;
  }
  if (payload && names === signed && signs(first, payload, first.digest, signer)) return;
  log.error('the first signature layer is not a valid signature of the configured key: gardenlinux-update reads only that layer and will refuse this manifest', {
    tag: where,
    signed,
    firstLayer: first.digest,
    key: signer.description,
  });
}
