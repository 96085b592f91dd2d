/**
 * A test-only AWS Secrets Manager on 127.0.0.1 that speaks its JSON 1.1 protocol (`X-Amz-Target:
 * secretsmanager.GetSecretValue`), for registry credentials read as the Lambda reads them. The real SDK reaches it
 * through AWS_ENDPOINT_URL_SECRETS_MANAGER; every request's SigV4 signature is checked against the test
 * credentials, and every read is counted per secret. A secret can be refused with an error of the service's own
 * (`refuse`): AccessDeniedException or DecryptionFailure, as for a secret whose KMS key the caller may not use.
 */
import { startAwsJsonServer } from './kms-server';

const REGION = 'us-east-1';
const ACCOUNT = '111122223333';

export interface TestSecrets {
  endpoint: string;
  /** stores a secret under its name (and its ARN) */
  put(name: string, value: string): void;
  /** answers GetSecretValue of the secret `name` (by name or ARN) with this error, 400 */
  refuse(name: string, type: string, message: string): void;
  /** GetSecretValue calls answered, by the SecretId asked for */
  reads: Map<string, number>;
  badSignatures: number;
  close(): Promise<void>;
}

export async function startSecrets(): Promise<TestSecrets> {
  const secrets = new Map<string, { name: string; value: string }>();
  const refusals = new Map<string, { type: string; message: string }>();
  const reads = new Map<string, number>();
  let badSignatures = 0;
  const arn = (name: string) => `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:${name}-AbCdEf`;
  const server = await startAwsJsonServer(
    'secretsmanager',
    'InternalServiceError',
    ({ req, bytes, reply, error }) => {
      if (req.headers['x-amz-target'] !== 'secretsmanager.GetSecretValue') return error(400, 'UnknownOperationException', 'GetSecretValue only');
      const id = String((JSON.parse(bytes.toString('utf8')) as { SecretId?: string }).SecretId ?? '');
      reads.set(id, (reads.get(id) ?? 0) + 1);
      const refusal = refusals.get(id);
      if (refusal) return error(400, refusal.type, refusal.message);
      const secret = secrets.get(id);
      if (!secret) return error(400, 'ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
      return reply(200, { ARN: arn(secret.name), Name: secret.name, SecretString: secret.value, VersionId: 'v1', VersionStages: ['AWSCURRENT'] });
    },
    () => badSignatures++,
  );
  return {
    endpoint: `http://127.0.0.1:${server.port}`,
    put(name, value) {
      secrets.set(name, { name, value });
      secrets.set(arn(name), { name, value });
    },
    refuse(name, type, message) {
      refusals.set(name, { type, message });
      refusals.set(arn(name), { type, message });
    },
    reads,
    get badSignatures() {
      return badSignatures;
    },
    close: () => server.close(),
  };
}
