/**
 * Where registry credentials come from: the environment (REGISTRY_USERNAME/PASSWORD, local use), a Secrets
 * Manager secret (REGISTRY_CREDENTIALS_SECRET, the deployment), or for ECR registries the function role through
 * ecr:GetAuthorizationToken. Fetched credentials are cached and refreshed before they expire; when the registry
 * refuses them (a rotation happened), they are fetched again once.
 */
import type { ECRClient } from '@aws-sdk/client-ecr';
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import * as z from 'zod';
import { kmsHint } from '../util/kms-hint';
import type { Credentials } from './auth';
import { RegistryError } from './errors';

export interface CredentialSource {
  /** for messages: where the credentials come from (never the credentials) */
  readonly description: string;
  /** whether `invalidate()` can bring different credentials (a rotated secret, a new ECR token) */
  readonly refreshable: boolean;
  get(): Promise<Credentials | undefined>;
  invalidate(): void;
}

export function staticCredentials(credentials: Credentials | undefined): CredentialSource {
  return {
    description: credentials ? 'REGISTRY_USERNAME/REGISTRY_PASSWORD' : 'anonymous',
    refreshable: false,
    get: async () => credentials,
    invalidate: () => undefined,
  };
}

/** Caches what `fetch` returns until `expiresAt` minus a margin; concurrent callers share one fetch. */
function cached(description: string, fetch: () => Promise<{ credentials: Credentials; expiresAt: number }>, now: () => number): CredentialSource {
  let current: { credentials: Credentials; expiresAt: number } | undefined;
  let pending: Promise<{ credentials: Credentials; expiresAt: number }> | undefined;
  return {
    description,
    refreshable: true,
    async get() {
      if (current && current.expiresAt > now()) return current.credentials;
      pending ??= fetch().finally(() => (pending = undefined));
      current = await pending;
      return current.credentials;
    },
    invalidate() {
      current = undefined;
    },
  };
}

/**
 * An AWS SDK call for credentials that failed: retryable when the SDK says so (throttling, a 5xx). A secret
 * encrypted with a customer-managed KMS key the role may not use says what to do.
 */
function awsFailure(what: string, err: unknown): RegistryError {
  const hint = kmsHint(err);
  return new RegistryError(`${what} failed: ${(err as Error).name}: ${(err as Error).message}${hint ? `; ${hint}` : ''}`, {
    code: 'CREDENTIALS',
    retryable: (err as { $retryable?: unknown }).$retryable !== undefined,
    cause: err,
  });
}

/**
 * An AWS client made when it is first needed: its module is loaded then, so a cold start that fetches no credentials
 * (a skipped document, a re-run within the cache's time) does not load it (tools/build.ts).
 */
export type LazyClient<T> = () => Promise<T>;

export function lazyClient<T>(make: () => Promise<T>): LazyClient<T> {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
}

const SecretShape = z.object({ username: z.string().min(1), password: z.string().min(1) });

/** Secret values are re-read this often, so a rotation reaches warm Lambdas without a redeploy. */
const SECRET_TTL_MS = 15 * 60 * 1000;

/**
 * The credentials in a secret: {"username","password"}, or with `host` (the secret serves several registries) the
 * entry of that host in {"<host>": {"username","password"}, …}.
 */
export function secretCredentials(client: LazyClient<SecretsManagerClient>, secretId: string, options: { host?: string; now?: () => number } = {}): CredentialSource {
  const now = options.now ?? Date.now;
  const host = options.host;
  return cached(
    host ? `the secret ${secretId} (${host})` : `the secret ${secretId}`,
    async () => {
      let value: string | undefined;
      try {
        const { GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
        value = (await (await client()).send(new GetSecretValueCommand({ SecretId: secretId }))).SecretString;
      } catch (err) {
        throw awsFailure(`reading the registry credentials from the secret ${secretId}`, err);
      }
      let json: unknown;
      try {
        json = JSON.parse(value ?? '');
      } catch {
        json = undefined;
      }
      if (host !== undefined) {
        // The message says what is wrong with the shape, never what the secret holds.
        const entry = z.record(z.string(), z.unknown()).safeParse(json);
        if (!entry.success) throw new RegistryError(`the secret ${secretId} is not JSON of the form {"<host>": {"username": "…", "password": "…"}, …}`, { code: 'CREDENTIALS' });
        const key = Object.keys(entry.data).find((k) => k.toLowerCase() === host);
        if (key === undefined) {
          const flat = SecretShape.safeParse(json).success;
          throw new RegistryError(
            flat
              ? `the secret ${secretId} holds one username and password, and REGISTRY names several registries: key its credentials by host, {"${host}": {"username": "…", "password": "…"}, …}`
              : `the secret ${secretId} holds no credentials for ${host} (expected {"${host}": {"username": "…", "password": "…"}, …})`,
            { code: 'CREDENTIALS' },
          );
        }
        json = entry.data[key];
      }
      const parsed = SecretShape.safeParse(json);
      // The message says what is wrong with the shape, never what the secret holds.
      if (!parsed.success) {
        throw new RegistryError(`the secret ${secretId} is not JSON of the form ${host ? `{"${host}": {"username": "…", "password": "…"}}` : '{"username": "…", "password": "…"}'}`, { code: 'CREDENTIALS' });
      }
      return { credentials: parsed.data, expiresAt: now() + SECRET_TTL_MS };
    },
    now,
  );
}

const ECR_HOST = /^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/;

/** The account and region of an ECR registry host, or undefined for any other registry. */
export function ecrRegistry(host: string): { accountId: string; region: string } | undefined {
  const m = ECR_HOST.exec(host.replace(/:443$/, ''));
  return m ? { accountId: m[1] as string, region: m[2] as string } : undefined;
}

/** ECR tokens last 12 hours; a new one is fetched when less than this is left. */
const ECR_REFRESH_MARGIN_MS = 60 * 60 * 1000;

export function ecrCredentials(client: LazyClient<ECRClient>, accountId: string, now: () => number = Date.now): CredentialSource {
  return cached(
    `ecr:GetAuthorizationToken for ${accountId}`,
    async () => {
      let data;
      try {
        const { GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr');
        data = (await (await client()).send(new GetAuthorizationTokenCommand({ registryIds: [accountId] }))).authorizationData?.[0];
      } catch (err) {
        throw awsFailure(`ecr:GetAuthorizationToken for ${accountId}`, err);
      }
      const decoded = data?.authorizationToken ? Buffer.from(data.authorizationToken, 'base64').toString('utf8') : '';
      const colon = decoded.indexOf(':');
      if (colon <= 0) throw new RegistryError(`ecr:GetAuthorizationToken for ${accountId} returned no usable token`, { code: 'CREDENTIALS' });
      const expiresAt = (data?.expiresAt?.getTime() ?? now() + 12 * 3600 * 1000) - ECR_REFRESH_MARGIN_MS;
      return { credentials: { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }, expiresAt };
    },
    now,
  );
}
