/**
 * Moves the release aliases of ALIAS_TAGS after a version index changed. Each alias of the version
 * (release-aliases.ts) gets the exact bytes of `<repo>:<V>`, V the highest version of its group whose index
 * holds anything; when no version of the group has anything left (every build retracted), the highest one's
 * index as it now stands (empty), so the alias never names a retracted build. Each `<arch>-<alias>` gets the
 * image of the highest version of the group whose index has an image for that arch; when none has, an existing
 * tag gets an empty index (a pull by it fails instead of serving a retracted image), and none is created.
 *
 * Without compare-and-swap, by the argument of converge.ts: the versions are a function of durable state (the
 * records' folders; S3 LIST is strongly consistent) and every writer goes in rounds — list the versions, read
 * the goal indexes and the aliases, write what differs, and after a round that wrote, go again; it stops only
 * after a round that wrote nothing. Take the last alias write of all: its writer's next round read, after it,
 * both the versions and the goal's index and found the alias equal to it. A record of a higher version written
 * later belongs to a writer whose own rounds come after that, and so does an index write of the goal version;
 * either writer finding the alias wrong would write, contradicting "last". So every alias ends on the index of
 * the highest version as it stands, and the highest version only grows.
 *
 * Not moved down by a writer whose listing is stale: a round writes only after it has listed the versions again
 * and read the indexes it used again, after reading the aliases, and found them unchanged. Whatever an alias
 * holds was written by a writer of its version after that version's record and index existed, so a listing
 * taken after reading the alias knows that version, and an index read after it sees what the alias was given.
 * This reads no content of the alias, so it holds in container sub-repositories too, whose indexes name no
 * version. The check holds only while it is fresh: a check whose answers took longer than FRESH_MS, and every
 * write after it once that much time has passed (a write whose answer came late, say), wait for the next round's
 * check (the simulation found the alias moved down for a round without this). Two writers racing on one alias
 * within that time can still leave a lower index there for one round, which the writer of the lower version
 * then repairs in its next round.
 */
