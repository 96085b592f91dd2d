/**
 * The publisher's own records, under STATE_PREFIX (never under `meta/singles/`, so they trigger nothing):
 *
 * - `records/<target>/<version>/<base>.json`: the version-index entries of one published build. They are
 *   written after the build's manifests exist, and the version index is rendered from them (see converge.ts).
 * - `records/<target>/<version>/<base>.retracted`: a build retracted on purpose. Its entries leave the index,
 *   whoever wrote them, and stay out until the build is published again by hand.
 * - `digests/<source>/<key>.json`: what was learnt from reading one source object at one ETag (its digest, and
 *   for archives what they hold), so a re-run need not read it again.
 */
import * as z from 'zod';
import { DescriptorSchema, parseJson } from '../oci/descriptor';
import type { IndexRecord } from '../gardenlinux/version-index';
import type { ObjectInfo, ObjectStore } from './object-store';

const RecordSchema = z.object({
  base: z.string().min(1),
  flavorArch: z.string().min(1),
  buildTime: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not a date'),
  container: DescriptorSchema.optional(),
  gardenlinux: DescriptorSchema.optional(),
});

const RetractionSchema = z.object({
  base: z.string().min(1),
  retractedAt: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not a date'),
  /** the manifests the build's record named (artifact manifest, container image): entries naming them go too */
  digests: z.array(z.string()),
});
export type Retraction = z.infer<typeof RetractionSchema>;

const RECORD_SUFFIX = '.json';
const RETRACTION_SUFFIX = '.retracted';

/** One entry of a version's listing, read. */
export type VersionEntry = { kind: 'record'; record: IndexRecord } | { kind: 'retraction'; retraction: Retraction };

const BlobFactSchema = z.object({ name: z.string(), digest: z.string(), size: z.number().int().nonnegative() });

export const SourceFactsSchema = z.object({
  etag: z.string(),
  digest: z.string(),
  size: z.number().int().nonnegative(),
  /** files inside a PXE bundle */
  members: z.array(BlobFactSchema).optional(),
  /** the container image inside an `.oci` archive */
  container: z
    .object({
      manifest: DescriptorSchema,
      /** base64 of the manifest bytes: small, and needed to tag it again without reading the archive */
      manifestBytes: z.string(),
      platform: z.object({ architecture: z.string(), os: z.string(), variant: z.string().optional() }),
    })
    .optional(),
  /** GARDENLINUX_FEATURES of a `.release` file */
  features: z.string().optional(),
});
export type SourceFacts = z.infer<typeof SourceFactsSchema>;

export class StateStore {
  private readonly prefix: string;

  constructor(
    readonly store: ObjectStore,
    prefix: string,
  ) {
    this.prefix = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
  }

  get location(): string {
    return `${this.store.description}/${this.prefix}`;
  }

  recordsPrefix(targetId: string, version: string): string {
    return `${this.prefix}records/${targetId}/${version}/`;
  }

  private key(targetId: string, version: string, base: string, suffix: string): string {
    return `${this.recordsPrefix(targetId, version)}${base}${suffix}`;
  }

  /** The versions that have records in one target (with sub-repositories' folders among them: callers filter). */
  listVersions(targetId: string): Promise<string[]> {
    return this.store.listFolders(`${this.prefix}records/${targetId}/`);
  }

  /** The records and retractions of one version in one target (S3 LIST is strongly consistent). */
  async listVersion(targetId: string, version: string): Promise<ObjectInfo[]> {
    const prefix = this.recordsPrefix(targetId, version);
    return (await this.store.list(prefix)).filter(
      (o) => (o.key.endsWith(RECORD_SUFFIX) || o.key.endsWith(RETRACTION_SUFFIX)) && !o.key.slice(prefix.length).includes('/'),
    );
  }

  /** A listed entry, or undefined when it was removed since the listing. */
  async readEntry(info: ObjectInfo): Promise<VersionEntry | undefined> {
    const data = await this.store.get(info.key, { maxBytes: 64 * 1024 });
    if (!data) return undefined;
    const what = `${this.store.description}/${info.key}`;
    if (info.key.endsWith(RETRACTION_SUFFIX)) return { kind: 'retraction', retraction: parseJson(RetractionSchema, data.bytes, `retraction ${what}`) };
    return { kind: 'record', record: parseJson(RecordSchema, data.bytes, `record ${what}`) };
  }

