/**
 * `gl-oci-publish pull`: a build published to a real docker-registry comes back out of it as it was uploaded. For
 * every kind of sample build and every build document of the metadata corpus: the same bytes for every file the
 * artifact manifest carries (no PXE member on its own), and a metadata document that parseMetadata reads as the
 * same build, which publishes again to the same artifact manifest. A refused signature, a build that is not there,
 * a corrupt blob in the registry's storage and files already in the way write nothing.
 */
import assert from 'node:assert/strict';
import { generateKeyPair } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { parseMetadata, type BuildMetadata } from '../../functions/gardenlinux/metadata';
import { parseReleaseFile } from '../../functions/gardenlinux/release-file';
import type { PullResult } from '../../functions/orchestration/pull-build';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { mapLimit } from '../../functions/util/limiter';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { cliInProcess, type CliRun } from '../helpers/cli-in-process';
import { sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const REPO = 'gardenlinux/gardenlinux';
const LOCAL = 'local-directory';
const FIXTURES = 'test/fixtures/metadata';
const contents = JSON.parse(readFileSync(`${FIXTURES}/contents.json`, 'utf8')) as Record<string, string>;



/** A build to publish and pull back: its files' bytes and its metadata document. */
interface Case {
  base: string;
  files: Map<string, Buffer>;
  metadata: string;
  /** other documents of the same build (the cloud publisher's rewrite) */
  alsoDescribedBy?: string[];
  pxeMembers?: string[];
  signed: boolean;
}

function fromSample(b: SampleBuild): Case {
  return { base: b.base, files: new Map(b.files.map((f) => [f.name, f.data])), metadata: b.metadata, signed: true, ...(b.pxeMembers ? { pxeMembers: b.pxeMembers.map((m) => m.name).sort() } : {}) };
}

async function fromCorpus(base: string): Promise<Case> {
  const metadata = await readFile(`${FIXTURES}/${base}.yaml`, 'utf8');
  const doc = YAML.parse(metadata, { schema: 'yaml-1.1' }) as { paths: Array<{ name: string }> };
  const names = doc.paths.map((p) => (p.name.startsWith(`${base}/`) ? p.name.slice(base.length + 1) : p.name));
  return { base, metadata, files: new Map(names.map((n) => [n, Buffer.from(contents[n] ?? `${n}\n`)])), signed: false };
}

function build(text: string, base: string): BuildMetadata {
  const doc = parseMetadata(text, base);
  assert.equal(doc.kind, 'build', `${base}: a build document`);
  return (doc as { build: BuildMetadata }).build;
}

/** Every regular file below `dir`, as paths relative to it. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('pull: a build back out of the registry', () => {
  let registry: TestRegistry;
  let dir: string;
  let bucket: string;
  const keys = { right: '', wrong: '', notAKey: '' };
  const published = new Map<string, JobSummary>();

  // Every kind of sample build, lean where the kind allows (one full build has every kind of file), each its own commit.
  const samples = [
    sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'a0110001', lean: true }),
    sampleBuild({ flavor: 'container', arch: 'arm64', version: '2150.0.0', commit: 'local', noRefName: true, lean: true }),
    sampleBuild({ flavor: 'container-pythonDev', arch: 'amd64', commit: 'a0110003', lean: true }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'a0110004', lean: true }),
    sampleBuild({ flavor: 'aws-gardener_prod', arch: 'arm64', commit: 'a0110005', legacyMetadata: true, lean: true }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', commit: 'a0110006', pxe: true, lean: true }),
    sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', commit: 'a0110007' }),
  ];
  /** published unsigned, and corrupted in the registry's storage by its test */
  const victim = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'bad0b10b', lean: true, imageSize: 256 * 1024 });
  const CORPUS = [
    'aws-gardener_prod-amd64-1877.3-75df9f40',
    'azure-gardener_prod-arm64-1877.3-75df9f40',
    'gcp-gardener_prod-amd64-1592.6-bd0d5b2e',
    'metal-gardener_prod-amd64-1592.18-1d2c3b4a',
    'kvm-gardener_prod-amd64-1877.3-0e5e0e5e',
    'metal_trustedboot-amd64-1877.3-75df9f40',
  ];
  const cases: Case[] = samples.map(fromSample);

  const registryArg = () => `http://${registry.host}/${REPO}`;
  const pull = (base: string, to: string, ...more: string[]) => cliInProcess(['-r', registryArg(), '--json', 'pull', base, '--to', to, ...more]);
  const pulled = (r: CliRun): PullResult => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as PullResult;
  };
  const blobPath = (digest: string) => join(registry.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7), 'data');

  before(async () => {
    // Keys are made on the thread pool while the registry starts and the bucket is written.
    const pair = promisify(generateKeyPair);
    const keyPairs = Promise.all([pair('rsa', { modulusLength: 2048 }), pair('rsa', { modulusLength: 2048 })]);
    registry = await startRegistry();
    dir = await mkdtemp(join(tmpdir(), 'gl-pull-'));
    bucket = join(dir, 'bucket');
    for (const base of CORPUS) cases.push(await fromCorpus(base));
    const aws = cases.find((c) => c.base === CORPUS[0]) as Case;
    aws.alsoDescribedBy = [await readFile(`${FIXTURES}/${CORPUS[0]}.rewritten.yaml`, 'utf8')];
    const all = [...cases, { ...fromSample(victim), signed: false }];
    for (const c of all) {
      await mkdir(join(bucket, 'objects', c.base), { recursive: true });
      await mkdir(join(bucket, 'meta', 'singles'), { recursive: true });
      for (const [name, data] of c.files) await writeFile(join(bucket, 'objects', c.base, name), data);
      await writeFile(join(bucket, 'meta', 'singles', c.base), c.metadata);
    }
    const [right, wrong] = await keyPairs;
    await writeFile(join(dir, 'sign.key'), right.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    for (const [k, pem] of [
      ['right', right.publicKey.export({ format: 'pem', type: 'spki' }) as string],
      ['wrong', wrong.publicKey.export({ format: 'pem', type: 'spki' }) as string],
      ['notAKey', 'this is no PEM key\n'],
    ] as const) {
      keys[k] = join(dir, `${k}.pub`);
      await writeFile(keys[k], pem);
    }
    // Published as the Lambda publishes them, from a directory laid out like the bucket: samples signed, the corpus not.
    const env = { REGISTRY: registryArg(), SOURCE_DIR: bucket, CONTAINER_REPOSITORIES: '{"container-pythonDev":"container-python-dev"}' };
    const signedHandler = createHandler({ env: { ...env, SIGNING_KEY: `file:${join(dir, 'sign.key')}` }, logSink: () => undefined });
    const unsignedHandler = createHandler({ env, logSink: () => undefined });
    await mapLimit(all, 3, async (c) => {
      const job = await firstJob((c.signed ? signedHandler : unsignedHandler)({ action: 'publish', bucket: LOCAL, key: `meta/singles/${c.base}` }));
      assert.equal(job.outcome, 'published', `${c.base}: ${job.error}`);
      published.set(c.base, job);
    });
  });
  after(async () => {
    await Promise.all([registry?.stop(), dir ? rm(dir, { recursive: true, force: true }) : undefined]);
  });

  it('gives back every build as uploaded: the same bytes for every file, a metadata document read as the same build, which publishes to the same manifest', async () => {
    const layout = join(dir, 'republished');
    for (const [i, c] of cases.entries()) {
      const to = join(dir, 'out', String(i));
      const r = pulled(await pull(c.base, to, ...(c.signed ? ['--public-key', keys.right] : [])));
      const job = published.get(c.base) as JobSummary;
      assert.deepEqual(
        { digest: r.manifest.digest, foundBy: r.manifest.foundBy, reference: r.manifest.reference },
        { digest: job.manifest?.digest, foundBy: 'index', reference: `${registry.host}/${REPO}:${c.base.split('-').at(-2)}` },
        c.base,
      );
      if (c.signed) assert.equal(r.signature?.firstLayer, 'this-key', c.base);

      // The files: exactly those of the upload, byte for byte; the members of a PXE bundle only inside it.
      const objects = join(to, 'objects', c.base);
      assert.deepEqual(await filesBelow(to), [...[...c.files.keys()].map((n) => join('objects', c.base, n)), join('meta', 'singles', c.base)].sort(), c.base);
      for (const [name, data] of c.files) assert.ok((await readFile(join(objects, name))).equals(data), `${c.base}: ${name}`);
      assert.deepEqual(r.bundleMembers, c.pxeMembers ?? [], c.base);
      assert.deepEqual(r.files.map((f) => f.outcome), r.files.map(() => 'written'));

      // The metadata document: the same build as far as the registry carries it.
      const text = await readFile(join(to, 'meta', 'singles', c.base), 'utf8');
      const back = build(text, c.base);
      for (const originalText of [c.metadata, ...(c.alsoDescribedBy ?? [])]) {
        const original = build(originalText, c.base);
        assert.deepEqual(back.name, original.name, c.base);
        assert.equal(back.platform, original.platform, c.base);
        assert.deepEqual(back.modifiers, original.modifiers, c.base);
        assert.deepEqual(back.files, [...original.files].sort((a, b) => (a.name < b.name ? -1 : 1)), `${c.base}: names, keys and md5s`);
        // The long commit is in the registry only as far as the .release file says it.
        const long = parseReleaseFile((c.files.get(`${c.base}.release`) as Buffer).toString('utf8')).get('GARDENLINUX_COMMIT_ID_LONG');
        assert.equal(back.commitLong, long === undefined ? undefined : original.commitLong, c.base);
      }

      // Published again from what was pulled (md5s checked by the publisher), the same artifact manifest.
      const again = await firstJob(createHandler({ env: { REGISTRY: `oci-layout:${layout}`, SOURCE_DIR: to }, logSink: () => undefined })({ action: 'publish', bucket: LOCAL, key: `meta/singles/${c.base}` }));
      assert.equal(again.outcome, 'published', `${c.base}: ${again.error}`);
      assert.equal(again.manifest?.digest, job.manifest?.digest, `${c.base}: republished from the pulled directory`);
    }
  });

  it('keeps identical files without downloading them, refuses differing ones unless --force, and then writes only those', async () => {
    const c = cases.find((x) => x.pxeMembers) as Case;
    const to = join(dir, 'again');
    pulled(await pull(c.base, to));
    const second = pulled(await pull(c.base, to));
    assert.deepEqual([second.bytesWritten, second.metadata.outcome], [0, 'unchanged']);
    assert.ok(second.files.every((f) => f.outcome === 'unchanged'));

    const bundle = join(to, 'objects', c.base, `${c.base}.pxe.tar.gz`);
    const release = join(to, 'objects', c.base, `${c.base}.release`);
    await writeFile(bundle, 'edited by hand\n');
    await rm(release);
    const refused = await pull(c.base, to);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr.split('\n').at(-2) as string, /^gl-oci-publish: the file .*\.pxe\.tar\.gz differs from the build in the registry; nothing was written; pull with --force to replace it$/);
    assert.equal(await readFile(bundle, 'utf8'), 'edited by hand\n', 'left as it was');
    await assert.rejects(stat(release), 'the missing file is not written either');

    const forced = pulled(await pull(c.base, to, '--force'));
    assert.deepEqual(
      Object.fromEntries(forced.files.map((f) => [f.name, f.outcome])),
      Object.fromEntries([...c.files.keys()].map((n) => [n, n.endsWith('.pxe.tar.gz') ? 'replaced' : n.endsWith('.release') ? 'written' : 'unchanged'])),
    );
    assert.ok((await readFile(bundle)).equals(c.files.get(`${c.base}.pxe.tar.gz`) as Buffer));
    assert.deepEqual(await filesBelow(to), [...[...c.files.keys()].map((n) => join('objects', c.base, n)), join('meta', 'singles', c.base)].sort(), 'no temporary file is left');

    // The uploaded metadata document in the way: known only once the files are downloaded, and still nothing is written.
    const doc = join(to, 'meta', 'singles', c.base);
    await writeFile(doc, c.metadata);
    await rm(release);
    const docRefused = await pull(c.base, to);
    assert.equal(docRefused.code, 1);
    assert.match(docRefused.stderr.split('\n').at(-2) as string, /^gl-oci-publish: the metadata document .*meta\/singles\/metal_pxe-arm64-1877\.3-a0110006 differs from the build in the registry; nothing was written/);
    assert.equal(await readFile(doc, 'utf8'), c.metadata);
    await assert.rejects(stat(release), 'the downloaded .release is not put in place');
    const docForced = pulled(await pull(c.base, to, '--force'));
    assert.deepEqual([docForced.metadata.outcome, docForced.files.find((f) => f.name.endsWith('.release'))?.outcome], ['replaced', 'written']);
    assert.deepEqual(await filesBelow(to), [...[...c.files.keys()].map((n) => join('objects', c.base, n)), join('meta', 'singles', c.base)].sort());
  });

  it('finds the build through the index --version names, else through its tag', async () => {
    const c = cases[3] as Case;
    // Another version index naming the build: the bytes of 1877.3 under 1877.99.
    const res = await fetch(`${registry.url}/v2/${REPO}/manifests/1877.3`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    const put = await fetch(`${registry.url}/v2/${REPO}/manifests/1877.99`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.index.v1+json' }, body: Buffer.from(await res.arrayBuffer()) });
    assert.equal(put.status, 201);
    const byIndex = pulled(await pull(c.base, join(dir, 'v1'), '--version', '1877.99'));
    assert.deepEqual([byIndex.manifest.foundBy, byIndex.manifest.reference], ['index', `${registry.host}/${REPO}:1877.99`]);
    // No index 1877.98: the build's own tag names it, and a warning says it is in no index.
    const byTag = await pull(c.base, join(dir, 'v2'), '--version', '1877.98');
    assert.deepEqual([pulled(byTag).manifest.foundBy, pulled(byTag).manifest.reference], ['tag', `${registry.host}/${REPO}:1877.3-${c.base}-amd64`]);
    assert.match(byTag.stderr, /"level":"warn","msg":"the build is in no version index; pulling what its tag names".*there is no version index/);
  });

  it('refuses a signature that does not verify with the key, and a missing one, before writing anything', async () => {
    const signed = cases[0] as Case;
    const unsigned = cases.find((c) => !c.signed) as Case;
    for (const [what, base, key, says] of [
      ['another key', signed.base, keys.wrong, /has no signature that verifies with the public key sha256:[0-9a-f]{16} \(first layer: the signature does not verify with the key .*\); nothing was written/],
      ['no signature', unsigned.base, keys.right, /has no signature that verifies with the public key sha256:[0-9a-f]{16} \(sha256-[0-9a-f]{64}\.sig does not exist\); nothing was written/],
    ] as const) {
      const to = join(dir, `refused-${what.replace(' ', '-')}`);
      await mkdir(to);
      const r = await pull(base, to, '--public-key', key);
      assert.equal(r.code, 1, what);
      assert.match(r.stderr.split('\n').at(-2) as string, says, what);
      assert.equal(r.stdout, '', what);
      assert.deepEqual(await readdir(to), [], `${what}: the output directory stays empty`);
    }
  });

  it('fails on a blob corrupted in the registry and leaves no file under its real name (nor a temporary one)', async () => {
    const raw = victim.files.find((f) => f.name.endsWith('.raw'))?.data as Buffer;
    const path = blobPath(sha256(raw));
    // Same size, one byte changed: only the digest tells.
    const bad = Buffer.from(raw);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0xff;
    await writeFile(path, bad);
    const to = join(dir, 'corrupt');
    const r = await pull(victim.base, to);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`gl-oci-publish: .*blob .*@${sha256(raw)}: digest sha256:[0-9a-f]{64}, expected ${sha256(raw)}\\n$`));
    assert.deepEqual(await filesBelow(to), [], 'nothing written, the intact .release neither');
    // Shorter than the manifest says: refused before a byte is written.
    await truncate(path, raw.length - 100);
    const short = await pull(victim.base, to);
    assert.equal(short.code, 1);
    assert.match(short.stderr, /is 262044 bytes, but the manifest says 262144\n$/);
    assert.deepEqual(await filesBelow(to), []);
    await writeFile(path, raw);
    pulled(await pull(victim.base, to));
  });

  it('says so, with exit status 1, when the build is not in the registry', async () => {
    const r = await pull('aws-gardener_prod-amd64-1877.3-deadbeef', join(dir, 'missing'));
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.split('\n').at(-2),
      `gl-oci-publish: aws-gardener_prod-amd64-1877.3-deadbeef is not in ${registry.host}/${REPO}: the version index ${registry.host}/${REPO}:1877.3 has no entry for it, and there is no tag 1877.3-aws-gardener_prod-amd64-1877.3-deadbeef-amd64`,
    );
    await assert.rejects(stat(join(dir, 'missing')), 'the output directory is not made');
  });

  it('refuses usage errors with exit status 2 and one line, before any request', async () => {
    let requests = 0;
    const server: Server = createServer((_req, res) => {
      requests++;
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const registryUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/gl`;
    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    const base = (cases[0] as Case).base;
    try {
      for (const [args, says] of [
        [['pull', 'container-1877.3-75df9f40', '--to', dir], /"container-1877\.3-75df9f40" is not a base name/],
        [['pull', base], /required option '-t, --to <dir>' not specified/],
        [['pull', base, '--to', file], /--to: .*a-file is not a directory/],
        [['pull', base, '--to', dir, '--version', '1877'], /"1877" is not a Garden Linux version/],
        [['pull', base, '--to', dir, '--public-key', join(dir, 'missing.pub')], /--public-key: cannot read the public key .*missing\.pub/],
        [['pull', base, '--to', dir, '--public-key', keys.notAKey], /--public-key: .*notAKey\.pub is not a PEM public key/],
      ] as const) {
        const r = await cliInProcess(['-r', registryUrl, ...args]);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^gl-oci-publish: [^\n]+\n$/, 'one line');
        assert.match(r.stderr, says);
      }
      assert.equal(requests, 0);
    } finally {
      server.close();
    }
  });
});
