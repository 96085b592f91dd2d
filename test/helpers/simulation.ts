/**
 * A deterministic world for the convergence code: a simulated clock, and an object store and a registry that
 * live in memory and answer after latencies drawn from a seeded generator, on that clock. Many writers can then
 * race for one version index for simulated seconds in milliseconds of real time, and the same seed always gives
 * the same interleaving.
 *
 * The clock advances only when every writer is waiting for it: all their I/O goes through `clock.sleep`, so once
 * the pending promise callbacks have run (one turn of the event loop), the earliest timer is the next thing that
 * can happen.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { sha256Digest } from '../../functions/oci/digest';
import { INDEX_TYPES } from '../../functions/oci/media-types';
import { RegistryError } from '../../functions/registry/errors';
import type { ObjectData, ObjectInfo, ObjectStore } from '../../functions/storage/object-store';
import type { FetchedManifest, Target, UploadResult } from '../../functions/target/target';
import type { Clock } from '../../functions/util/clock';

/** mulberry32: a small seeded generator, good enough for latencies and jitter. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Timer {
  at: number;
  seq: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class VirtualClock implements Clock {
  private current = 0;
  private seq = 0;
  private timers: Timer[] = [];

  now(): number {
    return this.current;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer: Timer = { at: this.current + Math.max(0, ms), seq: this.seq++, resolve, reject };
      this.timers.push(timer);
      signal?.addEventListener('abort', () => {
        this.timers = this.timers.filter((t) => t !== timer);
        reject(signal.reason);
      });
    });
  }

  /** Runs until `work` settles: lets pending callbacks run, then fires the earliest timer, and so on. */
  async run<T>(work: Promise<T>): Promise<T> {
    let settled = false;
    const result = work.finally(() => {
      settled = true;
    });
    result.catch(() => undefined);
    for (;;) {
      await new Promise<void>((r) => setImmediate(r));
      if (settled) return result;
      if (this.timers.length === 0) throw new Error(`simulation stuck at ${this.current} ms: nothing is waiting for the clock, and the work has not ended`);
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers.shift() as Timer;
      this.current = next.at;
      next.resolve();
    }
  }
}

/** A latency in milliseconds between `min` and `max`, from the generator. */
export type Latency = () => number;
export function latency(random: () => number, min: number, max: number): Latency {
  return () => min + (max - min) * random();
}

/** An S3-like bucket in memory: strongly consistent listings, ETags that change with the bytes. */
export class MemoryStore implements ObjectStore {
  readonly description = 's3://simulated';
  readonly objects = new Map<string, { bytes: Buffer; etag: string; lastModified: Date }>();
  requests = 0;

  constructor(
    private readonly clock: VirtualClock,
    private readonly delay: Latency,
  ) {}

  private async wait(): Promise<void> {
    this.requests++;
    await this.clock.sleep(this.delay());
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    await this.wait();
    return [...this.objects.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([key, o]) => ({ key, size: o.bytes.length, etag: o.etag, lastModified: o.lastModified }));
  }

  async listFolders(prefix: string): Promise<string[]> {
    await this.wait();
    const names = [...this.objects.keys()].filter((k) => k.startsWith(prefix) && k.slice(prefix.length).includes('/'));
    return [...new Set(names.map((k) => k.slice(prefix.length).split('/')[0] as string))].sort();
  }

  async get(key: string): Promise<ObjectData | undefined> {
    await this.wait();
    const o = this.objects.get(key);
    return o ? { bytes: o.bytes, info: { key, size: o.bytes.length, etag: o.etag, lastModified: o.lastModified } } : undefined;
  }

  async open(): Promise<Readable> {
    throw new Error('the simulated store holds records only');
  }

  async put(key: string, body: Buffer): Promise<void> {
    await this.wait();
    this.objects.set(key, { bytes: Buffer.from(body), etag: createHash('md5').update(body).digest('hex'), lastModified: new Date(this.clock.now()) });
  }

  async delete(key: string): Promise<void> {
    await this.wait();
    this.objects.delete(key);
  }
}

/**
 * A registry repository in memory, holding manifests only: tags with no compare-and-swap (last write wins), an
 * index refused when it names a manifest it does not hold (MANIFEST_BLOB_UNKNOWN, as distribution answers).
 * Each writer connects with its own latencies (`connect`), so a test can make one writer's request slow.
 */
export class MemoryRegistry {
  readonly id = 'simulated/gardenlinux';
  readonly display = 'simulated/gardenlinux';
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  readonly tags = new Map<string, string>();
  /** every write, in order: which reference, which digest, at what simulated time */
  readonly writes: Array<{ reference: string; digest: string; at: number }> = [];
  readonly counts = { head: 0, get: 0, put: 0 };

  constructor(private readonly clock: VirtualClock) {}

  digestOf(reference: string): string | undefined {
    return reference.startsWith('sha256:') ? (this.manifests.has(reference) ? reference : undefined) : this.tags.get(reference);
  }

  /** The repository as one writer sees it, with that writer's latencies. */
  connect(delays: { head: Latency; get: Latency; put: (reference: string) => number }): Target {
    const clock = this.clock;
    const registry = this;
    return {
      id: this.id,
      display: this.display,
      repositoryName: this.display,
      async hasBlob(): Promise<boolean> {
        throw new Error('the simulated registry holds manifests only');
      },
      async fetchBlob(): Promise<Buffer | undefined> {
        throw new Error('the simulated registry holds manifests only');
      },
      async openBlob(): Promise<undefined> {
        throw new Error('the simulated registry holds manifests only');
      },
      async blobSize(): Promise<number | undefined> {
        throw new Error('the simulated registry holds manifests only');
      },
      async pushBlob(): Promise<UploadResult> {
        throw new Error('the simulated registry holds manifests only');
      },
      async resolve(reference: string): Promise<string | undefined> {
        registry.counts.head++;
        await clock.sleep(delays.head());
        return registry.digestOf(reference);
      },
      async getManifest(reference: string): Promise<FetchedManifest | undefined> {
        registry.counts.get++;
        await clock.sleep(delays.get());
        const digest = registry.digestOf(reference);
        const m = digest ? registry.manifests.get(digest) : undefined;
        return m && digest ? { bytes: m.bytes, mediaType: m.mediaType, digest } : undefined;
      },
      async putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
        registry.counts.put++;
        // The registry acts when the body has arrived: it checks and stores against the state of that moment.
        await clock.sleep(delays.put(reference));
        return registry.store(bytes, mediaType, reference);
      },
    };
  }

  /** What a PUT does once it arrives. */
  store(bytes: Buffer, mediaType: string, reference: string): string {
    const digest = sha256Digest(bytes);
    if (INDEX_TYPES.includes(mediaType)) {
      const index = JSON.parse(bytes.toString('utf8')) as { manifests: Array<{ digest: string }> };
      const missing = index.manifests.find((m) => !this.manifests.has(m.digest));
      if (missing) throw new RegistryError(`PUT manifest ${this.display}:${reference}: HTTP 400 MANIFEST_BLOB_UNKNOWN`, { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
    }
    this.manifests.set(digest, { bytes: Buffer.from(bytes), mediaType });
    if (!reference.startsWith('sha256:')) this.tags.set(reference, digest);
    this.writes.push({ reference, digest, at: this.clock.now() });
    return digest;
  }
}
