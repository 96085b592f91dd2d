/**
 * Faults that do not go away end the job quickly as failed, with the registry's error code, and leave the version
 * index as it was. Registries that behave differently from distribution (ECR's 201, chunk minimums, a CDN's body
 * limit, relative Locations, strict Accept, redirects to storage) are published to all the same.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import { createRuntime } from '../../functions/publish/runtime';
import { registryTargets } from '../../functions/target/registry-target';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, expectedArtifactManifest, expectedIndex, glTag, parse, sha256 } from '../helpers/expectations';
import { jobsOf } from '../helpers/jobs';
import { startFaultProxy, type FaultProxy, type ProxyBehaviour } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { PASSWORD, startTokenRegistry, USER, type RegistryStack } from '../helpers/registry-stack';

/** Every log line of every publication in this file, to check that no secret reached one. */
const logs: string[] = [];

/** Publishes the builds in turn; every log line goes to `logs`, and to `mine` when given (one case's own lines). */
async function publish(env: Record<string, string>, builds: readonly SampleBuild[], mine?: string[]): Promise<JobSummary[]> {
  const jobs: JobSummary[] = [];
  const sink = (l: string): void => {
    logs.push(l);
    mine?.push(l);
  };
  for (const b of builds) {
    jobs.push(...(await jobsOf(createHandler({ env: { LOG_LEVEL: 'debug', ...env }, logSink: sink })(s3Event(BUCKET, `meta/singles/${b.base}`)))));
  }
  return jobs;
}

