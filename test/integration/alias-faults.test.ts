/**
 * The README's promise of one transient fault ridden out within the invocation, for the requests that release
 * aliases and signatures add to a publication: every transient fault, once, at each alias and signature request
 * of a container build published with ALIAS_TAGS and a signing key, and at the S3 listing of the versions. Each
 * case is one handler invocation that must end `published`, with every alias and the signature right.
 *
 * (The fault matrix, test/helpers/fault-matrix.ts, strikes the first request of each kind, which comes before these.)
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild } from '../../tools/sample-builds';
import { cosignAccepts, registryReader, updaterAccepts } from '../helpers/cosign-rules';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startFaultProxy, TRANSIENT_FAULTS, type Fault, type FaultProxy, type FaultRule } from '../helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const SLOW_DOWN = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';

/** The requests aliases and signatures add, by what they are. */
const POINTS: Array<{ name: string; rule: Omit<FaultRule, 'fault'>; put: boolean }> = [
  { name: 'the HEAD of latest', rule: { kind: 'manifest-get', pathEndsWith: '/manifests/latest' }, put: false },
  { name: 'the PUT of latest', rule: { kind: 'manifest-put', pathEndsWith: '/manifests/latest' }, put: true },
  { name: 'the PUT of the {major} alias 1877', rule: { kind: 'manifest-put', pathEndsWith: '/manifests/1877' }, put: true },
  { name: 'the HEAD of amd64-latest', rule: { kind: 'manifest-get', pathEndsWith: '/manifests/amd64-latest' }, put: false },
  { name: 'the PUT of amd64-latest', rule: { kind: 'manifest-put', pathEndsWith: '/manifests/amd64-latest' }, put: true },
  { name: 'the read of the signature tag', rule: { kind: 'manifest-get', pathEndsWith: '.sig' }, put: false },
  { name: 'the PUT of the signature', rule: { kind: 'manifest-put', pathEndsWith: '.sig' }, put: true },
];
const LOST: readonly [string, Fault] = ['answer lost after the registry stored it', { type: 'lose-answer' }];

describe('one transient fault at an alias or signature request, one invocation', { concurrency: 4 }, () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let s3Proxy: FaultProxy;
  let dir: string;
  let publicKey: string;
  const proxies: FaultProxy[] = [];
  // Lean: the faults strike alias and signature requests; logs and test results would only be more uploads first.
  const build = sampleBuild({ flavor: 'container', arch: 'amd64', lean: true });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-alias-faults-'));
    const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await writeFile(join(dir, 'sign.key'), key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    publicKey = key.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    [registry, s3, s3Proxy] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), startFaultProxy()]);
    s3Proxy.setUpstream(s3.endpoint);
    await uploadBuild(s3.client, BUCKET, build);
  });
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([registry?.stop(), s3?.close(), s3Proxy?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const digestOf = async (repo: string, ref: string): Promise<string | undefined> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return res.statusCode === 200 ? sha256(body) : undefined;
  };

  /** Publishes the build once into its own repository and checks what a consumer of the aliases and signature sees. */
  const publishAndCheck = async (repo: string, registryHost: string, extra: Record<string, string> = {}): Promise<void> => {
    const env = {
      ...s3.env,
      REGISTRY: `http://${registryHost}/${repo}`,
      STATE_PREFIX: `oci-publisher/${repo}/`,
      ALIAS_TAGS: 'latest,{major}',
      SIGNING_KEY: `file:${join(dir, 'sign.key')}`,
      // Long enough that a busy CI machine does not add a second fault (a slow answer) to the one injected.
      REGISTRY_TIMEOUT_SECONDS: '3',
      ...extra,
    };
    const job = await firstJob(createHandler({ env, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${build.base}`)));
    assert.equal(job.outcome, 'published', `${job.error ?? ''} (${job.errorKind ?? ''})`);
    const index = await digestOf(repo, '1877.3');
    assert.ok(index);
    assert.equal(await digestOf(repo, 'latest'), index, 'latest holds the index');
    assert.equal(await digestOf(repo, '1877'), index, '1877 holds the index');
    assert.equal(await digestOf(repo, 'amd64-latest'), build.image?.manifestDigest, 'amd64-latest holds the image');
    const manifest = job.manifest?.digest as string;
    const r = registryReader(registry.url, repo);
    assert.deepEqual(
      { cosign: await cosignAccepts(r.getManifest, r.getBlob, manifest, publicKey), updater: await updaterAccepts(r.getManifest, r.getBlob, manifest, publicKey) },
      { cosign: true, updater: true },
      'the signature verifies',
    );
  };

  let n = 0;
  for (const point of POINTS) {
    for (const [faultName, fault] of point.put ? [...TRANSIENT_FAULTS, LOST] : TRANSIENT_FAULTS) {
      const id = ++n;
      it(`${point.name}: ${faultName}`, async () => {
        const proxy = await startFaultProxy();
        proxies.push(proxy);
        proxy.setUpstream(registry.url);
        proxy.rules.push({ ...point.rule, fault, times: 1 });
        await publishAndCheck(`alias-faults/case${id}`, proxy.host);
        assert.equal(proxy.log.filter((e) => e.faulted).length, 1, 'the fault struck once');
      });
    }
  }

  // One S3 proxy for these: its rules and log are one case's at a time, so they run in turn.
  describe('the S3 listing of the versions (a delimiter listing of the records)', { concurrency: 1 }, () => {
    const cases: Array<[string, Fault, number]> = [
      ['503 SlowDown twice', { type: 'status', status: 503, body: SLOW_DOWN, contentType: 'application/xml' }, 2],
      ['500 once', { type: 'status', status: 500 }, 1],
      ['a connection reset', { type: 'reset', afterBytes: 0 }, 1],
    ];
    for (const [faultName, fault, times] of cases) {
      it(faultName, async () => {
        s3Proxy.rules.length = 0;
        s3Proxy.log.length = 0;
        s3Proxy.rules.push({ kind: 'other', searchIncludes: 'delimiter=', fault, times });
        await publishAndCheck(`alias-faults/s3-${faultName.toLowerCase().replace(/\W+/g, '-')}`, registry.host, { AWS_ENDPOINT_URL_S3: s3Proxy.url });
        assert.equal(s3Proxy.log.filter((e) => e.faulted).length, times, 'the fault struck');
      });
    }
  });
});
