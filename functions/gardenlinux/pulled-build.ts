/**
 * A build read back out of the registry (`gl-oci-publish pull`): which layers of its artifact manifest are files of
 * the upload, what to do with a file that is already in the output directory, and the metadata document made from
 * what the registry holds. Pure; the requests and the files are in orchestration/pull-build.ts.
 *
 * The artifact manifest has one layer per uploaded file, titled with the file's name, and for a PXE bundle also
 * the bundle's members, titled with their bare names (`vmlinuz`, `initrd`, spec §3). The files of a build are
 * named `<base>…` (spec §2); the members are not, so in a manifest with a bundle layer, a layer whose title does
 * not start with the base name is a member: it is in the bundle, and not written on its own.
 *
 * The metadata document is not in the registry (it is no layer). It is made from the manifest's annotations and
 * the files: name, architecture, version and commit from the base name; modifiers from `feature_set` (the
 * `.release` file's GARDENLINUX_FEATURES, else the original's modifiers); platform and the long commit from the
 * `.release` file; uefi, secure boot and TPM from the `.requirements` file; md5 and sha256 from the bytes. What the
 * registry does not hold is null: the build time, the buckets, the publishing group, logs and test results.
 */
import YAML from 'yaml';
import { isDigest } from '../oci/digest';
import { ImageManifestSchema, parseJson, type Descriptor, type ImageIndex } from '../oci/descriptor';
import { IMAGE_MANIFEST_TYPES } from '../oci/media-types';
import { InputError } from '../util/errors';
import { TITLE_ANNOTATION } from './artifact-manifest';
import { PXE_BUNDLE_SUFFIX } from './media-types';
import { metadataKey, objectsPrefix, type BaseName } from './naming';
import { parseReleaseFile } from './release-file';

/** A file of the upload, as its layer describes it. */
export interface PulledFile {
  name: string;
  digest: string;
  size: number;
  mediaType: string;
}

export interface PullPlan {
  name: BaseName;
  /** the manifest's `feature_set` annotation */
  featureSet?: string;
  /** the files of the upload, by name */
  files: PulledFile[];
  /** layers unpacked from a PXE bundle: in the manifest, and in the bundle, but no files of the upload */
  bundleMembers: string[];
}

/**
 * The version index entry of a build: the first (the one consumers take) whose `cname` annotation is the base name,
 * for its architecture, naming an image manifest. Container entries carry no cname and never match.
 */
export function findBuildEntry(index: ImageIndex, name: BaseName): Descriptor | undefined {
  return index.manifests.find(
    (e) =>
      e.annotations?.cname === name.base &&
      (e.annotations.architecture === undefined || e.annotations.architecture === name.arch) &&
      IMAGE_MANIFEST_TYPES.includes(e.mediaType),
  );
}

/** A layer title that can be a file name in `objects/<base>/`: one path segment, nothing the file system treats otherwise. */
function plainFileName(title: string): boolean {
  return title !== '' && title !== '.' && title !== '..' && !/[/\0]/.test(title) && Buffer.byteLength(title) <= 255;
}

/**
 * What to write for build `name` from its artifact manifest's bytes: every layer that is a file of the upload,
 * after checking that the manifest is this build's (its cname and architecture) and that every layer has a title
 * that is a plain file name, once, and a sha256 digest (the digest blobs are checked against).
 */
