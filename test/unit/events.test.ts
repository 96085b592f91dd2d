import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeS3Key, normaliseEvent, type Job } from '../../functions/publish/events';
import { InputError } from '../../functions/util/errors';

const BUCKET = 'gardenlinux-github-releases';
const BASE = 'container-amd64-1877.3-75df9f40';
const META_KEY = `meta/singles/${BASE}`;

function s3Record(opts: { key: string; bucket?: string; eventName?: string; requestId?: string; eTag?: string }): Record<string, unknown> {
  return {
    eventVersion: '2.1',
    eventSource: 'aws:s3',
    awsRegion: 'eu-central-1',
    eventTime: '2026-02-10T11:12:42.000Z',
    eventName: opts.eventName ?? 'ObjectCreated:Put',
    userIdentity: { principalId: 'AWS:AROAEXAMPLE' },
    requestParameters: { sourceIPAddress: '10.0.0.1' },
    responseElements: {
      ...(opts.requestId !== undefined ? { 'x-amz-request-id': opts.requestId } : {}),
      'x-amz-id-2': 'FMyUVexample',
    },
    s3: {
      s3SchemaVersion: '1.0',
      configurationId: 'gl-oci-publisher',
      bucket: { name: opts.bucket ?? BUCKET, ownerIdentity: { principalId: 'A3NL1K' }, arn: `arn:aws:s3:::${opts.bucket ?? BUCKET}` },
      object: {
        key: opts.key,
        size: 1234,
        ...(opts.eTag !== undefined ? { eTag: opts.eTag } : {}),
        sequencer: '0055AED6DCD90281E5',
      },
    },
  };
}

function eventBridge(opts: { key: string; bucket?: string; requestId?: string; etag?: string; detailType?: string }): Record<string, unknown> {
  return {
    version: '0',
    id: '17793124-05d4-b198-2fde-7ededc63b103',
    'detail-type': opts.detailType ?? 'Object Created',
    source: 'aws.s3',
    account: '111122223333',
    time: '2026-02-10T11:12:42Z',
    region: 'eu-central-1',
    resources: [`arn:aws:s3:::${opts.bucket ?? BUCKET}`],
    detail: {
      version: '0',
      bucket: { name: opts.bucket ?? BUCKET },
      object: { key: opts.key, size: 4242, ...(opts.etag !== undefined ? { etag: opts.etag } : {}), sequencer: '0064D3901D00059242' },
      ...(opts.requestId !== undefined ? { 'request-id': opts.requestId } : {}),
      requester: '123456789012',
      reason: 'PutObject',
    },
  };
}

function sqsRecord(messageId: string, body: string): Record<string, unknown> {
  return {
    messageId,
    receiptHandle: `handle-${messageId}`,
    body,
    attributes: { ApproximateReceiveCount: '1' },
    messageAttributes: {},
    md5OfBody: '00000000000000000000000000000000',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:eu-central-1:111122223333:gl-oci',
    awsRegion: 'eu-central-1',
  };
}

function assertInputError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

describe('decodeS3Key', () => {
  it('turns "+" into a space', () => {
    assert.equal(decodeS3Key('builds/red+flower.jpg'), 'builds/red flower.jpg');
  });

  it('turns %2B into a plus and %3A into a colon', () => {
    assert.equal(decodeS3Key('builds/app%2B1.0/disk%3Av2.img'), 'builds/app+1.0/disk:v2.img');
  });

  it('handles "+" and %2B in the same key', () => {
    assert.equal(decodeS3Key('a+b%2Bc'), 'a b+c');
  });

  it('leaves a Garden Linux metadata key unchanged', () => {
    assert.equal(decodeS3Key(META_KEY), META_KEY);
  });

  it('decodes multi-byte UTF-8 escapes', () => {
    assert.equal(decodeS3Key('x/%C3%A4%20y'), 'x/ä y');
  });

  it('refuses a malformed escape with an InputError naming the key', () => {
    assertInputError(() => decodeS3Key('bad%ZZkey'), /bad%ZZkey/, /URL-encoded/);
  });
});

