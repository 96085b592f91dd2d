/**
 * A deterministic world for the whole publisher (issue 21): a registry with any number of repositories and a
 * bucket, both in memory, on the simulated clock of simulation.ts and driven by one seeded generator.
 *
 * Every request goes through a `Connection` (one per writer or job attempt), which applies, in this order: a
 * latency drawn for the kind of request, then a fault drawn from the `FaultPlan` (only on a faulty connection),
 * then kills (`conn.kill()`, `conn.killAt(ms)`). Each request ends as one line of a shared history, so a broken
 * invariant can be shown with the requests that led to it. All waiting goes through `clock.sleep`, so the same
 * seed replays the same run.
 *
 * The registry behaves like CNCF distribution 2.8 where the publisher depends on it: uploads are checked against
 * their digest, a manifest naming a blob or manifest the repository lacks is refused, tags move without
 * compare-and-swap (last write wins).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { sha256Digest, verifyHashed, type Hashed } from '../../functions/oci/digest';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES, MAX_MANIFEST_BYTES } from '../../functions/oci/media-types';
import { RegistryError } from '../../functions/registry/errors';
import { checkedStream } from '../../functions/registry/repository';
import type { ObjectData, ObjectInfo, ObjectStore, OpenOptions } from '../../functions/storage/object-store';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from '../../functions/target/target';
import { IntegrityError, SourceError } from '../../functions/util/errors';
import { seeded, VirtualClock } from './simulation';

// ---------------------------------------------------------------------------------------------------------------
// Requests, faults, history

export type RegistryRequest = 'blob-head' | 'blob-put' | 'blob-get' | 'manifest-head' | 'manifest-get' | 'manifest-put';
export type BucketRequest = 'list' | 'get' | 'open' | 'put' | 'delete';
export type RequestKind = RegistryRequest | BucketRequest;

export const REQUEST_KINDS: readonly RequestKind[] = [
  'blob-head',
  'blob-put',
  'blob-get',
  'manifest-head',
  'manifest-get',
  'manifest-put',
  'list',
  'get',
  'open',
  'put',
  'delete',
];
const REGISTRY_KINDS: ReadonlySet<RequestKind> = new Set(['blob-head', 'blob-put', 'blob-get', 'manifest-head', 'manifest-get', 'manifest-put']);
const WRITE_KINDS: ReadonlySet<RequestKind> = new Set(['blob-put', 'manifest-put', 'put', 'delete']);

export type FaultKind = 'error' | 'throttle' | 'lost' | 'slow';
/**
 * How a request ended: answered (`ok`), struck by a fault, killed with its connection, answered with a refusal
 * of the store (`refused`: a missing blob, a changed object), failed on the caller's side before it was sent
 * (`failed`: its body could not be read), or stopped by the caller's signal (`aborted`).
 */
export type Outcome = 'ok' | FaultKind | 'killed' | 'refused' | 'failed' | 'aborted';

export interface HistoryEntry {
  /** simulated time at which the request ended */
  at: number;
  /** simulated time at which it was sent */
  start: number;
  conn: string;
  kind: RequestKind;
  /** `<repo>@<digest>`, `<repo>:<tag>`, or the bucket key (prefix for a listing) */
  ref: string;
  outcome: Outcome;
  /** whether the store's state changed (writes only) */
  effect: boolean;
  /** what the store answered, when it says something worth reading (a digest, "absent") */
  detail?: string;
}

/** The error every request of a killed connection rejects with: the process is gone. */
export class Killed extends Error {
  constructor(readonly conn: string) {
    super(`${conn}: killed`);
    this.name = 'Killed';
  }
}

export interface FaultRates {
  /** a retryable failure before any effect (registry 503, S3 500) */
  error?: number;
  /** throttling before any effect (registry 429, S3 SlowDown) */
  throttle?: number;
  /** writes only: the write happens, its answer is lost (a connection reset) */
  lost?: number;
  /** an answer that takes longer than `slowMs` */
  slow?: number;
}

/** Which fault strikes a request, drawn from the world's generator; every rate defaults to 0 (no faults). */
export class FaultPlan {
  readonly rates: Required<FaultRates>;
  /** simulated milliseconds a slow answer takes at least */
  slowMs: number;
  /** when set, only these kinds of requests are struck */
  kinds: ReadonlySet<RequestKind> | undefined;

  constructor(
    private readonly random: () => number,
    rates: FaultRates = {},
    options: { slowMs?: number; kinds?: readonly RequestKind[] } = {},
  ) {
    this.rates = { error: 0, throttle: 0, lost: 0, slow: 0 };
    this.set(rates);
    this.slowMs = options.slowMs ?? 120_000;
    this.kinds = options.kinds ? new Set(options.kinds) : undefined;
  }

