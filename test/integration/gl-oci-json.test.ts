/**
 * gl-oci computes a manifest's digest from Python's `json.dumps()` of the parsed JSON. Every artifact manifest
 * and version index the publisher generates must therefore survive `json.dumps(json.loads(b)) == b` in the real
 * python3, while container images stay byte for byte what the archive holds. Builds of every kind are published
 * to a real docker-registry (a container sub-repository, PXE, aliases, an index that another tool left with
 * non-ASCII annotations), then every tag of every repository is read and checked.
 *
 * Also: what a re-run does for a build published by a release that wrote compact JSON (the digests change once).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, glTag, sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const GARDENLINUX_CONFIG = 'application/vnd.unknown.config.v1+json';

/** For each document, whether python3's json.dumps(json.loads(b)) gives b back. */
function pythonRoundTrips(documents: Buffer[]): boolean[] {
  const program = [
    'import json, sys',
    'for line in sys.stdin:',
    '    b = bytes.fromhex(line.strip()).decode("utf-8")',
    '    print("same" if json.dumps(json.loads(b)) == b else "differs")',
  ].join('\n');
  const out = execFileSync('python3', ['-c', program], { input: documents.map((d) => d.toString('hex')).join('\n') + '\n', encoding: 'utf8' });
  return out.trimEnd().split('\n').map((l) => l === 'same');
}

