/**
 * The shapes of one registry request and its answer, and the helpers every part of the client reads answers
 * with: headers, bounded bodies, the registry's error body turned into a RegistryError.
 */
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { IntegrityError } from '../util/errors';
import { isRetryableStatus, RegistryError } from './errors';
import { retryAfterMs } from './retry';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Req {
  method: Method;
  url: URL;
  headers?: Record<string, string>;
  /** a Buffer is replayed on retries (unless `replayable` is false); a stream is sent once */
  body?: Buffer | Readable;
  replayable?: boolean;
  /**
   * false: a failure is thrown at once instead of retried (the caller decides, as an upload's commit does after
   * asking whether the blob arrived). Authentication challenges are still answered.
   */
  retries?: boolean;
  scopes: readonly string[];
  /** names the request in errors, e.g. "PUT manifest gl:1877.3" */
  what: string;
}

export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  url: URL;
}

export const USER_AGENT = 'gardenlinux-oci-publisher';
const MAX_ERROR_BODY = 8 * 1024;

export function header(res: Pick<Res, 'headers'>, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The URL without its query: upload URLs carry state tokens that are noise in a message. */
export function shortUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

export async function readLimited(body: Res['body'], limit: number, what: string): Promise<Buffer> {
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
export async function errorFrom(res: Res, what: string): Promise<RegistryError> {
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

export async function fail(res: Res, what: string): Promise<never> {
  throw await errorFrom(res, what);
}

/** Registries name the digest they stored; one that differs from the bytes' own is an integrity failure. */
export function checkClaimedDigest(res: Res, digest: string, what: string): void {
  const claimed = header(res, 'docker-content-digest');
  if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
    throw new IntegrityError(`${what}: the registry says ${claimed}, the bytes have ${digest}`);
  }
}

export function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || (err as { code?: unknown }).code === 'UND_ERR_ABORTED');
}

/** Adds `digest=` to an upload URL, keeping its query (which carries the registry's state) as it is. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location.href);
  const param = `digest=${encodeURIComponent(digest)}`;
  url.search = url.search && url.search !== '?' ? `${url.search}&${param}` : `?${param}`;
  return url;
}

/** The upload URL a registry answered with (Location may be relative to the request). */
export function locationOf(res: Res, what: string): URL {
  const loc = header(res, 'location');
  if (!loc) throw new RegistryError(`${what}: HTTP ${res.status} without a Location header`, { status: res.status, code: 'UNKNOWN' });
  return new URL(loc, res.url);
}
