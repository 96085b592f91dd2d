/**
 * Brings what readers see of one version in one repository — the index `<repo>:<version>` and the container
 * tags `<arch>-<version>` — in line with the records of every build published to it.
 *
 * Registries offer no compare-and-swap on tags, so concurrent publishers would lose each other's entries with a
 * plain read-modify-write. Instead both are a function of durable state: each publisher writes its record
 * first, then goes in rounds. A round lists the version's records (S3 LIST is strongly consistent), reads the
 * index and the tags, renders what the records say they must be (keeping entries other tools wrote) and writes
 * what differs. A writer stops after a round that wrote nothing: either all was right for its listing, or it
 * was overtaken (none of its own writes is what readers see any more, and its own build is placed right in what
 * they see). After a round that wrote, it waits a little (backoff with jitter) and goes on.
 *
 * Why it converges: take the last write of all, by writer X. X's next round listed the records after that
 * write and read what it wrote (nothing came later); X could not stop as overtaken, since readers see its own
 * write, so it found that write right for its listing: every record written before that listing is in it. A
 * record written after the listing belongs to a writer whose own rounds list and read after X's write; finding
 * its build missing or misplaced, it would write, contradicting "last". So the index holds every record, and
 * each tag names the image that holds its platform's slot in the index. This needs every write to be
 * followed by its writer's next round, so a writer never stops in between: that round comes out of the stop
 * margin, and only at the very end of the invocation (the final point) does the job give up as `timeout`, for
 * its retry to converge again.
 *
 * Entries whose manifest is gone are left out: when the registry refuses an index that names a missing manifest
 * (MANIFEST_BLOB_UNKNOWN), and on `reindex` always, every entry is checked and the missing ones are dropped
 * with a warning naming them.
 */
