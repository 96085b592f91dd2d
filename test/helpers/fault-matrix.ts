/**
 * The fault matrix: every kind of registry request fails once, in every way a registry fails, during a full
 * publication (a container build and a PXE build), within one handler invocation: the publication still
 * completes, with the right index and digests, and S3 objects are read again only as far as the failure made
 * necessary. Run twice: with small files (read whole, PUT with their digest), and with files above 4 MiB, which
 * stream (a PATCH and a commit PUT; the container archive's image layer by byte range; the PXE bundle's members
 * through the parser). Each in two halves, blob requests and manifest and token requests, as four test files
 * (test/integration/fault-matrix-*.test.ts) that a runner with several cores runs at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SMALL_FILE } from '../../functions/orchestration/file-transfer';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from './clients';
import { BUCKET, expectedIndex, glTag, parse, sha256 } from './expectations';
import { jobsOf } from './jobs';
import { startFaultProxy, TRANSIENT_FAULTS, type FaultProxy, type RequestKind } from './fault-proxy';
import { PASSWORD, startTokenRegistry, USER, type RegistryStack } from './registry-stack';

/** The request kinds, in two halves that run as separate files (each file's own registry, at once). */
export const BLOB_KINDS: RequestKind[] = ['blob-head', 'upload-post', 'upload-patch', 'upload-put'];
export const MANIFEST_KINDS: RequestKind[] = ['manifest-get', 'manifest-put', 'token'];
const FAULTS = TRANSIENT_FAULTS;

/** The matrix for builds whose main file is `imageSize` bytes, for some request kinds. */
export function faultMatrix(label: string, imageSize: number, kinds: readonly RequestKind[]): void {
  describe(`fault matrix, ${label}: ${kinds.join(', ')} x ${FAULTS.length} faults`, { concurrency: 4 }, () => {
    let stack: RegistryStack;
    let s3: LocalS3;
    let clients: ClientSandbox;
    const proxies: FaultProxy[] = [];
    const commit = imageSize > SMALL_FILE ? '1a26e000' : '75df9f40';
    // Lean builds: the .release and the image (archive or PXE bundle), whose transfers make every kind of request;
    // the logs and test results would only add requests of the kinds these already make.
    const builds = [
      sampleBuild({ flavor: 'container', arch: 'amd64', imageSize, commit, lean: true }),
      sampleBuild({ flavor: 'metal_pxe', arch: 'arm64', pxe: true, imageSize, commit, lean: true }),
    ];
    const totalBytes = builds.flatMap((b) => b.files).reduce((n, f) => n + f.data.length, 0);
    const largestFile = Math.max(...builds.flatMap((b) => b.files).map((f) => f.data.length));

    before(async () => {
      [stack, s3, clients] = await Promise.all([startTokenRegistry(), startLocalS3([BUCKET]), clientSandbox()]);
      for (const b of builds) await uploadBuild(s3.client, BUCKET, b);
    });
    after(async () => {
      await Promise.all(proxies.map((p) => p.close()));
      await Promise.all([stack?.stop(), s3?.close(), clients?.cleanup()]);
    });

    let n = 0;
    for (const kind of kinds) {
      for (const [name, fault] of FAULTS) {
        const id = ++n;
        it(`${kind}: ${name}`, async () => {
          const proxy = await startFaultProxy();
          proxies.push(proxy);
          proxy.setUpstream(stack.registry.url, stack.tokens.realm.replace(/\/token$/, ''));
          proxy.rules.push({ kind, fault, times: 1 });
          const repo = `faults/${commit}/${kind}/case${id}`;
          const env = {
            ...s3.env,
            REGISTRY: `http://${proxy.host}/${repo}`,
            REGISTRY_USERNAME: USER,
            REGISTRY_PASSWORD: PASSWORD,
            // Long enough that a busy CI machine does not add a second fault (a slow answer) to the one injected.
            REGISTRY_TIMEOUT_SECONDS: '3',
            // Each case starts with no digests remembered, so every case reads and uploads everything.
            STATE_PREFIX: `oci-publisher/${commit}/${kind}/case${id}/`,
          };
          const publish = (b: (typeof builds)[number]) => jobsOf(createHandler({ env, logSink: () => undefined })(s3Event(BUCKET, `meta/singles/${b.base}`)));
          const jobs: JobSummary[] = (await Promise.all(builds.map(publish))).flat();
          assert.deepEqual(jobs.map((j) => j.outcome), ['published', 'published'], JSON.stringify(jobs.filter((j) => j.outcome !== 'published')));
          assert.ok(proxy.log.some((e) => e.kind === kind && e.faulted), `the ${kind} fault was injected`);

          // Every file once, the one whose upload failed once more at most, and the ranged reads that locate the
          // container archive's members (a few small windows).
          const read = jobs.reduce((s, j) => s + j.bytesRead, 0);
          assert.ok(read <= totalBytes + largestFile + 64 * 1024, `read ${read} bytes from S3 for ${totalBytes} bytes of files`);

          // The result, checked straight at the registry (not through the proxy).
          const creds = ['--creds', `${USER}:${PASSWORD}`, '--tls-verify=false'];
          const gl = new Map<string, { digest: string; size: number }>();
          for (const b of builds) {
            const raw = await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${repo}:${glTag(b)}`]);
            gl.set(b.base, { digest: sha256(raw), size: Buffer.byteLength(raw) });
          }
          const index = parse(await clients.skopeo(['inspect', '--raw', ...creds, `docker://${stack.registry.host}/${repo}:1877.3`]));
          // And the image pulled by a real client, byte for byte: every blob it names is there.
          await clients.skopeo(['copy', '--src-creds', `${USER}:${PASSWORD}`, '--src-tls-verify=false', `docker://${stack.registry.host}/${repo}:amd64-1877.3`, `oci:${clients.dir}/${commit}-${kind}-case${id}:x`]);
          assert.deepEqual(index, expectedIndex(builds, gl));
          await proxy.close();
        });
      }
    }
  });
}
