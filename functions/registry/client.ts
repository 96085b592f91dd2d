/**
 * A client for the OCI distribution API over undici. One client serves one registry host and is shared by the
 * jobs of a process (connections and tokens are reused); `repository(name, scope)` gives the operations on one
 * repository for one job, whose scope carries the job's abort signal and failure budget.
 *
 * - Authentication: see auth.ts. A streamed body is only sent after a body-less request has settled the
 *   credentials, and with a token that outlives the upload.
 * - Retries: network errors, 408, 429 (Retry-After honoured) and 5xx, with backoff. Requests whose body is a
 *   stream are not replayed here: a blob upload restarts as a whole from a fresh POST, re-opening its source.
 *   A job's consecutive failures are counted; past the limit a failure is final, so a registry that is down
 *   fails the job in seconds instead of retrying every request.
 * - Uploads: one streamed request per blob; a registry that refuses large bodies (413) is answered with chunked
 *   uploads from then on, the chunk size shrinking until it is accepted.
 * - Redirects of GET/HEAD are followed by hand so `Authorization` never goes to another origin.
 * - Every manifest read or written is checked against its digest.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { HashingTap, isDigest, sha256Digest, verifyHashed, type Expected, type Hashed } from '../oci/digest';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types';
import { describeError, IntegrityError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import { Authenticator, type Credentials } from './auth';
import type { CredentialSource } from './credentials';
import { isNetworkError, isRetryable, isRetryableStatus, RegistryError } from './errors';
import { backoffDelay, DEFAULT_RETRY, retryAfterMs, sleep, type RetryPolicy } from './retry';

export interface RegistryClientOptions {
  scheme: 'http' | 'https';
  /** host with optional port, as in the image reference */
  host: string;
  credentials?: Credentials | CredentialSource;
  logger: Logger;
  retry?: RetryPolicy;
  /** idle limit while waiting for response headers or body bytes */
  timeoutMs?: number;
  /** chunk size once chunked uploads are needed (or from the start with `chunkedUploads`) */
  chunkBytes?: number;
  chunkedUploads?: boolean;
  /** connections per origin (default 32) */
  connections?: number;
  dispatcher?: Dispatcher;
}

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
   * failure here leaves no blob behind. Used to commit an archive's blobs only once the archive proved sound.
   */
  beforeCommit?: () => Promise<void>;
}

export interface UploadResult {
  digest: string;
  size: number;
  md5?: string;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

/** Per job: its abort signal, and the count of the registry's consecutive failures. */
export class JobScope {
  private consecutive = 0;

  constructor(
    readonly signal?: AbortSignal,
    readonly maxConsecutiveFailures = 8,
  ) {}

  succeeded(): void {
    this.consecutive = 0;
  }

  /** Counts a failure worth retrying; once too many came in a row, returns it as final instead. */
  failed(err: RegistryError): RegistryError {
    this.consecutive++;
    if (this.consecutive < this.maxConsecutiveFailures) return err;
    return err.withRetryable(false, `${err.message} (the registry failed ${this.consecutive} times in a row; giving up)`);
  }

  get exhausted(): boolean {
    return this.consecutive >= this.maxConsecutiveFailures;
  }

