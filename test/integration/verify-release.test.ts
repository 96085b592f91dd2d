/**
 * `verify` against a real docker-registry: a good version passes with nothing to report, and each fault made on
 * purpose is named — a deleted layer blob, a tag moved to another manifest, an entry missing from the index, a wrong
 * alias, a signature by another key — through the Lambda action and through the CLI (JSON when piped, a table on a
 * terminal, exit status 1). It never writes: the registry's tags are the same before and after.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { request } from 'undici';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import type { Problem, VerifyReport } from '../../functions/orchestration/verify-release';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET, glTag, sha256 } from '../helpers/expectations';
import { installCli, type InstalledCli } from '../helpers/installed-cli';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const exec = promisify(execFile);
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const ALIASES = 'latest,{major},{version}.0';

describe('verify: is this release complete, as every consumer sees it?', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let dir: string;
  let keyFile: string;
  let otherPublicKey: string;

  const v = '1877.3';
  const builds = (commitPrefix: string): SampleBuild[] => [
    sampleBuild({ flavor: 'container', arch: 'amd64', commit: `${commitPrefix}01` }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: `${commitPrefix}02` }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true, commit: `${commitPrefix}03` }),
  ];
  const older = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', version: '1877.2', commit: 'b0000001' });
  const sets = { good: builds('a00000'), blob: builds('a10000'), tag: builds('a20000'), entry: builds('a30000'), alias: builds('a40000') };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-verify-'));
    const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
    keyFile = join(dir, 'sign.key');
    await writeFile(keyFile, key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    otherPublicKey = join(dir, 'other.pub');
    await writeFile(otherPublicKey, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }));
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    for (const b of [...Object.values(sets).flat(), older]) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (repo: string, extra: Record<string, string> = {}): Record<string, string> => ({
    ...s3.env,
    REGISTRY: `http://${registry.host}/${repo}`,
    STATE_PREFIX: `oci-publisher/${repo}/`,
    ALIAS_TAGS: ALIASES,
    SIGNING_KEY: `file:${keyFile}`,
    ...extra,
  });
  const run = (repo: string, event: unknown, lines: string[] = [], extra: Record<string, string> = {}): Promise<JobSummary> =>
    firstJob(createHandler({ env: env(repo, extra), logSink: (l) => lines.push(l) })(event));
  const publishAll = async (repo: string, list: SampleBuild[]): Promise<void> => {
    for (const b of list) {
      const job = await run(repo, s3Event(BUCKET, `meta/singles/${b.base}`));
      assert.equal(job.outcome, 'published', `${b.base}: ${job.error ?? ''}`);
    }
  };
  const verify = async (repo: string, lines: string[] = [], extra: Record<string, string> = {}): Promise<VerifyReport> => {
    const job = await run(repo, { action: 'verify', bucket: BUCKET, version: v }, lines, extra);
    assert.equal(job.outcome, 'unchanged', job.error);
    assert.ok(job.verify, 'the job carries the report');
    return job.verify;
  };
  const manifest = async (repo: string, ref: string): Promise<{ bytes: Buffer; type: string }> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200, `${repo}:${ref}`);
    return { bytes, type: String(res.headers['content-type']) };
  };
  const put = async (repo: string, ref: string, m: { bytes: Buffer; type: string }): Promise<void> => {
    const res = await request(`${registry.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': m.type }, body: m.bytes });
    await res.body.dump();
    assert.equal(res.statusCode, 201, `PUT ${repo}:${ref}`);
  };
  const errors = (r: VerifyReport): Array<Pick<Problem, 'check' | 'subject'>> =>
    r.problems.filter((p) => p.severity === 'error').map(({ check, subject }) => ({ check, subject }));
  /** every tag of the repository with its digest: what a verify must leave as it was */
  const tags = async (repo: string): Promise<Record<string, string>> => {
    const res = await request(`${registry.url}/v2/${repo}/tags/list`);
    const list = ((await res.body.json()) as { tags: string[] }).tags.sort();
    const out: Record<string, string> = {};
    for (const t of list) out[t] = sha256((await manifest(repo, t)).bytes);
    return out;
  };

  it('passes a complete version with nothing to report, checking every entry, blob, tag, alias and signature; writes nothing', async () => {
    const repo = 'good';
    await publishAll(repo, sets.good);
    const before = await tags(repo);
    const lines: string[] = [];
    const r = await verify(repo, lines);
    assert.deepEqual(r.problems, []);
    assert.equal(r.ok, true);
    const [main] = r.repositories;
    assert.equal(main?.repository, `${registry.host}/${repo}`);
    assert.equal(main?.index, sha256((await manifest(repo, v)).bytes));
    assert.equal(main?.entries, 4, 'three Garden Linux entries and the amd64 container slot');
    assert.equal(main?.records, 3);
    assert.equal(main?.tags, 4, 'three artifact tags and amd64-1877.3');
    assert.equal(main?.signatures, 3, 'every artifact manifest');
    assert.equal(main?.aliases, 6, 'latest, 1877, 1877.3.0 and their amd64- tags');
    const refs = [...sets.good.map(glTag), sets.good[0]?.image?.manifestDigest as string];
    const blobs = await Promise.all(refs.map((ref) => manifest(repo, ref)));
    const expectedBlobs = blobs.reduce((n, m) => n + 1 + (JSON.parse(m.bytes.toString()) as { layers: unknown[] }).layers.length, 0);
    assert.equal(main?.blobs, expectedBlobs, 'every config and layer blob, HEAD each');
    assert.deepEqual(await tags(repo), before, 'not one tag changed');
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; level: string }).filter((l) => l.msg.startsWith('release '));
    assert.deepEqual(logged.map((l) => [l.level, l.msg]), [['info', 'release 1877.3 verified']], 'one line');
  });

  it('names a deleted layer blob', async () => {
    const repo = 'blob';
    await publishAll(repo, sets.blob);
    const aws = sets.blob[1] as SampleBuild;
    const m = JSON.parse((await manifest(repo, glTag(aws))).bytes.toString()) as { layers: Array<{ digest: string; annotations: Record<string, string> }> };
    const raw = m.layers.find((l) => l.annotations['org.opencontainers.image.title']?.endsWith('.raw')) ?? m.layers[0];
    const res = await request(`${registry.url}/v2/${repo}/blobs/${raw?.digest}`, { method: 'DELETE' });
    await res.body.dump();
    assert.equal(res.statusCode, 202);
    const lines: string[] = [];
    const r = await verify(repo, lines);
    assert.equal(r.ok, false);
    assert.deepEqual(errors(r), [{ check: 'blob', subject: aws.base }]);
    assert.match(r.problems[0]?.message ?? '', new RegExp(`${raw?.annotations['org.opencontainers.image.title']?.replace(/\./g, '\\.')} \\(${raw?.digest}\\) is missing`));
    const line = lines.map((l) => JSON.parse(l) as { msg: string; level: string; errors?: number }).find((l) => l.msg.startsWith('release '));
    assert.deepEqual([line?.level, line?.msg, line?.errors], ['error', 'release 1877.3 has problems', 1]);

    // The remedy docs/operations.md gives: publish the build again, which uploads the missing blob.
    const again = await run(repo, { action: 'publish', bucket: BUCKET, base: aws.base });
    assert.equal(again.error, undefined);
    assert.deepEqual((await verify(repo)).problems, []);
  });

  it('names a tag moved to another manifest', async () => {
    const repo = 'tag';
    await publishAll(repo, sets.tag);
    const [, aws, pxe] = sets.tag as [SampleBuild, SampleBuild, SampleBuild];
    await put(repo, glTag(aws), await manifest(repo, glTag(pxe)));
    const r = await verify(repo);
    assert.deepEqual(errors(r), [{ check: 'tag', subject: glTag(aws) }]);
    assert.match(r.problems[0]?.message ?? '', /names sha256:[0-9a-f]{12}…; the index names sha256:[0-9a-f]{12}… for aws-gardener_prod-amd64/);

    // Publishing the build again by hand puts the tag back.
    assert.equal((await run(repo, { action: 'publish', bucket: BUCKET, base: aws.base })).outcome, 'published');
    assert.deepEqual((await verify(repo)).problems, []);
  });

  it('names a build recorded but missing from the index', async () => {
    const repo = 'entry';
    await publishAll(repo, sets.entry);
    const pxe = sets.entry[2] as SampleBuild;
    const current = await manifest(repo, v);
    const index = JSON.parse(current.bytes.toString()) as { manifests: Array<{ annotations?: { cname?: string } }> };
    index.manifests = index.manifests.filter((m) => m.annotations?.cname !== pxe.base);
    // Written as another tool would, which leaves the version's other tags as they were.
    await put(repo, v, { bytes: Buffer.from(JSON.stringify(index)), type: current.type });
    const r = await verify(repo);
    const found = errors(r);
    assert.deepEqual(found.filter((p) => p.check === 'record'), [{ check: 'record', subject: pxe.base }]);
    assert.match(r.problems.find((p) => p.check === 'record')?.message ?? '', /recorded, but its artifact manifest .* is not in the index; reindex/);
    // latest and the others copied the complete index, which the version no longer is.
    assert.deepEqual(found.filter((p) => p.check === 'alias').map((p) => p.subject).sort(), ['1877', '1877.3.0', 'latest']);

    // A reindex brings the entry back, and the aliases follow.
    assert.equal((await run(repo, { action: 'reindex', bucket: BUCKET, version: v })).outcome, 'published');
    assert.deepEqual((await verify(repo)).problems, []);
  });

  it('names a wrong alias, saying which version it holds and which it must', async () => {
    const repo = 'alias';
    await publishAll(repo, [older, ...sets.alias]);
    await put(repo, 'latest', await manifest(repo, '1877.2'));
    const r = await verify(repo);
    assert.deepEqual(errors(r), [{ check: 'alias', subject: 'latest' }]);
    assert.match(r.problems[0]?.message ?? '', /:latest holds sha256:[0-9a-f]{12}… \(the index of 1877\.2\); by "latest" it must hold 1877\.3/);

    // A reindex of the version puts the alias right.
    assert.equal((await run(repo, { action: 'reindex', bucket: BUCKET, version: v })).outcome, 'published');
    assert.deepEqual((await verify(repo)).problems, []);
  });

  describe('from the CLI', () => {
    let bucketDir: string;
    const local = builds('c00000');
    const cli = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
      try {
        const { stdout, stderr } = await exec(process.execPath, [(installed as InstalledCli).bin, ...args], { env: { ...process.env, REGISTRY: '' }, timeout: 120_000 });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
      }
    };
    const globals = () => ['-r', `http://${registry.host}/cli`, '-a', ALIASES];
    // The CLI as installed from the package (installed-cli.ts): it runs eight times here.
    let installed: InstalledCli | undefined;

    before(async () => {
      installed = await installCli();
      bucketDir = join(dir, 'bucket');
      for (const b of local) await writeBuildDir(bucketDir, b);
      for (const b of local) {
        const r = await cli([...globals(), '-k', `file:${keyFile}`, 'publish', b.base, '--dir', bucketDir]);
        assert.equal(r.code, 0, r.stderr);
      }
    });
    after(async () => {
      if (installed) await rm(installed.dir, { recursive: true, force: true });
    });

    it('prints JSON when piped and exits 0 on a complete version; with another key, names every signature and exits 1', async () => {
      const good = await cli([...globals(), '-k', `file:${keyFile}`, 'verify', v, '--dir', bucketDir]);
      assert.equal(good.code, 0, good.stderr);
      const report = JSON.parse(good.stdout) as VerifyReport;
      assert.equal(report.ok, true);
      assert.equal(report.repositories[0]?.signatures, 3);

      const bad = await cli([...globals(), 'verify', v, '--dir', bucketDir, '--public-key', otherPublicKey]);
      assert.equal(bad.code, 1);
      const wrong = JSON.parse(bad.stdout) as VerifyReport;
      assert.deepEqual(
        errors(wrong).map((p) => `${p.check} ${p.subject}`).sort(),
        local.map((b) => `signature ${b.base}`).sort(),
        wrong.problems.map((p) => p.message).join('\n'),
      );
      assert.match(wrong.problems[0]?.message ?? '', /cosign and gardenlinux-update refuse it: .*does not verify with the key/);
    });

    it('prints a table on a terminal', async () => {
      const command = [process.execPath, (installed as InstalledCli).bin, ...globals(), 'verify', v, '--dir', bucketDir, '--public-key', otherPublicKey].map((a) => `'${a}'`).join(' ');
      // script(1) gives the CLI a pseudo-terminal as standard output, and passes its exit status on (-e).
      const r: { stdout?: string; code?: number } = await exec('script', ['-qec', `${command} 2>/dev/null`, '/dev/null'], { env: { ...process.env, REGISTRY: '' } }).catch((e: { stdout?: string; code?: number }) => e);
      const out = String(r.stdout ?? '').replace(/\r/g, '');
      assert.match(out, /^1877\.3: 3 errors, 0 warnings \(checked in \d+\.\d s\)$/m);
      assert.match(out, /^REPOSITORY +INDEX +ENTRIES +RECORDS +BLOBS +TAGS +ALIASES +SIGNATURES +ERRORS +WARNINGS$/m);
      assert.match(out, /^error +signature +aws-gardener_prod-amd64-1877\.3-c0000002 +sha256-[0-9a-f]{64}\.sig: cosign and gardenlinux-update refuse it/m);
      assert.equal(r.code, 1, 'exit status 1');
    });
  });
});
