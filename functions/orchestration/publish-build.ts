/**
 * Publishes one build, in phases that keep a reader of the registry from ever seeing half of it:
 *
 * 1. check — the metadata, the build's objects, the container archive and the sizes of what will be written
 *    are all checked before anything is written, so bad input fails with the registry untouched;
 * 2. blobs — every file, streamed once (several at a time);
 * 3. manifests — the container image (container builds) and the Garden Linux artifact manifest;
 * 4. records — the build's index entries, in the state store, now that everything they name exists;
 * 5. the version index — rendered from all records of the version, until it settles (converge.ts).
 */
import { buildArtifactManifest, type ArtifactLayer } from '../gardenlinux/artifact-manifest';
import { mediaTypeForFile, PXE_BUNDLE_SUFFIX, UNKNOWN_MEDIA_TYPE } from '../gardenlinux/media-types';
import { MAX_METADATA_BYTES, parseMetadata, type BuildMetadata } from '../gardenlinux/metadata';
import { artifactManifestTag, baseFromMetadataKey, containerTag, flavorArch, metadataKey, objectsPrefix } from '../gardenlinux/naming';
import type { IndexRecord } from '../gardenlinux/version-index';
import { EMPTY_JSON } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import { MAX_MANIFEST_BYTES, OCI_MANIFEST } from '../oci/media-types';
import type { ObjectStore } from '../storage/object-store';
import type { Target } from '../target/target';
import { InputError, IntegrityError, SourceError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';
import type { PublishContext } from './context';
import { TransferStats } from './context';
import { convergeVersion, readVersionIndex, type IndexSnapshot, type IndexUpdate } from './converge';
import { aliasesMoved, followAliases, type AliasUpdate } from './follow-aliases';
import { inspectArchive, transferArchive, type ContainerFacts } from './archive-pass';
import { FileTransfer, type PublishedBlob, type SourceFile } from './file-transfer';
import { transferPlainFile, transferReleaseFile } from './plain-files';
import { transferPxeBundle } from './pxe-pass';
import { ensureSignature, type SignatureResult } from './sign-manifest';

export interface BuildResult {
  base?: string;
  outcome: 'published' | 'unchanged' | 'skipped';
  /** why a document was skipped */
  reason?: string;
  manifest?: { repository: string; tag: string; digest: string };
  /** `tagged`: whether the tag now names this build's image (false: a newer build of the platform holds it) */
  container?: { repository: string; tag: string; digest: string; tagged: boolean };
  indexes: IndexUpdate[];
  /** the release aliases of ALIAS_TAGS after the version index, per repository */
  releaseAliases?: AliasUpdate[];
  /** the cosign signatures of this build's manifests, when signing is on */
  signatures?: SignatureResult[];
  bytesUploaded: number;
  bytesRead: number;
  blobsUploaded: number;
  blobsSkipped: number;
}

/** What one build adds to a version index at most: its Garden Linux entry and its container entry. */
const INDEX_ENTRIES_BYTES = 2 * 1024;
/** Time to push a build's manifests and write its records. */
const MANIFESTS_MS = 10_000;

function skipped(reason: string, base?: string): BuildResult {
  return { ...(base ? { base } : {}), outcome: 'skipped', reason, indexes: [], bytesUploaded: 0, bytesRead: 0, blobsUploaded: 0, blobsSkipped: 0 };
}

/**
 * Publishes the build whose metadata document is `key`. A build retracted on purpose is skipped, unless it is
 * published by hand (`byHand`): that restores it.
 */
export async function publishBuild(ctx: PublishContext, key: string, options: { byHand?: boolean } = {}): Promise<BuildResult> {
  const base = baseFromMetadataKey(key);
  if (base === undefined) return skipped(`${key} is not a build metadata document (meta/singles/<base>)`);
  const log = ctx.logger.child({ base });

  // 1. Check everything before writing anything.
  const doc = await ctx.source.get(key, { maxBytes: MAX_METADATA_BYTES });
  if (!doc) throw new SourceError(`${ctx.source.description}/${key} does not exist`);
  const parsed = parseMetadata(doc.bytes.toString('utf8'), base);
  if (parsed.kind === 'not-a-build') return skipped(parsed.reason, base);
  const build = parsed.build;
  const retraction = await ctx.state.getRetraction(ctx.targets.main.id, build.name.version, base);
  if (retraction && !options.byHand) {
    return skipped(`${base} was retracted on ${retraction.retractedAt}; publish it by hand (action "publish") to restore it`, base);
  }

  const listing = new Map((await ctx.source.list(objectsPrefix(base))).map((o) => [o.key, o]));
  const files: SourceFile[] = build.files.map((f) => {
    const info = listing.get(f.key);
    if (!info) throw new InputError(`${ctx.source.description}/${f.key} is listed in the metadata of ${base} but does not exist`);
    return { name: f.name, key: f.key, size: info.size, etag: info.etag, ...(f.md5 ? { md5: f.md5 } : {}) };
  });
  checkManifestSize(build, files);

  const stats = new TransferStats(log, files.reduce((n, f) => n + f.size, 0));
  try {
    return await publishFiles(ctx, log, build, files, stats, doc.info.lastModified);
  } finally {
    Object.assign(ctx.counters, {
      bytesUploaded: stats.bytesUploaded,
      bytesRead: stats.bytesRead,
      blobsUploaded: stats.blobsUploaded,
      blobsSkipped: stats.blobsSkipped,
    });
  }
}

async function publishFiles(
  ctx: PublishContext,
  log: Logger,
  build: BuildMetadata,
  files: SourceFile[],
  stats: TransferStats,
  lastModified: Date | undefined,
): Promise<BuildResult> {
  const base = build.name.base;
  const transfer = new FileTransfer(ctx, stats, log);
  const main = ctx.targets.main;
  const containerRepo = ctx.containerRepositories[build.name.flavor];
  const imageTarget = containerRepo ? ctx.targets.repository(containerRepo) : main;
  const archiveName = `${base}.oci`;
  const archive = build.platform === 'container' ? files.find((f) => f.name === archiveName) : undefined;
  const version = build.name.version;

  const indexTargets = [ctx.indexTargets.main, ...(archive && containerRepo ? [ctx.indexTargets.repository(containerRepo)] : [])];
  const checkIndex = async (t: Target): Promise<IndexSnapshot | undefined> => {
    // Also refuses early a tag that holds something other than an index.
    const current = await readVersionIndex(t, version);
    if ((current?.size ?? 0) + INDEX_ENTRIES_BYTES > MAX_MANIFEST_BYTES) {
      throw new InputError(`${t.display}:${version} is ${current?.size} bytes; with this build it would exceed the 4 MiB registries accept`);
    }
    return current;
  };
  // Independent reads, at once: each is a round trip to the registry or S3.
  const [plan, indexesBefore] = await Promise.all([
    archive ? inspectArchive(transfer, archive, main, imageTarget, { refName: flavorArch(build.name), arch: build.name.arch }) : undefined,
    Promise.all(indexTargets.map(checkIndex)),
  ]);
  log.info('publishing build', {
    files: files.length,
    bytes: stats.totalBytes,
    container: archive !== undefined,
    ...(build.publishingGroup ? { publishingGroup: build.publishingGroup } : {}),
    repository: main.display,
    ...(archive ? { imageRepository: imageTarget.display } : {}),
  });

  // 2. Blobs, several at once.
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
  // Largest first: the long transfers start at once, the small files fill the remaining places around them.
  const bySize = [...files].sort((a, b) => b.size - a.size);
  await mapLimit(bySize, bySize.length, async (file) => {
    try {
      await transferFile(file);
    } catch (err) {
      // The publication has failed: transfers still waiting for a place are not started.
      transfer.limiter.close(err);
      throw err;
    }
  });
  async function transferFile(file: SourceFile): Promise<void> {
    if (file.name === `${base}.release`) {
      const r = await transferReleaseFile(transfer, file, main);
      features = r.features;
      addLayer(file.name, r.blob);
    } else if (archive && plan && file === archive) {
      const r = await transferArchive(transfer, file, plan, main, imageTarget);
      image = r.image;
      addLayer(file.name, r.archive);
    } else if (file.name.endsWith(PXE_BUNDLE_SUFFIX)) {
      const r = await transferPxeBundle(transfer, file, main);
      addLayer(file.name, r.bundle);
      for (const m of r.members) addLayer(m.name, m);
    } else {
      addLayer(file.name, await transferPlainFile(transfer, file, main));
    }
  }
  await transfer.ensureBuffer(main, EMPTY_JSON, 'config blob {}');

  // 3. Manifests.
  ctx.deadline.ensure('pushing the manifests', MANIFESTS_MS);
  const featureSet = features ?? build.modifiers.join(',');
  if (features === undefined) log.warn('no GARDENLINUX_FEATURES in a .release file; using the metadata modifiers', { featureSet });
  const manifest = buildArtifactManifest(build.name, featureSet, layers, ctx.imageSource);
  const result: BuildResult = { base, outcome: 'unchanged', indexes: [], bytesUploaded: 0, bytesRead: 0, blobsUploaded: 0, blobsSkipped: 0 };
  let containerEntry: Descriptor | undefined;
  if (image !== undefined) {
    const img: ContainerFacts = image;
    // By digest for now: the tag goes to the newest build's image once the records are in (step 5).
    await putIfDifferent(imageTarget, img.manifestBytes, img.manifest.digest, img.manifest.mediaType, img.manifest.digest, stats);
    // Container entries carry no annotations: consumers tell them apart by the missing cname (spec §4).
    containerEntry = { mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size, platform: img.platform };
  }
  const glTag = artifactManifestTag(build.name);
  await putIfDifferent(main, manifest.bytes, manifest.digest, OCI_MANIFEST, glTag, stats);
  result.manifest = { repository: main.display, tag: glTag, digest: manifest.digest };

  // Signatures before the records: no version index names an artifact manifest without its signature.
  if (ctx.signer) {
    result.signatures = [await ensureSignature(main, manifest.digest, ctx.signer, transfer, log)];
    if (image !== undefined && ctx.signContainerImages) {
      result.signatures.push(await ensureSignature(imageTarget, (image as ContainerFacts).manifest.digest, ctx.signer, transfer, log));
    }
  }

  // 4. Records, then 5. the version indexes. A retraction goes first: the build is wanted again.
  for (const t of indexTargets) {
    if (await ctx.state.getRetraction(t.id, version, base)) {
      log.info('publishing a retracted build by hand: it is restored', { repository: t.display, version });
      await ctx.state.deleteRetraction(t.id, version, base);
    }
  }
  const record: IndexRecord = {
    base,
    flavorArch: flavorArch(build.name),
    buildTime: buildTime(build, lastModified),
    gardenlinux: manifest.indexEntry,
  };
  if (containerEntry && !containerRepo) record.container = containerEntry;
  await ctx.state.putRecord(main.id, version, record);
  if (containerEntry && containerRepo) {
    const { gardenlinux: _gl, ...rest } = record;
    await ctx.state.putRecord(imageTarget.id, version, { ...rest, container: containerEntry });
  }
  for (const [i, t] of indexTargets.entries()) {
    const known = indexesBefore[i];
    const platform = containerEntry && t.id === imageTarget.id ? containerEntry.platform : undefined;
    const own = { base, ...(platform ? { platform } : {}) };
    const { update } = await convergeVersion({
      state: ctx.state,
      target: t,
      version,
      logger: log,
      deadline: ctx.deadline,
      own,
      buildTimeOf: metadataBuildTime(ctx.source),
      ...(known ? { known } : {}),
    });
    result.indexes.push(update);
    const aliases = await followAliases({ state: ctx.state, target: t, version, templates: ctx.aliasTemplates ?? [], logger: log, deadline: ctx.deadline });
    if (aliases.length > 0) (result.releaseAliases ??= []).push(...aliases);
    if (containerEntry && t.id === imageTarget.id) {
      const tag = containerTag(build.name);
      const holder = update.tags?.find((x) => x.tag === tag);
      result.container = { repository: t.display, tag, digest: containerEntry.digest, tagged: holder?.digest === containerEntry.digest };
    }
  }

  const changed =
    stats.blobsUploaded > 0 ||
    stats.manifestsWritten > 0 ||
    result.indexes.some((i) => i.changed) ||
    (result.signatures ?? []).some((s) => s.written) ||
    aliasesMoved(result.releaseAliases ?? []);
  return {
    ...result,
    outcome: changed ? 'published' : 'unchanged',
    bytesUploaded: stats.bytesUploaded,
    bytesRead: stats.bytesRead,
    blobsUploaded: stats.blobsUploaded,
    blobsSkipped: stats.blobsSkipped,
  };
}

/**
 * Refuses a build whose artifact manifest would exceed what registries accept, before any upload: the manifest's
 * size does not depend on the digests, so it is measured with placeholders (sizes and PXE members at their
 * largest).
 */
function checkManifestSize(build: BuildMetadata, files: readonly SourceFile[]): void {
  const placeholder = `sha256:${'0'.repeat(64)}`;
  const layers: ArtifactLayer[] = files.map((f) => ({ title: f.name, mediaType: mediaTypeForFile(f.name) ?? UNKNOWN_MEDIA_TYPE, digest: placeholder, size: Number.MAX_SAFE_INTEGER }));
  if (files.some((f) => f.name.endsWith(PXE_BUNDLE_SUFFIX))) {
    for (const m of ['vmlinuz', 'initrd', 'cmdline', 'root.squashfs']) {
      layers.push({ title: `${m}${'_'.repeat(32)}`, mediaType: 'application/io.gardenlinux.squashfs', digest: placeholder, size: Number.MAX_SAFE_INTEGER });
    }
  }
  try {
    // The longest feature set and IMAGE_SOURCE (at most 512 characters) the real manifest could have.
    buildArtifactManifest(build.name, `${build.modifiers.join(',')}${'_'.repeat(512)}`, layers, '_'.repeat(512));
  } catch (err) {
    if (err instanceof InputError && /4 MiB/.test(err.message)) {
      throw new InputError(`the artifact manifest of ${build.name.base} (${files.length} files) would exceed the 4 MiB registries accept`);
    }
    throw err;
  }
}

function buildTime(build: BuildMetadata, lastModified: Date | undefined): string {
  return (build.buildTime ?? lastModified ?? new Date()).toISOString();
}

/**
 * The build time of a build named in a version index without a record (another tool published it), from its
 * metadata document in `source` as a record would have it; undefined when there is no readable build document.
 */
export function metadataBuildTime(source: ObjectStore): (cname: string) => Promise<string | undefined> {
  return async (cname) => {
    const doc = await source.get(metadataKey(cname), { maxBytes: MAX_METADATA_BYTES });
    if (!doc) return undefined;
    try {
      const parsed = parseMetadata(doc.bytes.toString('utf8'), cname);
      return parsed.kind === 'build' ? buildTime(parsed.build, doc.info.lastModified) : undefined;
    } catch {
      return undefined;
    }
  };
}

async function putIfDifferent(target: Target, bytes: Buffer, digest: string, mediaType: string, reference: string, stats: TransferStats): Promise<void> {
  if ((await target.resolve(reference)) === digest) return;
  const stored = await target.putManifest(bytes, mediaType, reference);
  if (stored !== digest) throw new IntegrityError(`${target.display}:${reference} was stored with digest ${stored}, expected ${digest}`);
  stats.manifestsWritten++;
}
