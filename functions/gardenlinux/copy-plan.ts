/**
 * What copying a release means, and in which order (pure: no I/O). A consumer of version V needs, in the main
 * repository and in each container sub-repository that has V:
 * - the version index `<repo>:V` and every manifest it reaches (artifact manifests, container images, and the
 *   manifests of an image index among them), with every blob they name;
 * - the tags consumers use for them: each artifact manifest's `<V>-<cname>-<arch>`, the container images'
 *   `<arch>-<V>`;
 * - the cosign signature image `sha256-<hex>.sig` of any of these manifests (the index included), with its blobs;
 * - when asked, the release aliases that hold V's index at the source, and their `<arch>-<alias>` tags that hold
 *   V's images.
 *
 * The plan orders them children first, so that a reader of the destination never meets a reference to something
 * missing: blobs; manifests by digest, those an image index names before the index; signatures; the version indexes
 * (sub-repositories before the main repository, whose index says the release is there); the tags; the aliases.
 * Manifests are copied as the bytes fetched, with their media type: digests never change.
 */
import { signatureTag } from '../signing/cosign-format';
import { DescriptorSchema, IndexSchema, parseJson, type Descriptor, type ImageIndex } from '../oci/descriptor';
import type { FetchedManifest } from '../target/target';
import { InputError } from '../util/errors';
import { ARCHITECTURES, artifactTagOf } from './naming';
import { aliasFor, type AliasTemplate } from './release-aliases';
import { isContainerEntry } from './version-index';

/** What a manifest names: manifests (an index's entries) and blobs (an image manifest's config and layers). */
export interface References {
  manifests: Descriptor[];
  blobs: Descriptor[];
}

/**
 * The manifests and blobs a manifest names, from its JSON: `manifests` of an index, `config` and `layers` of an image
 * manifest (whatever its media type: artifact manifests and signature images are image manifests too).
 */
