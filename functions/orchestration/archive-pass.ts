/**
 * A container build's `.oci` archive: a layer of the artifact manifest itself, and the container image it holds,
 * whose blobs are pushed byte for byte (spec §4).
 *
 * `inspectArchive` indexes it with ranged reads (headers, index.json, manifest, config) and checks it before
 * anything is written. `transferArchive` then moves what is missing in one pass (single-pass.ts): the whole
 * archive into its upload and, by byte range, each missing image blob into its own; the archive blob commits only
 * once every image blob arrived intact. When the archive is published already, only the missing image blobs are
 * read, each from its own range.
 */
import { inspectContainerArchive, type ArchiveBlob } from '../oci/container-archive';
import { sha256Digest } from '../oci/digest';
import type { Descriptor } from '../oci/descriptor';
import { indexTar, type TarMember } from '../oci/tar-index';
import type { SourceFacts } from '../storage/state-store';
import type { Target } from '../target/target';
import { mapLimit } from '../util/limiter';
import type { Slice } from './fan-out';
import { bufferStream, type FileTransfer, type PublishedBlob, type SourceFile } from './file-transfer';
import { SinglePass } from './single-pass';

export interface ContainerFacts {
  manifest: Descriptor;
  manifestBytes: Buffer;
  platform: { architecture: string; os: string; variant?: string };
}

/** What `inspectArchive` found: the archive and its image are all in place, or this is what must move. */
export type ArchivePlan =
  | { kind: 'present'; archive: PublishedBlob; image: ContainerFacts }
  | { kind: 'transfer'; known?: SourceFacts; image: ContainerFacts; blobs: ArchiveBlob[] };

/**
 * Which image the archive holds (checked against every digest read), where each blob lies, and whether anything
 * must move at all.
 */
export async function inspectArchive(
  t: FileTransfer,
  file: SourceFile,
  glTarget: Target,
  imageTarget: Target,
  want: { refName: string; arch: string },
): Promise<ArchivePlan> {
  const what = t.what(file);
  const known = await t.facts(file);
  const cachedBytes = known?.container ? Buffer.from(known.container.manifestBytes, 'base64') : undefined;
  // Remembered manifest bytes are used only when they still are what their digest says.
  if (known?.container && cachedBytes && sha256Digest(cachedBytes) === known.container.manifest.digest) {
    const image: ContainerFacts = { manifest: known.container.manifest, manifestBytes: cachedBytes, platform: known.container.platform };
    // A manifest in the registry implies its blobs are there (registries refuse it otherwise).
    const [archivePresent, manifestPresent] = await Promise.all([
      glTarget.hasBlob(known.digest),
      imageTarget.resolve(known.container.manifest.digest).then((d) => d !== undefined),
    ]);
    if (archivePresent && manifestPresent) return { kind: 'present', archive: { digest: known.digest, size: known.size }, image };
  }
  const members = await indexTar((start, length) => t.readRange(file, start, length), file.size, what);
  const inspected = await inspectContainerArchive(members, (m: TarMember) => t.readRange(file, m.offset, m.size), want, what);
  return {
    kind: 'transfer',
    ...(known ? { known } : {}),
    image: {
      manifest: { mediaType: inspected.manifest.mediaType, digest: inspected.manifest.digest, size: inspected.manifest.size },
      manifestBytes: inspected.manifest.bytes,
      platform: inspected.platform,
    },
    blobs: inspected.blobs,
  };
}

/**
 * Moves what `inspectArchive` found missing: the archive itself (a layer of the artifact manifest, in
 * `glTarget`) and the image's blobs, byte for byte (in `imageTarget`). The caller pushes the image manifest.
 */
export async function transferArchive(
  t: FileTransfer,
  file: SourceFile,
  plan: ArchivePlan,
  glTarget: Target,
  imageTarget: Target,
): Promise<{ archive: PublishedBlob; image: ContainerFacts }> {
  if (plan.kind === 'present') {
    t.stats.blobsSkipped++;
    return { archive: plan.archive, image: plan.image };
  }
  const { image } = plan;
  let known = plan.known;
  const remember = async (archive: PublishedBlob): Promise<void> => {
    known = { etag: file.etag, ...archive };
    // Saved as soon as the archive is in: a retry then reads only the image blobs still missing.
    await t.saveFacts(file, {
      ...archive,
      container: { manifest: image.manifest, manifestBytes: image.manifestBytes.toString('base64'), platform: image.platform },
    });
  };
  return t.limiter.run(() =>
    t.withPassRetries(file, async () => {
      const presence = await Promise.all(plan.blobs.map((b) => imageTarget.hasBlob(b.digest)));
      const missing = plan.blobs.filter((_, i) => !presence[i]);
      t.stats.blobsSkipped += plan.blobs.length - missing.length;
      const needArchive = known === undefined || !(await glTarget.hasBlob(known.digest));
      if (needArchive) await archivePass(t, file, known, missing, glTarget, imageTarget, remember);
      else {
        t.stats.blobsSkipped++;
        await blobsByRange(t, file, missing, imageTarget);
      }
      const k = known as SourceFacts;
      return { archive: { digest: k.digest, size: k.size }, image };
    }),
  );
}

/** One read: the whole archive to one upload, each missing blob's byte range to its own. */
async function archivePass(
  t: FileTransfer,
  file: SourceFile,
  known: SourceFacts | undefined,
  missing: readonly ArchiveBlob[],
  glTarget: Target,
  imageTarget: Target,
  remember: (archive: PublishedBlob) => Promise<void>,
): Promise<void> {
  const what = t.what(file);
  const source = await t.open(file);
  const pass = new SinglePass(what);
  const wholeSink = pass.sink();
  // Each image blob's upload starts when the read reaches its bytes: one at a time besides the archive's, so a
  // pass never waits for a connection that an upload further on holds (the pool is finite).
  const slices: Slice[] = missing.map((b) => {
    const sink = pass.sink();
    const upload = { digest: b.digest, size: b.size, what: `${what} blob ${b.digest}`, once: true, open: async () => sink };
    return { start: b.member.offset, end: b.member.offset + b.size, sink, onStart: () => void pass.upload(true, () => t.upload(imageTarget, upload)) };
  });
  // Of unknown digest, the archive commits only once every image blob arrived intact: a bad archive leaves nothing.
  t.wholeFileUpload(pass, glTarget, file, known?.digest, wholeSink, remember);
  await pass.run(source, file.size, [wholeSink], slices);
}

/** The archive is there already: read only the missing blobs, each from its own range. */
async function blobsByRange(t: FileTransfer, file: SourceFile, missing: readonly ArchiveBlob[], imageTarget: Target): Promise<void> {
  await mapLimit(missing, t.ctx.blobConcurrency, (b) =>
    t.upload(imageTarget, {
      digest: b.digest,
      size: b.size,
      what: `${t.what(file)} blob ${b.digest}`,
      // An empty blob has no range to read.
      open: async () => (b.size === 0 ? bufferStream(Buffer.alloc(0)) : t.open(file, { start: b.member.offset, end: b.member.offset + b.size - 1 })),
    }),
  );
}