import { containerTags, renderVersionIndex, sameIndex, samePlace, type IndexRecord, type RenderedIndex, type RenderOptions } from '../gardenlinux/version-index';
import { IndexSchema, parseJson, type ImageIndex } from '../oci/descriptor';
import { INDEX_TYPES, OCI_INDEX } from '../oci/media-types';
import { RegistryError } from '../registry/errors';
import type { ObjectInfo } from '../storage/object-store';
import type { Retraction, StateStore, VersionEntry } from '../storage/state-store';
import type { Target } from '../target/target';
import { systemClock, type Clock } from '../util/clock';
import { guards } from '../util/guards';
import { TimeoutError, type Deadline } from '../util/deadline';
import { InputError, PublishError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';

export interface IndexUpdate {
  repository: string;
  tag: string;
  /** the index digest now at the tag, if there is an index */
  digest?: string;
  /** whether this publisher wrote the index or a tag (false: all was already right) */
  changed: boolean;
  /** Garden Linux and container entries in it */
  entries: number;
  rounds: number;
  /** the container tags of this repository, each with the image it names */
  tags?: Array<{ tag: string; digest: string; base: string; changed: boolean }>;
  /** digests of entries left out because their manifest is gone */
  dropped?: string[];
}

/** The index as last read or written: its digest says whether it must be read again. */
export interface IndexSnapshot {
  digest: string;
  index: ImageIndex;
  size: number;
}

export interface ConvergeOptions {
  state: StateStore;
  target: Target;
  version: string;
  logger: Logger;
  deadline: Deadline;
  clock?: Clock;
  random?: () => number;
  /** check that every entry's manifest exists before writing (reindex) */
  checkEntries?: boolean;
  /** the index as read just before: the first round then reads it only if it changed since */
  known?: IndexSnapshot;
  /**
   * The build this writer published, and the platform of its image in this repository (if it has one there): once
   * others wrote after it and placed the build right, it may stop; it keeps the tag of that platform.
   */
  /**
   * `again`: the build's record was there already, written by an earlier attempt that may have died between its
   * index write and the check of it; this writer then does that check itself and never counts as overtaken.
   */
  own?: { base: string; platform?: { architecture: string; os: string }; again?: boolean };
  /** the build time (ISO 8601) of a build another tool put in the index, from its metadata document, if any */
  buildTimeOf?: (cname: string) => Promise<string | undefined>;
}

/** Time the first round (list, read, render, write) may need: it starts only when this much is left. */
export const ROUND_MS = 10_000;
/** A writer keeps converging this long at most; then its job fails as `conflict` and its retry goes on. */
export const CONVERGE_LIMIT_MS = 300_000;
/** No write starts with less than this left before the final point: the round that checks it must fit too. */
export const WRITE_RESERVE_MS = 5_000;
/** After a round that wrote: a random wait up to base·2^(round-1), at most max. */
export const ROUND_BACKOFF = { baseMs: 100, maxMs: 2_000 };

/** The index at `<version>`, or undefined when there is none. */
export async function readVersionIndex(target: Target, version: string): Promise<IndexSnapshot | undefined> {
  const current = await target.getManifest(version);
  if (current === undefined) return undefined;
  const what = `${target.display}:${version}`;
  // Never replace what could not be read as an index (spec §5).
  if (!INDEX_TYPES.includes(current.mediaType)) {
    throw new InputError(`${what} holds a ${current.mediaType}, not an image index; refusing to overwrite it`);
  }
  return { index: parseJson(IndexSchema, current.bytes, what), digest: current.digest, size: current.bytes.length };
}

/** The index now: a HEAD, and a GET only when its digest is not the one already known (a GET counts as a pull on some registries). */
async function currentIndex(target: Target, version: string, known: IndexSnapshot | undefined): Promise<IndexSnapshot | undefined> {
  const digest = await target.resolve(version);
  if (digest === undefined) return undefined;
  if (known?.digest === digest) return known;
  return readVersionIndex(target, version);
}

/** A registry's refusal of an index that names a manifest it does not have. */
function namesMissingManifest(err: unknown): boolean {
  return err instanceof RegistryError && ['MANIFEST_BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'BLOB_UNKNOWN', 'MANIFEST_INVALID'].includes(err.code);
}

interface Round {
  records: IndexRecord[];
  retracted: Retraction[];
  /** build times of another tool's entries, where their metadata documents said */
  buildTimes: ReadonlyMap<string, string>;
}

export async function convergeVersion(o: ConvergeOptions): Promise<{ update: IndexUpdate; records: IndexRecord[] }> {
  const clock = o.clock ?? systemClock;
  const random = o.random ?? Math.random;
  const where = `${o.target.display}:${o.version}`;
  const started = clock.now();
  const cache = new Map<string, VersionEntry | undefined>();
  const read = async (info: ObjectInfo): Promise<VersionEntry | undefined> => {
    const id = `${info.key} ${info.etag}`;
    if (!cache.has(id)) cache.set(id, await o.state.readEntry(info));
    return cache.get(id);
  };
  const gone = new Set<string>();
  const foreignTimes = new Map<string, string | undefined>();
  let snapshot = o.known;
  let checked = !o.checkEntries;
  let changed = false;
  const own: OwnWrites = { tags: new Map() };

  for (let round = 1; ; round++) {
    // Every round after the first follows a write of this writer, and must run: only the listing after a write
    // makes the write safe. It may use the stop margin (its requests stop only at the final point).
    if (round === 1) o.deadline.ensure(`the version index ${where}`, ROUND_MS);
    const listing = await o.state.listVersion(o.target.id, o.version);
    const entries = (await mapLimit(listing, 16, read)).filter((e): e is VersionEntry => e !== undefined);
    const records = entries.flatMap((e) => (e.kind === 'record' ? [e.record] : []));
    snapshot = await currentIndex(o.target, o.version, snapshot);
    const state: Round = {
      records,
      retracted: entries.flatMap((e) => (e.kind === 'retraction' ? [e.retraction] : [])),
      buildTimes: await foreignBuildTimes(o, records, snapshot?.index, foreignTimes),
    };
    if (!checked) {
      await checkEntries(o, state, snapshot, gone);
      checked = true;
    } else await recheckGone(o, state, gone);
    // Not writing is always safe; a write is only begun when the round that checks it can follow.
    const beforeWrite = (): void => {
      if (clock.now() - started > CONVERGE_LIMIT_MS) {
        throw new PublishError('conflict', `${where}: the records kept changing for ${Math.round(CONVERGE_LIMIT_MS / 1000)} s`, { retryable: true });
      }
      if (o.deadline.finalLeft() < WRITE_RESERVE_MS) {
        throw new TimeoutError(`stopped before writing ${where}: too little time is left to check the write; the retry renders it again`);
      }
    };
    const writes = await writeRound(o, state, gone, round, own, snapshot, beforeWrite);
    snapshot = writes.snapshot;
    if (writes.count > 0) changed = true;
    if (writes.count === 0 || !guards.relistAfterWrite) {
      const tags = [...own.tags.values()];
      return {
        update: {
          repository: o.target.display,
          tag: o.version,
          ...(snapshot ? { digest: snapshot.digest } : {}),
          changed,
          entries: snapshot?.index.manifests.length ?? 0,
          rounds: round,
          ...(tags.length > 0 ? { tags } : {}),
          ...(gone.size > 0 ? { dropped: [...gone].sort() } : {}),
        },
        records: state.records,
      };
    }
    const ceiling = Math.min(ROUND_BACKOFF.maxMs, ROUND_BACKOFF.baseMs * 2 ** (round - 1));
    const pause = Math.min(Math.round(ceiling * random()), Math.max(0, o.deadline.finalLeft() - ROUND_MS / 2));
    await clock.sleep(pause, o.deadline.finalSignal);
  }
}

function exclusions(state: Round, gone: ReadonlySet<string>): RenderOptions {
  return { retracted: state.retracted, gone, buildTimes: state.buildTimes };
}

/**
 * The build times of the Garden Linux entries another tool wrote (no record has their cname), from their builds'
 * metadata documents, each asked for once per convergence.
 */
async function foreignBuildTimes(o: ConvergeOptions, records: readonly IndexRecord[], index: ImageIndex | undefined, known: Map<string, string | undefined>): Promise<Map<string, string>> {
  const recorded = new Set(records.map((r) => r.base));
  const unknown = [...new Set((index?.manifests ?? []).flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : [])))].filter((c) => !recorded.has(c) && !known.has(c));
  const lookup = o.buildTimeOf;
  if (lookup !== undefined) {
    const times = await mapLimit(unknown, 8, (c) => lookup(c).catch(() => undefined));
    unknown.forEach((c, i) => known.set(c, times[i]));
  }
  return new Map([...known].flatMap(([c, t]) => (t === undefined ? [] : [[c, t] as const])));
}

