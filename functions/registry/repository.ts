/**
 * The operations on one repository of a registry, for one job: blobs (HEAD, uploads in blob-upload.ts) and
 * manifests (manifests.ts). Every request goes through the client (auth, retries) with the job's scope.
 */
import { pipeline, type Readable } from 'node:stream';
import { HashingTap, sha256Digest, type Expected } from '../oci/digest';
import { IntegrityError } from '../util/errors';
import type { RegistryClient } from './client';
import { uploadBlob, type BlobUpload, type UploadResult } from './blob-upload';
import type { JobScope, Operation } from './failure-budget';
import { fail, header, type Req, type Res } from './http';
import { getManifest, headManifest, putManifest, type FetchedManifest } from './manifests';
import type { RepositoryAccess } from './repository-access';

export type { BlobUpload, FetchedManifest, UploadResult };

export class RegistryRepository implements RepositoryAccess {
  // The publisher reads and writes its repositories, so one token (pull,push) serves every request; an
  // anonymous token server grants pull only, which still serves the reads.
  readonly scopes: readonly string[];

  constructor(
    readonly client: RegistryClient,
    readonly name: string,
    readonly scope: JobScope,
  ) {
    this.scopes = [`repository:${name}:pull,push`];
  }

  url(path: string): URL {
    return new URL(`${this.client.origin}/v2/${this.name}/${path}`);
  }

  send(req: Omit<Req, 'scopes'>, op?: Operation): Promise<Res> {
    return this.client.send({ ...req, scopes: this.scopes }, this.scope, op);
  }

  async hasBlob(digest: string, op?: Operation): Promise<boolean> {
    const what = `HEAD blob ${this.name}@${digest}`;
    const res = await this.send({ method: 'HEAD', url: this.url(`blobs/${digest}`), what }, op);
    await res.body.dump();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return fail(res, what);
  }

  /** A blob's size as the registry states it (HEAD, Content-Length), or undefined when it has no such blob. */
  async blobSize(digest: string): Promise<number | undefined> {
    const what = `HEAD blob ${this.name}@${digest}`;
    const res = await this.send({ method: 'HEAD', url: this.url(`blobs/${digest}`), what });
    await res.body.dump();
    if (res.status === 404) return undefined;
    if (res.status !== 200) return fail(res, what);
    const length = Number(header(res, 'content-length'));
    if (!Number.isSafeInteger(length) || length < 0) throw new IntegrityError(`${what}: the registry stated no size (Content-Length)`);
    return length;
  }

  /** A small blob, read whole; its digest is checked. */
  async getBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
    const what = `GET blob ${this.name}@${digest}`;
    const { res, bytes } = await this.client.sendAndRead({ method: 'GET', url: this.url(`blobs/${digest}`), scopes: this.scopes, what }, this.scope, maxBytes);
    if (res.status === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.status !== 200 || bytes === undefined) return fail(res, what);
    if (sha256Digest(bytes) !== digest) throw new IntegrityError(`${what}: the registry returned bytes with digest ${sha256Digest(bytes)}`);
    return bytes;
  }

  /**
   * A blob as a stream (GET, following a redirect to storage elsewhere), checked against its digest and the size
   * the registry states while it is read; undefined when the registry has no such blob.
   */
  async openBlob(digest: string): Promise<{ size: number; stream: Readable } | undefined> {
    const what = `GET blob ${this.name}@${digest}`;
    const res = await this.send({ method: 'GET', url: this.url(`blobs/${digest}`), what });
    if (res.status === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.status !== 200) return fail(res, what);
    const size = Number(header(res, 'content-length'));
    if (!Number.isSafeInteger(size) || size < 0) {
      await res.body.dump();
      throw new IntegrityError(`${what}: the registry stated no size (Content-Length)`);
    }
    return { size, stream: checkedStream(res.body as unknown as Readable, { digest, size, what }) };
  }

  uploadBlob(blob: BlobUpload): Promise<UploadResult> {
    return uploadBlob(this, blob);
  }

  headManifest(reference: string): Promise<{ digest?: string; mediaType?: string } | undefined> {
    return headManifest(this, reference);
  }

  getManifest(reference: string): Promise<FetchedManifest | undefined> {
    return getManifest(this, reference);
  }

  putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
    return putManifest(this, bytes, mediaType, reference);
  }
}

/** `source` passed through a tap that fails the stream unless the bytes match `expected` (digest and size). */
export function checkedStream(source: Readable, expected: Expected): Readable {
  const tap = new HashingTap(expected, { failOnMismatch: true });
  // Errors travel both ways: a broken source fails the reader, a reader that stops frees the source.
  pipeline(source, tap, () => undefined);
  return tap;
}
