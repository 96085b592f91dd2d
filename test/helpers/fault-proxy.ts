/**
 * A fault-injecting HTTP proxy for tests, between the publisher and a real docker-registry (and its token
 * server). It classifies each request (blob HEAD, upload POST, PATCH, PUT, manifest GET/PUT, token fetch) and
 * can fail it: an error status, 429 with Retry-After, a connection reset after some bytes, a stall, an answer the
 * registry gave that is lost on the way back (the request took effect) or held back past the client's timeout. Rules
 * pick requests by kind, path and body size (Content-Length). It can also
 * behave like registries that differ from distribution: PATCH answered 201 (ECR), a minimum chunk size, a cap on
 * request bodies (a CDN), relative Location headers, strict Accept checks, and redirects to another origin.
 */
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenOnLoopback } from './loopback';

export type RequestKind = 'blob-head' | 'upload-post' | 'upload-patch' | 'upload-put' | 'manifest-get' | 'manifest-put' | 'token' | 'other';

export type Fault =
  | { type: 'status'; status: number; retryAfter?: string; body?: string; contentType?: string }
  /** no fault: the request goes through once the rule's `before` hook is done (to hold it until the test says so) */
  | { type: 'hold' }
  /** closes the connection after this many bytes of the request body (uploads) or response body (reads) */
  | { type: 'reset'; afterBytes: number }
  /** takes the request and never answers */
  | { type: 'stall' }
  /** answers 200 with a body that is not what the request asked for */
  | { type: 'garbage' }
  /** forwards the request, lets the registry answer it, then closes the client's connection instead of relaying */
  | { type: 'lose-answer' }
  /** forwards the request, holds the registry's answer for this many milliseconds, then relays it */
  | { type: 'delay-answer'; ms: number };

export interface FaultRule {
  kind: RequestKind;
  /** only requests whose path contains this */
  pathIncludes?: string;
  /** only requests whose path ends with this (e.g. `/manifests/1877.3`: the version index, not `1877.3-…` tags) */
  pathEndsWith?: string;
  /** only requests whose query string contains this (e.g. `delimiter=`: an S3 listing of folders) */
  searchIncludes?: string;
  /** only requests whose body (Content-Length; none counts as 0) is at least this many bytes */
  minBodyBytes?: number;
  /** only requests whose body (Content-Length; none counts as 0) is at most this many bytes (0: body-less) */
  maxBodyBytes?: number;
  fault: Fault;
  /** how many matching requests fail (default 1); Infinity for a fault that does not go away */
  times?: number;
  /** matching requests let through before the first failure (default 0) */
  skip?: number;
  /** awaited when the fault strikes, before the proxy acts on the request (to change the registry just then) */
  before?: () => Promise<void>;
}

export interface ProxyBehaviour {
  /** answer a PATCH with 201 instead of 202, as ECR does */
  patch201?: boolean;
  /** refuse request bodies above this size with 413, as a CDN in front does */
  maxBodyBytes?: number;
  /** advertise OCI-Chunk-Min-Length and refuse an upload whose chunks (but the last) are smaller */
  minChunkBytes?: number;
  /** keep minChunkBytes to itself instead of advertising it (ECR does not say that parts must be 5 MiB) */
  hideMinChunk?: boolean;
  /** answer 416 to a chunk (a PATCH with Content-Range) above this size, as GHCR does above 4 MiB */
  refuseChunksAbove?: number;
  /** turn absolute Location headers into paths */
  relativeLocation?: boolean;
  /** answer 404 to a manifest read whose Accept header lacks the manifest's type, as GHCR does */
  strictAccept?: boolean;
  /** answer manifest GETs with a 307 to this origin (same path), as registries do for storage */
  redirectManifestGets?: string;
  /** milliseconds to hold requests of a kind before forwarding them (a slow registry) */
  delayMs?: Partial<Record<RequestKind, number>>;
}