  throwIfAborted(): void {
    if (this.signal?.aborted) throw this.signal.reason instanceof Error ? this.signal.reason : new Error('aborted');
  }
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface Req {
  method: Method;
  url: URL;
  headers?: Record<string, string>;
  /** a Buffer is replayed on retries (unless `replayable` is false); a stream is sent once */
  body?: Buffer | Readable;
  replayable?: boolean;
  scopes: readonly string[];
  /** names the request in errors, e.g. "PUT manifest gl:1877.3" */
  what: string;
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  url: URL;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_ERROR_BODY = 8 * 1024;
const DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024;
/** Chunks are never made smaller than this when a registry refuses large bodies. */
const MIN_FALLBACK_CHUNK = 1024 * 1024;
const USER_AGENT = 'gardenlinux-oci-publisher';

function header(res: Res, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The URL without its query: upload URLs carry state tokens that are noise in a message. */
function shortUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

async function readLimited(body: Res['body'], limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += (chunk as Buffer).length;
    if (n > limit) {
      body.destroy();
      throw new RegistryError(`${what}: the response is larger than ${limit} bytes`, { code: 'SIZE_INVALID' });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Turns an unexpected answer into a RegistryError carrying the registry's own error code and message. */
async function errorFrom(res: Res, what: string): Promise<RegistryError> {
  let text = '';
  try {
    text = (await readLimited(res.body, MAX_ERROR_BODY, what)).toString('utf8');
  } catch {
    // the status alone still says enough
  }
  let code =
    res.status === 401 ? 'UNAUTHORIZED' : res.status === 403 ? 'DENIED' : res.status === 429 ? 'TOOMANYREQUESTS' : res.status === 413 ? 'SIZE_INVALID' : 'UNKNOWN';
  let detail = '';
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = parsed.errors?.[0];
    if (first && typeof first.code === 'string') {
      code = first.code;
      detail = typeof first.message === 'string' ? first.message : '';
    }
  } catch {
    detail = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  }
  const wait = retryAfterMs(header(res, 'retry-after'));
  return new RegistryError(`${what}: HTTP ${res.status} ${code}${detail ? `: ${detail}` : ''}`, {
    status: res.status,
    code,
    retryable: isRetryableStatus(res.status),
    ...(wait !== undefined ? { retryAfterMs: wait } : {}),
  });
}

/** Registries name the digest they stored; one that differs from the bytes' own is an integrity failure. */
function checkClaimedDigest(res: Res, digest: string, what: string): void {
  const claimed = header(res, 'docker-content-digest');
  if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
    throw new IntegrityError(`${what}: the registry says ${claimed}, the bytes have ${digest}`);
  }
}

function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || (err as { code?: unknown }).code === 'UND_ERR_ABORTED');
}

export class RegistryClient {
  readonly origin: string;
  private readonly auth: Authenticator;
  readonly retry: RetryPolicy;
  private readonly dispatcher: Dispatcher;
  private readonly timeoutMs: number;
  /** set once the registry refused a large body; then every upload is chunked */
  private chunkBytes: number | undefined;

  constructor(private readonly options: RegistryClientOptions) {
    this.origin = `${options.scheme}://${options.host}`;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.dispatcher = options.dispatcher ?? new Agent({ connections: options.connections ?? 32, keepAliveTimeout: 30_000 });
    this.auth = new Authenticator(options.credentials, (url, headers, ctx) => this.tokenRequest(url, headers, ctx as JobScope), {
      httpsOnly: options.scheme === 'https',
    });
    if (options.chunkedUploads) this.chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  }

