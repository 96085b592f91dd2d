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
function memoryTarget(name: string, options: { failAfter?: number; slowMs?: number } = {}): Target & { blobs: Map<string, Buffer>; pushes: number } {
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
      for await (const c of await blob.open()) {
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
});
