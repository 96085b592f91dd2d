/** What a publication needs from outside, and what it counts while it runs. */
import type { AliasTemplate } from '../gardenlinux/release-aliases';
import type { Signer } from '../signing/signer';
import type { Clock } from '../util/clock';
import type { ObjectStore } from '../storage/object-store';
import type { StateStore } from '../storage/state-store';
import type { TargetSet } from '../target/target';
import type { Deadline } from '../util/deadline';
import type { Logger } from '../util/log';

/**
 * Told about every blob upload as it goes (the CLI draws a progress line per file from it); the Lambda has none.
 * `started` returns a handle that the other calls name.
 */
export interface TransferObserver {
  started(what: string, size: number): number;
  advanced(handle: number, bytes: number): void;
  finished(handle: number): void;
}

export interface PublishContext {
  /** the bucket (or directory) the event names */
  source: ObjectStore;
  /** the source's name in the state store's fact keys: the bucket name */
  sourceName: string;
  state: StateStore;
  /** where content goes: one destination, or several that each get every file from one read */
  destinations: readonly Destination[];
  /** container flavor → sub-repository (CONTAINER_REPOSITORIES) */
  containerRepositories: Readonly<Record<string, string>>;
  logger: Logger;
  /** blobs uploaded at once */
  blobConcurrency: number;
  /** how files are checked against the metadata's md5sum (see Config.md5Check) */
  md5Check: 'etag' | 'stream' | 'off';
  /** the time the job has; work that does not fit is not started */
  deadline: Deadline;
  /** filled in as the job goes, so a job that fails still reports what it moved */
  counters: JobCounters;
  /** ranged reads at once for one large object of a store that benefits (S3), and their size */
  rangeReaders: number;
  rangePartBytes: number;
  /** signs every artifact manifest pushed (cosign's `.sig`); undefined: no signatures */
  signer?: Signer;
  /** sign the container image manifests too */
  signContainerImages?: boolean;
  /** `org.opencontainers.image.source` of the artifact manifests (IMAGE_SOURCE) */
  imageSource?: string;
  /** uploads as they go, for a person watching */
  progress?: TransferObserver;
  /** release aliases moved after the version index (ALIAS_TAGS) */
  aliasTemplates?: readonly AliasTemplate[];
  /** with several destinations: how long one may take no bytes while the others wait (REGISTRY_TIMEOUT_SECONDS) */
  stallMs?: number;
  /** the clock and random source of the rounds of convergence and aliases (a simulation's; else the system's) */
  clock?: Clock;
  random?: () => number;
}

export interface Destination {
  /** where content goes; requests stop when the job's time is up */
  targets: TargetSet;
  /** the same targets for the version index: they run on into the stop margin, to the deadline's final point */
  indexTargets: TargetSet;
}

export interface JobCounters {
  bytesUploaded: number;
  bytesRead: number;
  blobsUploaded: number;
  blobsSkipped: number;
}

/**
 * Assumed until a job has measured its own upload rate. Not too low: a multi-GB image that an assumption
 * declared too slow would never be started at all.
 */
const ASSUMED_BYTES_PER_MS = (32 * 1024 * 1024) / 1000;
/** Added to every estimate: requests around the bytes (HEAD, POST, PUT, retries). */
const FIXED_OVERHEAD_MS = 3_000;

export class TransferStats {
  bytesUploaded = 0;
  blobsUploaded = 0;
  blobsSkipped = 0;
  /** bytes read from the source, everything included */
  bytesRead = 0;
  manifestsWritten = 0;

  private lastReport: number;
  private reportedBytes = 0;
  private readonly started: number;
  private firstUpload: number | undefined;

  constructor(
    private readonly logger: Logger,
    /** what the whole job moves, for progress lines */
    readonly totalBytes: number,
    private readonly intervalMs = 5_000,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
    this.lastReport = this.started;
  }

  /** How long moving `bytes` should take, from this job's upload rate so far (or a low assumed one). */
  estimateMs(bytes: number): number {
    const elapsed = this.firstUpload === undefined ? 0 : this.now() - this.firstUpload;
    const measured = elapsed >= 1000 ? this.bytesUploaded / elapsed : 0;
    return FIXED_OVERHEAD_MS + bytes / Math.max(measured, ASSUMED_BYTES_PER_MS);
  }

  /** Counts uploaded bytes and logs progress at most every few seconds. */
  uploaded(n: number): void {
    this.firstUpload ??= this.now();
    this.bytesUploaded += n;
    const now = this.now();
    if (now - this.lastReport >= this.intervalMs) {
      const seconds = (now - this.lastReport) / 1000;
      this.logger.info('upload progress', {
        bytesDone: this.bytesUploaded,
        bytesTotal: this.totalBytes,
        mibPerSecond: Math.round(((this.bytesUploaded - this.reportedBytes) / seconds / 1048576) * 10) / 10,
        elapsedMs: now - this.started,
      });
      this.lastReport = now;
      this.reportedBytes = this.bytesUploaded;
    }
  }
}
