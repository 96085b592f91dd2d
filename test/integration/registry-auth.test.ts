/**
 * The same publication against docker-registry with htpasswd (Basic) and with token (Bearer) authentication,
 * including a token that the registry rejects as expired and credentials it refuses.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, expectedIndex, glTag, parse, sha256 } from '../helpers/expectations';
import { jobsOf } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { startTokenServer, type TokenServer } from '../helpers/token-server';

const USER = 'publisher';
const PASSWORD = 'pw-3c1f9a7e-not-in-any-log';

async function publish(s3: LocalS3, env: Record<string, string>, builds: readonly SampleBuild[], logs: string[]): Promise<JobSummary[]> {
  const jobs: JobSummary[] = [];
  for (const b of builds) {
    const handler = createHandler({ env: { ...s3.env, ...env, LOG_LEVEL: 'debug' }, logSink: (l) => logs.push(l) });
    jobs.push(...(await jobsOf(handler(s3Event(BUCKET, `meta/singles/${b.base}`)))));
  }
  return jobs;
}

async function checkIndex(clients: ClientSandbox, repo: string, creds: string, builds: readonly SampleBuild[]): Promise<void> {
  const gl = new Map<string, { digest: string; size: number }>();
  for (const b of builds) {
    const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', creds, `docker://${repo}:${glTag(b)}`]);
    gl.set(b.base, { digest: sha256(raw), size: Buffer.byteLength(raw) });
  }
  const index = parse(await clients.skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', creds, `docker://${repo}:1877.3`]));
  assert.deepEqual(index, expectedIndex(builds, gl));
}

function assertNoSecrets(logs: readonly string[], secrets: readonly string[], minLines = 20): void {
  const text = logs.join('\n');
  assert.ok(logs.length >= minLines, `the debug logs were captured (${logs.length} lines)`);
  for (const s of secrets) assert.ok(!text.includes(s), `a secret appears in the logs: ${s.slice(0, 12)}…`);
  assert.doesNotMatch(text, /\b(Basic|Bearer) [A-Za-z0-9+/=._-]{8,}/, 'an Authorization header value appears in the logs');
}

describe('registry authentication', () => {
  let s3: LocalS3;
  let clients: ClientSandbox;
  const builds = [
    sampleBuild({ flavor: 'container', arch: 'amd64' }),
    sampleBuild({ flavor: 'container', arch: 'arm64' }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true }),
  ];

  before(async () => {
    [s3, clients] = await Promise.all([startLocalS3([BUCKET]), clientSandbox()]);
    for (const b of builds) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([s3?.close(), clients?.cleanup()]);
  });

  describe('htpasswd (Basic)', () => {
    let registry: TestRegistry;
    const logs: string[] = [];
    before(async () => {
      registry = await startRegistry({ auth: { kind: 'htpasswd', username: USER, password: PASSWORD } });
    });
    after(() => registry?.stop());

    it('publishes with the configured credentials', async () => {
      const repo = `${registry.host}/gardenlinux`;
      const jobs = await publish(s3, { REGISTRY: `http://${repo}`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: PASSWORD }, builds, logs);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published', 'published', 'published'], JSON.stringify(jobs));
      await checkIndex(clients, repo, `${USER}:${PASSWORD}`, builds);
      assertNoSecrets(logs, [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')]);
    });

    it('takes the credentials from a Secrets Manager secret, and follows a rotation', async () => {
      const sm = mockClient(SecretsManagerClient);
      try {
        // The cached value is from before the rotation; the registry already wants the new password.
        sm.on(GetSecretValueCommand, { SecretId: 'gl/registry-credentials' })
          .resolvesOnce({ SecretString: JSON.stringify({ username: USER, password: 'the-password-before-rotation' }) })
          .resolves({ SecretString: JSON.stringify({ username: USER, password: PASSWORD }) });
        const secretLogs: string[] = [];
        const jobs = await publish(
          s3,
          { REGISTRY: `http://${registry.host}/from-secret`, REGISTRY_CREDENTIALS_SECRET: 'gl/registry-credentials', STATE_PREFIX: 'oci-publisher/from-secret/' },
          builds.slice(2),
          secretLogs,
        );
        assert.equal(jobs[0]?.outcome, 'published', jobs[0]?.error);
        assert.equal(sm.commandCalls(GetSecretValueCommand).length, 2, 'read again once after the registry refused it');
        assertNoSecrets(secretLogs, [PASSWORD, 'the-password-before-rotation'], 2);
      } finally {
        sm.restore();
      }
    });

    it('fails fast with UNAUTHORIZED when the registry refuses the credentials, and says so', async () => {
      const started = Date.now();
      const failLogs: string[] = [];
      const [job] = await publish(s3, { REGISTRY: `http://${registry.host}/other`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: 'wrong-password-value' }, builds.slice(2), failLogs);
      assert.equal(job?.outcome, 'failed');
      assert.equal(job?.errorCode, 'UNAUTHORIZED');
      assert.match(job?.error ?? '', /rejected the configured credentials/);
      assert.ok(Date.now() - started < 10_000, 'a refusal is not retried for long');
      assertNoSecrets(failLogs, ['wrong-password-value'], 2);
    });
  });

  describe('token (Bearer, ES256 JWT)', () => {
    let tokens: TokenServer;
    let registry: TestRegistry;
    const logs: string[] = [];
    before(async () => {
      tokens = await startTokenServer({ [USER]: PASSWORD });
      registry = await startRegistry({ auth: { kind: 'token', realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, certPem: tokens.certPem } });
    });
    after(async () => {
      await registry?.stop();
      await tokens?.stop();
    });

    it('publishes through the token flow, asking for pull,push on the repository', async () => {
      const repo = `${registry.host}/gardenlinux/gardenlinux`;
      const jobs = await publish(s3, { REGISTRY: `http://${repo}`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: PASSWORD }, builds, logs);
      assert.deepEqual(jobs.map((j) => j.outcome), ['published', 'published', 'published'], JSON.stringify(jobs));
      assert.ok(tokens.requests.some((r) => r.authenticated && r.scopes.includes('repository:gardenlinux/gardenlinux:pull,push')));
      // One handler per build, and each fetches a token once for its scope: the cache works.
      assert.ok(tokens.requests.length <= builds.length * 3, `${tokens.requests.length} token requests`);
      await checkIndex(clients, repo, `${USER}:${PASSWORD}`, builds);
    });

    it('fetches a new token when the registry rejects an expired one', async () => {
      const repo = `${registry.host}/expiry`;
      const before = tokens.requests.length;
      tokens.expireNext(1);
      const [job] = await publish(s3, { REGISTRY: `http://${repo}`, REGISTRY_USERNAME: USER, REGISTRY_PASSWORD: PASSWORD }, builds.slice(0, 1), logs);
      assert.equal(job?.outcome, 'published', JSON.stringify(job));
      assert.ok(tokens.requests.length - before >= 2, 'the expired token was replaced');
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', `${USER}:${PASSWORD}`, `docker://${repo}:1877.3`]);
      assert.equal((parse(raw) as { manifests: unknown[] }).manifests.length, 2);
    });

    it('fails with UNAUTHORIZED when the token server grants only pull (anonymous)', async () => {
      const [job] = await publish(s3, { REGISTRY: `http://${registry.host}/anonymous` }, builds.slice(2), logs);
      assert.equal(job?.outcome, 'failed');
      assert.equal(job?.errorCode, 'UNAUTHORIZED');
      assert.match(job?.error ?? '', /insufficient_scope|denied/);
    });

    it('never writes the password, a token or an Authorization header to the logs', () => {
      assertNoSecrets(logs, [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), ...tokens.issued]);
    });
  });
});
