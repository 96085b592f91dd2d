/**
 * MD5_CHECK: what each mode catches when a large file's bytes do not match the metadata's md5sum. `etag` finds
 * it for single-part objects (S3's ETag is their MD5) without hashing when they match; objects whose ETag is no
 * MD5 (uploaded in parts: `<md5 of md5s>-<parts>`) are left unchecked, so only `stream` (hashing every byte)
 * finds it there. s3rver gives multipart objects a plain MD5-shaped ETag, unlike S3, so that case is played by a
 * local directory, whose ETags are not MD5s either: the same path through the code.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createHandler } from '../../functions/publish/handler';
import { s3Event, startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { pseudoRandom, sampleBuild, writeBuildDir, type SampleBuild } from '../../tools/sample-builds';
import { BUCKET } from '../helpers/expectations';
import { firstJob } from '../helpers/jobs';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const MiB = 1024 * 1024;

describe('MD5_CHECK', () => {
  let registry: TestRegistry;
  let s3: LocalS3;
  let singlePart: SampleBuild;
  let notMd5Etag: SampleBuild;
  let dir: string;

  /** A build whose 9 MiB raw image is not the one its metadata's md5sum describes. */
  const tampered = (commit: string): { build: SampleBuild; raw: Buffer } => {
    const b = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit, imageSize: 9 * MiB });
    return { build: b, raw: pseudoRandom(`other bytes ${commit}`, 9 * MiB) };
  };

  before(async () => {
    [registry, s3] = await Promise.all([startRegistry(), startLocalS3([BUCKET])]);
    const one = tampered('3d500001');
    await uploadBuild(s3.client, BUCKET, one.build);
    await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `objects/${one.build.base}/${one.build.base}.raw`, Body: one.raw }));
    singlePart = one.build;

    const two = tampered('3d500002');
    dir = await mkdtemp(join(tmpdir(), 'gl-md5-'));
    await writeBuildDir(dir, { ...two.build, files: two.build.files.map((f) => (f.name.endsWith('.raw') ? { name: f.name, data: two.raw } : f)) });
    notMd5Etag = two.build;
  });
  after(async () => {
    await Promise.all([registry?.stop(), s3?.close(), dir ? rm(dir, { recursive: true, force: true }) : undefined]);
  });

  const publish = (b: SampleBuild, mode: string) => {
    const local = b === notMd5Etag ? { SOURCE_DIR: dir } : {};
    return firstJob(
      createHandler({ env: { ...s3.env, ...local, REGISTRY: `http://${registry.host}/md5-${mode}`, MD5_CHECK: mode, STATE_PREFIX: `oci-publisher/${mode}/` }, logSink: () => undefined })(
        s3Event(BUCKET, `meta/singles/${b.base}`),
      ),
    );
  };
  const MISMATCH = /\.raw: md5 [0-9a-f]{32}, but the metadata says [0-9a-f]{32}/;

  it('etag (the default) catches a single-part object that differs', async () => {
    const job = await publish(singlePart, 'etag');
    assert.equal(job.outcome, 'failed');
    assert.equal(job.errorKind, 'integrity');
    assert.match(job.error ?? '', MISMATCH);
  });

  it('etag leaves an object whose ETag is not its MD5 unchecked (uploaded in parts)', async () => {
    const job = await publish(notMd5Etag, 'etag');
    assert.equal(job.outcome, 'published', job.error);
  });

  it('stream catches both, by hashing every byte', async () => {
    for (const b of [singlePart, notMd5Etag]) {
      const job = await publish(b, 'stream');
      assert.equal(job.outcome, 'failed');
      assert.match(job.error ?? '', MISMATCH);
    }
  });

  it('off checks nothing', async () => {
    assert.equal((await publish(singlePart, 'off')).outcome, 'published');
  });
});
