/**
 * Publishes one build: the container image (container builds), the Garden Linux artifact manifest, and the
 * build's entries in the version index — always blobs, then manifests, then records, then the index, so that
 * nothing a reader can reach refers to something missing.
 */
import { buildArtifactManifest, type ArtifactLayer } from '../gardenlinux/artifact-manifest';
import { mediaTypeForFile, PXE_BUNDLE_SUFFIX, UNKNOWN_MEDIA_TYPE } from '../gardenlinux/media-types';
import { parseMetadata, type BuildMetadata } from '../gardenlinux/metadata';
import { artifactManifestTag, baseFromMetadataKey, containerTag, flavorArch, objectsPrefix } from '../gardenlinux/naming';
import type { IndexRecord } from '../gardenlinux/version-index';
import { EMPTY_JSON } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import { OCI_MANIFEST } from '../oci/media-types';
import type { Target } from '../target/target';
import { InputError, SourceError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { PublishContext } from './context';
import { TransferStats } from './context';
import { convergeVersionIndex, type IndexUpdate } from './converge';
import { FileTransfer, type ContainerFacts, type PublishedBlob, type SourceFile } from './file-transfer';

export interface BuildResult {
  base?: string;
  outcome: 'published' | 'unchanged' | 'skipped';
  /** why a document was skipped */
  reason?: string;
  manifest?: { repository: string; tag: string; digest: string };
  container?: { repository: string; tag: string; digest: string };
  indexes: IndexUpdate[];
  bytesUploaded: number;
  bytesRead: number;
  blobsUploaded: number;
  blobsSkipped: number;
}

const MAX_METADATA_BYTES = 1024 * 1024;

function skipped(reason: string, base?: string): BuildResult {
  return { ...(base ? { base } : {}), outcome: 'skipped', reason, indexes: [], bytesUploaded: 0, bytesRead: 0, blobsUploaded: 0, blobsSkipped: 0 };
}

/** Publishes the build whose metadata document is `key`. */
export async function publishBuild(ctx: PublishContext, key: string): Promise<BuildResult> {
  const base = baseFromMetadataKey(key);
  if (base === undefined) return skipped(`${key} is not a build metadata document (meta/singles/<base>)`);
  const log = ctx.logger.child({ base });

  const doc = await ctx.source.get(key, { maxBytes: MAX_METADATA_BYTES });
  if (!doc) throw new SourceError(`${ctx.source.description}/${key} does not exist`);
  const parsed = parseMetadata(doc.bytes.toString('utf8'), base);
  if (parsed.kind === 'not-a-build') return skipped(parsed.reason, base);
  const build = parsed.build;

  const listing = new Map((await ctx.source.list(objectsPrefix(base))).map((o) => [o.key, o]));
  const files: SourceFile[] = build.files.map((f) => {
    const info = listing.get(f.key);
    if (!info) throw new InputError(`${ctx.source.description}/${f.key} is listed in the metadata of ${base} but does not exist`);
    return { name: f.name, key: f.key, size: info.size, etag: info.etag, ...(f.md5 ? { md5: f.md5 } : {}) };
  });

  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  const stats = new TransferStats(log, () => totalBytes);
  const transfer = new FileTransfer(ctx, stats, log);
  const main = ctx.targets.main;
  const containerRepo = ctx.containerRepositories[build.name.flavor];
  const imageTarget = containerRepo ? ctx.targets.repository(containerRepo) : main;
  const archiveName = `${base}.oci`;
  const isContainer = build.platform === 'container' && files.some((f) => f.name === archiveName);
  log.info('publishing build', {
    files: files.length,
    bytes: totalBytes,
    container: isContainer,
    repository: main.display,
    ...(isContainer ? { imageRepository: imageTarget.display } : {}),
  });

  // 1. Blobs, several at once.
  let features: string | undefined;
  let image: ContainerFacts | undefined;
  const layers: ArtifactLayer[] = [];
  const addLayer = (title: string, blob: PublishedBlob): void => {
    let mediaType = mediaTypeForFile(title);
    if (mediaType === undefined) {
      log.warn('no media type is defined for this file; publishing it as application/octet-stream', { file: title });
      mediaType = UNKNOWN_MEDIA_TYPE;
    }
    layers.push({ title, mediaType, digest: blob.digest, size: blob.size });
  };
  await mapLimit(files, files.length, async (file) => {
    if (file.name === `${base}.release`) {
      const r = await transfer.release(file, main);
      features = r.features;
      addLayer(file.name, r.blob);
    } else if (isContainer && file.name === archiveName) {
      const r = await transfer.containerArchive(file, main, imageTarget, { refName: flavorArch(build.name), arch: build.name.arch });
      image = r.image;
      addLayer(file.name, r.archive);
    } else if (file.name.endsWith(PXE_BUNDLE_SUFFIX)) {
      const r = await transfer.pxeBundle(file, main);
      addLayer(file.name, r.bundle);
      for (const m of r.members) addLayer(m.name, m);
    } else {
      addLayer(file.name, await transfer.plain(file, main));
    }
  });
  await transfer.ensureBuffer(main, EMPTY_JSON, 'config blob {}');

  // 2. Manifests.
  const featureSet = features ?? build.modifiers.join(',');
  if (features === undefined) log.warn('no GARDENLINUX_FEATURES in a .release file; using the metadata modifiers', { featureSet });
  const manifest = buildArtifactManifest(build.name, featureSet, layers);
  const result: BuildResult = {
    base,
    outcome: 'unchanged',
    indexes: [],
    bytesUploaded: 0,
    bytesRead: 0,
    blobsUploaded: 0,
    blobsSkipped: 0,
  };
  let containerEntry: Descriptor | undefined;
  if (image !== undefined) {
    const img: ContainerFacts = image;
    const tag = containerTag(build.name);
    await putIfDifferent(imageTarget, img.manifestBytes, img.manifest.digest, img.manifest.mediaType, tag, stats);
    result.container = { repository: imageTarget.display, tag, digest: img.manifest.digest };
    // Container entries carry no annotations: consumers tell them apart by the missing cname (spec §4).
    containerEntry = { mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size, platform: img.platform };
  }
  const glTag = artifactManifestTag(build.name);
  await putIfDifferent(main, manifest.bytes, manifest.digest, OCI_MANIFEST, glTag, stats);
  result.manifest = { repository: main.display, tag: glTag, digest: manifest.digest };

  // 3. Records, then 4. the version indexes.
  const record: IndexRecord = {
    base,
    flavorArch: flavorArch(build.name),
    buildTime: buildTime(build, doc.info.lastModified),
    gardenlinux: manifest.indexEntry,
  };
  const version = build.name.version;
  if (containerEntry && imageTarget === main) record.container = containerEntry;
  await ctx.state.putRecord(main.id, version, record);
  if (containerEntry && imageTarget !== main) {
    const { gardenlinux: _gl, ...rest } = record;
    await ctx.state.putRecord(imageTarget.id, version, { ...rest, container: containerEntry });
  }
  result.indexes.push(await convergeVersionIndex(ctx.state, main, version, log));
  if (containerEntry && imageTarget !== main) result.indexes.push(await convergeVersionIndex(ctx.state, imageTarget, version, log));

  const changed = stats.blobsUploaded > 0 || stats.manifestsWritten > 0 || result.indexes.some((i) => i.changed);
  return {
    ...result,
    outcome: changed ? 'published' : 'unchanged',
    bytesUploaded: stats.bytesUploaded,
    bytesRead: stats.bytesRead,
    blobsUploaded: stats.blobsUploaded,
    blobsSkipped: stats.blobsSkipped,
  };
}

function buildTime(build: BuildMetadata, lastModified: Date | undefined): string {
  return (build.buildTime ?? lastModified ?? new Date()).toISOString();
}

async function putIfDifferent(target: Target, bytes: Buffer, digest: string, mediaType: string, tag: string, stats: TransferStats): Promise<void> {
  if ((await target.resolve(tag)) === digest) return;
  await target.putManifest(bytes, mediaType, tag);
  stats.manifestsWritten++;
}

