/** The `oci-layout:` target passes the same publication, checked with skopeo's `oci:` transport. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHandler, type HandlerResult } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { BUCKET, expectedArtifactManifest, expectedIndex, glTag, parse, sha256 } from '../helpers/expectations';

describe('publishing to a local OCI image layout', () => {
  let s3: LocalS3;
  let clients: ClientSandbox;
  let dir: string;
  let layout: string;
  let first: JobSummary[] = [];
  const builds = [
    sampleBuild({ flavor: 'container', arch: 'amd64' }),
    sampleBuild({ flavor: 'container', arch: 'arm64' }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true }),
    sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'arm64' }),
  ];
  const publishAll = async (): Promise<JobSummary[]> => {
    const results = (await Promise.all(
      builds.map((b) => createHandler({ env: { ...s3.env, REGISTRY: `oci-layout:${layout}` }, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`))),
    )) as HandlerResult[];
    return results.flatMap((r) => r.jobs);
  };

  before(async () => {
    [s3, clients] = await Promise.all([startLocalS3([BUCKET]), clientSandbox()]);
    dir = await mkdtemp(join(tmpdir(), 'gl-layout-'));
    layout = join(dir, 'layout');
    for (const b of builds) await uploadBuild(s3.client, BUCKET, b);
  });
  after(async () => {
    await Promise.all([s3?.close(), clients?.cleanup(), dir ? rm(dir, { recursive: true, force: true }) : undefined]);
  });

  it('publishes every build', async () => {
    first = await publishAll();
    assert.deepEqual(first.map((j) => j.outcome), ['published', 'published', 'published', 'published'], JSON.stringify(first));
  });

  it('holds the container images byte for byte under <arch>-<version>', async () => {
    for (const b of builds.filter((x) => x.image)) {
      const raw = await clients.skopeo(['inspect', '--raw', `oci:${layout}:${b.arch}-1877.3`]);
      assert.equal(sha256(raw), b.image?.manifestDigest);
      const inspected = parse(await clients.skopeo(['inspect', `oci:${layout}:${b.arch}-1877.3`])) as { Architecture: string; Os: string };
      assert.equal(inspected.Architecture, b.arch);
      assert.equal(inspected.Os, 'linux');
    }
  });

  it('holds each artifact manifest as spec §3 describes, with every blob intact', async () => {
    for (const b of builds) {
      const raw = await clients.skopeo(['inspect', '--raw', `oci:${layout}:${glTag(b)}`]);
      assert.deepEqual(parse(raw), expectedArtifactManifest(b));
      await clients.skopeo(['copy', '--preserve-digests', `oci:${layout}:${glTag(b)}`, `oci:${join(dir, `copy-${b.base}`)}:x`]);
    }
  });

  it('holds the version index in spec §5 order', async () => {
    const gl = new Map<string, { digest: string; size: number }>();
    for (const b of builds) {
      const raw = await clients.skopeo(['inspect', '--raw', `oci:${layout}:${glTag(b)}`]);
      gl.set(b.base, { digest: sha256(raw), size: Buffer.byteLength(raw) });
    }
    assert.deepEqual(parse(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`])), expectedIndex(builds, gl));
  });

  it('publishes again without copying a byte', async () => {
    const again = await publishAll();
    for (const j of again) {
      assert.equal(j.outcome, 'unchanged', JSON.stringify(j));
      assert.equal(j.bytesUploaded, 0);
      assert.equal(j.manifest?.digest, first.find((x) => x.base === j.base)?.manifest?.digest);
    }
  });

  it('keeps temporary files out of blobs/sha256, and removes what an interrupted run left there', async () => {
    // A process that has ended: its id is free, as a crashed publisher's would be.
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const deadPid = Number(gone.stdout.toString());
    const blobs = join(layout, 'blobs', 'sha256');
    const leftovers = [join(blobs, `upload.tmp-${deadPid}-a1b2c3`), join(layout, '.uploads', `${deadPid}-d4e5f6`), join(layout, `index.json.tmp-${deadPid}-0f0f`)];
    const ours = join(layout, '.uploads', `${process.pid}-beef`); // a live process's upload in progress
    for (const f of [...leftovers, ours]) await writeFile(f, Buffer.alloc(1024, 1));
    const again = await publishAll();
    assert.deepEqual(again.map((j) => j.outcome), ['unchanged', 'unchanged', 'unchanged', 'unchanged']);
    for (const f of leftovers) assert.equal(existsSync(f), false, `${f} was removed`);
    assert.equal(existsSync(ours), true, "a running process's temporary file is left alone");
    await rm(ours);
    // Every file under blobs/sha256 is a blob named by its digest.
    for (const name of await readdir(blobs)) {
      assert.match(name, /^[0-9a-f]{64}$/);
      assert.equal(sha256(await readFile(join(blobs, name))), `sha256:${name}`);
    }
    // A publication that writes new blobs leaves nothing behind either.
    const more = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', imageSize: 5 * 1024 * 1024 });
    await uploadBuild(s3.client, BUCKET, more);
    const [job] = ((await createHandler({ env: { ...s3.env, REGISTRY: `oci-layout:${layout}` }, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${more.base}`))) as HandlerResult).jobs;
    assert.equal(job?.outcome, 'published');
    assert.deepEqual(await readdir(join(layout, '.uploads')), []);
    assert.ok((await readdir(blobs)).every((n) => /^[0-9a-f]{64}$/.test(n)));
    await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`]);
  });
});
