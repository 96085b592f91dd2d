/**
 * Moves the files of one build from the source to a target, reading each source byte once:
 *
 * - a plain file streams straight into one upload (small ones are read whole, so an existing blob is found by
 *   its digest before anything is sent);
 * - a PXE bundle streams into its own upload and, at the same time, through gunzip and a tar parser into one
 *   upload per member; nothing of it is committed unless the whole bundle parsed;
 * - a container archive is indexed with ranged reads (headers, index.json, manifest, config) and checked before
 *   anything is written (`inspectArchive`), then streamed once into the upload of the whole archive and, by byte
 *   range, into the image's blob uploads (`transferArchive`).
 *
 * What was learnt from reading an object (its digest, its members, its image) is kept in the state store under
 * the object's ETag; a re-run of the same build finds every blob present by digest and reads nothing. Every
 * upload and pass first checks that it fits in the time left.
 */
import { PassThrough, pipeline, Transform, type Readable, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Parser as TarParser, type ReadEntry } from 'tar';
import { featuresFromRelease } from '../gardenlinux/release-file';
import { inspectContainerArchive, type ArchiveBlob } from '../oci/container-archive';
import { hashBuffer, sha256Digest, verifyHashed } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import { indexTar, normalizeMemberPath, type TarMember } from '../oci/tar-index';
import { isRetryable } from '../registry/errors';
import { parallelRanges } from '../storage/parallel-ranges';
import type { SourceFacts } from '../storage/state-store';
import type { BlobSource, Target, UploadResult } from '../target/target';
import { describeError, InputError } from '../util/errors';
import { Limiter } from '../util/limiter';
import type { Logger } from '../util/log';
import type { PublishContext, TransferStats } from './context';
import { fanOut, type Slice } from './fan-out';

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

export interface ContainerFacts {
  manifest: Descriptor;
  manifestBytes: Buffer;
  platform: { architecture: string; os: string; variant?: string };
}

/** What `inspectArchive` found: the archive and its image are all in place, or this is what must move. */
export type ArchivePlan =
  | { kind: 'present'; archive: PublishedBlob; image: ContainerFacts }
  | { kind: 'transfer'; known?: SourceFacts; image: ContainerFacts; blobs: ArchiveBlob[] };

/** Files up to this size are read whole: one request, and the digest is known before any upload. */
const SMALL_FILE = 4 * 1024 * 1024;
/** A pass over one file that fails on a transient error is run again this often (present blobs are skipped). */
const PASS_ATTEMPTS = 3;

export class FileTransfer {
  /** bounds the uploads of plain files and of whole passes; the uploads inside a pass share its place */
  readonly limiter: Limiter;

  constructor(
    private readonly ctx: PublishContext,
    private readonly stats: TransferStats,
    private readonly log: Logger,
  ) {
    this.limiter = new Limiter(ctx.blobConcurrency);
  }

  private what(file: SourceFile): string {
    return `${this.ctx.source.description}/${file.key}`;
  }

  async facts(file: SourceFile): Promise<SourceFacts | undefined> {
    return this.ctx.state.getFacts(this.ctx.sourceName, file.key, file.etag);
  }

