/**
 * An S3 front on 127.0.0.1, before s3rver, that answers as AWS S3 answers the deployment's role (serverless.yml):
 *
 * - a listing (ListObjectsV2) whose prefix matches none of the role's `s3:prefix` patterns (StringLike: `*` and
 *   `?`) is refused with 403 AccessDenied, and so is one without a prefix;
 * - a GET of a key s3rver does not have is answered 403 AccessDenied, not 404 NoSuchKey: S3 answers so when the
 *   request's own context lacks s3:ListBucket, which a ListBucket conditioned on s3:prefix never grants a GET;
 * - a key the test refuses (`refuse`) is answered 403 with the code and message it gives: an SSE-KMS object whose
 *   key the role may not use, or an object it may not read at all.
 *
 * Everything else is passed to s3rver as it is (the SDK's signature stays valid: the Host header is kept).
 */
import { createServer, request as httpRequest, Agent, type Server } from 'node:http';
import { listenOnLoopback } from './loopback';

export interface FrontLogEntry {
  method: string;
  /** the object key, or undefined for a request on the bucket */
  key?: string;
  /** a listing's prefix ('' when it had none) */
  listPrefix?: string;
  status: number;
  /** why the front answered 403 itself */
  refused?: 'listing outside the allowed prefixes' | 'missing key' | 'refused key';
}

export interface S3IamFront {
  url: string;
  /** answers GETs of `key` with 403 and this code and message, until `allow` */
  refuse(key: string, message: string, code?: string): void;
  allow(key: string): void;
  log: FrontLogEntry[];
  close(): Promise<void>;
}

/** S3's error document. */
export function s3ErrorXml(code: string, message: string): string {
  const escaped = message.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${escaped}</Message><RequestId>TESTFRONT0000000</RequestId><HostId>test-front</HostId></Error>`;
}

/** IAM's StringLike: `*` any run of characters, `?` any one, everything else itself. */
export function stringLike(pattern: string, value: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's').test(value);
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

export async function startS3IamFront(upstream: string, options: { bucket: string; listPrefixes: readonly string[] }): Promise<S3IamFront> {
  const refused = new Map<string, { code: string; message: string }>();
  const log: FrontLogEntry[] = [];

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://front');
    const method = req.method ?? 'GET';
    const [, bucket = '', ...rest] = url.pathname.split('/');
    const key = rest.length > 0 && rest.join('/') !== '' ? decodeURIComponent(rest.join('/')) : undefined;
    const entry: FrontLogEntry = { method, ...(key !== undefined ? { key } : {}), status: 0 };
    log.push(entry);
    const deny = (why: NonNullable<FrontLogEntry['refused']>, code: string, message: string): void => {
      entry.status = 403;
      entry.refused = why;
      req.resume();
      res.writeHead(403, { 'content-type': 'application/xml', 'x-amz-request-id': 'TESTFRONT0000000' });
      res.end(method === 'HEAD' ? undefined : s3ErrorXml(code, message));
    };

    if (bucket === options.bucket && key === undefined && method === 'GET' && url.searchParams.get('list-type') === '2') {
      entry.listPrefix = url.searchParams.get('prefix') ?? '';
      const allowed = url.searchParams.has('prefix') && options.listPrefixes.some((p) => stringLike(p, entry.listPrefix as string));
      if (!allowed) return deny('listing outside the allowed prefixes', 'AccessDenied', 'Access Denied');
    }
    const refusal = key !== undefined && (method === 'GET' || method === 'HEAD') ? refused.get(key) : undefined;
    if (refusal) return deny('refused key', refusal.code, refusal.message);

    const up = httpRequest(new URL(`${url.pathname}${url.search}`, upstream), { method, headers: req.headers, agent }, (upRes) => {
      const status = upRes.statusCode ?? 502;
      if (key !== undefined && (method === 'GET' || method === 'HEAD') && status === 404) {
        upRes.resume();
        return deny('missing key', 'AccessDenied', 'Access Denied');
      }
      entry.status = status;
      res.writeHead(status, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  });
  const { port, close } = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    refuse(key, message, code = 'AccessDenied') {
      refused.set(key, { code, message });
    },
    allow(key) {
      refused.delete(key);
    },
    log,
    close,
  };
}
