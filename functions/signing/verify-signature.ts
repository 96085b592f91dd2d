/**
 * Checks a manifest's signature as its consumers do: `cosign verify --key` (any layer whose payload names the
 * digest and whose signature verifies) and gardenlinux-update (the first layer only, RSA PKCS#1 v1.5, the
 * annotation in canonical base64). Reads only; for the demo and for checking a release.
 */
import type { KeyObject } from 'node:crypto';
import { sha256Digest } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import type { Target } from '../target/target';
import { describeError } from '../util/errors';
import { parseSignatureManifest, SIGNATURE_ANNOTATION, signatureTag } from './cosign-format';
import { keyFingerprint, verifyPkcs1Sha256 } from './signer';

const MAX_PAYLOAD = 64 * 1024;

/**
 * Who signs layer 0, the only layer gardenlinux-update reads: the key checked against; another key (a well-formed
 * signature of this manifest that the key does not verify: after a key rotation, or a manual `cosign sign`); an
 * invalid layer (no annotation, a payload that is missing or names another manifest, base64 the updater refuses);
 * none (no `.sig`, no layers, or it could not be read: the problem says which).
 */
export type FirstLayerSigner = 'this-key' | 'another-key' | 'invalid' | 'none';

export interface SignatureCheck {
  tag: string;
  /** cosign verify --key <key> --insecure-ignore-tlog=true accepts it */
  cosign: boolean;
  /** gardenlinux-update accepts it */
  updater: boolean;
  /** why not, when either refuses */
  problem?: string;
  /** layers in the signature image */
  layers: number;
  firstLayer: FirstLayerSigner;
  /** the key's fingerprint (keyFingerprint) when it signs layer 0 */
  firstLayerKey?: string;
  /** the first layer (0-based) holding a signature the key verifies, by cosign's rule, when there is one */
  keyLayer?: number;
}

const NOT_THIS_KEY = 'the signature does not verify with the key';

function namesDigest(payload: Buffer): unknown {
  try {
    return (JSON.parse(payload.toString('utf8')) as { critical?: { image?: Record<string, unknown> } }).critical?.image?.['docker-manifest-digest'];
  } catch {
    return undefined;
  }
}

async function layerVerifies(target: Target, layer: Descriptor, digest: string, key: KeyObject, canonicalBase64: boolean): Promise<string | undefined> {
  const b64 = layer.annotations?.[SIGNATURE_ANNOTATION];
  if (typeof b64 !== 'string') return 'the layer has no signature annotation';
  const signature = Buffer.from(b64, 'base64');
  if (canonicalBase64 && signature.toString('base64') !== b64) return 'the signature is not in canonical base64';
  const payload = await target.fetchBlob(layer.digest, MAX_PAYLOAD);
  if (!payload) return `the payload blob ${layer.digest} is missing`;
  if (sha256Digest(payload) !== layer.digest) return 'the payload does not match its digest';
  if (namesDigest(payload) !== digest) return 'the payload names another manifest';
  if (!verifyPkcs1Sha256(key, payload, signature)) return NOT_THIS_KEY;
  return undefined;
}

export async function checkSignature(target: Target, digest: string, key: KeyObject): Promise<SignatureCheck> {
  const tag = signatureTag(digest);
  try {
    const current = await target.getManifest(tag);
    if (!current) return { tag, cosign: false, updater: false, problem: `${tag} does not exist`, layers: 0, firstLayer: 'none' };
    const { layers } = parseSignatureManifest(current.bytes, `${target.display}:${tag}`);
    if (layers.length === 0) return { tag, cosign: false, updater: false, problem: `${tag} has no layers`, layers: 0, firstLayer: 'none' };
    const first = await layerVerifies(target, layers[0] as Descriptor, digest, key, true);
    let keyLayer: number | undefined;
    for (const [i, l] of layers.entries()) {
      if ((i === 0 && first === undefined) || (await layerVerifies(target, l, digest, key, false)) === undefined) {
        keyLayer = i;
        break;
      }
    }
    const updater = first === undefined;
    const fingerprint = keyFingerprint(key);
    const firstLayer: FirstLayerSigner = updater ? 'this-key' : first === NOT_THIS_KEY ? 'another-key' : 'invalid';
    return {
      tag,
      cosign: keyLayer !== undefined,
      updater,
      ...(updater ? {} : { problem: firstLayer === 'another-key' ? `first layer: ${NOT_THIS_KEY} ${fingerprint}: another key signs layer 0` : `first layer: ${first}` }),
      layers: layers.length,
      firstLayer,
      ...(updater ? { firstLayerKey: fingerprint } : {}),
      ...(keyLayer !== undefined ? { keyLayer } : {}),
    };
  } catch (err) {
    return { tag, cosign: false, updater: false, problem: describeError(err), layers: 0, firstLayer: 'none' };
  }
}
