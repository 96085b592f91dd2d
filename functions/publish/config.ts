/**
 * Configuration from environment variables, validated once at start-up. A bad value stops the function with a
 * message that names the variable and says what is expected. A message never repeats a value or a part of it: any
 * value may be a secret (a private key, a password, a token pasted into the wrong variable), and the message goes
 * to the logs; where a value looks like key material, the message says so (issue 19).
 */
import * as z from 'zod';
import { isRepositoryPath, parseTargetLocation, type TargetLocation } from '../registry/location';
import { GARDENLINUX_SOURCE } from '../gardenlinux/artifact-manifest';
import { parseAliasTemplates, type AliasTemplate } from '../gardenlinux/release-aliases';
import { parseSigningKey } from '../signing/signer';
import { BUCKET_NAME } from '../storage/object-store';
import { InputError } from '../util/errors';
import type { LogLevel } from '../util/log';

// zod compiles a parser for each object schema the first time it is used (new Function). An invocation parses a
// handful of documents, for which its interpreter is quicker: the compiling was a tenth of a cold start's time in
// zod. Both entries (the handler, the CLI) load this module, before anything is parsed.
z.config({ jitless: true });

export interface Config {
  /** the first (or only) destination of REGISTRY */
  target: TargetLocation;
  /** every destination of REGISTRY (a comma-separated list), the first one first */
  targets: TargetLocation[];
  credentials?: { username: string; password: string };
  /**
   * A Secrets Manager secret holding {"username","password"}, or, for several registries, {"<host>": {"username",
   * "password"}, …}: read at run time, never in the environment
   */
  credentialsSecret?: string;
  /** a secret per registry host (REGISTRY_CREDENTIALS_SECRET as a JSON object of host → secret) */
  credentialsSecrets?: Record<string, string>;
  /** where records live; undefined: the bucket of the event */
  stateBucket?: string;
  statePrefix: string;
  containerRepositories: Record<string, string>;
  s3: { endpoint?: string; forcePathStyle: boolean; region?: string };
  /** a local directory laid out like the bucket replaces S3 (the CLI's --dir) */
  sourceDir?: string;
  blobConcurrency: number;
  /**
   * How a file's bytes are checked against the metadata's md5sum: `etag` compares S3's ETag when it is the
   * object's MD5 (a single-part upload) and hashes only when they differ; `stream` hashes every file as it
   * streams; `off` does not check. Files small enough to be read whole are hashed in any mode but `off`.
   */
  md5Check: 'etag' | 'stream' | 'off';
  logLevel: LogLevel;
  /** buckets events may name; undefined: any (a deployment sets the buckets it subscribes to) */
  allowedBuckets?: string[];
  registryTimeoutMs: number;
  /** chunk size once a registry refuses large bodies, or always with `chunkedUploads` */
  uploadChunkBytes: number;
  chunkedUploads: boolean;
  /** registry failures in a row after which a job stops retrying */
  maxConsecutiveFailures: number;
  /** time kept back at the end of an invocation to stop cleanly and report */
  stopMarginMs: number;
  /** ranged GETs at once for one large S3 object (1: a single stream) */
  s3Readers: number;
  s3PartBytes: number;
  /** a PEM public key that `verify` checks signatures against when no SIGNING_KEY is set (VERIFY_PUBLIC_KEY) */
  verifyPublicKey?: string;
  /** the key that signs artifact manifests (SIGNING_KEY, as given); undefined: no signatures */
  signingKey?: string;
  /** sign the container image manifests too (cosign verify <repo>:<arch>-<version>) */
  signContainerImages: boolean;
  /** an endpoint for Secrets Manager (AWS_ENDPOINT_URL_SECRETS_MANAGER) */
  secretsEndpoint?: string;
  /** an endpoint for KMS (AWS_ENDPOINT_URL_KMS); a host in the key URI wins */
  kmsEndpoint?: string;
  /** the source repository named in every artifact manifest (IMAGE_SOURCE) */
  imageSource: string;
  /** release aliases that follow the highest version of their group (ALIAS_TAGS) */
  aliasTemplates: AliasTemplate[];
}

export class ConfigError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * What a value looks like when it looks like key material: a PEM block, or a long base64 string (DER, a token).
 * Error messages say this instead of showing the value.
 */
