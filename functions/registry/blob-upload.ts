/**
 * Uploading one blob. With a known digest: POST, then one PUT carrying the whole body. Without: POST, one
 * streamed PATCH while the digest is computed, then a body-less PUT with it. Once the registry refused a large
 * body: POST, PATCH per chunk, PUT (chunk-policy.ts).
 *
 * A failure of the registry or of the connection is not yet a failed upload: the registry may have stored the
 * blob and lost only its answer (a reset after the commit, or a commit of a large blob that outlasts the request
 * timeout). Whenever the digest is known, the blob is asked for (HEAD) before the failure counts. Otherwise the
 * upload restarts from a fresh POST with its source opened again; an upload whose source can be read only once
 * (`once`) leaves the restart to its caller.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { HashingTap, sha256Digest, verifyHashed, type Expected, type Hashed } from '../oci/digest';
import { describeError, errorCode, IntegrityError, someCause } from '../util/errors';
import { isNetworkError, isRetryable, RegistryError } from './errors';
import { JobScope, Operation } from './failure-budget';
import { checkClaimedDigest, errorFrom, fail, header, locationOf, withDigest, type Res } from './http';
import type { RepositoryAccess } from './repository-access';
import { backoffDelay, sleep } from './retry';

export interface BlobUpload {
  /** known digest: the registry verifies it; unknown: computed while the bytes stream through */
  digest?: string;
  size: number;
  /** checked on the way when given (the build metadata's md5sum) */
  md5?: string;
  /** for messages */
  what: string;
  /** opens the bytes from the start; called again for a retry unless `once` */
  open: () => Promise<Readable>;
  once?: boolean;
  onBytes?: (n: number) => void;
  /**
   * Awaited after all bytes were sent and before the upload is committed (when the digest was unknown): a
   * failure here leaves no blob behind. Used to commit a pass's uploads only once all of its bytes proved sound.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * The bytes are hashed and checked against what is expected upstream, by whoever hands out this source (several
   * uploads of one read share one hash): the upload only counts them, and takes their digest from here once all of
   * them have passed. Asked after each open().
   */
  checkedUpstream?: () => Hashed | undefined;
}

/** Counts the bytes of a source checked upstream; fails on a byte more than expected. */
class CountingTap extends Transform {
  private bytes = 0;
  constructor(
    private readonly blob: BlobUpload,
    private readonly upstream: () => Hashed | undefined,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.bytes + chunk.length > this.blob.size) {
      cb(new IntegrityError(`${this.blob.what}: more than the expected ${this.blob.size} bytes`));
      return;
    }
    this.bytes += chunk.length;
    this.blob.onBytes?.(chunk.length);
    cb(null, chunk);
  }

  /** What upstream saw, once every byte went through here. */
  get complete(): Hashed | undefined {
    return this.bytes === this.blob.size ? this.upstream() : undefined;
  }
}

export interface UploadResult {
  digest: string;
  size: number;
  md5?: string;
}

/** What one attempt got to: the digest once known, whether every byte was read, whether the commit was sent. */
interface Progress {
  digest: string | undefined;
  bodySent: boolean;
  committing: boolean;
  /** the commit asked for the blob after failing: no need to ask again */
  asked: boolean;
}

/** What an upload's bytes must prove to be. */
export function expectedOf(blob: BlobUpload): Expected {
  return { what: blob.what, size: blob.size, ...(blob.digest ? { digest: blob.digest } : {}), ...(blob.md5 ? { md5: blob.md5 } : {}) };
}

/** A failure the registry's side caused (an answer, a broken or timed-out connection), not our bytes or our abort. */
function registryFailure(err: unknown): boolean {
  return (err instanceof RegistryError && err.kind === 'registry') || (isNetworkError(err) && !(err instanceof IntegrityError));
}

function isTimeout(err: unknown): boolean {
  return someCause(err, (e) => errorCode(e) === 'UND_ERR_HEADERS_TIMEOUT' || errorCode(e) === 'UND_ERR_BODY_TIMEOUT');
}

/** 413 (a body limit in front of the registry) or 416 (a chunk above the registry's limit). */
function refusedBody(err: unknown): err is RegistryError {
  return err instanceof RegistryError && (err.status === 413 || err.status === 416);
}

