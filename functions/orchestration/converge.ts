/**
 * Brings the version index `<repo>:<version>` in line with the records of every build published to it.
 *
 * Registries offer no compare-and-swap on tags, so concurrent publishers would lose each other's entries with a
 * plain read-modify-write. Instead the index is a function of durable state: each publisher writes its record
 * first, then lists all records of the version, renders the index from them (keeping entries other tools
 * wrote), puts it if it differs, and lists again until the listing did not change.
 *
 * Why it converges: take the last index put of all. Its writer listed after that put and saw the set it had
 * rendered. A record written before that listing is in the set; a record written after it belongs to a
 * publisher that reads the index after that put, finds its entry missing and puts again, contradicting "last".
 */
import { renderVersionIndex, sameIndex, type IndexRecord } from '../gardenlinux/version-index';
import { IndexSchema, parseJson, type ImageIndex } from '../oci/descriptor';
import { INDEX_TYPES, OCI_INDEX } from '../oci/media-types';
import type { ObjectInfo } from '../storage/object-store';
import type { StateStore } from '../storage/state-store';
import type { Target } from '../target/target';
import type { Deadline } from '../util/deadline';
import { InputError, PublishError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';

export interface IndexUpdate {
  repository: string;
  tag: string;
  /** the index digest now at the tag, if there is an index */
  digest?: string;
  /** whether this publisher wrote the index (false: it was already right) */
  changed: boolean;
  /** Garden Linux and container entries in it */
  entries: number;
  rounds: number;
}

const MAX_ROUNDS = 25;
/** Time a round (list, read, render, put) may need: a round starts only when this much is left. */
export const ROUND_MS = 10_000;

export async function readVersionIndex(target: Target, version: string): Promise<{ index?: ImageIndex; digest?: string; size?: number }> {
  const current = await target.getManifest(version);
  if (current === undefined) return {};
  const what = `${target.display}:${version}`;
  // Never replace what could not be read as an index (spec §5).
  if (!INDEX_TYPES.includes(current.mediaType)) {
    throw new InputError(`${what} holds a ${current.mediaType}, not an image index; refusing to overwrite it`);
  }
  return { index: parseJson(IndexSchema, current.bytes, what), digest: current.digest, size: current.bytes.length };
}

export async function convergeVersionIndex(
  state: StateStore,
  target: Target,
  version: string,
  logger: Logger,
  deadline: Deadline,
): Promise<{ update: IndexUpdate; records: IndexRecord[] }> {
  const cache = new Map<string, IndexRecord | undefined>();
  const read = async (o: ObjectInfo): Promise<IndexRecord | undefined> => {
    const id = `${o.key} ${o.etag}`;
    if (!cache.has(id)) cache.set(id, await state.readRecord(o));
    return cache.get(id);
  };
  let previous: string | undefined;
  let changed = false;
  let digest: string | undefined;
  let entries = 0;
  let records: IndexRecord[] = [];
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    // The only place this loop may stop early: before a round, never between its read and its write.
    deadline.ensure(`round ${round} of the version index ${target.display}:${version}`, ROUND_MS);
    const listing = await state.listRecords(target.id, version);
    const signature = listing.map((o) => `${o.key} ${o.etag}`).sort().join('\n');
    if (signature === previous) {
      return { update: { repository: target.display, tag: version, ...(digest ? { digest } : {}), changed, entries, rounds: round - 1 }, records };
    }
    previous = signature;
    records = (await mapLimit(listing, 16, read)).filter((r): r is IndexRecord => r !== undefined);
    const current = await readVersionIndex(target, version);
    const rendered = renderVersionIndex(records, current.index);
    digest = current.digest;
    entries = current.index?.manifests.length ?? 0;
    if (rendered !== undefined && !sameIndex(rendered, current.index)) {
      digest = await target.putManifest(rendered.bytes, OCI_INDEX, version);
      entries = rendered.index.manifests.length;
      changed = true;
      logger.info('version index written', {
        repository: target.display,
        tag: version,
        digest,
        entries,
        records: records.length,
        round,
      });
    }
  }
  throw new PublishError('conflict', `${target.display}:${version}: the records kept changing for ${MAX_ROUNDS} rounds`, { retryable: true });
}
