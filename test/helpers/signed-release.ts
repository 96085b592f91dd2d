/**
 * A signed release in a real registry, for the tests of `copy`: three lean builds of one version published through
 * the handler from a local directory (a container image in the main repository, one in a container sub-repository,
 * a PXE build), every artifact manifest and container image signed with a file key, and the release aliases set.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHandler } from '../../functions/publish/handler';
import { sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { firstJob } from './jobs';

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
