/**
 * The handler end to end for every event shape, on a local directory standing in for the bucket and a local
 * OCI layout: what becomes a job, what is skipped, and how failures are reported.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHandler, JobsFailedError, type HandlerResult, type SqsBatchResult } from '../../functions/publish/handler';
import { s3Event } from '../../tools/local-s3';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';

describe('handler: events to jobs to summaries', () => {
  let dir: string;
  let logs: string[];
  let handler: ReturnType<typeof createHandler>;
  const good = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' });
  const other = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64' });
  const broken = sampleBuild({ flavor: 'azure-gardener_prod', arch: 'amd64' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-handler-'));
    const bucket = join(dir, 'bucket');
    for (const b of [good, other, broken]) await writeBuildDir(bucket, b);
    // A metadata document naming a file that is not there.
    await writeFile(join(bucket, 'meta', 'singles', broken.base), broken.metadata.replaceAll(`${broken.base}.sbom`, `${broken.base}.missing`));
    // Documents of other writers under the same prefix.
    await writeFile(join(bucket, 'meta', 'singles', 'container-1877.3-75df9f40'), 'version: "1877.3"\nglci_version: "4.1"\nmanifests:\n- meta/singles/container-amd64-1877.3-75df9f40\n');
    logs = [];
    handler = createHandler({
      env: { REGISTRY: `oci-layout:${join(dir, 'layout')}`, SOURCE_DIR: bucket, LOG_LEVEL: 'info' },
      logSink: (l) => logs.push(l),
    });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('publishes from an EventBridge Object Created event', async () => {
    const event = {
      version: '0',
      source: 'aws.s3',
      'detail-type': 'Object Created',
      detail: { bucket: { name: 'gardenlinux-github-releases' }, object: { key: `meta/singles/${good.base}`, etag: 'x' }, 'request-id': 'REQ1' },
    };
    const r = (await handler(event)) as HandlerResult;
    assert.equal(r.jobs[0]?.outcome, 'published');
    assert.equal(r.jobs[0]?.s3RequestId, 'REQ1');
  });

  it('skips keys outside meta/singles/ and documents that are not builds, with an info log', async () => {
    const before = logs.length;
    const outside = (await handler(s3Event('b', `objects/${good.base}/${good.base}.release`))) as HandlerResult;
    const group = (await handler(s3Event('b', 'meta/singles/container-1877.3-75df9f40'))) as HandlerResult;
    assert.equal(outside.jobs[0]?.outcome, 'skipped');
    assert.match(outside.jobs[0]?.reason ?? '', /not a build metadata document/);
    assert.equal(group.jobs[0]?.outcome, 'skipped');
    assert.match(group.jobs[0]?.reason ?? '', /group document listing 1 builds/);
    const lines = logs.slice(before).map((l) => JSON.parse(l) as { level: string; msg: string });
    assert.ok(lines.some((l) => l.level === 'info' && l.msg === 'job skipped'));
    assert.ok(lines.every((l) => l.level !== 'error'));
  });

  it('answers an SQS batch with the failed message ids only, dropping S3 test messages', async () => {
    const body = (e: object) => JSON.stringify(e);
    const event = {
      Records: [
        { eventSource: 'aws:sqs', messageId: 'm-ok', body: body(s3Event('b', `meta/singles/${other.base}`)) },
        { eventSource: 'aws:sqs', messageId: 'm-test', body: body({ Service: 'Amazon S3', Event: 's3:TestEvent', Bucket: 'b' }) },
        { eventSource: 'aws:sqs', messageId: 'm-garbage', body: 'not json' },
        { eventSource: 'aws:sqs', messageId: 'm-broken', body: body(s3Event('b', `meta/singles/${broken.base}`)) },
      ],
    };
    const r = (await handler(event)) as SqsBatchResult;
    assert.deepEqual(r.batchItemFailures.map((f) => f.itemIdentifier).sort(), ['m-broken', 'm-garbage']);
  });

  it('runs every job of an event, then throws naming the failed ones', async () => {
    const event = {
      Records: [...(s3Event('b', `meta/singles/${broken.base}`) as { Records: object[] }).Records, ...(s3Event('b', `meta/singles/${good.base}`) as { Records: object[] }).Records],
    };
    await assert.rejects(handler(event), (err: unknown) => {
      assert.ok(err instanceof JobsFailedError);
      assert.match(err.message, /1 of 2 jobs failed: azure-gardener_prod-amd64-1877\.3-75df9f40: .*\.missing is listed in the metadata .* but does not exist/);
      assert.deepEqual(err.summaries.map((s) => s.outcome), ['failed', 'unchanged']);
      return true;
    });
    const failure = logs.map((l) => JSON.parse(l) as { level: string; msg: string; base?: string; errorKind?: string }).find((l) => l.msg === 'job failed');
    assert.equal(failure?.level, 'error');
    assert.equal(failure?.errorKind, 'input');
  });

  it('logs one JSON summary line and one metrics line (embedded metric format) per job', () => {
    const records = logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    const summaries = records.filter((r) => r.msg === 'job finished' || r.msg === 'job skipped' || r.msg === 'job failed');
    const metrics = records.filter((r) => r._aws !== undefined);
    assert.ok(summaries.length >= 5);
    assert.equal(metrics.length, summaries.length);
    const published = summaries.find((r) => r.msg === 'job finished' && r.outcome === 'published');
    assert.ok(published);
    for (const field of ['base', 'outcome', 'manifest', 'indexes', 'bytesUploaded', 'blobsSkipped', 'durationMs', 's3RequestId']) {
      assert.ok(field in published, `the summary line has ${field}`);
    }
    assert.ok(metrics.some((m) => m.Published === 1 && m.base === published.base));
    assert.ok(metrics.some((m) => m.Failed === 1));
  });

  it('rejects an unknown event, naming the accepted shapes', async () => {
    await assert.rejects(handler({ detail: 'nothing' }), /unrecognised event; accepted are S3 notifications .*manual payloads/);
  });

  it('refuses to start with a bad configuration, naming the variable', async () => {
    const bad = createHandler({ env: { REGISTRY: 'oci-layout:/tmp/x', STATE_PREFIX: 'meta/singles/' }, logSink: () => undefined });
    await assert.rejects(bad({ action: 'reindex', version: '1877.3' }), /STATE_PREFIX must not be empty or under meta\//);
  });

  it('logs a SIGNING_KEY that holds a PEM private key as refused, without a part of the key (issue 19)', async () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const lines: string[] = [];
    const bad = createHandler({ env: { REGISTRY: `oci-layout:${join(dir, 'layout')}`, SIGNING_KEY: pem }, logSink: (l) => lines.push(l) });
    const thrown = await bad({ action: 'reindex', version: '1877.3' }).then(
      () => assert.fail('the handler started'),
      (err: unknown) => err as Error,
    );
    // What CloudWatch receives: the JSON line, as written.
    assert.equal(lines.length, 1, lines.join('\n'));
    const record = JSON.parse(lines[0] as string) as { level: string; msg: string; error: string };
    assert.equal(record.level, 'error');
    assert.equal(record.msg, 'configuration rejected');
    const body = pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
    for (const text of [lines[0] as string, thrown.message, String(thrown.stack)]) {
      assert.doesNotMatch(text, /-----BEGIN/);
      for (let i = 0; i + 12 <= body.length; i++) assert.ok(!text.includes(body.slice(i, i + 12)), `holds "${body.slice(i, i + 12)}" of the key`);
    }
    assert.match(record.error, /SIGNING_KEY/);
    assert.match(record.error, /PEM/, 'it says what the value looks like');
    assert.match(record.error, /awskms:\/\/\/<key id, key ARN or alias> or file:<path to a PEM private key>/, 'and what is expected');
  });
});
