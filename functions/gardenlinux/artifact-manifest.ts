/**
 * The Garden Linux artifact manifest of one build and its entry in the version index (spec §3, §5). Pure: the
 * same build always gives the same bytes, because layers are sorted by title and the keys have a fixed order.
 * The JSON is in Python's json.dumps form (python-json.ts), so gl-oci, which digests json.dumps() of what it
 * parsed, computes the digest the registry has.
 */
import { EMPTY_JSON, EMPTY_JSON_DIGEST, sha256Digest } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import { GARDENLINUX_CONFIG, MAX_MANIFEST_BYTES, OCI_MANIFEST } from '../oci/media-types';
import { pythonJson } from '../oci/python-json';
import { InputError } from '../util/errors';
import type { BaseName } from './naming';

export interface ArtifactLayer {
  title: string;
  mediaType: string;
  digest: string;
  size: number;
}

export interface ArtifactManifest {
  bytes: Buffer;
  digest: string;
  /** the manifest's own descriptor */
  descriptor: Descriptor;
  /** what the version index holds for this build */
  indexEntry: Descriptor;
}

export const TITLE_ANNOTATION = 'org.opencontainers.image.title';
export const LAYER_ARCH_ANNOTATION = 'io.gardenlinux.image.layer.architecture';

/** `org.opencontainers.image.source` unless configured otherwise (IMAGE_SOURCE): where Garden Linux is built from. */
export const GARDENLINUX_SOURCE = 'https://github.com/gardenlinux/gardenlinux';
/** `org.opencontainers.image.title` of every artifact manifest, as python-gardenlinux-lib 1.0 writes it. */
export const DISTRIBUTION_NAME = 'Garden Linux';

/** gl-oci's description, its trailing space included. */
export function artifactDescription(name: BaseName, featureSet: string): string {
  return `Image: ${name.base} Flavor: ${name.flavor} Architecture: ${name.arch} Features: ${featureSet} Commit: ${name.commit} `;
}

export function buildArtifactManifest(name: BaseName, featureSet: string, layers: readonly ArtifactLayer[], source: string = GARDENLINUX_SOURCE): ArtifactManifest {
  const titles = new Set<string>();
  for (const l of layers) {
    if (titles.has(l.title)) throw new InputError(`build ${name.base} has two layers titled "${l.title}"`);
    titles.add(l.title);
  }
  // Code-unit order, not locale order: the bytes must not depend on the machine.
  const sorted = [...layers].sort((a, b) => (a.title < b.title ? -1 : a.title > b.title ? 1 : 0));
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: {
      mediaType: GARDENLINUX_CONFIG,
      size: EMPTY_JSON.length,
      digest: EMPTY_JSON_DIGEST,
      annotations: { cname: name.base, architecture: name.arch },
    },
    layers: sorted.map((l) => ({
      mediaType: l.mediaType,
      size: l.size,
      digest: l.digest,
      annotations: { [TITLE_ANNOTATION]: l.title, [LAYER_ARCH_ANNOTATION]: name.arch },
    })),
    annotations: {
      version: name.version,
      cname: name.base,
      architecture: name.arch,
      feature_set: featureSet,
      commit: name.commit,
      'org.opencontainers.image.description': artifactDescription(name, featureSet),
      // The standard keys, which python-gardenlinux-lib 1.0 reads (it needs the architecture) and GHCR shows.
      'org.opencontainers.image.architecture': name.arch,
      'org.opencontainers.image.version': name.version,
      'org.opencontainers.image.revision': name.commit,
      'org.opencontainers.image.source': source,
      'org.opencontainers.image.title': DISTRIBUTION_NAME,
    },
  };
  const bytes = Buffer.from(pythonJson(manifest));
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new InputError(`the artifact manifest of ${name.base} would be ${bytes.length} bytes, above the 4 MiB registries accept`);
  }
  const digest = sha256Digest(bytes);
  return {
    bytes,
    digest,
    descriptor: { mediaType: OCI_MANIFEST, digest, size: bytes.length },
    indexEntry: {
      mediaType: OCI_MANIFEST,
      digest,
      size: bytes.length,
      annotations: { cname: name.base, architecture: name.arch, feature_set: featureSet },
      platform: { architecture: name.arch, os: 'gardenlinux', 'os.version': name.version },
    },
  };
}
