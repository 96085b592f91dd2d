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
import { Mirror, type MirrorMember } from '../target/mirrored-targets';
import type { Target, TargetSet } from '../target/target';
import { isRetryable } from '../registry/errors';
import { describeError, errorCode, InputError, IntegrityError, PublishError, SourceError } from '../util/errors';
import type { Clock } from '../util/clock';
import { guards } from '../util/guards';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';
import type { Destination, PublishContext } from './context';
import { TransferStats } from './context';
import { convergeVersion, readVersionIndex, type IndexSnapshot, type IndexUpdate } from './converge';
import { aliasesMoved, followAliases, type AliasUpdate } from './follow-aliases';
import type { ContainerFacts } from './archive-pass';
import { FileTransfer, type PublishedBlob, type SourceFile } from './file-transfer';
import { transferPlainFile, transferReleaseFile } from './plain-files';
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
  /** with several destinations: what became of the build in each (the fields above sum or join them) */
  targets?: TargetResult[];
}

/** One destination's part of a publication to several. */
export interface TargetResult {
  /** the destination's main repository */
  target: string;
  outcome: 'published' | 'unchanged' | 'skipped' | 'failed';
  reason?: string;
  error?: string;
  errorKind?: string;
  errorCode?: string;
  /** whether running the job again may help (a failure of the registry or the network) */
  retryable?: boolean;
  manifest?: BuildResult['manifest'];
  container?: BuildResult['container'];
  indexes: IndexUpdate[];
  releaseAliases?: AliasUpdate[];
  signatures?: SignatureResult[];
  bytesUploaded: number;
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
 * Publishes the build whose metadata document is `key` to every destination of the context. A build retracted on
 * purpose is skipped, unless it is published by hand (`byHand`): that restores it. With several destinations,
 * each file is read once for all of them, and a destination that fails does not fail the others.
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
  const retractions = await Promise.all(ctx.destinations.map((d) => ctx.state.getRetraction(d.targets.main.id, build.name.version, base)));
  const refusal = (r: { retractedAt: string }): string => `${base} was retracted on ${r.retractedAt}; publish it by hand (action "publish") to restore it`;
  const refused = (i: number): boolean => retractions[i] !== undefined && !options.byHand && guards.retractionCheck;
  const wanted = ctx.destinations.filter((_, i) => !refused(i));
  const passedOver: TargetResult[] = ctx.destinations.flatMap((d, i) => {
    const r = retractions[i];
    return r && refused(i) ? [{ ...emptyTarget(d), outcome: 'skipped' as const, reason: refusal(r) }] : [];
  });
  if (wanted.length === 0) {
    const first = retractions.find((r) => r !== undefined) as { retractedAt: string };
    return { ...skipped(refusal(first), base), ...(ctx.destinations.length > 1 ? { targets: passedOver } : {}) };
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
    return await publishFiles(ctx, log, build, files, stats, doc.info.lastModified, wanted, passedOver, options.byHand === true);
  } finally {
    Object.assign(ctx.counters, {
      bytesUploaded: stats.bytesUploaded,
      bytesRead: stats.bytesRead,
      blobsUploaded: stats.blobsUploaded,
      blobsSkipped: stats.blobsSkipped,
    });
  }
}

function emptyTarget(d: Destination): TargetResult {
  return { target: d.targets.main.display, outcome: 'unchanged', indexes: [], bytesUploaded: 0, blobsUploaded: 0, blobsSkipped: 0 };
}

/** What the blob phase gives the manifests: the layers, the feature set of the `.release`, the container image. */
interface Blobs {
  layers: ArtifactLayer[];
  features?: string;
  image?: ContainerFacts;
}

/** Where a build goes in one destination. */
interface Places {
  main: Target;
  image: Target;
  /** the repositories whose version index the build enters */
  index: Target[];
}

