/**
 * The handler watches context.getRemainingTimeInMillis(): it starts no upload that cannot finish, stops a
 * running one at the margin, never stops between reading the version index and writing it, and fails the job so
 * Lambda retries. The retry completes the publication without redoing the uploads that had finished.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, expectedIndex, glTag, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

describe('the time an invocation has', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let proxy: FaultProxy;
  const proxies: FaultProxy[] = [];

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), ...proxies.map((p) => p.close())]);
  });

  const invoke = async (repo: string, b: SampleBuild, remainingMs: number): Promise<JobSummary> => {
    const handler = createHandler({
      env: { ...s3.env, REGISTRY: `http://${proxy.host}/${repo}`, STOP_MARGIN_SECONDS: '1', BLOB_CONCURRENCY: '2', STATE_PREFIX: `oci-publisher/${repo}/` },
      logSink: () => undefined,
    });
    const started = Date.now();
    const context = { awsRequestId: 'deadline', getRemainingTimeInMillis: () => remainingMs - (Date.now() - started) };
    return firstJob(handler(s3Event(BUCKET, `meta/singles/${b.base}`), context));
  };
  const indexStatus = async (repo: string, version: string): Promise<number> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${version}`, { headers: { accept: ACCEPT } });
    await res.body.dump();
    return res.statusCode;
  };
  const assertComplete = async (repo: string, b: SampleBuild): Promise<void> => {
    const raw = await request(`${registry.url}/v2/${repo}/manifests/${glTag(b)}`, { headers: { accept: ACCEPT } });
    const bytes = Buffer.from(await raw.body.arrayBuffer());
    const index = await request(`${registry.url}/v2/${repo}/manifests/${b.version}`, { headers: { accept: ACCEPT } });
    assert.deepEqual(JSON.parse(Buffer.from(await index.body.arrayBuffer()).toString()), expectedIndex([b], new Map([[b.base, { digest: sha256(bytes), size: bytes.length }]])));
  };

  it('starts no upload that cannot finish; the retry does the rest', async () => {
    proxy = await startFaultProxy({ delayMs: { 'upload-put': 1_500 } });
    proxies.push(proxy);
    proxy.setUpstream(registry.url);
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'dead0001' });
    await uploadBuild(s3.client, BUCKET, b);

    // 9 s in all, 1 s of it kept back: room for the first uploads only (each takes 1.5 s at this registry and is
    // estimated at 3 s or more), not for all of them.
    const first = await invoke('soft', b, 9_000);
    assert.equal(first.outcome, 'failed');
    assert.equal(first.errorKind, 'timeout');
    assert.match(first.error ?? '', /stopped before uploading .* s are left/);
    assert.ok(first.blobsUploaded > 0 && first.blobsUploaded < b.files.length, `${first.blobsUploaded} of ${b.files.length} blobs uploaded`);
    assert.equal(await indexStatus('soft', b.version), 404, 'no index was written');

    const retry = await invoke('soft', b, 900_000);
    assert.equal(retry.outcome, 'published', retry.error);
    assert.ok(retry.blobsSkipped >= first.blobsUploaded, `the retry skipped ${retry.blobsSkipped} blobs, ${first.blobsUploaded} were done`);
    // Every file once in all: the config blob ({}) is the one blob beyond the files.
    assert.equal(first.blobsUploaded + retry.blobsUploaded, b.files.length + 1);
    await assertComplete('soft', b);
  });

  it('stops a running upload at the margin, then the retry completes it', async () => {
    // One upload that hangs for 10 s at the registry; the invocation has 7 s (6 s after the margin).
    proxy = await startFaultProxy({ delayMs: { 'upload-put': 10_000 } });
    proxies.push(proxy);
    proxy.setUpstream(registry.url);
    const b = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'arm64', commit: 'dead0002' });
    // One file only, so the one upload is the whole publication.
    const only = { ...b, files: b.files.filter((f) => f.name.endsWith('.release')) };
    const lone = { ...only, metadata: b.metadata.replace(/^- md5sum:[\s\S]*?(?=^platform:)/m, (paths) => paths.split(/(?=^- md5sum:)/m).filter((p) => p.includes('.release\n')).join('')) };
    await uploadBuild(s3.client, BUCKET, lone);

    const started = Date.now();
    const first = await invoke('hard', lone, 7_000);
    const took = Date.now() - started;
    assert.equal(first.outcome, 'failed');
    assert.equal(first.errorKind, 'timeout');
    assert.match(first.error ?? '', /time ran out/);
    assert.ok(took >= 5_500 && took < 6_800, `stopped after ${took} ms: at the margin, before Lambda would have killed it`);
    assert.equal(await indexStatus('hard', lone.version), 404);

    proxy.behaviour.delayMs = {};
    const retry = await invoke('hard', lone, 900_000);
    assert.equal(retry.outcome, 'published', retry.error);
    await assertComplete('hard', lone);
  });
});

describe('the version index at the end of the time', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  const proxies: FaultProxy[] = [];
  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), ...proxies.map((p) => p.close())]);
  });

  it('waits for no Retry-After past the final point: the index PUT answered 429 "retry in 60 s" with 20 s left', async () => {
    const proxy = await startFaultProxy();
    proxies.push(proxy);
    proxy.setUpstream(registry.url);
    proxy.rules.push({ kind: 'manifest-put', pathEndsWith: '/manifests/1877.3', fault: { type: 'status', status: 429, retryAfter: '60' }, times: Infinity });
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'dead0003' });
    await uploadBuild(s3.client, BUCKET, b);
    const handler = createHandler({ env: { ...s3.env, REGISTRY: `http://${proxy.host}/retry-after`, STOP_MARGIN_SECONDS: '5' }, logSink: () => undefined });
    const started = Date.now();
    const context = { awsRequestId: 'deadline', getRemainingTimeInMillis: () => 20_000 - (Date.now() - started) };
    const job = await firstJob(handler(s3Event(BUCKET, `meta/singles/${b.base}`), context));
    const took = Date.now() - started;
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'timeout', job.error);
    assert.match(job.error ?? '', /HTTP 429.*the next attempt would wait 60 s, and \d+ s are left/);
    assert.ok(took < 10_000, `gave up after ${took} ms instead of waiting 60 s past the invocation's end`);
  });
});
