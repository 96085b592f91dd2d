/**
 * The metadata document `meta/singles/<base>` (spec §2.1). PyYAML writes it, so it is read with the YAML 1.1
 * schema (timestamps become dates). Older shapes are accepted: `gardenlinux_epoch` as a string, `modifiers` as a
 * comma string, `suffix` without its dot, `build_timestamp` as an ISO string; and the bash uploader's, which names
 * each file with its directory (`<base>/<file>`) and writes `build_timestamp` with a comma and nanoseconds. A
 * document the cloud publisher rewrote (it adds `published_image_metadata` and `glci_version`) still describes its
 * build and is read like the original. Group documents, which other writers put under the same prefix, are
 * recognised and reported as not being builds.
 */
import YAML from 'yaml';
import * as z from 'zod';
import { InputError } from '../util/errors';
import { ARCHITECTURES, objectsPrefix, parseBaseName, type BaseName } from './naming';

export interface BuildFile {
  /** the file name, also the layer title */
  name: string;
  /** the S3 key, always `objects/<base>/<name>` */
  key: string;
  /** the md5 from the metadata: it is correct upstream (unlike `sha256sum`) and lets the bytes be checked */
  md5?: string;
}

export interface BuildMetadata {
  name: BaseName;
  platform: string;
  modifiers: string[];
  /** build_timestamp; upstream it is roughly the upload time, which is what "newest build" needs */
  buildTime?: Date;
  commitLong?: string;
  /** builds sharing it form one multi-arch artifact (ADR 0037) */
  publishingGroup?: string;
  files: BuildFile[];
}

export type MetadataDocument = { kind: 'build'; build: BuildMetadata } | { kind: 'not-a-build'; reason: string };

/**
 * Real documents are a few KB. The bound is set so that a build whose artifact manifest would exceed 4 MiB
 * (about 9,000 files) is still read, and refused for that reason rather than for its metadata's size.
 */
export const MAX_METADATA_BYTES = 16 * 1024 * 1024;

const nullish = <T extends z.ZodType>(schema: T) => schema.nullish();

const PathEntry = z.looseObject({
  name: z.string().min(1),
  s3_key: z.string().min(1),
  s3_bucket_name: nullish(z.string()),
  suffix: nullish(z.string()),
  md5sum: nullish(z.string().regex(/^[0-9a-fA-F]{32}$/, 'expected 32 hex characters')),
  // sha256sum is the hash of the empty string in every document (an upstream bug): never read.
});

const BuildDocument = z.looseObject({
  architecture: z.enum(ARCHITECTURES),
  build_committish: nullish(z.string()),
  build_timestamp: nullish(z.union([z.date(), z.string()])),
  gardenlinux_epoch: nullish(z.union([z.number().int(), z.string()])),
  modifiers: nullish(z.union([z.array(z.string()), z.string()])),
  paths: z.array(PathEntry).min(1, 'a build lists at least one file'),
  platform: z.string().min(1),
  publishing_group: nullish(z.string()),
  version: z.union([z.string().min(1), z.number()]),
});

function formatIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 8)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(document)'}: ${i.message}`)
    .join('; ');
}

/** The source text of a scalar that a YAML 1.1 reader took for a number, or undefined. */
function sourceText(node: unknown): string | undefined {
  return YAML.isScalar(node) && typeof node.value === 'number' && typeof node.source === 'string' ? node.source : undefined;
}

/**
 * A build_timestamp written as a string: ISO with `T` or a space, usually without a zone (read as UTC, like the
 * YAML timestamp), and the bash uploader's `date --iso-8601=ns` with a comma and nanoseconds
 * (`2026-12-02T02:01:07,000000000+00:00`, truncated to milliseconds). Undefined when it is none of these.
 */
export function parseTimestamp(text: string): Date | undefined {
  const m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?\s*([zZ]|[+-]\d{2}:?\d{2})?$/.exec(text.trim());
  if (!m) return undefined;
  const fraction = m[3] ? `.${m[3].slice(0, 3).padEnd(3, '0')}` : '';
  const zone = m[4] === undefined ? 'Z' : m[4].toUpperCase() === 'Z' ? 'Z' : m[4].includes(':') ? m[4] : `${m[4].slice(0, 3)}:${m[4].slice(3)}`;
  const t = new Date(`${m[1]}T${m[2]}${fraction}${zone}`);
  return Number.isNaN(t.getTime()) ? undefined : t;
}

function present(value: unknown): boolean {
  return value !== undefined && value !== null;
}