async function publishFiles(
  ctx: PublishContext,
  log: Logger,
  build: BuildMetadata,
  files: SourceFile[],
  stats: TransferStats,
  lastModified: Date | undefined,
  wanted: readonly Destination[],
  passedOver: readonly TargetResult[],
  byHand: boolean,
): Promise<BuildResult> {
  const base = build.name.base;
  const containerRepo = ctx.containerRepositories[build.name.flavor];
  const archiveName = `${base}.oci`;
  const archive = build.platform === 'container' ? files.find((f) => f.name === archiveName) : undefined;
  const places = (targets: TargetSet, index: TargetSet): Places => ({
    main: targets.main,
    image: containerRepo ? targets.repository(containerRepo) : targets.main,
    index: [index.main, ...(archive && containerRepo ? [index.repository(containerRepo)] : [])],
  });

  const stopping = (): boolean => ctx.deadline.signal.aborted;
  const mirror = new Mirror(
    wanted.map((d) => d.targets),
    log,
    stopping,
    ctx.stallMs,
  );
  const before = new Map<number, Array<IndexSnapshot | undefined>>();
  let blobs: Blobs | undefined;
  try {
    blobs = await readAndTransfer(ctx, log, build, files, stats, archive, containerRepo, mirror, wanted, places, before);
  } catch (err) {
    // With one destination its failure is the job's; with several, a mirror throws only once every destination
    // failed (each says why in its own result), or for the source's own failure, which is the job's.
    if (wanted.length === 1 || stopping() || mirror.live().length > 0) throw err;
  }

  const single = wanted.length === 1;
  const finishIn = async (i: number, got: Blobs, member: MirrorMember): Promise<TargetResult> => {
    const d = wanted[i] as Destination;
    const moved = single ? stats : { blobsUploaded: member.counters.blobsUploaded, manifestsWritten: 0 };
    const r = await finish(ctx, log, build, got, places(d.targets, d.indexTargets), containerRepo, before.get(i) ?? [], stats, moved, lastModified, byHand);
    const counted = single ? { bytesUploaded: stats.bytesUploaded, blobsUploaded: stats.blobsUploaded, blobsSkipped: stats.blobsSkipped } : member.counters;
    return { target: d.targets.main.display, ...r, ...counted };
  };
  // 3.-5. Manifests, signatures, records, indexes and aliases: in each destination on its own, at once. A
  // destination that failed on the way for a reason that may pass (a 503, a reset, a stall) gets one more round of
  // uploads on its own meanwhile (it reads again only what it still lacks), then the same.
  const again = single || stopping() ? [] : mirror.members.flatMap((m, i) => (m.failure !== undefined && isRetryable(m.failure) ? [i] : []));
  const catchUp = again.length > 0 ? retryUploads(again) : undefined;
  async function retryUploads(indices: number[]): Promise<Map<number, Blobs>> {
    log.warn('a destination failed during the uploads; trying it once more on its own', { targets: indices.map((i) => (wanted[i] as Destination).targets.main.display) });
    const retry = new Mirror(
      indices.map((i) => (wanted[i] as Destination).targets),
      log,
      stopping,
      ctx.stallMs,
    );
    let got: Blobs | undefined;
    try {
      got = await transferBlobs(new FileTransfer(ctx, stats, log), log, build, files, archive, retry, containerRepo);
    } catch (err) {
      if (stopping()) throw err;
      // One member's failure is thrown, not recorded; the source's failure is every member's here.
      for (const r of retry.members) r.failure ??= err;
    }
    const ok = new Map<number, Blobs>();
    for (const [k, i] of indices.entries()) {
      const m = mirror.members[i] as MirrorMember;
      const r = retry.members[k] as MirrorMember;
      m.counters.bytesUploaded += r.counters.bytesUploaded;
      m.counters.blobsUploaded += r.counters.blobsUploaded;
      m.counters.blobsSkipped += r.counters.blobsSkipped;
      if (r.failure !== undefined || got === undefined) {
        m.failure = r.failure ?? m.failure;
        continue;
      }
      delete m.failure;
      ok.set(i, got);
    }
    return ok;
  }
  const finishing = wanted.map(async (_d, i): Promise<TargetResult> => {
    const member = mirror.members[i] as MirrorMember;
    if (member.failure === undefined && blobs !== undefined) return finishIn(i, blobs, member);
    if (catchUp && again.includes(i)) {
      const got = (await catchUp).get(i);
      if (got) return finishIn(i, got, member);
    }
    throw member.failure;
  });
  if (wanted.length === 1 && passedOver.length === 0) {
    const r = await (finishing[0] as Promise<TargetResult>);
    return {
      base,
      outcome: r.outcome as BuildResult['outcome'],
      ...pick(r),
      bytesUploaded: stats.bytesUploaded,
      bytesRead: stats.bytesRead,
      blobsUploaded: stats.blobsUploaded,
      blobsSkipped: stats.blobsSkipped,
    };
  }
  const settled = await Promise.allSettled(finishing);
  const targets: TargetResult[] = settled.map((s, i) => {
    const d = wanted[i] as Destination;
    if (s.status === 'fulfilled') return s.value;
    if (ctx.deadline.signal.aborted) throw s.reason;
    const err = s.reason as Error;
    const code = errorCode(err);
    return {
      ...emptyTarget(d),
      ...(mirror.members[i] as MirrorMember).counters,
      outcome: 'failed',
      error: describeError(err),
      errorKind: err instanceof PublishError ? err.kind : 'internal',
      ...(typeof code === 'string' ? { errorCode: code } : {}),
      retryable: isRetryable(err),
    };
  });
  targets.push(...passedOver);
  const done = targets.filter((t) => t.outcome !== 'failed' && t.outcome !== 'skipped');
  const first = done[0];
  return {
    base,
    outcome: done.some((t) => t.outcome === 'published') ? 'published' : done.length > 0 ? 'unchanged' : 'skipped',
    ...(first ? pick(first) : {}),
    indexes: done.flatMap((t) => t.indexes),
    ...(done.some((t) => t.releaseAliases) ? { releaseAliases: done.flatMap((t) => t.releaseAliases ?? []) } : {}),
    ...(done.some((t) => t.signatures) ? { signatures: done.flatMap((t) => t.signatures ?? []) } : {}),
    bytesUploaded: targets.reduce((n, t) => n + t.bytesUploaded, 0),
    bytesRead: stats.bytesRead,
    blobsUploaded: targets.reduce((n, t) => n + t.blobsUploaded, 0),
    blobsSkipped: targets.reduce((n, t) => n + t.blobsSkipped, 0),
    targets,
  };
}

