/**
 * `copy` between two real docker-registry processes: a signed release (a container image in the main repository and
 * one in a container sub-repository, a PXE build, the aliases) arrives whole, with the same digests and every tag the
 * source has, verify passes at the destination with the public key, and skopeo pulls the container image by
 * `<repo>:<version>`. A second copy writes nothing; a copy that a destination stops half-way goes on where it stopped.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { sha256 } from '../helpers/expectations';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';
import { assertVerified, publishSignedRelease, SUB, tagDigests, verifyAt, VERSION, type SignedRelease } from '../helpers/signed-release';

describe('copy: a release from one registry to another', () => {
  let source: TestRegistry;
  let dest: TestRegistry;
  let proxy: FaultProxy;
  let clients: ClientSandbox;
  let release: SignedRelease;
  const repo = 'gardenlinux/gardenlinux';

  before(async () => {
    [source, dest, proxy, clients] = await Promise.all([startRegistry(), startRegistry(), startFaultProxy(), clientSandbox()]);
    proxy.setUpstream(dest.url);
    release = await publishSignedRelease(`http://${source.host}/${repo}`);
  });
  after(async () => {
    await Promise.all([source?.stop(), dest?.stop(), proxy?.close(), clients?.cleanup(), release?.remove()]);
  });

  const copy = (payload: Record<string, unknown>, lines: string[] = []): Promise<JobSummary> =>
    firstJob(createHandler({ env: { ...release.env, LOG_LEVEL: 'info', REGISTRY: `http://${source.host}/${repo}` }, logSink: (l) => lines.push(l) })({ action: 'copy', version: VERSION, ...payload }));

  let first: JobSummary;
  it('copies everything a consumer needs, with --aliases the aliases too: the same tags with the same digests', async () => {
    first = await copy({ to: `http://${dest.host}/${repo}`, aliases: true });
    assert.equal(first.outcome, 'published', first.error);
    const c = first.copy;
    assert.ok(c);
    assert.deepEqual(c.repositories.map((r) => r.repository), [`${dest.host}/${repo}`, `${dest.host}/${repo}/${SUB}`]);
    // main: 3 artifact manifests + the amd64 image; sub: the arm64 image. Signatures: each of them.
    assert.deepEqual([c.manifests, c.signatures, c.indexes], [{ written: 5, skipped: 0 }, { written: 5, skipped: 0 }, { written: 2, skipped: 0 }]);
    assert.deepEqual(c.tags, { written: 5, skipped: 0 }, 'three artifact tags, amd64-1877.3, arm64-1877.3 in the sub-repository');
    assert.deepEqual(c.aliases.names, ['arm64-latest', 'arm64-1877', 'latest', '1877'].map((t) => `${SUB}:${t}`).concat(['amd64-latest', 'amd64-1877', 'latest', '1877']));
    assert.equal(c.left, undefined);
    assert.equal(first.blobsSkipped, 0);
    assert.ok(first.blobsUploaded > 10 && first.bytesUploaded > 0);
    for (const r of [repo, `${repo}/${SUB}`]) {
      const tags = await tagDigests(source, r);
      assert.ok(Object.keys(tags).length >= 7, r);
      assert.deepEqual(await tagDigests(dest, r), tags, `${r}: every tag, with the digest it has at the source`);
    }
  });

  it('verify passes at the destination with the public key (both signature checks, every blob and tag)', async () => {
    assertVerified(await verifyAt(`http://${dest.host}/${repo}`, release));
  });

  it('skopeo finds the container image by <repo>:<version> at the destination, with the digest it has at the source', async () => {
    const index = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${dest.host}/${repo}:${VERSION}`]);
    assert.equal(sha256(index), first.copy?.repositories[0]?.index);
    const out = join(clients.dir, 'pulled');
    await clients.skopeo(['copy', '--quiet', '--src-tls-verify=false', '--override-arch', 'amd64', `docker://${dest.host}/${repo}:${VERSION}`, `oci:${out}:image`]);
    const pulled = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    assert.equal(pulled.manifests[0]?.digest, release.builds[0]?.image?.manifestDigest);
  });

  it('a second copy writes nothing, and says so', async () => {
    const lines: string[] = [];
    const again = await copy({ to: `http://${dest.host}/${repo}`, aliases: true }, lines);
    assert.equal(again.outcome, 'unchanged', again.error);
    assert.deepEqual([again.blobsUploaded, again.bytesUploaded, again.blobsSkipped], [0, 0, first.blobsUploaded]);
    const c = again.copy;
    assert.deepEqual([c?.manifests.written, c?.signatures.written, c?.indexes.written, c?.tags.written, c?.aliases.written], [0, 0, 0, 0, 0]);
    assert.ok(lines.some((l) => (JSON.parse(l) as { msg: string }).msg === `${VERSION} is complete at ${dest.host}/${repo} already: nothing was written`));
  });

  it('a copy the destination stops half-way leaves no index there, and the next copy goes on where it stopped', async () => {
    const to = `http://${proxy.host}/copy-stopped/gl`;
    proxy.rules.push({
      kind: 'upload-post',
      skip: 3,
      times: Infinity,
      fault: { type: 'status', status: 403, body: '{"errors":[{"code":"DENIED","message":"quota exceeded"}]}' },
    });
    const stopped = await copy({ to });
    assert.equal(stopped.outcome, 'failed');
    assert.equal(stopped.errorCode, 'DENIED');
    assert.equal(stopped.blobsUploaded, 3, 'three blobs went in before the destination refused');
    assert.deepEqual(await tagDigests(dest, 'copy-stopped/gl'), {}, 'no manifest is tagged: the blobs come first');
    assert.deepEqual(await tagDigests(dest, `copy-stopped/gl/${SUB}`), {});

    proxy.rules.length = 0;
    const resumed = await copy({ to });
    assert.equal(resumed.outcome, 'published', resumed.error);
    assert.equal(resumed.blobsSkipped, 3, 'what the stopped copy put there is not copied again');
    assert.equal(resumed.blobsUploaded, first.blobsUploaded - 3);
    const atSource = await tagDigests(source, repo);
    const copied = await tagDigests(dest, 'copy-stopped/gl');
    // Without --aliases: every tag but the aliases.
    assert.deepEqual(copied, Object.fromEntries(Object.entries(atSource).filter(([t]) => !/^(?:(?:amd64|arm64)-)?(?:latest|1877)$/.test(t))));
    assertVerified(await verifyAt(`http://${dest.host}/copy-stopped/gl`, release));
  });

  it('a version the source does not have fails the copy with a message saying so; nothing is written', async () => {
    const missing = await copy({ version: '1877.9', to: `http://${dest.host}/nothing/gl` });
    assert.equal(missing.outcome, 'failed');
    assert.equal(missing.errorKind, 'input');
    assert.match(missing.error ?? '', new RegExp(`^${source.host}/${repo}:1877\\.9 does not exist: there is no version 1877\\.9 to copy; nothing was copied$`));
    assert.deepEqual(await tagDigests(dest, 'nothing/gl'), {});
  });
});
