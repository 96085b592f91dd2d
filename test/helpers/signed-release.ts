/**
 * A signed release in a real registry, for the tests of `copy`: three lean builds of one version published through
 * the handler from a local directory (a container image in the main repository, one in a container sub-repository,
 * a PXE build), every artifact manifest and container image signed with a file key, and the release aliases set.
 */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { verifyRelease, type VerifyReport } from '../../functions/orchestration/verify-release';
import { loadConfig } from '../../functions/publish/config';
import { createHandler } from '../../functions/publish/handler';
import { createTargetSet } from '../../functions/publish/runtime';
import { DirectoryStore } from '../../functions/storage/directory-store';
import { StateStore } from '../../functions/storage/state-store';
import { Logger } from '../../functions/util/log';
import { sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { firstJob } from './jobs';
import type { TestRegistry } from './registry';

export const VERSION = '1877.3';
export const SUB = 'container-python-dev';
export const CONTAINER_REPOSITORIES = JSON.stringify({ 'container-pythonDev': SUB });
export const ALIAS_TAGS = 'latest,{major}';

export interface SignedRelease {
  /** a temporary folder: the builds, the keys; remove() removes it */
  dir: string;
  builds: SampleBuild[];
  keyFile: string;
  publicKeyFile: string;
  publicKey: KeyObject;
  /** the configuration every test run shares (the sub-repository map, the aliases) */
  env: Record<string, string>;
  /** an empty folder standing in for the records at a destination (none are copied) */
  emptyRecords: string;
  remove(): Promise<void>;
}

export async function publishSignedRelease(registry: string): Promise<SignedRelease> {
  const dir = await mkdtemp(join(tmpdir(), 'gl-copy-'));
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(dir, 'sign.key');
  const publicKeyFile = join(dir, 'sign.pub');
  await writeFile(keyFile, key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(publicKeyFile, key.publicKey.export({ type: 'spki', format: 'pem' }));
  const builds = [
    sampleBuild({ flavor: 'container', arch: 'amd64', lean: true, imageSize: 4096 }),
    sampleBuild({ flavor: 'container-pythonDev', arch: 'arm64', lean: true, imageSize: 4096 }),
    sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true, lean: true, imageSize: 4096 }),
  ];
  const bucket = join(dir, 'bucket');
  for (const b of builds) await writeBuildDir(bucket, b);
  const emptyRecords = join(dir, 'no-records');
  await mkdir(emptyRecords);
  const env = { CONTAINER_REPOSITORIES, ALIAS_TAGS, LOG_LEVEL: 'warn' };
  const handler = createHandler({
    env: { ...env, REGISTRY: registry, SOURCE_DIR: bucket, SIGNING_KEY: `file:${keyFile}`, SIGN_CONTAINER_IMAGES: 'true' },
    logSink: () => undefined,
  });
  for (const b of builds) {
    const job = await firstJob(handler({ action: 'publish', bucket: 'local-directory', base: b.base }));
    if (job.outcome !== 'published') throw new Error(`${b.base}: ${job.error ?? job.outcome}`);
  }
  return {
    dir,
    builds,
    keyFile,
    publicKeyFile,
    publicKey: createPublicKey(key.publicKey.export({ type: 'spki', format: 'pem' })),
    env,
    emptyRecords,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';

/** Every tag of a repository with the digest it names. */
export async function tagDigests(registry: TestRegistry, repo: string): Promise<Record<string, string>> {
  const res = await request(`${registry.url}/v2/${repo}/tags/list`);
  if (res.statusCode === 404) {
    await res.body.dump();
    return {};
  }
  const tags = (((await res.body.json()) as { tags: string[] | null }).tags ?? []).sort();
  const out: Record<string, string> = {};
  for (const t of tags) {
    const head = await request(`${registry.url}/v2/${repo}/manifests/${t}`, { method: 'HEAD', headers: { accept: ACCEPT } });
    await head.body.dump();
    out[t] = String(head.headers['docker-content-digest']);
  }
  return out;
}

/** verify at a destination, with the public key, every signature checked (container images too); no records there. */
export async function verifyAt(location: string, release: SignedRelease): Promise<VerifyReport> {
  const config = loadConfig({ REGISTRY: location, ...release.env });
  const targets = createTargetSet(config.target, config, new Logger({ sink: () => undefined }));
  return verifyRelease({
    state: new StateStore(new DirectoryStore(release.emptyRecords), 'oci-publisher/'),
    targets: [targets.main, targets.repository(SUB)],
    version: VERSION,
    templates: [],
    publicKey: release.publicKey,
    signContainerImages: true,
  });
}

/** A report that passes: no error; one warning per repository with entries: a copy has no records. */
export function assertVerified(r: VerifyReport): void {
  assert.deepEqual(r.problems.filter((p) => p.severity === 'error'), []);
  assert.equal(r.ok, true);
  assert.ok(r.problems.every((p) => p.check === 'record' && /^no publisher records for this version here/.test(p.message)), JSON.stringify(r.problems));
  assert.equal(r.problems.length, 1, 'said once, in the main repository (the sub-repository has no Garden Linux entries)');
  const [main, sub] = r.repositories;
  assert.deepEqual([main?.entries, main?.signatures, main?.tags], [4, 4, 4], 'three artifact manifests and the amd64 image, each signed and tagged');
  assert.deepEqual([sub?.entries, sub?.signatures, sub?.tags], [1, 1, 1], 'the arm64 image of the sub-repository');
  assert.ok((main?.blobs ?? 0) > 0 && (sub?.blobs ?? 0) > 0);
}
