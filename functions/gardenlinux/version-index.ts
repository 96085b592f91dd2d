/**
 * The version index `<repo>:<version>` rendered from the publisher's records (spec §5). Pure: records and the
 * index currently in the registry go in, the index to write comes out.
 *
 * - Container entries first (no `cname` annotation, os `linux`), one per os/architecture: the newest build's
 *   record wins; container entries of architectures no record covers are kept.
 * - Then the Garden Linux entries, one per build, grouped by flavor-arch, newest build first — whoever wrote them
 *   (consumers take the first match). An entry no record has (another tool wrote it) is placed by its build time
 *   when that is known (from its build's metadata document, found by the caller); when it is not, it keeps its
 *   place ahead of the entries it was ahead of. Entries whose `cname` is not a base name follow, in their order.
 * - Every other entry of the current index is kept, at the end, in its original order.
 * - Left out, wherever they came from: the entries of builds retracted on purpose, and entries whose manifest is
 *   gone from the registry (an operator deleted it): an index must never name a manifest that does not exist.
 */
import { isDeepStrictEqual } from 'node:util';
import { sha256Digest } from '../oci/digest';
import type { Descriptor, ImageIndex } from '../oci/descriptor';
import { MAX_MANIFEST_BYTES, OCI_INDEX } from '../oci/media-types';
import { pythonJson } from '../oci/python-json';
import { InputError } from '../util/errors';
import { containerTag, parseBaseName } from './naming';

export interface IndexRecord {
  /** the build's base name, the `cname` annotation of its Garden Linux entry */
  base: string;
  /** `<flavor>-<arch>`; builds sharing it are ordered newest first */
  flavorArch: string;
  /** ISO 8601; "newest build" compares these, then base names */
  buildTime: string;
  /** the container image entry, for container builds (no annotations, platform from the image config) */
  container?: Descriptor;
  /** the Garden Linux artifact manifest entry */
  gardenlinux?: Descriptor;
}

/** What an index must leave out: builds retracted on purpose, and manifests that no longer exist. */
export interface Exclusions {
  /** retracted builds: their base (the cname of their entry) and the digests their records named */
  retracted?: ReadonlyArray<{ base: string; digests: readonly string[] }>;
  /** digests of manifests found gone from the registry */
  gone?: ReadonlySet<string>;
}

/** What the render takes besides the records and the current index. */
export interface RenderOptions extends Exclusions {
  /** build times (ISO 8601) of entries no record has, by cname, where the caller found them */
  buildTimes?: ReadonlyMap<string, string>;
}

export interface RenderedIndex {
  index: ImageIndex;
  bytes: Buffer;
  digest: string;
}

/** A string that two values share exactly when they are deeply equal (as isDeepStrictEqual has it for JSON). */
function sameValueKey(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => compareStrings(a, b))) : v,
  );
}

function cnameOf(entry: Descriptor): string | undefined {
  return entry.annotations?.cname;
}

/** Container entries replace each other by os/architecture (spec §5); a variant does not make a second slot. */
function platformKey(entry: Descriptor): string {
  const p = entry.platform;
  return `${p?.os ?? ''}/${p?.architecture ?? ''}`;
}

/** A container image's entry: no `cname`, `os: linux` (how consumers tell them from Garden Linux entries). */
export function isContainerEntry(entry: Descriptor): boolean {
  return cnameOf(entry) === undefined && entry.platform?.os === 'linux';
}