  /** Sets the rates given; the others stay as they are. */
  set(rates: FaultRates): void {
    for (const k of ['error', 'throttle', 'lost', 'slow'] as const) {
      const p = rates[k];
      if (p === undefined) continue;
      if (!(p >= 0 && p <= 1)) throw new Error(`fault rate ${k} must be between 0 and 1, not ${p}`);
      this.rates[k] = p;
    }
  }

  /** The fault for one request of a faulty connection, or undefined. */
  draw(kind: RequestKind): FaultKind | undefined {
    if (this.kinds && !this.kinds.has(kind)) return undefined;
    const candidates: Array<[FaultKind, number]> = [
      ['error', this.rates.error],
      ['throttle', this.rates.throttle],
      ['lost', WRITE_KINDS.has(kind) ? this.rates.lost : 0],
      ['slow', this.rates.slow],
    ];
    // No draw at all without a chance of a fault: a plan of zeros leaves the generator's sequence as it was.
    if (candidates.every(([, p]) => p <= 0)) return undefined;
    const r = this.random();
    let sum = 0;
    for (const [fault, p] of candidates) {
      sum += p;
      if (r < sum) return fault;
    }
    return undefined;
  }
}

/** Milliseconds between min and max, per kind of request. */
export type LatencyTable = Record<RequestKind, readonly [number, number]>;

export const DEFAULT_LATENCY: LatencyTable = {
  'blob-head': [10, 40],
  'blob-put': [50, 300],
  'blob-get': [20, 100],
  'manifest-head': [10, 40],
  'manifest-get': [20, 80],
  'manifest-put': [40, 200],
  list: [15, 60],
  get: [10, 50],
  open: [10, 50],
  put: [20, 80],
  delete: [10, 40],
};

/** What connections share: the clock, the generator, the faults, the history and the latencies. */
export interface SimEnv {
  readonly clock: VirtualClock;
  readonly random: () => number;
  readonly faults: FaultPlan;
  readonly history: HistoryEntry[];
  readonly latency: LatencyTable;
}

interface RequestOptions<T> {
  /** for messages: `PUT manifest gardenlinux:1877.3`, `reading s3://bucket/key` */
  what: string;
  /** the caller's side before the request counts as sent (an upload's body, read to its end) */
  before?: () => Promise<void>;
  /** the caller's signal (an open's): stops the request like a kill, without its effect */
  signal?: AbortSignal;
  /** what the answer says, for the history */
  describe?: (result: T) => string | undefined;
}

/** `promise`, or the signal's reason once it aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => reject(signal.reason);
    signal.addEventListener('abort', stop, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', stop);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', stop);
        reject(err);
      },
    );
  });
}

function resetError(): Error {
  return Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
}

function short(digest: string | undefined): string {
  return digest?.startsWith('sha256:') ? `sha256:${digest.slice(7, 19)}` : (digest ?? '');
}

/**
 * One writer's (or one job attempt's) way to the stores. Faults strike only a `faulty` connection, so a final
 * settling run can go without them.
 */
export interface ConnectionOptions {
  /** faults strike only a faulty connection (default false) */
  faulty?: boolean;
  /**
   * Requests take no time and never wait for the clock: for checks after a run, when nothing advances the clock
   * any more. Faults still strike when `faulty`, except slow answers.
   */
  instant?: boolean;
  /** this connection's latencies, in place of the world's */
  latency?: Partial<LatencyTable>;
}

export class Connection {
  readonly faulty: boolean;
  readonly instant: boolean;
  private killedAt: number | undefined;
  private readonly pending = new Set<AbortController>();
  private readonly streams = new Set<Readable>();
  private readonly latency: LatencyTable;
  /** the kills scheduled with killAt */
  private readonly scheduled = new Set<AbortController>();

  constructor(
    private readonly env: SimEnv,
    readonly name: string,
    options: ConnectionOptions = {},
  ) {
    this.faulty = options.faulty ?? false;
    this.instant = options.instant ?? false;
    this.latency = { ...env.latency, ...options.latency };
  }

  get killed(): boolean {
    return this.killedAt !== undefined;
  }

  /** Every pending and future request rejects with `Killed`; open streams fail with it. */
  kill(): void {
    if (this.killed) return;
    this.killedAt = this.env.clock.now();
    this.close();
    const err = new Killed(this.name);
    for (const ac of [...this.pending]) ac.abort(err);
    for (const s of [...this.streams]) s.destroy(err);
  }