  private async saveFacts(file: SourceFile, facts: Omit<SourceFacts, 'etag'>): Promise<void> {
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
  private async open(file: SourceFile, range?: { start: number; end: number }): Promise<Readable> {
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
        callback(null, chunk);
      },
    });
    // Errors travel both ways: a failing source fails the consumer, a consumer that gives up frees the source.
    pipeline(stream, counted, () => undefined);
    return counted;
  }

  private async readRange(file: SourceFile, start: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const chunks: Buffer[] = [];
    for await (const c of await this.open(file, { start, end: start + length - 1 })) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** A small file's bytes, checked against its size and md5, with their digest. */
  private async readWhole(file: SourceFile): Promise<{ bytes: Buffer; digest: string }> {
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
  private streamMd5(file: SourceFile): string | undefined {
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

  private async upload(target: Target, blob: BlobSource): Promise<UploadResult> {
    const deadline = this.ctx.deadline;
    deadline.ensure(`uploading ${blob.what}`, this.stats.estimateMs(blob.size));
    let r: UploadResult;
    try {
      r = await target.pushBlob({ ...blob, onBytes: (n) => this.stats.uploaded(n) });
    } catch (err) {
      // Stopped at the margin: whichever stream noticed first, the cause is the time.
      if (deadline.signal.aborted) throw deadline.signal.reason;
      throw err;
    }
    this.stats.blobsUploaded++;
    this.log.debug('blob uploaded', { blob: blob.what, digest: r.digest, size: r.size, target: target.display });
    return r;
  }

  /** `digest`: when the caller hashed the bytes already. */
  ensureBuffer(target: Target, bytes: Buffer, what: string, digest: string = sha256Digest(bytes)): Promise<PublishedBlob> {
    return this.ensure(target, { digest, size: bytes.length, what, open: async () => bufferStream(bytes) });
  }

  /** A file with no inner structure. */
  async plain(file: SourceFile, target: Target): Promise<PublishedBlob> {
    const what = this.what(file);
    const known = await this.facts(file);
    if (known) return this.limiter.run(() => this.ensure(target, { digest: known.digest, size: known.size, what, open: () => this.open(file) }));
    if (file.size <= SMALL_FILE) {
      return this.limiter.run(async () => {
        const { bytes, digest } = await this.readWhole(file);
        const blob = await this.ensureBuffer(target, bytes, what, digest);
        await this.saveFacts(file, blob);
        return blob;
      });
    }
    const md5 = this.streamMd5(file);
    const r = await this.limiter.run(() => this.upload(target, { size: file.size, what, ...(md5 ? { md5 } : {}), open: () => this.open(file) }));
    await this.saveFacts(file, { digest: r.digest, size: r.size });
    return { digest: r.digest, size: r.size };
  }

  /** The `.release` file: a plain file whose feature list the artifact manifest needs. */
  async release(file: SourceFile, target: Target): Promise<{ blob: PublishedBlob; features?: string }> {
    const known = await this.facts(file);
    if (known?.features !== undefined) {
      const blob = await this.ensure(target, { digest: known.digest, size: known.size, what: this.what(file), open: () => this.open(file) });
      return { blob, features: known.features };
    }
    const { bytes, digest } = await this.readWhole(file);
    const features = featuresFromRelease(bytes.toString('utf8'));
    const blob = await this.ensureBuffer(target, bytes, this.what(file), digest);
    await this.saveFacts(file, { ...blob, ...(features !== undefined ? { features } : {}) });
    return { blob, ...(features !== undefined ? { features } : {}) };
  }

  /** Runs a single pass over a file again after a transient failure; blobs it finished are then skipped. */
  private async withPassRetries<T>(file: SourceFile, pass: () => Promise<T>): Promise<T> {
    const what = this.what(file);
    for (let attempt = 1; ; attempt++) {
      this.ctx.deadline.ensure(`reading ${what}`, this.stats.estimateMs(file.size));
      try {
        return await pass();
      } catch (err) {
        if (!isRetryable(err) || attempt >= PASS_ATTEMPTS || this.ctx.deadline.signal.aborted) throw err;
        this.log.warn('reading a file failed, reading it again', { file: what, attempt, error: describeError(err) });
      }
    }
  }

  /**
   * A PXE bundle: the bundle itself is a layer, and so is each top-level file inside it (vmlinuz, initrd,
   * cmdline, root.squashfs), titled with its bare name (spec §3).
   */
  async pxeBundle(file: SourceFile, target: Target): Promise<{ bundle: PublishedBlob; members: Array<PublishedBlob & { name: string }> }> {
    const what = this.what(file);
    return this.limiter.run(() =>
      this.withPassRetries(file, async () => {
        const known = await this.facts(file);
        if (known?.members) {
          const present = await Promise.all([known.digest, ...known.members.map((m) => m.digest)].map((d) => target.hasBlob(d)));
          if (present.every(Boolean)) {
            this.stats.blobsSkipped += present.length;
            return { bundle: { digest: known.digest, size: known.size }, members: known.members };
          }
        }
        const needBundle = known === undefined || !(await target.hasBlob(known.digest));
        const md5 = this.streamMd5(file);
        // Opened before any upload starts, so no upload can fail while nobody is waiting for it.
        const source = await this.open(file);
        const uploads: Array<Promise<unknown>> = [];
        const members: Array<PublishedBlob & { name: string }> = [];
        const wholes: Writable[] = [];
        let bundle: PublishedBlob | undefined = known ? { digest: known.digest, size: known.size } : undefined;

        const parser = new TarParser({ strict: true });
        const parserSink = tarParserSink(parser);
        // Any failure (a member upload, the parser, the read) stops every part of the pass.
        const memberSinks: PassThrough[] = [];
        // The first failure of the pass; the parser's own errors are the only ones that mean a bad bundle.
        let abortedBy: unknown;
        const abort = (err: unknown): void => {
          abortedBy ??= err;
          const error = err instanceof Error ? err : new Error(String(err));
          parser.abort(error);
          parserSink.destroy(error);
          for (const m of memberSinks) m.destroy(error);
        };
        const parsed = handled(
          new Promise<void>((resolve, reject) => {
            const bad = (err: Error): void =>
              reject(abortedBy !== undefined ? abortedBy : new InputError(`${what}: not a valid gzip-compressed tar (${err.message})`));
            parser.on('error', bad);
            parser.on('abort', bad);
            parser.on('end', () => resolve());
          }),
        );
        // Nothing of the bundle is committed before the whole of it parsed: a corrupt bundle leaves no blobs.
        const beforeCommit = () => parsed;

        if (needBundle) {
          const sink = passSink();
          wholes.push(sink);
          const blob = { ...(known ? { digest: known.digest } : {}), size: file.size, ...(md5 ? { md5 } : {}), what, once: true, beforeCommit };
          uploads.push(
            handled(
              guard(sink, this.upload(target, { ...blob, open: async () => sink })).then((r) => {
                bundle = { digest: r.digest, size: r.size };
              }),
            ),
          );
        } else this.stats.blobsSkipped++;
        wholes.push(parserSink);

        parser.on('entry', (entry: ReadEntry) => {
          let name: string;
          try {
            name = normalizeMemberPath(entry.path, what);
          } catch (err) {
            abort(err);
            return;
          }
          if (entry.type !== 'File' || name.includes('/') || name === '') {
            if (entry.type === 'File') this.log.warn('PXE bundle member below the top level is not published', { file: what, member: name });
            entry.resume();
            return;
          }
          const size = entry.size;
          const knownMember = known?.members?.find((m) => m.name === name && m.size === size);
          const sink = passSink();
          memberSinks.push(sink);
          entry.pipe(sink);
          const result = (async (): Promise<PublishedBlob> => {
            if (knownMember && (await target.hasBlob(knownMember.digest))) {
              this.stats.blobsSkipped++;
              // Drained, not uploaded; a pass that fails meanwhile destroys the sink, which ends this wait too.
              await finished(sink.resume());
              return knownMember;
            }
            const blob = { ...(knownMember ? { digest: knownMember.digest } : {}), size, what: `${what} member ${name}`, once: true, beforeCommit };
            return this.upload(target, { ...blob, open: async () => sink });
          })();
          uploads.push(
            handled(
              result.then(
                (r) => void members.push({ name, digest: r.digest, size: r.size }),
                (err: unknown) => {
                  abort(err);
                  throw err;
                },
              ),
            ),
          );
        });

        const reading = fanOut(source, wholes, [], file.size, what);
        try {
          await settleAll([reading, parsed, ...uploads], abort);
          // Member uploads are added as the parser reaches them: all are known once it has ended.
          await settleAll(uploads, abort);
        } catch (err) {
          // Nothing of this pass may run on after it has failed.
          await Promise.allSettled(uploads);
          throw err;
        }
        if (bundle === undefined) throw new Error(`${what}: the bundle's digest is unknown after the pass`);
        members.sort((a, b) => (a.name < b.name ? -1 : 1));
        await this.saveFacts(file, { ...(bundle as PublishedBlob), members });
        return { bundle: bundle as PublishedBlob, members };
      }),
    );
  }

  /**
   * A container build's `.oci` archive, before anything is written: which image it holds (checked against
   * every digest it reads), where each blob lies, and whether anything must move at all.
   */
  async inspectArchive(file: SourceFile, glTarget: Target, imageTarget: Target, want: { refName: string; arch: string }): Promise<ArchivePlan> {
    const what = this.what(file);
    const known = await this.facts(file);
    const cachedBytes = known?.container ? Buffer.from(known.container.manifestBytes, 'base64') : undefined;
    // Remembered manifest bytes are used only when they still are what their digest says.
    if (known?.container && cachedBytes && sha256Digest(cachedBytes) === known.container.manifest.digest) {
      const image: ContainerFacts = { manifest: known.container.manifest, manifestBytes: cachedBytes, platform: known.container.platform };
      // A manifest in the registry implies its blobs are there (registries refuse it otherwise).
      const [archivePresent, manifestPresent] = await Promise.all([
        glTarget.hasBlob(known.digest),
        imageTarget.resolve(known.container.manifest.digest).then((d) => d !== undefined),
      ]);
      if (archivePresent && manifestPresent) return { kind: 'present', archive: { digest: known.digest, size: known.size }, image };
    }
    const members = await indexTar((start, length) => this.readRange(file, start, length), file.size, what);
    const inspected = await inspectContainerArchive(members, (m: TarMember) => this.readRange(file, m.offset, m.size), want, what);
    return {
      kind: 'transfer',
      ...(known ? { known } : {}),
      image: {
        manifest: { mediaType: inspected.manifest.mediaType, digest: inspected.manifest.digest, size: inspected.manifest.size },
        manifestBytes: inspected.manifest.bytes,
        platform: inspected.platform,
      },
      blobs: inspected.blobs,
    };
  }

  /**
   * Moves what `inspectArchive` found missing: the archive itself (a layer of the artifact manifest, in
   * `glTarget`) and the image's blobs, byte for byte (in `imageTarget`). The caller pushes the image manifest.
   */
  async transferArchive(file: SourceFile, plan: ArchivePlan, glTarget: Target, imageTarget: Target): Promise<{ archive: PublishedBlob; image: ContainerFacts }> {
    if (plan.kind === 'present') {
      this.stats.blobsSkipped++;
      return { archive: plan.archive, image: plan.image };
    }
    const what = this.what(file);
    const { image } = plan;
    let known = plan.known;
    return this.limiter.run(() =>
      this.withPassRetries(file, async () => {
        const presence = await Promise.all(plan.blobs.map((b) => imageTarget.hasBlob(b.digest)));
        const missing = plan.blobs.filter((_, i) => !presence[i]);
        this.stats.blobsSkipped += plan.blobs.length - missing.length;
        const needArchive = known === undefined || !(await glTarget.hasBlob(known.digest));
        if (!needArchive) this.stats.blobsSkipped++;
        const remember = async (archive: PublishedBlob): Promise<void> => {
          known = { etag: file.etag, ...archive };
          // Saved as soon as the archive is in: a retry then reads only the image blobs still missing.
          await this.saveFacts(file, {
            ...archive,
            container: { manifest: image.manifest, manifestBytes: image.manifestBytes.toString('base64'), platform: image.platform },
          });
        };

        if (needArchive) {
          // One pass: the whole archive to one upload, each missing blob's byte range to its own.
          const md5 = this.streamMd5(file);
          const source = await this.open(file);
          const wholeSink = passSink();
          // Each image blob's upload starts when the read reaches its bytes: one at a time besides the archive's,
          // so a pass never waits for a connection that an upload further on holds (the pool is finite).
          const blobUploads: Array<Promise<unknown>> = [];
          const slices: Slice[] = missing.map((b) => {
            const sink = passSink();
            const upload = { digest: b.digest, size: b.size, what: `${what} blob ${b.digest}`, once: true, open: async () => sink };
            return { start: b.member.offset, end: b.member.offset + b.size, sink, onStart: () => void blobUploads.push(handled(guard(sink, this.upload(imageTarget, upload)))) };
          });
          const reading = handled(fanOut(source, [wholeSink], slices, file.size, what));
          // The archive blob is committed only when every image blob arrived intact: a bad archive leaves nothing.
          const whole = {
            ...(known ? { digest: known.digest } : {}),
            size: file.size,
            ...(md5 ? { md5 } : {}),
            what,
            once: true,
            beforeCommit: async () => {
              await reading;
              await Promise.all(blobUploads);
            },
          };
          const archiveUpload = handled(guard(wholeSink, this.upload(glTarget, { ...whole, open: async () => wholeSink })).then((r) => remember(r)));
          const abortAll = (err: unknown): void => {
            const error = err instanceof Error ? err : new Error(String(err));
            wholeSink.destroy(error);
            for (const sl of slices) sl.sink.destroy(error);
          };
          try {
            await settleAll([reading, archiveUpload], abortAll);
            await settleAll(blobUploads, abortAll);
          } catch (err) {
            await Promise.allSettled([archiveUpload, ...blobUploads]);
            throw err;
          }
        } else {
          // The archive is there already: read only the missing blobs, each from its own range.
          await settleAll(
            missing.map((b) =>
              this.upload(imageTarget, {
                digest: b.digest,
                size: b.size,
                what: `${what} blob ${b.digest}`,
                // An empty blob has no range to read.
                open: async () => (b.size === 0 ? bufferStream(Buffer.alloc(0)) : this.open(file, { start: b.member.offset, end: b.member.offset + b.size - 1 })),
              }),
            ),
            () => undefined,
          );
        }
        const k = known as SourceFacts;
        return { archive: { digest: k.digest, size: k.size }, image };
      }),
    );
  }
}

/**
 * A pipe from the single read of a file to one consumer. Its failures reach the pass through the consumer's
 * upload and the fan-out, so its 'error' event needs no other listener (an unheard one would crash the process).
 */
function passSink(): PassThrough {
  const sink = new PassThrough({ highWaterMark: 1 << 20 });
  sink.on('error', () => undefined);
  return sink;
}

function bufferStream(bytes: Buffer): Readable {
  const s = new PassThrough();
  s.end(bytes);
  return s;
}

/**
 * Marks a promise as handled at once (it is still awaited later): a pass that fails early may never await an
 * upload that fails after it, and that must not surface as an unhandled rejection.
 */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** When an upload fails before it consumed its sink, the sink is destroyed so the reading side stops too. */
function guard<T>(sink: Writable, upload: Promise<T>): Promise<T> {
  return upload.catch((err: unknown) => {
    sink.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });
}

/** Waits for all; on the first failure runs `abort` and, once every promise has settled, rethrows that failure. */
async function settleAll(promises: ReadonlyArray<Promise<unknown>>, abort: (error: unknown) => void): Promise<void> {
  let first: { error: unknown } | undefined;
  await Promise.all(
    promises.map((p) =>
      p.catch((error: unknown) => {
        if (first === undefined) {
          first = { error };
          abort(error);
        }
      }),
    ),
  );
  if (first !== undefined) throw first.error;
}

/** node-tar's parser as a Node Writable, so the fan-out can feed it with backpressure. */
function tarParserSink(parser: TarParser): Writable {
  const sink = passSink();
  sink.on('data', (chunk: Buffer) => {
    if (!parser.write(chunk)) {
      sink.pause();
      parser.once('drain', () => sink.resume());
    }
  });
  sink.on('end', () => parser.end());
  sink.on('error', (err) => parser.abort(err));
  parser.on('abort', (err: Error) => sink.destroy(err));
  return sink;
}