  /** The builds retracted from one version in one target. */
  async listRetractions(targetId: string, version: string): Promise<Retraction[]> {
    const listed = (await this.listVersion(targetId, version)).filter((o) => o.key.endsWith(RETRACTION_SUFFIX));
    const entries = await Promise.all(listed.map((info) => this.readEntry(info)));
    return entries.flatMap((e) => (e?.kind === 'retraction' ? [e.retraction] : []));
  }

  async getRecord(targetId: string, version: string, base: string): Promise<IndexRecord | undefined> {
    const key = this.key(targetId, version, base, RECORD_SUFFIX);
    const data = await this.store.get(key, { maxBytes: 64 * 1024 });
    return data ? parseJson(RecordSchema, data.bytes, `record ${this.store.description}/${key}`) : undefined;
  }

  /** Writes a build's record unless an identical one is there (a rewrite would look like news to others). */
  async putRecord(targetId: string, version: string, record: IndexRecord): Promise<boolean> {
    const key = this.key(targetId, version, record.base, RECORD_SUFFIX);
    const bytes = Buffer.from(JSON.stringify(RecordSchema.parse(record)));
    const existing = await this.store.get(key, { maxBytes: 64 * 1024 });
    if (existing && existing.bytes.equals(bytes)) return false;
    await this.store.put(key, bytes, 'application/json');
    return true;
  }

  async deleteRecord(targetId: string, version: string, base: string): Promise<void> {
    await this.store.delete(this.key(targetId, version, base, RECORD_SUFFIX));
  }

  async getRetraction(targetId: string, version: string, base: string): Promise<Retraction | undefined> {
    const key = this.key(targetId, version, base, RETRACTION_SUFFIX);
    const data = await this.store.get(key, { maxBytes: 64 * 1024 });
    return data ? parseJson(RetractionSchema, data.bytes, `retraction ${this.store.description}/${key}`) : undefined;
  }

  async putRetraction(targetId: string, version: string, retraction: Retraction): Promise<void> {
    const bytes = Buffer.from(JSON.stringify(RetractionSchema.parse(retraction)));
    await this.store.put(this.key(targetId, version, retraction.base, RETRACTION_SUFFIX), bytes, 'application/json');
  }

  async deleteRetraction(targetId: string, version: string, base: string): Promise<void> {
    await this.store.delete(this.key(targetId, version, base, RETRACTION_SUFFIX));
  }

  private factsKey(source: string, key: string): string {
    return `${this.prefix}digests/${source}/${key}.json`;
  }

  /**
   * The source objects under `prefix` (a build's `objects/<base>/`) that facts are remembered for, at any ETag: one
   * LIST, so that a first publication asks for none of them one by one.
   */
  async factsUnder(source: string, prefix: string): Promise<Set<string>> {
    const start = this.factsKey(source, '').slice(0, -'.json'.length);
    const listed = await this.store.list(`${start}${prefix}`);
    return new Set(listed.filter((o) => o.key.endsWith('.json')).map((o) => o.key.slice(start.length, -'.json'.length)));
  }

  /** What is known of a source object at this ETag, or undefined (never seen, or changed since). */
  async getFacts(source: string, key: string, etag: string): Promise<SourceFacts | undefined> {
    const data = await this.store.get(this.factsKey(source, key), { maxBytes: 256 * 1024 });
    if (!data) return undefined;
    // A damaged or outdated entry is only a lost shortcut: the object is read again.
    let value: unknown;
    try {
      value = JSON.parse(data.bytes.toString('utf8'));
    } catch {
      return undefined;
    }
    const parsed = SourceFactsSchema.safeParse(value);
    if (!parsed.success || parsed.data.etag !== etag) return undefined;
    return parsed.data;
  }

  async putFacts(source: string, key: string, facts: SourceFacts): Promise<void> {
    await this.store.put(this.factsKey(source, key), Buffer.from(JSON.stringify(SourceFactsSchema.parse(facts))), 'application/json');
  }
}