  get host(): string {
    return this.options.host;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  repository(name: string, scope: JobScope = new JobScope()): RegistryRepository {
    return new RegistryRepository(this, name, scope);
  }

  async close(): Promise<void> {
    if (!this.options.dispatcher) await this.dispatcher.close();
  }

  /** The chunk size for the next chunked upload, or undefined while single uploads work. */
  chunkSize(minimum: number): number | undefined {
    return this.chunkBytes === undefined ? undefined : Math.max(this.chunkBytes, minimum);
  }

  /**
   * The registry refused a body of `rejected` bytes: upload in chunks from now on, smaller than that one. False
   * when chunks cannot get smaller (the registry's minimum, or the floor).
   */
  shrinkChunks(rejected: number, minimum: number): boolean {
    const next = Math.max(Math.floor(Math.min(rejected, this.chunkBytes ?? this.options.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 2), minimum, MIN_FALLBACK_CHUNK);
    if (next >= rejected) return false;
    this.chunkBytes = next;
    this.options.logger.warn('the registry refuses large request bodies: uploading in chunks', { registry: this.host, chunkBytes: next });
    return true;
  }

  private timeouts(scope: JobScope | undefined) {
    return {
      dispatcher: this.dispatcher,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      ...(scope?.signal ? { signal: scope.signal } : {}),
    };
  }

  /** Token requests go through the same retry policy, without registry authentication. */
  private async tokenRequest(url: URL, headers: Record<string, string>, scope: JobScope | undefined): Promise<{ status: number; body: string }> {
    for (let attempt = 1; ; attempt++) {
      scope?.throwIfAborted();
      let failure: RegistryError;
      try {
        const res = await request(url, { method: 'GET', headers: { 'user-agent': USER_AGENT, ...headers }, ...this.timeouts(scope) });
        const body = (await readLimited(res.body as Res['body'], 256 * 1024, `token from ${url.origin}`)).toString('utf8');
        if (!isRetryableStatus(res.statusCode)) {
          scope?.succeeded();
          return { status: res.statusCode, body };
        }
        const asked = retryAfterMs(res.headers['retry-after']);
        failure = new RegistryError(`token request to ${url.origin}: HTTP ${res.statusCode}`, {
          status: res.statusCode,
          code: 'UNKNOWN',
          retryable: true,
          ...(asked !== undefined ? { retryAfterMs: asked } : {}),
        });
      } catch (err) {
        if (err instanceof PublishError) throw err;
        if (isAbort(err)) scope?.throwIfAborted();
        failure = new RegistryError(`token request to ${url.origin}: ${describeError(err)}`, { code: 'NETWORK', retryable: isNetworkError(err), cause: err });
        if (!failure.retryable) throw failure;
      }
      const wait = this.nextAttempt(failure, attempt, scope);
      this.options.logger.warn('token request failed, retrying', { url: shortUrl(url), error: failure.message, attempt, waitMs: wait });
      await sleep(wait, scope?.signal);
    }
  }

  /**
   * After a failed attempt: counts the failure against the job, and returns how long to wait before the next
   * attempt, or throws the failure when it is final (not retryable, too many in a row, attempts used up, a body
   * that cannot be sent again, or a Retry-After longer than is waited for).
   */
  private nextAttempt(failure: RegistryError, attempt: number, scope: JobScope | undefined, replayable = true): number {
    const counted = scope ? scope.failed(failure) : failure;
    const asked = failure.retryAfterMs;
    if (!counted.retryable || !replayable || attempt >= this.retry.maxAttempts || (asked ?? 0) > this.retry.maxRetryAfterMs) throw counted;
    return asked ?? backoffDelay(this.retry, attempt);
  }

  /** Prepares a long request: a Bearer token is renewed now if it could expire while the body streams. */
  async ensureFresh(scopes: readonly string[], scope: JobScope): Promise<void> {
    await this.auth.ensureFresh(this.host, scopes, scope);
  }

  /** Sends one request with authentication, redirects and (for replayable bodies) retries. */
  async send(req: Req, scope: JobScope): Promise<Res> {
    const replayable = req.replayable ?? (req.body === undefined || Buffer.isBuffer(req.body));
    let url = req.url;
    let attempt = 0;
    let challenges = 0;
    /** 401s to this request although it carried credentials */
    let refused = 0;
    let redirects = 0;
    for (;;) {
      attempt++;
      scope.throwIfAborted();
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...req.headers };
      const sameOrigin = url.origin === this.origin;
      if (sameOrigin) {
        const authorization = await this.auth.authorization(this.host, req.scopes, scope);
        if (authorization) headers.authorization = authorization;
      }
      const started = Date.now();
      let res: Res;
      try {
        const r = await request(url, {
          method: req.method,
          headers,
          body: req.body ?? (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH' ? '' : undefined),
          ...this.timeouts(scope),
        });
        res = { status: r.statusCode, headers: r.headers, body: r.body as Res['body'], url };
      } catch (err) {
        if (err instanceof PublishError) throw err;
        if (isAbort(err)) scope.throwIfAborted();
        const network = isNetworkError(err);
        const failure = new RegistryError(`${req.what}: ${describeError(err)}`, { code: 'NETWORK', retryable: network, cause: err });
        if (!network) throw failure;
        const wait = this.nextAttempt(failure, attempt, scope, replayable);
        this.options.logger.warn('registry request failed, retrying', { request: req.what, error: describeError(err), attempt, waitMs: wait });
        await sleep(wait, scope.signal);
        continue;
      }
      this.options.logger.debug('registry request', { method: req.method, url: shortUrl(url), status: res.status, ms: Date.now() - started });

      if (res.status === 401 && sameOrigin) {
        await res.body.dump();
        // Anonymous, then with credentials, then (once) with credentials fetched anew: three at most.
        if (++challenges > 3) {
          const challenge = header(res, 'www-authenticate');
          throw new RegistryError(`${req.what}: HTTP 401 UNAUTHORIZED after renewing the credentials${challenge ? ` (challenge: ${challenge})` : ''}`, {
            status: 401,
            code: 'UNAUTHORIZED',
          });
        }
        if (headers.authorization !== undefined) refused++;
        await this.auth.onChallenge(this.host, header(res, 'www-authenticate'), req.scopes, headers.authorization !== undefined, scope, refused);
        if (!replayable) {
          // The streamed body is gone; the caller restarts its upload, now with credentials in place.
          throw new RegistryError(`${req.what}: the registry asked for new credentials during an upload`, {
            status: 401,
            code: 'UNAUTHORIZED',
            retryable: true,
          });
        }
        attempt--;
        continue;
      }

      if (REDIRECTS.has(res.status) && (req.method === 'GET' || req.method === 'HEAD')) {
        const location = header(res, 'location');
        await res.body.dump();
        if (!location || ++redirects > 5) {
          throw new RegistryError(`${req.what}: HTTP ${res.status} redirect ${location ? 'loop' : 'without Location'}`, { status: res.status, code: 'UNKNOWN' });
        }
        // Authorization is only attached above when the new URL has the registry's own origin.
        url = new URL(location, url);
        attempt--;
        continue;
      }

      if (isRetryableStatus(res.status)) {
        const failure = await errorFrom(res, req.what);
        const wait = this.nextAttempt(failure, attempt, scope, replayable);
        this.options.logger.warn('registry request failed, retrying', { request: req.what, status: res.status, code: failure.code, attempt, waitMs: wait });
        await sleep(wait, scope.signal);
        continue;
      }
      scope.succeeded();
      return res;
    }
  }

  /**
   * A GET whose body is read here: a connection that breaks while the body arrives is retried like one that
   * breaks before, since a read can be repeated.
   */
  async sendAndRead(req: Req, scope: JobScope, limit: number): Promise<{ res: Res; bytes?: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.send(req, scope);
      if (res.status !== 200) return { res };
      try {
        return { res, bytes: await readLimited(res.body, limit, req.what) };
      } catch (err) {
        if (err instanceof PublishError || !isNetworkError(err)) throw err;
        const failure = new RegistryError(`${req.what}: ${describeError(err)}`, { code: 'NETWORK', retryable: true, cause: err });
        await sleep(this.nextAttempt(failure, attempt, scope), scope.signal);
      }
    }
  }

  async fail(res: Res, what: string): Promise<never> {
    throw await errorFrom(res, what);
  }
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

/** What an upload's bytes must prove to be. */
export function expectedOf(blob: BlobUpload): Expected {
  return { what: blob.what, size: blob.size, ...(blob.digest ? { digest: blob.digest } : {}), ...(blob.md5 ? { md5: blob.md5 } : {}) };
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

export class RegistryRepository {
  // The publisher reads and writes its repositories, so one token (pull,push) serves every request; an
  // anonymous token server grants pull only, which still serves the reads.
  private readonly scopes: readonly string[];

  constructor(
    readonly client: RegistryClient,
    readonly name: string,
    readonly scope: JobScope,
  ) {
    this.scopes = [`repository:${name}:pull,push`];
  }

  private url(path: string): URL {
    return new URL(`${this.client.origin}/v2/${this.name}/${path}`);
  }

  private send(req: Omit<Req, 'scopes'>): Promise<Res> {
    return this.client.send({ ...req, scopes: this.scopes }, this.scope);
  }

  async hasBlob(digest: string): Promise<boolean> {
    const what = `HEAD blob ${this.name}@${digest}`;
    const res = await this.send({ method: 'HEAD', url: this.url(`blobs/${digest}`), what });
    await res.body.dump();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return this.client.fail(res, what);
  }

  async headManifest(reference: string): Promise<{ digest?: string; mediaType?: string } | undefined> {
    const what = `HEAD manifest ${this.name}:${reference}`;
    // Always the full Accept list: registries answer 404 for a manifest type it lacks.
    const res = await this.send({ method: 'HEAD', url: this.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT }, what });
    await res.body.dump();
    if (res.status === 404) return undefined;
    if (res.status !== 200) return this.client.fail(res, what);
    const digest = header(res, 'docker-content-digest');
    const mediaType = header(res, 'content-type')?.split(';')[0]?.trim();
    return { ...(digest ? { digest } : {}), ...(mediaType ? { mediaType } : {}) };
  }

  /** The manifest at a tag or digest, or undefined on 404 (and only then: spec §5). */
  async getManifest(reference: string): Promise<FetchedManifest | undefined> {
    const what = `GET manifest ${this.name}:${reference}`;
    const { res, bytes } = await this.client.sendAndRead(
      { method: 'GET', url: this.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT }, scopes: this.scopes, what },
      this.scope,
      2 * MAX_MANIFEST_BYTES,
    );
    if (res.status === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.status !== 200 || bytes === undefined) return this.client.fail(res, what);
    const digest = sha256Digest(bytes);
    if (isDigest(reference) && reference !== digest) {
      throw new IntegrityError(`${what}: the registry returned bytes with digest ${digest}`);
    }
    checkClaimedDigest(res, digest, what);
    let body: { mediaType?: unknown };
    try {
      body = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
      if (body === null || typeof body !== 'object') throw new Error('not an object');
    } catch {
      throw new RegistryError(`${what}: the registry returned something that is not a JSON manifest`, { status: 200, code: 'MANIFEST_INVALID' });
    }
    let mediaType = header(res, 'content-type')?.split(';')[0]?.trim();
    if (!mediaType || mediaType === 'application/json' || mediaType === 'application/octet-stream') {
      mediaType = typeof body.mediaType === 'string' ? body.mediaType : undefined;
    }
    if (!mediaType) throw new RegistryError(`${what}: the registry did not say what the manifest is`, { status: 200, code: 'MANIFEST_INVALID' });
    return { bytes, mediaType, digest };
  }

  /** PUTs manifest bytes exactly as given; returns their digest after checking the registry's. */
  async putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
    const what = `PUT manifest ${this.name}:${reference}`;
    if (bytes.length > MAX_MANIFEST_BYTES) {
      throw new RegistryError(`${what}: ${bytes.length} bytes is above the 4 MiB registries accept`, { code: 'SIZE_INVALID' });
    }
    const digest = sha256Digest(bytes);
    const res = await this.send({ method: 'PUT', url: this.url(`manifests/${reference}`), headers: { 'content-type': mediaType }, body: bytes, what });
    if (res.status !== 201 && res.status !== 200) return this.client.fail(res, what);
    await res.body.dump();
    checkClaimedDigest(res, digest, what);
    return digest;
  }

