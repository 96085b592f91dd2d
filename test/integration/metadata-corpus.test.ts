/**
 * Every metadata document shape Garden Linux has uploaded (test/fixtures/metadata) publishes end to end to a real
 * docker-registry, or is skipped with its reason, as the spec says; and the version index orders the builds of a
 * flavor-arch by build time whoever published them.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import YAML from 'yaml';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const FIXTURES = 'test/fixtures/metadata';
const contents = JSON.parse(readFileSync(`${FIXTURES}/contents.json`, 'utf8')) as Record<string, string>;
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

interface Expected {
  base: string;
  /** the build time the publisher's record takes from the document */
  buildTime: string;
  features: string;
}

const BUILDS: Expected[] = [
  { base: 'aws-gardener_prod-amd64-1877.3-75df9f40', buildTime: '2026-02-10T11:12:42.317Z', features: 'aws,base,gardener,server,_prod' },
  { base: 'azure-gardener_prod-arm64-1877.3-75df9f40', buildTime: '2026-02-10T11:20:01.000Z', features: 'azure,base,gardener,server,_prod' },
  { base: 'gcp-gardener_prod-amd64-1592.6-bd0d5b2e', buildTime: '2025-03-01T10:11:12.131Z', features: 'gcp,base,gardener,server,_prod' },
  { base: 'metal-gardener_prod-amd64-1592.18-1d2c3b4a', buildTime: '2026-12-02T02:01:07.000Z', features: 'metal,base,gardener,server,_prod' },
  { base: 'kvm-gardener_prod-amd64-1877.3-0e5e0e5e', buildTime: '2026-02-10T11:30:00.500Z', features: 'kvm,base,gardener,server,_prod' },
  { base: 'metal_trustedboot-amd64-1877.3-75df9f40', buildTime: '2026-02-10T11:40:00.000Z', features: 'metal,base,server,_trustedboot,_usi' },
];
const GROUPS: Array<{ base: string; members: number }> = [
  { base: 'container-1877.3-75df9f40', members: 2 },
  { base: 'metal_pxe-1877.3-75df9f40', members: 0 },
];

const fixture = (name: string): string => readFileSync(`${FIXTURES}/${name}.yaml`, 'utf8');
/** The file names a document lists, as they are in objects/<base>/ (the bash uploader writes `<base>/<file>`). */
function filesOf(base: string, text: string): string[] {
  const doc = YAML.parse(text, { schema: 'yaml-1.1' }) as { paths: Array<{ name: string }> };
  return doc.paths.map((p) => (p.name.startsWith(`${base}/`) ? p.name.slice(base.length + 1) : p.name));
}
const bytesOf = (name: string): Buffer => Buffer.from(contents[name] ?? `${name}\n`);

