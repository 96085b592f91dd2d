/**
 * S3 failing under the publisher: a file the metadata lists is missing, a file changes between the listing and
 * the read (caught by its ETag), requests are throttled. Each ends clearly, and nothing is written that refers to
 * a missing blob.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import { createRuntime } from '../../functions/publish/runtime';
import type { JobSummary } from '../../functions/publish/run-job';
import type { ObjectStore } from '../../functions/storage/object-store';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { firstJob } from '../helpers/jobs';
import { BUCKET, glTag } from '../helpers/expectations';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const SLOW_DOWN = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';

function run(handler: ReturnType<typeof createHandler>, b: SampleBuild): Promise<JobSummary> {
  return firstJob(handler(s3Event(BUCKET, `meta/singles/${b.base}`)));
}

describe('S3 faults', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let proxy: FaultProxy;

  before(async () => {
    [registry, s3, proxy] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), startFaultProxy()]);
    proxy.setUpstream(s3.endpoint);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), proxy?.close()]);
  });

  /** The build's artifact manifest is not in the registry: nothing names its blobs. */
  const assertNotPublished = async (repo: string, b: SampleBuild): Promise<void> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${glTag(b)}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    await res.body.dump();
    assert.equal(res.statusCode, 404);
    const index = await request(`${registry.url}/v2/${repo}/manifests/${b.version}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    await index.body.dump();
    assert.equal(index.statusCode, 404);
  };
  const handlerFor = (repo: string, extra: Record<string, string> = {}) =>
    createHandler({ env: { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.url, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: `oci-publisher/${repo}/`, ...extra }, logSink: () => undefined });

  it('a file the metadata lists is missing: fails naming it', async () => {
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'aaaa0001' });
    await uploadBuild(s3.client, BUCKET, b);
    await s3.client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `objects/${b.base}/${b.base}.raw` }));
    const job = await run(handlerFor('missing'), b);
    assert.equal(job.outcome, 'failed');
    assert.match(job.error ?? '', new RegExp(`objects/${b.base}/${b.base}\\.raw is listed in the metadata of ${b.base} but does not exist`));
    assert.equal(job.bytesUploaded, 0, 'found before anything was uploaded');
    await assertNotPublished('missing', b);
  });

  it('a file changes between the listing and the read: the ETag catches it', async () => {
    const b = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'aaaa0002' });
    await uploadBuild(s3.client, BUCKET, b);
    const changed = `objects/${b.base}/${b.base}.manifest`;
    // The real runtime, with the bucket's listing followed at once by another upload of one of the files.
    const handler = createHandler({
      env: { ...s3.env, REGISTRY: `http://${registry.host}/changed`, STATE_PREFIX: 'oci-publisher/changed/' },
      logSink: () => undefined,
      runtime: (config, logger) => {
        const rt = createRuntime(config, logger);
        return {
          ...rt,
          storeFor(bucket: string): ObjectStore {
            const store = rt.storeFor(bucket);
            return {
              description: store.description,
              get: (k, o) => store.get(k, o),
              open: (k, o) => store.open(k, o),
              listFolders: (p) => store.listFolders(p),
              put: (k, body, t) => store.put(k, body, t),
              delete: (k) => store.delete(k),
              async list(prefix) {
                const listing = await store.list(prefix);
                if (prefix.startsWith('objects/')) await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: changed, Body: 'rebuilt\n' }));
                return listing;
              },
            };
          },
        };
      },
    });
    const job = await run(handler, b);
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'source');
    assert.match(job.error ?? '', new RegExp(`${changed.replace(/\./g, '\\.')}: the object changed while it was being published`));
    await assertNotPublished('changed', b);
  });

  it('parallel ranged reads (S3_READERS): a range that breaks is read again on its own', async () => {
    const b = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', commit: 'aaaa0005', imageSize: 5 * 1024 * 1024 });
    await uploadBuild(s3.client, BUCKET, b);
    proxy.rules.length = 0;
    proxy.log.length = 0;
    // The third ranged GET of the image is cut off after some bytes.
    proxy.rules.push({ kind: 'other', pathIncludes: `${b.base}.raw`, fault: { type: 'reset', afterBytes: 300_000 }, skip: 2, times: 1 });
    const raw = b.files.find((f) => f.name.endsWith('.raw'))?.data.length ?? 0;
    const job = await run(handlerFor('ranges', { S3_READERS: '4', S3_PART_MIB: '1' }), b);
    assert.equal(job.outcome, 'published', job.error);
    assert.ok(proxy.log.some((e) => e.faulted), 'the fault was injected');
    const rangeRequests = proxy.log.filter((e) => e.path.endsWith(`${b.base}.raw`) && e.method === 'GET');
    assert.equal(rangeRequests.length, Math.ceil(raw / (1024 * 1024)) + 1, 'one request per 1 MiB part, and one again');
    const small = b.files.filter((f) => !f.name.endsWith('.raw')).reduce((n, f) => n + f.data.length, 0);
    assert.ok(job.bytesRead <= raw + small + 1024 * 1024, `read ${job.bytesRead}: the image once and one part again at most`);
  });

  it('the facts of a build are listed once; when that listing fails, each file is asked for by itself and a re-run still reads nothing', async () => {
    const b = sampleBuild({ flavor: 'metal-gardener_prod', arch: 'arm64', commit: 'aaaa0006' });
    await uploadBuild(s3.client, BUCKET, b);
    proxy.rules.length = 0;
    proxy.log.length = 0;
    const first = await run(handlerFor('facts'), b);
    assert.equal(first.outcome, 'published', first.error);
    const factReads = () => proxy.log.filter((e) => e.method === 'GET' && e.path.includes('/digests/'));
    assert.deepEqual(factReads().map((e) => e.path), [], 'a first publication lists the facts and asks for none of them');
    assert.equal(proxy.log.filter((e) => e.method === 'GET' && e.search.includes('digests')).length, 1, 'one listing');

    proxy.log.length = 0;
    proxy.rules.push({ kind: 'other', searchIncludes: 'digests', fault: { type: 'status', status: 500 }, times: Infinity });
    const again = await run(handlerFor('facts'), b);
    assert.equal(again.outcome, 'unchanged', again.error);
    assert.equal(again.bytesRead, 0, 'nothing read: every file found its facts');
    assert.ok(proxy.log.some((e) => e.faulted), 'the listing failed');
    assert.equal(factReads().length, b.files.length, 'each file asked for by itself');
  });

  it('throttling that passes: the publication completes', async () => {
    const b = sampleBuild({ flavor: 'azure-gardener_prod', arch: 'amd64', commit: 'aaaa0003' });
    await uploadBuild(s3.client, BUCKET, b);
    proxy.rules.length = 0;
    proxy.log.length = 0;
    proxy.rules.push({ kind: 'other', pathIncludes: `/objects/${b.base}/`, fault: { type: 'status', status: 503, body: SLOW_DOWN, contentType: 'application/xml' }, times: 2 });
    const job = await run(handlerFor('throttled'), b);
    assert.equal(job.outcome, 'published', job.error);
    assert.equal(proxy.log.filter((e) => e.faulted).length, 2);
  });

  it('throttling that does not pass: fails saying S3 slowed it down, with nothing published', async () => {
    const b = sampleBuild({ flavor: 'openstack-gardener_prod', arch: 'amd64', commit: 'aaaa0004' });
    await uploadBuild(s3.client, BUCKET, b);
    proxy.rules.length = 0;
    proxy.rules.push({ kind: 'other', pathIncludes: `/objects/${b.base}/`, fault: { type: 'status', status: 503, body: SLOW_DOWN, contentType: 'application/xml' }, times: Infinity });
    const started = Date.now();
    const job = await run(handlerFor('throttled-hard'), b);
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'source');
    assert.match(job.error ?? '', /SlowDown, HTTP 503/);
    assert.ok(Date.now() - started < 60_000);
    await assertNotPublished('throttled-hard', b);
  });
});
