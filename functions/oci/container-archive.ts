/**
 * The container image inside a build's `.oci` archive (spec §4): an OCI image layout in a tar. This module
 * decides which image manifest the archive holds and where each blob it needs lies, and checks everything it
 * reads against its digest. It reads only small members (index.json, manifests, config); the layers are
 * streamed by the caller from the offsets found here.
 */
import { InputError, IntegrityError } from '../util/errors';
import { sha256Digest } from './digest';
import { ImageConfigSchema, ImageManifestSchema, IndexSchema, parseJson, type Descriptor } from './descriptor';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES, MAX_MANIFEST_BYTES } from './media-types';
import type { TarMember } from './tar-index';

export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface ArchiveBlob {
  digest: string;
  size: number;
  member: TarMember;
}

export interface ContainerImage {
  manifest: { bytes: Buffer; digest: string; mediaType: string; size: number };
  platform: { architecture: string; os: string; variant?: string };
  /** the config and the layers, each once, in manifest order */
  blobs: ArchiveBlob[];
}

export type MemberReader = (member: TarMember) => Promise<Buffer>;

export async function inspectContainerArchive(
  members: ReadonlyMap<string, TarMember>,
  readMember: MemberReader,
  want: { refName: string; arch: string },
  what: string,
): Promise<ContainerImage> {
  const file = (path: string): TarMember | undefined => {
    const m = members.get(path);
    if (m && m.type !== 'file') throw new InputError(`${what}: "${path}" is a link, not a file`);
    return m;
  };
  const readSmall = async (member: TarMember, limit: number): Promise<Buffer> => {
    if (member.size > limit) throw new InputError(`${what}: "${member.path}" is ${member.size} bytes, more than ${limit}`);
    return readMember(member);
  };
  const blobMember = (desc: Descriptor): TarMember => {
    const [alg, hex] = desc.digest.split(':');
    if (alg !== 'sha256') throw new InputError(`${what}: blob ${desc.digest} uses a digest algorithm other than sha256`);
    const m = file(`blobs/${alg}/${hex}`);
    if (!m) throw new InputError(`${what}: it references blob ${desc.digest}, which it does not contain`);
    if (m.size !== desc.size) throw new InputError(`${what}: blob ${desc.digest} is ${m.size} bytes, its descriptor says ${desc.size}`);
    return m;
  };
  const readBlob = async (desc: Descriptor): Promise<Buffer> => {
    const bytes = await readSmall(blobMember(desc), MAX_MANIFEST_BYTES);
    const digest = sha256Digest(bytes);
    if (digest !== desc.digest) throw new IntegrityError(`${what}: blob ${desc.digest} holds bytes with digest ${digest}`);
    return bytes;
  };

  const layoutFile = file('oci-layout');
  if (!layoutFile) throw new InputError(`${what}: no oci-layout file, so not an OCI image layout`);
  const indexFile = file('index.json');
  if (!indexFile) throw new InputError(`${what}: no index.json`);
  const index = parseJson(IndexSchema, await readSmall(indexFile, MAX_MANIFEST_BYTES), `${what}: index.json`);

  const named = index.manifests.filter((d) => d.annotations?.[REF_NAME]?.toLowerCase() === want.refName.toLowerCase());
  const candidates = named.length > 0 ? named : index.manifests;

  // Nested indexes (a multi-arch copy) are opened and narrowed to this build's architecture.
  const images: Descriptor[] = [];
  const expand = async (descs: readonly Descriptor[], depth: number): Promise<void> => {
    for (const d of descs) {
      if (IMAGE_MANIFEST_TYPES.includes(d.mediaType)) images.push(d);
      else if (INDEX_TYPES.includes(d.mediaType)) {
        if (depth >= 4) throw new InputError(`${what}: indexes nested more than 4 deep`);
        const nested = parseJson(IndexSchema, await readBlob(d), `${what}: index ${d.digest}`);
        await expand(nested.manifests.filter((m) => !m.platform || m.platform.architecture === want.arch), depth + 1);
      }
      // Other media types may appear in a layout and are not errors (image-spec); they are not images either.
    }
  };
  await expand(candidates, 0);
  if (images.length !== 1) {
    throw new InputError(
      images.length === 0
        ? `${what}: index.json leads to no image manifest`
        : named.length > 0
          ? `${what}: ${images.length} image manifests have the ref name "${want.refName}"; expected one`
          : `${what}: it holds ${images.length} image manifests and none has the ref name "${want.refName}"`,
    );
  }
  const chosen = images[0] as Descriptor;
  const manifestBytes = await readBlob(chosen);
  const manifest = parseJson(ImageManifestSchema, manifestBytes, `${what}: manifest ${chosen.digest}`);
  const mediaType = manifest.mediaType ?? chosen.mediaType;
  if (!IMAGE_MANIFEST_TYPES.includes(mediaType)) throw new InputError(`${what}: manifest ${chosen.digest} has media type ${mediaType}`);

  const config = parseJson(ImageConfigSchema, await readBlob(manifest.config), `${what}: image config ${manifest.config.digest}`);
  if (config.architecture !== undefined && config.architecture !== want.arch) {
    throw new InputError(`${what}: the image is for ${config.architecture}, the build is ${want.arch}`);
  }
  const platform = {
    architecture: config.architecture ?? want.arch,
    os: config.os ?? 'linux',
    ...(config.variant ? { variant: config.variant } : {}),
  };

  const blobs: ArchiveBlob[] = [];
  for (const d of [manifest.config, ...manifest.layers]) {
    if (blobs.some((b) => b.digest === d.digest)) continue;
    blobs.push({ digest: d.digest, size: d.size, member: blobMember(d) });
  }
  return {
    manifest: { bytes: manifestBytes, digest: chosen.digest, mediaType, size: manifestBytes.length },
    platform,
    blobs,
  };
}