describe('metadata documents in every shape Garden Linux has uploaded (test/fixtures/metadata)', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let clients: ClientSandbox;
  const logs: string[] = [];

  const put = (key: string, body: string | Buffer) => s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
  const env = (repo: string, prefix: string) => ({ ...s3.env, REGISTRY: `http://${registry.host}/${repo}`, STATE_PREFIX: prefix });
  const publish = (repo: string, base: string, prefix = `oci-publisher/${repo}/`): Promise<JobSummary> =>
    firstJob(createHandler({ env: env(repo, prefix), logSink: (l) => logs.push(l) })(s3Event(BUCKET, `meta/singles/${base}`)));
  const manifest = async (repo: string, ref: string): Promise<{ status: number; body: Buffer }> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
  };
  const record = async (repo: string, version: string, base: string): Promise<{ buildTime: string }> => {
    const res = await fetch(`${s3.endpoint}/${BUCKET}/oci-publisher/${repo}/records/${registry.host}/${repo}/${version}/${base}.json`);
    assert.equal(res.status, 200, `the record of ${base}`);
    return (await res.json()) as { buildTime: string };
  };

  before(async () => {
    [registry, s3, clients] = await Promise.all([startRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
    for (const b of BUILDS) {
      const text = fixture(b.base);
      for (const name of filesOf(b.base, text)) await put(`objects/${b.base}/${name}`, bytesOf(name));
      await put(`meta/singles/${b.base}`, text);
    }
    for (const g of GROUPS) await put(`meta/singles/${g.base}`, fixture(g.base));
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), clients?.cleanup()]);
  });

  for (const b of BUILDS) {
    it(`publishes ${b.base}: every file a layer of its own media type, the build time and features from the document`, async () => {
      const version = b.base.split('-').at(-2) as string;
      const arch = b.base.split('-').at(-3) as string;
      const from = logs.length;
      const job = await publish('corpus', b.base);
      assert.equal(job.outcome, 'published', job.error);
      const names = filesOf(b.base, fixture(b.base)).sort();
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/corpus:${version}-${b.base}-${arch}`]);
      const m = JSON.parse(raw) as { layers: Array<{ mediaType: string; digest: string; annotations: Record<string, string> }>; annotations: Record<string, string> };
      assert.deepEqual(m.layers.map((l) => l.annotations['org.opencontainers.image.title']), names);
      for (const l of m.layers) {
        assert.equal(l.digest, sha256(bytesOf(l.annotations['org.opencontainers.image.title'] as string)));
        assert.notEqual(l.mediaType, 'application/octet-stream', `${l.annotations['org.opencontainers.image.title']} has a media type of its own`);
      }
      assert.equal(m.annotations.feature_set, b.features);
      const warnings = logs.slice(from).filter((l) => l.includes('"level":"warn"'));
      assert.deepEqual(warnings, [], 'no warnings: no file without a media type, no .release without features');
      assert.equal((await record('corpus', version, b.base)).buildTime, b.buildTime);
      const index = JSON.parse((await manifest('corpus', version)).body.toString()) as { manifests: Array<{ digest: string }> };
      assert.ok(index.manifests.some((e) => e.digest === sha256(raw)), 'in the version index');
    });
  }

  it('publishes a document the cloud publisher rewrote after the original was published as unchanged: nothing moves', async () => {
    const base = 'aws-gardener_prod-amd64-1877.3-75df9f40';
    const before = await manifest('corpus', '1877.3');
    await put(`meta/singles/${base}`, fixture(`${base}.rewritten`));
    const job = await publish('corpus', base);
    assert.equal(job.outcome, 'unchanged', job.error);
    assert.equal(job.bytesUploaded, 0);
    assert.equal(job.bytesRead, 0, 'no file read again: the digest cache holds them');
    assert.equal(sha256((await manifest('corpus', '1877.3')).body), sha256(before.body));
  });

  it('publishes the rewritten document of a build whose first publication failed (a re-drive, a Lambda retry)', async () => {
    // Another repository: nothing of the build is there yet, as when the registry was down until the rewrite.
    const job = await publish('corpus-redrive', 'aws-gardener_prod-amd64-1877.3-75df9f40');
    assert.equal(job.outcome, 'published', job.error);
    assert.equal((await manifest('corpus-redrive', '1877.3-aws-gardener_prod-amd64-1877.3-75df9f40-amd64')).status, 200);
  });

  for (const g of GROUPS) {
    it(`skips the group document ${g.base} (${g.members} builds listed), saying why`, async () => {
      const job = await publish('corpus', g.base);
      assert.equal(job.outcome, 'skipped');
      assert.equal(job.reason, `group document listing ${g.members} builds (no paths, no architecture)`);
    });
  }
});

describe("the version index orders a flavor-arch by build time, also across another tool's entries", () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  const older = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'aaaa0001', buildTime: '2026-02-10T10:00:00Z' });
  const newer = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'aaaa0002', buildTime: '2026-02-10T12:00:00Z' });
  const other = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'aaaa0003' });

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    for (const b of [older, newer, other]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
  });

  const publish = (b: { base: string }, prefix: string) =>
    firstJob(createHandler({ env: { ...s3.env, REGISTRY: `http://${registry.host}/order`, STATE_PREFIX: prefix }, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`)));
  const cnames = async (): Promise<string[]> => {
    const res = await request(`${registry.url}/v2/order/manifests/1877.3`, { headers: { accept: ACCEPT } });
    const index = (await res.body.json()) as { manifests: Array<{ annotations?: { cname?: string } }> };
    return index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
  };

  it("puts another tool's newer build first, and keeps it ahead when its metadata document is gone", async () => {
    // Another tool (here: a publisher with other records) published the newer build.
    assert.equal((await publish(newer, 'another-tool/')).outcome, 'published');
    // This publisher has no record of it, and publishes the older build of the same flavor-arch.
    assert.equal((await publish(older, 'oci-publisher/')).outcome, 'published');
    assert.deepEqual(await cnames(), [newer.base, older.base], "the newer build first: its build time is in its metadata document");
    // Without its document the other tool's entry has no known build time: it keeps its place ahead of the older one.
    await s3.client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `meta/singles/${newer.base}` }));
    assert.equal((await publish(other, 'oci-publisher/')).outcome, 'published');
    assert.deepEqual(await cnames(), [newer.base, older.base, other.base]);
  });
});