/**
 * Puts the rendered index; returns its digest, or undefined when the registry refused it for naming a manifest
 * that is gone and the missing entries were added to `gone` (then the caller renders again).
 */
async function putIndex(o: ConvergeOptions, rendered: RenderedIndex, state: Round, gone: Set<string>, round: number): Promise<string | undefined> {
  let digest: string;
  try {
    digest = await o.target.putManifest(rendered.bytes, OCI_INDEX, o.version);
  } catch (err) {
    if (!namesMissingManifest(err)) throw err;
    const before = gone.size;
    await findGone(o, rendered.index.manifests.map((m) => m.digest), state, gone);
    if (gone.size === before) throw err;
    return undefined;
  }
  o.logger.info('version index written', {
    repository: o.target.display,
    tag: o.version,
    digest,
    entries: rendered.index.manifests.length,
    records: state.records.length,
    round,
  });
  return digest;
}

/** reindex: every entry the index would name, and every tagged image, must exist. */
async function checkEntries(o: ConvergeOptions, state: Round, snapshot: IndexSnapshot | undefined, gone: Set<string>): Promise<void> {
  const rendered = renderVersionIndex(state.records, snapshot?.index, exclusions(state, gone));
  const digests = [...(rendered?.index.manifests ?? []).map((m) => m.digest), ...containerTags(state.records, o.version, exclusions(state, gone)).map((t) => t.entry.digest)];
  await findGone(o, [...new Set(digests)], state, gone);
}

/** Asks for each manifest (HEAD by digest); the missing ones join `gone`. */
async function findGone(o: ConvergeOptions, digests: readonly string[], state: Round, gone: Set<string>): Promise<void> {
  const unknown = digests.filter((d) => !gone.has(d));
  const present = await mapLimit(unknown, 16, async (d) => (await o.target.resolve(d)) !== undefined);
  unknown.forEach((digest, i) => {
    if (!present[i]) markGone(o, digest, state, gone);
  });
}

/** A manifest found missing: left out of what this writer renders, and named in a warning. */
function markGone(o: ConvergeOptions, digest: string, state: Round, gone: Set<string>): void {
  if (gone.has(digest)) return;
  gone.add(digest);
  const record = state.records.find((r) => r.gardenlinux?.digest === digest || r.container?.digest === digest);
  o.logger.warn('a manifest named in the version index no longer exists: its entry is left out', {
    repository: o.target.display,
    tag: o.version,
    digest,
    ...(record
      ? { base: record.base, recorded: true, hint: `publish the build again to restore it, or retract it (gl-oci-publish retract ${record.base}) to stop this check` }
      : { recorded: false }),
  });
}

/** A build published again while it counted as gone is back: a record names its manifest, and the registry has it. */
async function recheckGone(o: ConvergeOptions, state: Round, gone: Set<string>): Promise<void> {
  const named = new Set(state.records.flatMap((r) => [r.gardenlinux?.digest, r.container?.digest]));
  const candidates = [...gone].filter((d) => named.has(d));
  const back = await mapLimit(candidates, 16, async (d) => (await o.target.resolve(d)) !== undefined);
  candidates.forEach((d, i) => {
    if (back[i]) gone.delete(d);
  });
}

/** What this writer wrote last (what it must check again while readers still see it), and the tags it saw. */
interface OwnWrites {
  index?: string;
  tags: Map<string, { tag: string; digest: string; base: string; changed: boolean }>;
  lastTagWrites?: Map<string, string>;
}

