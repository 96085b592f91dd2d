/**
 * What every kind of file transfer of one build shares: reading from the source (whole, by range, or as several
 * ranged reads at once), the facts remembered about an object (its digest, what it holds) under its ETag, uploads
 * that count what they move and fit in the time left, and passes that are read again after a transient failure.
 *
 * Each kind of file has its module: plain-files.ts (plain files and `.release`), pxe-pass.ts (PXE bundles),
 * archive-pass.ts (container archives). A re-run of the same build finds every blob present by digest and
 * reads nothing.
 */
import { PassThrough, pipeline, Transform, type Readable } from 'node:stream';
import { hashBuffer, sha256Digest, verifyHashed } from '../oci/digest';
import { isRetryable } from '../registry/errors';
import { parallelRanges } from '../storage/parallel-ranges';
import type { SourceFacts } from '../storage/state-store';
import type { BlobSource, Target, UploadResult } from '../target/target';
import { describeError, InputError } from '../util/errors';
import { Limiter } from '../util/limiter';
import type { Logger } from '../util/log';
import type { PublishContext, TransferStats } from './context';
import type { SinglePass } from './single-pass';
import { bytesStreamed } from '../util/young-garbage';

export interface SourceFile {
  name: string;
  key: string;
  md5?: string;
  size: number;
  etag: string;
}

export interface PublishedBlob {
  digest: string;
  size: number;
}

/** Files up to this size are read whole: one request, and the digest is known before any upload. */
export const SMALL_FILE = 4 * 1024 * 1024;
/** A pass over one file that fails on a transient error is run again this often (present blobs are skipped). */
const PASS_ATTEMPTS = 3;

export class FileTransfer {
  /** bounds the uploads of plain files and of whole passes; the uploads inside a pass share its place */
  readonly limiter: Limiter;

  constructor(
    readonly ctx: PublishContext,
    readonly stats: TransferStats,
    readonly log: Logger,
  ) {
    this.limiter = new Limiter(ctx.blobConcurrency);
  }

  what(file: SourceFile): string {
    return `${this.ctx.source.description}/${file.key}`;
  }

  /** Per folder of the source: the objects that facts are remembered for (undefined: the listing failed). */
  private readonly remembered = new Map<string, Promise<Set<string> | undefined>>();

  async facts(file: SourceFile): Promise<SourceFacts | undefined> {
    const folder = file.key.slice(0, file.key.lastIndexOf('/') + 1);
    let known = this.remembered.get(folder);
    if (known === undefined) {
      // A listing that fails costs only the shortcut: each file is then asked for by itself.
      known = this.ctx.state.factsUnder(this.ctx.sourceName, folder).catch(() => undefined);
      this.remembered.set(folder, known);
    }
    if ((await known)?.has(file.key) === false) return undefined;
    return this.ctx.state.getFacts(this.ctx.sourceName, file.key, file.etag);
  }

  async saveFacts(file: SourceFile, facts: Omit<SourceFacts, 'etag'>): Promise<void> {
    try {
      await this.ctx.state.putFacts(this.ctx.sourceName, file.key, { etag: file.etag, ...facts });
    } catch (err) {
      // Only a shortcut for the next run is lost.
      this.log.warn('could not remember what was read', { key: file.key, error: describeError(err) });
    }
  }

