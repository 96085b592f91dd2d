/** What a publication needs from outside, and what it counts while it runs. */
import type { ObjectStore } from '../storage/object-store';
import type { StateStore } from '../storage/state-store';
import type { TargetSet } from '../target/target';
import type { Logger } from '../util/log';

export interface PublishContext {
  /** the bucket (or directory) the event names */
  source: ObjectStore;
  /** the source's name in the state store's fact keys: the bucket name */
  sourceName: string;
  state: StateStore;
  targets: TargetSet;
  /** container flavor → sub-repository (CONTAINER_REPOSITORIES) */
  containerRepositories: Readonly<Record<string, string>>;
  logger: Logger;
  /** blobs uploaded at once */
  blobConcurrency: number;
  /** check the metadata's md5sum while the bytes stream (costs CPU, catches a corrupt S3 object) */
  verifyMd5: boolean;
}

export class TransferStats {
  bytesUploaded = 0;
  blobsUploaded = 0;
  blobsSkipped = 0;
  /** bytes read from the source, everything included */
  bytesRead = 0;
  manifestsWritten = 0;

  private lastReport = Date.now();
  private reportedBytes = 0;
  private readonly started = Date.now();

  constructor(
    private readonly logger: Logger,
    private readonly totalBytes: () => number,
    private readonly intervalMs = 5_000,
  ) {}

  /** Counts uploaded bytes and logs progress at most every few seconds. */
  uploaded(n: number): void {
    this.bytesUploaded += n;
    const now = Date.now();
    if (now - this.lastReport >= this.intervalMs) {
      const seconds = (now - this.lastReport) / 1000;
      this.logger.info('upload progress', {
        bytesDone: this.bytesUploaded,
        bytesTotal: this.totalBytes(),
        mibPerSecond: Math.round(((this.bytesUploaded - this.reportedBytes) / seconds / 1048576) * 10) / 10,
        elapsedMs: now - this.started,
      });
      this.lastReport = now;
      this.reportedBytes = this.bytesUploaded;
    }
  }
}
