/**
 * Rotating the signing key, against one real docker-registry: a publication with the new key appends its
 * signature after the old one and never reorders (so gardenlinux-update, which reads only layer 0, refuses the
 * new key); the sign-first action puts the new key's signature first and keeps the old one after it; a second run
 * writes nothing; verify says which key signs layer 0, before and after. The signatures are checked with the
 * consumers' own rules (test/helpers/cosign-rules.ts) and read by skopeo.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { VerifyReport } from '../../functions/orchestration/verify-release';
import type { FirstSignatureResult } from '../../functions/orchestration/sign-manifest';
import { createHandler } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';
import { buildProgram } from '../../functions/publish/cli';
import { formatReport } from '../../functions/publish/verify-table';
import { signFirst as signFirstOf } from '../../functions/orchestration/sign-first';
import { fileSigner, keyFingerprint } from '../../functions/signing/signer';
import { registryTargets } from '../../functions/target/registry-target';
import type { Target } from '../../functions/target/target';
import { Logger } from '../../functions/util/log';
import { sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { cosignAccepts, registryReader, updaterAccepts } from '../helpers/cosign-rules';
import { sha256 } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { overriding } from '../helpers/targets';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const exec = promisify(execFile);
const REPO = 'gl';
const IMAGES = `${REPO}/container-images`;
const LOCAL = 'local-directory';
const SIG = 'dev.cosignproject.cosign/signature';

interface Layer {
  mediaType: string;
  size: number;
  digest: string;
  annotations: Record<string, string>;
}
interface Line {
  level: string;
  msg: string;
  [k: string]: unknown;
}

describe('rotating the signing key: sign-first puts the new key first', () => {
  let registry: TestRegistry;
  let clients: ClientSandbox;
  let dir: string;
  const keys: Record<'old' | 'new', { file: string; pub: string; publicKey: KeyObject }> = {} as never;
  const v3 = [sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'c0ffee01' }), sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'amd64', commit: 'c0ffee02' })];
  const signedOld = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', version: '1877.4', commit: 'c0ffee03' });
  const unsigned = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', version: '1877.4', commit: 'c0ffee04' });
  /** what each build of 1877.3 published: its artifact manifest (in gl) and its container image (in gl/container-images) */
  const signedManifests: Array<{ repo: string; digest: string; subject: string }> = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-rotate-'));
    for (const name of ['old', 'new'] as const) {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const file = join(dir, `${name}.key`);
      const pub = join(dir, `${name}.pub`);
      await writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
      await writeFile(pub, publicKey.export({ type: 'spki', format: 'pem' }));
      keys[name] = { file, pub, publicKey };
    }
    for (const b of [...v3, signedOld, unsigned]) await writeBuildDir(join(dir, 'bucket'), b);
    [registry, clients] = await Promise.all([startRegistry(), clientSandbox()]);
  });
  after(async () => {
    await Promise.all([registry?.stop(), clients?.cleanup()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (key: 'old' | 'new' | undefined, extra: Record<string, string> = {}): Record<string, string> => ({
    REGISTRY: `http://${registry.host}/${REPO}`,
    SOURCE_DIR: join(dir, 'bucket'),
    CONTAINER_REPOSITORIES: '{"container":"container-images"}',
    // (The configuration refuses SIGN_CONTAINER_IMAGES without a SIGNING_KEY.)
    ...(key ? { SIGNING_KEY: `file:${keys[key].file}`, SIGN_CONTAINER_IMAGES: 'true' } : {}),
    ...extra,
  });
  const run = (key: 'old' | 'new' | undefined, event: unknown, lines: string[] = [], extra: Record<string, string> = {}): Promise<JobSummary> =>
    firstJob(createHandler({ env: env(key, extra), logSink: (l) => lines.push(l) })(event));
  const publish = (key: 'old' | 'new' | undefined, b: SampleBuild, lines?: string[]) => run(key, { action: 'publish', bucket: LOCAL, base: b.base }, lines);
  const signFirst = (key: 'old' | 'new' | undefined, version: string, lines?: string[]) => run(key, { action: 'sign-first', version }, lines);
  const verify = async (extra: Record<string, string>, key?: 'old' | 'new'): Promise<VerifyReport> => {
    const j = await run(key, { action: 'verify', bucket: LOCAL, version: '1877.3' }, [], extra);
    assert.ok(j.verify, j.error);
    return j.verify;
  };

  async function sig(repo: string, digest: string): Promise<{ digest: string; config: string; layers: Layer[] }> {
    const bytes = await registryReader(registry.url, repo).getManifest(`${digest.replace(':', '-')}.sig`);
    assert.ok(bytes, `no signature for ${digest} in ${repo}`);
    const m = JSON.parse(bytes.toString('utf8')) as { config: { digest: string }; layers: Layer[] };
    return { digest: sha256(bytes), config: m.config.digest, layers: m.layers };
  }
  async function rules(repo: string, digest: string, key: 'old' | 'new'): Promise<{ cosign: boolean; updater: boolean }> {
    const r = registryReader(registry.url, repo);
    return { cosign: await cosignAccepts(r.getManifest, r.getBlob, digest, keys[key].publicKey), updater: await updaterAccepts(r.getManifest, r.getBlob, digest, keys[key].publicKey) };
  }
  /** every tag of both repositories and the digest it names: what an action that writes nothing leaves as it was */
  async function tags(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const repo of [REPO, IMAGES]) {
      const res = await fetch(`${registry.url}/v2/${repo}/tags/list`);
      for (const t of ((await res.json()) as { tags: string[] }).tags.sort()) {
        out[`${repo}:${t}`] = sha256((await registryReader(registry.url, repo).getManifest(t)) as Buffer);
      }
    }
    return out;
  }
  const logged = (lines: string[]) => lines.map((l) => JSON.parse(l) as Line);

  let oldLayers: Map<string, Layer>;
  let newLayers: Map<string, Layer>;

  it('publishing again with the new key appends its signature after the old one, and a publication never reorders', async () => {
    for (const b of v3) {
      const j = await publish('old', b);
      assert.equal(j.outcome, 'published', j.error);
      signedManifests.push({ repo: REPO, digest: j.manifest?.digest as string, subject: b.base });
      if (j.container) signedManifests.push({ repo: IMAGES, digest: j.container.digest, subject: 'amd64 image' });
    }
    assert.equal(signedManifests.length, 3, 'two artifact manifests and one container image');
    oldLayers = new Map();
    for (const m of signedManifests) {
      const s = await sig(m.repo, m.digest);
      assert.equal(s.layers.length, 1);
      oldLayers.set(m.digest, s.layers[0] as Layer);
    }

    const lines: string[] = [];
    for (const b of v3) {
      const j = await publish('new', b, lines);
      assert.equal(j.outcome, 'published', j.error);
      assert.deepEqual(j.signatures?.map((s) => [s.written, s.layers]), j.container ? [[true, 2], [true, 2]] : [[true, 2]]);
    }
    newLayers = new Map();
    for (const m of signedManifests) {
      const s = await sig(m.repo, m.digest);
      assert.equal(s.layers.length, 2, m.subject);
      assert.deepEqual(s.layers[0], oldLayers.get(m.digest), `${m.subject}: the old key's layer stays first, unchanged`);
      newLayers.set(m.digest, s.layers[1] as Layer);
      // gardenlinux-update trusting only the new key refuses the manifest; cosign finds the new key's layer.
      assert.deepEqual(await rules(m.repo, m.digest, 'new'), { cosign: true, updater: false }, m.subject);
      assert.deepEqual(await rules(m.repo, m.digest, 'old'), { cosign: true, updater: true }, m.subject);
    }
    const errors = logged(lines).filter((l) => l.level === 'error' && /first signature layer is not a valid signature of the configured key/.test(l.msg));
    assert.equal(errors.length, 3, 'one error per signature image');
    assert.match(String(errors[0]?.fix), /sign-first/);

    // Publishing again with the new key writes nothing and leaves the order alone (the old key: see below).
    const before = await tags();
    for (const b of v3) {
      const j = await publish('new', b);
      assert.equal(j.outcome, 'unchanged', j.error);
      assert.ok(j.signatures?.every((s) => !s.written && s.layers === 2));
    }
    assert.deepEqual(await tags(), before);
  });

  it("verify says that another key signs layer 0, and what puts the new key's first", async () => {
    const r = await verify({}, 'new');
    assert.equal(r.ok, false);
    assert.equal(r.key, keyFingerprint(keys.new.publicKey));
    const layer0 = r.repositories.flatMap((x) => (x.firstLayers ?? []).map((f) => [x.repository.replace(`${registry.host}/`, ''), f.subject, f.signer, f.layers, f.key]));
    assert.deepEqual(layer0, [
      [REPO, v3[1]?.base, 'another-key', 2, undefined],
      [REPO, v3[0]?.base, 'another-key', 2, undefined],
      [IMAGES, 'amd64 image sha256:' + signedManifests[1]?.digest.slice(7, 19) + '…', 'another-key', 2, undefined],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0])) || String(a[1]).localeCompare(String(b[1]))));
    const sigProblems = r.problems.filter((p) => p.check === 'signature');
    assert.equal(sigProblems.length, 3);
    for (const p of sigProblems) {
      assert.match(p.message, new RegExp(`gardenlinux-update refuses it: first layer: the signature does not verify with the key ${r.key}: another key signs layer 0; layer 1 holds this key's signature: sign-first 1877\\.3 puts it first`));
    }
    const table = formatReport(r);
    assert.match(table, new RegExp(`^Layer 0 of each signature \\(the only layer gardenlinux-update reads\\), against the key ${r.key}:$`, 'm'));
    assert.match(table, new RegExp(`^  ${registry.host}/${REPO}: 2 another key$`, 'm'));

    // Against the old key (only its public half: the artifact manifests), layer 0 is that key's: nothing wrong for
    // updaters that trust it.
    const old = await verify({ VERIFY_PUBLIC_KEY: keys.old.pub });
    assert.equal(old.ok, true, JSON.stringify(old.problems));
    assert.equal(old.key, keyFingerprint(keys.old.publicKey));
    const oldLayer0 = old.repositories.flatMap((x) => x.firstLayers ?? []);
    assert.equal(oldLayer0.length, 2);
    assert.ok(oldLayer0.every((f) => f.signer === 'this-key' && f.key === old.key));
    assert.match(formatReport(old), new RegExp(`^  ${registry.host}/${REPO}: 2 this key$`, 'm'));
  });

  let afterMove: Record<string, string>;
  it("sign-first with the new key puts its signature first and keeps the old key's second; both rules pass", async () => {
    const lines: string[] = [];
    const j = await signFirst('new', '1877.3', lines);
    assert.equal(j.outcome, 'published', j.error);
    const results = j.signatures as FirstSignatureResult[];
    // In the order of the indexes: the main repository's, then the sub-repository's.
    assert.deepEqual(results.map((s) => s.repository.replace(`${registry.host}/`, '')), [REPO, REPO, IMAGES]);
    const key = (x: { repo: string; digest: string }) => `${x.repo} ${x.digest}`;
    assert.deepEqual(
      results.map((s) => [key({ repo: s.repository.replace(`${registry.host}/`, ''), digest: s.signed }), s.subject, s.action, s.from, s.layers, s.written]).sort(),
      signedManifests.map((m) => [key(m), m.subject, 'moved', 1, 2, true]).sort(),
    );
    assert.equal(j.bytesUploaded, 0, 'the config lists the same payload twice: it is the same blob');
    for (const m of signedManifests) {
      const s = await sig(m.repo, m.digest);
      assert.deepEqual(s.layers, [newLayers.get(m.digest), oldLayers.get(m.digest)], `${m.subject}: new key first, the old one kept second`);
      assert.deepEqual(await rules(m.repo, m.digest, 'new'), { cosign: true, updater: true }, m.subject);
      assert.deepEqual(await rules(m.repo, m.digest, 'old'), { cosign: true, updater: false }, m.subject);
      // The config lists the diff_ids in layer order, in cosign's form.
      const config = JSON.parse(((await registryReader(registry.url, m.repo).getBlob(s.config)) as Buffer).toString('utf8')) as { rootfs: { diff_ids: string[] }; history: unknown[] };
      assert.deepEqual(config.rootfs.diff_ids, s.layers.map((l) => l.digest));
      assert.equal(config.history.length, 2);
      // skopeo reads the .sig as the image manifest it is.
      const raw = await clients.skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/${m.repo}:${m.digest.replace(':', '-')}.sig`]);
      const parsed = JSON.parse(raw) as { mediaType: string; layers: Layer[] };
      assert.equal(parsed.mediaType, 'application/vnd.oci.image.manifest.v1+json');
      assert.equal(parsed.layers[0]?.annotations[SIG], newLayers.get(m.digest)?.annotations[SIG]);
    }
    const moved = logged(lines).filter((l) => l.msg === 'signature put first');
    assert.equal(moved.length, 3);
    assert.ok(logged(lines).some((l) => l.msg === 'signatures of 1877.3 put first' && l.moved === 3 && l.keyFingerprint === keyFingerprint(keys.new.publicKey)));
    afterMove = await tags();
  });

  it('a second run writes nothing', async () => {
    const j = await signFirst('new', '1877.3');
    assert.equal(j.outcome, 'unchanged', j.error);
    assert.deepEqual((j.signatures as FirstSignatureResult[]).map((s) => [s.action, s.written, s.from]), [
      ['already-first', false, 0],
      ['already-first', false, 0],
      ['already-first', false, 0],
    ]);
    assert.equal(j.bytesUploaded, 0);
    assert.equal(j.blobsUploaded, 0);
    assert.deepEqual(await tags(), afterMove);

    // The same through the orchestration itself, on targets that count every write: none, and no signing.
    const writes: string[] = [];
    const counting = (t: Target): Target =>
      overriding(t, {
        pushBlob: (b) => (writes.push(`blob ${b.what}`), t.pushBlob(b)),
        putManifest: (bytes, type, ref) => (writes.push(`manifest ${ref}`), t.putManifest(bytes, type, ref)),
      });
    const logger = new Logger({ sink: () => undefined });
    const set = registryTargets({ scheme: 'http', host: registry.host, repository: REPO, logger });
    const signer = await fileSigner(keys.new.file);
    let signs = 0;
    const counted = { ...signer, publicKey: signer.publicKey, description: signer.description, signSha256Digest: (d: Buffer) => (signs++, signer.signSha256Digest(d)) };
    const counters = { bytesUploaded: 0, bytesRead: 0, blobsUploaded: 0, blobsSkipped: 0 };
    const direct = await signFirstOf({ targets: [counting(set.main), counting(set.repository('container-images'))], version: '1877.3', signer: counted, signContainerImages: true, logger, counters });
    assert.deepEqual(direct.map((r) => r.action), ['already-first', 'already-first', 'already-first']);
    assert.deepEqual(writes, []);
    assert.equal(signs, 0);
  });

  it('verify then says the new key signs layer 0 of every signature', async () => {
    const r = await verify({}, 'new');
    assert.equal(r.ok, true, JSON.stringify(r.problems));
    assert.equal(r.repositories.flatMap((x) => x.firstLayers ?? []).length, 3);
    assert.ok(r.repositories.every((x) => x.firstLayers?.every((f) => f.signer === 'this-key' && f.key === keyFingerprint(keys.new.publicKey) && f.layers === 2)));
    assert.match(formatReport(r), new RegExp(`^  ${registry.host}/${IMAGES}: 1 this key$`, 'm'));
    // And a publication with the old key still leaves the order alone.
    for (const b of v3) assert.ok((await publish('old', b)).signatures?.every((s) => !s.written));
    assert.deepEqual(await tags(), afterMove);
  });

  it('signs where the key has no signature: appended and put first in one write, or alone when there was none', async () => {
    const a = await publish('old', signedOld);
    const b = await publish(undefined, unsigned);
    assert.equal(a.outcome, 'published', a.error);
    assert.equal(b.outcome, 'published', b.error);
    const oldLayer = (await sig(REPO, a.manifest?.digest as string)).layers[0];
    const j = await signFirst('new', '1877.4');
    assert.equal(j.outcome, 'published', j.error);
    const byDigest = new Map((j.signatures as FirstSignatureResult[]).map((s) => [s.signed, s]));
    const sa = byDigest.get(a.manifest?.digest as string);
    const sb = byDigest.get(b.manifest?.digest as string);
    assert.deepEqual([sa?.action, sa?.layers, sa?.from], ['signed-and-moved', 2, undefined]);
    assert.deepEqual([sb?.action, sb?.layers], ['signed', 1]);
    assert.deepEqual(await rules(REPO, a.manifest?.digest as string, 'new'), { cosign: true, updater: true });
    assert.deepEqual(await rules(REPO, a.manifest?.digest as string, 'old'), { cosign: true, updater: false });
    assert.deepEqual(await rules(REPO, b.manifest?.digest as string, 'new'), { cosign: true, updater: true });
    const s = await sig(REPO, a.manifest?.digest as string);
    assert.equal(s.layers.length, 2);
    assert.deepEqual(s.layers[1], oldLayer, "the old key's layer kept, second");
  });

  it('refuses without a signing key, and touches nothing; a version that is not there is an input error', async () => {
    const before = await tags();
    const lines: string[] = [];
    const j = await signFirst(undefined, '1877.3', lines);
    assert.equal(j.outcome, 'failed');
    assert.equal(j.errorKind, 'input');
    assert.match(j.error ?? '', /^sign-first needs the signing key whose signature goes first: set SIGNING_KEY .*nothing was read or written$/);
    const missing = await signFirst('new', '1999.1');
    assert.equal(missing.errorKind, 'input');
    assert.match(missing.error ?? '', /gl:1999\.1 does not exist; nothing was signed/);
    assert.deepEqual(await tags(), before);

    // The CLI: without a key, refused before anything is read (a usage error: main() exits 2 on it) ...
    const argv = ['node', 'gl-oci-publish', '-r', `http://${registry.host}/${REPO}`, 'sign-first', '1877.3'];
    const saved = process.env.SIGNING_KEY;
    delete process.env.SIGNING_KEY;
    try {
      await assert.rejects(buildProgram().parseAsync(argv), /sign-first needs the key whose signature goes first: --signing-key/);
    } finally {
      if (saved !== undefined) process.env.SIGNING_KEY = saved;
    }
    // ... with it, the job summary as JSON.
    const cli = (args: string[]) =>
      exec(process.execPath, ['bin/gl-oci-publish.mjs', '-r', `http://${registry.host}/${REPO}`, '--sign-container-images', '--container-repositories', '{"container":"container-images"}', ...args], {
        env: { ...process.env, REGISTRY: '', SIGNING_KEY: '' },
        timeout: 60_000,
      }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
      );
    const ok = await cli(['-k', `file:${keys.new.file}`, 'sign-first', '1877.3']);
    assert.equal(ok.code, 0, ok.stderr);
    const job = (JSON.parse(ok.stdout) as { jobs: JobSummary[] }).jobs[0];
    assert.equal(job?.outcome, 'unchanged');
    assert.deepEqual((job?.signatures as FirstSignatureResult[]).map((s) => s.action), ['already-first', 'already-first', 'already-first']);
    assert.deepEqual(await tags(), before);
  });
});
