/**
 * OCI descriptors, manifests and indexes as zod schemas. Unknown fields pass through untouched: entries written
 * by other tools are kept byte-for-byte in meaning when the version index is re-rendered.
 */
import * as z from 'zod';
import { InputError } from '../util/errors';

export const PlatformSchema = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  'os.version': z.string().optional(),
  variant: z.string().optional(),
});

export const DescriptorSchema = z.looseObject({
  mediaType: z.string().min(1),
  digest: z.string().regex(/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/, 'not a digest'),
  size: z.number().int().nonnegative(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: PlatformSchema.optional(),
});

export type Platform = z.infer<typeof PlatformSchema>;
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const ImageManifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

export const IndexSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageIndex = z.infer<typeof IndexSchema>;

/** The parts of an image config the publisher reads (spec §4: architecture and os of container entries). */
export const ImageConfigSchema = z.looseObject({
  architecture: z.string().optional(),
  os: z.string().optional(),
  variant: z.string().optional(),
});

/** Parses JSON bytes against a schema; any failure is an InputError that names `what`. */
export function parseJson<T extends z.ZodType>(schema: T, bytes: Uint8Array | string, what: string): z.infer<T> {
  let value: unknown;
  try {
    value = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new InputError(`${what} is not JSON: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    throw new InputError(`${what} is not valid: ${issues}`);
  }
  return parsed.data;
}