export async function uploadBlob(repo: RepositoryAccess, blob: BlobUpload): Promise<UploadResult> {
  const client = repo.client;
  const op = new Operation();
  let minChunk = 0;
  for (let attempt = 1; ; attempt++) {
    let location: URL | undefined;
    const progress: Progress = { digest: blob.digest, bodySent: false, committing: false, asked: false };
    try {
      const started = await startUpload(repo, blob.what, op);
      location = started.location;
      minChunk = Math.max(minChunk, started.minChunk);
      await client.ensureFresh(repo.scopes, repo.scope);
      const chunk = client.chunks.size(minChunk);
      return chunk === undefined ? await uploadWhole(repo, blob, location, progress, op) : await uploadChunks(repo, blob, location, chunk, progress, op);
    } catch (err) {
      // Freed unless a commit was sent: the registry may still be storing the blob from it.
      if (location && !progress.committing) cancelUpload(repo, location);
      const refused = refusedBody(err) && client.chunks.shrink(err.rejectedBytes ?? blob.size, minChunk);
      // A source read once (a pass's sink) must have been read to its end: else its pass would wait for a consumer
      // that has gone. Then the pass is read again, and finds the blob present before it uploads.
      const settled = !blob.once || progress.bodySent;
      if (!refused && progress.digest !== undefined && !progress.asked && settled && registryFailure(err)) {
        if (await blobArrived(repo, progress.digest, progress.committing && isTimeout(err))) {
          client.logger.info('the upload failed, but the registry has the blob', { blob: blob.what, digest: progress.digest, error: describeError(err) });
          return { digest: progress.digest, size: blob.size };
        }
      }
      if (!(refused || isRetryable(err)) || repo.scope.exhausted(op)) throw err;
      if (blob.once) {
        // The bytes cannot be read again here; the caller starts over (now with chunks if that was the issue).
        if (err instanceof RegistryError) throw err.withRetryable(true);
        throw err;
      }
      if (attempt >= client.retry.maxAttempts) throw err;
      const wait = refused ? 0 : ((err instanceof RegistryError ? err.retryAfterMs : undefined) ?? backoffDelay(client.retry, attempt));
      if (err instanceof RegistryError) repo.scope.checkWait(wait, err);
      client.logger.warn('blob upload failed, restarting it', { blob: blob.what, attempt, waitMs: wait, error: describeError(err) });
      await sleep(wait, repo.scope.signal);
    }
  }
}

/**
 * Whether the registry has the blob now. After a commit that timed out it is asked again for as long as a
 * request may take: a large blob can still be on its way into storage.
 */
async function blobArrived(repo: RepositoryAccess, digest: string, wait: boolean): Promise<boolean> {
  const until = Date.now() + (wait ? repo.client.timeoutMs : 0);
  for (let attempt = 1; ; attempt++) {
    try {
      // Its own operation: a HEAD that succeeds must not reset the upload's count of failures.
      if (await repo.hasBlob(digest, new Operation())) return true;
    } catch {
      return false;
    }
    const pause = backoffDelay(repo.client.retry, attempt);
    if (Date.now() + pause > until) return false;
    await sleep(pause, repo.scope.signal);
  }
}

/** Opens an upload session: a body-less request, so credentials are settled before any body is streamed. */
async function startUpload(repo: RepositoryAccess, what: string, op: Operation): Promise<{ location: URL; minChunk: number }> {
  const res = await repo.send({ method: 'POST', url: repo.url('blobs/uploads/'), headers: { 'content-length': '0' }, what: `POST upload for ${what}` }, op);
  if (res.status !== 202) return fail(res, `POST upload for ${what}`);
  await res.body.dump();
  const minChunk = Number(header(res, 'oci-chunk-min-length') ?? 0);
  return { location: locationOf(res, `POST upload for ${what}`), minChunk: Number.isFinite(minChunk) ? minChunk : 0 };
}

/**
 * A source closed before its upload began (its pass failed meanwhile) would feed a request nothing, not even an
 * end: the request would wait for ever. It is refused instead.
 */
function opened(source: Readable, what: string): Readable {
  if (source.destroyed) {
    throw source.errored ?? new Error(`${what}: the source was closed before the upload started`);
  }
  return source;
}