/** The checks of the version indexes, then 2., the blobs: with several destinations, one read for all. */
async function readAndTransfer(
  ctx: PublishContext,
  log: Logger,
  build: BuildMetadata,
  files: SourceFile[],
  stats: TransferStats,
  archive: SourceFile | undefined,
  containerRepo: string | undefined,
  mirror: Mirror,
  wanted: readonly Destination[],
  places: (targets: TargetSet, index: TargetSet) => Places,
  before: Map<number, Array<IndexSnapshot | undefined>>,
): Promise<Blobs> {
  const version = build.name.version;
  const checkIndex = async (t: Target): Promise<IndexSnapshot | undefined> => {
    // Also refuses early a tag that holds something other than an index.
    const current = await readVersionIndex(t, version);
    if ((current?.size ?? 0) + INDEX_ENTRIES_BYTES > MAX_MANIFEST_BYTES) {
      throw new InputError(`${t.display}:${version} is ${current?.size} bytes; with this build it would exceed the 4 MiB registries accept`);
    }
    return current;
  };
  // Independent reads, at once: each is a round trip to the registry or S3.
  const [indexesBefore] = await Promise.all([
    mirror.each('reading the version index', (_m, i) => Promise.all(places((wanted[i] as Destination).targets, (wanted[i] as Destination).indexTargets).index.map(checkIndex))),
  ]);
  for (const r of indexesBefore) before.set(r.index, r.value);
  log.info('publishing build', {
    files: files.length,
    bytes: stats.totalBytes,
    container: archive !== undefined,
    ...(build.publishingGroup ? { publishingGroup: build.publishingGroup } : {}),
    repository: mirror.target().display,
    ...(archive && containerRepo ? { imageRepository: mirror.target(containerRepo).display } : {}),
  });

  // 2. Blobs, several at once, from one read for every destination.
  const transfer = new FileTransfer(ctx, stats, log);
  return transferBlobs(transfer, log, build, files, archive, mirror, containerRepo);
}

/** The clock and random source of the context, for the rounds of convergence and aliases (a simulation sets them). */
function timing(ctx: PublishContext): { clock?: Clock; random?: () => number } {
  return { ...(ctx.clock ? { clock: ctx.clock } : {}), ...(ctx.random ? { random: ctx.random } : {}) };
}

