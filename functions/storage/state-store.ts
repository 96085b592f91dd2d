/**
 * The publisher's own records, under STATE_PREFIX (never under `meta/singles/`, so they trigger nothing):
 *
 * - `records/<target>/<version>/<base>.json`: the version-index entries of one published build. They are
 *   written after the build's manifests exist, and the version index is rendered from them (see converge.ts).
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

  async listRecords(targetId: string, version: string): Promise<ObjectInfo[]> {
    const prefix = this.recordsPrefix(targetId, version);
    return (await this.store.list(prefix)).filter((o) => o.key.endsWith('.json') && !o.key.slice(prefix.length).includes('/'));
  }

  async readRecord(info: ObjectInfo): Promise<IndexRecord | undefined> {
    const data = await this.store.get(info.key, { maxBytes: 64 * 1024 });
    if (!data) return undefined; // removed since the listing
    return parseJson(RecordSchema, data.bytes, `record ${this.store.description}/${info.key}`);
  }

  /** Writes a build's record unless an identical one is there (a rewrite would look like news to others). */
  async putRecord(targetId: string, version: string, record: IndexRecord): Promise<boolean> {
    const key = `${this.recordsPrefix(targetId, version)}${record.base}.json`;
    const bytes = Buffer.from(JSON.stringify(RecordSchema.parse(record)));
    const existing = await this.store.get(key, { maxBytes: 64 * 1024 });
    if (existing && existing.bytes.equals(bytes)) return false;
    await this.store.put(key, bytes, 'application/json');
    return true;
  }

  private factsKey(source: string, key: string): string {
    return `${this.prefix}digests/${source}/${key}.json`;
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
