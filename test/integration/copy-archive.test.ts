/**
 * `copy` through files, for carrying a release into a private site: registry → oci-layout → registry and
 * registry → oci-archive → registry (the archive read by skopeo too), with identical digests and tags at the end and
 * verify passing there; a copy into an archive adds to it, one into an archive that has it all writes nothing, and one
 * that finds an unfinished copy's staged layout goes on from it. The CLI's own part: the copy from an archive and
 * verify, exit statuses 0, 1 and 2.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VerifyReport } from '../../functions/orchestration/verify-release';
import { createHandler } from '../../functions/publish/handler';
import type { HandlerResult } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { cliInProcess, type CliRun } from '../helpers/cli-in-process';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { ALIAS_TAGS, assertVerified, CONTAINER_REPOSITORIES, publishSignedRelease, SUB, tagDigests, verifyAt, VERSION, type SignedRelease } from '../helpers/signed-release';

/** The CLI's main() in this process, with what it printed and its exit status. */
const cli = (args: string[]): Promise<CliRun> => cliInProcess(args);

describe('copy: a release through an OCI layout and an OCI archive', () => {
  let registry: TestRegistry;
  let clients: ClientSandbox;
  let release: SignedRelease;
  let dir: string;
  const repo = 'gardenlinux/gardenlinux';
  const url = (r: string) => `http://${registry.host}/${r}`;

  before(async () => {
    [registry, clients, dir] = await Promise.all([startRegistry(), clientSandbox(), mkdtemp(join(tmpdir(), 'gl-copy-files-'))]);
    release = await publishSignedRelease(url(repo));
  });
  after(async () => {
    await Promise.all([registry?.stop(), clients?.cleanup(), release?.remove(), dir ? rm(dir, { recursive: true, force: true }) : undefined]);
  });

  const copy = (payload: Record<string, unknown>, registryRepo = repo): Promise<JobSummary> =>
    firstJob(createHandler({ env: { ...release.env, REGISTRY: url(registryRepo) }, logSink: () => undefined })({ action: 'copy', version: VERSION, aliases: true, ...payload }));
  /** the tags of the source's main repository and sub-repository */
  const sourceTags = async () => [await tagDigests(registry, repo), await tagDigests(registry, `${repo}/${SUB}`)];
  const assertSameAsSource = async (r: string): Promise<void> => {
    assert.deepEqual([await tagDigests(registry, r), await tagDigests(registry, `${r}/${SUB}`)], await sourceTags(), `${r}: every tag with its digest`);
  };

  it('registry → oci-layout → registry: the same digests and tags, and verify passes at the end', async () => {
    const layout = join(dir, 'layout');
    const out = await copy({ to: `oci-layout:${layout}` });
    assert.equal(out.outcome, 'published', out.error);
    assert.equal(out.copy?.to, `oci-layout:${layout}`);
    const again = await copy({ to: `oci-layout:${layout}` });
    assert.deepEqual([again.outcome, again.blobsUploaded], ['unchanged', 0], again.error);

    const back = await copy({ from: `oci-layout:${layout}`, to: url('from-layout/gl') }, 'from-layout/gl');
    assert.equal(back.outcome, 'published', back.error);
    assert.equal(back.blobsUploaded, out.blobsUploaded);
    assert.deepEqual(back.copy?.repositories.map((r) => r.index), out.copy?.repositories.map((r) => r.index), 'the same index digests');
    await assertSameAsSource('from-layout/gl');
    assertVerified(await verifyAt(url('from-layout/gl'), release));
  });

  let archive: string;
  it('registry → oci-archive: a tar of the layout that skopeo reads; a copy adds to it, and one that finds it all leaves the file as it is', async () => {
    archive = join(dir, 'carry', 'gardenlinux-1877.3.tar');
    const out = await copy({ to: `oci-archive:${archive}`, aliases: false });
    assert.equal(out.outcome, 'published', out.error);
    assert.equal(out.copy?.archiveWritten, true);
    assert.deepEqual(await readdir(join(dir, 'carry')), ['gardenlinux-1877.3.tar'], 'nothing staged is left beside it');
    const raw = await clients.skopeo(['inspect', '--raw', `oci-archive:${archive}:${VERSION}`]);
    assert.equal(sha256(raw), out.copy?.repositories[0]?.index, 'skopeo finds the version index by its tag, byte for byte');

    // The aliases too: the archive is unpacked, added to and packed again, with all it held.
    const aliases = await copy({ to: `oci-archive:${archive}` });
    assert.equal(aliases.outcome, 'published', aliases.error);
    assert.deepEqual([aliases.blobsUploaded, aliases.blobsSkipped, aliases.copy?.aliases.written, aliases.copy?.tags.written, aliases.copy?.archiveWritten], [0, out.blobsUploaded, 8, 0, true]);
    assert.deepEqual(await readdir(join(dir, 'carry')), ['gardenlinux-1877.3.tar']);

    const before = await stat(archive);
    const again = await copy({ to: `oci-archive:${archive}` });
    assert.deepEqual([again.outcome, again.blobsUploaded, again.copy?.archiveWritten], ['unchanged', 0, false], again.error);
    assert.equal((await stat(archive)).mtimeMs, before.mtimeMs, 'the archive is not written again');
  });

  it('oci-archive → registry with the CLI, then verify there with the public key (exit 0)', async () => {
    const to = url('private/gl');
    const copied = await cli(['--json', '--container-repositories', CONTAINER_REPOSITORIES, '-a', ALIAS_TAGS, 'copy', VERSION, '--from', `oci-archive:${archive}`, '--to', to, '--aliases']);
    assert.equal(copied.code, 0, copied.stderr);
    const job = (JSON.parse(copied.stdout) as HandlerResult).jobs[0];
    assert.equal(job?.outcome, 'published');
    assert.equal(job?.copy?.from, `oci-archive:${archive}`);
    await assertSameAsSource('private/gl');

    const verified = await cli(['-r', to, '--container-repositories', CONTAINER_REPOSITORIES, 'verify', VERSION, '--dir', release.emptyRecords, '--public-key', release.publicKeyFile, '--json']);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    const report = JSON.parse(verified.stdout) as VerifyReport;
    assert.equal(report.ok, true);
    assert.deepEqual(report.repositories.map((r) => [r.entries, r.signatures]), [[4, 3], [1, 0]], 'every artifact manifest signature checked');
  });

  it('a copy into an archive goes on from the layout an unfinished copy staged beside it, and packs it', async () => {
    const file = join(dir, 'resumed.tar');
    // What an interrupted copy leaves: the layout staged at <file>.partial, no archive yet.
    const staged = await copy({ to: `oci-layout:${file}.partial` });
    assert.equal(staged.outcome, 'published', staged.error);
    const resumed = await copy({ to: `oci-archive:${file}` });
    assert.equal(resumed.outcome, 'published', resumed.error);
    assert.deepEqual([resumed.blobsUploaded, resumed.blobsSkipped, resumed.copy?.archiveWritten], [0, staged.blobsUploaded, true]);
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('resumed')), ['resumed.tar']);
    const raw = await clients.skopeo(['inspect', '--raw', `oci-archive:${file}:${VERSION}`]);
    assert.equal(sha256(raw), resumed.copy?.repositories[0]?.index);
  });

  it('exit status 2 for a location that is none, before anything runs; 1 for a version the source lacks', async () => {
    const noFile = await cli(['-r', url(repo), 'copy', VERSION, '--to', 'oci-archive:']);
    assert.deepEqual([noFile.code, noFile.stderr], [2, 'gl-oci-publish: --to oci-archive: names no file; expected "oci-layout:<dir>", "oci-archive:<file>", "<host>[:port]/<repository>" (HTTPS), or "http://<host>[:port]/<repository>" (plain HTTP)\n']);
    const archiveRegistry = await cli(['-r', `oci-archive:${archive}`, 'copy', VERSION, '--to', url('x/gl')]);
    assert.equal(archiveRegistry.code, 2);
    assert.match(archiveRegistry.stderr, /^gl-oci-publish: invalid configuration: REGISTRY: an oci-archive: is what "copy" reads or writes .*, not a place to publish to; publish to an oci-layout:<dir> and copy the version to an oci-archive:<file>\n$/);
    const itself = await cli(['-r', url(repo), 'copy', VERSION, '--to', url(repo)]);
    assert.deepEqual([itself.code, itself.stderr], [2, 'gl-oci-publish: --to names the place the release is copied from; give another destination\n']);
    const noFrom = await cli(['copy', VERSION, '--to', url('x/gl')]);
    assert.deepEqual([noFrom.code, noFrom.stderr], [2, 'gl-oci-publish: say where the release is: --from <location>, or -r <registry> (REGISTRY)\n']);

    const missing = await cli(['--json', 'copy', '1877.9', '--from', `oci-archive:${archive}`, '--to', url('x/gl')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, new RegExp(`gl-oci-publish: 1 of 1 jobs failed: 1877\\.9: oci-archive:${archive.replace(/[.]/g, '\\.')}:1877\\.9 does not exist`));
    assert.deepEqual(await tagDigests(registry, 'x/gl'), {});
  });
});
