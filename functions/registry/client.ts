/**
 * A client for the OCI distribution API over undici. One client serves one registry host; `repository(name)`
 * gives the operations on one repository.
 *
 * - Authentication: see auth.ts. A streamed body is only ever sent after a body-less request has settled the
 *   credentials, and with a token that outlives the upload.
 * - Retries: network errors, 408, 429 (Retry-After honoured) and 5xx, with backoff. Requests whose body is a
 *   stream are not replayed here: a blob upload restarts as a whole from a fresh POST, re-opening its source.
 * - Redirects of GET/HEAD are followed by hand so `Authorization` never goes to another origin.
 * - Every manifest read or written is checked against its digest.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { HashingTap, isDigest, sha256Digest } from '../oci/digest';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types';
import { describeError, IntegrityError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import { Authenticator, type Credentials } from './auth';
import { isNetworkError, isRetryableStatus, RegistryError } from './errors';
import { backoffDelay, DEFAULT_RETRY, retryAfterMs, sleep, type RetryPolicy } from './retry';

export interface RegistryClientOptions {
  scheme: 'http' | 'https';
  /** host with optional port, as in the image reference */
  host: string;
  credentials?: Credentials;
  logger: Logger;
  retry?: RetryPolicy;
  /** idle limit while waiting for response headers or body bytes */
  timeoutMs?: number;
  dispatcher?: Dispatcher;
  /** aborts waits and requests when the job must stop */
  signal?: AbortSignal;
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

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface Req {
  method: Method;
  url: URL;
  headers?: Record<string, string>;
  /** a Buffer is replayed on retries; a stream is sent once */
  body?: Buffer | Readable;
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
  let code = res.status === 401 ? 'UNAUTHORIZED' : res.status === 403 ? 'DENIED' : res.status === 429 ? 'TOOMANYREQUESTS' : 'UNKNOWN';
  let detail = '';
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = parsed.errors?.[0];
    if (first && typeof first.code === 'string') {
      code = first.code;
      detail = typeof first.message === 'string' ? first.message : '';
    }
  } catch {
    detail = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  }
  return new RegistryError(`${what}: HTTP ${res.status} ${code}${detail ? `: ${detail}` : ''}`, {
    status: res.status,
    code,
    retryable: isRetryableStatus(res.status),
  });
}

export class RegistryClient {
  readonly origin: string;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;
  private readonly dispatcher: Dispatcher;
  private readonly timeoutMs: number;

  constructor(private readonly options: RegistryClientOptions) {
    this.origin = `${options.scheme}://${options.host}`;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.dispatcher = options.dispatcher ?? new Agent({ connections: 32, keepAliveTimeout: 30_000 });
    this.auth = new Authenticator(options.credentials, (url, headers) => this.tokenRequest(url, headers));
  }

  get host(): string {
    return this.options.host;
  }

  repository(name: string): RegistryRepository {
    return new RegistryRepository(this, name);
  }

  async close(): Promise<void> {
    if (!this.options.dispatcher) await this.dispatcher.close();
  }

  private get log(): Logger {
    return this.options.logger;
  }