export function keyMaterialShape(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const pem = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(value)?.[1];
  if (pem !== undefined) {
    if (pem.includes('PRIVATE KEY')) return 'a PEM private key';
    if (pem.includes('PUBLIC KEY')) return 'a PEM public key';
    return pem === 'CERTIFICATE' ? 'a PEM certificate' : 'a PEM block';
  }
  for (const run of value.match(/[A-Za-z0-9+/]{40,}={0,2}/g) ?? []) {
    if (/[A-Z]/.test(run) && /[a-z]/.test(run) && /\d/.test(run)) return 'a long base64 string, like key material';
  }
  return undefined;
}

/** Whether a URL carries credentials (user:password@), which must neither work nor reach a message. */
function withoutCredentials(value: string): boolean {
  try {
    const url = new URL(value);
    return url.username === '' && url.password === '';
  } catch {
    return true; // not a URL: its own check says so
  }
}

/** Text that is a path, never key material: what a PEM text or a line break in a path variable is refused by. */
const notKeyText = (v: string) => !/-----BEGIN |[\r\n]/.test(v);

const bool = (name: string) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: `${name} must be true or false` })
    .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** A whole number from `min` to `max`; each message names the variable. */
const wholeNumber = (name: string, min: number, max: number) =>
  z.coerce
    .number({ message: `${name} must be a number` })
    .int(`${name} must be a whole number`)
    .min(min, `${name} must be at least ${min}`)
    .max(max, `${name} must be at most ${max}`);

