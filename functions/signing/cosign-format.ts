/**
 * The bytes of cosign's legacy signature image (`sha256-<hex>.sig` in the signed manifest's repository), as cosign
 * v2.4 `sign --tlog-upload=false` writes them, so that `cosign verify` and gardenlinux-update accept what the
 * publisher writes. Pure: no I/O. The exact forms (key order, no whitespace, no trailing newline, zero timestamps)
 * are Go's `json.Marshal` of cosign's types; any other serialisation gives other digests.
 */
import * as z from 'zod';
import { sha256Digest } from '../oci/digest';
import { DescriptorSchema, ImageManifestSchema, parseJson, type Descriptor } from '../oci/descriptor';
import { DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST } from '../oci/media-types';
import { InputError } from '../util/errors';

export const SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const ZERO_TIME = '0001-01-01T00:00:00Z';

/** The tag of a manifest's signatures: `sha256:<hex>` becomes `sha256-<hex>.sig`. */
export function signatureTag(digest: string): string {
  return `${digest.replace(':', '-')}.sig`;
}

/**
 * The repository as cosign names it in `docker-reference` (go-containerregistry's normalisation): Docker Hub is
 * `index.docker.io`, and its one-segment names are under `library/`.
 */
export function cosignRepositoryName(host: string, repository: string): string {
  if (host === 'docker.io' || host === 'index.docker.io' || host === 'registry-1.docker.io') {
    return `index.docker.io/${repository.includes('/') ? repository : `library/${repository}`}`;
  }
  return `${host}/${repository}`;
}

/** What is signed: sigstore's simple signing payload naming the repository and the manifest digest. */
export function signaturePayload(repository: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: { identity: { 'docker-reference': repository }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
      optional: null,
    }),
  );
}

/** A signature layer: the payload blob, its signature in the annotation (padded standard base64). */
export function signatureLayer(payload: Buffer, signature: Buffer): Descriptor {
  return {
    mediaType: SIMPLESIGNING,
    size: payload.length,
    digest: sha256Digest(payload),
    annotations: { [SIGNATURE_ANNOTATION]: signature.toString('base64') },
  };
}

const HistorySchema = z.looseObject({});
/** The parts of a signature image's config that appending keeps. */
export const SignatureConfigSchema = z.looseObject({
  history: z.array(HistorySchema).optional(),
  rootfs: z.looseObject({ type: z.string().optional(), diff_ids: z.array(z.string()).optional() }).optional(),
});
export type SignatureConfig = z.infer<typeof SignatureConfigSchema>;

/** The config cosign writes for these layers from scratch: zero times, one history entry and diff_id per layer. */
export function canonicalConfig(layers: readonly Descriptor[]): Buffer {
  return configBytes(
    layers.map(() => ({ created: ZERO_TIME })),
    layers.map((l) => l.digest),
  );
}

function configBytes(history: readonly unknown[], diffIds: readonly string[]): Buffer {
  return Buffer.from(
    JSON.stringify({ architecture: '', created: ZERO_TIME, history, os: '', rootfs: { type: 'layers', diff_ids: diffIds }, config: {} }),
  );
}

/** An existing signature image as read from the registry. */
export interface SignatureImage {
  mediaType: string;
  layers: Descriptor[];
  /** the config's descriptor and parsed content; undefined for an image written from scratch */
  config?: { descriptor: Descriptor; content: SignatureConfig };
}

export const SignatureManifestSchema = ImageManifestSchema.extend({ layers: z.array(DescriptorSchema) });

export function parseSignatureManifest(bytes: Buffer, what: string): { mediaType: string; config: Descriptor; layers: Descriptor[] } {
  const m = parseJson(SignatureManifestSchema, bytes, what);
  const mediaType = m.mediaType ?? OCI_MANIFEST;
  if (mediaType !== OCI_MANIFEST && mediaType !== DOCKER_MANIFEST) throw new InputError(`${what} is a ${mediaType}, not an image manifest`);
  return { mediaType, config: m.config, layers: m.layers };
}

/**
 * The signature image with `layer` appended (cosign's AppendSignatures): existing layers, their order and the
 * media types stay; the config gains one zero history entry and one diff_id. From scratch (no image), the result
 * is exactly what cosign writes for a first signature.
 */
