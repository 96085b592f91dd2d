/**
 * Release aliases (ALIAS_TAGS) against a real docker-registry and S3: after each publication every alias holds
 * the exact bytes of the highest version it may hold — in order, out of order, when a later build of that version
 * lands, `{major}` within its major, `<arch>-<alias>` for the container images (sub-repositories too), a hand-set
 * tag left alone — and with real Lambda processes publishing two versions at one moment.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { bundleLambdaChild, childEnv, runAtOnce, tail } from '../helpers/lambda-processes';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const ALIASES = 'latest,{major},{version}.0';

const build = (flavor: string, arch: 'amd64' | 'arm64', version: string, commit: string, buildTime = '2026-02-10T11:00:00Z'): SampleBuild =>
  // Lean: aliases follow indexes; logs and test results would only be more uploads.
  sampleBuild({ flavor, arch, version, commit, buildTime, lean: true });

describe('release aliases that follow their version', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let workDir: string;
  let bundle: string;

  const b1877_3 = build('aws-gardener_prod', 'amd64', '1877.3', 'a1877003');
  const c1877_3 = build('container', 'amd64', '1877.3', 'c1877003');
  const b1877_10 = build('aws-gardener_prod', 'amd64', '1877.10', 'a1877010');
  const c1877_10 = build('container', 'amd64', '1877.10', 'c1877010');
  const g1877_10 = build('gcp-gardener_prod', 'arm64', '1877.10', 'f1877010');
  const b1877_9 = build('aws-gardener_prod', 'amd64', '1877.9', 'a1877009');
  const b1592 = build('aws-gardener_prod', 'amd64', '1592.18', 'a1592018');
  const py1877_3 = build('container-pythonDev', 'amd64', '1877.3', 'd1877003');
  const py1877_10 = build('container-pythonDev', 'amd64', '1877.10', 'd1877010');
  const all = [b1877_3, c1877_3, b1877_10, c1877_10, g1877_10, b1877_9, b1592, py1877_3, py1877_10];

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'gl-release-aliases-'));
    [registry, s3, bundle] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), bundleLambdaChild(workDir)]);
    for (const b of all) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  const env = (repo: string, extra: Record<string, string> = {}) => ({
    ...s3.env,
    REGISTRY: `http://${registry.host}/${repo}`,
    STATE_PREFIX: `oci-publisher/${repo}/`,
    ALIAS_TAGS: ALIASES,
    ...extra,
  });
  const run = (repo: string, event: unknown, extra: Record<string, string> = {}): Promise<JobSummary> =>
    firstJob(createHandler({ env: env(repo, extra), logSink: () => undefined })(event));
  const publish = async (repo: string, b: SampleBuild, extra: Record<string, string> = {}): Promise<JobSummary> => {
    const job = await run(repo, s3Event(BUCKET, `meta/singles/${b.base}`), extra);
    assert.equal(job.outcome, 'published', `${b.base}: ${job.error ?? ''}`);
    return job;
  };
  /** the digest of what `<repo>:<ref>` holds, or undefined when there is no such tag */
  const digestOf = async (repo: string, ref: string): Promise<string | undefined> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return res.statusCode === 200 ? sha256(body) : undefined;
  };
  /** each tag with the version tag whose digest it holds ('-' for none of them) */
  const holders = async (repo: string, tags: string[], versions: string[]): Promise<Record<string, string>> => {
    const byDigest = new Map<string, string>();
    for (const v of versions) {
      const d = await digestOf(repo, v);
      if (d) byDigest.set(d, v);
    }
    const out: Record<string, string> = {};
    for (const t of tags) {
      const d = await digestOf(repo, t);
      out[t] = d === undefined ? 'missing' : (byDigest.get(d) ?? `other ${d}`);
    }
    return out;
  };

  it('in order: latest and {major} move up to the newer version, {version}.0 stays with each, <arch>-latest follows', async () => {
    const repo = 'ordered';
    await publish(repo, b1877_3);
    await publish(repo, c1877_3);
    assert.deepEqual(await holders(repo, ['latest', '1877', '1877.3.0'], ['1877.3']), { latest: '1877.3', '1877': '1877.3', '1877.3.0': '1877.3' });
    assert.equal(await digestOf(repo, 'amd64-latest'), c1877_3.image?.manifestDigest);

    const job = await publish(repo, b1877_10);
    const moved = Object.fromEntries((job.releaseAliases ?? []).map((a) => [a.alias, `${a.version}${a.changed ? ' moved' : ''}`]));
    assert.deepEqual(moved, { latest: '1877.10 moved', '1877': '1877.10 moved', '1877.10.0': '1877.10 moved' }, 'the job reports what it moved');
    await publish(repo, c1877_10);
    assert.deepEqual(await holders(repo, ['latest', '1877', '1877.3.0', '1877.10.0'], ['1877.3', '1877.10']), {
      latest: '1877.10',
      '1877': '1877.10',
      '1877.3.0': '1877.3',
      '1877.10.0': '1877.10',
    });
    assert.equal(await digestOf(repo, 'amd64-latest'), c1877_10.image?.manifestDigest, 'amd64-latest: the image of amd64-1877.10');
    assert.equal(await digestOf(repo, 'amd64-1877'), c1877_10.image?.manifestDigest);
    assert.equal(await digestOf(repo, 'amd64-1877.3.0'), c1877_3.image?.manifestDigest);

    // A re-run moves nothing.
    const again = await run(repo, s3Event(BUCKET, `meta/singles/${c1877_10.base}`));
    assert.equal(again.outcome, 'unchanged');
    assert.ok((again.releaseAliases ?? []).every((a) => !a.changed && (a.tags ?? []).every((t) => !t.changed)));
  });

  it('out of order: publishing older versions after a newer one never moves an alias back (1877.9 < 1877.10 numerically)', async () => {
    const repo = 'reversed';
    await publish(repo, b1877_10);
    const latest = await digestOf(repo, 'latest');
    assert.equal(latest, await digestOf(repo, '1877.10'));
    await publish(repo, b1877_9);
    await publish(repo, b1877_3);
    assert.deepEqual(await holders(repo, ['latest', '1877', '1877.9.0', '1877.3.0', '1877.10.0'], ['1877.3', '1877.9', '1877.10']), {
      latest: '1877.10',
      '1877': '1877.10',
      '1877.9.0': '1877.9',
      '1877.3.0': '1877.3',
      '1877.10.0': '1877.10',
    });
    assert.equal(await digestOf(repo, 'latest'), latest, 'latest never changed');
  });

  it('follows its version when a later build of it lands, and {major} stays within its major', async () => {
    const repo = 'later';
    await publish(repo, b1877_10);
    const before = await digestOf(repo, 'latest');
    await publish(repo, g1877_10);
    const index = await digestOf(repo, '1877.10');
    assert.notEqual(index, before, 'the index of 1877.10 changed');
    assert.equal(await digestOf(repo, 'latest'), index, 'latest holds the new index of 1877.10');
    assert.equal(await digestOf(repo, '1877'), index);

    await publish(repo, b1592);
    assert.deepEqual(await holders(repo, ['latest', '1877', '1592', '1592.18.0'], ['1592.18', '1877.10']), {
      latest: '1877.10',
      '1877': '1877.10',
      '1592': '1592.18',
      '1592.18.0': '1592.18',
    });

    // A reindex of the held version (after an incident, say) keeps latest on its index.
    const reindex = await run(repo, { action: 'reindex', bucket: BUCKET, version: '1877.10' });
    assert.equal(reindex.error, undefined);
    assert.equal(await digestOf(repo, 'latest'), await digestOf(repo, '1877.10'));
  });

  it('container sub-repositories get <arch>-<alias> of their own images', async () => {
    const repo = 'subrepo';
    const extra = { CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev"}' };
    await publish(repo, py1877_3, extra);
    await publish(repo, py1877_10, extra);
    await publish(repo, b1877_3, extra);
    const sub = `${repo}/container-python-dev`;
    assert.equal(await digestOf(sub, 'amd64-latest'), py1877_10.image?.manifestDigest);
    assert.equal(await digestOf(sub, 'amd64-1877'), py1877_10.image?.manifestDigest);
    assert.equal(await digestOf(sub, 'amd64-1877.3.0'), py1877_3.image?.manifestDigest);
    assert.equal(await digestOf(sub, 'latest'), await digestOf(sub, '1877.10'), 'the sub-repository index too');
    // The artifact manifests of those builds are in the main repository's indexes, so its latest follows 1877.10 too.
    assert.equal(await digestOf(repo, 'latest'), await digestOf(repo, '1877.10'));
    assert.equal(await digestOf(repo, 'amd64-latest'), undefined, 'no container image in the main repository, no <arch>-latest');
    // verify agrees, for both repositories and both versions.
    for (const version of ['1877.3', '1877.10']) {
      const job = await run(repo, { action: 'verify', bucket: BUCKET, version }, extra);
      assert.deepEqual(job.verify?.problems, [], version);
      assert.deepEqual(job.verify?.repositories.map((r) => r.repository), [`${registry.host}/${repo}`, `${registry.host}/${sub}`]);
    }
  });

  it('leaves a tag set by hand with the tag action alone when it is not in ALIAS_TAGS', async () => {
    const repo = 'manual';
    await publish(repo, b1877_3);
    const tagged = await run(repo, { action: 'tag', version: '1877.3', tags: ['stable'] });
    assert.equal(tagged.error, undefined);
    await publish(repo, b1877_10);
    assert.deepEqual(await holders(repo, ['stable', 'latest'], ['1877.3', '1877.10']), { stable: '1877.3', latest: '1877.10' });
  });

  it('two versions published at one moment by many Lambda processes: every alias ends on the higher version', async () => {
    const repo = 'concurrent';
    const versions = ['1877.9', '1877.10'];
    const builds: SampleBuild[] = [];
    for (const version of versions) {
      for (const [i, flavor] of ['aws-gardener_prod', 'gcp-gardener_prod', 'azure-gardener_prod', 'container'].entries()) {
        for (const arch of ['amd64', 'arm64'] as const) builds.push(build(flavor, arch, version, `${version === '1877.9' ? 'e9' : 'ea'}00000${i}`));
      }
    }
    await Promise.all(builds.map((b) => uploadBuild(s3.client, BUCKET, b)));
    const processes = await runAtOnce(
      bundle,
      builds.map((b) => ({ name: b.base, event: s3Event(BUCKET, `meta/singles/${b.base}`) })),
      childEnv({ ...env(repo), LATENCY_MS: '20' }),
    );
    const failed = processes.filter((p) => p.proc.exitCode !== 0 || p.result?.[0]?.outcome !== 'published');
    assert.deepEqual(failed.map((p) => p.name), [], failed.map((p) => `${p.name}: ${JSON.stringify(p.result)}\n${tail(p)}`).join('\n\n'));

    assert.deepEqual(await holders(repo, ['latest', '1877', '1877.9.0', '1877.10.0'], versions), {
      latest: '1877.10',
      '1877': '1877.10',
      '1877.9.0': '1877.9',
      '1877.10.0': '1877.10',
    });
    for (const arch of ['amd64', 'arm64']) {
      assert.equal(await digestOf(repo, `${arch}-latest`), await digestOf(repo, `${arch}-1877.10`), `${arch}-latest`);
      assert.equal(await digestOf(repo, `${arch}-1877.9.0`), await digestOf(repo, `${arch}-1877.9`), `${arch}-1877.9.0`);
    }
    // And the index latest holds has all eight builds of 1877.10.
    const res = await request(`${registry.url}/v2/${repo}/manifests/latest`, { headers: { accept: ACCEPT } });
    const index = (await res.body.json()) as { manifests: Array<{ annotations?: { cname?: string } }> };
    assert.equal(index.manifests.filter((m) => m.annotations?.cname).length, 8);
  });
});