/** The parts of a destination's result that a build's result carries as they are. */
function pick(r: TargetResult): Pick<BuildResult, 'manifest' | 'container' | 'indexes' | 'releaseAliases' | 'signatures'> {
  return {
    indexes: r.indexes,
    ...(r.manifest ? { manifest: r.manifest } : {}),
    ...(r.container ? { container: r.container } : {}),
    ...(r.releaseAliases ? { releaseAliases: r.releaseAliases } : {}),
    ...(r.signatures ? { signatures: r.signatures } : {}),
  };
}

/** 2. Every file to the mirror's destinations: the layers of the artifact manifest, and the container image. */
async function transferBlobs(
  transfer: FileTransfer,
  log: Logger,
  build: BuildMetadata,
  files: readonly SourceFile[],
  archive: SourceFile | undefined,
  mirror: Mirror,
  containerRepo: string | undefined,
): Promise<Blobs> {
  const base = build.name.base;
  const main = mirror.target();
  const imageTarget = containerRepo ? mirror.target(containerRepo) : main;
  // The passes that read tar (a container archive, a PXE bundle) are loaded by the builds that have one: a cold
  // start of any other build, or of a skipped document, does not compile them (tools/build.ts).
  const archivePass = archive ? await import('./archive-pass') : undefined;
  const plan = archive && archivePass ? await archivePass.inspectArchive(transfer, archive, main, imageTarget, { refName: flavorArch(build.name), arch: build.name.arch }) : undefined;
  const blobs: Blobs = { layers: [] };
  const addLayer = (title: string, blob: PublishedBlob): void => {
    let mediaType = mediaTypeForFile(title);
    if (mediaType === undefined) {
      log.warn('no media type is defined for this file; publishing it as application/octet-stream', { file: title });
      mediaType = UNKNOWN_MEDIA_TYPE;
    }
    blobs.layers.push({ title, mediaType, digest: blob.digest, size: blob.size });
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
      if (r.features !== undefined) blobs.features = r.features;
      addLayer(file.name, r.blob);
    } else if (archive && archivePass && plan && file === archive) {
      const r = await archivePass.transferArchive(transfer, file, plan, main, imageTarget);
      blobs.image = r.image;
      addLayer(file.name, r.archive);
    } else if (file.name.endsWith(PXE_BUNDLE_SUFFIX)) {
      const r = await (await import('./pxe-pass')).transferPxeBundle(transfer, file, main);
      addLayer(file.name, r.bundle);
      for (const m of r.members) addLayer(m.name, m);
    } else {
      addLayer(file.name, await transferPlainFile(transfer, file, main));
    }
  }
  await transfer.ensureBuffer(main, EMPTY_JSON, 'config blob {}');
  return blobs;
}

/**
 * 3.-5. in one destination: the manifests, their signatures, the records, the version indexes and the aliases.
 * `moved` counts what this destination got (blobs, manifests) for its outcome.
 */