export interface ProxyLogEntry {
  kind: RequestKind;
  method: string;
  path: string;
  /** the query string, `?` included ('' for none) */
  search: string;
  /**
   * what the client got: a status, 'reset' (connection closed while the request body came in or the response
   * body went out), 'stall' (no answer), 'lost' (the registry answered, the client's connection was closed instead)
   */
  status: number | 'reset' | 'stall' | 'lost';
  faulted: boolean;
  /** the injected fault's type, when faulted */
  fault?: Fault['type'];
  /** when the proxy took the request up, after any `delayMs` hold (ms since the epoch) */
  at: number;
  /** the request's Content-Length (0 when none) */
  bodyBytes: number;
  /** for a request reset while its body came in: the body bytes received by then */
  receivedBytes?: number;
  /** for lose-answer and delay-answer: what the registry answered */
  upstreamStatus?: number;
  /** for delay-answer: how long the answer was held */
  heldMs?: number;
  /** for delay-answer: the client had closed its connection before the answer was relayed */
  clientGone?: boolean;
  /** the bytes of the answer's body relayed to the client (answers relayed whole) */
  responseBytes?: number;
}

export interface FaultProxy {
  url: string;
  host: string;
  rules: FaultRule[];
  behaviour: ProxyBehaviour;
  log: ProxyLogEntry[];
  /** where requests go: the registry, and the token server for /token */
  setUpstream(registry: string, tokenServer?: string): void;
  /** stops answering at all, as a registry that is down */
  down(): void;
  close(): Promise<void>;
}

/** The transient faults a registry shows, each injected once into a publication that must still complete. */
export const TRANSIENT_FAULTS: ReadonlyArray<readonly [string, Fault]> = [
  ['500', { type: 'status', status: 500 }],
  ['502', { type: 'status', status: 502 }],
  ['503', { type: 'status', status: 503 }],
  ['429 with Retry-After', { type: 'status', status: 429, retryAfter: '1' }],
  ['connection reset', { type: 'reset', afterBytes: 100 }],
  ['stall past the timeout', { type: 'stall' }],
];

