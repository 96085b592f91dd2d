import { errorCode, PublishError, someCause } from '../util/errors';

/** An answer or a failure of the registry, with its OCI error code when the registry gave one. */
export class RegistryError extends PublishError {
  readonly status: number | undefined;
  readonly code: string;
  /** how long the registry asked to wait (Retry-After) */
  readonly retryAfterMs: number | undefined;
  /** for a 413: the size of the body the registry refused */
  rejectedBytes: number | undefined;

  constructor(message: string, options: { status?: number; code: string; retryable?: boolean; cause?: unknown; retryAfterMs?: number }) {
    super('registry', message, { retryable: options.retryable ?? false, cause: options.cause });
    this.name = 'RegistryError';
    this.status = options.status;
    this.code = options.code;
    this.retryAfterMs = options.retryAfterMs;
  }

  /** The same failure marked retryable or final, optionally saying more; it keeps this one as its cause. */
  withRetryable(retryable: boolean, message: string = this.message): RegistryError {
    return new RegistryError(message, { ...(this.status !== undefined ? { status: this.status } : {}), code: this.code, retryable, cause: this });
  }
}

/** Statuses worth another attempt: timeouts, throttling, server and gateway errors. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** True for errors of the connection rather than of the request: worth another attempt. */
export function isNetworkError(err: unknown): boolean {
  return someCause(err, (e) => {
    const code = errorCode(e);
    return typeof code === 'string' && NETWORK_CODES.has(code);
  });
}

/** Worth another attempt: an error marked retryable, or a broken connection. */
export function isRetryable(err: unknown): boolean {
  return (err instanceof PublishError && err.retryable) || isNetworkError(err);
}