/** One request carries the whole body: a PUT when the digest is known, else a PATCH and a body-less PUT. */
async function uploadWhole(repo: RepositoryAccess, blob: BlobUpload, start: URL, progress: Progress, op: Operation): Promise<UploadResult> {
  if (blob.size === 0) return uploadEmpty(repo, blob, start, progress, op);
  const body = blob.checkedUpstream
    ? new CountingTap(blob, blob.checkedUpstream)
    : new HashingTap(expectedOf(blob), { failOnMismatch: true, ...(blob.onBytes ? { onBytes: blob.onBytes } : {}) });
  const source = opened(await blob.open(), blob.what);
  // The first error on the body's side (the source failing, or the tap finding bad bytes) is the cause; the
  // request only reports that its body went away.
  let bodyError: unknown;
  body.once('error', (err) => (bodyError ??= err));
  source.once('error', (err) => body.destroy(err));
  source.pipe(body);
  // Success is judged from the answer and the tap's result, which is final at the last byte: no end-of-stream
  // event is awaited, since the HTTP client may close the body as soon as it has the answer.
  const sent = (): Hashed => {
    if (bodyError) throw bodyError;
    const seen = body.complete;
    if (!seen) throw new IntegrityError(`${blob.what}: the registry answered before all ${blob.size} bytes were sent`);
    return seen;
  };
  try {
    const send = async (method: 'PUT' | 'PATCH', url: URL): Promise<Res> => {
      try {
        return await repo.send(
          { method, url, headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) }, body, what: `${method} ${blob.what}` },
          op,
        );
      } catch (err) {
        throw bodyError ?? err;
      }
    };
    if (blob.digest) {
      // This PUT is the commit: once sent, the registry may store the blob whatever becomes of its answer.
      progress.committing = true;
      const res = await send('PUT', withDigest(start, blob.digest));
      if (res.status === 413 || res.status === 416) throw await tooLarge(res, `PUT ${blob.what}`, blob.size);
      await finish(res, blob.digest, `PUT ${blob.what}`);
      // The tap checked the bytes against blob.digest.
      return sent();
    }
    const res = await send('PATCH', start);
    if (res.status === 413 || res.status === 416) throw await tooLarge(res, `PATCH ${blob.what}`, blob.size);
    if (res.status !== 202 && res.status !== 201) return await fail(res, `PATCH ${blob.what}`);
    await res.body.dump();
    const seen = sent();
    progress.digest = seen.digest;
    await blob.beforeCommit?.();
    await commit(repo, header(res, 'location') ? locationOf(res, `PATCH ${blob.what}`) : start, seen.digest, blob.what, progress, op);
    return seen;
  } finally {
    progress.bodySent = body.complete !== undefined;
    source.destroy();
    body.destroy();
  }
}

/**
 * A blob of no bytes: an HTTP client may never read (or may drop) a stream body of length 0, so the source is
 * only checked to be empty and the upload is committed without a body.
 */
async function uploadEmpty(repo: RepositoryAccess, blob: BlobUpload, start: URL, progress: Progress, op: Operation): Promise<UploadResult> {
  const source = opened(await blob.open(), blob.what);
  let bytes = 0;
  for await (const chunk of source) bytes += (chunk as Buffer).length;
  progress.bodySent = true;
  const seen = verifyHashed({ digest: sha256Digest(Buffer.alloc(0)), size: bytes }, { what: blob.what, size: 0, ...(blob.digest ? { digest: blob.digest } : {}) });
  progress.digest = seen.digest;
  await blob.beforeCommit?.();
  await commit(repo, start, seen.digest, blob.what, progress, op);
  return { digest: seen.digest, size: 0 };
}

