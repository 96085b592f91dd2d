/**
 * Copies a complete release from one place to another: a registry, an OCI layout or an OCI archive, either way
 * (copy-plan.ts says what is copied and in which order). First everything is read at the source (the version
 * indexes, every manifest they reach, the tags consumers use, the signatures), so a source that lacks something
 * fails the copy before anything is written. Then the plan runs, children first.
 *
 * Resumable: a blob the destination has (HEAD) is not copied, nor a manifest or tag that resolves there to the
 * digest it must have; a copy that stopped half-way is run again and goes on, and a second copy writes nothing.
 * Bounded memory: blobs stream from the source to the destination (checked against their digest and size on the
 * way), several at once; only manifests are held.
 */
import { planCopy, phases, referencesOf, wantedTags, type BlobStep, type CopyPlan, type ManifestStep, type RepositorySnapshot } from '../gardenlinux/copy-plan';
import type { AliasTemplate } from '../gardenlinux/release-aliases';
import { IndexSchema, parseJson, type Descriptor } from '../oci/descriptor';
import { INDEX_TYPES } from '../oci/media-types';
import { isRetryable } from '../registry/errors';
import { signatureTag } from '../signing/cosign-format';
import type { FetchedManifest, Target, TargetSet } from '../target/target';
import { describeError, InputError, IntegrityError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';
import type { JobCounters, TransferObserver } from './context';

/** Requests at once for manifests and tags (blobs have their own limit). */
const REQUESTS = 8;
/** A blob whose copy fails on a transient error is copied again this often (from a fresh read of the source). */
const BLOB_ATTEMPTS = 3;

export interface CopyOptions {
  version: string;
  /** where the release is, and where it goes */
  from: TargetSet;
  to: TargetSet;
  /** the container sub-repositories (CONTAINER_REPOSITORIES values) */
  repositories: readonly string[];
  /** the ALIAS_TAGS templates whose aliases are copied when they hold the version; empty: no aliases */
  aliases: readonly AliasTemplate[];
  logger: Logger;
  /** blobs copied at once */
  blobConcurrency: number;
  /** filled in as the copy goes, so a copy that fails still reports what it moved */
  counters: JobCounters;
  /** blob copies as they go, for a person watching */
  progress?: TransferObserver;
  /** stops the copy between steps (the requests stop on their own) */
  signal?: AbortSignal;
}

export interface CopyCount {
  written: number;
  /** already at the destination */
  skipped: number;
}

export interface CopySummary {
  from: string;
  to: string;
  /** per repository with the version: the destination, its index digest, and what it holds of the version */
  repositories: Array<{ repository: string; index: string; manifests: number; blobs: number }>;
  /** manifests by digest: artifact manifests, container images and what an image index names */
  manifests: CopyCount;
  signatures: CopyCount;
  indexes: CopyCount;
  /** artifact and container tags */
  tags: CopyCount;
  /** release aliases and their `<arch>-<alias>` tags, with their names (`<sub>:<tag>` in a sub-repository) */
  aliases: CopyCount & { names: string[] };
  /** tags consumers use that were not copied, and why */
  left?: Array<{ repository: string; tag: string; reason: string }>;
}

function repoOf(set: TargetSet, repository: string): Target {
  return repository === '' ? set.main : set.repository(repository);
}

function short(digest: string): string {
  return digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1…');
}

/** Reads one repository's part of the release at the source; undefined when it has no index of the version. */
async function snapshot(o: CopyOptions, repository: string): Promise<RepositorySnapshot | undefined> {
  const src = repoOf(o.from, repository);
  const what = `${src.display}:${o.version}`;
  const index = await src.getManifest(o.version);
  if (!index) {
    // A sub-repository without this version (no container build of its flavors) is not part of it.
    if (repository !== '') return undefined;
    throw new InputError(`${what} does not exist: there is no version ${o.version} to copy; nothing was copied`);
  }
  if (!INDEX_TYPES.includes(index.mediaType)) throw new InputError(`${what} is a ${index.mediaType}, not an image index; nothing was copied`);
  const parsed = parseJson(IndexSchema, index.bytes, what);

  // Every manifest the index reaches, a level at a time.
  const manifests = new Map<string, FetchedManifest>();
  let frontier: Descriptor[] = referencesOf(index, what).manifests;
  while (frontier.length > 0) {
    const fresh = [...new Map(frontier.filter((d) => !manifests.has(d.digest) && d.digest !== index.digest).map((d) => [d.digest, d])).values()];
    const read = await mapLimit(fresh, REQUESTS, async (d) => {
      const m = await src.getManifest(d.digest);
      if (!m) throw new InputError(`${what} names ${d.digest}, which is not at the source; nothing was copied`);
      if (m.bytes.length !== d.size) throw new IntegrityError(`${src.display}: ${d.digest} is ${m.bytes.length} bytes; ${what} says ${d.size}`);
      // A layout states no media type for a manifest it holds by digest only; the descriptor naming it does.
      return { ...m, mediaType: m.mediaType || d.mediaType };
    });
    frontier = [];
    for (const m of read) {
      manifests.set(m.digest, m);
      frontier.push(...referencesOf(m, `${src.display}@${m.digest}`).manifests);
    }
  }

  const wanted = wantedTags(o.version, parsed, o.aliases);
  const signed = [index.digest, ...manifests.keys()];
  const [tags, sigs] = await Promise.all([
    mapLimit(wanted, REQUESTS, async (w) => ({ wanted: w, digest: await src.resolve(w.tag) })),
    mapLimit(signed, REQUESTS, async (d) => [d, await src.getManifest(signatureTag(d))] as const),
  ]);
  const signatures = new Map<string, FetchedManifest>();
  for (const [d, sig] of sigs) if (sig) signatures.set(d, sig);
  return { repository, version: o.version, index, manifests, signatures, tags };
}

/** Streams one blob from the source into the destination, reading it again after a transient failure. */
async function copyBlob(o: CopyOptions, step: BlobStep): Promise<void> {
  const src = repoOf(o.from, step.repository);
  const dst = repoOf(o.to, step.repository);
  const { digest, size } = step.descriptor;
  if (await dst.hasBlob(digest)) {
    o.counters.blobsSkipped++;
    return;
  }
  const title = step.descriptor.annotations?.['org.opencontainers.image.title'];
  const what = `${src.display}/${title ?? digest}`;
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw o.signal.reason;
    const opened = await src.openBlob(digest, o.signal);
    if (!opened) throw new InputError(`${src.display}: the blob ${digest} (${title ?? 'no title'}) is not at the source`);
    if (opened.size !== size) {
      opened.stream.destroy();
      throw new IntegrityError(`${src.display}: the blob ${digest} is ${opened.size} bytes; its manifest says ${size}`);
    }
    const handle = o.progress?.started(what, size);
    try {
      const r = await dst.pushBlob({
        digest,
        size,
        what,
        once: true,
        open: async () => opened.stream,
        onBytes: (n) => {
          o.counters.bytesRead += n;
          if (handle !== undefined) o.progress?.advanced(handle, n);
        },
      });
      if (r.digest !== digest) throw new IntegrityError(`${dst.display}: the blob ${digest} was stored as ${r.digest}`);
      o.counters.blobsUploaded++;
      o.counters.bytesUploaded += size;
      o.logger.debug('blob copied', { blob: what, digest, size, to: dst.display });
      return;
    } catch (err) {
      opened.stream.destroy();
      if (o.signal?.aborted) throw o.signal.reason;
      if (!isRetryable(err) || attempt >= BLOB_ATTEMPTS) throw err;
      o.logger.warn('copying a blob failed, copying it again', { blob: what, digest, attempt, error: describeError(err) });
    } finally {
      if (handle !== undefined) o.progress?.finished(handle);
    }
  }
}