export function referencesOf(manifest: Pick<FetchedManifest, 'bytes'>, what: string): References {
  let json: unknown;
  try {
    json = JSON.parse(manifest.bytes.toString('utf8'));
  } catch {
    throw new InputError(`${what} is not a JSON manifest`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new InputError(`${what} is not a JSON manifest`);
  const m = json as { manifests?: unknown; config?: unknown; layers?: unknown };
  const descriptor = (value: unknown, where: string): Descriptor => {
    const parsed = DescriptorSchema.safeParse(value);
    if (!parsed.success) throw new InputError(`${what}: ${where} is not a descriptor (mediaType, digest, size)`);
    return parsed.data;
  };
  const list = (value: unknown, where: string): Descriptor[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) throw new InputError(`${what}: ${where} is not a list`);
    return value.map((v, i) => descriptor(v, `${where}[${i}]`));
  };
  return {
    manifests: list(m.manifests, 'manifests'),
    blobs: [...(m.config === undefined ? [] : [descriptor(m.config, 'config')]), ...list(m.layers, 'layers')],
  };
}

export type TagKind = 'artifact' | 'container' | 'alias' | 'arch-alias';

/** A tag a consumer may use for something of the version, to be looked up at the source. */
export interface WantedTag {
  tag: string;
  kind: TagKind;
  /** for `<arch>-<version>` and `<arch>-<alias>` */
  arch?: string;
}

/**
 * The tags to look for at the source for one repository's index `index` of `version`: each Garden Linux entry's
 * artifact tag, `<arch>-<version>` for each architecture the index has an image of, and with `aliases` (the
 * ALIAS_TAGS templates; empty: none) each alias of the version and its `<arch>-<alias>` for those architectures.
 */
export function wantedTags(version: string, index: ImageIndex, aliases: readonly AliasTemplate[]): WantedTag[] {
  const out: WantedTag[] = [];
  const seen = new Set<string>();
  const add = (t: WantedTag): void => {
    if (seen.has(t.tag)) return;
    seen.add(t.tag);
    out.push(t);
  };
  for (const entry of index.manifests) {
    const cname = entry.annotations?.cname;
    if (cname !== undefined) add({ tag: artifactTagOf(version, cname, entry.platform?.architecture), kind: 'artifact' });
  }
  const arches = ARCHITECTURES.filter((arch) => index.manifests.some((m) => isContainerEntry(m) && m.platform?.architecture === arch));
  for (const arch of arches) add({ tag: `${arch}-${version}`, kind: 'container', arch });
  for (const template of aliases) {
    const alias = aliasFor(template, version);
    // An alias that is the version itself would be the index's own tag.
    if (alias === undefined || alias === version) continue;
    add({ tag: alias, kind: 'alias' });
    for (const arch of arches) add({ tag: `${arch}-${alias}`, kind: 'arch-alias', arch });
  }
  return out;
}

/** One repository of the release as read at the source. */
export interface RepositorySnapshot {
  /** '' for the main repository, else the sub-repository's path */
  repository: string;
  version: string;
  /** `<repo>:<version>` */
  index: FetchedManifest;
  /** every manifest the index reaches, by digest (the index itself not among them) */
  manifests: ReadonlyMap<string, FetchedManifest>;
  /** the signature image of a manifest (or of the index), by the signed digest */
  signatures: ReadonlyMap<string, FetchedManifest>;
  /** the wanted tags (wantedTags) with what each names at the source: undefined when it is not there */
  tags: ReadonlyArray<{ wanted: WantedTag; digest: string | undefined }>;
}

export interface BlobStep {
  repository: string;
  descriptor: Descriptor;
}

/** A manifest put under `reference`: its digest (by digest), or a tag. */
export interface ManifestStep {
  repository: string;
  reference: string;
  manifest: FetchedManifest;
  /** for tags: which kind (the version index and signature tags have their own phases) */
  kind?: TagKind;
}

/** A tag at the source that is not copied, and why. */
export interface LeftTag {
  repository: string;
  tag: string;
  kind: TagKind;
  reason: string;
}

export interface CopyPlan {
  /** each (repository, digest) once */
  blobs: BlobStep[];
  /** manifests by digest, in waves: a wave names only manifests of earlier waves */
  manifests: ManifestStep[][];
  signatures: ManifestStep[];
  /** `<repo>:<version>`, sub-repositories first, the main repository last */
  indexes: ManifestStep[];
  /** artifact and container tags */
  tags: ManifestStep[];
  /** `<arch>-<alias>` first, then the aliases */
  aliases: ManifestStep[];
  /** wanted tags that are left out: missing at the source, or naming something that is not this version's */
  left: LeftTag[];
  /** the bytes of every blob */
  bytes: number;
}

/** The phases of a plan in the order they run, for callers that walk it (and tests that read the order). */
export function phases(plan: CopyPlan): Array<{ phase: 'blobs' | 'manifests' | 'signatures' | 'indexes' | 'tags' | 'aliases'; steps: ReadonlyArray<BlobStep | ManifestStep> }> {
  return [
    { phase: 'blobs', steps: plan.blobs },
    ...plan.manifests.map((wave) => ({ phase: 'manifests' as const, steps: wave })),
    { phase: 'signatures', steps: plan.signatures },
    { phase: 'indexes', steps: plan.indexes },
    { phase: 'tags', steps: plan.tags },
    { phase: 'aliases', steps: plan.aliases },
  ];
}

function short(digest: string): string {
  return digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1…');
}

/** Orders the copy of the repositories read at the source. */
export function planCopy(snapshots: readonly RepositorySnapshot[]): CopyPlan {
  const plan: CopyPlan = { blobs: [], manifests: [], signatures: [], indexes: [], tags: [], aliases: [], left: [], bytes: 0 };
  // The main repository's index last: once it is there, so is everything else.
  const ordered = [...snapshots].sort((a, b) => Number(a.repository === '') - Number(b.repository === ''));
  for (const s of ordered) {
    const where = (what: string): string => `${s.repository === '' ? '' : `${s.repository}:`}${what}`;
    const blobSeen = new Set<string>();
    const addBlobs = (m: FetchedManifest, what: string): void => {
      for (const b of referencesOf(m, what).blobs) {
        if (blobSeen.has(b.digest)) continue;
        blobSeen.add(b.digest);
        plan.blobs.push({ repository: s.repository, descriptor: b });
        plan.bytes += b.size;
      }
    };

    // Heights: an image manifest is 0, an index one more than the highest manifest it names.
    const heights = new Map<string, number>();
    const height = (digest: string, path: readonly string[]): number => {
      const known = heights.get(digest);
      if (known !== undefined) return known;
      if (path.includes(digest)) throw new InputError(`${where(s.version)}: ${short(digest)} names itself through its entries`);
      const m = s.manifests.get(digest);
      if (!m) throw new InputError(`${where(s.version)} reaches ${short(digest)}, which was not read`);
      const children = referencesOf(m, short(digest)).manifests;
      const h = children.length === 0 ? 0 : 1 + Math.max(...children.map((c) => height(c.digest, [...path, digest])));
      heights.set(digest, h);
      return h;
    };
    for (const [digest, m] of s.manifests) {
      const h = height(digest, []);
      while (plan.manifests.length <= h) plan.manifests.push([]);
      (plan.manifests[h] as ManifestStep[]).push({ repository: s.repository, reference: digest, manifest: m });
      addBlobs(m, where(short(digest)));
    }
    for (const [signed, sig] of s.signatures) {
      addBlobs(sig, where(signatureTag(signed)));
      plan.signatures.push({ repository: s.repository, reference: signatureTag(signed), manifest: sig });
    }
    plan.indexes.push({ repository: s.repository, reference: s.version, manifest: s.index });

    const index = parseJson(IndexSchema, s.index.bytes, where(s.version));
    const archAliases: ManifestStep[] = [];
    const aliases: ManifestStep[] = [];
    for (const { wanted, digest } of s.tags) {
      const leave = (reason: string): void => {
        plan.left.push({ repository: s.repository, tag: wanted.tag, kind: wanted.kind, reason });
      };
      if (digest === undefined) {
        // Aliases are optional: only the ones holding this version are copied.
        if (wanted.kind === 'artifact' || wanted.kind === 'container') leave('not at the source');
        continue;
      }
      const manifest = digest === s.index.digest ? s.index : s.manifests.get(digest);
      const step = (m: FetchedManifest): ManifestStep => ({ repository: s.repository, reference: wanted.tag, manifest: m, kind: wanted.kind });
      switch (wanted.kind) {
        case 'artifact':
        case 'container':
          if (manifest && digest !== s.index.digest) plan.tags.push(step(manifest));
          else leave(`names ${short(digest)}, which ${s.version} does not name`);
          break;
        case 'alias':
          if (digest === s.index.digest) aliases.push(step(s.index));
          else leave(`holds ${short(digest)}, not the index of ${s.version}`);
          break;
        case 'arch-alias': {
          const image = index.manifests.find((m) => isContainerEntry(m) && m.platform?.architecture === wanted.arch && m.digest === digest);
          if (image && manifest) archAliases.push(step(manifest));
          else leave(`names ${short(digest)}, not an image of ${s.version}`);
          break;
        }
      }
    }
    // `<arch>-<alias>` before the alias: whoever finds the alias finds its images' tags.
    plan.aliases.push(...archAliases, ...aliases);
  }
  return plan;
}
