/**
 * Retracting a build on purpose (a bad build an operator wants out of its version): its records go, a
 * retraction takes their place, and the version index of every repository it was in is converged again without
 * it. Its entries leave the index whoever wrote them (matched by cname, and by the digests its records named),
 * and its image leaves the container slot and the `<arch>-<version>` tag, which go to the newest remaining build
 * of that platform.
 *
 * Nothing is deleted from the registry: the build's artifact manifest, its blobs and its
 * `<version>-<base>-<arch>` tag stay (delete them in the registry if they must go); a `<arch>-<version>` tag
 * that no other build can take over keeps naming the retracted image. Events for the build are skipped from
 * now on; publishing it by hand restores it.
 */
import type { AliasTemplate } from '../gardenlinux/release-aliases';
import { followAliases, type AliasUpdate } from './follow-aliases';
import { parseBaseName } from '../gardenlinux/naming';
import type { StateStore } from '../storage/state-store';
import type { Target } from '../target/target';
import type { Clock } from '../util/clock';
import type { Deadline } from '../util/deadline';
import { InputError } from '../util/errors';
import type { Logger } from '../util/log';
import { convergeVersion, readVersionIndex, type IndexUpdate } from './converge';

export interface RetractResult {
  base: string;
  version: string;
  /** the repositories whose records named the build */
  repositories: string[];
  indexes: IndexUpdate[];
  releaseAliases?: AliasUpdate[];
}

/** `targets`: the main repository first, then the container sub-repositories. */
export async function retractBuild(
  state: StateStore,
  targets: readonly Target[],
  base: string,
  logger: Logger,
  deadline: Deadline,
  options: { clock?: Clock; random?: () => number; buildTimeOf?: (cname: string) => Promise<string | undefined>; aliasTemplates?: readonly AliasTemplate[] } = {},
): Promise<RetractResult> {
  const { version } = parseBaseName(base);
  const main = targets[0] as Target;
  const found = await Promise.all(
    targets.map(async (target) => ({ target, record: await state.getRecord(target.id, version, base), retraction: await state.getRetraction(target.id, version, base) })),
  );
  const inIndex = (await readVersionIndex(main, version))?.index.manifests.some((m) => m.annotations?.cname === base) ?? false;
  // A retraction that stopped half way (killed, timed out) left its marks: the run again finishes it.
  const begun = found.some((f) => f.retraction !== undefined);
  if (!found.some((f) => f.record !== undefined) && !inIndex && !begun) {
    throw new InputError(`no record of ${base} and no entry of ${main.display}:${version} names it: there is nothing to retract`);
  }
  const { aliasTemplates = [], ...converge } = options;
  const retractedAt = new Date().toISOString();
  const result: RetractResult = { base, version, repositories: [], indexes: [] };
  for (const { target, record, retraction } of found) {
    if (record === undefined && retraction === undefined && target !== main) continue;
    const digests = [record?.gardenlinux?.digest, record?.container?.digest].filter((d): d is string => d !== undefined);
    // The retraction before the record goes: a writer listing in between sees one or both, never neither. One
    // written by a run that stopped half way stays as it is (its digests were read from the record, now gone).
    if (retraction === undefined || record !== undefined) await state.putRetraction(target.id, version, { base, retractedAt, digests });
    if (record) {
      await state.deleteRecord(target.id, version, base);
      result.repositories.push(target.display);
    }
    logger.info('build retracted', { base, repository: target.display, version, digests });
    result.indexes.push((await convergeVersion({ state, target, version, logger, deadline, ...converge })).update);
    // The version's index changed: the aliases that hold it follow.
    const aliases = await followAliases({
      state,
      target,
      version,
      templates: aliasTemplates,
      logger,
      deadline,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.random ? { random: options.random } : {}),
    });
    if (aliases.length > 0) (result.releaseAliases ??= []).push(...aliases);
  }
  return result;
}