  /** Opens an upload session: a body-less request, so credentials are settled before any body is streamed. */
  private async startUpload(what: string): Promise<{ location: URL; minChunk: number }> {
    const res = await this.send({ method: 'POST', url: this.url('blobs/uploads/'), headers: { 'content-length': '0' }, what: `POST upload for ${what}` });
    if (res.status !== 202) return this.client.fail(res, `POST upload for ${what}`);
    await res.body.dump();
    const minChunk = Number(header(res, 'oci-chunk-min-length') ?? 0);
    return { location: this.location(res, `POST upload for ${what}`), minChunk: Number.isFinite(minChunk) ? minChunk : 0 };
  }

  private location(res: Res, what: string): URL {
    const loc = header(res, 'location');
    if (!loc) throw new RegistryError(`${what}: HTTP ${res.status} without a Location header`, { status: res.status, code: 'UNKNOWN' });
    return new URL(loc, res.url); // Location may be relative to the request
  }

  /**
   * Uploads one blob. With a known digest: POST, then one PUT carrying the whole body. Without: POST, one
   * streamed PATCH while the digest is computed, then a body-less PUT with it. Once the registry refused a large
   * body: POST, PATCH per chunk, PUT. A failed attempt restarts from a fresh POST with the source opened again,
   * unless the blob turns out to be there already.
   */
  async uploadBlob(blob: BlobUpload): Promise<UploadResult> {
    const client = this.client;
    let minChunk = 0;
    for (let attempt = 1; ; attempt++) {
      let location: URL | undefined;
      const progress = { digest: blob.digest };
      try {
        const started = await this.startUpload(blob.what);
        location = started.location;
        minChunk = Math.max(minChunk, started.minChunk);
        await client.ensureFresh(this.scopes, this.scope);
        const chunk = client.chunkSize(minChunk);
        return chunk === undefined ? await this.uploadWhole(blob, location, progress) : await this.uploadChunks(blob, location, chunk, progress);
      } catch (err) {
        if (location) this.cancelUpload(location);
        const tooLarge = err instanceof RegistryError && err.status === 413 && client.shrinkChunks(err.rejectedBytes ?? blob.size, minChunk);
        const retryable = tooLarge || isRetryable(err);
        if (!retryable || this.scope.exhausted) throw err;
        // A PUT whose answer was lost may have stored the blob: then there is nothing left to do.
        if (progress.digest !== undefined && !tooLarge && (await this.hasBlob(progress.digest).catch(() => false))) {
          return { digest: progress.digest, size: blob.size };
        }
        if (blob.once) {
          // The bytes cannot be read again here; the caller starts over (now with chunks if that was the issue).
          if (err instanceof RegistryError) throw err.withRetryable(true);
          throw err;
        }
        if (attempt >= client.retry.maxAttempts) throw err;
        const wait = tooLarge ? 0 : ((err instanceof RegistryError ? err.retryAfterMs : undefined) ?? backoffDelay(client.retry, attempt));
        client.logger.warn('blob upload failed, restarting it', { blob: blob.what, attempt, waitMs: wait, error: describeError(err) });
        await sleep(wait, this.scope.signal);
      }
    }
  }

