/**
 * Who signs: an AWS KMS key (the Lambda, as Garden Linux's CI signs) or a PEM private key (the CLI, tests, the
 * demo). Both sign RSASSA-PKCS1-v1_5 with SHA-256, the only scheme gardenlinux-update verifies; a key that cannot
 * is refused when the signer is opened, before any job runs.
 */
import { constants, createHash, createPrivateKey, createPublicKey, privateEncrypt, verify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { KMSClient } from '@aws-sdk/client-kms';
import { PublishError } from '../util/errors';

export interface Signer {
  /** for logs: the key URI as configured (never key material) */
  readonly description: string;
  readonly publicKey: KeyObject;
  /** RSASSA-PKCS1-v1_5 signature over a SHA-256 digest (32 bytes) */
  signSha256Digest(digest: Buffer): Promise<Buffer>;
}

export class SigningError extends PublishError {
  constructor(message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super('signing', message, options);
    this.name = 'SigningError';
  }
}

export type SigningKeyRef = { kind: 'kms'; host?: string; keyId: string } | { kind: 'file'; path: string };

const KEY_ID = /^(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const KEY_ARN = /^arn:aws(?:-us-gov|-cn)?:kms:([a-z0-9-]+):\d{12}:(?:key\/(?:mrk-[0-9a-f]{32}|[0-9a-f-]{36})|alias\/[A-Za-z0-9/_-]+)$/;
const ALIAS = /^alias\/[A-Za-z0-9/_-]+$/;
const HOST = /^[A-Za-z0-9.-]+(?::\d+)?$/;

/**
 * `awskms://[host]/<key id | key ARN | alias/name | alias ARN>` (cosign's form; a host replaces the SDK's endpoint)
 * or `file:<path to a PEM private key>`. Throws a message that says what is expected and never repeats the value
 * or a part of it (issue 19: a private key given itself went into the logs).
 */
export function parseSigningKey(value: string): SigningKeyRef {
  const forms = 'awskms:///<key id, key ARN or alias> or file:<path to a PEM private key>';
  if (/-----BEGIN |[\r\n]/.test(value)) {
    throw new Error(`SIGNING_KEY holds key material itself (a PEM key), which is not shown; expected ${forms}: write the key to a file and give file:<path>`);
  }
  if (value.startsWith('file:')) {
    const path = value.slice('file:'.length);
    if (path === '') throw new Error('SIGNING_KEY file: needs a path to a PEM private key (file:/path/key.pem)');
    return { kind: 'file', path };
  }
  const m = /^awskms:\/\/([^/]*)\/(.+)$/.exec(value);
  if (!m) throw new Error(`SIGNING_KEY must be ${forms}`);
  const [, host = '', keyId = ''] = m;
  if (host !== '' && !HOST.test(host)) throw new Error('SIGNING_KEY: the host of awskms://<host>/… is not a host name for the KMS endpoint');
  if (!KEY_ID.test(keyId) && !KEY_ARN.test(keyId) && !ALIAS.test(keyId)) {
    throw new Error('SIGNING_KEY: what follows awskms://[<host>]/ is not a KMS key id, key ARN, alias/<name> or alias ARN');
  }
  return { kind: 'kms', ...(host ? { host } : {}), keyId };
}

/** The region a key ARN names; a key id or alias is in the configured region. */
export function regionOfKey(keyId: string): string | undefined {
  return KEY_ARN.exec(keyId)?.[1];
}

/** DER prefix of a DigestInfo for SHA-256 (RFC 8017 §9.2): what PKCS#1 v1.5 signs around the digest. */
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

export function verifyPkcs1Sha256(publicKey: KeyObject, data: Buffer, signature: Buffer): boolean {
  try {
    return verify('sha256', data, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature);
  } catch {
    return false;
  }
}

/**
 * A short name for a public key that anyone holding the PEM can compute: `sha256:` and the first 16 hex digits of
 * SHA-256 over its SubjectPublicKeyInfo DER (`openssl pkey -pubin -in key.pub -outform DER | sha256sum`).
 */
export function keyFingerprint(key: KeyObject): string {
  let fingerprint = fingerprints.get(key);
  if (fingerprint === undefined) {
    const spki = (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' });
    fingerprint = `sha256:${createHash('sha256').update(spki).digest('hex').slice(0, 16)}`;
    fingerprints.set(key, fingerprint);
  }
  return fingerprint;
}

/** verify computes it once per signature checked; the key objects live as long as the configuration. */
const fingerprints = new WeakMap<KeyObject, string>();

function requireRsa(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'rsa') {
    throw new SigningError(
      `${what} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; gardenlinux-update verifies only RSA (PKCS#1 v1.5, SHA-256) signatures`,
    );
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) throw new SigningError(`${what} is an RSA key of ${bits} bits; at least 2048 are needed`);
}

/** An RSA key from a PEM file; `kind` names it in errors ("signing key", "public key"). */
async function readRsaKey(path: string, kind: string, parse: (pem: string) => KeyObject): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    throw new SigningError(`cannot read the ${kind} ${path}: ${(err as Error).message}`, { cause: err });
  }
  let key: KeyObject;
  try {
    key = parse(pem);
  } catch (err) {
    throw new SigningError(`${path} is not a PEM ${kind === 'signing key' ? 'private' : 'public'} key: ${(err as Error).message}`, { cause: err });
  }
  requireRsa(key, `the ${kind} ${path}`);
  return key;
}

