/**
 * A test-only AWS KMS on 127.0.0.1 that speaks KMS's JSON 1.1 protocol (`X-Amz-Target: TrentService.<op>`) for
 * GetPublicKey, Sign and DescribeKey, backed by a key generated in the test. The real SDK reaches it through
 * AWS_ENDPOINT_URL_KMS; every request's SigV4 signature is checked against the test credentials (a request the
 * SDK signed wrongly is refused as KMS would), and faults can be injected per operation.
 */
import { constants, createHash, createHmac, generateKeyPairSync, privateEncrypt, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';

export const TEST_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const REGION = 'us-east-1';
const ACCOUNT = '111122223333';
const DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

export interface TestKey {
  id: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  spec: 'RSA_4096' | 'RSA_2048' | 'ECC_NIST_P256';
  usage: 'SIGN_VERIFY' | 'ENCRYPT_DECRYPT';
  algorithms: string[];
  enabled: boolean;
}

/** An RSA key as KMS creates it for Garden Linux (`--key-spec RSA_4096 --key-usage SIGN_VERIFY`). */
export function rsaKey(id: string, bits: 2048 | 4096 = 4096): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return {
    id,
    privateKey,
    publicKey,
    spec: bits === 4096 ? 'RSA_4096' : 'RSA_2048',
    usage: 'SIGN_VERIFY',
    // PSS first, as moto lists them: the publisher must ask for PKCS#1 v1.5 by name.
    algorithms: ['RSASSA_PSS_SHA_256', 'RSASSA_PSS_SHA_384', 'RSASSA_PSS_SHA_512', 'RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_384', 'RSASSA_PKCS1_V1_5_SHA_512'],
    enabled: true,
  };
}

export function ecKey(id: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { id, privateKey, publicKey, spec: 'ECC_NIST_P256', usage: 'SIGN_VERIFY', algorithms: ['ECDSA_SHA_256'], enabled: true };
}

type Operation = 'GetPublicKey' | 'Sign' | 'DescribeKey';
interface Fault {
  op: Operation;
  /** the KMS error name, e.g. ThrottlingException, AccessDeniedException */
  error: string;
  status: number;
  /** how many requests get it (Infinity: every one) */
  times: number;
}

export interface TestKms {
  endpoint: string;
  keyArn(key: TestKey): string;
  /** requests answered, by operation (refused ones included) */
  calls: Record<Operation, number>;
  /** requests refused because their SigV4 signature did not verify */
  badSignatures: number;
  addKey(key: TestKey, ...aliases: string[]): void;
  fail(op: Operation, error: string, options?: { status?: number; times?: number }): void;
  clearFaults(): void;
  close(): Promise<void>;
}

class Sha256 {
  private readonly h;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', typeof secret === 'string' ? secret : Buffer.from(secret as ArrayBuffer));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.h.update(typeof data === 'string' ? data : Buffer.from(data as ArrayBuffer));
  }
  async digest(): Promise<Uint8Array> {
    return this.h.digest();
  }
}

export function body(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Signs the request again with the test credentials and compares: the SDK's SigV4 must be exact. */
export async function signatureValid(req: IncomingMessage, bytes: Buffer, port: number, service = 'kms'): Promise<boolean> {
  const auth = req.headers.authorization ?? '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([a-z]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth);
  const amzDate = req.headers['x-amz-date'];
  if (!m || typeof amzDate !== 'string' || m[1] !== TEST_CREDENTIALS.accessKeyId || m[4] !== service) return false;
  const signedHeaders = (m[5] as string).split(';');
  const headers: Record<string, string> = {};
  for (const h of signedHeaders) {
    const v = req.headers[h];
    if (v === undefined) return false;
    headers[h] = Array.isArray(v) ? v.join(',') : v;
  }
  const signer = new SignatureV4({ service, region: m[3] as string, credentials: TEST_CREDENTIALS, sha256: Sha256 });
  const date = new Date(amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
  const signed = await signer.sign(
    { method: req.method ?? 'POST', protocol: 'http:', hostname: '127.0.0.1', port, path: req.url ?? '/', query: {}, headers, body: bytes },
    { signingDate: date, unsignableHeaders: new Set(Object.keys(req.headers).filter((h) => !signedHeaders.includes(h))) },
  );
  const again = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization ?? signed.headers.Authorization ?? ''))?.[1];
  return again === m[6];
}