describe("generated manifests and indexes in gl-oci's json.dumps form", () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let dir: string;
  const repo = 'gardenlinux';
  const builds = [
    sampleBuild({ flavor: 'container', arch: 'amd64' }),
    sampleBuild({ flavor: 'container', arch: 'arm64' }),
    sampleBuild({ flavor: 'container-pythonDev', arch: 'amd64' }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'arm64' }),
    sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', version: '1877.4', commit: 'c0ffee04' }),
  ];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-json-'));
    await writeFile(join(dir, 'sign.key'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    for (const b of builds) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (r: string) => ({
    ...s3.env,
    REGISTRY: `http://${registry.host}/${r}`,
    STATE_PREFIX: `oci-publisher/${r}/`,
    CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev"}',
    ALIAS_TAGS: 'latest,{major}',
    SIGNING_KEY: `file:${join(dir, 'sign.key')}`,
  });
  const publish = (r: string, b: SampleBuild): Promise<JobSummary> => firstJob(createHandler({ env: env(r), logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`)));
  const get = async (r: string, ref: string): Promise<{ bytes: Buffer; type: string }> => {
    const res = await request(`${registry.url}/v2/${r}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200, `${r}:${ref}`);
    return { bytes, type: String(res.headers['content-type']) };
  };
  const put = async (r: string, ref: string, bytes: Buffer, type: string): Promise<void> => {
    const res = await request(`${registry.url}/v2/${r}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': type }, body: bytes });
    await res.body.dump();
    assert.equal(res.statusCode, 201, `PUT ${r}:${ref}`);
  };

  it('every artifact manifest and index round-trips through python3 unchanged; container images are the archive bytes', async () => {
    for (const b of builds) assert.equal((await publish(repo, b)).outcome, 'published', b.base);
    // Another tool adds an entry whose annotations are not ASCII; a reindex keeps it, written as Python would.
    const current = JSON.parse((await get(repo, '1877.3')).bytes.toString('utf8')) as { manifests: Array<Record<string, unknown>> };
    const other = await get(repo, glTag(builds[5] as SampleBuild));
    current.manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256(other.bytes),
      size: other.bytes.length,
      annotations: { 'org.opencontainers.image.description': 'Grüße aus Walldorf — 😀', 'x-note': 'tab\there "quoted" \\ back' },
    });
    await put(repo, '1877.3', Buffer.from(JSON.stringify(current)), 'application/vnd.oci.image.index.v1+json');
    const reindex = await firstJob(createHandler({ env: env(repo), logSink: () => undefined })({ action: 'reindex', bucket: BUCKET, version: '1877.3' }));
    assert.equal(reindex.outcome, 'published', reindex.error);

    const catalog = (await (await request(`${registry.url}/v2/_catalog`)).body.json()) as { repositories: string[] };
    const generated: Array<{ where: string; bytes: Buffer }> = [];
    let images = 0;
    let signatures = 0;
    for (const r of catalog.repositories) {
      const { tags } = (await (await request(`${registry.url}/v2/${r}/tags/list`)).body.json()) as { tags: string[] };
      for (const tag of tags) {
        const m = await get(r, tag);
        const json = JSON.parse(m.bytes.toString('utf8')) as { manifests?: unknown[]; config?: { mediaType: string } };
        if (tag.endsWith('.sig')) signatures++;
        // Every index here is a version index or an alias of one (the sub-repository's hold container entries only).
        else if (json.config?.mediaType === GARDENLINUX_CONFIG || json.manifests !== undefined) generated.push({ where: `${r}:${tag}`, bytes: m.bytes });
        else if (json.config) {
          // A container image: what the archive held, byte for byte.
          const build = builds.find((b) => b.image?.manifestDigest === sha256(m.bytes));
          assert.ok(build, `${r}:${tag} is a container image from one of the archives`);
          images++;
        } else assert.fail(`${r}:${tag}: neither a manifest nor an index`);
      }
    }
    const results = pythonRoundTrips(generated.map((g) => g.bytes));
    const differs = generated.filter((_, i) => !results[i]).map((g) => g.where);
    process.stdout.write(
      `# gl-oci json round trip: ${generated.length} generated manifests and indexes in ${catalog.repositories.length} repositories, ${results.filter(Boolean).length} unchanged by python3 json.dumps(json.loads(b)); ${images} container image tags byte for byte; ${signatures} signature tags left as cosign writes them\n`,
    );
    assert.deepEqual(differs, []);
    assert.ok(generated.some((g) => g.where === `${repo}:1877.3`), 'the version index');
    assert.ok(generated.some((g) => g.where === `${repo}/container-python-dev:1877.3`), 'the sub-repository index');
    assert.ok(generated.some((g) => g.where === `${repo}:latest`), 'an alias');
    assert.ok(generated.filter((g) => /:1877\.[34]-.*-(amd64|arm64)$/.test(g.where)).length === builds.length, 'every artifact manifest');
    // The foreign entry's text went through the merge as Python would write it.
    const index = (await get(repo, '1877.3')).bytes.toString('utf8');
    assert.ok(index.includes('"Gr\\u00fc\\u00dfe aus Walldorf \\u2014 \\ud83d\\ude00"'), index);
    assert.ok(index.includes('"tab\\there \\"quoted\\" \\\\ back"'));
  });

  it('a build published by a release that wrote compact JSON: a re-run rewrites its manifest, tag, record and index once', async () => {
    const r = 'upgrade';
    const b = builds[4] as SampleBuild;
    const first = await publish(r, b);
    const now = first.manifest?.digest as string;
    // What the previous release left: compact JSON for the manifest (under its tag), the record and the index.
    const { bytes, type } = await get(r, glTag(b));
    const compact = Buffer.from(JSON.stringify(JSON.parse(bytes.toString('utf8'))));
    await put(r, glTag(b), compact, type);
    const recordKey = `${s3.endpoint}/${BUCKET}/oci-publisher/${r}/records/${registry.host}/${r}/1877.3/${b.base}.json`;
    const record = (await (await fetch(recordKey)).json()) as { gardenlinux: { digest: string; size: number } };
    record.gardenlinux = { ...record.gardenlinux, digest: sha256(compact), size: compact.length };
    assert.equal((await fetch(recordKey, { method: 'PUT', body: JSON.stringify(record) })).status, 200);
    const index = JSON.parse((await get(r, '1877.3')).bytes.toString('utf8')) as { manifests: Array<{ digest: string; size: number }> };
    index.manifests = index.manifests.map((m) => (m.digest === now ? { ...m, digest: sha256(compact), size: compact.length } : m));
    await put(r, '1877.3', Buffer.from(JSON.stringify(index)), 'application/vnd.oci.image.index.v1+json');

    const again = await publish(r, b);
    assert.equal(again.outcome, 'published');
    assert.deepEqual((again.signatures ?? []).map((x) => x.signed), [now], 'the new manifest is the one signed');
    // No file is uploaded again (here the new form's signature is there already from the first publication).
    assert.equal(again.bytesUploaded, 0);
    assert.equal(again.manifest?.digest, now, 'the manifest is the new form again');
    assert.equal(sha256((await get(r, glTag(b))).bytes), now, 'its tag moved to it');
    assert.equal(((await (await fetch(recordKey)).json()) as { gardenlinux: { digest: string } }).gardenlinux.digest, now, 'the record names it');
    const after = (await get(r, '1877.3')).bytes;
    assert.deepEqual(pythonRoundTrips([after]), [true]);
    const entries = (JSON.parse(after.toString('utf8')) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest);
    assert.deepEqual(entries, [now], 'the old entry is replaced, not kept beside it');
    assert.equal((await publish(r, b)).outcome, 'unchanged', 'and from then on a re-run is unchanged');
  });
});
