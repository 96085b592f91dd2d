/**
 * A retraction meets the release aliases (issue 19, defect 1), against a real docker-registry and S3, with
 * `ALIAS_TAGS=latest,{major},{version}.0`: after retracting builds of the highest version, no alias names a
 * retracted manifest — `latest` and `{major}` go back to the version below, `{version}.0` of a version with
 * nothing left holds that version's (empty) index, `<arch>-<alias>` follows the highest version that still has an
 * image of the arch (an empty index when none has) — in the main repository and in a container sub-repository.
 * `verify` agrees, and reports an alias that still names a retracted build.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { EMPTY_INDEX } from '../../functions/orchestration/follow-aliases';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const SUB = { CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev"}' };

const build = (flavor: string, version: string, commit: string): SampleBuild =>
  // Lean: aliases follow indexes; logs and test results would only be more uploads.
  sampleBuild({ flavor, arch: 'amd64', version, commit, buildTime: '2026-02-10T11:00:00Z', lean: true });

describe('retractions and release aliases (issue 19, defect 1)', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  const aws9 = build('aws-gardener_prod', '1877.9', 'a1877009');
  const ctr9 = build('container', '1877.9', 'c1877009');
  const aws10 = build('aws-gardener_prod', '1877.10', 'a1877010');
  const ctr10 = build('container', '1877.10', 'c1877010');
  const py9 = build('container-pythonDev', '1877.9', 'd1877009');
  const py10 = build('container-pythonDev', '1877.10', 'd1877010');

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    for (const b of [aws9, ctr9, aws10, ctr10, py9, py10]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
  });

  const run = (repo: string, event: unknown, extra: Record<string, string> = {}): Promise<JobSummary> =>
    firstJob(
      createHandler({
        env: { ...s3.env, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: `oci-publisher/${repo}/`, ALIAS_TAGS: 'latest,{major},{version}.0', ...extra },
        logSink: () => undefined,
      })(event),
    );
  const publish = async (repo: string, builds: SampleBuild[], extra: Record<string, string> = {}): Promise<void> => {
    for (const b of builds) {
      const job = await run(repo, s3Event(BUCKET, `meta/singles/${b.base}`), extra);
      assert.equal(job.outcome, 'published', `${b.base}: ${job.error ?? ''}`);
    }
  };
  const retract = async (repo: string, b: SampleBuild, extra: Record<string, string> = {}): Promise<JobSummary> => {
    const job = await run(repo, { action: 'retract', bucket: BUCKET, base: b.base }, extra);
    assert.equal(job.error, undefined, `retract ${b.base}`);
    return job;
  };
  const manifest = async (repo: string, ref: string): Promise<{ digest?: string; body: Buffer }> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { body, ...(res.statusCode === 200 ? { digest: sha256(body) } : {}) };
  };
  const digestOf = async (repo: string, ref: string) => (await manifest(repo, ref)).digest;
  const put = async (repo: string, ref: string, body: Buffer, type: string): Promise<void> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body, headers: { 'content-type': type } });
    await res.body.dump();
    assert.equal(res.statusCode, 201);
  };
  const verify = async (repo: string, version: string, extra: Record<string, string> = {}) => {
    const job = await run(repo, { action: 'verify', bucket: BUCKET, version }, extra);
    assert.ok(job.verify, job.error);
    return job.verify;
  };
  const aliasProblems = (report: { problems: Array<{ check: string; subject: string; message: string }> }) =>
    report.problems.filter((p) => p.check === 'alias').map((p) => `${p.subject}: ${p.message}`);

  it('every build of the highest version retracted: latest and {major} go back, {version}.0 holds the empty index, amd64- tags follow', async () => {
    const repo = 'all-retracted';
    await publish(repo, [aws9, ctr9, aws10, ctr10]);
    await retract(repo, aws10);
    const last = await retract(repo, ctr10);
    const index10 = await manifest(repo, '1877.10');
    assert.equal((JSON.parse(index10.body.toString()) as { manifests: unknown[] }).manifests.length, 0, '1877.10 holds nothing');
    assert.equal(index10.digest, EMPTY_INDEX.digest, 'in the same form as every index');
    const index9 = await digestOf(repo, '1877.9');
    assert.deepEqual(
      {
        latest: await digestOf(repo, 'latest'),
        '1877': await digestOf(repo, '1877'),
        '1877.10.0': await digestOf(repo, '1877.10.0'),
        'amd64-latest': await digestOf(repo, 'amd64-latest'),
        'amd64-1877': await digestOf(repo, 'amd64-1877'),
        'amd64-1877.10.0': await digestOf(repo, 'amd64-1877.10.0'),
      },
      {
        latest: index9,
        '1877': index9,
        '1877.10.0': index10.digest,
        'amd64-latest': ctr9.image?.manifestDigest,
        'amd64-1877': ctr9.image?.manifestDigest,
        'amd64-1877.10.0': EMPTY_INDEX.digest,
      },
    );
    const moved = (last.releaseAliases ?? []).flatMap((a) => [`${a.alias} ${a.version}`, ...(a.tags ?? []).map((t) => `${t.tag} ${t.version ?? 'nothing'}`)]);
    assert.deepEqual(moved.sort(), ['1877 1877.9', '1877.10.0 1877.10', 'amd64-1877 1877.9', 'amd64-1877.10.0 nothing', 'amd64-latest 1877.9', 'latest 1877.9'], 'the job says what each holds');
    for (const version of ['1877.9', '1877.10']) assert.deepEqual((await verify(repo, version)).problems, [], `verify ${version}`);

  });

  it('verify names an alias that still serves a retracted build, in every version whose aliases it checks', async () => {
    const repo = 'verify-retracted';
    await publish(repo, [aws9, ctr9, aws10, ctr10]);
    const old10 = await manifest(repo, '1877.10');
    const oldImage = await manifest(repo, 'amd64-1877.10.0');
    assert.equal(oldImage.digest, ctr10.image?.manifestDigest);
    await retract(repo, aws10);
    await retract(repo, ctr10);
    // The aliases as a publisher without this check left them: 1877.10.0 on the old index, amd64-latest on the image.
    await put(repo, '1877.10.0', old10.body, 'application/vnd.oci.image.index.v1+json');
    await put(repo, 'amd64-latest', oldImage.body, 'application/vnd.oci.image.manifest.v1+json');
    const report10 = await verify(repo, '1877.10');
    assert.equal(report10.ok, false);
    assert.deepEqual(aliasProblems(report10).map((p) => p.replace(/sha256:[0-9a-f]{12}…/g, 'D')), [
      `1877.10.0: ${registry.host}/${repo}:1877.10.0 holds D (the index of 1877.10 as it was before); it names the retracted builds ${aws10.base}, ${ctr10.base}; by "{version}.0" it must hold 1877.10 (D, which holds no build)`,
      `amd64-latest: ${registry.host}/${repo}:amd64-latest names D (the image of the retracted build ${ctr10.base}); it must name the image of amd64-1877.9 (D)`,
    ]);
    const report9 = await verify(repo, '1877.9');
    assert.deepEqual(aliasProblems(report9).map((p) => p.replace(/sha256:[0-9a-f]{12}…/g, 'D')), [
      `amd64-latest: ${registry.host}/${repo}:amd64-latest names D (the image of the retracted build ${ctr10.base}); it must name the image of amd64-1877.9 (D)`,
    ]);
    // The next follow (a reindex) puts them right again.
    assert.equal((await run(repo, { action: 'reindex', bucket: BUCKET, version: '1877.10' })).error, undefined);
    assert.deepEqual((await verify(repo, '1877.10')).problems, []);
    assert.deepEqual((await verify(repo, '1877.9')).problems, []);
  });

  it('only the container build of the highest version retracted: latest stays, amd64-latest goes to the image of the version below', async () => {
    const repo = 'container-retracted';
    await publish(repo, [aws9, ctr9, aws10, ctr10]);
    await retract(repo, ctr10);
    assert.equal(await digestOf(repo, 'latest'), await digestOf(repo, '1877.10'), 'latest still holds 1877.10, which has a build');
    assert.equal(await digestOf(repo, 'amd64-latest'), ctr9.image?.manifestDigest);
    assert.equal(await digestOf(repo, 'amd64-1877'), ctr9.image?.manifestDigest);
    assert.equal(await digestOf(repo, 'amd64-1877.10.0'), EMPTY_INDEX.digest, 'no 1877.10 image is left for amd64-1877.10.0');
    assert.equal(await digestOf(repo, 'amd64-1877.9.0'), ctr9.image?.manifestDigest);
    for (const version of ['1877.9', '1877.10']) assert.deepEqual((await verify(repo, version)).problems, [], `verify ${version}`);

    // Published again by hand, the build comes back, and so do the aliases.
    assert.equal((await run(repo, { action: 'publish', bucket: BUCKET, base: ctr10.base })).outcome, 'published');
    assert.equal(await digestOf(repo, 'amd64-latest'), ctr10.image?.manifestDigest);
    assert.equal(await digestOf(repo, 'amd64-1877.10.0'), ctr10.image?.manifestDigest);
  });

  it('in a container sub-repository: the aliases there follow the retraction too', async () => {
    const repo = 'sub-retracted';
    const sub = `${repo}/container-python-dev`;
    await publish(repo, [py9, py10], SUB);
    await retract(repo, py10, SUB);
    assert.equal(await digestOf(sub, 'latest'), await digestOf(sub, '1877.9'));
    assert.equal(await digestOf(sub, '1877'), await digestOf(sub, '1877.9'));
    assert.equal(await digestOf(sub, '1877.10.0'), EMPTY_INDEX.digest);
    assert.equal(await digestOf(sub, 'amd64-latest'), py9.image?.manifestDigest);
    assert.equal(await digestOf(sub, 'amd64-1877.10.0'), EMPTY_INDEX.digest);
    for (const version of ['1877.9', '1877.10']) assert.deepEqual((await verify(repo, version, SUB)).problems, [], `verify ${version}`);
  });
});
