/**
 * Each registry of a publication to several gets its own credentials (issue 20): two real registries that each
 * accept only their own user, the credentials read from Secrets Manager (a test server speaking its protocol to the
 * real SDK), either a secret per host or one secret keyed by host. A secret with one username and password is
 * refused when REGISTRY names several hosts (it would be sent to all of them), and no password reaches a log. A
 * secret encrypted with a KMS key the role may not use fails naming kms:Decrypt and the deployment parameter.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { startSecrets, type TestSecrets } from '../helpers/secrets-server';

const A = { username: 'publisher-a', password: 'pw-a-0c1d-not-in-any-log' };
const B = { username: 'publisher-b', password: 'pw-b-77e2-not-in-any-log' };

describe('several registries, each with its own credentials', () => {
  let s3: LocalS3;
  let a: TestRegistry;
  let b: TestRegistry;
  let secrets: TestSecrets;
  const build: SampleBuild = sampleBuild({ flavor: 'kvm', arch: 'amd64', commit: 'cafe0001', lean: true });

  before(async () => {
    [s3, a, b, secrets] = await Promise.all([
      startLocalS3([BUCKET]),
      startRegistry({ auth: { kind: 'htpasswd', ...A } }),
      startRegistry({ auth: { kind: 'htpasswd', ...B } }),
      startSecrets(),
    ]);
    await uploadBuild(s3.client, BUCKET, build);
    secrets.put('gl/a', JSON.stringify(A));
    secrets.put('gl/b', JSON.stringify(B));
    secrets.put('gl/by-host', JSON.stringify({ [a.host]: A, [b.host]: B }));
    secrets.put('gl/flat', JSON.stringify(A));
    // Secrets Manager's answers when the caller may not decrypt with the secret's customer-managed key.
    secrets.refuse('gl/kms-denied', 'AccessDeniedException', 'Access to KMS is not allowed');
    secrets.refuse('gl/kms-failed', 'DecryptionFailure', "Secrets Manager can't decrypt the protected secret text using the provided KMS key.");
  });
  after(async () => {
    await Promise.all([s3?.close(), a?.stop(), b?.stop(), secrets?.close()]);
  });

  const publish = async (repository: string, secret: string): Promise<{ job: JobSummary; logs: string }> => {
    const lines: string[] = [];
    const handler = createHandler({
      env: {
        ...s3.env,
        REGISTRY: `${a.url}/${repository},${b.url}/${repository}`,
        REGISTRY_CREDENTIALS_SECRET: secret,
        AWS_ENDPOINT_URL_SECRETS_MANAGER: secrets.endpoint,
        STATE_PREFIX: `oci-publisher/${repository}/`,
      },
      logSink: (line) => lines.push(line),
    });
    const job = await firstJob(handler(s3Event(BUCKET, `meta/singles/${build.base}`)));
    return { job, logs: lines.join('\n') };
  };

  it('a secret per host: each registry gets its own user', async () => {
    const { job, logs } = await publish('per-host', JSON.stringify({ [a.host]: 'gl/a', [b.host]: 'gl/b' }));
    assert.equal(job.outcome, 'published', job.error);
    assert.deepEqual(job.targets?.map((t) => [t.target, t.outcome]), [
      [`${a.host}/per-host`, 'published'],
      [`${b.host}/per-host`, 'published'],
    ]);
    assert.ok((secrets.reads.get('gl/a') ?? 0) >= 1 && (secrets.reads.get('gl/b') ?? 0) >= 1, 'both secrets were read');
    assert.equal(secrets.badSignatures, 0);
    assert.ok(!logs.includes(A.password) && !logs.includes(B.password));
  });

  it('one secret keyed by host: each registry gets its entry', async () => {
    const { job, logs } = await publish('keyed', 'gl/by-host');
    assert.equal(job.outcome, 'published', job.error);
    assert.deepEqual(job.targets?.map((t) => t.outcome), ['published', 'published']);
    assert.ok(!logs.includes(A.password) && !logs.includes(B.password));
  });

  it('one secret with one username and password for two hosts: refused, and sent nowhere', async () => {
    const { job, logs } = await publish('flat', 'gl/flat');
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'registry');
    assert.equal(job.targets?.length, 2);
    for (const t of job.targets ?? []) {
      assert.equal(t.outcome, 'failed');
      assert.match(t.error ?? '', /the secret gl\/flat holds one username and password, and REGISTRY names several registries: key its credentials by host/);
    }
    assert.ok(!logs.includes(A.password), 'the password is in no log line');
  });

  for (const [secret, type, message] of [
    ['gl/kms-denied', 'AccessDeniedException', 'Access to KMS is not allowed'],
    ['gl/kms-failed', 'DecryptionFailure', "Secrets Manager can't decrypt the protected secret text using the provided KMS key."],
  ] as const) {
    it(`a secret whose KMS key the role may not use (${type}): fails naming kms:Decrypt and the parameter, with AWS's message`, async () => {
      const { job, logs } = await publish(`kms-${type.toLowerCase()}`, secret);
      assert.equal(job.outcome, 'failed');
      assert.equal(job.errorKind, 'registry');
      assert.equal(job.targets?.length, 2);
      for (const t of job.targets ?? []) {
        assert.equal(t.outcome, 'failed');
        assert.ok(t.error?.includes(`reading the registry credentials from the secret ${secret} failed: ${type}: ${message}`), t.error);
        assert.match(t.error ?? '', /the function's role lacks kms:Decrypt on the KMS key that encrypts it.*: add the key's ARN to the deployment parameter kmsKeyArns/);
      }
      assert.match(logs, /"msg":"job failed".*kms:Decrypt.*kmsKeyArns/);
    });
  }
});