import { ARCHITECTURES } from '../gardenlinux/naming';
import { aliasGroups, isNumericVersion, type AliasTemplate } from '../gardenlinux/release-aliases';
import { isContainerEntry } from '../gardenlinux/version-index';
import { sha256Digest } from '../oci/digest';
import { IndexSchema, parseJson, type Descriptor, type ImageIndex } from '../oci/descriptor';
import { INDEX_TYPES, OCI_INDEX } from '../oci/media-types';
import { pythonJson } from '../oci/python-json';
import type { StateStore } from '../storage/state-store';
import type { FetchedManifest, Target } from '../target/target';
import { systemClock, type Clock } from '../util/clock';
import { guards } from '../util/guards';
import { TimeoutError, type Deadline } from '../util/deadline';
import { IntegrityError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import { CONVERGE_LIMIT_MS, ROUND_BACKOFF, WRITE_RESERVE_MS } from './converge';

export interface AliasUpdate {
  alias: string;
  template: string;
  repository: string;
  /** the version it holds now */
  version: string;
  digest: string;
  changed: boolean;
  /** `<arch>-<alias>` tags: each holds the image of `version`, or, without one, an empty index */
  tags?: Array<{ tag: string; digest: string; changed: boolean; version?: string }>;
}

export interface FollowOptions {
  state: StateStore;
  target: Target;
  /** the version whose index this writer brought in line */
  version: string;
  templates: readonly AliasTemplate[];
  logger: Logger;
  deadline: Deadline;
  clock?: Clock;
  random?: () => number;
}

/** An image index that names nothing, in the json.dumps form of every index the publisher writes. */
export const EMPTY_INDEX: FetchedManifest = (() => {
  const bytes = Buffer.from(pythonJson({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }));
  return { bytes, mediaType: OCI_INDEX, digest: sha256Digest(bytes) };
})();

/** The version whose index `index` is: the `os.version` its Garden Linux entries share, if they do. */
export function versionOfIndex(index: ImageIndex): string | undefined {
  const versions = new Set(index.manifests.flatMap((m) => (m.annotations?.cname && m.platform?.['os.version'] ? [m.platform['os.version']] : [])));
  return versions.size === 1 ? [...versions][0] : undefined;
}

/** The index's image of `arch`: its first container entry of that architecture (the one a pull by platform gets). */
export function imageOf(index: ImageIndex, arch: string): Descriptor | undefined {
  return index.manifests.find((m) => isContainerEntry(m) && m.platform?.architecture === arch);
}

export interface AliasSource {
  manifest: FetchedManifest;
  index: ImageIndex;
}

/**
 * Reads each version's index at most once, and remembers the digest it found (undefined: none), so that a
 * round can check, before it writes, that nothing it decided on has changed.
 */
export class IndexReader {
  readonly seen = new Map<string, string | undefined>();
  private readonly cache = new Map<string, Promise<AliasSource | undefined>>();

  constructor(private readonly target: Target) {}

  read(version: string): Promise<AliasSource | undefined> {
    let p = this.cache.get(version);
    if (p === undefined) {
      p = this.target.getManifest(version).then((manifest) => {
        this.seen.set(version, manifest?.digest);
        return manifest === undefined ? undefined : asSource(manifest, `${this.target.display}:${version}`);
      });
      this.cache.set(version, p);
    }
    return p;
  }
}

/** What one `<arch>-<alias>` must hold: the image of `version`, or the empty index when no version has one. */
export interface ArchPlan {
  arch: string;
  tag: string;
  /** what it holds now */
  current: string | undefined;
  version?: string;
  digest: string;
}

/** What one alias must hold, and what it holds now. */
export interface AliasPlan {
  alias: string;
  template: string;
  /** the version whose index it must hold */
  version: string;
  source: AliasSource;
  current: string | undefined;
  arches: ArchPlan[];
}

/**
 * What every alias of `version` must hold, given the versions with records, and what each holds now. An arch
 * tag is planned when the goal's index has an image of that arch or the tag exists (an `<arch>-<alias>` is
 * created only for an arch the goal's index has an image of).
 */
export async function planAliases(
  target: Target,
  templates: readonly AliasTemplate[],
  version: string,
  versions: readonly string[],
  reader: IndexReader,
): Promise<AliasPlan[]> {
  const plans: AliasPlan[] = [];
  for (const group of aliasGroups(templates, version, versions)) {
    let goal: { version: string; source: AliasSource } | undefined;
    let fallback: typeof goal;
    for (const v of group.members) {
      const source = await reader.read(v);
      if (!source) continue;
      if (source.index.manifests.length > 0) {
        goal = { version: v, source };
        break;
      }
      fallback ??= { version: v, source };
    }
    goal ??= fallback;
    // No version of the group has an index yet: its writer moves the alias once it has one.
    if (goal === undefined) continue;
    const tags = ARCHITECTURES.map((arch) => `${arch}-${group.alias}`);
    const [current, ...held] = await Promise.all([group.alias, ...tags].map((t) => target.resolve(t)));
    const arches: ArchPlan[] = [];
    for (const [i, arch] of ARCHITECTURES.entries()) {
      const tag = tags[i] as string;
      const now = held[i];
      let want: { version: string; digest: string } | undefined;
      const image = imageOf(goal.source.index, arch);
      if (image) want = { version: goal.version, digest: image.digest };
      else if (now !== undefined) {
        // Lower versions are read only for a tag that exists: searching every version for an arch none of them
        // has would be paid in every round.
        for (const v of group.members.slice(group.members.indexOf(goal.version) + 1)) {
          const found = await reader.read(v).then((s) => (s ? imageOf(s.index, arch) : undefined));
          if (found) {
            want = { version: v, digest: found.digest };
            break;
          }
        }
      }
      if (want) arches.push({ arch, tag, current: now, ...want });
      else if (now !== undefined) arches.push({ arch, tag, current: now, digest: EMPTY_INDEX.digest });
    }
    plans.push({ alias: group.alias, template: group.template, version: goal.version, source: goal.source, current, arches });
  }
  return plans;
}

export async function followAliases(o: FollowOptions): Promise<AliasUpdate[]> {
  if (o.templates.length === 0 || !isNumericVersion(o.version)) return [];
  const clock = o.clock ?? systemClock;
  const random = o.random ?? Math.random;
  const started = clock.now();
  const changed = new Set<string>();
  for (let round = 1; ; round++) {
    const versions = await publishedVersions(o.state, o.target);
    const reader = new IndexReader(o.target);
    const plans = await planAliases(o.target, o.templates, o.version, versions, reader);
    const due = plans.some((p) => p.current !== p.source.manifest.digest || p.arches.some((a) => a.current !== a.digest));
    // Decided on a listing older than the aliases read: written only when a listing and the indexes read after
    // them say the same (the file's header says why).
    let stale = due && guards.aliasStaleListing && !(await unchangedSince(o, versions, reader, clock));
    const checkedAt = clock.now();
    // A write whose answer was slow makes the check old: the writes after it wait for the next round's check.
    const fresh = (): boolean => {
      if (guards.aliasStaleListing && clock.now() - checkedAt > FRESH_MS) stale = true;
      return !stale;
    };
    let writes = 0;
    const updates: AliasUpdate[] = [];
    for (const plan of plans) {
      if (plan.current !== plan.source.manifest.digest && fresh()) {
        beforeWrite(o, clock, started);
        await put(o.target, plan.source.manifest, plan.alias);
        log(o, plan.alias, plan.version, plan.source.manifest.digest, plan.template, plan.source.index.manifests.length === 0);
        changed.add(plan.alias);
        writes++;
      }
      const tags: NonNullable<AliasUpdate['tags']> = [];
      for (const a of plan.arches) {
        if (a.current !== a.digest && fresh()) {
          // Read only to be written: the bytes under the tag must be the image's own.
          const bytes = a.version === undefined ? EMPTY_INDEX : await o.target.getManifest(a.digest);
          if (bytes && fresh()) {
            beforeWrite(o, clock, started);
            await put(o.target, bytes, a.tag);
            log(o, a.tag, a.version, a.digest, plan.template, a.version === undefined);
            changed.add(a.tag);
            writes++;
          }
        }
        tags.push({ tag: a.tag, digest: a.digest, changed: changed.has(a.tag), ...(a.version ? { version: a.version } : {}) });
      }
      updates.push({
        alias: plan.alias,
        template: plan.template,
        repository: o.target.display,
        version: plan.version,
        digest: plan.source.manifest.digest,
        changed: changed.has(plan.alias),
        ...(tags.length > 0 ? { tags } : {}),
      });
    }
    if (writes === 0 && !stale) return updates;
    const ceiling = Math.min(ROUND_BACKOFF.maxMs, ROUND_BACKOFF.baseMs * 2 ** (round - 1));
    await clock.sleep(Math.round(ceiling * random()), o.deadline.finalSignal);
    checkLimit(o, clock, started);
  }
}

/**
 * Whether the versions and every index the round read are as they were: listed and read again now. A check whose
 * answers took long is no check: what it read may have changed since it was served (a slow answer), so the round
 * plans again instead of writing on it.
 */
async function unchangedSince(o: FollowOptions, versions: readonly string[], reader: IndexReader, clock: Clock): Promise<boolean> {
  const asked = clock.now();
  const now = await publishedVersions(o.state, o.target);
  if (now.length !== versions.length || now.some((v) => !versions.includes(v))) return false;
  const seen = [...reader.seen];
  const digests = await Promise.all(seen.map(([v]) => o.target.resolve(v)));
  return seen.every(([, d], i) => digests[i] === d) && clock.now() - asked <= FRESH_MS;
}

/** How long the check before alias writes may take and still count (its requests take well under a second). */
const FRESH_MS = 5_000;

function log(o: FollowOptions, alias: string, version: string | undefined, digest: string, template: string, empty: boolean): void {
  if (empty) {
    o.logger.info('alias emptied', {
      repository: o.target.display,
      alias,
      ...(version ? { version } : {}),
      digest,
      template,
      reason: version ? `no version it may hold has a build left; ${version} is the highest` : 'no version it may hold has an image of its architecture',
    });
  } else o.logger.info('alias moved', { repository: o.target.display, alias, version, digest, template });
}

/** Whether following the aliases wrote anything: an alias or one of its `<arch>-` tags. */
export function aliasesMoved(updates: readonly AliasUpdate[]): boolean {
  return updates.some((a) => a.changed || (a.tags ?? []).some((t) => t.changed));
}

/** The versions with records in a target, as the aliases count them. */
export async function publishedVersions(state: StateStore, target: Target): Promise<string[]> {
  return (await state.listVersions(target.id)).filter(isNumericVersion);
}

function asSource(manifest: FetchedManifest, what: string): AliasSource | undefined {
  if (!INDEX_TYPES.includes(manifest.mediaType)) return undefined;
  try {
    return { manifest, index: parseJson(IndexSchema, manifest.bytes, what) };
  } catch {
    return undefined;
  }
}

/** `<repo>:<tag>` when it holds an index; undefined when there is none or it holds something else. */
export async function readSource(target: Target, tag: string): Promise<AliasSource | undefined> {
  const manifest = await target.getManifest(tag);
  return manifest === undefined ? undefined : asSource(manifest, `${target.display}:${tag}`);
}

function checkLimit(o: FollowOptions, clock: Clock, started: number): void {
  if (clock.now() - started > CONVERGE_LIMIT_MS) {
    throw new PublishError('conflict', `the aliases of ${o.target.display}:${o.version} kept changing for ${Math.round(CONVERGE_LIMIT_MS / 1000)} s`, { retryable: true });
  }
}

function beforeWrite(o: FollowOptions, clock: Clock, started: number): void {
  checkLimit(o, clock, started);
  if (o.deadline.finalLeft() < WRITE_RESERVE_MS) {
    throw new TimeoutError(`stopped before moving the aliases of ${o.target.display}:${o.version}: too little time is left to check the write; the retry moves them`);
  }
}

async function put(target: Target, manifest: FetchedManifest, tag: string): Promise<void> {
  const digest = await target.putManifest(manifest.bytes, manifest.mediaType, tag);
  if (digest !== manifest.digest) throw new IntegrityError(`${target.display}:${tag} got digest ${digest}, expected ${manifest.digest}`);
}