describe('registry faults and registry behaviours', () => {
  let stack: RegistryStack;
  let s3: LocalS3;
  let clients: ClientSandbox;
  const proxies: FaultProxy[] = [];
  const first = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' });
  const container = sampleBuild({ flavor: 'container', arch: 'amd64' });
  const big = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64', imageSize: 13 * 1024 * 1024 + 12_345 });
  const creds = () => ['--creds', `${USER}:${PASSWORD}`, '--tls-verify=false'];

  const proxy = async (behaviour: ProxyBehaviour = {}): Promise<FaultProxy> => {
    const p = await startFaultProxy(behaviour);
    p.setUpstream(stack.registry.url, stack.tokens.realm.replace(/\/token$/, ''));
    proxies.push(p);
    return p;
  };
  const env = (p: FaultProxy, repo: string, extra: Record<string, string> = {}) => ({
    ...s3.env,
    REGISTRY: `http://${p.host}/${repo}`,
    REGISTRY_USERNAME: USER,
    REGISTRY_PASSWORD: PASSWORD,
    REGISTRY_TIMEOUT_SECONDS: '2',
    STATE_PREFIX: `oci-publisher/${repo}/`,
    ...extra,
  });
  const indexDigest = async (repo: string): Promise<string> =>
    sha256(await clients.skopeo(['inspect', '--raw', ...creds(), `docker://${stack.registry.host}/${repo}:1877.3`]));

  before(async () => {
    [stack, s3, clients] = await Promise.all([startTokenRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    for (const b of [first, container, big]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([stack?.stop(), s3?.close(), clients?.cleanup()]);
  });

  // At once: each case mostly waits for its retries to run out, each with its own proxy, repository and log lines.
  describe('faults that do not go away', { concurrency: 4 }, () => {
    const cases: Array<{ name: string; repo: string; setup: (p: FaultProxy) => void; extra?: Record<string, string>; code: string; message: RegExp }> = [
      { name: 'the registry is down', repo: 'down', setup: (p) => p.down(), code: 'NETWORK', message: /in a row; giving up|socket|ECONNRESET|closed/i },
      {
        name: 'every manifest PUT is denied (403)',
        repo: 'denied',
        setup: (p) => p.rules.push({ kind: 'manifest-put', fault: { type: 'status', status: 403 }, times: Infinity }),
        code: 'DENIED',
        message: /PUT manifest .*HTTP 403 DENIED/,
      },
      {
        name: 'every upload is refused with 503',
        repo: 'unavailable',
        setup: (p) => p.rules.push({ kind: 'upload-post', fault: { type: 'status', status: 503 }, times: Infinity }),
        code: 'UNAVAILABLE',
        message: /HTTP 503 UNAVAILABLE.*failed \d+ times in a row; giving up/,
      },
      { name: 'the credentials are wrong (401)', repo: 'wrongcreds', setup: () => undefined, extra: { REGISTRY_PASSWORD: 'not-the-password' }, code: 'UNAUTHORIZED', message: /refused the configured credentials/ },
    ];
    for (const c of cases) {
      it(`${c.name}: fails fast with ${c.code} and leaves the index as it was`, async () => {
        const p = await proxy();
        assert.deepEqual((await publish(env(p, c.repo), [first])).map((j) => j.outcome), ['published']);
        const before = await indexDigest(c.repo);
        c.setup(p);
        const lines: string[] = [];
        const started = Date.now();
        const [job] = await publish(env(p, c.repo, c.extra), [container], lines);
        const took = Date.now() - started;
        assert.equal(job?.outcome, 'failed');
        assert.match(job?.error ?? '', c.message);
        assert.equal(job?.errorCode, c.code, job?.error);
        // No retry layer multiplies another (request attempts × upload restarts × passes read again), and nothing
        // starts once the publication has failed: each upload sends its POST as often as one request may.
        const retried = new Map<string, number>();
        for (const line of lines) {
          const l = JSON.parse(line) as { msg?: string; request?: string };
          if (l.msg === 'registry request failed, retrying' && l.request?.startsWith('POST upload')) retried.set(l.request, (retried.get(l.request) ?? 0) + 1);
        }
        assert.ok([...retried.values()].every((n) => n <= 4), `POSTs retried per upload: ${JSON.stringify(Object.fromEntries(retried))}`);
        assert.ok(took < 15_000, `took ${took} ms`);
        assert.equal(await indexDigest(c.repo), before, 'the version index is unchanged');
      });
    }
  });

  describe('registries that differ from distribution', () => {
    const check = async (repo: string, builds: readonly SampleBuild[]): Promise<void> => {
      const gl = new Map<string, { digest: string; size: number }>();
      for (const b of builds) {
        const raw = await clients.skopeo(['inspect', '--raw', ...creds(), `docker://${stack.registry.host}/${repo}:${glTag(b)}`]);
        assert.deepEqual(parse(raw), expectedArtifactManifest(b));
        gl.set(b.base, { digest: sha256(raw), size: Buffer.byteLength(raw) });
      }
      assert.deepEqual(parse(await clients.skopeo(['inspect', '--raw', ...creds(), `docker://${stack.registry.host}/${repo}:1877.3`])), expectedIndex(builds, gl));
    };

    it('answers PATCH with 201 (ECR)', async () => {
      const p = await proxy({ patch201: true });
      const jobs = await publish(env(p, 'ecr-like'), [container, big]);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published', 'published']);
      assert.ok(p.log.some((e) => e.kind === 'upload-patch' && e.status === 201));
      await check('ecr-like', [container, big]);
    });

    it('caps request bodies (a CDN) and wants chunks of at least 5 MiB but the last: falls back to chunked uploads', async () => {
      const p = await proxy({ maxBodyBytes: 6 * 1024 * 1024, minChunkBytes: 5 * 1024 * 1024 });
      const jobs = await publish(env(p, 'cdn'), [big, first]);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published', 'published'], JSON.stringify(jobs));
      assert.ok(p.log.some((e) => e.status === 413), 'the single upload was refused first');
      const chunks = p.log.filter((e) => e.kind === 'upload-patch' && e.status === 202);
      assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
      await check('cdn', [big, first]);
    });

    it('answers 416 to chunks above 4 MiB (GHCR): the chunks shrink until they are accepted', async () => {
      const p = await proxy({ refuseChunksAbove: 4 * 1024 * 1024 });
      const jobs = await publish(env(p, 'ghcr-like', { CHUNKED_UPLOADS: 'true', UPLOAD_CHUNK_MIB: '16' }), [big]);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published'], JSON.stringify(jobs));
      assert.ok(p.log.some((e) => e.kind === 'upload-patch' && e.status === 416), 'a chunk was refused first');
      const accepted = p.log.filter((e) => e.kind === 'upload-patch' && e.status === 202);
      assert.ok(accepted.length >= 4 && accepted.every((e) => e.bodyBytes <= 4 * 1024 * 1024), JSON.stringify(accepted.map((e) => e.bodyBytes)));
      await check('ghcr-like', [big]);
    });

    it('wants parts of 5 MiB but the last without saying so (ECR): the fallback never goes below that', async () => {
      const p = await proxy({ maxBodyBytes: 6 * 1024 * 1024, minChunkBytes: 5 * 1024 * 1024, hideMinChunk: true });
      const e = env(p, 'ecr-parts');
      const handler = createHandler({
        env: e,
        logSink: (l) => logs.push(l),
        runtime: (config, logger) => ({
          ...createRuntime(config, logger),
          // What the runtime sets for an ECR host (chunkLimitsFor); this registry's host is 127.0.0.1.
          targets: registryTargets({ scheme: 'http', host: p.host, repository: 'ecr-parts', logger, credentials: { username: USER, password: PASSWORD }, timeoutMs: 2_000, minChunkBytes: 5 * 1024 * 1024 }),
        }),
      });
      const jobs = await jobsOf(handler(s3Event(BUCKET, `meta/singles/${big.base}`)));
      assert.deepEqual(jobs.map((j) => j.outcome), ['published'], JSON.stringify(jobs));
      // The chunks of each upload session (once chunking began, small blobs go as one chunk each).
      const sessions = new Map<string, number[]>();
      for (const x of p.log.filter((y) => y.kind === 'upload-patch' && y.status === 202)) sessions.set(x.path, [...(sessions.get(x.path) ?? []), x.bodyBytes]);
      const chunks = [...sessions.values()].sort((a, b) => b.length - a.length)[0] ?? [];
      assert.ok(chunks.length >= 2 && chunks.slice(0, -1).every((n) => n >= 5 * 1024 * 1024), JSON.stringify([...sessions.values()]));
      await check('ecr-parts', [big]);
    });

    it('HEADs the version index each round and GETs it only when its digest changed', async () => {
      const p = await proxy();
      assert.deepEqual((await publish(env(p, 'head-then-get'), [first])).map((j) => j.outcome), ['published']);
      const from = p.log.length;
      assert.deepEqual((await publish(env(p, 'head-then-get'), [container])).map((j) => j.outcome), ['published']);
      // Answered reads only: a token challenge (401) is answered again with the token.
      const reads = p.log.slice(from).filter((x) => x.kind === 'manifest-get' && x.path.endsWith('/manifests/1877.3') && x.status === 200);
      const gets = reads.filter((x) => x.method === 'GET').length;
      const heads = reads.filter((x) => x.method === 'HEAD').length;
      // One GET before anything is written (the size check); the rounds HEAD it and know the bytes they wrote.
      assert.equal(gets, 1, `GETs of the index: ${gets}, HEADs: ${heads}`);
      assert.ok(heads >= 2, `HEADs of the index: ${heads}`);
    });

    it('answers a manifest PUT with 400 DIGEST_INVALID while another request rewrites what it names (distribution): sent again', async () => {
      const p = await proxy();
      const body = JSON.stringify({ errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }] });
      p.rules.push({ kind: 'manifest-put', pathEndsWith: '/manifests/1877.3', fault: { type: 'status', status: 400, body }, times: 1 });
      p.rules.push({ kind: 'manifest-put', pathIncludes: '/manifests/1877.3-', fault: { type: 'status', status: 400, body }, times: 1 });
      const jobs = await publish(env(p, 'digest-invalid'), [container]);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published'], JSON.stringify(jobs));
      assert.equal(p.log.filter((e) => e.faulted && e.status === 400).length, 2, 'the artifact manifest and the index were refused once each');
      await check('digest-invalid', [container]);
    });

    it('answers with relative Location headers', async () => {
      const p = await proxy({ relativeLocation: true });
      assert.deepEqual((await publish(env(p, 'relative'), [container, first])).map((j) => j.outcome), ['published', 'published']);
      await check('relative', [container, first]);
    });

    it('answers 404 to a manifest read whose Accept lacks the type', async () => {
      const p = await proxy({ strictAccept: true });
      assert.deepEqual((await publish(env(p, 'strict'), [container, first])).map((j) => j.outcome), ['published', 'published']);
      // The second publication read the index the first wrote: the Accept header carried its type.
      assert.ok(p.log.some((e) => e.kind === 'manifest-get' && e.method === 'GET' && e.status === 200));
      await check('strict', [container, first]);
    });
  });

  it('wrote no password, token or Authorization header to any log line, failures included', () => {
    const text = logs.join('\n');
    assert.ok(logs.length > 100, `${logs.length} lines captured`);
    assert.ok(text.includes('"level":"error"'), 'failures were logged too');
    for (const secret of [PASSWORD, 'not-the-password', Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), ...stack.tokens.issued]) {
      assert.ok(!text.includes(secret), `a secret in the logs: ${secret.slice(0, 10)}…`);
    }
    assert.doesNotMatch(text, /\b(Basic|Bearer) [A-Za-z0-9+/=._-]{8,}/);
  });

  describe('a registry that redirects manifest reads to another origin', () => {
    let registry: TestRegistry;
    let storage: Server;
    const seen: Array<string | undefined> = [];
    const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    before(async () => {
      registry = await startRegistry({ auth: { kind: 'htpasswd', username: USER, password: PASSWORD } });
      // A storage endpoint on a second loopback port: serves what the registry has, and notes what it was sent.
      storage = createServer(async (req, res) => {
        seen.push(req.headers.authorization);
        const up = await request(`${registry.url}${req.url}`, { headers: { authorization: basic, accept: String(req.headers.accept ?? '') } });
        const body = Buffer.from(await up.body.arrayBuffer());
        const headers: Record<string, string> = {};
        for (const h of ['content-type', 'docker-content-digest']) if (typeof up.headers[h] === 'string') headers[h] = up.headers[h];
        res.writeHead(up.statusCode, headers).end(body);
      });
      await new Promise<void>((r) => storage.listen(0, '127.0.0.1', () => r()));
    });
    after(async () => {
      await new Promise((r) => storage?.close(r));
      await registry?.stop();
    });

    it('follows the redirect without sending Authorization to the other host', async () => {
      const port = (storage.address() as { port: number }).port;
      const p = await startFaultProxy({ redirectManifestGets: `http://127.0.0.1:${port}` });
      proxies.push(p);
      p.setUpstream(registry.url);
      const e = { ...s3.env, REGISTRY: `http://${p.host}/redirected`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: PASSWORD, STATE_PREFIX: 'oci-publisher/redirected/' };
      assert.deepEqual((await publish(e, [container, first])).map((j) => j.outcome), ['published', 'published']);
      const tag = (await createHandler({ env: e, logSink: () => undefined })({ action: 'tag', version: '1877.3', tags: ['latest'] })) as HandlerResult;
      assert.equal(tag.jobs[0]?.outcome, 'published');
      assert.ok(seen.length >= 3, `the storage endpoint served ${seen.length} reads`);
      assert.deepEqual(seen.filter((a) => a !== undefined), [], 'no Authorization crossed to the other host');
      // Meanwhile the registry itself got credentials: the publication went through.
      assert.ok(p.log.some((l) => l.kind === 'manifest-put' && l.status === 201));
    });
  });
});