  /** Token requests go through the same retry policy, without registry authentication. */
  private async tokenRequest(url: URL, headers: Record<string, string>): Promise<{ status: number; body: string }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await request(url, {
          method: 'GET',
          headers: { 'user-agent': USER_AGENT, ...headers },
          dispatcher: this.dispatcher,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
          ...(this.options.signal ? { signal: this.options.signal } : {}),
        });
        const body = (await readLimited(res.body as Res['body'], 256 * 1024, `token from ${url.origin}`)).toString('utf8');
        if (isRetryableStatus(res.statusCode) && attempt < this.retry.maxAttempts) {
          const wait = retryAfterMs(res.headers['retry-after']) ?? backoffDelay(this.retry, attempt);
          if (wait <= this.retry.maxRetryAfterMs) {
            this.log.warn('token request failed, retrying', { url: shortUrl(url), status: res.statusCode, attempt, waitMs: wait });
            await sleep(wait, this.options.signal);
            continue;
          }
        }
        return { status: res.statusCode, body };
      } catch (err) {
        if (err instanceof PublishError) throw err;
        if (isNetworkError(err) && attempt < this.retry.maxAttempts) {
          await sleep(backoffDelay(this.retry, attempt), this.options.signal);
          continue;
        }
        throw new RegistryError(`token request to ${url.origin}: ${describeError(err)}`, {
          code: 'NETWORK',
          retryable: isNetworkError(err),
          cause: err,
        });
      }
    }
  }

  /** Prepares a long request: a Bearer token is renewed now if it could expire while the body streams. */
  async ensureFresh(scopes: readonly string[]): Promise<void> {
    await this.auth.ensureFresh(this.host, scopes);
  }

  /** Sends one request with authentication, redirects and (for replayable bodies) retries. */
  async send(req: Req): Promise<Res> {
    const replayable = req.body === undefined || Buffer.isBuffer(req.body);
    let url = req.url;
    let attempt = 0;
    let challenges = 0;
    let redirects = 0;
    for (;;) {
      attempt++;
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...req.headers };
      const sameOrigin = url.origin === this.origin;
      if (sameOrigin) {
        const authorization = await this.auth.authorization(this.host, req.scopes);
        if (authorization) headers.authorization = authorization;
      }
      const started = Date.now();
      let res: Res;
      try {
        const r = await request(url, {
          method: req.method,
          headers,
          body: req.body ?? (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH' ? '' : undefined),
          dispatcher: this.dispatcher,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
          ...(this.options.signal ? { signal: this.options.signal } : {}),
        });
        res = { status: r.statusCode, headers: r.headers, body: r.body as Res['body'], url };
      } catch (err) {
        if (err instanceof PublishError) throw err;
        const network = isNetworkError(err);
        if (replayable && network && attempt < this.retry.maxAttempts) {
          const wait = backoffDelay(this.retry, attempt);
          this.log.warn('registry request failed, retrying', { request: req.what, error: describeError(err), attempt, waitMs: wait });
          await sleep(wait, this.options.signal);
          continue;
        }
        throw new RegistryError(`${req.what}: ${describeError(err)}`, { code: 'NETWORK', retryable: network, cause: err });
      }
      this.log.debug('registry request', {
        method: req.method,
        url: shortUrl(url),
        status: res.status,
        ms: Date.now() - started,
      });

      if (res.status === 401 && sameOrigin) {
        await res.body.dump();
        if (++challenges > 2) {
          throw new RegistryError(`${req.what}: HTTP 401 UNAUTHORIZED after renewing the credentials twice`, {
            status: 401,
            code: 'UNAUTHORIZED',
          });
        }
        await this.auth.onChallenge(this.host, header(res, 'www-authenticate'), req.scopes, headers.authorization !== undefined);
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
          throw new RegistryError(`${req.what}: HTTP ${res.status} redirect ${location ? 'loop' : 'without Location'}`, {
            status: res.status,
            code: 'UNKNOWN',
          });
        }
        // Authorization is only attached above when the new URL has the registry's own origin.
        url = new URL(location, url);
        attempt--;
        continue;
      }

      if (isRetryableStatus(res.status) && replayable && attempt < this.retry.maxAttempts) {
        const asked = retryAfterMs(header(res, 'retry-after'));
        const wait = asked ?? backoffDelay(this.retry, attempt);
        if (wait <= this.retry.maxRetryAfterMs) {
          const error = await errorFrom(res, req.what);
          this.log.warn('registry request failed, retrying', { request: req.what, status: res.status, code: error.code, attempt, waitMs: wait });
          await sleep(wait, this.options.signal);
          continue;
        }
      }
      return res;
    }
  }

  async fail(res: Res, what: string): Promise<never> {
    throw await errorFrom(res, what);
  }

  backoff(attempt: number): number {
    return backoffDelay(this.retry, attempt);
  }

  get maxAttempts(): number {
    return this.retry.maxAttempts;
  }

  get signal(): AbortSignal | undefined {
    return this.options.signal;
  }

  get logger(): Logger {
    return this.options.logger;
  }
}