/** Puts a manifest's bytes under a digest or tag unless the destination resolves it to that digest; true if written. */
async function putManifest(o: CopyOptions, step: ManifestStep): Promise<boolean> {
  if (o.signal?.aborted) throw o.signal.reason;
  const dst = repoOf(o.to, step.repository);
  const { manifest, reference } = step;
  const current = await dst.resolve(reference);
  if (current === manifest.digest) return false;
  const digest = await dst.putManifest(manifest.bytes, manifest.mediaType, reference);
  if (digest !== manifest.digest) throw new IntegrityError(`${dst.display}:${reference} was stored with digest ${digest}, not ${manifest.digest}`);
  // A tag that named something else now names what the source has (the destination follows the source).
  if (current !== undefined) o.logger.info('tag moved to what the source holds', { to: dst.display, tag: reference, before: current, digest });
  else o.logger.debug('manifest copied', { to: dst.display, reference, digest });
  return true;
}

async function putAll(o: CopyOptions, steps: readonly ManifestStep[], count: CopyCount): Promise<void> {
  await mapLimit(steps, REQUESTS, async (step) => {
    if (await putManifest(o, step)) count.written++;
    else count.skipped++;
  });
}

export async function copyRelease(o: CopyOptions): Promise<CopySummary> {
  const log = o.logger;
  const summary: CopySummary = {
    from: o.from.main.display,
    to: o.to.main.display,
    repositories: [],
    manifests: { written: 0, skipped: 0 },
    signatures: { written: 0, skipped: 0 },
    indexes: { written: 0, skipped: 0 },
    tags: { written: 0, skipped: 0 },
    aliases: { written: 0, skipped: 0, names: [] },
  };
  const repositories = ['', ...new Set(o.repositories)];
  const snapshots: RepositorySnapshot[] = [];
  // The main repository first: without its index there is no version to copy, and the sub-repositories go unread.
  for (const r of repositories) {
    const s = await snapshot(o, r);
    if (s) snapshots.push(s);
  }
  const plan: CopyPlan = planCopy(snapshots);
  for (const s of snapshots) {
    summary.repositories.push({
      repository: repoOf(o.to, s.repository).display,
      index: s.index.digest,
      manifests: s.manifests.size,
      blobs: plan.blobs.filter((b) => b.repository === s.repository).length,
    });
  }
  if (plan.left.length > 0) {
    summary.left = plan.left.map((l) => ({ repository: repoOf(o.from, l.repository).display, tag: l.tag, reason: l.reason }));
    for (const l of summary.left) log.warn('a tag consumers use is not copied', l);
  }
  log.info(`copying ${o.version}`, {
    version: o.version,
    from: summary.from,
    to: summary.to,
    repositories: snapshots.length,
    manifests: plan.manifests.reduce((n, w) => n + w.length, 0),
    signatures: plan.signatures.length,
    blobs: plan.blobs.length,
    bytes: plan.bytes,
    tags: plan.tags.length,
    aliases: plan.aliases.length,
  });

  for (const { phase, steps } of phases(plan)) {
    switch (phase) {
      case 'blobs':
        await mapLimit(steps as BlobStep[], o.blobConcurrency, (step) => copyBlob(o, step));
        break;
      case 'manifests':
        await putAll(o, steps as ManifestStep[], summary.manifests);
        break;
      case 'signatures':
        await putAll(o, steps as ManifestStep[], summary.signatures);
        break;
      case 'indexes':
        // One after another, the main repository's last.
        for (const step of steps as ManifestStep[]) {
          if (await putManifest(o, step)) summary.indexes.written++;
          else summary.indexes.skipped++;
        }
        break;
      case 'tags':
        await putAll(o, steps as ManifestStep[], summary.tags);
        break;
      case 'aliases':
        for (const step of steps as ManifestStep[]) {
          if (await putManifest(o, step)) summary.aliases.written++;
          else summary.aliases.skipped++;
          summary.aliases.names.push(step.repository === '' ? step.reference : `${step.repository}:${step.reference}`);
        }
        break;
    }
  }
  const written = copyWrote(summary, o.counters);
  log.info(written ? `copied ${o.version}` : `${o.version} is complete at ${summary.to} already: nothing was written`, {
    version: o.version,
    from: summary.from,
    to: summary.to,
    blobsUploaded: o.counters.blobsUploaded,
    blobsSkipped: o.counters.blobsSkipped,
    bytesUploaded: o.counters.bytesUploaded,
    manifests: summary.manifests,
    signatures: summary.signatures,
    indexes: summary.indexes,
    tags: summary.tags,
    aliases: { written: summary.aliases.written, skipped: summary.aliases.skipped },
    indexDigest: snapshots[0] ? short(snapshots[0].index.digest) : undefined,
  });
  return summary;
}

/** Whether a copy wrote anything: a blob, a manifest or a tag. */
export function copyWrote(summary: CopySummary, counters: JobCounters): boolean {
  return (
    counters.blobsUploaded > 0 ||
    [summary.manifests, summary.signatures, summary.indexes, summary.tags, summary.aliases].some((c) => c.written > 0)
  );
}
