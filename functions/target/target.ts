/**
 * Where content goes. The publication code talks to this interface only; a remote registry and a local OCI
 * image layout implement it.
 */
import type { Readable } from 'node:stream';
import type { BlobUpload, UploadResult } from '../registry/blob-upload';
import type { FetchedManifest } from '../registry/manifests';

export type BlobSource = BlobUpload;

export interface BlobStream {
  size: number;
  stream: Readable;
}
export type { FetchedManifest, UploadResult };

export interface Target {
  /** stable identity for the state store: `<host>/<repository>` or `oci-layout-<hash>[/<sub>]` */
  readonly id: string;
  /** for logs and summaries: `127.0.0.1:5000/gl`, `oci-layout:/tmp/out` */
  readonly display: string;
  /**
   * The repository as signatures name it (cosign's `docker-reference`): `<host>/<path>` for a registry, the
   * directory for a layout.
   */
  readonly repositoryName: string;
  hasBlob(digest: string): Promise<boolean>;
  /** a blob's size as the store states it (no download), or undefined when there is none */
  blobSize(digest: string): Promise<number | undefined>;
  /** a small blob's bytes (checked against the digest), or undefined when there is none */
  fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined>;
  /**
   * A blob's bytes as a stream, or undefined when there is none. The stream fails (IntegrityError) unless its
   * bytes match the digest and the stated size, so a consumer that finishes reading has the right bytes.
   */
  openBlob(digest: string, signal?: AbortSignal): Promise<BlobStream | undefined>;
  /** uploads bytes; with an unknown digest it is computed on the way and returned */
  pushBlob(blob: BlobSource): Promise<UploadResult>;
  /** the digest a tag or digest currently resolves to, or undefined */
  resolve(reference: string): Promise<string | undefined>;
  /** a manifest or index by tag or digest, or undefined when there is none (and only then) */
  getManifest(reference: string): Promise<FetchedManifest | undefined>;
  /** stores manifest bytes unchanged under a tag or digest; returns their digest */
  putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string>;
}

export interface JobLimits {
  signal?: AbortSignal;
  /** milliseconds the job's requests may still take */
  timeLeft?: () => number;
}

export interface TargetSet {
  /** the configured repository */
  readonly main: Target;
  /** a sub-repository of it (`<repo>/<path>`), for container flavors mapped elsewhere */
  repository(path: string): Target;
  /**
   * The same targets for one job: its requests stop on `signal`, no wait starts that runs past `timeLeft`, and its
   * failures are counted on their own.
   */
  forJob(limits?: JobLimits): TargetSet;
}