export function classify(method: string, path: string): RequestKind {
  if (path.startsWith('/token')) return 'token';
  if (/^\/v2\/.+\/blobs\/uploads\/?$/.test(path) && method === 'POST') return 'upload-post';
  if (/^\/v2\/.+\/blobs\/uploads\/[^/]+$/.test(path)) return method === 'PATCH' ? 'upload-patch' : method === 'PUT' ? 'upload-put' : 'other';
  if (/^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/.test(path) && method === 'HEAD') return 'blob-head';
  if (/^\/v2\/.+\/manifests\/[^/]+$/.test(path)) return method === 'PUT' ? 'manifest-put' : method === 'GET' || method === 'HEAD' ? 'manifest-get' : 'other';
  return 'other';
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

export async function startFaultProxy(behaviour: ProxyBehaviour = {}): Promise<FaultProxy> {
  let registry = '';
  let tokenServer = '';
  let isDown = false;
  const rules: FaultRule[] = [];
  const log: ProxyLogEntry[] = [];
  const seen = new Map<FaultRule, number>();
  /** chunk sizes per upload session, for minChunkBytes */
  const chunks = new Map<string, number[]>();

  const pickRule = (kind: RequestKind, path: string, search: string, bodyBytes: number): FaultRule | undefined => {
    for (const rule of rules) {
      if (rule.kind !== kind || (rule.pathIncludes !== undefined && !path.includes(rule.pathIncludes))) continue;
      if (rule.pathEndsWith !== undefined && !path.endsWith(rule.pathEndsWith)) continue;
      if (rule.searchIncludes !== undefined && !search.includes(rule.searchIncludes)) continue;
      if (rule.minBodyBytes !== undefined && bodyBytes < rule.minBodyBytes) continue;
      if (rule.maxBodyBytes !== undefined && bodyBytes > rule.maxBodyBytes) continue;
      const n = (seen.get(rule) ?? 0) + 1;
      seen.set(rule, n);
      const skip = rule.skip ?? 0;
      if (n > skip && n <= skip + (rule.times ?? 1)) return rule;
    }
    return undefined;
  };

  const sessionOf = (path: string): string => path.split('/').pop() ?? '';

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const kind = classify(req.method ?? 'GET', new URL(req.url ?? '/', 'http://proxy').pathname);
    const delay = behaviour.delayMs?.[kind] ?? 0;
    if (delay > 0) {
      req.pause();
      setTimeout(() => handle(req, res), delay);
    } else handle(req, res);
  });

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const method = req.method ?? 'GET';
    const kind = classify(method, url.pathname);
    const length = Number(req.headers['content-length'] ?? 0) || 0;
    const entry: ProxyLogEntry = { kind, method, path: url.pathname, search: url.search, status: 0, faulted: false, at: Date.now(), bodyBytes: length };
    log.push(entry);
    if (isDown) {
      req.socket.destroy();
      entry.status = 'reset';
      return;
    }
    const rule = pickRule(kind, url.pathname, url.search, length);
    const fault = rule?.fault;
    entry.faulted = fault !== undefined;
    if (fault !== undefined) entry.fault = fault.type;
    if (rule?.before) {
      req.pause();
      rule.before().then(
        () => act(req, res, url, method, kind, length, entry, fault),
        (err: unknown) => res.writeHead(500).end(`the test's hook failed: ${String(err)}`),
      );
    } else act(req, res, url, method, kind, length, entry, fault);
  };

  const act = (req: IncomingMessage, res: ServerResponse, url: URL, method: string, kind: RequestKind, length: number, entry: ProxyLogEntry, fault: Fault | undefined): void => {
    const reply = (status: number, headers: Record<string, string>, body: string) => {
      entry.status = status;
      req.resume();
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(body);
    };

    if (fault?.type === 'status') {
      const code = fault.status === 429 ? 'TOOMANYREQUESTS' : fault.status === 403 ? 'DENIED' : 'UNAVAILABLE';
      const headers: Record<string, string> = { ...(fault.retryAfter ? { 'retry-after': fault.retryAfter } : {}), ...(fault.contentType ? { 'content-type': fault.contentType } : {}) };
      return reply(fault.status, headers, fault.body ?? JSON.stringify({ errors: [{ code, message: 'injected' }] }));
    }
    if (fault?.type === 'stall') {
      entry.status = 'stall';
      req.resume();
      return; // the socket stays open until the client gives up or the proxy closes
    }
    if (behaviour.redirectManifestGets && kind === 'manifest-get' && method === 'GET') {
      entry.status = 307;
      req.resume();
      res.writeHead(307, { location: `${behaviour.redirectManifestGets}${url.pathname}${url.search}` }).end();
      return;
    }
    if (behaviour.maxBodyBytes !== undefined && length > behaviour.maxBodyBytes) {
      return reply(413, { 'content-type': 'text/html' }, '<html><body>413 Request Entity Too Large</body></html>');
    }
    if (behaviour.refuseChunksAbove !== undefined && kind === 'upload-patch' && req.headers['content-range'] !== undefined && length > behaviour.refuseChunksAbove) {
      return reply(416, {}, JSON.stringify({ errors: [{ code: 'RANGE_INVALID', message: 'request body exceeds the maximum permissible limit of 4.00MiB' }] }));
    }
    if (behaviour.minChunkBytes !== undefined && kind === 'upload-patch') {
      const list = chunks.get(sessionOf(url.pathname)) ?? [];
      list.push(length);
      chunks.set(sessionOf(url.pathname), list);
    }
    if (behaviour.minChunkBytes !== undefined && kind === 'upload-put') {
      const list = chunks.get(sessionOf(url.pathname)) ?? [];
      if (length > 0) list.push(length);
      if (list.slice(0, -1).some((n) => n < (behaviour.minChunkBytes as number))) {
        return reply(400, {}, JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_INVALID', message: `chunks must be at least ${behaviour.minChunkBytes} bytes except the last` }] }));
      }
    }

    const upstreamBase = kind === 'token' ? tokenServer : registry;
    const target = new URL(`${url.pathname}${url.search}`, upstreamBase);
    const headers = { ...req.headers };
    const up = httpRequest(target, { method, headers, agent }, (upRes) => {
      let status = upRes.statusCode ?? 502;
      const outHeaders: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined) outHeaders[k] = v;
      if (behaviour.patch201 && kind === 'upload-patch' && status === 202) status = 201;
      // Token challenges name the token server; point them at this proxy, so token requests pass it too.
      if (tokenServer && typeof outHeaders['www-authenticate'] === 'string') {
        outHeaders['www-authenticate'] = outHeaders['www-authenticate'].replace(/realm="[^"]*"/, `realm="http://${req.headers.host}/token"`);
      }
      if (behaviour.relativeLocation && typeof outHeaders.location === 'string') {
        const loc = new URL(outHeaders.location, `http://${req.headers.host}`);
        outHeaders.location = `${loc.pathname}${loc.search}`;
      }
      if (behaviour.minChunkBytes !== undefined && !behaviour.hideMinChunk && kind === 'upload-post') outHeaders['oci-chunk-min-length'] = String(behaviour.minChunkBytes);
      if (behaviour.strictAccept && kind === 'manifest-get' && status === 200) {
        const type = String(upRes.headers['content-type'] ?? '').split(';')[0] ?? '';
        const accept = String(req.headers.accept ?? '');
        if (!accept.split(',').map((a) => a.trim().split(';')[0]).includes(type)) {
          upRes.resume();
          return reply(404, {}, JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: `OCI index found, but accept header does not support OCI indexes` }] }));
        }
      }
      if (fault?.type === 'garbage') {
        upRes.resume();
        return reply(200, { 'content-type': String(upRes.headers['content-type'] ?? 'application/json') }, '<html>this is not JSON</html>');
      }
      if (fault?.type === 'lose-answer') {
        // The registry did what was asked; the client never learns it.
        entry.upstreamStatus = status;
        entry.status = 'lost';
        upRes.resume();
        req.socket.destroy();
        return;
      }
      if (fault?.type === 'delay-answer') {
        entry.upstreamStatus = status;
        upRes.pause();
        const held = Date.now();
        setTimeout(() => {
          entry.heldMs = Date.now() - held;
          entry.status = status;
          entry.clientGone = res.destroyed || req.socket.destroyed;
          if (entry.clientGone) {
            upRes.resume();
            return;
          }
          res.writeHead(status, outHeaders);
          upRes.pipe(res);
        }, fault.ms);
        return;
      }
      entry.status = status;
      res.writeHead(status, outHeaders);
      if (fault?.type === 'reset' && (method === 'GET')) {
        let sent = 0;
        upRes.on('data', (c: Buffer) => {
          if (sent + c.length > fault.afterBytes) {
            res.write(c.subarray(0, Math.max(0, fault.afterBytes - sent)));
            entry.status = 'reset';
            res.socket?.destroy();
            upRes.destroy();
            return;
          }
          sent += c.length;
          res.write(c);
        });
        upRes.on('end', () => res.end());
      } else {
        upRes.on('data', (c: Buffer) => (entry.responseBytes = (entry.responseBytes ?? 0) + c.length));
        upRes.pipe(res);
      }
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    if (fault?.type === 'reset' && method !== 'GET') {
      let received = 0;
      req.on('data', (c: Buffer) => {
        received += c.length;
        if (received >= fault.afterBytes) {
          entry.status = 'reset';
          entry.receivedBytes = received;
          req.socket.destroy();
          up.destroy();
        } else up.write(c);
      });
      req.on('end', () => {
        if (fault.afterBytes === 0 || received < fault.afterBytes) {
          entry.status = 'reset';
          entry.receivedBytes = received;
          req.socket.destroy();
          up.destroy();
        }
      });
      // A request paused for a rule's `before` hook does not flow by itself once it has a 'data' listener.
      req.resume();
    } else {
      req.pipe(up);
    }
  };
  const { port, close } = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    rules,
    behaviour,
    log,
    setUpstream(r, t) {
      registry = r;
      tokenServer = t ?? '';
    },
    down() {
      isDown = true;
    },
    close,
  };
}
