/**
 * S3 as the deployment's role sees it, through a front on 127.0.0.1 that answers as AWS does (test/helpers/
 * s3-iam-front.ts): listings only under the prefixes of the role's s3:ListBucket condition, taken from
 * serverless.yml itself; a missing key answered 403 AccessDenied, not 404 (a GET never meets that condition); an
 * object encrypted with a KMS key the role may not use answered 403 with AWS's kms:Decrypt message. Publications,
 * re-runs and retractions still work, and real refusals fail naming the permission that is missing.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command, S3ServiceException } from '@aws-sdk/client-s3';
import YAML from 'yaml';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { localS3Client, s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET } from '../helpers/expectations';
import { firstJob, jobsOf } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { startS3IamFront, type S3IamFront } from '../helpers/s3-iam-front';

const STATE_PREFIX = 'oci-publisher/iam/';

/** The s3:prefix patterns of the role's ListBucket statement in serverless.yml, for this state prefix. */
function listPrefixes(statePrefix: string): string[] {
  const sls = YAML.parse(readFileSync('serverless.yml', 'utf8')) as {
    provider: { iam: { role: { statements: Array<{ Action: string | string[]; Condition?: { StringLike?: Record<string, string[]> } }> } } };
  };
  const list = sls.provider.iam.role.statements.filter((s) => [s.Action].flat().includes('s3:ListBucket'));
  assert.equal(list.length, 1);
  const patterns = list[0]?.Condition?.StringLike?.['s3:prefix'];
  assert.ok(patterns && patterns.length > 0, 'ListBucket is restricted by s3:prefix');
  return patterns.map((p) => p.replaceAll('${param:statePrefix}', statePrefix));
}

/** AWS's message when an SSE-KMS object's key may not be used by the caller. */
const KMS_DENIED =
  'User: arn:aws:sts::111122223333:assumed-role/gardenlinux-oci-publisher-prod-eu-central-1-lambdaRole/gardenlinux-oci-publisher-prod-publish ' +
  'is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab ' +
  'because no identity-based policy allows the kms:Decrypt action';

