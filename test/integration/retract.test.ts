/**
 * Taking builds out of a version, on purpose (retract) and by accident (an operator deletes a manifest in the
 * registry), against a real docker-registry: the index never names a manifest that is gone, a retracted build's
 * entries, container slot and tag go to the next newest build and stay out when its events come again, and
 * publishing it by hand restores it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, glTag, sha256 } from '../helpers/expectations';
import { jobsOf } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

interface Index {
  manifests: Array<{ digest: string; annotations?: { cname?: string }; platform?: { os?: string; architecture?: string } }>;
}

describe('retracting builds, and manifests that disappeared', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  const older = sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'c0ffee01', buildTime: '2026-02-10T10:00:00Z' });
  const newer = sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'c0ffee02', buildTime: '2026-02-10T11:00:00Z' });
  const aws = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'c0ffee03' });
  const gcp = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'arm64', commit: 'c0ffee04' });

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    for (const b of [older, newer, aws, gcp]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
  });

  const run = (repo: string, event: unknown, lines: string[] = []): Promise<JobSummary[]> =>
    jobsOf(createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: `oci-publisher/${repo}/` }, logSink: (l) => lines.push(l) })(event));
  const publish = async (repo: string, b: SampleBuild): Promise<JobSummary> => {
    const [job] = await run(repo, s3Event(BUCKET, `meta/singles/${b.base}`));
    assert.ok(job);
    return job;
  };
  const get = async (repo: string, ref: string): Promise<{ status: number; digest?: string; body: Buffer }> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, body, ...(res.statusCode === 200 ? { digest: sha256(body) } : {}) };
  };
  const index = async (repo: string): Promise<Index> => JSON.parse((await get(repo, '1877.3')).body.toString()) as Index;
  const cnames = (i: Index) => i.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
  const slot = (i: Index) => i.manifests.filter((m) => m.annotations === undefined && m.platform?.os === 'linux').map((m) => m.digest);
  const recordExists = async (repo: string, base: string, suffix: string) =>
    (await fetch(`${s3.endpoint}/${BUCKET}/oci-publisher/${repo}/records/${registry.host}/${repo}/1877.3/${base}${suffix}`)).status === 200;

  it('retracts the newest container build: its entry, container slot and tag go to the older build; its manifest stays', async () => {
    const repo = 'retract';
    for (const b of [older, newer, aws]) assert.equal((await publish(repo, b)).outcome, 'published');
    assert.deepEqual(slot(await index(repo)), [newer.image?.manifestDigest]);
    assert.equal((await get(repo, 'amd64-1877.3')).digest, newer.image?.manifestDigest);

    const [job] = await run(repo, { action: 'retract', bucket: BUCKET, base: newer.base });
    assert.equal(job?.outcome, 'published', job?.error);
    assert.deepEqual(job?.retracted?.repositories, [`${registry.host}/${repo}`]);
    const after = await index(repo);
    assert.deepEqual(cnames(after).sort(), [older.base, aws.base].sort());
    assert.deepEqual(slot(after), [older.image?.manifestDigest], 'the container slot went to the older build');
    assert.equal((await get(repo, 'amd64-1877.3')).digest, older.image?.manifestDigest, 'and so did the tag');
    assert.equal((await get(repo, glTag(newer))).status, 200, 'the artifact manifest and its tag stay in the registry');
    assert.equal(await recordExists(repo, newer.base, '.json'), false, 'the record is gone');
    assert.equal(await recordExists(repo, newer.base, '.retracted'), true, 'a retraction took its place');

    // Its event again (a Lambda retry, a re-drive, a rewrite of its metadata): skipped, nothing changes.
    const digest = (await get(repo, '1877.3')).digest;
    const again = await publish(repo, newer);
    assert.equal(again.outcome, 'skipped');
    assert.match(again.reason ?? '', /was retracted on .*; publish it by hand/);
    // Another build of the version keeps it out too (its entry would otherwise survive as another tool's).
    assert.equal((await publish(repo, gcp)).outcome, 'published');
    assert.deepEqual(cnames(await index(repo)).sort(), [older.base, aws.base, gcp.base].sort());
    assert.notEqual((await get(repo, '1877.3')).digest, digest);

    // Published by hand: restored, and it takes its slot and tag back.
    const [restored] = await run(repo, { action: 'publish', bucket: BUCKET, base: newer.base });
    assert.equal(restored?.outcome, 'published', restored?.error);
    assert.equal(restored?.container?.tagged, true);
    const back = await index(repo);
    assert.deepEqual(cnames(back).sort(), [older.base, newer.base, aws.base, gcp.base].sort());
    assert.deepEqual(slot(back), [newer.image?.manifestDigest]);
    assert.equal((await get(repo, 'amd64-1877.3')).digest, newer.image?.manifestDigest);
    assert.equal(await recordExists(repo, newer.base, '.retracted'), false);
  });

  it('refuses to retract a build that no record and no index entry names', async () => {
    const [job] = await run('retract', { action: 'retract', bucket: BUCKET, base: 'kvm-amd64-1877.3-0badc0de' });
    assert.equal(job?.outcome, 'failed');
    assert.equal(job?.errorKind, 'input');
    assert.match(job?.error ?? '', /no record of kvm-amd64-1877.3-0badc0de .*nothing to retract/);
  });

  it('a reindex alone drops an entry whose manifest was deleted, and says which', async () => {
    const repo = 'deleted';
    for (const b of [aws, gcp]) assert.equal((await publish(repo, b)).outcome, 'published');
    const gone = (await get(repo, glTag(aws))).digest as string;
    const del = await request(`${registry.url}/v2/${repo}/manifests/${gone}`, { method: 'DELETE' });
    await del.body.dump();
    assert.equal(del.statusCode, 202);
    assert.ok((await index(repo)).manifests.some((m) => m.digest === gone), 'the index still names it');

    const lines: string[] = [];
    const [job] = await run(repo, { action: 'reindex', bucket: BUCKET, version: '1877.3' }, lines);
    assert.equal(job?.outcome, 'published', job?.error);
    assert.deepEqual(job?.indexes?.[0]?.dropped, [gone]);
    assert.deepEqual(cnames(await index(repo)), [gcp.base]);
    const warning = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'warn' && l.digest === gone);
    assert.ok(warning, 'a warning names the dropped entry');
    assert.equal(warning.base, aws.base);
    assert.match(String(warning.hint), /retract/);

    // The next publication of the version drops it again without failing (the record is still there).
    const [again] = await run(repo, s3Event(BUCKET, `meta/singles/${older.base}`));
    assert.equal(again?.outcome, 'published', again?.error);
    assert.deepEqual(cnames(await index(repo)).sort(), [gcp.base, older.base].sort());
  });
});