  /** Kills the connection at simulated time `ms` (now, when that has passed). Several schedules: the earliest wins. */
  killAt(ms: number): void {
    if (this.killed) return;
    const ac = new AbortController();
    this.scheduled.add(ac);
    this.env.clock.sleep(Math.max(0, ms - this.env.clock.now()), ac.signal).then(
      () => this.kill(),
      () => undefined,
    );
  }

  /** The job ended: the kills scheduled with `killAt` no longer fire (and no longer hold timers of the clock). */
  close(): void {
    for (const ac of this.scheduled) ac.abort();
    this.scheduled.clear();
  }

  /** Fails `stream` with `Killed` when the connection is killed while it is read. */
  track<S extends Readable>(stream: S): S {
    // A stream killed before its request answered reaches no reader: its error must not end the process (a reader
    // that has it still gets the error through its own listeners).
    stream.on('error', () => undefined);
    this.streams.add(stream);
    stream.once('close', () => this.streams.delete(stream));
    return stream;
  }

  private delay(kind: RequestKind): number {
    const [min, max] = this.latency[kind];
    return Math.round(min + (max - min) * this.env.random());
  }

  private faultError(kind: RequestKind, fault: 'error' | 'throttle' | 'lost', what: string): Error {
    if (REGISTRY_KINDS.has(kind)) {
      if (fault === 'error') return new RegistryError(`${what}: HTTP 503 UNAVAILABLE`, { status: 503, code: 'UNAVAILABLE', retryable: true });
      if (fault === 'throttle') return new RegistryError(`${what}: HTTP 429 TOOMANYREQUESTS`, { status: 429, code: 'TOOMANYREQUESTS', retryable: true });
      const cause = resetError();
      return new RegistryError(`${what}: ${cause.message}`, { code: 'NETWORK', retryable: true, cause });
    }
    if (fault === 'error') return new SourceError(`${what} failed (InternalError, HTTP 500): S3 500 InternalError`, { retryable: true });
    if (fault === 'throttle') return new SourceError(`${what} failed (SlowDown, HTTP 503): Please reduce your request rate`, { retryable: true });
    const cause = resetError();
    return new SourceError(`${what} failed: ${cause.message}`, { cause, retryable: true });
  }

  /**
   * One request: `act` is what the store does once the request arrives (synchronously, so its effect happens at
   * one instant), after the latency; it throws to refuse.
   */
  async request<T>(kind: RequestKind, ref: string | (() => string), act: () => T, options: RequestOptions<T>): Promise<T> {
    const { clock, history, faults, random } = this.env;
    const start = clock.now();
    const write = WRITE_KINDS.has(kind);
    let effect = false;
    const record = (outcome: Outcome, detail?: string): void => {
      const entry: HistoryEntry = { at: clock.now(), start, conn: this.name, kind, ref: typeof ref === 'string' ? ref : ref(), outcome, effect };
      if (detail) entry.detail = detail;
      history.push(entry);
    };
    if (this.killed) {
      record('killed');
      throw new Killed(this.name);
    }
    const ac = new AbortController();
    this.pending.add(ac);
    const caller = options.signal;
    const stopOnCaller = (): void => ac.abort(caller?.reason);
    if (caller?.aborted) ac.abort(caller.reason);
    else caller?.addEventListener('abort', stopOnCaller, { once: true });

    /** Settles an interruption: a kill (a write whose body was sent may or may not have happened) or the caller. */
    const interrupted = (err: unknown, inFlight: boolean): unknown => {
      if (this.killed) {
        if (write && inFlight && !effect && random() < 0.5) {
          try {
            act();
            effect = true;
          } catch {
            // refused: nothing happened
          }
        }
        record('killed');
        return new Killed(this.name);
      }
      record(ac.signal.aborted ? 'aborted' : 'failed');
      return err;
    };

    try {
      if (options.before) {
        try {
          await abortable(options.before(), ac.signal);
        } catch (err) {
          throw interrupted(err, false);
        }
      }
      if (!this.instant) {
        try {
          await clock.sleep(this.delay(kind), ac.signal);
        } catch (err) {
          throw interrupted(err, true);
        }
      }
      // Killed by other code between the answer's timer and now: the kill comes first.
      if (this.killed) throw interrupted(new Killed(this.name), true);
      const drawn = this.faulty ? faults.draw(kind) : undefined;
      const fault = drawn === 'slow' && this.instant ? undefined : drawn;
      if (fault === 'error' || fault === 'throttle') {
        record(fault);
        throw this.faultError(kind, fault, options.what);
      }
      // A slow answer: a read is served at some point of its long wait; a write takes effect when it arrives, and
      // only its answer comes late (a write whose request itself arrives minutes late is not a registry's or S3's
      // way: the request is small, and the client gives up on it long before).
      let rest = 0;
      if (fault === 'slow') {
        const total = faults.slowMs + this.delay(kind);
        const drawn = Math.round(total * random());
        const first = write ? 0 : drawn;
        rest = total - first;
        try {
          await clock.sleep(first, ac.signal);
        } catch (err) {
          throw interrupted(err, true);
        }
      }
      let result: T;
      try {
        result = act();
        effect = write;
      } catch (err) {
        if (fault === 'lost') {
          record('lost');
          throw this.faultError(kind, 'lost', options.what);
        }
        record('refused', err instanceof Error ? err.message : String(err));
        throw err;
      }
      const detail = options.describe?.(result);
      if (fault === 'lost') {
        record('lost', detail);
        throw this.faultError(kind, 'lost', options.what);
      }
      if (fault === 'slow') {
        try {
          await clock.sleep(rest, ac.signal);
        } catch (err) {
          throw interrupted(err, false);
        }
      }
      record(fault ?? 'ok', detail);
      return result;
    } finally {
      this.pending.delete(ac);
      caller?.removeEventListener('abort', stopOnCaller);
    }
  }
}

