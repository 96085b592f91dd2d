import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { SourceError } from '../util/errors';
import { kmsHint } from '../util/kms-hint';
import type { ObjectData, ObjectInfo, ObjectStore, OpenOptions } from './object-store';

export interface S3Settings {
  region?: string;
  /** for S3-compatible stores (and tests): AWS_ENDPOINT_URL_S3 */
  endpoint?: string;
  forcePathStyle?: boolean;
}

const clients = new Map<string, S3Client>();

/** One client per setting, kept for the life of the process (a Lambda container reuses it across events). */
export function s3Client(settings: S3Settings): S3Client {
  const key = JSON.stringify(settings);
  let client = clients.get(key);
  if (!client) {
    client = new S3Client({
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      forcePathStyle: settings.forcePathStyle ?? false,
      // Non-AWS stores mishandle the SDK's default streaming checksums; AWS itself needs none of them here.
      ...(settings.endpoint ? { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' } : {}),
    });
    clients.set(key, client);
  }
  return client;
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

function statusOf(err: unknown): number | undefined {
  return err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
}

function isMissing(err: unknown): boolean {
  return err instanceof S3ServiceException && (err.name === 'NoSuchKey' || err.name === 'NotFound' || statusOf(err) === 404);
}

function isRefused(err: unknown): boolean {
  return err instanceof S3ServiceException && (err.name === 'AccessDenied' || statusOf(err) === 403);
}

function isChanged(err: unknown): boolean {
  return err instanceof S3ServiceException && (err.name === 'PreconditionFailed' || statusOf(err) === 412);
}

function isTransient(err: unknown): boolean {
  const status = statusOf(err);
  return status === undefined || status === 429 || status >= 500 || (err instanceof Error && err.name === 'SlowDown');
}

export class S3Store implements ObjectStore {
  readonly description: string;
  readonly parallelReads = true;

  constructor(
    private readonly client: S3Client,
    readonly bucket: string,
  ) {
    this.description = `s3://${bucket}`;
  }

  /** Fails with S3's answer, and what to do when a KMS key caused it or the caller knows more (`hint`). */
  private fail(action: string, key: string, err: unknown, hint?: string): never {
    const where = `s3://${this.bucket}/${key}`;
    if (isChanged(err)) throw new SourceError(`${action} ${where}: the object changed while it was being published`, { cause: err });
    const s3 = err instanceof S3ServiceException ? ` (${err.name}, HTTP ${statusOf(err) ?? '?'})` : '';
    const why = kmsHint(err) ?? hint;
    throw new SourceError(`${action} ${where} failed${s3}: ${(err as Error).message}${why ? `; ${why}` : ''}`, { cause: err, retryable: isTransient(err) });
  }

  /**
   * What a read refused with 403 was. S3 answers a GET of a missing key with 403 AccessDenied instead of 404 when
   * the request's own context lacks s3:ListBucket, and the deployment grants ListBucket only for some prefixes
   * (s3:prefix), a condition a GET never meets. So a refusal may be a missing key: a listing of the key itself as
   * prefix settles it (allowed, as every key the code reads lies under a prefix it may list). Absent: `missing`.
   * Present, or a listing refused too: the refusal is real and fails the read. A refusal by KMS is about an object
   * that exists.
   */
  private async refusal(key: string, err: unknown): Promise<{ missing: true } | { missing: false; hint?: string }> {
    if (!isRefused(err) || kmsHint(err) !== undefined) return { missing: false };
    let page;
    try {
      page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: key, MaxKeys: 1 }));
    } catch (listErr) {
      const why = isRefused(listErr) ? 's3:ListBucket on its prefix is missing' : (listErr as Error).message;
      return { missing: false, hint: `listing the key, to tell a missing object from a refused read, failed too (${(listErr as Error).name}): ${why}` };
    }
    // Keys are listed in order: the key itself comes before any longer one.
    if (page.Contents?.[0]?.Key !== key) return { missing: true };
    return { missing: false, hint: "the object exists, and the function's role may not read it: s3:GetObject on it is missing, or a bucket policy refuses it" };
  }

  /** Every page of a listing, following continuation tokens; `delimiter` groups keys into common prefixes. */
  private async *listPages(prefix: string, delimiter?: string): AsyncGenerator<ListObjectsV2CommandOutput> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(delimiter ? { Delimiter: delimiter } : {}), ...(token ? { ContinuationToken: token } : {}) }),
        );
      } catch (err) {
        this.fail('listing', prefix, err, isRefused(err) ? "the function's role may not list this prefix: s3:ListBucket for it is missing (its s3:prefix condition)" : undefined);
      }
      yield page;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for await (const page of this.listPages(prefix)) {
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        out.push({ key: o.Key, size: o.Size ?? 0, etag: unquote(o.ETag), ...(o.LastModified ? { lastModified: o.LastModified } : {}) });
      }
    }
    return out;
  }

  async listFolders(prefix: string): Promise<string[]> {
    const out: string[] = [];
    for await (const page of this.listPages(prefix, '/')) {
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) out.push(p.Prefix.slice(prefix.length, -1));
    }
    return out;
  }

  private async getObject(key: string, options: OpenOptions): Promise<GetObjectCommandOutput> {
    const range = options.start !== undefined ? `bytes=${options.start}-${options.end ?? ''}` : undefined;
    return this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ...(range ? { Range: range } : {}),
        ...(options.etag ? { IfMatch: `"${options.etag}"` } : {}),
      }),
      options.signal ? { abortSignal: options.signal } : {},
    );
  }

  async get(key: string, options: { etag?: string; maxBytes?: number } = {}): Promise<ObjectData | undefined> {
    let res: GetObjectCommandOutput;
    try {
      res = await this.getObject(key, options.etag ? { etag: options.etag } : {});
    } catch (err) {
      if (isMissing(err)) return undefined;
      const refused = await this.refusal(key, err);
      if (refused.missing) return undefined;
      this.fail('reading', key, err, refused.hint);
    }
    if (options.etag !== undefined && res.ETag !== undefined && unquote(res.ETag) !== options.etag) {
      (res.Body as Readable | undefined)?.destroy();
      throw new SourceError(`reading s3://${this.bucket}/${key}: the object changed while it was being published`);
    }
    const size = res.ContentLength ?? 0;
    if (options.maxBytes !== undefined && size > options.maxBytes) {
      (res.Body as Readable | undefined)?.destroy();
      throw new SourceError(`s3://${this.bucket}/${key} is ${size} bytes, more than the ${options.maxBytes} expected`);
    }
    let bytes: Buffer;
    try {
      bytes = Buffer.from((await res.Body?.transformToByteArray()) ?? new Uint8Array());
    } catch (err) {
      this.fail('reading', key, err);
    }
    return {
      bytes,
      info: { key, size: bytes.length, etag: unquote(res.ETag), ...(res.LastModified ? { lastModified: res.LastModified } : {}) },
    };
  }

  async open(key: string, options: OpenOptions = {}): Promise<Readable> {
    let res: GetObjectCommandOutput;
    try {
      res = await this.getObject(key, options);
    } catch (err) {
      const refused = isMissing(err) ? { missing: true as const } : await this.refusal(key, err);
      if (refused.missing) throw new SourceError(`s3://${this.bucket}/${key} does not exist`, { cause: err });
      this.fail('reading', key, err, refused.hint);
    }
    // Stores that ignore If-Match (s3rver, some S3-compatible ones) are still caught here.
    if (options.etag !== undefined && res.ETag !== undefined && unquote(res.ETag) !== options.etag) {
      (res.Body as Readable | undefined)?.destroy();
      throw new SourceError(`reading s3://${this.bucket}/${key}: the object changed while it was being published`);
    }
    return res.Body as Readable;
  }

  async put(key: string, body: Buffer, contentType = 'application/json'): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }));
    } catch (err) {
      this.fail('writing', key, err);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      this.fail('deleting', key, err);
    }
  }
}