/** Parses and checks the metadata document of build `base` (the base name from the document's key). */
export function parseMetadata(text: string, base: string): MetadataDocument {
  const where = `metadata document meta/singles/${base}`;
  if (Buffer.byteLength(text) > MAX_METADATA_BYTES) throw new InputError(`${where} is larger than 16 MiB`);

  let doc: unknown;
  let parsedDoc: YAML.Document.Parsed;
  try {
    parsedDoc = YAML.parseDocument(text, { schema: 'yaml-1.1', uniqueKeys: false });
    if (parsedDoc.errors.length > 0) throw parsedDoc.errors[0];
    doc = parsedDoc.toJS({ maxAliasCount: 50 });
  } catch (err) {
    throw new InputError(`${where} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new InputError(`${where} is not a YAML mapping`);
  }
  const fields = doc as Record<string, unknown>;
  // Values that are strings by meaning but may be written unquoted: a YAML 1.1 reader turns `1877.10` into 1877.1,
  // an all-digit commit hash or md5 into a float, and an md5 like `1234567e12…` into Infinity. Their source text
  // is what was meant.
  for (const key of ['version', 'build_committish']) {
    const text = sourceText(parsedDoc.get(key, true));
    if (text !== undefined) fields[key] = text;
  }
  const pathNodes = parsedDoc.get('paths', true);
  if (YAML.isSeq(pathNodes) && Array.isArray(fields.paths)) {
    pathNodes.items.forEach((item, i) => {
      const entry = (fields.paths as unknown[])[i];
      if (!YAML.isMap(item) || entry === null || typeof entry !== 'object') return;
      const text = sourceText(item.get('md5sum', true));
      if (text !== undefined) (entry as Record<string, unknown>).md5sum = text;
    });
  }

  // Group documents share the prefix (spec §2.1): `{version, build_committish, glci_version, manifests}`.
  if (!present(fields.paths) && !present(fields.architecture)) {
    const members = Array.isArray(fields.manifests) ? ` listing ${fields.manifests.length} builds` : '';
    return { kind: 'not-a-build', reason: `group document${members} (no paths, no architecture)` };
  }

  // Only builds must be named like one: group documents are `<group>-<version>-<commit>`.
  const name = parseBaseName(base);
  const parsed = BuildDocument.safeParse(fields);
  if (!parsed.success) throw new InputError(`${where} is not a valid build document: ${formatIssues(parsed.error)}`);
  const m = parsed.data;

  const version = String(m.version);
  if (m.architecture !== name.arch) {
    throw new InputError(`${where} says architecture ${m.architecture}, but the base name says ${name.arch}`);
  }
  if (version !== name.version) {
    throw new InputError(`${where} says version ${version}, but the base name says ${name.version}`);
  }
  const commitLong = m.build_committish ?? undefined;
  if (commitLong !== undefined && name.commit !== 'local' && !commitLong.startsWith(name.commit)) {
    throw new InputError(`${where} says build_committish ${commitLong}, but the base name says commit ${name.commit}`);
  }

  const prefix = objectsPrefix(base);
  const seen = new Set<string>();
  const files: BuildFile[] = m.paths.map((p, i) => {
    const at = `${where}: paths.${i}`;
    // The bash uploader (upload_to_s3.sh) names a file with its directory: exactly `<base>/` is taken off.
    const fileName = p.name.startsWith(`${base}/`) ? p.name.slice(base.length + 1) : p.name;
    if (fileName.includes('/') || fileName === '' || fileName === '.' || fileName === '..') {
      throw new InputError(`${at}: the file name "${p.name}" is not a plain file name (nor <base>/<file name>)`);
    }
    if (p.s3_key !== prefix + fileName) {
      throw new InputError(`${at}: the key "${p.s3_key}" is not ${prefix}${fileName}; a build may only name its own files`);
    }
    if (seen.has(fileName)) throw new InputError(`${at}: the file "${fileName}" is listed twice`);
    seen.add(fileName);
    return { name: fileName, key: p.s3_key, ...(p.md5sum ? { md5: p.md5sum.toLowerCase() } : {}) };
  });

  const modifiers =
    typeof m.modifiers === 'string'
      ? m.modifiers.split(',').map((s) => s.trim()).filter((s) => s !== '')
      : (m.modifiers ?? []);

  let buildTime: Date | undefined;
  if (m.build_timestamp instanceof Date) buildTime = m.build_timestamp;
  else if (typeof m.build_timestamp === 'string') buildTime = parseTimestamp(m.build_timestamp);
  if (buildTime !== undefined && Number.isNaN(buildTime.getTime())) buildTime = undefined;

  return {
    kind: 'build',
    build: {
      name,
      platform: m.platform,
      modifiers,
      ...(buildTime ? { buildTime } : {}),
      ...(commitLong ? { commitLong } : {}),
      ...(m.publishing_group ? { publishingGroup: m.publishing_group } : {}),
      files,
    },
  };
}