describe('S3 with the deployment role: ListBucket on some prefixes only, missing keys answered 403', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let front: S3IamFront;
  const first = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'feed0001' });
  const second = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'feed0002' });

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    front = await startS3IamFront(s3.endpoint, { bucket: BUCKET, listPrefixes: listPrefixes(STATE_PREFIX) });
    for (const b of [first, second]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), front?.close()]);
  });

  const handler = (repo: string, lines: string[] = []) =>
    createHandler({ env: { ...s3.env, AWS_ENDPOINT_URL_S3: front.url, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX }, logSink: (l) => lines.push(l) });
  const publish = (repo: string, b: SampleBuild, lines?: string[]): Promise<JobSummary> => firstJob(handler(repo, lines)(s3Event(BUCKET, `meta/singles/${b.base}`)));

  it('the front refuses what the role may not do: a listing outside the prefixes, a missing key', async () => {
    const client = localS3Client(front.url);
    try {
      await assert.rejects(client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'meta/' })), (e: unknown) => e instanceof S3ServiceException && e.name === 'AccessDenied');
      await assert.rejects(client.send(new ListObjectsV2Command({ Bucket: BUCKET })), (e: unknown) => e instanceof S3ServiceException && e.name === 'AccessDenied');
      await assert.rejects(
        client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${STATE_PREFIX}records/nothing-here.json` })),
        (e: unknown) => e instanceof S3ServiceException && e.name === 'AccessDenied' && e.$metadata.httpStatusCode === 403,
      );
      const listed = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `objects/${first.base}/` }));
      assert.equal(listed.Contents?.length, first.files.length);
    } finally {
      client.destroy();
    }
  });

  it('a publication, its unchanged re-run and a retraction work, though every missing key is answered 403', async () => {
    const repo = 'iam';
    front.log.length = 0;
    const published = await publish(repo, first);
    assert.equal(published.outcome, 'published', published.error);
    const missing = front.log.filter((e) => e.refused === 'missing key').map((e) => e.key as string);
    assert.ok(
      missing.some((k) => k.startsWith(`${STATE_PREFIX}records/`) && k.endsWith(`${first.base}.retracted`)),
      `the retraction that is not there was asked for and answered 403: ${missing.join(', ')}`,
    );
    for (const key of missing) assert.ok(front.log.some((e) => e.listPrefix === key && e.status === 200), `${key} was settled by listing it`);

    assert.equal((await publish(repo, first)).outcome, 'unchanged');
    assert.equal((await publish(repo, second)).outcome, 'published');
    const [retracted] = await jobsOf(handler(repo)({ action: 'retract', bucket: BUCKET, base: first.base }));
    assert.equal(retracted?.outcome, 'published', retracted?.error);
    assert.deepEqual(retracted?.retracted?.repositories, [`${registry.host}/${repo}`]);
    const again = await publish(repo, first);
    assert.equal(again.outcome, 'skipped');
    assert.match(again.reason ?? '', /was retracted/);

    const outside = front.log.filter((e) => e.refused === 'listing outside the allowed prefixes');
    assert.deepEqual(outside, [], "the code lists only under the prefixes serverless.yml's condition allows");
  });

  it('a metadata document that is not there: "does not exist", not a refusal', async () => {
    const ghost = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', commit: 'feed0003' });
    const job = await publish('iam-missing', ghost);
    assert.equal(job.outcome, 'failed');
    assert.match(job.error ?? '', new RegExp(`s3://${BUCKET}/meta/singles/${ghost.base} does not exist`));
  });

  it('an object that exists but is refused: fails naming s3:GetObject', async () => {
    const b = sampleBuild({ flavor: 'azure-gardener_prod', arch: 'amd64', commit: 'feed0004' });
    await uploadBuild(s3.client, BUCKET, b);
    const key = `objects/${b.base}/${b.base}.release`;
    front.refuse(key, 'Access Denied');
    try {
      const job = await publish('iam-refused', b);
      assert.equal(job.outcome, 'failed');
      assert.equal(job.errorKind, 'source');
      assert.match(job.error ?? '', new RegExp(`reading s3://${BUCKET}/${key.replace(/\./g, '\\.')} failed \\(AccessDenied, HTTP 403\\): Access Denied`));
      assert.match(job.error ?? '', /the object exists, and the function's role may not read it: s3:GetObject on it is missing/);
    } finally {
      front.allow(key);
    }
  });

  it('an object encrypted with a KMS key the role may not use: fails naming kms:Decrypt and the parameter, with AWS\'s message', async () => {
    const b = sampleBuild({ flavor: 'openstack-gardener_prod', arch: 'amd64', commit: 'feed0005' });
    await uploadBuild(s3.client, BUCKET, b);
    const key = `objects/${b.base}/${b.base}.raw`;
    front.refuse(key, KMS_DENIED);
    const lines: string[] = [];
    try {
      front.log.length = 0;
      const job = await publish('iam-kms', b, lines);
      assert.equal(job.outcome, 'failed');
      assert.equal(job.errorKind, 'source');
      assert.ok(job.error?.includes(KMS_DENIED), job.error);
      assert.match(job.error ?? '', /the function's role lacks kms:Decrypt on the KMS key that encrypts it: add the key's ARN to the deployment parameter kmsKeyArns/);
      assert.ok(!front.log.some((e) => e.listPrefix === key), 'a KMS refusal is about an object that exists: not listed');
      const failed = lines.map((l) => JSON.parse(l) as { msg?: string; error?: string }).find((l) => l.msg === 'job failed');
      assert.match(failed?.error ?? '', /kms:Decrypt .*kmsKeyArns/);
    } finally {
      front.allow(key);
    }
  });
});