async function finish(
  ctx: PublishContext,
  log: Logger,
  build: BuildMetadata,
  blobs: Blobs,
  where: Places,
  containerRepo: string | undefined,
  indexesBefore: ReadonlyArray<IndexSnapshot | undefined>,
  stats: TransferStats,
  moved: { blobsUploaded: number; manifestsWritten: number },
  lastModified: Date | undefined,
  byHand: boolean,
): Promise<Omit<TargetResult, 'target' | 'bytesUploaded' | 'blobsUploaded' | 'blobsSkipped'>> {
  const base = build.name.base;
  const version = build.name.version;
  const { main, image: imageTarget } = where;
  // Signature blobs are counted with the build's own; the destination's share is in `moved`.
  const transfer = new FileTransfer(ctx, stats, log);
  ctx.deadline.ensure('pushing the manifests', MANIFESTS_MS);
  const featureSet = blobs.features ?? build.modifiers.join(',');
  if (blobs.features === undefined) log.warn('no GARDENLINUX_FEATURES in a .release file; using the metadata modifiers', { featureSet });
  const manifest = buildArtifactManifest(build.name, featureSet, blobs.layers, ctx.imageSource);
  const result: Omit<TargetResult, 'target' | 'bytesUploaded' | 'blobsUploaded' | 'blobsSkipped'> = { outcome: 'unchanged', indexes: [] };
  let containerEntry: Descriptor | undefined;
  const image = blobs.image;
  if (image !== undefined) {
    // By digest for now: the tag goes to the newest build's image once the records are in (step 5).
    await putIfDifferent(imageTarget, image.manifestBytes, image.manifest.digest, image.manifest.mediaType, image.manifest.digest, moved);
    // Container entries carry no annotations: consumers tell them apart by the missing cname (spec §4).
    containerEntry = { mediaType: image.manifest.mediaType, digest: image.manifest.digest, size: image.manifest.size, platform: image.platform };
  }
  const glTag = artifactManifestTag(build.name);
  await putIfDifferent(main, manifest.bytes, manifest.digest, OCI_MANIFEST, glTag, moved);
  result.manifest = { repository: main.display, tag: glTag, digest: manifest.digest };

  // Signatures before the records: no version index names an artifact manifest without its signature.
  const sign = async (): Promise<void> => {
    if (!ctx.signer) return;
    result.signatures = [await ensureSignature(main, manifest.digest, ctx.signer, transfer, log)];
    if (image !== undefined && ctx.signContainerImages) {
      result.signatures.push(await ensureSignature(imageTarget, image.manifest.digest, ctx.signer, transfer, log));
    }
  };
  if (guards.signatureBeforeRecord) await sign();

  // 4. Records, then 5. the version indexes. By hand, a retraction goes first: the build is wanted again. Else a
  // retraction found now was made while this publication ran (a repeated S3 event, say): it stands, and nothing is
  // recorded (a retraction made later still wins: its marker keeps the record out of every index).
  for (const t of where.index) {
    if (await ctx.state.getRetraction(t.id, version, base)) {
      if (!byHand && guards.retractionCheck) {
        log.info('the build was retracted while it was being published: it stays retracted', { repository: t.display, version });
        return { ...result, outcome: 'skipped', reason: `${base} was retracted while it was being published; publish it by hand to restore it` };
      }
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
  // A record found there already was written by an earlier attempt (or a repeated event): that writer may have
  // died after writing an index and before checking it, so this one checks in its stead (converge.ts, `again`).
  const again = new Set<string>();
  if (!(await ctx.state.putRecord(main.id, version, record))) again.add(main.id);
  if (containerEntry && containerRepo) {
    const { gardenlinux: _gl, ...rest } = record;
    if (!(await ctx.state.putRecord(imageTarget.id, version, { ...rest, container: containerEntry }))) again.add(imageTarget.id);
  }
  for (const [i, t] of where.index.entries()) {
    const known = indexesBefore[i];
    const platform = containerEntry && t.id === imageTarget.id ? containerEntry.platform : undefined;
    const own = { base, ...(platform ? { platform } : {}), ...(again.has(t.id) ? { again: true } : {}) };
    const { update } = await convergeVersion({
      state: ctx.state,
      target: t,
      version,
      logger: log,
      deadline: ctx.deadline,
      own,
      buildTimeOf: metadataBuildTime(ctx.source),
      ...(known ? { known } : {}),
      ...timing(ctx),
    });
    result.indexes.push(update);
    const aliases = await followAliases({ state: ctx.state, target: t, version, templates: ctx.aliasTemplates ?? [], logger: log, deadline: ctx.deadline, ...timing(ctx) });
    if (aliases.length > 0) (result.releaseAliases ??= []).push(...aliases);
    if (containerEntry && t.id === imageTarget.id) {
      const tag = containerTag(build.name);
      const holder = update.tags?.find((x) => x.tag === tag);
      result.container = { repository: t.display, tag, digest: containerEntry.digest, tagged: holder?.digest === containerEntry.digest };
    }
  }

  if (!guards.signatureBeforeRecord) await sign();

  const changed =
    moved.blobsUploaded > 0 ||
    moved.manifestsWritten > 0 ||
    result.indexes.some((i) => i.changed) ||
    (result.signatures ?? []).some((s) => s.written) ||
    aliasesMoved(result.releaseAliases ?? []);
  return { ...result, outcome: changed ? 'published' : 'unchanged' };
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

async function putIfDifferent(target: Target, bytes: Buffer, digest: string, mediaType: string, reference: string, stats: { manifestsWritten: number }): Promise<void> {
  if ((await target.resolve(reference)) === digest) return;
  const stored = await target.putManifest(bytes, mediaType, reference);
  if (stored !== digest) throw new IntegrityError(`${target.display}:${reference} was stored with digest ${stored}, expected ${digest}`);
  stats.manifestsWritten++;
}
