/**
 * Sending requests to one registry host over undici: authentication, redirects, retries. One client serves one
 * host and is shared by the jobs of a process (connections and tokens are reused); a RegistryRepository
 * (repository.ts) gives the operations on one repository for one job, whose scope carries the job's abort
 * signal, its time and its failure budget (failure-budget.ts).
 *
 * - Authentication: see auth.ts. A streamed body is only sent after a body-less request has settled the
 *   credentials, and with a token that outlives the upload.
 * - Retries: network errors, 408, 429 (Retry-After honoured) and 5xx, with backoff. Requests whose body is a
 *   stream are not replayed here: a blob upload restarts as a whole from a fresh POST (blob-upload.ts).
 * - Redirects of GET/HEAD are followed by hand so `Authorization` never goes to another origin.
 */
import type { Dispatcher } from 'undici';
import { describeError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import { Authenticator, type Credentials } from './auth';
import { ChunkPolicy, chunkLimitsFor } from './chunk-policy';
import type { CredentialSource } from './credentials';
import { isNetworkError, isRetryableStatus, RegistryError } from './errors';
import { JobScope, Operation } from './failure-budget';
import { errorFrom, header, isAbort, readLimited, shortUrl, USER_AGENT, type Req, type Res } from './http';
import { backoffDelay, DEFAULT_RETRY, retryAfterMs, sleep, type RetryPolicy } from './retry';

export { JobScope, Operation } from './failure-budget';

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
  /** the smallest chunk the registry takes, when it does not say so itself (default: known per registry) */
  minChunkBytes?: number;
  /** connections per origin (default 32) */
  connections?: number;
  dispatcher?: Dispatcher;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export class RegistryClient {
  readonly origin: string;
  private readonly auth: Authenticator;
  readonly retry: RetryPolicy;
  /**
   * The connection pool, made at the first request: undici is loaded then, so a job that never asks the registry
   * anything (a skipped document) does not load it at a cold start.
   */
  private dispatcher?: Promise<Dispatcher>;
  readonly timeoutMs: number;
  /** single uploads until the registry refuses a large body; then chunks, as small as it needs */
  readonly chunks: ChunkPolicy;

  constructor(private readonly options: RegistryClientOptions) {
    this.origin = `${options.scheme}://${options.host}`;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.auth = new Authenticator(options.credentials, (url, headers, ctx) => this.tokenRequest(url, headers, ctx as JobScope | undefined), {
      httpsOnly: options.scheme === 'https',
    });
    const limits = chunkLimitsFor(options.host);
    this.chunks = new ChunkPolicy({
      ...(options.chunkBytes !== undefined ? { chunkBytes: options.chunkBytes } : {}),
      fromStart: options.chunkedUploads ?? false,
      minBytes: options.minChunkBytes ?? limits.minBytes,
      ...(limits.maxBytes !== undefined ? { maxBytes: limits.maxBytes } : {}),
      onShrink: (chunkBytes) => options.logger.warn('the registry refuses large request bodies: uploading in chunks', { registry: this.host, chunkBytes }),
    });
  }

  get host(): string {
    return this.options.host;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  /** One request to `url` through the connection pool (made at the first), with the client's timeouts. */
  private async dispatch(url: URL, init: Pick<Dispatcher.RequestOptions, 'method' | 'headers' | 'body'>, scope: JobScope | undefined): Promise<Dispatcher.ResponseData> {
    const { dispatcher, connections } = this.options;
    this.dispatcher ??= dispatcher ? Promise.resolve(dispatcher) : import('undici').then(({ Agent }) => new Agent({ connections: connections ?? 32, keepAliveTimeout: 30_000 }));
    return (await this.dispatcher).request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      ...init,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      ...(scope?.signal ? { signal: scope.signal } : {}),
    });
  }

  async close(): Promise<void> {
    if (!this.options.dispatcher && this.dispatcher) await (await this.dispatcher).close();
  }

  /** Token requests go through the same retry policy, without registry authentication. */
  private async tokenRequest(url: URL, headers: Record<string, string>, scope: JobScope = new JobScope()): Promise<{ status: number; body: string }> {
    const op = new Operation();
    for (let attempt = 1; ; attempt++) {
      scope.throwIfAborted();
      let failure: RegistryError;
      try {
        const res = await this.dispatch(url, { method: 'GET', headers: { 'user-agent': USER_AGENT, ...headers } }, scope);
        const body = (await readLimited(res.body as Res['body'], 256 * 1024, `token from ${url.origin}`)).toString('utf8');
        if (!isRetryableStatus(res.statusCode)) {
          scope.succeeded(op);
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
        if (isAbort(err)) scope.throwIfAborted();
        failure = new RegistryError(`token request to ${url.origin}: ${describeError(err)}`, { code: 'NETWORK', retryable: isNetworkError(err), cause: err });
        if (!failure.retryable) throw failure;
      }
      const wait = this.nextAttempt(failure, attempt, scope, op);
      this.options.logger.warn('token request failed, retrying', { url: shortUrl(url), error: failure.message, attempt, waitMs: wait });
      await sleep(wait, scope.signal);
    }
  }

  /**
   * After a failed attempt: counts the failure against its operation, and returns how long to wait before the
   * next attempt, or throws the failure when it is final (not retryable, too many in a row, attempts used up, a
   * body that cannot be sent again, a Retry-After longer than is waited for, or a wait past the job's time).
   */
  nextAttempt(failure: RegistryError, attempt: number, scope: JobScope, op: Operation, again = true): number {
    const counted = scope.failed(failure, op);
    const asked = failure.retryAfterMs;
    // A request that used up its attempts is final: nothing above it (an upload's restart, a pass read again)
    // should send it once more, since the registry, not the read, is failing.
    if (counted.retryable && again && attempt >= this.retry.maxAttempts) {
      throw counted.withRetryable(false, `${counted.message} (the registry failed ${attempt} times in a row; giving up)`);
    }
    if (!counted.retryable || !again || (asked ?? 0) > this.retry.maxRetryAfterMs) throw counted;
    const wait = asked ?? backoffDelay(this.retry, attempt);
    scope.checkWait(wait, counted);
    return wait;
  }

  /** Prepares a long request: a Bearer token is renewed now if it could expire while the body streams. */
  async ensureFresh(scopes: readonly string[], scope: JobScope): Promise<void> {
    await this.auth.ensureFresh(this.host, scopes, scope);
  }

  /**
   * Sends one request with authentication, redirects and (for replayable bodies) retries. `op` counts the
   * failures of the operation the request belongs to (by default, the request alone).
   */
  async send(req: Req, scope: JobScope, op: Operation = new Operation()): Promise<Res> {
    const replayable = req.replayable ?? (req.body === undefined || Buffer.isBuffer(req.body));
    const again = replayable && req.retries !== false;
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
        const r = await this.dispatch(
          url,
          { method: req.method, headers, body: req.body ?? (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH' ? '' : undefined) },
          scope,
        );
        res = { status: r.statusCode, headers: r.headers, body: r.body as Res['body'], url };
      } catch (err) {
        if (err instanceof PublishError) throw err;
        if (isAbort(err)) scope.throwIfAborted();
        const network = isNetworkError(err);
        const failure = new RegistryError(`${req.what}: ${describeError(err)}`, { code: 'NETWORK', retryable: network, cause: err });
        if (!network) throw failure;
        const wait = this.nextAttempt(failure, attempt, scope, op, again);
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
        const wait = this.nextAttempt(failure, attempt, scope, op, again);
        this.options.logger.warn('registry request failed, retrying', { request: req.what, status: res.status, code: failure.code, attempt, waitMs: wait });
        await sleep(wait, scope.signal);
        continue;
      }
      scope.succeeded(op);
      return res;
    }
  }

  /**
   * A GET whose body is read here: a connection that breaks while the body arrives is retried like one that
   * breaks before, since a read can be repeated.
   */
  async sendAndRead(req: Req, scope: JobScope, limit: number): Promise<{ res: Res; bytes?: Buffer }> {
    const op = new Operation();
    for (let attempt = 1; ; attempt++) {
      const res = await this.send(req, scope, op);
      if (res.status !== 200) return { res };
      try {
        return { res, bytes: await readLimited(res.body, limit, req.what) };
      } catch (err) {
        if (err instanceof PublishError || !isNetworkError(err)) throw err;
        const failure = new RegistryError(`${req.what}: ${describeError(err)}`, { code: 'NETWORK', retryable: true, cause: err });
        await sleep(this.nextAttempt(failure, attempt, scope, op), scope.signal);
      }
    }
  }
}
