/**
 * The benchmark's baseline: the simplest pipeline that moves the same bytes as the publisher through the same
 * servers. Each blob is streamed from S3 (an object, or a byte range of one) and uploaded as one blob: POST, then
 * one PUT with the digest, which the benchmark computed beforehand. No hashing, no checks, no manifests.
 * Input (argv[2]): JSON {endpoint, bucket, registry, repository, concurrency, blobs: [{key, digest, size, start?}]}.
 */
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Agent, request } from 'undici';
import { localS3Client } from './local-s3';

interface Job {
  endpoint: string;
  bucket: string;
  registry: string;
  repository: string;
  concurrency: number;
  blobs: Array<{ key: string; digest: string; size: number; start?: number }>;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const s3 = localS3Client(job.endpoint);
const dispatcher = new Agent({ connections: 32 });

async function move(b: Job['blobs'][number]): Promise<void> {
  const range = b.start === undefined ? {} : { Range: `bytes=${b.start}-${b.start + b.size - 1}` };
  const body = (await s3.send(new GetObjectCommand({ Bucket: job.bucket, Key: b.key, ...range }))).Body as Readable;
  const post = await request(`${job.registry}/v2/${job.repository}/blobs/uploads/`, { method: 'POST', dispatcher });
  await post.body.dump();
  const location = new URL(String(post.headers.location), job.registry);
  location.search = `${location.search}&digest=${encodeURIComponent(b.digest)}`;
  const put = await request(location, { method: 'PUT', body, headers: { 'content-length': String(b.size), 'content-type': 'application/octet-stream' }, dispatcher });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`PUT ${b.key}: HTTP ${put.statusCode}`);
}

const started = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: job.concurrency }, async () => {
    while (next < job.blobs.length) await move(job.blobs[next++] as Job['blobs'][number]);
  }),
);
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stderr.write(`\nBENCH ${JSON.stringify({ ms: performance.now() - started, maxRssKiB: hwm ? Number(hwm[1]) : 0 })}\n`);
await dispatcher.close();
s3.destroy();