/** PATCH after PATCH, each chunk with its Content-Range, then a body-less PUT with the digest. */
async function uploadChunks(repo: RepositoryAccess, blob: BlobUpload, start: URL, chunkSize: number, progress: Progress, op: Operation): Promise<UploadResult> {
  const sha: Hash = createHash('sha256');
  const md5: Hash | undefined = blob.md5 ? createHash('md5') : undefined;
  const source = opened(await blob.open(), blob.what);
  let location = start;
  let offset = 0;
  try {
    for await (const chunk of chunksOf(source, chunkSize)) {
      sha.update(chunk);
      md5?.update(chunk);
      if (offset + chunk.length > blob.size) throw new IntegrityError(`${blob.what}: more than the expected ${blob.size} bytes`);
      const what = `PATCH ${blob.what} bytes ${offset}-${offset + chunk.length - 1}`;
      // A chunk is not replayed: registries (distribution 2.x) cancel a session whose offsets go wrong.
      const res = await repo.send(
        {
          method: 'PATCH',
          url: location,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(chunk.length), 'content-range': `${offset}-${offset + chunk.length - 1}` },
          body: chunk,
          replayable: false,
          what,
        },
        op,
      );
      if (res.status === 413 || res.status === 416) throw await tooLarge(res, what, chunk.length);
      if (res.status !== 202 && res.status !== 201) return await fail(res, what);
      await res.body.dump();
      if (header(res, 'location')) location = locationOf(res, what);
      offset += chunk.length;
      blob.onBytes?.(chunk.length);
    }
    progress.bodySent = true;
  } finally {
    source.destroy();
  }
  const seen = verifyHashed({ digest: `sha256:${sha.digest('hex')}`, size: offset, ...(md5 ? { md5: md5.digest('hex') } : {}) }, expectedOf(blob));
  progress.digest = seen.digest;
  await blob.beforeCommit?.();
  await commit(repo, location, seen.digest, blob.what, progress, op);
  return seen;
}

async function tooLarge(res: Res, what: string, bytes: number): Promise<RegistryError> {
  const err = await errorFrom(res, what);
  err.rejectedBytes = bytes;
  return err;
}

/**
 * The body-less PUT that commits an upload. Its failures are settled here rather than by replaying it blindly:
 * a commit whose answer was lost may have stored the blob (then a replay only finds the session gone, 404
 * BLOB_UPLOAD_UNKNOWN), so the blob is asked for first; a commit that never arrived is sent again.
 */
async function commit(repo: RepositoryAccess, location: URL, digest: string, what: string, progress: Progress, op: Operation): Promise<void> {
  progress.committing = true;
  for (let attempt = 1; ; attempt++) {
    try {
      const put = await repo.send({ method: 'PUT', url: withDigest(location, digest), headers: { 'content-length': '0' }, retries: false, what: `PUT ${what}` }, op);
      await finish(put, digest, `PUT ${what}`);
      return;
    } catch (err) {
      if (!registryFailure(err)) throw err;
      if (await blobArrived(repo, digest, isTimeout(err))) {
        repo.client.logger.info('the commit of an upload failed, but the registry has the blob', { blob: what, digest, error: describeError(err) });
        return;
      }
      progress.asked = true;
      // 404: the session is over (the registry dropped it), and the blob is not there: a new upload can help.
      if (err instanceof RegistryError && err.status === 404) throw err.withRetryable(true);
      if (!isRetryable(err) || repo.scope.exhausted(op) || attempt >= repo.client.retry.maxAttempts) throw err;
      const wait = (err instanceof RegistryError ? err.retryAfterMs : undefined) ?? backoffDelay(repo.client.retry, attempt);
      if (err instanceof RegistryError) repo.scope.checkWait(wait, err);
      repo.client.logger.warn('the commit of an upload failed, sending it again', { blob: what, attempt, waitMs: wait, error: describeError(err) });
      await sleep(wait, repo.scope.signal);
    }
  }
}

async function finish(res: Res, digest: string, what: string): Promise<void> {
  if (res.status !== 201 && res.status !== 200 && res.status !== 204) return fail(res, what);
  await res.body.dump();
  checkClaimedDigest(res, digest, what);
}

/** Best effort: frees the registry's upload state after a failure. Never waited for, never fatal. */
function cancelUpload(repo: RepositoryAccess, location: URL): void {
  repo.client
    .send({ method: 'DELETE', url: location, scopes: repo.scopes, what: 'DELETE upload' }, new JobScope())
    .then((res) => res.body.dump())
    .catch(() => undefined);
}

/** Reads a stream in pieces of exactly `size` bytes (the last one shorter). */
async function* chunksOf(source: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const data of source) {
    let buf = data as Buffer;
    while (have + buf.length >= size) {
      const take = size - have;
      parts.push(buf.subarray(0, take));
      yield Buffer.concat(parts, size);
      parts = [];
      have = 0;
      buf = buf.subarray(take);
    }
    if (buf.length > 0) {
      parts.push(buf);
      have += buf.length;
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}