/** A Secrets Manager secret's name or ARN. */
const SECRET_ID = /^(?:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$/;

const Env = z.object({
  REGISTRY: z.string({ message: 'REGISTRY is required (the CLI: -r, --registry)' }).min(1, 'REGISTRY is required (the CLI: -r, --registry)'),
  REGISTRY_USERNAME: z.string().min(1).optional(),
  REGISTRY_PASSWORD: z.string().min(1).optional(),
  REGISTRY_CREDENTIALS_SECRET: z
    .string()
    .refine(
      (v) => v.startsWith('{') || SECRET_ID.test(v),
      'REGISTRY_CREDENTIALS_SECRET must be a secret name or ARN, or a JSON object of registry host to secret name or ARN',
    )
    .optional(),
  STATE_BUCKET: z.string().regex(BUCKET_NAME, 'STATE_BUCKET must be an S3 bucket name').optional(),
  STATE_PREFIX: z
    .string()
    .default('oci-publisher/')
    .refine((p) => p === '' || p.endsWith('/'), 'STATE_PREFIX must end with "/"')
    .refine((p) => !p.startsWith('/'), 'STATE_PREFIX must not start with "/"')
    .refine(
      (p) => !p.startsWith('meta/') && !p.startsWith('objects/') && p !== '',
      'STATE_PREFIX must not be empty or under meta/ or objects/ (the publisher would trigger itself or mix with builds)',
    ),
  CONTAINER_REPOSITORIES: z.string().optional(),
  AWS_ENDPOINT_URL_S3: z
    .url({ message: 'AWS_ENDPOINT_URL_S3 must be a URL' })
    .refine(withoutCredentials, 'AWS_ENDPOINT_URL_S3 must not contain credentials (user:password@): S3 requests are signed with the AWS credentials')
    .optional(),
  S3_FORCE_PATH_STYLE: bool('S3_FORCE_PATH_STYLE').default(false),
  AWS_REGION: z.string().regex(/^[a-z0-9-]{1,64}$/, 'AWS_REGION must be a region name such as eu-central-1 (lowercase letters, digits and "-")').optional(),
  SOURCE_DIR: z.string().min(1).refine(notKeyText, 'SOURCE_DIR must be the path of a directory laid out like the bucket').optional(),
  BLOB_CONCURRENCY: wholeNumber('BLOB_CONCURRENCY', 1, 32).default(4),
  MD5_CHECK: z.enum(['etag', 'stream', 'off'], { message: 'MD5_CHECK must be etag, stream or off' }).default('etag'),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error'], { message: 'LOG_LEVEL must be debug, info, warn or error' }).default('info'),
  ALLOWED_BUCKETS: z
    .string()
    .transform((v) => v.split(',').map((b) => b.trim()).filter((b) => b !== ''))
    .refine((list) => list.every((b) => BUCKET_NAME.test(b)), 'ALLOWED_BUCKETS must be a comma-separated list of S3 bucket names')
    .optional(),
  REGISTRY_TIMEOUT_SECONDS: z.coerce
    .number({ message: 'REGISTRY_TIMEOUT_SECONDS must be a number' })
    .positive('REGISTRY_TIMEOUT_SECONDS must be positive')
    .max(900, 'REGISTRY_TIMEOUT_SECONDS must be at most 900')
    .default(60),
  UPLOAD_CHUNK_MIB: z.coerce
    .number({ message: 'UPLOAD_CHUNK_MIB must be a number' })
    .min(1, 'UPLOAD_CHUNK_MIB must be at least 1')
    .max(1024, 'UPLOAD_CHUNK_MIB must be at most 1024')
    .default(16),
  CHUNKED_UPLOADS: bool('CHUNKED_UPLOADS').default(false),
  MAX_CONSECUTIVE_FAILURES: wholeNumber('MAX_CONSECUTIVE_FAILURES', 1, 100).default(8),
  S3_READERS: wholeNumber('S3_READERS', 1, 16).default(1),
  S3_PART_MIB: wholeNumber('S3_PART_MIB', 1, 64).default(8),
  SIGNING_KEY: z
    .string()
    .superRefine((v, ctx) => {
      try {
        parseSigningKey(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    })
    .optional(),
  SIGN_CONTAINER_IMAGES: bool('SIGN_CONTAINER_IMAGES').default(false),
  ALIAS_TAGS: z.string().optional(),
  IMAGE_SOURCE: z
    .url({ message: 'IMAGE_SOURCE must be a URL, such as https://github.com/gardenlinux/gardenlinux' })
    .max(512, 'IMAGE_SOURCE must be at most 512 characters')
    .refine(withoutCredentials, 'IMAGE_SOURCE must not contain credentials (user:password@): it is written into every artifact manifest')
    .default(GARDENLINUX_SOURCE),
  VERIFY_PUBLIC_KEY: z
    .string()
    .min(1, 'VERIFY_PUBLIC_KEY must name a PEM file')
    .refine(notKeyText, 'VERIFY_PUBLIC_KEY must be the path of a PEM public key file, not the key itself')
    .optional(),
  AWS_ENDPOINT_URL_SECRETS_MANAGER: z
    .url({ message: 'AWS_ENDPOINT_URL_SECRETS_MANAGER must be a URL' })
    .refine(withoutCredentials, 'AWS_ENDPOINT_URL_SECRETS_MANAGER must not contain credentials (user:password@): requests are signed with the AWS credentials')
    .optional(),
  AWS_ENDPOINT_URL_KMS: z
    .url({ message: 'AWS_ENDPOINT_URL_KMS must be a URL' })
    .refine(withoutCredentials, 'AWS_ENDPOINT_URL_KMS must not contain credentials (user:password@): KMS requests are signed with the AWS credentials')
    .optional(),
  STOP_MARGIN_SECONDS: z.coerce
    .number({ message: 'STOP_MARGIN_SECONDS must be a number' })
    .min(0, 'STOP_MARGIN_SECONDS must not be negative')
    .max(600, 'STOP_MARGIN_SECONDS must be at most 600')
    .default(30),
});

const Repositories = z.record(
  z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, 'keys are flavor names'),
  z.string().refine(isRepositoryPath, 'values are repository paths (lowercase, e.g. "container-python-dev")'),
);

/** the most memory ranged reads of one file may hold (S3_READERS × S3_PART_MIB) */
const MAX_RANGE_BUFFER_MIB = 128;

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty (or blank) variables count as unset: CloudFormation and shells often leave them empty.
  const present = Object.fromEntries(
    Object.entries(env).flatMap(([k, v]) => (v === undefined || v.trim() === '' ? [] : [[k, v.trim()]])),
  );
  // "none": no secret. A deployment parameter cannot be empty (osls refuses it), so this is how one says so.
  if (present.REGISTRY_CREDENTIALS_SECRET === 'none') delete present.REGISTRY_CREDENTIALS_SECRET;
  /**
   * Refuses the configuration. `message` names the variables and says what is expected, never what they hold; for
   * a variable whose value looks like key material, it says so (unless the message already says what is not shown).
   */
  const fail: (message: string, ...names: string[]) => never = (message, ...names) => {
    const shapes = message.includes('not shown')
      ? []
      : names.flatMap((n) => {
          const shape = keyMaterialShape(present[n]);
          return shape ? [`${n} looks like ${shape}`] : [];
        });
    throw new ConfigError(`invalid configuration: ${message}${shapes.length > 0 ? ` (${shapes.join('; ')}; its value is not shown)` : ''}`);
  };
  const parsed = Env.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = issue?.path[0] === undefined ? undefined : String(issue.path[0]);
    const message = issue?.message ?? 'unknown problem';
    fail(`${message}${name && !message.includes(name) ? ` (${name})` : ''}`, ...(name ? [name] : []));
  }
  const e = parsed.data;
  const entries = e.REGISTRY.split(',').map((v) => v.trim());
  const targets: TargetLocation[] = entries.map((entry, i) => {
    try {
      if (entry === '') throw new Error('it is empty (two commas in a row, or one at an end)');
      return parseTargetLocation(entry);
    } catch (err) {
      // Entries are named by their place: the message of one never shows another.
      return fail(entries.length > 1 ? `REGISTRY entry #${i + 1}: ${(err as Error).message}` : (err as Error).message, 'REGISTRY');
    }
  });
  const target = targets[0] as TargetLocation;
  const placeOf = (t: TargetLocation): string => (t.kind === 'registry' ? `${t.host}/${t.repository}` : `oci-layout:${t.dir}`);
  const places = targets.map(placeOf);
  const twice = places.findIndex((p, i) => places.indexOf(p) !== i);
  if (twice >= 0) fail(`REGISTRY entry #${twice + 1} names the same destination as an earlier one`, 'REGISTRY');
  const registryHosts = [...new Set(targets.flatMap((t) => (t.kind === 'registry' ? [t.host] : [])))];
  if ((e.REGISTRY_USERNAME === undefined) !== (e.REGISTRY_PASSWORD === undefined)) {
    fail('REGISTRY_USERNAME and REGISTRY_PASSWORD must be set together', 'REGISTRY_USERNAME', 'REGISTRY_PASSWORD');
  }
  if (e.REGISTRY_CREDENTIALS_SECRET !== undefined && e.REGISTRY_USERNAME !== undefined) {
    fail('set either REGISTRY_CREDENTIALS_SECRET or REGISTRY_USERNAME/REGISTRY_PASSWORD, not both', 'REGISTRY_CREDENTIALS_SECRET');
  }
  if (e.REGISTRY_USERNAME !== undefined && registryHosts.length > 1) {
    // One password sent to several registries would hand each of them the others' credentials.
    fail(
      'REGISTRY_USERNAME/REGISTRY_PASSWORD serve one registry, and REGISTRY names several hosts: set REGISTRY_CREDENTIALS_SECRET to a JSON object of host to secret, or to one secret keyed by host',
      'REGISTRY_USERNAME',
      'REGISTRY_PASSWORD',
    );
  }
  let credentialsSecrets: Record<string, string> | undefined;
  if (e.REGISTRY_CREDENTIALS_SECRET?.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(e.REGISTRY_CREDENTIALS_SECRET);
    } catch {
      fail('REGISTRY_CREDENTIALS_SECRET starts with "{" but is not a JSON object of registry host to secret name or ARN', 'REGISTRY_CREDENTIALS_SECRET');
    }
    const map = z.record(z.string(), z.string().regex(SECRET_ID)).safeParse(json);
    if (!map.success) fail('REGISTRY_CREDENTIALS_SECRET: expected a JSON object of registry host to secret name or ARN, such as {"ghcr.io":"gl/ghcr"}', 'REGISTRY_CREDENTIALS_SECRET');
    const hosts = Object.keys(map.data);
    const stray = hosts.findIndex((h) => !registryHosts.includes(h.toLowerCase()));
    if (stray >= 0) fail(`REGISTRY_CREDENTIALS_SECRET: key #${stray + 1} is not the host of a registry in REGISTRY`, 'REGISTRY_CREDENTIALS_SECRET');
    credentialsSecrets = Object.fromEntries(Object.entries(map.data).map(([h, v]) => [h.toLowerCase(), v]));
  }
  if (e.SIGN_CONTAINER_IMAGES && e.SIGNING_KEY === undefined) {
    fail('SIGN_CONTAINER_IMAGES=true needs a SIGNING_KEY');
  }
  if (e.REGISTRY_CREDENTIALS_SECRET !== undefined && registryHosts.length === 0) {
    fail('REGISTRY_CREDENTIALS_SECRET needs a registry REGISTRY, not an oci-layout', 'REGISTRY_CREDENTIALS_SECRET');
  }
  // Each large file read in ranges holds up to S3_READERS parts in memory, and BLOB_CONCURRENCY files move at once.
  if (e.S3_READERS * e.S3_PART_MIB > MAX_RANGE_BUFFER_MIB) {
    fail(`S3_READERS × S3_PART_MIB is ${e.S3_READERS * e.S3_PART_MIB} MiB of buffers per file; at most ${MAX_RANGE_BUFFER_MIB} MiB`);
  }
  let aliasTemplates: AliasTemplate[] = [];
  try {
    aliasTemplates = e.ALIAS_TAGS === undefined ? [] : parseAliasTemplates(e.ALIAS_TAGS);
  } catch (err) {
    fail((err as Error).message, 'ALIAS_TAGS');
  }
  let containerRepositories: Record<string, string> = {};
  if (e.CONTAINER_REPOSITORIES !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(e.CONTAINER_REPOSITORIES);
    } catch {
      fail('CONTAINER_REPOSITORIES must be a JSON object such as {"container-pythonDev":"container-python-dev"}', 'CONTAINER_REPOSITORIES');
    }
    const r = Repositories.safeParse(json);
    if (!r.success) {
      // Entries are named by their place, not their text.
      const issue = r.error.issues[0];
      const key = issue?.path[0];
      const n = key === undefined || json === null || typeof json !== 'object' ? 0 : Object.keys(json).indexOf(String(key)) + 1;
      fail(
        n === 0
          ? 'CONTAINER_REPOSITORIES: expected a JSON object of flavor names to repository paths, such as {"container-pythonDev":"container-python-dev"}'
          : issue?.code === 'invalid_key'
            ? `CONTAINER_REPOSITORIES: key #${n} is not a flavor name (letters, digits, "_" and "-")`
            : `CONTAINER_REPOSITORIES: the value of key #${n} is not a repository path (lowercase, e.g. "container-python-dev")`,
        'CONTAINER_REPOSITORIES',
      );
    }
    containerRepositories = r.data;
  }
  return {
    target,
    targets,
    ...(e.REGISTRY_USERNAME && e.REGISTRY_PASSWORD ? { credentials: { username: e.REGISTRY_USERNAME, password: e.REGISTRY_PASSWORD } } : {}),
    ...(credentialsSecrets ? { credentialsSecrets } : e.REGISTRY_CREDENTIALS_SECRET ? { credentialsSecret: e.REGISTRY_CREDENTIALS_SECRET } : {}),
    ...(e.STATE_BUCKET ? { stateBucket: e.STATE_BUCKET } : {}),
    statePrefix: e.STATE_PREFIX,
    containerRepositories,
    s3: {
      forcePathStyle: e.S3_FORCE_PATH_STYLE,
      ...(e.AWS_ENDPOINT_URL_S3 ? { endpoint: e.AWS_ENDPOINT_URL_S3 } : {}),
      ...(e.AWS_REGION ? { region: e.AWS_REGION } : {}),
    },
    ...(e.SOURCE_DIR ? { sourceDir: e.SOURCE_DIR } : {}),
    blobConcurrency: e.BLOB_CONCURRENCY,
    md5Check: e.MD5_CHECK,
    logLevel: e.LOG_LEVEL,
    ...(e.ALLOWED_BUCKETS ? { allowedBuckets: e.ALLOWED_BUCKETS } : {}),
    registryTimeoutMs: e.REGISTRY_TIMEOUT_SECONDS * 1000,
    uploadChunkBytes: Math.round(e.UPLOAD_CHUNK_MIB * 1024 * 1024),
    chunkedUploads: e.CHUNKED_UPLOADS,
    maxConsecutiveFailures: e.MAX_CONSECUTIVE_FAILURES,
    stopMarginMs: e.STOP_MARGIN_SECONDS * 1000,
    s3Readers: e.S3_READERS,
    s3PartBytes: e.S3_PART_MIB * 1024 * 1024,
    ...(e.SIGNING_KEY ? { signingKey: e.SIGNING_KEY } : {}),
    ...(e.VERIFY_PUBLIC_KEY ? { verifyPublicKey: e.VERIFY_PUBLIC_KEY } : {}),
    signContainerImages: e.SIGN_CONTAINER_IMAGES,
    ...(e.AWS_ENDPOINT_URL_KMS ? { kmsEndpoint: e.AWS_ENDPOINT_URL_KMS } : {}),
    ...(e.AWS_ENDPOINT_URL_SECRETS_MANAGER ? { secretsEndpoint: e.AWS_ENDPOINT_URL_SECRETS_MANAGER } : {}),
    imageSource: e.IMAGE_SOURCE,
    aliasTemplates,
  };
}