const USER_AGENT = 'gardenlinux-oci-publisher';

export class RegistryRepository {
  // The publisher reads and writes its repositories, so one token (pull,push) serves every request; an
  // anonymous token server grants pull only, which still serves the reads.
  private readonly pull: readonly string[];
  private readonly push: readonly string[];

  constructor(
    readonly client: RegistryClient,
    readonly name: string,
  ) {
    this.push = [`repository:${name}:pull,push`];
    this.pull = this.push;
  }

  private url(path: string): URL {
    return new URL(`${this.client.origin}/v2/${this.name}/${path}`);
  }

  async hasBlob(digest: string): Promise<boolean> {
    const what = `HEAD blob ${this.name}@${digest}`;
    const res = await this.client.send({ method: 'HEAD', url: this.url(`blobs/${digest}`), scopes: this.pull, what });
    await res.body.dump();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return this.client.fail(res, what);
  }

  /** A manifest read: always with the full Accept list, or registries answer 404 for types it lacks. */
  private readManifest(method: 'GET' | 'HEAD', reference: string, what: string): Promise<Res> {
    return this.client.send({ method, url: this.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT }, scopes: this.pull, what });
  }

  async headManifest(reference: string): Promise<{ digest?: string; mediaType?: string } | undefined> {
    const what = `HEAD manifest ${this.name}:${reference}`;
    const res = await this.readManifest('HEAD', reference, what);
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
    const res = await this.readManifest('GET', reference, what);
    if (res.status === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.status !== 200) return this.client.fail(res, what);
    const bytes = await readLimited(res.body, 2 * MAX_MANIFEST_BYTES, what);
    const digest = sha256Digest(bytes);
    const claimed = header(res, 'docker-content-digest');
    if (isDigest(reference) && reference !== digest) {
      throw new IntegrityError(`${what}: the registry returned bytes with digest ${digest}`);
    }
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new IntegrityError(`${what}: Docker-Content-Digest ${claimed} does not match the bytes (${digest})`);
    }
    let mediaType = header(res, 'content-type')?.split(';')[0]?.trim();
    if (!mediaType || mediaType === 'application/json' || mediaType === 'application/octet-stream') {
      try {
        const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
        if (typeof parsed.mediaType === 'string') mediaType = parsed.mediaType;
      } catch {
        throw new RegistryError(`${what}: the registry returned something that is not JSON`, { status: 200, code: 'MANIFEST_INVALID' });
      }
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
    const res = await this.client.send({
      method: 'PUT',
      url: this.url(`manifests/${reference}`),
      headers: { 'content-type': mediaType },
      body: bytes,
      scopes: this.push,
      what,
    });
    if (res.status !== 201 && res.status !== 200) return this.client.fail(res, what);
    await res.body.dump();
    const claimed = header(res, 'docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new IntegrityError(`${what}: the registry stored digest ${claimed}, the bytes have ${digest}`);
    }
    return digest;
  }

  /** Opens an upload session: a body-less request, so credentials are settled before any body is streamed. */
  private async startUpload(what: string): Promise<URL> {
    const res = await this.client.send({
      method: 'POST',
      url: this.url('blobs/uploads/'),
      headers: { 'content-length': '0' },
      scopes: this.push,
      what: `POST upload for ${what}`,
    });
    if (res.status !== 202) return this.client.fail(res, `POST upload for ${what}`);
    await res.body.dump();
    return this.location(res, `POST upload for ${what}`);
  }

  private location(res: Res, what: string): URL {
    const loc = header(res, 'location');
    if (!loc) throw new RegistryError(`${what}: HTTP ${res.status} without a Location header`, { status: res.status, code: 'UNKNOWN' });
    return new URL(loc, res.url); // Location may be relative to the request
  }

  /**
   * Uploads one blob. With a known digest: POST, then one PUT carrying the whole body. Without: POST, one
   * streamed PATCH while the digest is computed, then a body-less PUT with it. Either way the source is read
   * once per attempt; a failed attempt restarts from a fresh POST with the source opened again.
   */
  async uploadBlob(blob: BlobUpload): Promise<UploadResult> {
    const client = this.client;
    for (let attempt = 1; ; attempt++) {
      let location: URL | undefined;
      let source: Readable | undefined;
      let tap: HashingTap | undefined;
      try {
        location = await this.startUpload(blob.what);
        await client.ensureFresh(this.push);
        tap = new HashingTap(
          { what: blob.what, size: blob.size, ...(blob.digest ? { digest: blob.digest } : {}), ...(blob.md5 ? { md5: blob.md5 } : {}) },
          { failOnMismatch: true, ...(blob.onBytes ? { onBytes: blob.onBytes } : {}) },
        );
        source = await blob.open();
        const body = tap;
        // The first error on the body's side (the source failing, or the tap finding bad bytes) is the cause;
        // the request only reports that its body went away.
        let bodyError: unknown;
        body.once('error', (err) => (bodyError ??= err));
        const pumping = pipeline(source, body).then(
          () => undefined,
          (err: unknown) => err,
        );
        const sendBody = async (method: 'PUT' | 'PATCH', url: URL): Promise<Res> => {
          try {
            return await client.send({
              method,
              url,
              headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
              body,
              scopes: this.push,
              what: `${method} ${blob.what}`,
            });
          } catch (err) {
            throw bodyError ?? err;
          }
        };
        let digest: string;
        if (blob.digest) {
          digest = blob.digest;
          const res = await sendBody('PUT', withDigest(location, digest));
          await this.finish(res, digest, `PUT ${blob.what}`);
          const pumpError = await pumping;
          if (pumpError) throw pumpError;
        } else {
          const res = await sendBody('PATCH', location);
          if (res.status !== 202 && res.status !== 201) return await client.fail(res, `PATCH ${blob.what}`);
          await res.body.dump();
          const pumpError = await pumping;
          if (pumpError) throw pumpError;
          digest = body.verify().digest;
          location = header(res, 'location') ? this.location(res, `PATCH ${blob.what}`) : location;
          const put = await client.send({
            method: 'PUT',
            url: withDigest(location, digest),
            headers: { 'content-length': '0' },
            scopes: this.push,
            what: `PUT ${blob.what}`,
          });
          await this.finish(put, digest, `PUT ${blob.what}`);
        }
        const seen = body.hashed();
        return { digest, size: seen.size, ...(seen.md5 ? { md5: seen.md5 } : {}) };
      } catch (err) {
        source?.destroy();
        tap?.destroy();
        const retryable = (err instanceof PublishError ? err.retryable : false) || isNetworkError(err);
        if (location) this.cancelUpload(location);
        if (!retryable || blob.once || attempt >= client.maxAttempts) throw err;
        const wait = client.backoff(attempt);
        client.logger.warn('blob upload failed, restarting it', { blob: blob.what, attempt, waitMs: wait, error: describeError(err) });
        await sleep(wait, client.signal);
      }
    }
  }

  private async finish(res: Res, digest: string, what: string): Promise<void> {
    if (res.status !== 201 && res.status !== 200 && res.status !== 204) return this.client.fail(res, what);
    await res.body.dump();
    const claimed = header(res, 'docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new IntegrityError(`${what}: the registry stored ${claimed}, expected ${digest}`);
    }
  }

  /** Best effort: frees the registry's upload state after a failure. Never waited for, never fatal. */
  private cancelUpload(location: URL): void {
    this.client
      .send({ method: 'DELETE', url: location, scopes: this.push, what: 'DELETE upload' })
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
