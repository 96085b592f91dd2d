/**
 * Puts a cosign signature next to a manifest (`sha256-<hex>.sig` in its repository), as cosign's `sign` does:
 * look first, sign only when no layer holds a valid signature of ours, append and never reorder. Only the
 * operator's sign-first action (putSignatureFirst, after a key rotation) moves ours to the front.
 *
 * Idempotent: a re-run finds its layer (the same payload, a signature that verifies with the configured key) and
 * makes no KMS call and no write. RSA PKCS#1 v1.5 is deterministic, so two publishers that sign one manifest at
 * once write identical bytes and the tag ends with one layer.
 */
import { createHash } from 'node:crypto';
import { sha256Digest } from '../oci/digest';
import { parseJson, type Descriptor } from '../oci/descriptor';
import { OCI_CONFIG } from '../oci/media-types';
import {
  appendSignature,
  canonicalConfig,
  moveSignatureFirst,
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

/** What puts a small blob in place: FileTransfer in a publication (counted with the job's uploads). */
export type SignatureBlobs = Pick<FileTransfer, 'ensureBuffer'>;

/** What sign-first did to one signature image. */
export type FirstAction = 'already-first' | 'moved' | 'signed' | 'signed-and-moved';

export interface FirstSignatureResult extends SignatureResult {
  repository: string;
  /** the build (the index entry's cname), or `<arch> image` for a container image */
  subject: string;
  action: FirstAction;
  /** where the key's signature was (0-based) before, when there was one */
  from?: number;
}

/** A publication's signature: ours appended when missing, the order of the layers never changed. */
export async function ensureSignature(target: Target, signed: string, signer: Signer, transfer: SignatureBlobs, log: Logger): Promise<SignatureResult> {
  return (await placeSignature(target, signed, signer, transfer, log, false)).result;
}

/**
 * The operator's action after a key rotation (sign-first): ours appended when missing, as a publication does, then
 * moved to layer 0, the only layer gardenlinux-update reads; the other layers stay, in their order. One manifest
 * PUT at most (after the new config blob), none when ours is first already.
 */
export async function putSignatureFirst(
  target: Target,
  signed: string,
  signer: Signer,
  transfer: SignatureBlobs,
  log: Logger,
): Promise<Omit<FirstSignatureResult, 'subject'>> {
  const { result, from, appended } = await placeSignature(target, signed, signer, transfer, log, true);
  const action: FirstAction = appended ? (result.layers > 1 ? 'signed-and-moved' : 'signed') : from === 0 ? 'already-first' : 'moved';
  return { ...result, repository: target.display, action, ...(from !== undefined ? { from } : {}) };
}

async function placeSignature(
  target: Target,
  signed: string,
  signer: Signer,
  transfer: SignatureBlobs,
  log: Logger,
  first: boolean,
): Promise<{ result: SignatureResult; from?: number; appended: boolean }> {
  const tag = signatureTag(signed);
  const where = `${target.display}:${tag}`;
  const payload = signaturePayload(target.repositoryName, signed);
  const payloadDigest = sha256Digest(payload);

  let image: SignatureImage | undefined;
  let own = -1;
  const current = await target.getManifest(tag);
  if (current) {
    const parsed = parseSignatureManifest(current.bytes, where);
    own = parsed.layers.findIndex((l) => signs(l, payload, payloadDigest, signer));
    const canonical = canonicalConfig(parsed.layers);
    const isCanonical = sha256Digest(canonical) === parsed.config.digest;
    if (own >= 0) {
      // Ours is there. The blobs it names must be too: the updater fetches the payload, registries the config.
      await transfer.ensureBuffer(target, payload, `signature payload of ${signed}`, payloadDigest);
      if (isCanonical) {
        await transfer.ensureBuffer(target, canonical, `signature config of ${signed}`);
      } else if (!(await target.hasBlob(parsed.config.digest))) {
        throw new IntegrityError(`${where} names the config blob ${parsed.config.digest}, which is gone; delete the tag to sign again`);
      }
      // A publication never reorders; sign-first has nothing to do when ours is first.
      if (!first || own === 0) {
        if (own > 0) await warnFirstLayer(target, parsed.layers[0] as Descriptor, signed, signer, where, log);
        return { result: { signed, tag, digest: current.digest, written: false, layers: parsed.layers.length }, from: own, appended: false };
      }
    }
    const configBytes = own >= 0 && isCanonical ? canonical : await target.fetchBlob(parsed.config.digest, MAX_SIGNATURE_BLOB);
    if (configBytes === undefined) throw new IntegrityError(`${where} names the config blob ${parsed.config.digest}, which is gone`);
    image = {
      mediaType: parsed.mediaType,
      layers: parsed.layers,
      config: { descriptor: parsed.config, content: parseJson(SignatureConfigSchema, configBytes, `the config of ${where}`) },
    };
  }

  let next: { config: Buffer; manifest: Buffer; mediaType: string };
  let layers: number;
  if (own < 0) {
    const signature = await signer.signSha256Digest(createHash('sha256').update(payload).digest());
    // Nothing is written with a signature the key's own public half does not accept.
    if (!verifyPkcs1Sha256(signer.publicKey, payload, signature)) {
      throw new SigningError(`${signer.description} returned a signature of ${signed} that does not verify with its public key (PKCS#1 v1.5, SHA-256)`);
    }
    const layer = signatureLayer(payload, signature);
    next = appendSignature(image, layer);
    layers = (image?.layers.length ?? 0) + 1;
    if (first && image && image.layers.length > 0) {
      // As if the appended image had been read back from the registry, then moved: one write instead of two.
      const appended: SignatureImage = {
        mediaType: next.mediaType,
        layers: [...image.layers, layer],
        config: {
          descriptor: { mediaType: OCI_CONFIG, size: next.config.length, digest: sha256Digest(next.config) },
          content: parseJson(SignatureConfigSchema, next.config, `the config of ${where}`),
        },
      };
      next = moveSignatureFirst(appended, image.layers.length);
    }
  } else {
    next = moveSignatureFirst(image as SignatureImage, own);
    layers = (image as SignatureImage).layers.length;
  }
  // Blobs before the manifest: registries refuse a manifest that names a missing blob.
  await transfer.ensureBuffer(target, payload, `signature payload of ${signed}`, payloadDigest);
  await transfer.ensureBuffer(target, next.config, `signature config of ${signed}`);
  const digest = await target.putManifest(next.manifest, next.mediaType, tag);
  if (digest !== sha256Digest(next.manifest)) throw new IntegrityError(`${where} was stored with digest ${digest}`);
  if (!first && image && image.layers.length > 0) await warnFirstLayer(target, image.layers[0] as Descriptor, signed, signer, where, log);
  if (own < 0) log.info('signature written', { signed, tag, repository: target.display, digest, layers });
  if (first && image && image.layers.length > 0) {
    log.info('signature put first', { signed, tag, repository: target.display, digest, layers, from: own < 0 ? layers - 1 : own, before: current?.digest, key: signer.description });
  }
  return { result: { signed, tag, digest, written: true, layers }, ...(own >= 0 ? { from: own } : {}), appended: own < 0 };
}

/**
 * gardenlinux-update reads only the first layer. One that is not a valid signature of this key (another key, a
 * manual `cosign sign`) makes every updater refuse the manifest although `cosign verify` passes; reordering is an
 * operator's decision (sign-first), so a publication says it loudly and leaves it.
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
    fix: "the sign-first action for this manifest's version puts this key's signature first (docs/operations.md, \"Rotate the signing key\")",
  });
}