export async function startKms(): Promise<TestKms> {
  const keys = new Map<string, TestKey>();
  const faults: Fault[] = [];
  const calls: Record<Operation, number> = { GetPublicKey: 0, Sign: 0, DescribeKey: 0 };
  let badSignatures = 0;
  const arn = (k: TestKey) => `arn:aws:kms:${REGION}:${ACCOUNT}:key/${k.id}`;

  const server = await startAwsJsonServer(
    'kms',
    'KMSInternalException',
    ({ req, bytes, reply, error }) => {
      const target = String(req.headers['x-amz-target'] ?? '');
      const op = target.replace(/^TrentService\./, '') as Operation;
      if (!(op in calls)) return error(400, 'UnknownOperationException', `unknown operation ${target}`);
      calls[op]++;
      const fault = faults.find((f) => f.op === op && f.times > 0);
      if (fault) {
        fault.times--;
        return error(fault.status, fault.error, `injected ${fault.error}`);
      }
      let input: { KeyId?: string; Message?: string; MessageType?: string; SigningAlgorithm?: string };
      try {
        input = JSON.parse(bytes.toString('utf8')) as typeof input;
      } catch {
        return error(400, 'SerializationException', 'not JSON');
      }
      const key = keys.get(input.KeyId ?? '');
      if (!key) return error(400, 'NotFoundException', `Key '${input.KeyId}' does not exist`);
      if (!key.enabled && op !== 'DescribeKey') return error(400, 'DisabledException', `${arn(key)} is disabled.`);
      const metadata = { KeyId: key.id, Arn: arn(key), KeySpec: key.spec, CustomerMasterKeySpec: key.spec, KeyUsage: key.usage, SigningAlgorithms: key.algorithms };
      switch (op) {
        case 'DescribeKey':
          return reply(200, { KeyMetadata: { ...metadata, AWSAccountId: ACCOUNT, Enabled: key.enabled, KeyState: key.enabled ? 'Enabled' : 'Disabled', Origin: 'AWS_KMS' } });
        case 'GetPublicKey':
          return reply(200, { ...metadata, KeyId: arn(key), PublicKey: key.publicKey.export({ format: 'der', type: 'spki' }).toString('base64') });
        case 'Sign': {
          const message = Buffer.from(input.Message ?? '', 'base64');
          if (!key.algorithms.includes(input.SigningAlgorithm ?? '')) return error(400, 'InvalidKeyUsageException', `${input.SigningAlgorithm} is not valid for ${arn(key)}`);
          if (input.SigningAlgorithm !== 'RSASSA_PKCS1_V1_5_SHA_256') return error(400, 'ValidationException', `this test KMS signs RSASSA_PKCS1_V1_5_SHA_256 only`);
          let digest: Buffer;
          if (input.MessageType === 'DIGEST') {
            if (message.length !== 32) return error(400, 'ValidationException', 'Digest is invalid length for algorithm RSASSA_PKCS1_V1_5_SHA_256.');
            digest = message;
          } else {
            digest = createHash('sha256').update(message).digest();
          }
          const signature = privateEncrypt({ key: key.privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([DIGEST_INFO, digest]));
          return reply(200, { KeyId: arn(key), Signature: signature.toString('base64'), SigningAlgorithm: input.SigningAlgorithm });
        }
      }
    },
    () => badSignatures++,
  );
  const port = server.port;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    keyArn: arn,
    calls,
    get badSignatures() {
      return badSignatures;
    },
    addKey(key, ...aliases) {
      for (const name of [key.id, arn(key), ...aliases.flatMap((a) => [a, `arn:aws:kms:${REGION}:${ACCOUNT}:${a}`])]) keys.set(name, key);
    },
    fail(op, error, options = {}) {
      faults.push({ op, error, status: options.status ?? 400, times: options.times ?? Infinity });
    },
    clearFaults() {
      faults.length = 0;
    },
    close: () => server.close(),
  };
}

/** What a handler of a test AWS JSON 1.1 service answers with. */
export interface AwsJsonExchange {
  req: IncomingMessage;
  bytes: Buffer;
  reply(status: number, json: unknown): void;
  error(status: number, type: string, message: string): void;
}

/**
 * A test AWS service speaking JSON 1.1 on 127.0.0.1: every request's SigV4 signature is checked against the test
 * credentials for `service` (refused as AWS would, and counted by `onBadSignature`) before `handle` sees it; a
 * handler that throws answers 500 with `internalError`.
 */
export async function startAwsJsonServer(
  service: string,
  internalError: string,
  handle: (x: AwsJsonExchange) => Promise<void> | void,
  onBadSignature: () => void,
): Promise<{ port: number; close(): Promise<void> }> {
  let port = 0;
  const server: Server = createServer((req, res) => {
    void (async () => {
      const bytes = await body(req);
      const reply = (status: number, json: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': `test-${Date.now()}` });
        res.end(JSON.stringify(json));
      };
      const error = (status: number, type: string, message: string): void => reply(status, { __type: type, message });
      if (!(await signatureValid(req, bytes, port, service))) {
        onBadSignature();
        return error(400, 'InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.');
      }
      await handle({ req, bytes, reply, error });
    })().catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify({ __type: internalError, message: String(err) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
