/**
 * Where bytes come from, and where the publisher keeps its records: a bucket, or a local directory laid out like
 * one. The publication code only sees this interface.
 */
import type { Readable } from 'node:stream';

export interface ObjectInfo {
  key: string;
  size: number;
  /** changes whenever the object's bytes change (S3 ETag without quotes; size and mtime locally) */
  etag: string;
  lastModified?: Date;
}

export interface ObjectData {
  bytes: Buffer;
  info: ObjectInfo;
}

export interface OpenOptions {
  /** the object must still be this version: a changed object fails instead of mixing two versions */
  etag?: string;
  /** first byte, inclusive */
  start?: number;
  /** last byte, inclusive */
  end?: number;
  /** stops the read (the job's time is up) */
  signal?: AbortSignal;
}

export interface ObjectStore {
  /** `s3://bucket` or `dir:/path`, for messages */
  readonly description: string;
  /** whether reading one object as several ranges at once can be faster (a network store: yes; a disk: no) */
  readonly parallelReads?: boolean;
  list(prefix: string): Promise<ObjectInfo[]>;
  /** the names of the "folders" directly under `prefix` (which ends with "/"): S3's common prefixes */
  listFolders(prefix: string): Promise<string[]>;
  /** the object, or undefined when there is none */
  get(key: string, options?: { etag?: string; maxBytes?: number }): Promise<ObjectData | undefined>;
  /** a stream of the object's bytes (or of a range of them); fails when the object is missing or changed */
  open(key: string, options?: OpenOptions): Promise<Readable>;
  put(key: string, body: Buffer, contentType?: string): Promise<void>;
  /** removes the object; one that is not there is not an error */
  delete(key: string): Promise<void>;
}

/** S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit. */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