/** Positive when `a` is the newer build. Build time first; the base name breaks ties so the order is total. */
export function compareBuilds(a: Pick<IndexRecord, 'base' | 'buildTime'>, b: Pick<IndexRecord, 'base' | 'buildTime'>): number {
  const ta = Date.parse(a.buildTime);
  const tb = Date.parse(b.buildTime);
  if (ta !== tb) return ta - tb;
  return a.base < b.base ? -1 : a.base > b.base ? 1 : 0;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** For each container platform (os/architecture), the record of the newest build: it holds the container slot. */
export function containerWinners(records: readonly IndexRecord[]): Map<string, IndexRecord> {
  const containers = new Map<string, IndexRecord>();
  for (const r of records) {
    if (r.container === undefined) continue;
    const key = platformKey(r.container);
    const held = containers.get(key);
    if (held === undefined || compareBuilds(r, held) > 0) containers.set(key, r);
  }
  return containers;
}

/** A digest or cname the exclusions name. */
function excluder(exclusions: Exclusions): { digest: (d: string) => boolean; base: (b: string) => boolean } {
  const bases = new Set((exclusions.retracted ?? []).map((r) => r.base));
  const digests = new Set([...(exclusions.retracted ?? []).flatMap((r) => r.digests), ...(exclusions.gone ?? [])]);
  return { digest: (d) => digests.has(d), base: (b) => bases.has(b) };
}

/** The records with what the exclusions name taken out: retracted builds, entries naming gone manifests. */
export function effectiveRecords(records: readonly IndexRecord[], exclusions: Exclusions = {}): IndexRecord[] {
  const excluded = excluder(exclusions);
  return records
    .filter((r) => !excluded.base(r.base))
    .map((r) => {
      const { container, gardenlinux, ...rest } = r;
      return {
        ...rest,
        ...(container && !excluded.digest(container.digest) ? { container } : {}),
        ...(gardenlinux && !excluded.digest(gardenlinux.digest) ? { gardenlinux } : {}),
      };
    });
}

/**
 * The container tags of a version: `<arch>-<version>` names the image of the newest build of each platform,
 * the same one the index's container slot holds.
 */
export function containerTags(records: readonly IndexRecord[], version: string, exclusions: Exclusions = {}): Array<{ tag: string; entry: Descriptor; base: string }> {
  const tags: Array<{ tag: string; entry: Descriptor; base: string }> = [];
  for (const r of containerWinners(effectiveRecords(records, exclusions)).values()) {
    const entry = r.container as Descriptor;
    let tag: string;
    try {
      tag = containerTag(parseBaseName(r.base));
    } catch {
      tag = `${entry.platform?.architecture ?? 'unknown'}-${version}`;
    }
    tags.push({ tag, entry, base: r.base });
  }
  return tags.sort((a, b) => compareStrings(a.tag, b.tag));
}

/** The flavor-arch of a cname, or undefined when it is not a base name. */
function flavorArchOf(cname: string): string | undefined {
  try {
    const n = parseBaseName(cname);
    return `${n.flavor}-${n.arch}`;
  } catch {
    return undefined;
  }
}

/**
 * The Garden Linux entries of one flavor-arch, newest first. Entries of unknown build time (another tool's, with
 * no metadata document found) keep their place ahead of the entries they were ahead of in the current index.
 */
function orderGroup(
  timed: ReadonlyArray<{ entry: Descriptor; base: string; buildTime: string }>,
  untimed: readonly Descriptor[],
  currentOrder: ReadonlyMap<Descriptor, number>,
  positionOf: (entry: Descriptor) => number | undefined,
): Descriptor[] {
  const out = [...timed].sort((a, b) => compareBuilds(b, a)).map((t) => t.entry);
  for (const f of untimed) {
    const at = currentOrder.get(f) ?? Infinity;
    // Ahead of the first entry (in the new order) that it was ahead of before.
    const i = out.findIndex((e) => (positionOf(e) ?? -Infinity) > at);
    out.splice(i === -1 ? out.length : i, 0, f);
  }
  return out;
}

export function renderVersionIndex(allRecords: readonly IndexRecord[], current: ImageIndex | undefined, options: RenderOptions = {}): RenderedIndex | undefined {
  if (allRecords.length === 0 && current === undefined) return undefined;
  const excluded = excluder(options);
  const records = effectiveRecords(allRecords, options);

  const containers = containerWinners(records);
  const recorded = new Set(records.filter((r) => r.gardenlinux !== undefined).map((r) => r.base));

  const foreignContainers: Descriptor[] = [];
  const foreignGardenlinux: Descriptor[] = [];
  const foreignOther: Descriptor[] = [];
  // An exact duplicate is the same entry. By a key, not by comparing each entry with every other: an index of a
  // few hundred builds is rendered in every round of every writer.
  const seen = new Set<string>();
  for (const entry of current?.manifests ?? []) {
    const key = sameValueKey(entry);
    if (seen.has(key)) continue;
    seen.add(key);
    const cname = cnameOf(entry);
    if (excluded.digest(entry.digest) || (cname !== undefined && excluded.base(cname))) continue;
    if (cname !== undefined) {
      if (!recorded.has(cname)) foreignGardenlinux.push(entry);
    } else if (isContainerEntry(entry)) {
      if (!containers.has(platformKey(entry))) foreignContainers.push(entry);
    } else {
      foreignOther.push(entry);
    }
  }

  const containerSection = [...[...containers.values()].map((r) => r.container as Descriptor), ...foreignContainers].sort(
    (a, b) =>
      compareStrings(a.platform?.architecture ?? '', b.platform?.architecture ?? '') ||
      compareStrings(a.platform?.variant ?? '', b.platform?.variant ?? ''),
  );
  // Where each Garden Linux entry stood in the current index, by cname: the place of entries of unknown time.
  const position = new Map<string, number>();
  (current?.manifests ?? []).forEach((m, i) => {
    const c = cnameOf(m);
    if (c !== undefined && !position.has(c)) position.set(c, i);
  });
  const positionOf = (e: Descriptor): number | undefined => position.get(cnameOf(e) ?? '');
  const groups = new Map<string, { timed: Array<{ entry: Descriptor; base: string; buildTime: string }>; untimed: Descriptor[] }>();
  const groupOf = (key: string) => {
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { timed: [], untimed: [] }));
    return g;
  };
  for (const r of records) if (r.gardenlinux) groupOf(r.flavorArch).timed.push({ entry: r.gardenlinux, base: r.base, buildTime: r.buildTime });
  const unnamed: Descriptor[] = [];
  for (const entry of foreignGardenlinux) {
    const cname = cnameOf(entry) as string;
    const key = flavorArchOf(cname);
    if (key === undefined) unnamed.push(entry);
    else {
      const time = options.buildTimes?.get(cname);
      if (time !== undefined && !Number.isNaN(Date.parse(time))) groupOf(key).timed.push({ entry, base: cname, buildTime: time });
      else groupOf(key).untimed.push(entry);
    }
  }
  const currentOrder = new Map((current?.manifests ?? []).map((m, i) => [m, i] as const));
  const gardenlinuxSection = [...groups.keys()]
    .sort(compareStrings)
    .flatMap((key) => {
      const g = groups.get(key) as { timed: Array<{ entry: Descriptor; base: string; buildTime: string }>; untimed: Descriptor[] };
      return orderGroup(g.timed, g.untimed, currentOrder, positionOf);
    });

  const { schemaVersion: _v, mediaType: _m, manifests: _e, ...otherFields } = current ?? { schemaVersion: 2, manifests: [] };
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [...containerSection, ...gardenlinuxSection, ...unnamed, ...foreignOther],
    ...otherFields,
  };
  // Python's json.dumps form, like the artifact manifests: gl-oci's digest of what it parsed is the registry's.
  const bytes = Buffer.from(pythonJson(index));
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new InputError(`the version index would be ${bytes.length} bytes, above the 4 MiB registries accept`);
  }
  return { index, bytes, digest: sha256Digest(bytes) };
}

/**
 * Whether two indexes agree on everything that concerns one build: the Garden Linux entries of its flavor-arch,
 * in order, and the container slot of its platform. (A writer whose build is placed right in an index someone
 * else wrote has nothing left to do for its own record.)
 */
export function samePlace(a: ImageIndex | undefined, b: ImageIndex | undefined, record: IndexRecord): boolean {
  const group = (index: ImageIndex | undefined): Descriptor[] =>
    (index?.manifests ?? []).filter((m) => {
      const cname = cnameOf(m);
      if (cname === undefined) return record.container !== undefined && isContainerEntry(m) && platformKey(m) === platformKey(record.container);
      try {
        const n = parseBaseName(cname);
        return `${n.flavor}-${n.arch}` === record.flavorArch;
      } catch {
        return cname === record.base;
      }
    });
  return isDeepStrictEqual(group(a), group(b));
}

/** True when writing `rendered` over `current` would change nothing a reader can see. */
export function sameIndex(rendered: RenderedIndex, current: { digest: string } | undefined): boolean {
  // The bytes, not only the content: an index an older release wrote in compact JSON is written again once in
  // the json.dumps form, so gl-oci's digest of it is the registry's.
  return current !== undefined && rendered.digest === current.digest;
}
