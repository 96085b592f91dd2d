/** Builds the I/O a job needs from the configuration: stores for buckets, and the targets. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ecrCredentials, ecrRegistry, lazyClient, secretCredentials, staticCredentials, type CredentialSource } from '../registry/credentials';
import type { KeyObject } from 'node:crypto';
import { openSigner, readPublicKey, type Signer } from '../signing/signer';
import { DirectoryStore } from '../storage/directory-store';
import type { ObjectStore } from '../storage/object-store';
import { S3Store, s3Client } from '../storage/s3-store';
import { layoutTargets } from '../target/oci-layout-target';
import { registryTargets } from '../target/registry-target';
import type { TargetSet } from '../target/target';
import type { TransferObserver } from '../orchestration/context';
import { displayLocation, type CopyLocation, type TargetLocation } from '../registry/location';
import { InputError } from '../util/errors';
import type { Clock } from '../util/clock';
import type { Logger } from '../util/log';
import type { Config } from './config';

export interface Runtime {
  config: Config;
  /** the store for a bucket the event names (or the local directory standing in for every bucket) */
  storeFor(bucket: string): ObjectStore;
  /** where jobs write: the first (or only) destination of REGISTRY */
  targets: TargetSet;
  /** the other destinations of REGISTRY, when it names several */
  moreTargets?: TargetSet[];
  /** the signing key, opened once per cold start (openSigning) */
  signer?: Signer;
  /** the key `verify` checks signatures against: VERIFY_PUBLIC_KEY, else the signing key's */
  verifyKey?: KeyObject;
  /** the clock and random source of the rounds of convergence and aliases: the system's unless a simulation sets them */
  clock?: Clock;
  random?: () => number;
  /** uploads as they go (the CLI's progress display) */
  progress?: TransferObserver;
}

/**
 * Where the credentials of a registry host come from: its own secret (REGISTRY_CREDENTIALS_SECRET as a map of host to
 * secret), else the one secret, else the environment, else for an ECR registry the function role
 * (ecr:GetAuthorizationToken), else none. With several registry hosts the one secret must be keyed by host, and an
 * ECR host uses the role: no host is ever sent another host's credentials.
 */
export function credentialSource(config: Config, host: string): CredentialSource {
  const hosts = new Set(config.targets.flatMap((t) => (t.kind === 'registry' ? [t.host] : [])));
  const ecr = ecrRegistry(host);
  const secret = config.credentialsSecrets?.[host] ?? (hosts.size > 1 && ecr ? undefined : config.credentialsSecret);
  if (secret) {
    // An ARN names its region; a plain name is looked up in the function's region.
    const region = /^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):/.exec(secret)?.[1] ?? config.s3.region;
    const shared = config.credentialsSecrets === undefined && hosts.size > 1;
    const client = lazyClient(async () => {
      const { SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
      return new SecretsManagerClient({ ...(region ? { region } : {}), ...(config.secretsEndpoint ? { endpoint: config.secretsEndpoint } : {}) });
    });
    return secretCredentials(client, secret, { ...(shared ? { host } : {}) });
  }
  if (config.credentials) return staticCredentials(config.credentials);
  if (ecr) return ecrCredentials(ecrClient(ecr.region), ecr.accountId);
  return staticCredentials(undefined);
}

function ecrClient(region: string) {
  return lazyClient(async () => new (await import('@aws-sdk/client-ecr')).ECRClient({ region }));
}

/**
 * The targets of one configured location: a registry repository (with its credentials, by default those of the
 * configuration) or an OCI layout.
 */
export function createTargetSet(location: TargetLocation, config: Config, logger: Logger, credentials?: CredentialSource): TargetSet {
  return location.kind === 'oci-layout'
    ? layoutTargets(location.dir, logger)
    : registryTargets({
        scheme: location.scheme,
        host: location.host,
        repository: location.repository,
        logger,
        timeoutMs: config.registryTimeoutMs,
        chunkBytes: config.uploadChunkBytes,
        chunkedUploads: config.chunkedUploads,
        maxConsecutiveFailures: config.maxConsecutiveFailures,
        credentials: credentials ?? credentialSource(config, location.host),
      });
}

