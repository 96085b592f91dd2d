/**
 * Files with no inner structure: one source object, one blob. Small ones are read whole, so an existing blob is
 * found by its digest before anything is sent; large ones stream straight into their upload, their digest
 * computed on the way (and remembered under the object's ETag for the next run). The `.release` file is read
 * whole too: the artifact manifest needs its feature list.
 */
import { featuresFromRelease } from '../gardenlinux/release-file';
import type { Target } from '../target/target';
import { SMALL_FILE, type FileTransfer, type PublishedBlob, type SourceFile } from './file-transfer';

export async function transferPlainFile(t: FileTransfer, file: SourceFile, target: Target): Promise<PublishedBlob> {
  const what = t.what(file);
  const known = await t.facts(file);
  if (known) return t.limiter.run(() => t.ensure(target, { digest: known.digest, size: known.size, what, open: () => t.open(file) }));
  if (file.size <= SMALL_FILE) {
    return t.limiter.run(async () => {
      const { bytes, digest } = await t.readWhole(file);
      const blob = await t.ensureBuffer(target, bytes, what, digest);
      await t.saveFacts(file, blob);
      return blob;
    });
  }
  const md5 = t.streamMd5(file);
  const r = await t.limiter.run(() => t.upload(target, { size: file.size, what, ...(md5 ? { md5 } : {}), open: () => t.open(file) }));
  await t.saveFacts(file, { digest: r.digest, size: r.size });
  return { digest: r.digest, size: r.size };
}

/** The `.release` file: a plain file whose feature list the artifact manifest needs. */
export async function transferReleaseFile(t: FileTransfer, file: SourceFile, target: Target): Promise<{ blob: PublishedBlob; features?: string }> {
  const known = await t.facts(file);
  if (known?.features !== undefined) {
    const blob = await t.ensure(target, { digest: known.digest, size: known.size, what: t.what(file), open: () => t.open(file) });
    return { blob, features: known.features };
  }
  const { bytes, digest } = await t.readWhole(file);
  const features = featuresFromRelease(bytes.toString('utf8'));
  const blob = await t.ensureBuffer(target, bytes, t.what(file), digest);
  await t.saveFacts(file, { ...blob, ...(features !== undefined ? { features } : {}) });
  return { blob, ...(features !== undefined ? { features } : {}) };
}