describe('normaliseEvent: S3 notifications', () => {
  it('makes one publish job per ObjectCreated record, in order, with decoded keys', () => {
    const event = {
      Records: [
        s3Record({ key: META_KEY, requestId: 'C3D13FE58DE4C810', eTag: '4af981f98d22a0b9979da24b259e5e42' }),
        s3Record({ key: 'meta/singles/metal-arm64-1877.3-75df9f40', eventName: 'ObjectCreated:CompleteMultipartUpload', bucket: 'other-bucket' }),
        s3Record({ key: 'builds/app%2B1.0/disk%3Av2+copy.img', eventName: 'ObjectCreated:Copy' }),
      ],
    };
    const result = normaliseEvent(event);
    assert.equal(result.sqs, false);
    assert.deepEqual(result.jobs, [
      {
        kind: 'publish',
        bucket: BUCKET,
        key: META_KEY,
        origin: 's3',
        eventName: 'ObjectCreated:Put',
        s3RequestId: 'C3D13FE58DE4C810',
        eTag: '4af981f98d22a0b9979da24b259e5e42',
      },
      {
        kind: 'publish',
        bucket: 'other-bucket',
        key: 'meta/singles/metal-arm64-1877.3-75df9f40',
        origin: 's3',
        eventName: 'ObjectCreated:CompleteMultipartUpload',
      },
      {
        kind: 'publish',
        bucket: BUCKET,
        key: 'builds/app+1.0/disk:v2 copy.img',
        origin: 's3',
        eventName: 'ObjectCreated:Copy',
      },
    ]);
  });

  it('carries x-amz-request-id as s3RequestId and has no messageId', () => {
    const { jobs } = normaliseEvent({ Records: [s3Record({ key: META_KEY, requestId: 'REQ123' })] });
    const job = jobs[0];
    assert.ok(job && job.kind === 'publish');
    assert.equal(job.s3RequestId, 'REQ123');
    assert.equal(job.messageId, undefined);
    assert.equal('messageId' in job, false);
  });

  it('turns records other than ObjectCreated into ignore jobs, keeping the others', () => {
    const { jobs } = normaliseEvent({
      Records: [
        s3Record({ key: META_KEY, eventName: 'ObjectRemoved:Delete' }),
        s3Record({ key: 'meta/singles/metal-amd64-1877.3-75df9f40' }),
        s3Record({ key: 'meta/singles/x', eventName: 'ObjectRestore:Completed' }),
      ],
    });
    assert.equal(jobs.length, 3);
    assert.deepEqual(
      jobs.map((j) => j.kind),
      ['ignore', 'publish', 'ignore'],
    );
    const ignored = jobs[0];
    assert.ok(ignored && ignored.kind === 'ignore');
    assert.equal(ignored.origin, 's3');
    assert.match(ignored.reason, /ObjectRemoved:Delete/);
    assert.ok(ignored.reason.includes(`s3://${BUCKET}/${META_KEY}`));
    const published = jobs[1];
    assert.ok(published && published.kind === 'publish');
    assert.equal(published.key, 'meta/singles/metal-amd64-1877.3-75df9f40');
  });

  it('accepts a notification whose record lacks responseElements and eTag', () => {
    const record = s3Record({ key: META_KEY });
    delete record.responseElements;
    const { jobs } = normaliseEvent({ Records: [record] });
    assert.deepEqual(jobs, [{ kind: 'publish', bucket: BUCKET, key: META_KEY, origin: 's3', eventName: 'ObjectCreated:Put' }]);
  });

  it('parses an event given as a JSON string', () => {
    const result = normaliseEvent(JSON.stringify({ Records: [s3Record({ key: 'a+b%2Bc', requestId: 'R1' })] }));
    assert.equal(result.sqs, false);
    assert.deepEqual(result.jobs, [
      { kind: 'publish', bucket: BUCKET, key: 'a b+c', origin: 's3', eventName: 'ObjectCreated:Put', s3RequestId: 'R1' },
    ]);
  });

  it('drops the S3 test event delivered directly', () => {
    const result = normaliseEvent({
      Service: 'Amazon S3',
      Event: 's3:TestEvent',
      Time: '2026-02-10T11:12:42.000Z',
      Bucket: BUCKET,
      RequestId: 'R',
      HostId: 'H',
    });
    assert.equal(result.jobs.length, 1);
    assert.equal(result.jobs[0]?.kind, 'ignore');
  });

  it('refuses a notification with an empty Records array', () => {
    assertInputError(() => normaliseEvent({ Records: [] }), /unrecognised event/);
  });
});

