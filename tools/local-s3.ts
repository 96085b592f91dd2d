/**
 * An in-process S3 (s3rver) on 127.0.0.1 with a free port and a temporary directory: for the demo, the tests
 * and the benchmark. s3rver keeps what it is given, and emits an event per created object, which lets callers
 * drive the handler the way S3 would.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import type { SampleBuild } from './sample-builds';

export interface LocalS3 {
  endpoint: string;
  client: S3Client;
  /** the environment the publisher needs to reach this S3 */
  env: Record<string, string>;
  /** keys of created objects, in order, as S3 events would carry them (not URL-encoded) */
  created: Array<{ bucket: string; key: string }>;
  close(): Promise<void>;
}

export const LOCAL_S3_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

/** A client for s3rver at `endpoint` (also from another process): its credentials, no checksums it cannot do. */
export function localS3Client(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 5,
  });
}

export async function startLocalS3(buckets: readonly string[]): Promise<LocalS3> {
  const directory = await mkdtemp(join(tmpdir(), 'gl-s3-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  const address = (await server.run()) as { address: string; port: number };
  // Node closes idle keep-alive sockets after 5 s; a client reusing one at that moment gets ECONNRESET. Idle
  // gaps in tests and benchmarks are longer than that, so the server keeps its sockets longer than any of them.
  const http = (server as unknown as { httpServer: { keepAliveTimeout: number; headersTimeout: number } }).httpServer;
  http.keepAliveTimeout = 120_000;
  http.headersTimeout = 121_000;
  const endpoint = `http://127.0.0.1:${address.port}`;
  // The SDK's default chain reads credentials from the environment; s3rver accepts only these.
  for (const [k, v] of Object.entries(LOCAL_S3_CREDENTIALS)) process.env[k] ??= v;
  const client = localS3Client(endpoint);
  const created: LocalS3['created'] = [];
  // s3rver is an EventEmitter (its typings leave that out).
  (server as unknown as NodeJS.EventEmitter).on('event', (e: { Records: Array<{ eventName: string; s3: { bucket: { name: string }; object: { key: string } } }> }) => {
    for (const r of e.Records) if (r.eventName.startsWith('ObjectCreated')) created.push({ bucket: r.s3.bucket.name, key: r.s3.object.key });
  });
  return {
    endpoint,
    client,
    env: { ...LOCAL_S3_CREDENTIALS, AWS_ENDPOINT_URL_S3: endpoint, S3_FORCE_PATH_STYLE: 'true' },
    created,
    async close() {
      client.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** Uploads a build the way CI does: every file first, the metadata document last. */
export async function uploadBuild(client: S3Client, bucket: string, build: SampleBuild): Promise<void> {
  await Promise.all(
    build.files.map((f) => client.send(new PutObjectCommand({ Bucket: bucket, Key: `objects/${build.base}/${f.name}`, Body: f.data }))),
  );
  await client.send(
    new PutObjectCommand({ Bucket: bucket, Key: `meta/singles/${build.base}`, Body: build.metadata, ContentType: 'text/yaml' }),
  );
}

/** An S3 notification for a created key, encoded like AWS encodes keys. */
export function s3Event(bucket: string, key: string, eventName = 'ObjectCreated:Put'): object {
  const encoded = encodeURIComponent(key).replace(/%20/g, '+').replace(/%2F/g, '/');
  return {
    Records: [
      {
        eventVersion: '2.1',
        eventSource: 'aws:s3',
        awsRegion: 'us-east-1',
        eventTime: new Date().toISOString(),
        eventName,
        responseElements: { 'x-amz-request-id': 'LOCAL0000000000' },
        s3: { s3SchemaVersion: '1.0', bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` }, object: { key: encoded, size: 0 } },
      },
    ],
  };
}
