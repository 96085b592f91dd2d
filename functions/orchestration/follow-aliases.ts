/**
 * Moves the release aliases of ALIAS_TAGS after a version index changed: each alias of the version's groups
 * (release-aliases.ts) gets the exact bytes of `<repo>:<V>`, V the highest version of its group with records, and
 * each `<arch>-<alias>` the image of that index's container entry for the arch.
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
 * An alias is not moved down by a writer whose listing is stale: when it holds the index of a higher version of
 * its group (the entries' `os.version` says which), the writer lists again instead. Two writers racing on one
 * alias can still leave a lower index there for one round, which the writer of the lower version then repairs.
 */
import { aliasGoals, compareVersions, aliasFor, isNumericVersion, type AliasGoal, type AliasTemplate } from '../gardenlinux/release-aliases';
import { isContainerEntry } from '../gardenlinux/version-index';
import { IndexSchema, parseJson, type ImageIndex } from '../oci/descriptor';
import { INDEX_TYPES } from '../oci/media-types';
import type { StateStore } from '../storage/state-store';
import type { FetchedManifest, Target } from '../target/target';
import { systemClock, type Clock } from '../util/clock';
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
  /** `<arch>-<alias>` tags of the container images in that index */
  tags?: Array<{ tag: string; digest: string; changed: boolean }>;
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

/** The version whose index `index` is: the `os.version` its Garden Linux entries share, if they do. */
export function versionOfIndex(index: ImageIndex): string | undefined {
  const versions = new Set(index.manifests.flatMap((m) => (m.annotations?.cname && m.platform?.['os.version'] ? [m.platform['os.version']] : [])));
  return versions.size === 1 ? [...versions][0] : undefined;
}

/** The architectures of the index's container entries, in index order, each once. */
export function containerArches(index: ImageIndex): string[] {
  return [...new Set(index.manifests.flatMap((m) => (isContainerEntry(m) && m.platform?.architecture ? [m.platform.architecture] : [])))];
}

export async function followAliases(o: FollowOptions): Promise<AliasUpdate[]> {
  if (o.templates.length === 0 || !isNumericVersion(o.version)) return [];
  const clock = o.clock ?? systemClock;
  const random = o.random ?? Math.random;
  const started = clock.now();
  const changed = new Set<string>();
  // Aliases found holding a higher version than this writer's listing knows: listed again once. A higher version
  // still unknown then has no records (a tag set by hand, a version taken back): the rules take the alias over.
  const relisted = new Set<string>();
  for (let round = 1; ; round++) {
    const versions = await publishedVersions(o.state, o.target);
    const { goals, sources } = await resolveAliasGoals(o.target, o.templates, o.version, versions);
    let writes = 0;
    let stale = false;
    const updates: AliasUpdate[] = [];
    for (const goal of goals) {
      const source = sources.get(goal.version) as AliasSource;
      const current = await o.target.resolve(goal.alias);
      if (current !== source.manifest.digest) {
        if (!relisted.has(goal.alias) && (await holdsHigher(o, goal, current))) {
          relisted.add(goal.alias);
          stale = true;
          continue;
        }
        beforeWrite(o, clock, started);
        await put(o.target, source.manifest, goal.alias);
        o.logger.info('alias moved', { repository: o.target.display, alias: goal.alias, version: goal.version, digest: source.manifest.digest, template: goal.template });
        changed.add(goal.alias);
        writes++;
      }
      const tags: NonNullable<AliasUpdate['tags']> = [];
      // `<arch>-<alias>` holds the image `<arch>-<V>` names: the one image of the arch's container slot.
      for (const arch of containerArches(source.index)) {
        const digest = await o.target.resolve(`${arch}-${goal.version}`);
        // Not yet tagged: its index's writer tags it next and then moves this alias itself.
        if (digest === undefined) continue;
        const tag = `${arch}-${goal.alias}`;
        if ((await o.target.resolve(tag)) !== digest) {
          // Read only to be written: the bytes under the tag must be the image's own.
          const image = await o.target.getManifest(digest);
          if (!image) continue;
          beforeWrite(o, clock, started);
          await put(o.target, image, tag);
          o.logger.info('alias moved', { repository: o.target.display, alias: tag, version: goal.version, digest, template: goal.template });
          changed.add(tag);
          writes++;
        }
        tags.push({ tag, digest, changed: changed.has(tag) });
      }
      updates.push({
        alias: goal.alias,
        template: goal.template,
        repository: o.target.display,
        version: goal.version,
        digest: source.manifest.digest,
        changed: changed.has(goal.alias),
        ...(tags.length > 0 ? { tags } : {}),
      });
    }
    if (writes === 0 && !stale) return updates;
    const ceiling = Math.min(ROUND_BACKOFF.maxMs, ROUND_BACKOFF.baseMs * 2 ** (round - 1));
    await clock.sleep(Math.round(ceiling * random()), o.deadline.finalSignal);
    checkLimit(o, clock, started);
  }
}

/** Whether following the aliases wrote anything: an alias or one of its `<arch>-` tags. */
export function aliasesMoved(updates: readonly AliasUpdate[]): boolean {
  return updates.some((a) => a.changed || (a.tags ?? []).some((t) => t.changed));
}

/** The versions with records in a target, as the aliases count them. */
export async function publishedVersions(state: StateStore, target: Target): Promise<string[]> {
  return (await state.listVersions(target.id)).filter(isNumericVersion);
}

/**
 * The aliases of `version` with the version each must hold and that version's index; a version without an index
 * (not yet written, or every build retracted) is passed over for the next highest.
 */
export async function resolveAliasGoals(
  target: Target,
  templates: readonly AliasTemplate[],
  version: string,
  versions: readonly string[],
): Promise<{ goals: AliasGoal[]; sources: Map<string, AliasSource> }> {
  const exclude = new Set<string>();
  const sources = new Map<string, AliasSource>();
  for (;;) {
    const goals = aliasGoals(templates, version, versions, exclude);
    const missing = [...new Set(goals.map((g) => g.version))].filter((v) => !sources.has(v));
    if (missing.length === 0) return { goals, sources };
    for (const v of missing) {
      const source = await readSource(target, v);
      // An index with no entries holds nothing worth pointing an alias at (every build retracted).
      if (!source || source.index.manifests.length === 0) exclude.add(v);
      else sources.set(v, source);
    }
  }
}

export interface AliasSource {
  manifest: FetchedManifest;
  index: ImageIndex;
}

/** `<repo>:<tag>` when it holds an index; undefined when there is none or it holds something else. */
export async function readSource(target: Target, tag: string): Promise<AliasSource | undefined> {
  const manifest = await target.getManifest(tag);
  if (!manifest || !INDEX_TYPES.includes(manifest.mediaType)) return undefined;
  try {
    return { manifest, index: parseJson(IndexSchema, manifest.bytes, `${target.display}:${tag}`) };
  } catch {
    return undefined;
  }
}

/** Whether the alias holds the index of a version above the goal's, of the same group: this writer's listing is old. */
async function holdsHigher(o: FollowOptions, goal: AliasGoal, current: string | undefined): Promise<boolean> {
  if (current === undefined) return false;
  const held = await readSource(o.target, goal.alias).catch(() => undefined);
  const version = held ? versionOfIndex(held.index) : undefined;
  const template = o.templates.find((t) => t.text === goal.template);
  return version !== undefined && template !== undefined && aliasFor(template, version) === goal.alias && compareVersions(version, goal.version) > 0;
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
