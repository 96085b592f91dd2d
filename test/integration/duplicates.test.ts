/**
 * Events arrive at least once, sometimes twice, out of order, and while other builds of the version publish. The
 * final state is that of a single, ordered delivery; the newest build holds the container slot and its tag. And
 * when another tool replaces the index (`podman manifest push`), `reindex` restores every entry.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, expectedIndex, glTag, sha256 } from '../helpers/expectations';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json';

describe('duplicate and out-of-order events', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let clients: ClientSandbox;
  const older = sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'aaaaaaaa', buildTime: '2026-02-10T09:00:00Z' });
  const newer = sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'bbbbbbbb', buildTime: '2026-02-10T12:00:00Z' });
  const arm = sampleBuild({ flavor: 'container', arch: 'arm64', commit: 'bbbbbbbb', buildTime: '2026-02-10T12:05:00Z' });
  const aws = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'bbbbbbbb' });

  before(async () => {
    [registry, s3, clients] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    for (const b of [older, newer, arm, aws]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), clients?.cleanup()]);
  });

  const publish = async (repo: string, b: SampleBuild): Promise<JobSummary> =>
    ((await createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: `oci-publisher/${repo}/` }, logSink: () => undefined })(
      s3Event(BUCKET, `meta/singles/${b.base}`),
    )) as HandlerResult).jobs[0] as JobSummary;
  const get = async (repo: string, ref: string): Promise<Buffer> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200, `${repo}:${ref}`);
    return body;
  };
  const manifests = async (repo: string, builds: readonly SampleBuild[]) =>
    new Map(await Promise.all(builds.map(async (b) => [b.base, await get(repo, glTag(b)).then((x) => ({ digest: sha256(x), size: x.length }))] as const)));

  it('the same event twice at once, and twice in a row, ends as one delivery', async () => {
    const jobs = await Promise.all([publish('twice', aws), publish('twice', aws), publish('twice', arm), publish('twice', arm)]);
    assert.ok(jobs.every((j) => j.outcome === 'published' || j.outcome === 'unchanged'), JSON.stringify(jobs));
    const again = await Promise.all([publish('twice', aws), publish('twice', arm)]);
    assert.deepEqual(again.map((j) => j.outcome), ['unchanged', 'unchanged']);
    assert.deepEqual(JSON.parse((await get('twice', '1877.3')).toString()), expectedIndex([aws, arm], await manifests('twice', [aws, arm])));
  });

  it('an older build arriving after a newer one: same state as the ordered delivery, the newest holds the container slot', async () => {
    for (const b of [older, newer]) await publish('ordered', b);
    for (const b of [newer, older]) await publish('reversed', b);
    const ordered = await get('ordered', '1877.3');
    const reversed = await get('reversed', '1877.3');
    assert.equal(sha256(reversed), sha256(ordered), 'the same index, byte for byte');
    const index = JSON.parse(reversed.toString()) as { manifests: Array<{ digest: string; annotations?: { cname: string } }> };
    assert.equal(index.manifests[0]?.digest, newer.image?.manifestDigest, 'the container slot');
    assert.deepEqual(
      index.manifests.slice(1).map((m) => m.annotations?.cname),
      [newer.base, older.base],
      'both builds, the newest first',
    );
    for (const repo of ['ordered', 'reversed']) assert.equal(sha256(await get(repo, 'amd64-1877.3')), newer.image?.manifestDigest, `${repo}: the tag follows the newest build`);
  });

  it('reindex restores every entry after podman manifest push replaced the index', async () => {
    for (const b of [newer, arm, aws]) await publish('podman', b);
    const full = JSON.parse((await get('podman', '1877.3')).toString()) as unknown;
    assert.deepEqual(full, expectedIndex([newer, arm, aws], await manifests('podman', [newer, arm, aws])));

    // What the old CI did: a container-only list, pushed over <version>.
    const list = `localhost/gl-list-${Date.now()}`;
    await clients.podman(['manifest', 'create', list]);
    for (const b of [newer, arm]) await clients.podman(['manifest', 'add', '--tls-verify=false', list, `docker://${registry.host}/podman@${b.image?.manifestDigest}`]);
    await clients.podman(['manifest', 'push', '--all', '--tls-verify=false', list, `docker://${registry.host}/podman:1877.3`]);
    const replaced = JSON.parse((await get('podman', '1877.3')).toString()) as { manifests: Array<{ annotations?: Record<string, string> }> };
    assert.equal(replaced.manifests.length, 2);
    assert.ok(replaced.manifests.every((m) => m.annotations?.cname === undefined), 'only container entries are left');

    const handler = createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/podman`, STATE_PREFIX: 'oci-publisher/podman/' }, logSink: () => undefined });
    const r = (await handler({ action: 'reindex', bucket: BUCKET, version: '1877.3' })) as HandlerResult;
    assert.equal(r.jobs[0]?.outcome, 'published');
    assert.deepEqual(JSON.parse((await get('podman', '1877.3')).toString()), full);
  });
});