/** The history as text, one line per request: the last `limit` of them. */
export function formatHistory(entries: readonly HistoryEntry[], limit = 200): string {
  const shown = entries.slice(Math.max(0, entries.length - limit));
  const lines = shown.map((e) => {
    const took = e.at - e.start;
    const ref = e.ref.replace(/sha256:[0-9a-f]{64}/g, (d) => short(d));
    const detail = e.detail ? `  ${e.detail.replace(/sha256:[0-9a-f]{64}/g, (d) => short(d))}` : '';
    return `${String(e.at).padStart(9)} ms (${String(took).padStart(6)})  ${e.conn.padEnd(14)} ${e.kind.padEnd(13)} ${e.outcome.padEnd(8)} ${e.effect ? 'effect' : '      '}  ${ref}${detail}`;
  });
  if (shown.length < entries.length) lines.unshift(`… ${entries.length - shown.length} earlier requests`);
  return lines.join('\n');
}

/** A stream of `bytes` in pieces, as a body arrives. */
function streamOf(bytes: Buffer): Readable {
  const piece = 64 * 1024;
  let offset = 0;
  return new Readable({
    highWaterMark: piece,
    read() {
      if (offset >= bytes.length) {
        this.push(null);
        return;
      }
      const end = Math.min(bytes.length, offset + piece);
      this.push(bytes.subarray(offset, end));
      offset = end;
    },
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The registry

interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
}

interface Repository {
  blobs: Map<string, Buffer>;
  manifests: Map<string, StoredManifest>;
  tags: Map<string, string>;
}

/** An upload's bytes as the registry received them. */
interface Received {
  bytes: Buffer;
  /** what the client's side hashed or was told upstream */
  seen: Hashed;
}

function isDigestRef(reference: string): boolean {
  return reference.startsWith('sha256:');
}

/** A registry in memory with any number of repositories (`<name>`, `<name>/<sub>`). */
export class SimRegistry {
  readonly host = 'sim';
  private readonly repos = new Map<string, Repository>();
  /**
   * Told of every manifest stored by tag, after it is stored: for invariants that must hold at every moment, not
   * only once all has settled (an index must never name an unsigned artifact manifest, even for a while).
   */
  onTag: ((repo: string, tag: string, bytes: Buffer, mediaType: string) => void) | undefined;

  constructor(private readonly env: SimEnv) {}

  private repo(name: string): Repository | undefined {
    return this.repos.get(name);
  }

  private repoForWrite(name: string): Repository {
    let r = this.repos.get(name);
    // Like distribution: a repository exists once something was pushed to it.
    if (!r) this.repos.set(name, (r = { blobs: new Map(), manifests: new Map(), tags: new Map() }));
    return r;
  }

  private digestOf(name: string, reference: string): string | undefined {
    const r = this.repo(name);
    if (!r) return undefined;
    return isDigestRef(reference) ? (r.manifests.has(reference) ? reference : undefined) : r.tags.get(reference);
  }

  // --- what a request does once it arrives ---

  private storeBlob(name: string, received: Received): UploadResult {
    const digest = sha256Digest(received.bytes);
    if (received.seen.digest !== digest) {
      throw new RegistryError(`PUT blob ${this.host}/${name}@${received.seen.digest}: HTTP 400 DIGEST_INVALID (the content has ${digest})`, {
        status: 400,
        code: 'DIGEST_INVALID',
      });
    }
    this.repoForWrite(name).blobs.set(digest, received.bytes);
    return received.seen;
  }

  private storeManifest(name: string, bytes: Buffer, mediaType: string, reference: string): string {
    const what = `PUT manifest ${this.host}/${name}:${reference}`;
    const digest = sha256Digest(bytes);
    if (isDigestRef(reference) && reference !== digest) {
      throw new RegistryError(`${what}: HTTP 400 DIGEST_INVALID (the bytes have ${digest})`, { status: 400, code: 'DIGEST_INVALID' });
    }
    const known = [...IMAGE_MANIFEST_TYPES, ...INDEX_TYPES];
    if (!known.includes(mediaType)) throw new RegistryError(`${what}: HTTP 400 MANIFEST_INVALID (media type ${mediaType})`, { status: 400, code: 'MANIFEST_INVALID' });
    let body: { config?: { digest?: unknown }; layers?: Array<{ digest?: unknown }>; manifests?: Array<{ digest?: unknown }> };
    try {
      body = JSON.parse(bytes.toString('utf8')) as typeof body;
    } catch {
      throw new RegistryError(`${what}: HTTP 400 MANIFEST_INVALID (not JSON)`, { status: 400, code: 'MANIFEST_INVALID' });
    }
    const r = this.repo(name);
    const unknown = (d: unknown): string => `${what}: HTTP 400 MANIFEST_BLOB_UNKNOWN (${String(d)})`;
    if (IMAGE_MANIFEST_TYPES.includes(mediaType)) {
      for (const d of [body.config?.digest, ...(body.layers ?? []).map((l) => l.digest)]) {
        if (typeof d !== 'string' || !r?.blobs.has(d)) throw new RegistryError(unknown(d), { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
      }
    } else {
      for (const m of body.manifests ?? []) {
        if (typeof m.digest !== 'string' || !r?.manifests.has(m.digest)) throw new RegistryError(unknown(m.digest), { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
      }
    }
    const w = this.repoForWrite(name);
    w.manifests.set(digest, { bytes: Buffer.from(bytes), mediaType });
    if (!isDigestRef(reference)) {
      w.tags.set(reference, digest);
      this.onTag?.(name, reference, bytes, mediaType);
    }
    return digest;
  }

  private readManifest(name: string, reference: string): FetchedManifest | undefined {
    const digest = this.digestOf(name, reference);
    const m = digest ? this.repo(name)?.manifests.get(digest) : undefined;
    return m && digest ? { bytes: Buffer.from(m.bytes), mediaType: m.mediaType, digest } : undefined;
  }

  // --- the targets ---

  /** The repository `name` and its sub-repositories as one connection sees them. */
  targets(name: string, conn: Connection): TargetSet {
    const made = new Map<string, Target>();
    const get = (repo: string): Target => {
      let t = made.get(repo);
      if (!t) made.set(repo, (t = this.target(repo, conn)));
      return t;
    };
    const set: TargetSet = { main: get(name), repository: (path) => get(`${name}/${path}`), forJob: () => set };
    return set;
  }

  private target(name: string, conn: Connection): Target {
    const registry = this;
    const id = `${this.host}/${name}`;
    const blobRef = (digest: string): string => `${name}@${digest}`;
    const manifestRef = (reference: string): string => (isDigestRef(reference) ? `${name}@${reference}` : `${name}:${reference}`);
    const blobOf = (digest: string): Buffer | undefined => registry.repo(name)?.blobs.get(digest);
    /** A blob GET: `answer` makes the reply from the stored bytes; an absent blob answers undefined. */
    const getBlob = <T>(digest: string, answer: (bytes: Buffer, what: string) => T): Promise<T | undefined> => {
      const what = `GET blob ${id}@${digest}`;
      return conn.request(
        'blob-get',
        blobRef(digest),
        () => {
          const bytes = blobOf(digest);
          return bytes ? answer(bytes, what) : undefined;
        },
        { what, describe: (b) => (b ? undefined : 'absent') },
      );
    };
    return {
      id,
      display: id,
      repositoryName: id,
      hasBlob(digest: string): Promise<boolean> {
        return conn.request('blob-head', blobRef(digest), () => blobOf(digest) !== undefined, {
          what: `HEAD blob ${id}@${digest}`,
          describe: (has) => (has ? undefined : 'absent'),
        });
      },
      blobSize(digest: string): Promise<number | undefined> {
        return conn.request('blob-head', blobRef(digest), () => blobOf(digest)?.length, {
          what: `HEAD blob ${id}@${digest}`,
          describe: (size) => (size === undefined ? 'absent' : `${size} bytes`),
        });
      },
      fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
        return getBlob(digest, (bytes, what) => {
          if (bytes.length > maxBytes) throw new IntegrityError(`${what}: ${bytes.length} bytes, more than the ${maxBytes} expected`);
          if (sha256Digest(bytes) !== digest) throw new IntegrityError(`${what}: the registry returned bytes with digest ${sha256Digest(bytes)}`);
          return Buffer.from(bytes);
        });
      },
      openBlob(digest: string): Promise<BlobStream | undefined> {
        return getBlob(digest, (bytes, what) => ({ size: bytes.length, stream: checkedStream(conn.track(streamOf(bytes)), { digest, size: bytes.length, what }) }));
      },
      async pushBlob(blob: BlobSource): Promise<UploadResult> {
        let received: Received | undefined;
        return conn.request('blob-put', () => blobRef(received?.seen.digest ?? blob.digest ?? '(upload)'), () => registry.storeBlob(name, received as Received), {
          what: `PUT ${blob.what}`,
          // The client's part: the body read to its end and checked as the real client checks it, then the hook
          // that may still refuse the commit.
          before: async () => {
            received = await readBody(blob);
            // A killed process runs no more of its own code.
            if (conn.killed) throw new Killed(conn.name);
            await blob.beforeCommit?.();
          },
        });
      },
      resolve(reference: string): Promise<string | undefined> {
        return conn.request('manifest-head', manifestRef(reference), () => registry.digestOf(name, reference), {
          what: `HEAD manifest ${id}:${reference}`,
          describe: (d) => (d ? short(d) : 'absent'),
        });
      },
      getManifest(reference: string): Promise<FetchedManifest | undefined> {
        return conn.request('manifest-get', manifestRef(reference), () => registry.readManifest(name, reference), {
          what: `GET manifest ${id}:${reference}`,
          describe: (m) => (m ? short(m.digest) : 'absent'),
        });
      },
      async putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
        const what = `PUT manifest ${id}:${reference}`;
        // The real client refuses these before any request.
        if (bytes.length > MAX_MANIFEST_BYTES) throw new RegistryError(`${what}: ${bytes.length} bytes is above the 4 MiB registries accept`, { code: 'SIZE_INVALID' });
        const body = Buffer.from(bytes);
        return conn.request('manifest-put', manifestRef(reference), () => registry.storeManifest(name, body, mediaType, reference), {
          what,
          describe: (d) => short(d),
        });
      },
    };
  }

  // --- for setting up and for checking invariants: no latency, no faults, no history ---

  /** The repositories that hold anything, sorted. */
  repositories(): string[] {
    return [...this.repos.keys()].sort();
  }

  /** A copy of a repository's tags (tag → digest). */
  tagsOf(repo: string): Map<string, string> {
    return new Map(this.repo(repo)?.tags ?? []);
  }

  /** The digests of a repository's manifests. */
  manifestDigests(repo: string): string[] {
    return [...(this.repo(repo)?.manifests.keys() ?? [])];
  }

  manifest(repo: string, digestOrTag: string): FetchedManifest | undefined {
    return this.readManifest(repo, digestOrTag);
  }

  hasBlob(repo: string, digest: string): boolean {
    return this.repo(repo)?.blobs.has(digest) ?? false;
  }

  blob(repo: string, digest: string): Buffer | undefined {
    const b = this.repo(repo)?.blobs.get(digest);
    return b ? Buffer.from(b) : undefined;
  }

  /** Stores a blob as an upload would; returns its digest. */
  addBlob(repo: string, bytes: Buffer): string {
    return this.storeBlob(repo, { bytes: Buffer.from(bytes), seen: { digest: sha256Digest(bytes), size: bytes.length } }).digest;
  }

  /** Stores a manifest as a PUT would (checked the same way); returns its digest. */
  addManifest(repo: string, bytes: Buffer, mediaType: string, reference: string): string {
    return this.storeManifest(repo, Buffer.from(bytes), mediaType, reference);
  }
}

/**
 * Reads an upload's body to its end, checking it as the real client does: no byte beyond the size, the size and
 * md5 (IntegrityError); a source checked upstream is only counted and its digest taken from there. The digest
 * itself is the registry's to check (DIGEST_INVALID).
 */
async function readBody(blob: BlobSource): Promise<Received> {
  const source = await blob.open();
  const parts: Buffer[] = [];
  const sha = createHash('sha256');
  const md5 = blob.md5 && !blob.checkedUpstream ? createHash('md5') : undefined;
  let size = 0;
  try {
    for await (const chunk of source) {
      const b = chunk as Buffer;
      if (size + b.length > blob.size) throw new IntegrityError(`${blob.what}: more than the expected ${blob.size} bytes`);
      size += b.length;
      sha.update(b);
      md5?.update(b);
      parts.push(b);
      blob.onBytes?.(b.length);
    }
  } finally {
    source.destroy();
  }
  const bytes = Buffer.concat(parts, size);
  if (blob.checkedUpstream) {
    const upstream = size === blob.size ? blob.checkedUpstream() : undefined;
    if (!upstream) throw new IntegrityError(`${blob.what}: the registry answered before all ${blob.size} bytes were sent`);
    return { bytes, seen: upstream };
  }
  const computed = `sha256:${sha.digest('hex')}`;
  const seen = verifyHashed({ digest: computed, size, ...(md5 ? { md5: md5.digest('hex') } : {}) }, { what: blob.what, size: blob.size, ...(blob.md5 ? { md5: blob.md5 } : {}) });
  // A known digest is what the client claims at the commit: the registry compares it with the content.
  return { bytes, seen: blob.digest ? { ...seen, digest: blob.digest } : seen };
}

// ---------------------------------------------------------------------------------------------------------------
// The bucket

interface StoredObject {
  bytes: Buffer;
  etag: string;
  lastModified: Date;
}

/**
 * An S3-like bucket in memory: strongly consistent listings, ETags (md5 hex) that change with the bytes, ranged
 * and version-pinned reads. Its own methods go through a fault-free connection of its own (`bucket`); a writer's
 * requests go through `connect(conn)`.
 */
export class SimBucket implements ObjectStore {
  readonly description: string;
  readonly parallelReads = false;
  readonly objects = new Map<string, StoredObject>();
  private readonly own: ObjectStore;

  constructor(
    private readonly env: SimEnv,
    name = 'sim-bucket',
  ) {
    this.description = `s3://${name}`;
    this.own = this.connect(new Connection(env, 'bucket'));
  }

  /** Stores an object at once, without latency, fault or history (for setting up builds). */
  putObject(key: string, bytes: Buffer): void {
    this.objects.set(key, { bytes: Buffer.from(bytes), etag: createHash('md5').update(bytes).digest('hex'), lastModified: new Date(this.env.clock.now()) });
  }

  /** The bucket as one connection sees it. */
  connect(conn: Connection): ObjectStore {
    const bucket = this;
    const where = (key: string): string => `${this.description}/${key}`;
    const infoOf = (key: string, o: StoredObject): ObjectInfo => ({ key, size: o.bytes.length, etag: o.etag, lastModified: o.lastModified });
    return {
      description: this.description,
      parallelReads: false,
      list(prefix: string): Promise<ObjectInfo[]> {
        return conn.request(
          'list',
          prefix,
          () =>
            [...bucket.objects.entries()]
              .filter(([k]) => k.startsWith(prefix))
              .sort(([a], [b]) => (a < b ? -1 : 1))
              .map(([k, o]) => infoOf(k, o)),
          { what: `listing ${where(prefix)}`, describe: (l) => `${l.length} keys` },
        );
      },
      listFolders(prefix: string): Promise<string[]> {
        return conn.request(
          'list',
          prefix,
          () => {
            const names = [...bucket.objects.keys()].filter((k) => k.startsWith(prefix) && k.slice(prefix.length).includes('/'));
            return [...new Set(names.map((k) => k.slice(prefix.length).split('/')[0] as string))].sort();
          },
          { what: `listing ${where(prefix)}`, describe: (l) => `${l.length} folders` },
        );
      },
      get(key: string, options: { etag?: string; maxBytes?: number } = {}): Promise<ObjectData | undefined> {
        return conn.request(
          'get',
          key,
          () => {
            const o = bucket.objects.get(key);
            if (!o) return undefined;
            if (options.etag !== undefined && o.etag !== options.etag) throw new SourceError(`reading ${where(key)}: the object changed while it was being published`);
            if (options.maxBytes !== undefined && o.bytes.length > options.maxBytes) {
              throw new SourceError(`${where(key)} is ${o.bytes.length} bytes, more than the ${options.maxBytes} expected`);
            }
            return { bytes: Buffer.from(o.bytes), info: infoOf(key, o) };
          },
          { what: `reading ${where(key)}`, describe: (d) => (d ? `etag ${d.info.etag.slice(0, 8)}` : 'absent') },
        );
      },
      async open(key: string, options: OpenOptions = {}): Promise<Readable> {
        const stream = await conn.request(
          'open',
          options.start !== undefined || options.end !== undefined ? `${key} [${options.start ?? 0}-${options.end ?? ''}]` : key,
          () => {
            const o = bucket.objects.get(key);
            if (!o) throw new SourceError(`${where(key)} does not exist`);
            if (options.etag !== undefined && o.etag !== options.etag) throw new SourceError(`reading ${where(key)}: the object changed while it was being published`);
            const start = options.start ?? 0;
            // As S3: the end is inclusive and clamped to the object; a start beyond it is refused (416).
            const end = Math.min(options.end ?? o.bytes.length - 1, o.bytes.length - 1);
            if (start > 0 && start >= o.bytes.length) throw new SourceError(`reading ${where(key)} failed (InvalidRange, HTTP 416): bytes ${start}- of ${o.bytes.length}`);
            return conn.track(streamOf(o.bytes.subarray(start, end + 1)));
          },
          { what: `reading ${where(key)}`, ...(options.signal ? { signal: options.signal } : {}) },
        );
        // The caller's signal stops the body too, as it does an S3 response's.
        const signal = options.signal;
        if (signal) {
          const stop = (): void => {
            stream.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
          };
          if (signal.aborted) stop();
          else {
            signal.addEventListener('abort', stop, { once: true });
            stream.once('close', () => signal.removeEventListener('abort', stop));
          }
        }
        return stream;
      },
      put(key: string, body: Buffer): Promise<void> {
        const bytes = Buffer.from(body);
        return conn.request('put', key, () => bucket.putObject(key, bytes), { what: `writing ${where(key)}`, describe: () => `etag ${createHash('md5').update(bytes).digest('hex').slice(0, 8)}` });
      },
      delete(key: string): Promise<void> {
        return conn.request(
          'delete',
          key,
          () => {
            bucket.objects.delete(key);
          },
          { what: `deleting ${where(key)}` },
        );
      },
    };
  }

  list(prefix: string): Promise<ObjectInfo[]> {
    return this.own.list(prefix);
  }
  listFolders(prefix: string): Promise<string[]> {
    return this.own.listFolders(prefix);
  }
  get(key: string, options?: { etag?: string; maxBytes?: number }): Promise<ObjectData | undefined> {
    return this.own.get(key, options);
  }
  open(key: string, options?: OpenOptions): Promise<Readable> {
    return this.own.open(key, options);
  }
  put(key: string, body: Buffer, contentType?: string): Promise<void> {
    return this.own.put(key, body, contentType);
  }
  delete(key: string): Promise<void> {
    return this.own.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The world

export interface SimWorldOptions {
  faults?: FaultRates;
  /** simulated milliseconds a slow answer takes at least (120 000) */
  slowMs?: number;
  /** only these kinds of requests are struck by faults */
  faultKinds?: readonly RequestKind[];
  latency?: Partial<LatencyTable>;
  bucket?: string;
}

/** The clock, the generator, the stores and the history of one simulated run, from one seed. */
export class SimWorld implements SimEnv {
  readonly clock = new VirtualClock();
  readonly random: () => number;
  readonly faults: FaultPlan;
  readonly history: HistoryEntry[] = [];
  readonly latency: LatencyTable;
  readonly registry: SimRegistry;
  readonly bucket: SimBucket;

  constructor(
    readonly seed: number,
    options: SimWorldOptions = {},
  ) {
    this.random = seeded(seed);
    this.latency = { ...DEFAULT_LATENCY, ...options.latency };
    this.faults = new FaultPlan(this.random, options.faults, {
      ...(options.slowMs !== undefined ? { slowMs: options.slowMs } : {}),
      ...(options.faultKinds ? { kinds: options.faultKinds } : {}),
    });
    this.registry = new SimRegistry(this);
    this.bucket = new SimBucket(this, options.bucket);
  }

  /** A connection for one writer or job attempt; faults strike it only when `faulty`. */
  connect(name: string, options: ConnectionOptions = {}): Connection {
    return new Connection(this, name, options);
  }

  /** Runs the clock until `work` settles. */
  run<T>(work: Promise<T>): Promise<T> {
    return this.clock.run(work);
  }

  /** The last `limit` requests, one line each. */
  formatHistory(limit?: number): string {
    return formatHistory(this.history, limit);
  }
}