describe('normaliseEvent: EventBridge', () => {
  it('takes keys as EventBridge carries them: not URL-decoded (issue 10)', () => {
    const plus = normaliseEvent(eventBridge({ key: 'meta/singles/odd+name-amd64-1877.3-75df9f40' })).jobs[0];
    assert.equal(plus?.kind === 'publish' ? plus.key : undefined, 'meta/singles/odd+name-amd64-1877.3-75df9f40', 'a + stays a +');
    // A % elsewhere in the bucket is just a character: the event is not refused, the key is not a build.
    const percent = normaliseEvent(eventBridge({ key: 'reports/100%-done.txt' })).jobs[0];
    assert.equal(percent?.kind === 'publish' ? percent.key : undefined, 'reports/100%-done.txt');
  });

  it('makes a publish job from an "Object Created" event with request id and etag', () => {
    const result = normaliseEvent(eventBridge({ key: META_KEY, requestId: 'XRRTKJXSZQCWNQR1', etag: 'abc123-12' }));
    assert.equal(result.sqs, false);
    assert.deepEqual(result.jobs, [
      {
        kind: 'publish',
        bucket: BUCKET,
        key: META_KEY,
        origin: 'eventbridge',
        eventName: 'Object Created',
        s3RequestId: 'XRRTKJXSZQCWNQR1',
        eTag: 'abc123-12',
      },
    ]);
  });

  it('works without request id and etag', () => {
    const { jobs } = normaliseEvent(eventBridge({ key: META_KEY }));
    assert.deepEqual(jobs, [{ kind: 'publish', bucket: BUCKET, key: META_KEY, origin: 'eventbridge', eventName: 'Object Created' }]);
  });

  it('refuses an "Object Deleted" event as unrecognised', () => {
    assertInputError(() => normaliseEvent(eventBridge({ key: META_KEY, detailType: 'Object Deleted' })), /unrecognised event/, /Object Created/);
  });

  it('refuses an event from a source other than aws.s3', () => {
    const e = eventBridge({ key: META_KEY });
    e.source = 'aws.ec2';
    assertInputError(() => normaliseEvent(e), /unrecognised event/);
  });
});

