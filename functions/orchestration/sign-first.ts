/**
 * sign-first: after a key rotation, makes the configured key's signature the first layer of the `.sig` of every
 * manifest a version holds, since gardenlinux-update reads only that layer.
 *
 * For the main repository and each container sub-repository that has the version, it reads `<repo>:<version>` and
 * takes every Garden Linux entry (an artifact manifest), and the container entries when those are signed
 * (SIGN_CONTAINER_IMAGES). For each it reads the `.sig`, signs with the configured key when no layer holds a valid
 * signature of it (appended, as a publication does), and moves that layer to the front, keeping every other layer
 * in its order: the new config blob first, then one manifest PUT. Idempotent: when the key's signature is first
 * already, nothing is written (a second run makes HEAD and GET requests only).
 *
 * A publication never does this (sign-manifest.ts): which key updaters trust first is the operator's decision.
 */
import { isContainerEntry } from '../gardenlinux/version-index';
import { sha256Digest } from '../oci/digest';
import { IndexSchema, parseJson } from '../oci/descriptor';
import { INDEX_TYPES } from '../oci/media-types';
import { keyFingerprint, type Signer } from '../signing/signer';
import type { Target } from '../target/target';
import { InputError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';
import type { JobCounters } from './context';
import { bufferStream } from './file-transfer';
import { putSignatureFirst, type FirstSignatureResult, type SignatureBlobs } from './sign-manifest';

export interface SignFirstOptions {
  /** the main repository first, then the container sub-repositories */
  targets: readonly Target[];
  version: string;
  signer: Signer;
  /** container image manifests are signed too (SIGN_CONTAINER_IMAGES) */
  signContainerImages: boolean;
  logger: Logger;
  /** what was uploaded and found (the signature blobs) */
  counters: JobCounters;
  /** filled as each manifest is done, so that a job that fails half-way still reports what it did */
  results?: FirstSignatureResult[];
  /** signature images handled at once */
  concurrency?: number;
}

interface Work {
  target: Target;
  digest: string;
  subject: string;
}

/** Small blobs, each uploaded unless the target has it, counted into the job's counters. */
function blobsCountedIn(counters: JobCounters): SignatureBlobs {
  return {
    async ensureBuffer(target, bytes, what, digest = sha256Digest(bytes)) {
      if (await target.hasBlob(digest)) {
        counters.blobsSkipped++;
        return { digest, size: bytes.length };
      }
      const r = await target.pushBlob({ digest, size: bytes.length, what, open: async () => bufferStream(bytes) });
      counters.blobsUploaded++;
      counters.bytesUploaded += r.size;
      return { digest: r.digest, size: r.size };
    },
  };
}

/** The manifests of the version whose signatures are ours to order, in index order, each once. */
async function manifestsToSign(o: SignFirstOptions): Promise<Work[]> {
  const work: Work[] = [];
  const seen = new Set<string>();
  for (const [i, target] of o.targets.entries()) {
    const snapshot = await target.getManifest(o.version);
    if (!snapshot) {
      // A sub-repository without this version (no container build of its flavors) is not part of it.
      if (i === 0) throw new InputError(`${target.display}:${o.version} does not exist; nothing was signed`);
      continue;
    }
    const what = `${target.display}:${o.version}`;
    if (!INDEX_TYPES.includes(snapshot.mediaType)) throw new InputError(`${what} is a ${snapshot.mediaType}, not an image index; nothing was signed`);
    const index = parseJson(IndexSchema, snapshot.bytes, what);
    for (const entry of index.manifests) {
      const cname = entry.annotations?.cname;
      if (cname === undefined && !(o.signContainerImages && isContainerEntry(entry))) continue;
      const key = `${target.id}@${entry.digest}`;
      if (seen.has(key)) continue;
      seen.add(key);
      work.push({ target, digest: entry.digest, subject: cname ?? `${entry.platform?.architecture ?? 'unknown'} image` });
    }
  }
  return work;
}

export async function signFirst(o: SignFirstOptions): Promise<FirstSignatureResult[]> {
  const log = o.logger;
  const results = o.results ?? [];
  const work = await manifestsToSign(o);
  const blobs = blobsCountedIn(o.counters);
  const position = new Map<FirstSignatureResult, number>();
  await mapLimit(work, o.concurrency ?? 4, async (w, i) => {
    // A manifest another tool deleted keeps its index entry until a reindex; signing what is gone helps nobody.
    if ((await w.target.resolve(w.digest)) === undefined) {
      log.warn('the version index names a manifest that does not exist: not signed', { repository: w.target.display, digest: w.digest, subject: w.subject });
      return;
    }
    const r = await putSignatureFirst(w.target, w.digest, o.signer, blobs, log.child({ subject: w.subject }));
    const result: FirstSignatureResult = { subject: w.subject, ...r };
    position.set(result, i);
    results.push(result);
  });
  // Done in any order; reported in the indexes' order.
  results.sort((a, b) => (position.get(a) ?? 0) - (position.get(b) ?? 0));
  const count = (a: FirstSignatureResult['action']) => results.filter((r) => r.action === a).length;
  log.info(`signatures of ${o.version} put first`, {
    version: o.version,
    key: o.signer.description,
    keyFingerprint: keyFingerprint(o.signer.publicKey),
    manifests: results.length,
    alreadyFirst: count('already-first'),
    moved: count('moved'),
    signed: count('signed'),
    signedAndMoved: count('signed-and-moved'),
  });
  return results;
}
