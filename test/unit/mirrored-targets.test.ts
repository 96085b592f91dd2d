/**
 * The mirror's rules, with targets that keep blobs in memory: one read for every destination, a destination that
 * fails is set aside while the others complete, a failure of the source is nobody's, bytes are checked once.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PassThrough, Readable } from 'node:stream';
import { sha256Digest } from '../../functions/oci/digest';
import { Mirror } from '../../functions/target/mirrored-targets';
import type { BlobSource, Target, TargetSet, UploadResult } from '../../functions/target/target';
import { IntegrityError } from '../../functions/util/errors';
import { Logger } from '../../functions/util/log';

const silent = new Logger({ sink: () => undefined });

/** A target keeping blobs in memory; `fail` makes its uploads fail after that many bytes (0: at once). */
function memoryTarget(name: string, options: { failAfter?: number; slowMs?: number; stall?: boolean } = {}): Target & { blobs: Map<string, Buffer>; pushes: number } {
  const blobs = new Map<string, Buffer>();
  const t = {
    id: name,
    display: name,
    repositoryName: name,
    blobs,
    pushes: 0,
    hasBlob: async (d: string) => blobs.has(d),
    blobSize: async (d: string) => blobs.get(d)?.length,
    fetchBlob: async (d: string) => blobs.get(d),
    openBlob: async () => undefined,
    resolve: async () => undefined,
    getManifest: async () => undefined,
    putManifest: async () => '',
    async pushBlob(blob: BlobSource): Promise<UploadResult> {
      t.pushes++;
      const chunks: Buffer[] = [];
      let n = 0;
      const source = await blob.open();
      // A stalled registry: takes the request and never reads its body.
      if (options.stall) return new Promise<UploadResult>((_, reject) => source.once('error', reject));
      for await (const c of source) {
        if (options.failAfter !== undefined && n + (c as Buffer).length > options.failAfter) throw new Error(`${name} refused the upload`);
        if (options.slowMs) await new Promise((r) => setTimeout(r, options.slowMs));
        chunks.push(c as Buffer);
        n += (c as Buffer).length;
        blob.onBytes?.((c as Buffer).length);
      }
      const bytes = Buffer.concat(chunks);
      const seen = blob.checkedUpstream?.();
      const digest = seen?.digest ?? sha256Digest(bytes);
      blobs.set(digest, bytes);
      return { digest, size: bytes.length };
    },
  };
  return t;
}

const set = (t: Target): TargetSet => ({ main: t, repository: () => t, forJob: () => set(t) });

/** A source of `bytes` in 64 KiB chunks that counts how often it was opened. */
function source(bytes: Buffer, opened: { count: number }, fail?: Error): () => Promise<Readable> {
  return async () => {
    opened.count++;
    const s = new PassThrough();
    void (async () => {
      for (let i = 0; i < bytes.length; i += 65536) {
        if (fail && i >= bytes.length / 2) {
          s.destroy(fail);
          return;
        }
        if (!s.write(bytes.subarray(i, i + 65536))) await new Promise((r) => s.once('drain', r));
      }
      s.end();
    })();
    return s;
  };
}

const data = Buffer.alloc(1024 * 1024, 7);

