/** Builds the I/O a job needs from the configuration: stores for buckets, and the targets. */
import { DirectoryStore } from '../storage/directory-store';
import type { ObjectStore } from '../storage/object-store';
import { S3Store, s3Client } from '../storage/s3-store';
import { layoutTargets } from '../target/oci-layout-target';
import { registryTargets } from '../target/registry-target';
import type { TargetSet } from '../target/target';
import type { Logger } from '../util/log';
import type { Config } from './config';

export interface Runtime {
  config: Config;
  /** the store for a bucket the event names (or the local directory standing in for every bucket) */
  storeFor(bucket: string): ObjectStore;
  targets: TargetSet;
}

export function createRuntime(config: Config, logger: Logger): Runtime {
  const targets =
    config.target.kind === 'oci-layout'
      ? layoutTargets(config.target.dir, logger)
      : registryTargets({
          scheme: config.target.scheme,
          host: config.target.host,
          repository: config.target.repository,
          logger,
          timeoutMs: config.registryTimeoutMs,
          chunkBytes: config.uploadChunkBytes,
          chunkedUploads: config.chunkedUploads,
          maxConsecutiveFailures: config.maxConsecutiveFailures,
          ...(config.credentials ? { credentials: config.credentials } : {}),
        });
  const local = config.sourceDir ? new DirectoryStore(config.sourceDir) : undefined;
  const stores = new Map<string, ObjectStore>();
  return {
    config,
    targets,
    storeFor(bucket) {
      if (local) return local;
      let store = stores.get(bucket);
      if (!store) stores.set(bucket, (store = new S3Store(s3Client(config.s3), bucket)));
      return store;
    },
  };
}