  /**
   * Opens a file (or a byte range of it) and counts what is read through a pass-through step. A large object of
   * a store that benefits is read as several ranges at once (S3_READERS), still handed on in order.
   */
  async open(file: SourceFile, range?: { start: number; end: number }): Promise<Readable> {
    const { source, deadline, rangeReaders, rangePartBytes } = this.ctx;
    const stream =
      range === undefined && source.parallelReads && rangeReaders > 1 && file.size >= 2 * rangePartBytes
        ? parallelRanges((start, end, signal) => source.open(file.key, { etag: file.etag, signal, start, end }), file.size, {
            partSize: rangePartBytes,
            readers: rangeReaders,
            signal: deadline.signal,
          })
        : await source.open(file.key, { etag: file.etag, signal: deadline.signal, ...(range ?? {}) });
    const stats = this.stats;
    const counted = new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _encoding, callback) {
        stats.bytesRead += chunk.length;
        bytesStreamed(chunk.length);
        callback(null, chunk);
      },
    });
    // Errors travel both ways: a failing source fails the consumer, a consumer that gives up frees the source.
    pipeline(stream, counted, () => undefined);
    return counted;
  }

  async readRange(file: SourceFile, start: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const chunks: Buffer[] = [];
    for await (const c of await this.open(file, { start, end: start + length - 1 })) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** A small file's bytes, checked against its size and md5, with their digest. */
  async readWhole(file: SourceFile): Promise<{ bytes: Buffer; digest: string }> {
    const data = await this.ctx.source.get(file.key, { etag: file.etag, maxBytes: SMALL_FILE });
    if (!data) throw new InputError(`${this.what(file)} is listed in the build's metadata but does not exist`);
    this.stats.bytesRead += data.bytes.length;
    const md5 = this.ctx.md5Check === 'off' ? undefined : file.md5;
    const seen = verifyHashed(hashBuffer(data.bytes, md5 !== undefined), { what: this.what(file), size: file.size, ...(md5 ? { md5 } : {}) });
    return { bytes: data.bytes, digest: seen.digest };
  }

  /**
   * The md5 to check while a large file streams, or undefined. Hashing costs a core-second per GiB and a half,
   * so with `etag` S3's own MD5 is used where it has one: a single-part object's ETag is its MD5 (and then the
   * bytes need no hash), an object uploaded in parts has none (and is not checked). An ETag that differs (the
   * object is encrypted with SSE-KMS, or really is different) is settled by hashing.
   */
  streamMd5(file: SourceFile): string | undefined {
    if (file.md5 === undefined || this.ctx.md5Check === 'off') return undefined;
    if (this.ctx.md5Check === 'stream') return file.md5;
    if (/^[0-9a-f]{32}$/.test(file.etag)) return file.etag === file.md5 ? undefined : file.md5;
    return undefined;
  }

  /** Uploads unless the target has the blob; counts either way. */
  async ensure(target: Target, blob: BlobSource): Promise<PublishedBlob> {
    if (blob.digest !== undefined && (await target.hasBlob(blob.digest))) {
      this.stats.blobsSkipped++;
      return { digest: blob.digest, size: blob.size };
    }
    const r = await this.upload(target, blob);
    return { digest: r.digest, size: r.size };
  }

  async upload(target: Target, blob: BlobSource): Promise<UploadResult> {
    const deadline = this.ctx.deadline;
    deadline.ensure(`uploading ${blob.what}`, this.stats.estimateMs(blob.size));
    let r: UploadResult;
    const observer = this.ctx.progress;
    const handle = observer?.started(blob.what, blob.size);
    try {
      r = await target.pushBlob({
        ...blob,
        onBytes: (n) => {
          this.stats.uploaded(n);
          if (handle !== undefined) observer?.advanced(handle, n);
        },
      });
    } catch (err) {
      // Stopped at the margin: whichever stream noticed first, the cause is the time.
      if (deadline.signal.aborted) throw deadline.signal.reason;
      throw err;
    } finally {
      if (handle !== undefined) observer?.finished(handle);
    }
    this.stats.blobsUploaded++;
    this.log.debug('blob uploaded', { blob: blob.what, digest: r.digest, size: r.size, target: target.display });
    return r;
  }

  /** `digest`: when the caller hashed the bytes already. */
  ensureBuffer(target: Target, bytes: Buffer, what: string, digest: string = sha256Digest(bytes)): Promise<PublishedBlob> {
    return this.ensure(target, { digest, size: bytes.length, what, open: async () => bufferStream(bytes) });
  }

  /**
   * The upload of a whole file as a part of its pass: with its remembered digest when there is one (then it checks
   * its own bytes), else computing it, and committing only once the pass is intact. `done` runs inside the part,
   * so the pass waits for it too.
   */
  wholeFileUpload(pass: SinglePass, target: Target, file: SourceFile, knownDigest: string | undefined, sink: Readable, done: (r: UploadResult) => unknown): void {
    const md5 = this.streamMd5(file);
    void pass.upload(knownDigest !== undefined, async (beforeCommit) => {
      const r = await this.upload(target, {
        ...(knownDigest ? { digest: knownDigest } : {}),
        size: file.size,
        ...(md5 ? { md5 } : {}),
        what: this.what(file),
        once: true,
        ...(beforeCommit ? { beforeCommit } : {}),
        open: async () => sink,
      });
      await done(r);
    });
  }

  /** Runs a single pass over a file again after a transient failure; blobs it finished are then skipped. */
  async withPassRetries<T>(file: SourceFile, pass: () => Promise<T>): Promise<T> {
    const what = this.what(file);
    for (let attempt = 1; ; attempt++) {
      this.ctx.deadline.ensure(`reading ${what}`, this.stats.estimateMs(file.size));
      try {
        return await pass();
      } catch (err) {
        if (this.ctx.deadline.signal.aborted) throw this.ctx.deadline.signal.reason;
        if (!isRetryable(err) || attempt >= PASS_ATTEMPTS) throw err;
        this.log.warn('reading a file failed, reading it again', { file: what, attempt, error: describeError(err) });
      }
    }
  }
}

export function bufferStream(bytes: Buffer): Readable {
  const s = new PassThrough();
  s.end(bytes);
  return s;
}