/** A PEM private key (PKCS#8 or PKCS#1), read once. */
export async function fileSigner(path: string): Promise<Signer> {
  const key = await readRsaKey(path, 'signing key', createPrivateKey);
  return {
    description: `file:${path}`,
    publicKey: createPublicKey(key),
    async signSha256Digest(digest) {
      return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
    },
  };
}

/** A PEM public key (or the public half of a private key) that signatures are checked against: `verify --public-key`. */
export function readPublicKey(path: string): Promise<KeyObject> {
  return readRsaKey(path, 'public key', createPublicKey);
}

const RSA_SPECS = new Set(['RSA_2048', 'RSA_3072', 'RSA_4096']);
/** The one algorithm Sign asks for; the deployment's IAM policy allows kms:Sign with it only (serverless.yml). */
export const SIGNING_ALGORITHM = 'RSASSA_PKCS1_V1_5_SHA_256';

/** KMS errors that retrying cannot help: the SDK does not retry them, and they fail the job at once. */
function kmsError(err: unknown, what: string): SigningError {
  const name = (err as { name?: unknown }).name;
  const message = (err as Error).message ?? String(err);
  const fatal = ['AccessDeniedException', 'DisabledException', 'NotFoundException', 'KMSInvalidStateException', 'InvalidKeyUsageException', 'UnrecognizedClientException', 'IncorrectKeyException'];
  return new SigningError(`${what}: ${typeof name === 'string' ? `${name}: ` : ''}${message}`, {
    cause: err,
    retryable: !(typeof name === 'string' && fatal.includes(name)),
  });
}

/**
 * A KMS key, checked with one GetPublicKey: it must be a SIGN_VERIFY RSA key that offers RSASSA_PKCS1_V1_5_SHA_256.
 * Sign asks for that algorithm by name; a key's first listed algorithm may be PSS (moto lists it first), which
 * gardenlinux-update rejects.
 */
export async function kmsSigner(client: KMSClient, keyId: string, description: string): Promise<Signer> {
  const { GetPublicKeyCommand, SignCommand } = await import('@aws-sdk/client-kms');
  let got;
  try {
    got = await client.send(new GetPublicKeyCommand({ KeyId: keyId }));
  } catch (err) {
    throw kmsError(err, `KMS GetPublicKey of ${keyId}`);
  }
  const why: string[] = [];
  if (got.KeyUsage !== 'SIGN_VERIFY') why.push(`its usage is ${got.KeyUsage ?? 'unknown'}, not SIGN_VERIFY`);
  if (!RSA_SPECS.has(got.KeySpec ?? '')) {
    why.push(
      `its spec is ${got.KeySpec ?? 'unknown'}, not RSA_2048/3072/4096${got.KeySpec?.startsWith('ECC') ? ' (an EC key cannot satisfy gardenlinux-update, which verifies RSA only)' : ''}`,
    );
  }
  if (!(got.SigningAlgorithms ?? []).includes(SIGNING_ALGORITHM)) why.push(`it does not offer ${SIGNING_ALGORITHM}`);
  if (why.length > 0) throw new SigningError(`the KMS key ${keyId} cannot sign for Garden Linux: ${why.join('; ')}`);
  if (!got.PublicKey) throw new SigningError(`KMS GetPublicKey of ${keyId} returned no public key`);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(got.PublicKey), format: 'der', type: 'spki' });
  } catch (err) {
    throw new SigningError(`KMS GetPublicKey of ${keyId} returned a key that is not DER SubjectPublicKeyInfo`, { cause: err });
  }
  requireRsa(publicKey, `the KMS key ${keyId}`);
  return {
    description,
    publicKey,
    async signSha256Digest(digest) {
      try {
        const r = await client.send(new SignCommand({ KeyId: keyId, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: SIGNING_ALGORITHM }));
        if (!r.Signature) throw new Error('no signature in the response');
        return Buffer.from(r.Signature);
      } catch (err) {
        throw kmsError(err, `KMS Sign with ${keyId}`);
      }
    },
  };
}

/** Opens the configured key: reads the PEM file, or asks KMS for its public key once. */
export async function openSigner(value: string, options: { region?: string; endpoint?: string } = {}): Promise<Signer> {
  const ref = parseSigningKey(value);
  if (ref.kind === 'file') return fileSigner(ref.path);
  const region = regionOfKey(ref.keyId) ?? options.region;
  const endpoint = ref.host ? `https://${ref.host}` : options.endpoint;
  // The SDK's standard retries: throttling and 5xx are tried again, refusals (AccessDenied, a disabled key) are not.
  // The KMS client is loaded here, by a function that signs, not at every cold start (tools/build.ts).
  const { KMSClient } = await import('@aws-sdk/client-kms');
  const client = new KMSClient({ ...(region ? { region } : {}), ...(endpoint ? { endpoint } : {}), maxAttempts: 5 });
  return kmsSigner(client, ref.keyId, value);
}