/** One side of a copy. */
export interface CopyEndpoint {
  targets: TargetSet;
  /** `<host>/<repository>`, `oci-layout:<dir>`, `oci-archive:<file>` */
  display: string;
  /** an archive destination packs what the copy staged into its file; true when it wrote the file */
  finish?: () => Promise<boolean>;
}

/**
 * The registry credentials of the configuration go to the hosts REGISTRY names only (each its own, see
 * credentialSource): a copy's side on another host is reached without them (an ECR registry with the function
 * role), so that they never reach a registry they are not meant for.
 */
export function copyCredentials(config: Config, host: string): CredentialSource {
  if (config.targets.some((t) => t.kind === 'registry' && t.host === host)) return credentialSource(config, host);
  const ecr = ecrRegistry(host);
  return ecr ? ecrCredentials(ecrClient(ecr.region), ecr.accountId) : staticCredentials(undefined);
}

/**
 * Opens where a copy reads (`source`) or writes (`destination`). A layout or archive that is read is only read
 * (layout-reader.ts), and must exist; an archive that is written is staged beside its file and packed by finish().
 */
export async function openCopyLocation(location: CopyLocation, role: 'source' | 'destination', config: Config, logger: Logger): Promise<CopyEndpoint> {
  const display = displayLocation(location);
  switch (location.kind) {
    case 'registry':
      return { display, targets: createTargetSet(location, config, logger, copyCredentials(config, location.host)) };
    case 'oci-layout':
      if (role === 'destination') return { display, targets: layoutTargets(location.dir, logger) };
      if (!(await stat(join(location.dir, 'oci-layout')).then((s) => s.isFile(), () => false))) {
        throw new InputError(`${display} is not an OCI image layout (it has no oci-layout file); nothing was copied`);
      }
      const { layoutReaders, directoryFiles } = await import('../target/layout-reader');
      return { display, targets: layoutReaders(directoryFiles(location.dir)) };
    case 'oci-archive': {
      // Archives are read and written with tar, loaded here rather than at every cold start (tools/build.ts).
      const { archiveDestination } = await import('../target/oci-archive-target');
      const { layoutReaders, archiveFiles } = await import('../target/layout-reader');
      if (role === 'destination') {
        const archive = archiveDestination(location.file, logger);
        return { display, targets: archive.targets, finish: archive.finish };
      }
      if (!(await stat(location.file).then((s) => s.isFile(), () => false))) throw new InputError(`${display} is not a file; nothing was copied`);
      return { display, targets: layoutReaders(archiveFiles(location.file)) };
    }
  }
}

export function createRuntime(config: Config, logger: Logger): Runtime {
  const [targets, ...moreTargets] = config.targets.map((location) => createTargetSet(location, config, logger)) as [TargetSet, ...TargetSet[]];
  const local = config.sourceDir ? new DirectoryStore(config.sourceDir) : undefined;
  const stores = new Map<string, ObjectStore>();
  return {
    config,
    targets,
    ...(moreTargets.length > 0 ? { moreTargets } : {}),
    storeFor(bucket) {
      if (local) return local;
      let store = stores.get(bucket);
      if (!store) stores.set(bucket, (store = new S3Store(s3Client(config.s3), bucket)));
      return store;
    },
  };
}

/**
 * Opens the signing key of the configuration (one KMS GetPublicKey), so that a key that cannot sign for Garden
 * Linux stops the function before any job; says once whether signatures are written.
 */
export async function openSigning(rt: Runtime, logger: Logger): Promise<Runtime> {
  const { signingKey, signContainerImages, verifyPublicKey } = rt.config;
  if (verifyPublicKey !== undefined) rt = { ...rt, verifyKey: await readPublicKey(verifyPublicKey) };
  if (signingKey === undefined) {
    logger.info('signing is off (no SIGNING_KEY): artifact manifests are published without cosign signatures');
    return rt;
  }
  const signer = await openSigner(signingKey, {
    ...(rt.config.s3.region ? { region: rt.config.s3.region } : {}),
    ...(rt.config.kmsEndpoint ? { endpoint: rt.config.kmsEndpoint } : {}),
  });
  logger.info('signing artifact manifests', {
    key: signer.description,
    keyBits: signer.publicKey.asymmetricKeyDetails?.modulusLength,
    containerImages: signContainerImages,
  });
  return { ...rt, signer, verifyKey: rt.verifyKey ?? signer.publicKey };
}