export function planPull(bytes: Buffer, name: BaseName, what: string): PullPlan {
  const m = parseJson(ImageManifestSchema, bytes, what);
  if (m.mediaType !== undefined && !IMAGE_MANIFEST_TYPES.includes(m.mediaType)) {
    throw new InputError(`${what} is a ${m.mediaType}, not an image manifest`);
  }
  const cname = m.annotations?.cname ?? m.config.annotations?.cname;
  if (cname !== name.base) {
    throw new InputError(`${what} is ${cname === undefined ? 'no Garden Linux artifact manifest (it has no cname annotation)' : `the artifact manifest of ${cname}`}, not of ${name.base}`);
  }
  const arch = m.annotations?.architecture ?? m.config.annotations?.architecture;
  if (arch !== undefined && arch !== name.arch) throw new InputError(`${what} is for ${arch}, but ${name.base} is ${name.arch}`);

  const titles = new Set<string>();
  const layers = m.layers.map((l, i) => {
    const title = l.annotations?.[TITLE_ANNOTATION];
    if (title === undefined) throw new InputError(`${what}: layer ${i} (${l.digest}) has no title (${TITLE_ANNOTATION}), so it names no file`);
    if (!plainFileName(title)) throw new InputError(`${what}: layer ${i} is titled ${JSON.stringify(title)}, which is not a plain file name`);
    if (titles.has(title)) throw new InputError(`${what}: two layers are titled "${title}"`);
    if (!isDigest(l.digest)) throw new InputError(`${what}: the layer "${title}" has the digest ${l.digest}, not a sha256 digest`);
    titles.add(title);
    return { name: title, digest: l.digest, size: l.size, mediaType: l.mediaType };
  });
  const hasBundle = layers.some((l) => l.name.endsWith(PXE_BUNDLE_SUFFIX));
  const isMember = (l: PulledFile): boolean => hasBundle && !l.name.startsWith(name.base);
  const files = layers.filter((l) => !isMember(l)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (files.length === 0) throw new InputError(`${what} names no file of ${name.base}`);
  return {
    name,
    ...(m.annotations?.feature_set !== undefined ? { featureSet: m.annotations.feature_set } : {}),
    files,
    bundleMembers: layers.filter(isMember).map((l) => l.name).sort(),
  };
}

/** What is at a file's place in the output directory. */
export type Existing =
  | { kind: 'absent' }
  /** a regular file; digest (and md5) only when its size is the expected one (otherwise it differs anyway) */
  | { kind: 'file'; size: number; digest?: string; md5?: string }
  /** a directory, a symbolic link, a device: never written over */
  | { kind: 'other'; what: string };

/**
 * What happens to a file's place: `write` (nothing there), `keep` (the same bytes are there: not downloaded again),
 * `replace` (other bytes are there and `force` was given), `conflict` (other bytes without `force`, or something
 * that is not a regular file: the pull refuses before it writes anything).
 */
export type OutputAction = 'write' | 'keep' | 'replace' | 'conflict';

export function outputAction(existing: Existing, expected: { digest: string; size: number }, force: boolean): OutputAction {
  switch (existing.kind) {
    case 'absent':
      return 'write';
    case 'other':
      return 'conflict';
    case 'file':
      if (existing.size === expected.size && existing.digest === expected.digest) return 'keep';
      return force ? 'replace' : 'conflict';
  }
}

/** What the files gave, for the metadata document. */
export interface PulledFacts {
  /** md5 (hex) of each file, by name */
  md5: ReadonlyMap<string, string>;
  /** the `.release` file's text, when the build has one */
  release?: string;
  /** the `.requirements` file's text, when the build has one */
  requirements?: string;
  /** where the manifest came from, for the document's comment: `<repository>@<digest>` */
  source: string;
}

function flag(value: string | undefined): boolean | null {
  return value === 'true' ? true : value === 'false' ? false : null;
}

/**
 * The metadata document `meta/singles/<base>` of a pulled build, shaped as python-gardenlinux-lib writes it (keys
 * sorted, block style); parseMetadata reads it as the same build as far as the registry carries it (module comment).
 * The same plan and facts always give the same bytes.
 */
export function renderMetadata(plan: PullPlan, facts: PulledFacts): string {
  const { name } = plan;
  const release = facts.release === undefined ? new Map<string, string>() : parseReleaseFile(facts.release);
  const requirements = facts.requirements === undefined ? new Map<string, string>() : parseReleaseFile(facts.requirements);
  const featureSet = plan.featureSet ?? release.get('GARDENLINUX_FEATURES') ?? '';
  const longCommit = release.get('GARDENLINUX_COMMIT_ID_LONG');
  const commit = longCommit !== undefined && /^\S{8,128}$/.test(longCommit) && (name.commit === 'local' || longCommit.startsWith(name.commit)) ? longCommit : null;
  // Garden Linux names a flavor after its platform first (`aws-gardener_prod`, `metal_pxe`): the fallback when the
  // build has no `.release` file saying it.
  const platform = release.get('GARDENLINUX_PLATFORM') || (name.flavor.split(/[-_]/)[0] as string);
  const doc = {
    architecture: name.arch,
    build_committish: commit,
    build_timestamp: null,
    gardenlinux_epoch: Number(name.version.split('.')[0]),
    logs: null,
    modifiers: featureSet.split(',').map((s) => s.trim()).filter((s) => s !== ''),
    paths: plan.files.map((f) => ({
      md5sum: facts.md5.get(f.name) ?? null,
      name: f.name,
      s3_bucket_name: null,
      s3_key: `${objectsPrefix(name.base)}${f.name}`,
      sha256sum: f.digest.slice('sha256:'.length),
      suffix: f.name.startsWith(name.base) ? f.name.slice(name.base.length) : null,
    })),
    platform,
    require_uefi: flag(requirements.get('uefi')),
    s3_bucket: null,
    s3_key: metadataKey(name.base),
    secureboot: flag(requirements.get('secureboot')),
    test_result: null,
    tpm2: flag(requirements.get('tpm2')),
    version: name.version,
  };
  // YAML 1.1, as the producers write and parseMetadata reads: strings such as '1877.10', an all-digit md5 or `on`
  // are quoted, so that no reader takes them for numbers or booleans.
  const body = YAML.stringify(doc, { schema: 'yaml-1.1', sortMapEntries: true, indentSeq: false, lineWidth: 0, singleQuote: true });
  return (
    `# The metadata document of ${name.base}, made by gl-oci-publish pull from ${facts.source}.\n` +
    '# Not the uploaded document: what the registry does not hold (the build time, the buckets, the publishing group)\n' +
    '# is null or left out.\n' +
    body
  );
}
