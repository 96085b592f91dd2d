/**
 * A test-only AWS Secrets Manager on 127.0.0.1 that speaks its JSON 1.1 protocol (`X-Amz-Target:
 * secretsmanager.GetSecretValue`), for registry credentials read as the Lambda reads them. The real SDK reaches it
 * through AWS_ENDPOINT_URL_SECRETS_MANAGER; every request's SigV4 signature is checked against the test
 * credentials, and every read is counted per secret.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { body, signatureValid } from './kms-server';

const REGION = 'us-east-1';
const ACCOUNT = '111122223333';

export interface TestSecrets {
  endpoint: string;
  /** stores a secret under its name (and its ARN) */
  put(name: string, value: string): void;
  /** GetSecretValue calls answered, by the SecretId asked for */
  reads: Map<string, number>;
  badSignatures: number;
  close(): Promise<void>;
}

export async function startSecrets(): Promise<TestSecrets> {
  const secrets = new Map<string, { name: string; value: string }>();
  const reads = new Map<string, number>();
  let badSignatures = 0;
  let port = 0;
  const arn = (name: string) => `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:${name}-AbCdEf`;
  const server: Server = createServer((req, res) => {
    void (async () => {
      const bytes = await body(req);
      const reply = (status: number, json: unknown) => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': `test-${Date.now()}` });
        res.end(JSON.stringify(json));
      };
      const error = (type: string, message: string) => reply(400, { __type: type, message });
      if (!(await signatureValid(req, bytes, port, 'secretsmanager'))) {
        badSignatures++;
        return error('InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.');
      }
      if (req.headers['x-amz-target'] !== 'secretsmanager.GetSecretValue') return error('UnknownOperationException', 'GetSecretValue only');
      const id = String((JSON.parse(bytes.toString('utf8')) as { SecretId?: string }).SecretId ?? '');
      reads.set(id, (reads.get(id) ?? 0) + 1);
      const secret = secrets.get(id);
      if (!secret) return error('ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
      return reply(200, { ARN: arn(secret.name), Name: secret.name, SecretString: secret.value, VersionId: 'v1', VersionStages: ['AWSCURRENT'] });
    })().catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify({ __type: 'InternalServiceError', message: String(err) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    put(name, value) {
      secrets.set(name, { name, value });
      secrets.set(arn(name), { name, value });
    },
    reads,
    get badSignatures() {
      return badSignatures;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
