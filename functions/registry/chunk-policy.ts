/**
 * When and how large blob uploads are chunked. Single requests carry a whole blob until the registry refuses a
 * large body (413 from a proxy in front, or 416 for a chunk above its limit, as GHCR answers chunks over 4 MiB);
 * then every upload of the client is chunked, and the chunk halves until it is accepted. Chunks never go below
 * what the registry needs (its `OCI-Chunk-Min-Length`, or a minimum known for it: ECR wants 5 MiB parts but the
 * last), nor above what it is known to take.
 */
import { ecrRegistry } from './credentials';

const MiB = 1024 * 1024;
const DEFAULT_CHUNK_BYTES = 16 * MiB;
/** Chunks are never made smaller than this when a registry refuses large bodies. */
const MIN_FALLBACK_CHUNK = MiB;

export interface ChunkLimits {
  minBytes: number;
  maxBytes?: number;
}

/** What is known of a registry's chunks by its host name. */
export function chunkLimitsFor(host: string): ChunkLimits {
  // "All layer parts except the last part should be at least 5MB" (ECR's UploadLayerPart behind the API).
  if (ecrRegistry(host)) return { minBytes: 5 * MiB };
  // GHCR answers 416 to a PATCH chunk above 4 MiB (monolithic uploads of any size work).
  if (host.replace(/:443$/, '') === 'ghcr.io') return { minBytes: MIN_FALLBACK_CHUNK, maxBytes: 4 * MiB };
  return { minBytes: MIN_FALLBACK_CHUNK };
}

export class ChunkPolicy {
  /** undefined while single uploads work */
  private current: number | undefined;
  private readonly configured: number;
  private readonly minBytes: number;
  private readonly maxBytes: number;

  constructor(
    private readonly options: { chunkBytes?: number; fromStart: boolean; minBytes: number; maxBytes?: number; onShrink?: (chunkBytes: number) => void },
  ) {
    this.minBytes = Math.max(options.minBytes, MIN_FALLBACK_CHUNK);
    this.maxBytes = Math.max(options.maxBytes ?? Infinity, this.minBytes);
    this.configured = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    if (options.fromStart) this.current = this.configured;
  }

  /** The chunk size for the next upload, or undefined while single uploads work. */
  size(advertisedMin: number): number | undefined {
    if (this.current === undefined) return undefined;
    const floor = Math.max(this.minBytes, advertisedMin);
    return Math.max(Math.min(this.current, this.maxBytes), floor);
  }

  /**
   * The registry refused a body of `rejected` bytes: chunk from now on, smaller than that. False when chunks
   * cannot get smaller (the registry's minimum).
   */
  shrink(rejected: number, advertisedMin: number): boolean {
    const floor = Math.max(this.minBytes, advertisedMin);
    const next = Math.min(Math.max(Math.floor(Math.min(rejected, this.current ?? this.configured) / 2), floor), Math.max(this.maxBytes, floor));
    if (next >= rejected) return false;
    this.current = next;
    this.options.onShrink?.(next);
    return true;
  }
}
