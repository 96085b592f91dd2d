/** The CLI runs the handler's code on a local directory laid out like the bucket. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { OciLayoutTarget } from '../../functions/target/oci-layout-target';
import { Logger } from '../../functions/util/log';
import { s3Event } from '../../tools/local-s3';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { parse, sha256 } from '../helpers/expectations';

const exec = promisify(execFile);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, ['bin/gl-oci-publish.mjs', ...args], {
      env: { ...process.env, REGISTRY: '', ...env },
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('gl-oci-publish (CLI)', () => {
  let dir: string;
  let bucketDir: string;
  let layout: string;
  let clients: ClientSandbox;
  const builds = [sampleBuild({ flavor: 'container', arch: 'amd64' }), sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64' })];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-cli-'));
    bucketDir = join(dir, 'bucket');
    layout = join(dir, 'layout');
    for (const b of builds) await writeBuildDir(bucketDir, b);
    clients = await clientSandbox();
  });
  after(async () => {
    await clients?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('documents its commands in --help', async () => {
    const r = await cli(['--help']);
    assert.equal(r.code, 0);
    for (const word of ['publish', 'reindex', 'tag', 'event', '--registry', 'REGISTRY']) assert.ok(r.stdout.includes(word), word);
  });

  it('publishes a build from a local directory and prints the summary as JSON', async () => {
    const r = await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '', '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    const out = parse(r.stdout) as { jobs: Array<{ outcome: string; base: string; container?: { tag: string } }> };
    assert.equal(out.jobs[0]?.outcome, 'published');
    assert.equal(out.jobs[0]?.container?.tag, 'amd64-1877.3');
    // Logs are JSON lines on stderr, so stdout stays machine-readable.
    assert.ok(r.stderr.split('\n').filter(Boolean).every((l) => JSON.parse(l) !== undefined));
  });

  it('feeds a saved S3 event to the handler', async () => {
    const file = join(dir, 'event.json');
    await writeFile(file, JSON.stringify(s3Event('some-bucket', `meta/singles/${builds[1]?.base}`)));
    const r = await cli(['-r', `oci-layout:${layout}`, 'event', file, '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0]?.outcome, 'published');
    const index = parse(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`])) as { manifests: unknown[] };
    assert.equal(index.manifests.length, 3, 'one container entry and two Garden Linux entries');
  });

  it('tags release aliases with the exact bytes of the version index', async () => {
    const r = await cli(['-r', `oci-layout:${layout}`, 'tag', '1877.3', '1877', 'latest']);
    assert.equal(r.code, 0, r.stderr);
    const source = sha256(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`]));
    for (const tag of ['1877', 'latest']) assert.equal(sha256(await clients.skopeo(['inspect', '--raw', `oci:${layout}:${tag}`])), source);
  });

  it('restores every entry with reindex after another tool replaced the index', async () => {
    const target = new OciLayoutTarget(layout, 'test', new Logger({ sink: () => undefined }));
    const full = await target.getManifest('1877.3');
    assert.ok(full);
    const entries = (parse(full.bytes) as { manifests: Array<{ annotations?: unknown }> }).manifests;
    // What `podman manifest push` leaves: only the container entry.
    const podmanIndex = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries.filter((e) => !e.annotations) };
    await target.putManifest(Buffer.from(JSON.stringify(podmanIndex)), 'application/vnd.oci.image.index.v1+json', '1877.3');

    const r = await cli(['-r', `oci-layout:${layout}`, 'reindex', '1877.3', '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0]?.outcome, 'published');
    const restored = await target.getManifest('1877.3');
    assert.equal(restored?.digest, full.digest, 'the same index as before, byte for byte');
  });

  it('retracts a build, and publishing it by hand restores it', async () => {
    const kvm = builds[1]?.base ?? '';
    const r = await cli(['-r', `oci-layout:${layout}`, 'retract', kvm, '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    const job = (parse(r.stdout) as { jobs: Array<{ outcome: string; retracted?: { repositories: string[] } }> }).jobs[0];
    assert.equal(job?.outcome, 'published');
    assert.deepEqual(job?.retracted?.repositories, [`oci-layout:${layout}`]);
    const cnames = async () =>
      ((parse(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`])) as { manifests: Array<{ annotations?: { cname?: string } }> }).manifests)
        .map((m) => m.annotations?.cname)
        .filter(Boolean);
    assert.deepEqual(await cnames(), [builds[0]?.base]);
    // Its artifact manifest stays where it was: retraction takes it out of the version, deletes nothing.
    await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3-${kvm}-arm64`]);

    const back = await cli(['-r', `oci-layout:${layout}`, 'publish', kvm, '--dir', bucketDir]);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual((await cnames()).sort(), [builds[0]?.base, kvm].sort());
  });

  it('says what is wrong when the source is missing or the configuration is bad', async () => {
    const noSource = await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '']);
    assert.notEqual(noSource.code, 0);
    assert.match(noSource.stderr, /--bucket <name> \(S3\) or --dir <path>/);

    const badRegistry = await cli(['-r', 'ftp://example.com/x', 'publish', builds[0]?.base ?? '', '--dir', bucketDir]);
    assert.equal(badRegistry.code, 1);
    assert.match(badRegistry.stderr, /REGISTRY "ftp:\/\/example.com\/x" has the scheme ftp/);

    const notABuild = await cli(['-r', `oci-layout:${layout}`, 'publish', 'not-a-base-name', '--dir', bucketDir]);
    assert.equal(notABuild.code, 1);
    assert.match(notABuild.stdout + notABuild.stderr, /does not exist/);
  });
});