export function appendSignature(image: SignatureImage | undefined, layer: Descriptor): { config: Buffer; manifest: Buffer; mediaType: string } {
  const layers = [...(image?.layers ?? []), layer];
  let config: Buffer;
  if (image?.config) {
    const c = image.config.content;
    const history = [...(c.history ?? layers.slice(0, -1).map(() => ({ created: ZERO_TIME }))), { created: ZERO_TIME }];
    const diffIds = [...(c.rootfs?.diff_ids ?? layers.slice(0, -1).map((l) => l.digest)), layer.digest];
    config = rebuildConfig(c, history, diffIds);
  } else {
    config = canonicalConfig(layers);
  }
  return signatureImageBytes(image?.mediaType, config, layers);
}

/**
 * The signature image with the layer at `index` moved to the front and every other layer after it in its order:
 * what an operator asks for after a key rotation, because gardenlinux-update reads only the first layer. The
 * layers stay byte for byte (annotations included); the config follows them, since it lists one diff_id and one
 * history entry per layer in layer order: a cosign config is written again in cosign's form (with zero timestamps,
 * the same bytes as cosign signing in the new order from scratch), a foreign one keeps its fields. The manifest stays in
 * go-containerregistry's form, with its media types. Pure; publication never calls it (sign-first does).
 */
export function moveSignatureFirst(image: SignatureImage, index: number): { config: Buffer; manifest: Buffer; mediaType: string; layers: Descriptor[] } {
  const n = image.layers.length;
  if (!Number.isInteger(index) || index < 0 || index >= n) throw new RangeError(`no layer ${index} in a signature image of ${n} layers`);
  const order = [index, ...[...image.layers.keys()].filter((i) => i !== index)];
  const layers = order.map((i) => image.layers[i] as Descriptor);
  let config: Buffer;
  if (image.config) {
    const c = image.config.content;
    // One entry per layer, in layer order: moved with their layers. A list that does not match the layers is no
    // cosign list: history is kept as it is, and diff_ids (of uncompressed payloads: the layer digests) made anew.
    const h = c.history;
    const history = h === undefined ? layers.map(() => ({ created: ZERO_TIME })) : h.length === n ? order.map((i) => h[i]) : h;
    const ids = c.rootfs?.diff_ids;
    const diffIds = ids !== undefined && ids.length === n ? order.map((i) => ids[i] as string) : layers.map((l) => l.digest);
    config = rebuildConfig(c, history, diffIds);
  } else {
    config = canonicalConfig(layers);
  }
  return { ...signatureImageBytes(image.mediaType, config, layers), layers };
}

/** cosign's own config is written again in its form; a foreign one keeps its fields and their order. */
function rebuildConfig(c: SignatureConfig, history: readonly unknown[], diffIds: readonly string[]): Buffer {
  const { history: _h, rootfs, ...rest } = c;
  return isCosignConfig(rest)
    ? configBytes(history, diffIds)
    : Buffer.from(JSON.stringify({ ...c, history, rootfs: { ...rootfs, type: rootfs?.type ?? 'layers', diff_ids: diffIds } }));
}

/** Config and manifest bytes of a signature image: OCI media types, or Docker's when the image had them. */
function signatureImageBytes(existingType: string | undefined, config: Buffer, layers: readonly Descriptor[]): { config: Buffer; manifest: Buffer; mediaType: string } {
  const docker = existingType === DOCKER_MANIFEST;
  const mediaType = docker ? DOCKER_MANIFEST : OCI_MANIFEST;
  const configDescriptor = { mediaType: docker ? DOCKER_CONFIG : OCI_CONFIG, size: config.length, digest: sha256Digest(config) };
  return { config, manifest: signatureManifest(mediaType, configDescriptor, layers), mediaType };
}

/** The manifest of a signature image, in go-containerregistry's field order. */
export function signatureManifest(mediaType: string, config: Descriptor, layers: readonly Descriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: orderedDescriptor(config), layers: layers.map(orderedDescriptor) }));
}

/** Whether a config's fields besides history and rootfs are the ones cosign writes, with its values. */
function isCosignConfig(rest: Record<string, unknown>): boolean {
  if (!Object.keys(rest).every((k) => ['architecture', 'created', 'os', 'config'].includes(k))) return false;
  return (
    (rest.architecture ?? '') === '' &&
    (rest.created ?? ZERO_TIME) === ZERO_TIME &&
    (rest.os ?? '') === '' &&
    (rest.config === undefined || (typeof rest.config === 'object' && rest.config !== null && Object.keys(rest.config).length === 0))
  );
}

/** A descriptor in go-containerregistry's field order (mediaType, size, digest, annotations), other fields after. */
function orderedDescriptor(d: Descriptor): Record<string, unknown> {
  const { mediaType, size, digest, annotations, ...rest } = d;
  return { mediaType, size, digest, ...rest, ...(annotations && Object.keys(annotations).length > 0 ? { annotations } : {}) };
}