describe('a mirror of several destinations', () => {
  it('reads once for all, and sets aside the one that fails while the others complete', async () => {
    const [a, b, c] = [memoryTarget('a'), memoryTarget('b', { failAfter: 200_000 }), memoryTarget('c', { slowMs: 1 })];
    const mirror = new Mirror([set(a), set(b), set(c)], silent);
    const opened = { count: 0 };
    const r = await mirror.target().pushBlob({ size: data.length, what: 'blob', open: source(data, opened), once: true });
    assert.equal(opened.count, 1, 'one read');
    assert.equal(r.digest, sha256Digest(data));
    assert.ok(a.blobs.has(r.digest) && c.blobs.has(r.digest) && !b.blobs.has(r.digest));
    assert.equal(mirror.live().length, 2);
    assert.match(String(mirror.members[1]?.failure), /b refused the upload/);
    assert.deepEqual(mirror.members.map((m) => m.counters.blobsUploaded), [1, 0, 1]);
    // The one set aside gets no further requests.
    await mirror.target().pushBlob({ size: 3, what: 'small', open: source(Buffer.from('abc'), opened) });
    assert.equal(b.pushes, 1);
  });

  it('skips the destinations that have the blob, and counts them so', async () => {
    const [a, b] = [memoryTarget('a'), memoryTarget('b')];
    a.blobs.set(sha256Digest(data), data);
    const mirror = new Mirror([set(a), set(b)], silent);
    const digest = sha256Digest(data);
    assert.equal(await mirror.target().hasBlob(digest), false, 'not every destination has it');
    await mirror.target().pushBlob({ digest, size: data.length, what: 'blob', open: source(data, { count: 0 }) });
    assert.equal(a.pushes, 0);
    assert.equal(b.pushes, 1);
    assert.deepEqual(mirror.members.map((m) => [m.counters.blobsSkipped, m.counters.blobsUploaded]), [[1, 0], [0, 1]]);
  });

  it('when every destination fails, the first failure is thrown', async () => {
    const mirror = new Mirror([set(memoryTarget('a', { failAfter: 0 })), set(memoryTarget('b', { failAfter: 0 }))], silent);
    await assert.rejects(mirror.target().pushBlob({ size: data.length, what: 'blob', open: source(data, { count: 0 }), once: true }), /a refused the upload/);
    assert.equal(mirror.live().length, 0);
  });

  it('a failure of the source fails the upload as it is, and no destination is set aside', async () => {
    const mirror = new Mirror([set(memoryTarget('a')), set(memoryTarget('b'))], silent);
    await assert.rejects(mirror.target().pushBlob({ size: data.length, what: 'blob', open: source(data, { count: 0 }, new Error('S3 went away')), once: true }), /S3 went away/);
    assert.equal(mirror.live().length, 2);
  });

  it('checks the bytes once, upstream: a wrong digest fails the read before any destination has the last byte', async () => {
    const [a, b] = [memoryTarget('a'), memoryTarget('b')];
    const mirror = new Mirror([set(a), set(b)], silent);
    await assert.rejects(
      mirror.target().pushBlob({ digest: sha256Digest('something else'), size: data.length, what: 'blob', open: source(data, { count: 0 }), once: true }),
      (err: unknown) => err instanceof IntegrityError,
    );
    assert.equal(a.blobs.size + b.blobs.size, 0);
    assert.equal(mirror.live().length, 2, 'bad bytes are the source\'s fault');
  });

  it('one destination is no mirror: its own target, and its failures are thrown', async () => {
    const a = memoryTarget('a', { failAfter: 0 });
    const mirror = new Mirror([set(a)], silent);
    assert.equal(mirror.target(), a);
    await assert.rejects(mirror.each('x', async () => Promise.reject(new Error('down'))), /down/);
  });

  it('a once-only source is read to its end when every live destination has the blob (its pass would wait)', async () => {
    const [a, b] = [memoryTarget('a'), memoryTarget('b', { failAfter: 0 })];
    const digest = sha256Digest(data);
    a.blobs.set(digest, data);
    const mirror = new Mirror([set(a), set(b)], silent);
    assert.equal(await mirror.target().hasBlob(digest), false, 'b lacks it');
    // b fails on another blob meanwhile, and is set aside.
    await mirror.target().pushBlob({ size: 3, what: 'other', open: source(Buffer.from('xyz'), { count: 0 }), once: true });
    assert.equal(mirror.live().length, 1);
    const sink = new PassThrough();
    let read = 0;
    const feeding = (async () => {
      for (let i = 0; i < data.length; i += 65536) if (!sink.write(data.subarray(i, i + 65536))) await new Promise((r) => sink.once('drain', r));
      sink.end();
    })();
    sink.on('data', (c: Buffer) => (read += c.length));
    const r = await mirror.target().pushBlob({ digest, size: data.length, what: 'blob', open: async () => sink, once: true });
    await feeding;
    assert.equal(r.digest, digest);
    assert.equal(read, data.length, 'the sink was read to its end');
  });

  it('a destination that takes no bytes is cut off after the stall time, and the others complete', async () => {
    const [a, b] = [memoryTarget('a'), memoryTarget('b', { stall: true })];
    const mirror = new Mirror([set(a), set(b)], silent, () => false, 200);
    const started = Date.now();
    const r = await mirror.target().pushBlob({ size: data.length, what: 'blob', open: source(data, { count: 0 }), once: true });
    assert.ok(a.blobs.has(r.digest));
    assert.ok(Date.now() - started < 5_000, 'not held back for long');
    assert.match(String(mirror.members[1]?.failure), /took no bytes for 0 s while the other destinations waited/);
    assert.equal((mirror.members[1]?.failure as { retryable?: boolean }).retryable, true, 'a stall may pass: retryable');
  });

  it('counts what each destination got: skips when all have a blob, bytes only of uploads that succeeded', async () => {
    const [a, b] = [memoryTarget('a'), memoryTarget('b', { failAfter: 300_000 })];
    const digest = sha256Digest(data);
    const mirror = new Mirror([set(a), set(b)], silent);
    await mirror.target().pushBlob({ digest, size: data.length, what: 'blob', open: source(data, { count: 0 }), once: true });
    assert.deepEqual(mirror.members.map((m) => m.counters.bytesUploaded), [data.length, 0], 'the failed attempt counts no bytes');
    const c = memoryTarget('c');
    c.blobs.set(digest, data);
    a.blobs.set(digest, data);
    const both = new Mirror([set(a), set(c)], silent);
    assert.equal(await both.target().hasBlob(digest), true);
    assert.deepEqual(both.members.map((m) => m.counters.blobsSkipped), [1, 1]);
  });
});
