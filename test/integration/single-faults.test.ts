/**
 * One fault per publication, one handler invocation: a single request fails once (or, for the upload budget, a
 * short burst that each request would outlast on its own attempts), and the job must still end `published` in
 * that same invocation, with the version index and every digest right at the registry. No retry loop here: a
 * job that needs Lambda's retry of the whole event to get through counts as failed.
 *
 * Each case has its own fault proxy, repository and STATE_PREFIX, so the cases are independent and run at once.
 * The faults are the ones a registry behind a load balancer shows: a body reset half-way, a 503 on a large PUT,
 * a commit whose answer is lost or comes too late (the registry committed), a short run of 503s while several
 * uploads are under way, a 502 on the index PUT, and a manifest an operator deleted that the index still names.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { containerArchive, metadataYaml, pseudoRandom, sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, EMPTY_CONFIG_DIGEST, expectedArtifactManifest, expectedIndex, glTag, parse, sha256 } from '../helpers/expectations';
import { jobsOf } from '../helpers/jobs';
import { startFaultProxy, type FaultProxy, type FaultRule, type ProxyBehaviour, type ProxyLogEntry } from '../helpers/fault-proxy';
import { PASSWORD, startTokenRegistry, USER, type RegistryStack } from '../helpers/registry-stack';

const MiB = 1024 * 1024;
const VERSION = '1877.3';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
/** Above this a file is streamed (PATCH, then a body-less PUT); up to it, read whole and PUT with its digest. */
const SMALL_FILE = 4 * MiB;
/** The shortest wait before an upload is tried again (half the first backoff step of 250 ms). */
const MIN_BACKOFF_MS = 125;

/** A build whose named files (by suffix) are replaced by `size` pseudo-random bytes each: several large files. */
function withLargeFiles(b: SampleBuild, suffixes: readonly string[], size: number): SampleBuild {
  const files = b.files.map((f) => (suffixes.some((s) => f.name.endsWith(s)) ? { name: f.name, data: pseudoRandom(`${f.name}:large`, size) } : f));
  const spec = { flavor: b.flavor, arch: b.arch, version: b.version, commit: b.commit };
  return { ...b, files, metadata: metadataYaml(spec, b.base, b.platform, b.features, files, b.version, b.commit) };
}

/** The parts of a job summary that say how it ended. */
function brief(jobs: readonly JobSummary[]): string {
  return JSON.stringify(
    jobs.map(({ job, base, version, outcome, error, errorKind, errorCode }) => ({ job, ...(base ? { base } : {}), ...(version ? { version } : {}), outcome, error, errorKind, errorCode })),
  );
}

function faultsOf(proxy: FaultProxy): ProxyLogEntry[] {
  return proxy.log.filter((e) => e.faulted);
}

function describeEntries(entries: readonly ProxyLogEntry[]): string {
  return JSON.stringify(entries.map(({ kind, method, path, status, fault, bodyBytes, receivedBytes, upstreamStatus, heldMs, clientGone }) => ({ kind, method, path, status, fault, bodyBytes, receivedBytes, upstreamStatus, heldMs, clientGone })));
}

/** The one assertion every case makes about its jobs, with what the jobs said when it fails. */
function assertPublished(t: TestContext, jobs: readonly JobSummary[], proxy: FaultProxy, note = ''): void {
  t.diagnostic(`jobs: ${brief(jobs)}`);
  t.diagnostic(`injected: ${describeEntries(faultsOf(proxy))}`);
  assert.deepEqual(
    jobs.map((j) => j.outcome),
    ['published'],
    `expected a published job in one invocation; got ${brief(jobs)}; injected: ${describeEntries(faultsOf(proxy))}${note}`,
  );
}

