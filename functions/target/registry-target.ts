import type { Credentials } from '../registry/auth';
import type { CredentialSource } from '../registry/credentials';
import { JobScope, RegistryClient } from '../registry/client';
import { RegistryRepository } from '../registry/repository';
import type { RetryPolicy } from '../registry/retry';
import { cosignRepositoryName } from '../signing/cosign-format';
import type { Logger } from '../util/log';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from './target';

export class RegistryTarget implements Target {
  readonly id: string;
  readonly display: string;
  readonly repositoryName: string;

  constructor(private readonly repo: RegistryRepository) {
    this.id = `${repo.client.host}/${repo.name}`;
    this.display = this.id;
    this.repositoryName = cosignRepositoryName(repo.client.host, repo.name);
  }

  fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
    return this.repo.getBlob(digest, maxBytes);
  }

  openBlob(digest: string): Promise<BlobStream | undefined> {
    return this.repo.openBlob(digest);
  }

  blobSize(digest: string): Promise<number | undefined> {
    return this.repo.blobSize(digest);
  }

  hasBlob(digest: string): Promise<boolean> {
    return this.repo.hasBlob(digest);
  }

  pushBlob(blob: BlobSource): Promise<UploadResult> {
    return this.repo.uploadBlob(blob);
  }

  async resolve(reference: string): Promise<string | undefined> {
    const head = await this.repo.headManifest(reference);
    if (head === undefined) return undefined;
    // A registry that leaves out Docker-Content-Digest on HEAD: the bytes say it.
    return head.digest ?? (await this.repo.getManifest(reference))?.digest;
  }

  getManifest(reference: string): Promise<FetchedManifest | undefined> {
    return this.repo.getManifest(reference);
  }

  putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
    return this.repo.putManifest(bytes, mediaType, reference);
  }
}

export interface RegistryTargetOptions {
  scheme: 'http' | 'https';
  host: string;
  repository: string;
  credentials?: Credentials | CredentialSource;
  logger: Logger;
  retry?: RetryPolicy;
  timeoutMs?: number;
  chunkBytes?: number;
  chunkedUploads?: boolean;
  /** failures in a row after which a job stops retrying */
  maxConsecutiveFailures?: number;
  connections?: number;
  /** the smallest chunk the registry takes, when it does not say so itself */
  minChunkBytes?: number;
}

export function registryTargets(options: RegistryTargetOptions): TargetSet {
  const client = new RegistryClient({
    scheme: options.scheme,
    host: options.host,
    logger: options.logger,
    ...(options.credentials ? { credentials: options.credentials } : {}),
    ...(options.retry ? { retry: options.retry } : {}),
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.chunkBytes ? { chunkBytes: options.chunkBytes } : {}),
    ...(options.chunkedUploads ? { chunkedUploads: options.chunkedUploads } : {}),
    ...(options.connections ? { connections: options.connections } : {}),
    ...(options.minChunkBytes ? { minChunkBytes: options.minChunkBytes } : {}),
  });
  const scoped = (scope: JobScope): TargetSet => {
    const targets = new Map<string, RegistryTarget>();
    const get = (name: string): RegistryTarget => {
      let t = targets.get(name);
      if (!t) targets.set(name, (t = new RegistryTarget(new RegistryRepository(client, name, scope))));
      return t;
    };
    return {
      main: get(options.repository),
      repository: (path) => get(`${options.repository}/${path}`),
      forJob: (limits = {}) => scoped(new JobScope(limits.signal, options.maxConsecutiveFailures, limits.timeLeft)),
    };
  };
  return scoped(new JobScope(undefined, options.maxConsecutiveFailures));
}