/**
 * One round's writes: the index, then the container tags (a tag names an image the index already lists in its
 * slot). A manifest found gone on the way is left out of both, and both are rendered again.
 *
 * Nothing is written when all is right already, and nothing either when this writer was overtaken: none of its
 * own writes is what readers see any more (others wrote after it, and each of them must check its own write in
 * its next round), and its build has its right place in what they wrote. Only the writer of what readers see
 * must bring it in line with its listing; the others stop, so a burst of writers thins out fast.
 */
async function writeRound(
  o: ConvergeOptions,
  state: Round,
  gone: Set<string>,
  round: number,
  own: OwnWrites,
  start: IndexSnapshot | undefined,
  beforeWrite: () => void,
): Promise<{ count: number; snapshot: IndexSnapshot | undefined }> {
  let snapshot = start;
  let count = 0;
  for (;;) {
    const ex = exclusions(state, gone);
    const rendered = renderVersionIndex(state.records, snapshot?.index, ex);
    const tags = tagsToKeep(o, state, ex);
    const tagged = await mapLimit(tags, 4, (t) => o.target.resolve(t.tag));
    for (const t of tags) own.tags.set(t.tag, { tag: t.tag, digest: t.entry.digest, base: t.base, changed: own.tags.get(t.tag)?.changed ?? false });
    const indexRight = rendered === undefined || sameIndex(rendered, snapshot);
    const wrongTags = tags.filter((t, i) => tagged[i] !== t.entry.digest);
    if (indexRight && wrongTags.length === 0) return { count, snapshot };
    if (count === 0 && overtaken(o, state, own, rendered, snapshot, tags, tagged)) return { count, snapshot };

    beforeWrite();
    if (!indexRight && rendered !== undefined) {
      const written = await putIndex(o, rendered, state, gone, round);
      if (written === undefined) continue;
      snapshot = { digest: written, index: rendered.index, size: rendered.bytes.length };
      own.index = written;
      count++;
    }
    let found = false;
    for (const t of wrongTags) {
      const image = await o.target.getManifest(t.entry.digest);
      if (image === undefined) {
        markGone(o, t.entry.digest, state, gone);
        found = true;
        break;
      }
      await o.target.putManifest(image.bytes, image.mediaType, t.tag);
      o.logger.info('container tag set', { repository: o.target.display, tag: t.tag, digest: t.entry.digest, base: t.base });
      (own.lastTagWrites ??= new Map()).set(t.tag, t.entry.digest);
      own.tags.set(t.tag, { tag: t.tag, digest: t.entry.digest, base: t.base, changed: true });
      count++;
    }
    if (!found) return { count, snapshot };
  }
}

/**
 * The container tags this writer keeps: all of them for reindex and retract; for a publication, only those of
 * its own build's platform (a build without an image keeps none). The argument above holds among the writers of
 * one platform's records, and fewer writers of a tag means fewer rewrites of the same manifest, which
 * distribution's storage does not do atomically.
 */
function tagsToKeep(o: ConvergeOptions, state: Round, ex: RenderOptions): ReturnType<typeof containerTags> {
  const all = containerTags(state.records, o.version, ex);
  if (o.own === undefined) return all;
  // The platform is the writer's own, not looked up in the listing: a build retracted meanwhile keeps its duty to
  // the tag it may have written.
  const platform = o.own.platform;
  if (platform === undefined) return [];
  const mine = all.filter((t) => t.entry.platform?.architecture === platform.architecture && t.entry.platform?.os === platform.os);
  if (guards.olderBuildTagCheck) return mine;
  // Without the check: the writer's own image goes to its platform's tag, newest or not.
  const record = state.records.find((r) => r.base === o.own?.base);
  return mine.map((t) => (record?.container ? { ...t, entry: record.container, base: record.base } : t));
}

/**
 * True when readers see none of this writer's own writes any more, its build is placed right in what they see, and
 * its platform's tag names the image of that platform's slot (`tags` are the writer's own platform's only).
 */
function overtaken(
  o: ConvergeOptions,
  state: Round,
  own: OwnWrites,
  rendered: RenderedIndex | undefined,
  snapshot: IndexSnapshot | undefined,
  tags: ReadonlyArray<{ tag: string; entry: { digest: string } }>,
  tagged: ReadonlyArray<string | undefined>,
): boolean {
  if (o.own === undefined || o.own.again === true) return false;
  if (own.index !== undefined && snapshot?.digest === own.index) return false;
  if (tags.some((t, i) => tagged[i] !== undefined && own.lastTagWrites?.get(t.tag) === tagged[i])) return false;
  // Retracted, or never recorded: this writer has no place of its own in the index to check.
  const record = state.records.find((r) => r.base === o.own?.base);
  if (record !== undefined && !samePlace(rendered?.index, snapshot?.index, record)) return false;
  return tags.every((t, i) => tagged[i] === t.entry.digest);
}