  /** One request carries the whole body: a PUT when the digest is known, else a PATCH and a body-less PUT. */
  private async uploadWhole(blob: BlobUpload, start: URL, progress: { digest?: string | undefined }): Promise<UploadResult> {
    if (blob.size === 0) return this.uploadEmpty(blob, start, progress);
    const body = new HashingTap(expectedOf(blob), { failOnMismatch: true, ...(blob.onBytes ? { onBytes: blob.onBytes } : {}) });
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
          return await this.send({
            method,
            url,
            headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
            body,
            what: `${method} ${blob.what}`,
          });
        } catch (err) {
          throw bodyError ?? err;
        }
      };
      if (blob.digest) {
        const res = await send('PUT', withDigest(start, blob.digest));
        if (res.status === 413) throw await this.tooLarge(res, `PUT ${blob.what}`, blob.size);
        await this.finish(res, blob.digest, `PUT ${blob.what}`);
        // The tap checked the bytes against blob.digest.
        return sent();
      }
      const res = await send('PATCH', start);
      if (res.status === 413) throw await this.tooLarge(res, `PATCH ${blob.what}`, blob.size);
      if (res.status !== 202 && res.status !== 201) return await this.client.fail(res, `PATCH ${blob.what}`);
      await res.body.dump();
      const seen = sent();
      progress.digest = seen.digest;
      await blob.beforeCommit?.();
      await this.commit(header(res, 'location') ? this.location(res, `PATCH ${blob.what}`) : start, seen.digest, blob.what);
      return seen;
    } finally {
      source.destroy();
      body.destroy();
    }
  }

  /**
   * A blob of no bytes: an HTTP client may never read (or may drop) a stream body of length 0, so the source is
   * only checked to be empty and the upload is committed without a body.
   */
  private async uploadEmpty(blob: BlobUpload, start: URL, progress: { digest?: string | undefined }): Promise<UploadResult> {
    const source = opened(await blob.open(), blob.what);
    let bytes = 0;
    for await (const chunk of source) bytes += (chunk as Buffer).length;
    const seen = verifyHashed(
      { digest: sha256Digest(Buffer.alloc(0)), size: bytes },
      { what: blob.what, size: 0, ...(blob.digest ? { digest: blob.digest } : {}) },
    );
    progress.digest = seen.digest;
    await blob.beforeCommit?.();
    await this.commit(start, seen.digest, blob.what);
    return { digest: seen.digest, size: 0 };
  }

  /** PATCH after PATCH, each chunk with its Content-Range, then a body-less PUT with the digest. */
  private async uploadChunks(blob: BlobUpload, start: URL, chunkSize: number, progress: { digest?: string | undefined }): Promise<UploadResult> {
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
        const res = await this.send({
          method: 'PATCH',
          url: location,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(chunk.length),
            'content-range': `${offset}-${offset + chunk.length - 1}`,
          },
          body: chunk,
          replayable: false,
          what,
        });
        if (res.status === 413) throw await this.tooLarge(res, what, chunk.length);
        if (res.status !== 202 && res.status !== 201) return await this.client.fail(res, what);
        await res.body.dump();
        if (header(res, 'location')) location = this.location(res, what);
        offset += chunk.length;
        blob.onBytes?.(chunk.length);
      }
    } finally {
      source.destroy();
    }
    const seen = verifyHashed({ digest: `sha256:${sha.digest('hex')}`, size: offset, ...(md5 ? { md5: md5.digest('hex') } : {}) }, expectedOf(blob));
    progress.digest = seen.digest;
    await blob.beforeCommit?.();
    await this.commit(location, seen.digest, blob.what);
    return seen;
  }

  private async tooLarge(res: Res, what: string, bytes: number): Promise<RegistryError> {
    const err = await errorFrom(res, what);
    err.rejectedBytes = bytes;
    return err;
  }

  private async commit(location: URL, digest: string, what: string): Promise<void> {
    const put = await this.send({ method: 'PUT', url: withDigest(location, digest), headers: { 'content-length': '0' }, what: `PUT ${what}` });
    await this.finish(put, digest, `PUT ${what}`);
  }

  private async finish(res: Res, digest: string, what: string): Promise<void> {
    if (res.status !== 201 && res.status !== 200 && res.status !== 204) return this.client.fail(res, what);
    await res.body.dump();
    checkClaimedDigest(res, digest, what);
  }

  /** Best effort: frees the registry's upload state after a failure. Never waited for, never fatal. */
  private cancelUpload(location: URL): void {
    this.client
      .send({ method: 'DELETE', url: location, scopes: this.scopes, what: 'DELETE upload' }, new JobScope())
      .then((res) => res.body.dump())
      .catch(() => undefined);
  }
}

/** Adds `digest=` to an upload URL, keeping its query (which carries the registry's state) as it is. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location.href);
  const param = `digest=${encodeURIComponent(digest)}`;
  url.search = url.search && url.search !== '?' ? `${url.search}&${param}` : `?${param}`;
  return url;
}