describe('normaliseEvent: SQS', () => {
  it('makes jobs from S3 notifications in the bodies, carrying each messageId', () => {
    const body1 = JSON.stringify({
      Records: [s3Record({ key: META_KEY, requestId: 'REQ-A' }), s3Record({ key: 'meta/singles/metal-amd64-1877.3-75df9f40' })],
    });
    const body2 = JSON.stringify({ Records: [s3Record({ key: 'dir/a+b%2Bc%3Ad', eTag: 'e2' })] });
    const result = normaliseEvent({ Records: [sqsRecord('msg-1', body1), sqsRecord('msg-2', body2)] });
    assert.equal(result.sqs, true);
    assert.deepEqual(result.jobs, [
      { kind: 'publish', bucket: BUCKET, key: META_KEY, origin: 'sqs', eventName: 'ObjectCreated:Put', messageId: 'msg-1', s3RequestId: 'REQ-A' },
      {
        kind: 'publish',
        bucket: BUCKET,
        key: 'meta/singles/metal-amd64-1877.3-75df9f40',
        origin: 'sqs',
        eventName: 'ObjectCreated:Put',
        messageId: 'msg-1',
      },
      { kind: 'publish', bucket: BUCKET, key: 'dir/a b+c:d', origin: 'sqs', eventName: 'ObjectCreated:Put', messageId: 'msg-2', eTag: 'e2' },
    ]);
  });

  it('makes jobs from EventBridge events in the bodies', () => {
    const result = normaliseEvent({
      Records: [sqsRecord('eb-1', JSON.stringify(eventBridge({ key: META_KEY, requestId: 'RID', etag: 'E' })))],
    });
    assert.equal(result.sqs, true);
    assert.deepEqual(result.jobs, [
      {
        kind: 'publish',
        bucket: BUCKET,
        key: META_KEY,
        origin: 'sqs',
        eventName: 'Object Created',
        messageId: 'eb-1',
        s3RequestId: 'RID',
        eTag: 'E',
      },
    ]);
  });

  it('drops S3 test messages as ignore jobs carrying the messageId', () => {
    const test = JSON.stringify({ Service: 'Amazon S3', Event: 's3:TestEvent', Time: '2026-02-10T11:12:42.000Z', Bucket: BUCKET });
    const result = normaliseEvent({ Records: [sqsRecord('t-1', test), sqsRecord('p-1', JSON.stringify({ Records: [s3Record({ key: META_KEY })] }))] });
    assert.equal(result.sqs, true);
    assert.equal(result.jobs.length, 2);
    const [ignored, published] = result.jobs;
    assert.ok(ignored && ignored.kind === 'ignore');
    assert.equal(ignored.messageId, 't-1');
    assert.equal(ignored.origin, 'sqs');
    assert.ok(published && published.kind === 'publish');
    assert.equal(published.messageId, 'p-1');
  });

  it('carries the messageId on ignore jobs of non-ObjectCreated records', () => {
    const body = JSON.stringify({ Records: [s3Record({ key: META_KEY, eventName: 'ObjectRemoved:Delete' })] });
    const { jobs } = normaliseEvent({ Records: [sqsRecord('del-1', body)] });
    assert.equal(jobs.length, 1);
    const job = jobs[0];
    assert.ok(job && job.kind === 'ignore');
    assert.equal(job.messageId, 'del-1');
    assert.equal(job.origin, 'sqs');
  });

  it('turns a body that is not JSON into an invalid job for that message only', () => {
    const good = JSON.stringify({ Records: [s3Record({ key: META_KEY })] });
    const result = normaliseEvent({ Records: [sqsRecord('bad-1', 'this is {not json'), sqsRecord('good-1', good)] });
    assert.equal(result.sqs, true);
    assert.equal(result.jobs.length, 2);
    const [bad, ok] = result.jobs;
    assert.ok(bad && bad.kind === 'invalid');
    assert.equal(bad.messageId, 'bad-1');
    assert.equal(bad.origin, 'sqs');
    assert.match(bad.error, /bad-1/);
    assert.match(bad.error, /not JSON/);
    assert.ok(ok && ok.kind === 'publish');
    assert.equal(ok.messageId, 'good-1');
    assert.equal(ok.key, META_KEY);
  });

  it('turns a JSON body of an unknown shape into an invalid job for that message only', () => {
    const good = JSON.stringify(eventBridge({ key: META_KEY }));
    const result = normaliseEvent({
      Records: [sqsRecord('good-1', good), sqsRecord('odd-1', JSON.stringify({ hello: 'world' })), sqsRecord('odd-2', '42')],
    });
    assert.deepEqual(
      result.jobs.map((j) => [j.kind, 'messageId' in j ? j.messageId : undefined]),
      [
        ['publish', 'good-1'],
        ['invalid', 'odd-1'],
        ['invalid', 'odd-2'],
      ],
    );
    const odd = result.jobs[1];
    assert.ok(odd && odd.kind === 'invalid');
    assert.match(odd.error, /odd-1/);
    assert.match(odd.error, /S3 notification/);
  });

  it('treats an EventBridge "Object Deleted" body as invalid, not as a publish', () => {
    const result = normaliseEvent({ Records: [sqsRecord('d-1', JSON.stringify(eventBridge({ key: META_KEY, detailType: 'Object Deleted' })))] });
    assert.equal(result.jobs.length, 1);
    assert.equal(result.jobs[0]?.kind, 'invalid');
  });

  it('a badly URL-encoded key in one message fails only that message', () => {
    // The Job type says an invalid message "fails on its own, the rest of the batch goes on".
    const bad = JSON.stringify({ Records: [s3Record({ key: 'meta/singles/bad%ZZ' })] });
    const good = JSON.stringify({ Records: [s3Record({ key: META_KEY })] });
    const result = normaliseEvent({ Records: [sqsRecord('enc-1', bad), sqsRecord('ok-1', good)] });
    assert.equal(result.sqs, true);
    assert.equal(result.jobs.length, 2);
    const [first, second] = result.jobs;
    assert.ok(first && first.kind === 'invalid');
    assert.equal(first.messageId, 'enc-1');
    assert.ok(second && second.kind === 'publish');
    assert.equal(second.messageId, 'ok-1');
  });
});