describe('one fault per publication, one invocation', { concurrency: 4 }, () => {
  let stack: RegistryStack;
  let s3: LocalS3;
  let clients: ClientSandbox;
  const proxies: FaultProxy[] = [];
  const creds = ['--creds', `${USER}:${PASSWORD}`, '--tls-verify=false'];

  /** A container build whose image layer (and so its `.oci` archive) is ~6 MiB: both above SMALL_FILE. */
  const container = sampleBuild({ flavor: 'container', arch: 'amd64', imageSize: 6 * MiB });
  /** A disk-image build whose `.raw` is 9 MiB: a streamed PATCH and a body-less commit PUT. */
  const raw = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64', imageSize: 9 * MiB });
  /** Four files above SMALL_FILE: with BLOB_CONCURRENCY=4 their uploads start together. */
  const wide = withLargeFiles(sampleBuild({ flavor: 'metal-gardener_prod', arch: 'amd64', imageSize: 5 * MiB }), ['.tar', '.manifest', '.sbom'], 5 * MiB);
  /** Three small builds of one version, for the deleted manifests. */
  const trio = [
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' }),
    sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64' }),
    sampleBuild({ flavor: 'azure-gardener_prod', arch: 'arm64' }),
  ] as const;

  before(async () => {
    [stack, s3, clients] = await Promise.all([startTokenRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    for (const b of [container, raw, wide, ...trio]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([stack?.stop(), s3?.close(), clients?.cleanup()]);
  });

  /** A proxy in front of the registry and its token server, with its own repository and state. */
  const setup = async (name: string, rules: FaultRule[] = [], extra: Record<string, string> = {}, behaviour: ProxyBehaviour = {}) => {
    const proxy = await startFaultProxy(behaviour);
    proxies.push(proxy);
    proxy.setUpstream(stack.registry.url, stack.tokens.realm.replace(/\/token$/, ''));
    const repo = `single/${name}`;
    const env: Record<string, string> = {
      ...s3.env,
      REGISTRY: `http://${proxy.host}/${repo}`,
      REGISTRY_USERNAME: USER,
      REGISTRY_PASSWORD: PASSWORD,
      REGISTRY_TIMEOUT_SECONDS: '2',
      STATE_PREFIX: `oci-publisher/single-${name}/`,
      ...extra,
    };
    const lines: string[] = [];
    /** One handler invocation for one event. */
    const invoke = (event: object): Promise<JobSummary[]> => jobsOf(createHandler({ env, logSink: (l) => lines.push(l) })(event));
    const publish = (b: SampleBuild): Promise<JobSummary[]> => invoke(s3Event(BUCKET, `meta/singles/${b.base}`));
    const arm = () => proxy.rules.push(...rules);
    return { proxy, repo, env, lines, invoke, publish, arm };
  };

  // Straight at the registry (not through the proxy), with a token of the scope an operator's tool would get.
  const tokens = new Map<string, string>();
  const tokenFor = async (repo: string, actions: string): Promise<string> => {
    const id = `${repo} ${actions}`;
    const known = tokens.get(id);
    if (known) return known;
    const url = new URL(stack.tokens.realm);
    url.searchParams.set('service', stack.tokens.service);
    url.searchParams.set('scope', `repository:${repo}:${actions}`);
    const res = await fetch(url, { headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` } });
    assert.equal(res.status, 200, `token for ${id}`);
    const token = ((await res.json()) as { token: string }).token;
    tokens.set(id, token);
    return token;
  };
  const direct = async (method: string, repo: string, path: string, init: { body?: Buffer; contentType?: string; actions?: string } = {}) => {
    const token = await tokenFor(repo, init.actions ?? 'pull');
    return fetch(`${stack.registry.url}/v2/${repo}/${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(init.contentType ? { 'content-type': init.contentType } : {}), accept: `${OCI_INDEX}, ${OCI_MANIFEST}` },
      ...(init.body ? { body: init.body } : {}),
    });
  };

  /** Puts a blob into a repository straight at the registry (POST, then PUT with the digest and the bytes). */
  const pushBlob = async (repo: string, bytes: Buffer): Promise<void> => {
    const started = await direct('POST', repo, 'blobs/uploads/', { actions: 'pull,push' });
    assert.equal(started.status, 202, `POST upload: ${await started.text()}`);
    const location = new URL(started.headers.get('location') ?? '', stack.registry.url);
    location.searchParams.set('digest', sha256(bytes));
    const token = await tokenFor(repo, 'pull,push');
    const put = await fetch(location, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: bytes });
    assert.equal(put.status, 201, `PUT blob: ${await put.text()}`);
  };

  /** A blob's bytes at the registry have the digest and size its descriptor names. */
  const checkBlob = async (repo: string, d: { digest: string; size: number }, what: string): Promise<void> => {
    const res = await direct('GET', repo, `blobs/${d.digest}`);
    assert.equal(res.status, 200, `${what}: GET blob ${d.digest}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(sha256(bytes), d.digest, `${what}: the blob's bytes`);
    assert.equal(bytes.length, d.size, `${what}: the blob's size`);
  };

  /**
   * Each build's artifact manifest (by its tag), every blob it names, the container image and its blobs, and the
   * version index, read with skopeo and plain GETs straight from the registry; returns the index.
   */
  const checkRegistry = async (repo: string, builds: readonly SampleBuild[]): Promise<{ manifests: Array<{ digest: string }> }> => {
    const gl = new Map<string, { digest: string; size: number }>();
    for (const b of builds) {
      const rawManifest = await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${repo}:${glTag(b)}`]);
      assert.deepEqual(parse(rawManifest), expectedArtifactManifest(b), `the artifact manifest of ${b.base}`);
      gl.set(b.base, { digest: sha256(rawManifest), size: Buffer.byteLength(rawManifest) });
      const m = parse(rawManifest) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
      for (const d of [m.config, ...m.layers]) await checkBlob(repo, d, b.base);
      if (b.image) {
        const img = await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${repo}@${b.image.manifestDigest}`]);
        assert.equal(sha256(img), b.image.manifestDigest, `the image manifest of ${b.base}`);
        const im = parse(img) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
        assert.equal(im.config.digest, b.image.configDigest);
        assert.deepEqual(im.layers.map((l) => l.digest), [b.image.layerDigest]);
        for (const d of [im.config, ...im.layers]) await checkBlob(repo, d, `${b.base} image`);
      }
    }
    const index = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${repo}:${VERSION}`]));
    assert.deepEqual(index, expectedIndex(builds, gl), 'the version index');
    return index as { manifests: Array<{ digest: string }> };
  };

  // 1. A known-digest PUT carrying a whole image layer (> 4 MiB), reset after 1 MiB of its body.
  it('the image layer PUT (> 4 MiB body) is reset after 1 MiB: published in one invocation', async (t) => {
    const c = await setup('layer-put-reset', [{ kind: 'upload-put', minBodyBytes: SMALL_FILE, fault: { type: 'reset', afterBytes: MiB } }]);
    c.arm();
    const jobs = await c.publish(container);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 1, describeEntries(hit));
    assert.ok(hit[0]?.status === 'reset' && (hit[0].receivedBytes ?? 0) >= MiB && (hit[0].receivedBytes ?? 0) < hit[0].bodyBytes && hit[0].bodyBytes > SMALL_FILE, describeEntries(hit));
    assert.match(hit[0]?.path ?? '', /\/blobs\/uploads\//);
    assertPublished(t, jobs, c.proxy);
    await checkRegistry(c.repo, [container]);
  });

  // 1b. The same reset, while another publication (a duplicate delivery of the build) stores that very layer: the
  // registry then has the blob although this upload failed half-way, and the read feeding it must not be left
  // waiting for a consumer that has gone.
  it('the image layer PUT is reset while another publication stores the same layer: published in one invocation', async (t) => {
    const layer = containerArchive({ arch: 'amd64', rootfsSize: 6 * MiB, seed: container.base, version: VERSION, refName: 'container-amd64' }).layer;
    assert.equal(sha256(layer), container.image?.layerDigest, 'the layer as the sample build has it');
    let c: Awaited<ReturnType<typeof setup>> | undefined;
    c = await setup('layer-put-reset-twin', [
      { kind: 'upload-put', minBodyBytes: SMALL_FILE, fault: { type: 'reset', afterBytes: MiB }, before: () => pushBlob((c as { repo: string }).repo, layer) },
    ]);
    c.arm();
    const jobs = await c.publish(container);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 1, describeEntries(hit));
    assert.ok(hit[0]?.status === 'reset' && (hit[0].receivedBytes ?? 0) < hit[0].bodyBytes, `reset half-way: ${describeEntries(hit)}`);
    assertPublished(t, jobs, c.proxy);
    await checkRegistry(c.repo, [container]);
  });

  // 2. The same PUT answered 503 once.
  it('the image layer PUT (> 4 MiB body) is answered 503 once: published in one invocation', async (t) => {
    const c = await setup('layer-put-503', [{ kind: 'upload-put', minBodyBytes: SMALL_FILE, fault: { type: 'status', status: 503 } }]);
    c.arm();
    const jobs = await c.publish(container);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 1, describeEntries(hit));
    assert.ok(hit[0]?.status === 503 && hit[0].bodyBytes > SMALL_FILE, describeEntries(hit));
    assertPublished(t, jobs, c.proxy);
    await checkRegistry(c.repo, [container]);
  });

  // 3. A streamed PATCH (digest unknown) reset after 2 MiB: a 9 MiB `.raw`, and a container build's `.oci`.
  it('the streamed PATCH of a 9 MiB .raw is reset after 2 MiB: published in one invocation', async (t) => {
    const c = await setup('raw-patch-reset', [{ kind: 'upload-patch', minBodyBytes: SMALL_FILE, fault: { type: 'reset', afterBytes: 2 * MiB } }]);
    c.arm();
    const jobs = await c.publish(raw);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 1, describeEntries(hit));
    assert.ok(hit[0]?.status === 'reset' && (hit[0].receivedBytes ?? 0) >= 2 * MiB && hit[0].bodyBytes === 9 * MiB, describeEntries(hit));
    assertPublished(t, jobs, c.proxy);
    await checkRegistry(c.repo, [raw]);
  });

  it('the streamed PATCH of a container build’s whole .oci archive is reset after 2 MiB: published in one invocation', async (t) => {
    const archive = container.files.find((f) => f.name.endsWith('.oci'));
    assert.ok(archive && archive.data.length > SMALL_FILE, 'the archive is streamed');
    const c = await setup('oci-patch-reset', [{ kind: 'upload-patch', minBodyBytes: SMALL_FILE, fault: { type: 'reset', afterBytes: 2 * MiB } }]);
    c.arm();
    const jobs = await c.publish(container);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 1, describeEntries(hit));
    assert.ok(hit[0]?.status === 'reset' && (hit[0].receivedBytes ?? 0) >= 2 * MiB && hit[0].bodyBytes === archive.data.length, describeEntries(hit));
    assertPublished(t, jobs, c.proxy);
    await checkRegistry(c.repo, [container]);
  });

  // 4. The body-less commit `PUT <upload>?digest=` reaches the registry, which stores the blob; its answer is lost.
  for (const [label, build] of [
    ['a 9 MiB .raw', raw],
    ['a container build’s .oci archive', container],
  ] as const) {
    it(`the commit PUT of ${label} is committed by the registry but its answer is lost: published in one invocation`, async (t) => {
      const c = await setup(`commit-lost-${build.flavor}`, [{ kind: 'upload-put', maxBodyBytes: 0, fault: { type: 'lose-answer' } }]);
      c.arm();
      const jobs = await c.publish(build);
      const hit = faultsOf(c.proxy);
      assert.equal(hit.length, 1, describeEntries(hit));
      assert.ok(hit[0]?.status === 'lost' && hit[0].upstreamStatus === 201 && hit[0].bodyBytes === 0, `the registry committed the blob: ${describeEntries(hit)}`);
      assertPublished(t, jobs, c.proxy);
      await checkRegistry(c.repo, [build]);
    });
  }

  // 5. The same commit PUT, its answer held back past REGISTRY_TIMEOUT_SECONDS (the registry committed).
  for (const [label, build] of [
    ['a 9 MiB .raw', raw],
    ['a container build’s .oci archive', container],
  ] as const) {
    it(`the commit PUT of ${label} is committed but answered after the client's timeout: published in one invocation`, async (t) => {
      const c = await setup(`commit-late-${build.flavor}`, [{ kind: 'upload-put', maxBodyBytes: 0, fault: { type: 'delay-answer', ms: 2_500 } }], { REGISTRY_TIMEOUT_SECONDS: '1' });
      c.arm();
      const jobs = await c.publish(build);
      // The held answer is relayed (or dropped) 2.5 s after the registry gave it; wait for that to be logged.
      for (let i = 0; i < 40 && faultsOf(c.proxy).some((e) => e.heldMs === undefined); i++) await new Promise((r) => setTimeout(r, 100));
      const hit = faultsOf(c.proxy);
      assert.equal(hit.length, 1, describeEntries(hit));
      assert.ok(hit[0]?.fault === 'delay-answer' && hit[0].upstreamStatus === 201 && (hit[0].heldMs ?? 0) >= 2_000, `the registry committed the blob: ${describeEntries(hit)}`);
      assertPublished(t, jobs, c.proxy);
      await checkRegistry(c.repo, [build]);
    });
  }

  // 5b. The commit PUT fails (500, never reached the registry), and its retry finds the session gone (404
  // BLOB_UPLOAD_UNKNOWN, as after a registry restart or a commit that outlasted the timeout and then failed): the
  // blob is not there, so the upload starts over.
  it('the commit PUT fails and its retry finds the upload session gone (404): the upload starts over, published in one invocation', async (t) => {
    const gone = JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'blob upload unknown to registry' }] });
    const c = await setup('commit-session-gone', [
      { kind: 'upload-put', maxBodyBytes: 0, fault: { type: 'status', status: 500 } },
      { kind: 'upload-put', maxBodyBytes: 0, fault: { type: 'status', status: 404, body: gone } },
    ]);
    c.arm();
    const jobs = await c.publish(raw);
    const hit = faultsOf(c.proxy);
    assert.deepEqual(hit.map((e) => e.status), [500, 404], describeEntries(hit));
    assertPublished(t, jobs, c.proxy);
    assert.ok(c.lines.some((l) => l.includes('blob upload failed, restarting it')), 'the upload started over');
    await checkRegistry(c.repo, [raw]);
  });

  // 6. A short run of 503s on upload POSTs while four uploads run at once: 12 failures, 3 per upload, each of
  // which stays well within its own 5 attempts. Only those four uploads may be in flight: a small file's
  // requests (its blob HEAD, which the `.release` file also repeats after each failed attempt, outside
  // BLOB_CONCURRENCY; small files also race the large ones for the four places) succeed and would reset the
  // count of failures in a row at a random point. So the small files' blobs are in the repository already (an
  // earlier attempt left them) and POSTs are held 500 ms (a slow registry, no fault): every small file is
  // settled with a HEAD before the first 503 is answered.
  it('12 upload POSTs in a row answered 503 while 4 uploads run in parallel: published in one invocation', async (t) => {
    const large = wide.files.filter((f) => f.data.length > SMALL_FILE);
    assert.equal(large.length, 4, 'four files are streamed');
    const c = await setup('post-503-burst', [{ kind: 'upload-post', fault: { type: 'status', status: 503 }, times: 12 }], { BLOB_CONCURRENCY: '4' }, { delayMs: { 'upload-post': 500 } });
    const small = wide.files.filter((f) => f.data.length <= SMALL_FILE);
    for (const f of small) await pushBlob(c.repo, f.data);
    c.arm();
    const jobs = await c.publish(wide);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 12, describeEntries(hit));
    assert.ok(hit.every((e) => e.kind === 'upload-post' && e.status === 503));
    // What else the registry saw while the 503s came (POSTs are logged when they are answered).
    const amid = (from: number, to: number) => describeEntries(c.proxy.log.filter((e) => !e.faulted && e.at >= (hit[from]?.at ?? 0) && e.at <= (hit[to]?.at ?? 0)));
    t.diagnostic(`the registry's answers in order: ${c.proxy.log.map((e) => `${e.method} ${e.kind} ${e.status}`).join(', ')}`);
    assert.equal(amid(0, 7), '[]', 'the first eight 503s came with nothing between them');
    // Four POSTs within less than the shortest backoff of one another can only be four different uploads.
    const first = hit.slice(0, 4).map((e) => e.at);
    const spread = Math.max(...first) - Math.min(...first);
    const retried = new Set(
      c.lines
        .map((l) => parse(l) as { msg?: string; request?: string })
        .filter((l) => l.msg === 'registry request failed, retrying' && l.request?.startsWith('POST upload'))
        .map((l) => l.request),
    );
    t.diagnostic(`the first four faulted POSTs came within ${spread} ms; ${retried.size} uploads logged a retried POST`);
    assert.ok(spread < MIN_BACKOFF_MS || retried.size >= 4, `the faults hit 4 uploads at once (first four within ${spread} ms; ${retried.size} uploads retried)`);
    assertPublished(t, jobs, c.proxy);
    assert.equal(amid(0, 11), '[]', 'all twelve 503s came in a row');
    await checkRegistry(c.repo, [wide]);
  });

  // 7. The version index PUT (`/manifests/<version>`, not the `<version>-…` artifact tags) answered 502 twice.
  it('the version index PUT is answered 502 twice: published in one invocation', async (t) => {
    const c = await setup('index-put-502', [{ kind: 'manifest-put', pathEndsWith: `/manifests/${VERSION}`, fault: { type: 'status', status: 502 }, times: 2 }]);
    c.arm();
    const jobs = await c.publish(trio[0]);
    const hit = faultsOf(c.proxy);
    assert.equal(hit.length, 2, describeEntries(hit));
    assert.ok(hit.every((e) => e.kind === 'manifest-put' && e.status === 502 && e.path === `/v2/${c.repo}/manifests/${VERSION}`), describeEntries(hit));
    assertPublished(t, jobs, c.proxy);
    assert.ok(c.proxy.log.some((e) => e.kind === 'manifest-put' && e.path.endsWith(`/manifests/${VERSION}`) && e.status === 201), 'the index was written after all');
    await checkRegistry(c.repo, [trio[0]]);
  });

  // 8. A manifest the index names is deleted at the registry (an operator in a registry UI).
  const reindex = { action: 'reindex', bucket: BUCKET, version: VERSION };
  /** When the publication failed, what a reindex makes of the same state, for the failure message. */
  const reindexNote = async (t: TestContext, c: { invoke: (event: object) => Promise<JobSummary[]> }, jobs: readonly JobSummary[]): Promise<string> => {
    if (jobs.length === 1 && jobs[0]?.outcome === 'published') return '';
    const again = await c.invoke(reindex);
    t.diagnostic(`reindex after the failed publication: ${brief(again)}`);
    return `; a reindex then: ${brief(again)}`;
  };
  const assertNotNamed = (index: { manifests: Array<{ digest: string }> }, digest: string, what: string): void =>
    assert.ok(!index.manifests.some((m) => m.digest === digest), `the index still names ${what} ${digest}`);

  it('a build manifest deleted from the registry: the next build and a reindex publish an index of the live builds', async (t) => {
    const [a, b, cBuild] = trio;
    const c = await setup('deleted-build');
    for (const x of [a, b]) {
      const setupJobs = await c.publish(x);
      assert.deepEqual(setupJobs.map((j) => j.outcome), ['published'], `setup: ${brief(setupJobs)}`);
    }
    const deleted = sha256(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${c.repo}:${glTag(a)}`]));
    const before = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${c.repo}:${VERSION}`])) as { manifests: Array<{ digest: string }> };
    assert.ok(before.manifests.some((m) => m.digest === deleted), 'the index names the build before it is deleted');
    const del = await direct('DELETE', c.repo, `manifests/${deleted}`, { actions: 'delete' });
    assert.equal(del.status, 202, `DELETE manifest ${deleted}: ${await del.text()}`);
    assert.equal((await direct('HEAD', c.repo, `manifests/${deleted}`)).status, 404, 'the manifest is gone');
    t.diagnostic(`deleted ${a.base}'s artifact manifest ${deleted} at the registry (DELETE 202, then HEAD 404)`);

    const jobs = await c.publish(cBuild);
    assertPublished(t, jobs, c.proxy, `; deleted at the registry: ${a.base}'s manifest ${deleted}${await reindexNote(t, c, jobs)}`);
    const index = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${c.repo}:${VERSION}`])) as { manifests: Array<{ digest: string }> };
    assertNotNamed(index, deleted, 'the deleted manifest');
    await checkRegistry(c.repo, [b, cBuild]);

    const again = await c.invoke(reindex);
    t.diagnostic(`reindex: ${brief(again)}`);
    assert.ok(again.length === 1 && (again[0]?.outcome === 'published' || again[0]?.outcome === 'unchanged'), `reindex: ${brief(again)}`);
    await checkRegistry(c.repo, [b, cBuild]);
  });

  it('a manifest another tool listed in the index is deleted: the next build and a reindex publish an index of the live builds', async (t) => {
    const [a, b] = trio;
    const c = await setup('deleted-foreign');
    const setupJobs = await c.publish(a);
    assert.deepEqual(setupJobs.map((j) => j.outcome), ['published'], `setup: ${brief(setupJobs)}`);

    // Another tool pushes a Garden Linux artifact manifest of its own and lists it in the version index.
    const current = parse(Buffer.from(await (await direct('GET', c.repo, `manifests/${VERSION}`)).arrayBuffer())) as { manifests: unknown[] };
    const aManifest = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${c.repo}:${glTag(a)}`])) as { layers: Array<{ digest: string; size: number }> };
    const layer = aManifest.layers[0];
    assert.ok(layer);
    const cname = `foreign-amd64-${VERSION}-0badc0de`;
    const foreign = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.unknown.config.v1+json', digest: EMPTY_CONFIG_DIGEST, size: 2 },
        layers: [{ mediaType: 'application/octet-stream', digest: layer.digest, size: layer.size }],
        annotations: { cname, architecture: 'amd64', version: VERSION },
      }),
    );
    const foreignDigest = sha256(foreign);
    const pushed = await direct('PUT', c.repo, `manifests/${foreignDigest}`, { body: foreign, contentType: OCI_MANIFEST, actions: 'pull,push' });
    assert.equal(pushed.status, 201, `PUT foreign manifest: ${await pushed.text()}`);
    const withForeign = Buffer.from(
      JSON.stringify({
        ...current,
        manifests: [
          ...current.manifests,
          {
            mediaType: OCI_MANIFEST,
            digest: foreignDigest,
            size: foreign.length,
            annotations: { cname, architecture: 'amd64', feature_set: 'base' },
            platform: { architecture: 'amd64', os: 'gardenlinux', 'os.version': VERSION },
          },
        ],
      }),
    );
    const put = await direct('PUT', c.repo, `manifests/${VERSION}`, { body: withForeign, contentType: OCI_INDEX, actions: 'pull,push' });
    assert.equal(put.status, 201, `PUT index with the foreign entry: ${await put.text()}`);
    // Then an operator deletes that manifest; the index still lists it.
    const del = await direct('DELETE', c.repo, `manifests/${foreignDigest}`, { actions: 'delete' });
    assert.equal(del.status, 202, `DELETE manifest ${foreignDigest}: ${await del.text()}`);
    assert.equal((await direct('HEAD', c.repo, `manifests/${foreignDigest}`)).status, 404, 'the manifest is gone');
    t.diagnostic(`listed ${cname} (${foreignDigest}) in the index, then deleted it at the registry (DELETE 202, then HEAD 404)`);

    const jobs = await c.publish(b);
    assertPublished(t, jobs, c.proxy, `; deleted at the registry: the foreign manifest ${foreignDigest} the index lists${await reindexNote(t, c, jobs)}`);
    const index = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${c.repo}:${VERSION}`])) as { manifests: Array<{ digest: string }> };
    assertNotNamed(index, foreignDigest, 'the deleted foreign manifest');
    await checkRegistry(c.repo, [a, b]);

    const again = await c.invoke(reindex);
    t.diagnostic(`reindex: ${brief(again)}`);
    assert.ok(again.length === 1 && (again[0]?.outcome === 'published' || again[0]?.outcome === 'unchanged'), `reindex: ${brief(again)}`);
    await checkRegistry(c.repo, [a, b]);
  });
});