describe('normaliseEvent: manual payloads', () => {
  it('publish with key', () => {
    const result = normaliseEvent({ action: 'publish', bucket: BUCKET, key: META_KEY });
    assert.deepEqual(result, { jobs: [{ kind: 'publish', bucket: BUCKET, key: META_KEY, origin: 'manual' }], sqs: false });
  });

  it('publish with base builds the metadata key', () => {
    const { jobs } = normaliseEvent({ action: 'publish', bucket: BUCKET, base: BASE });
    assert.deepEqual(jobs, [{ kind: 'publish', bucket: BUCKET, key: `meta/singles/${BASE}`, origin: 'manual' }]);
  });

  it('publish given as a JSON string', () => {
    const { jobs } = normaliseEvent(JSON.stringify({ action: 'publish', bucket: BUCKET, base: BASE }));
    assert.deepEqual(jobs, [{ kind: 'publish', bucket: BUCKET, key: META_KEY, origin: 'manual' }]);
  });

  it('reindex with and without a bucket', () => {
    assert.deepEqual(normaliseEvent({ action: 'reindex', bucket: BUCKET, version: '1877.3' }).jobs, [
      { kind: 'reindex', bucket: BUCKET, version: '1877.3', origin: 'manual' },
    ]);
    const { jobs } = normaliseEvent({ action: 'reindex', version: '2150.0.0' });
    assert.deepEqual(jobs, [{ kind: 'reindex', version: '2150.0.0', origin: 'manual' }]);
    assert.equal('bucket' in (jobs[0] as Job), false);
  });

  it('tag with and without a repository', () => {
    assert.deepEqual(normaliseEvent({ action: 'tag', version: '1877.3', tags: ['1877', 'latest'] }).jobs, [
      { kind: 'tag', version: '1877.3', tags: ['1877', 'latest'], origin: 'manual' },
    ]);
    assert.deepEqual(normaliseEvent({ action: 'tag', version: '1877.3', tags: ['latest'], repository: 'fips' }).jobs, [
      { kind: 'tag', version: '1877.3', tags: ['latest'], origin: 'manual', repository: 'fips' },
    ]);
  });

  it('retract, with and without a bucket; a base that is not a base name is refused', () => {
    assert.deepEqual(normaliseEvent({ action: 'retract', bucket: BUCKET, base: 'metal_pxe-amd64-1877.3-75df9f40' }).jobs, [
      { kind: 'retract', base: 'metal_pxe-amd64-1877.3-75df9f40', origin: 'manual', bucket: BUCKET },
    ]);
    assert.deepEqual(normaliseEvent({ action: 'retract', base: 'container-arm64-2150.0.0-local' }).jobs, [
      { kind: 'retract', base: 'container-arm64-2150.0.0-local', origin: 'manual' },
    ]);
    assertInputError(() => normaliseEvent({ action: 'retract', base: 'container-amd64-1877.3' }), /retract/, /base/);
    assertInputError(() => normaliseEvent({ action: 'retract' }), /retract/, /base/);
    assertInputError(() => normaliseEvent({ action: 'retract', base: 'container-amd64-1877.3-75df9f40', version: '1877.3' }), /retract/, /version/);
  });

  it('verify, with and without a bucket; a bad version or an unknown field is refused', () => {
    assert.deepEqual(normaliseEvent({ action: 'verify', bucket: BUCKET, version: '1877.3' }).jobs, [{ kind: 'verify', version: '1877.3', origin: 'manual', bucket: BUCKET }]);
    assert.deepEqual(normaliseEvent({ action: 'verify', version: '1877.10' }).jobs, [{ kind: 'verify', version: '1877.10', origin: 'manual' }]);
    assertInputError(() => normaliseEvent({ action: 'verify', version: 'latest' }), /verify/, /version/);
    assertInputError(() => normaliseEvent({ action: 'verify', version: '1877.3', tags: ['x'] }), /verify/, /tags/);
  });

  it('refuses an unknown action, naming it', () => {
    assertInputError(() => normaliseEvent({ action: 'delete', bucket: BUCKET }), /unknown action/, /"delete"/, /publish/, /retract/, /verify/);
  });

  it('refuses a bad version, naming the field', () => {
    assertInputError(() => normaliseEvent({ action: 'reindex', version: 'latest' }), /reindex/, /version/);
    assertInputError(() => normaliseEvent({ action: 'reindex', version: '1877' }), /version/);
    assertInputError(() => normaliseEvent({ action: 'tag', version: '1877.3.0.1', tags: ['x'] }), /tag/, /version/);
  });

  it('refuses a tag payload without tags or with an empty list', () => {
    assertInputError(() => normaliseEvent({ action: 'tag', version: '1877.3' }), /tags/);
    assertInputError(() => normaliseEvent({ action: 'tag', version: '1877.3', tags: [] }), /tags/);
    assertInputError(() => normaliseEvent({ action: 'tag', version: '1877.3', tags: [''] }), /tags/);
  });

  it('refuses extra fields, naming them', () => {
    assertInputError(() => normaliseEvent({ action: 'reindex', version: '1877.3', force: true }), /reindex/, /force/);
    assertInputError(() => normaliseEvent({ action: 'tag', version: '1877.3', tags: ['x'], bucket: BUCKET }), /tag/, /bucket/);
  });

  it('refuses a bad bucket name, naming the bucket field', () => {
    assertInputError(() => normaliseEvent({ action: 'publish', bucket: 'Bad_Bucket', key: META_KEY }), /publish/, /bucket/);
    assertInputError(() => normaliseEvent({ action: 'reindex', bucket: 'x', version: '1877.3' }), /reindex/, /bucket/);
  });

  it('refuses a publish key outside meta/singles/', () => {
    assertInputError(
      () => normaliseEvent({ action: 'publish', bucket: BUCKET, key: `objects/${BASE}/${BASE}.oci` }),
      /publish/,
      /key/,
      /meta\/singles\//,
    );
  });

  it('refuses a publish base with characters outside a base name', () => {
    assertInputError(() => normaliseEvent({ action: 'publish', bucket: BUCKET, base: '../etc/passwd' }), /publish/, /base/);
  });

  it('refuses a publish payload with both key and base, naming both fields', () => {
    assertInputError(() => normaliseEvent({ action: 'publish', bucket: BUCKET, key: META_KEY, base: BASE }), /publish/, /\bkey\b/, /\bbase\b/);
  });

  it('refuses a publish payload with neither key nor base, naming what is missing', () => {
    assertInputError(() => normaliseEvent({ action: 'publish', bucket: BUCKET }), /publish/, /\bkey\b|\bbase\b/);
  });
});

describe('normaliseEvent: unrecognised input', () => {
  const accepted = [/S3 notifications/, /EventBridge/, /SQS/, /"action":"publish"/, /"action":"reindex"/, /"action":"tag"/];

  it('lists the accepted shapes for an object of unknown shape', () => {
    assertInputError(() => normaliseEvent({ hello: 'world' }), /unrecognised event/, ...accepted);
  });

  it('lists the accepted shapes for a string that is not JSON', () => {
    assertInputError(() => normaliseEvent('publish please'), /not JSON/, ...accepted);
  });

  it('refuses JSON that is not an object (array, number, null)', () => {
    assertInputError(() => normaliseEvent('[1,2]'), /not a JSON object/, /S3 notifications/);
    assertInputError(() => normaliseEvent(42), /not a JSON object/);
    assertInputError(() => normaliseEvent(null), /not a JSON object/);
    assertInputError(() => normaliseEvent([{ action: 'publish' }]), /not a JSON object/);
  });

  it('refuses an S3 record from another event source', () => {
    const record = s3Record({ key: META_KEY });
    record.eventSource = 'aws:sns';
    assertInputError(() => normaliseEvent({ Records: [record] }), /unrecognised event/);
  });
});
