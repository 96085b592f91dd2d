/**
 * A build pulled back out of the registry (`gl-oci-publish pull`): `<dir>/objects/<base>/<file>` for every file of
 * its artifact manifest and a metadata document `<dir>/meta/singles/<base>` made from it, from the registry alone.
 *
 * 1. find — the artifact manifest through the version index `<repo>:<version>` (the entry whose cname is the base
 *    name), else through its tag `<version>-<base>-<arch>`; check that it is this build's (pulled-build.ts);
 * 2. signature — with a public key, the manifest's cosign signature must verify before anything is written;
 * 3. look — every file's place in the output directory: a file with the same bytes is kept (not downloaded), other
 *    bytes are refused unless `force`; a refusal writes nothing;
 * 4. download — every other blob streamed to a temporary name in its directory, checked against its digest and
 *    size while it is written;
 * 5. commit — only when every file is complete and checked, and the metadata document is made: each temporary
 *    file is renamed to its name, the metadata document last (as in the bucket, where it says "complete").
 *
 * A failure before the commit removes the temporary files and the directories this pull made, so the output
 * directory is as it was: never a truncated or unchecked file under a real name.
 */
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, realpath, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { findBuildEntry, outputAction, planPull, renderMetadata, type Existing, type OutputAction, type PulledFile } from '../gardenlinux/pulled-build';
import { metadataKey, objectsPrefix, parseBaseName, type BaseName } from '../gardenlinux/naming';
import { sha256Digest } from '../oci/digest';
import { IndexSchema, parseJson } from '../oci/descriptor';
import { INDEX_TYPES } from '../oci/media-types';
import { keyFingerprint, SigningError } from '../signing/signer';
import { checkSignature, type FirstLayerSigner } from '../signing/verify-signature';
import type { FetchedManifest, Target } from '../target/target';
import { errorCode, InputError, IntegrityError } from '../util/errors';
import { mapLimit } from '../util/limiter';
import type { Logger } from '../util/log';
import type { TransferObserver } from './context';

export interface PullOptions {
  /** the repository the build was published to */
  target: Target;
  base: string;
  /** the version index to look in; the base name's version by default */
  version?: string;
  /** the output directory, laid out like the bucket; made when missing */
  to: string;
  /** check the artifact manifest's cosign signature against this key before writing anything */
  publicKey?: KeyObject;
  /** replace files whose bytes differ (identical ones are always kept) */
  force?: boolean;
  /** blobs downloaded at once */
  concurrency?: number;
  logger: Logger;
  /** downloads as they go (the CLI's progress display) */
  progress?: TransferObserver;
}

export type FileOutcome = 'written' | 'unchanged' | 'replaced';

export interface PullResult {
  base: string;
  repository: string;
  manifest: {
    digest: string;
    /** how it was found: its entry in the version index, or its tag (then it is in no index) */
    foundBy: 'index' | 'tag';
    /** the index or tag it was found through */
    reference: string;
  };
  /** with a public key: the key's fingerprint, and who signs layer 0 (the only layer gardenlinux-update reads) */
  signature?: { key: string; firstLayer: FirstLayerSigner };
  /** the output directory, absolute */
  to: string;
  files: Array<{ name: string; digest: string; size: number; outcome: FileOutcome }>;
  /** layers unpacked from a PXE bundle, which are in the bundle written and not written on their own */
  bundleMembers: string[];
  metadata: { key: string; outcome: FileOutcome };
  bytesWritten: number;
  durationMs: number;
}

const MAX_TEXT_FILE = 1024 * 1024;

/** Whether `path` is `root` or below it (both absolute, normalised). */
function within(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

const OUTCOME: Record<Exclude<OutputAction, 'conflict'>, FileOutcome> = { write: 'written', keep: 'unchanged', replace: 'replaced' };

export async function pullBuild(o: PullOptions): Promise<PullResult> {
  const started = Date.now();
  const name = parseBaseName(o.base);
  const log = o.logger.child({ base: name.base });
  const target = o.target;

  // 1. The artifact manifest, and what of it is a file.
  const found = await findManifest(target, name, o.version ?? name.version);
  const plan = planPull(found.manifest.bytes, name, `${target.display}@${found.manifest.digest}`);
  if (found.foundBy === 'tag') {
    log.warn('the build is in no version index; pulling what its tag names', { tag: found.reference, reason: found.why });
  }
  log.info('pulling build', {
    repository: target.display,
    manifest: found.manifest.digest,
    files: plan.files.length,
    bytes: plan.files.reduce((n, f) => n + f.size, 0),
    ...(plan.bundleMembers.length > 0 ? { bundleMembers: plan.bundleMembers } : {}),
  });

  // 2. The signature, before anything is written.
  let signature: PullResult['signature'];
  if (o.publicKey) {
    const key = keyFingerprint(o.publicKey);
    const check = await checkSignature(target, found.manifest.digest, o.publicKey);
    if (!check.cosign) {
      throw new SigningError(
        `${target.display}@${found.manifest.digest} (${name.base}) has no signature that verifies with the public key ${key} (${check.problem ?? 'no layer verifies'}); nothing was written`,
      );
    }
    if (!check.updater) log.warn('the signature verifies, but its first layer, the only one gardenlinux-update reads, does not', { problem: check.problem });
    signature = { key, firstLayer: check.firstLayer };
  }

  // 3. What is in the output directory already.
  const root = resolve(o.to);
  const objectsDir = join(root, ...objectsPrefix(name.base).split('/').filter(Boolean));
  const metaPath = join(root, ...metadataKey(name.base).split('/'));
  const places = await Promise.all(
    plan.files.map(async (f) => {
      const existing = await inspect(join(objectsDir, f.name), f.size);
      return { file: f, existing, action: outputAction(existing, f, o.force === true) };
    }),
  );
  const refused = places.filter((p) => p.action === 'conflict');
  if (refused.length > 0) throw conflict(refused.map((p) => ({ path: join(objectsDir, p.file.name), existing: p.existing })));

  // 4. Downloads to temporary names; 5. the commit. Nothing is renamed before everything is checked.
  const work = new Staging(root);
  try {
    await work.makeDir(objectsDir);
    const fetched = places.filter((p) => p.action !== 'keep');
    const md5 = new Map<string, string>(places.flatMap((p) => (p.existing.kind === 'file' && p.existing.md5 && p.action === 'keep' ? [[p.file.name, p.existing.md5] as const] : [])));
    const controller = new AbortController();
    await mapLimit(fetched, Math.max(1, o.concurrency ?? 4), async (p) => {
      try {
        md5.set(p.file.name, await download(target, p.file, work.temporary(join(objectsDir, p.file.name)), controller.signal, o.progress));
      } catch (err) {
        // The pull has failed: the downloads in flight stop now, and none starts.
        controller.abort(err);
        throw err;
      }
    });

    const text = async (suffix: string): Promise<string | undefined> => {
      const f = plan.files.find((x) => x.name === `${name.base}${suffix}`);
      if (!f || f.size > MAX_TEXT_FILE) return undefined;
      return (await readFile(work.staged(join(objectsDir, f.name)) ?? join(objectsDir, f.name))).toString('utf8');
    };
    const [release, requirements] = await Promise.all([text('.release'), text('.requirements')]);
    const document = Buffer.from(
      renderMetadata(plan, {
        md5,
        ...(release !== undefined ? { release } : {}),
        ...(requirements !== undefined ? { requirements } : {}),
        source: `${target.display}@${found.manifest.digest}`,
      }),
    );
    const metaExisting = await inspect(metaPath, document.length);
    const metaAction = outputAction(metaExisting, { digest: sha256Digest(document), size: document.length }, o.force === true);
    if (metaAction === 'conflict') throw conflict([{ path: metaPath, existing: metaExisting }], 'metadata document');
    if (metaAction !== 'keep') {
      await work.makeDir(dirname(metaPath));
      await writeFile(work.temporary(metaPath), document, { flag: 'wx', mode: 0o644 });
    }
    await work.commit(metaPath);

    const result: PullResult = {
      base: name.base,
      repository: target.display,
      manifest: { digest: found.manifest.digest, foundBy: found.foundBy, reference: found.reference },
      ...(signature ? { signature } : {}),
      to: root,
      files: places.map((p) => ({ name: p.file.name, digest: p.file.digest, size: p.file.size, outcome: OUTCOME[p.action as Exclude<OutputAction, 'conflict'>] })),
      bundleMembers: plan.bundleMembers,
      metadata: { key: metadataKey(name.base), outcome: OUTCOME[metaAction] },
      bytesWritten: fetched.reduce((n, p) => n + p.file.size, 0) + (metaAction === 'keep' ? 0 : document.length),
      durationMs: Date.now() - started,
    };
    log.info('pulled build', {
      to: root,
      written: result.files.filter((f) => f.outcome !== 'unchanged').length,
      unchanged: result.files.filter((f) => f.outcome === 'unchanged').length,
      bytesWritten: result.bytesWritten,
      metadata: result.metadata.outcome,
      durationMs: result.durationMs,
    });
    return result;
  } catch (err) {
    await work.discard();
    throw err;
  }
}

interface Found {
  manifest: FetchedManifest;
  foundBy: 'index' | 'tag';
  reference: string;
  /** why the version index did not name it (found by tag) */
  why?: string;
}

/** The build's artifact manifest: through the version index, else through its tag; an InputError when neither names it. */
async function findManifest(target: Target, name: BaseName, version: string): Promise<Found> {
  const indexRef = `${target.display}:${version}`;
  const current = await target.getManifest(version);
  let why: string;
  if (current === undefined) why = `there is no version index ${indexRef}`;
  else if (!INDEX_TYPES.includes(current.mediaType)) why = `${indexRef} is a ${current.mediaType}, not a version index`;
  else {
    const entry = findBuildEntry(parseJson(IndexSchema, current.bytes, indexRef), name);
    if (entry) {
      const manifest = await target.getManifest(entry.digest);
      if (!manifest) throw new InputError(`${indexRef} names ${entry.digest} for ${name.base}, but ${target.display} has no such manifest`);
      if (manifest.bytes.length !== entry.size) {
        throw new IntegrityError(`${target.display}@${entry.digest} is ${manifest.bytes.length} bytes, but ${indexRef} says ${entry.size}`);
      }
      return { manifest, foundBy: 'index', reference: indexRef };
    }
    why = `the version index ${indexRef} has no entry for it`;
  }
  const tags = [...new Set([version, name.version].map((v) => `${v}-${name.base}-${name.arch}`))];
  for (const tag of tags) {
    const manifest = await target.getManifest(tag);
    if (manifest) return { manifest, foundBy: 'tag', reference: `${target.display}:${tag}`, why };
  }
  throw new InputError(`${name.base} is not in ${target.display}: ${why}, and there is no tag ${tags.join(' or ')}`);
}

/** What is at `path`: nothing, a regular file (hashed when it has the expected size), or something else. */
async function inspect(path: string, expectedSize: number): Promise<Existing> {
  let s;
  try {
    s = await lstat(path);
  } catch (err) {
    if (errorCode(err as Error) === 'ENOENT') return { kind: 'absent' };
    throw err;
  }
  if (s.isSymbolicLink()) return { kind: 'other', what: 'a symbolic link' };
  if (s.isDirectory()) return { kind: 'other', what: 'a directory' };
  if (!s.isFile()) return { kind: 'other', what: 'not a regular file' };
  if (s.size !== expectedSize) return { kind: 'file', size: s.size };
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  for await (const chunk of createReadStream(path)) {
    sha.update(chunk as Buffer);
    md5.update(chunk as Buffer);
  }
  return { kind: 'file', size: s.size, digest: `sha256:${sha.digest('hex')}`, md5: md5.digest('hex') };
}

function conflict(places: Array<{ path: string; existing: Existing }>, what = 'files'): InputError {
  const listed = places.slice(0, 5).map((p) => `${p.path}${p.existing.kind === 'other' ? ` (${p.existing.what})` : ''}`);
  const more = places.length > listed.length ? ` and ${places.length - listed.length} more` : '';
  const others = places.some((p) => p.existing.kind === 'other');
  return new InputError(
    `${places.length === 1 ? `the ${what === 'files' ? 'file' : what}` : `${places.length} ${what}`} ${listed.join(', ')}${more} ` +
      `${places.length === 1 ? 'differs' : 'differ'} from the build in the registry; nothing was written` +
      (others ? ' (move away what is not a regular file)' : `; pull with --force to replace ${places.length === 1 ? 'it' : 'them'}`),
  );
}

/**
 * Streams one blob to `path` (a new file), checked against the layer's digest and size while it is written (the
 * target's stream fails unless its bytes match); returns the md5 of its bytes, for the metadata document.
 */
async function download(target: Target, file: PulledFile, path: string, signal: AbortSignal, progress?: TransferObserver): Promise<string> {
  signal.throwIfAborted();
  const blob = await target.openBlob(file.digest, signal);
  if (!blob) throw new InputError(`${target.display}: the blob ${file.digest} of ${file.name} is missing`);
  if (blob.size !== file.size) {
    blob.stream.destroy();
    throw new IntegrityError(`${target.display}: the blob ${file.digest} of ${file.name} is ${blob.size} bytes, but the manifest says ${file.size}`);
  }
  const md5 = createHash('md5');
  const handle = progress?.started(file.name, file.size);
  const tap = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback) {
      md5.update(chunk);
      if (handle !== undefined) progress?.advanced(handle, chunk.length);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(blob.stream, tap, createWriteStream(path, { flags: 'wx', mode: 0o644 }), { signal });
  } finally {
    if (handle !== undefined) progress?.finished(handle);
  }
  return md5.digest('hex');
}

/**
 * The files and directories of one pull until its commit: temporary files next to their final names, and the
 * directories it made, which discard() removes again (when empty).
 */
class Staging {
  private readonly made: string[] = [];
  /** final path → temporary path */
  private readonly files = new Map<string, string>();
  private readonly prefix = `.gl-oci-pull-${process.pid}-${randomBytes(4).toString('hex')}-`;
  private realRoot: string | undefined;

  constructor(private readonly root: string) {}

  /** Makes `dir` (and its parents), and refuses it when its real path leads outside the output directory. */
  async makeDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true });
    if (first !== undefined) {
      for (let d = dir; ; d = dirname(d)) {
        this.made.push(d);
        if (d === first || dirname(d) === d) break;
      }
    }
    this.realRoot ??= await realpath(this.root);
    const real = await realpath(dir);
    if (!within(real, this.realRoot)) throw new InputError(`${dir} leads outside ${this.root} (its real path is ${real}): refused`);
  }

  /** A new temporary name next to `final`, which commit() renames to `final` (and discard() removes). */
  temporary(final: string): string {
    const path = join(dirname(final), `${this.prefix}${this.files.size}`);
    this.files.set(final, path);
    return path;
  }

  /** The temporary file that holds `final`, when this pull writes it. */
  staged(final: string): string | undefined {
    return this.files.get(final);
  }

  /** Renames every temporary file to its name, `last` at the end. */
  async commit(last: string): Promise<void> {
    const order = [...this.files.keys()].sort((a, b) => (a === last ? 1 : b === last ? -1 : 0));
    for (const final of order) await rename(this.files.get(final) as string, final);
    this.files.clear();
  }

  async discard(): Promise<void> {
    await Promise.all([...this.files.values()].map((t) => rm(t, { force: true })));
    this.files.clear();
    for (const d of this.made) {
      try {
        await rmdir(d);
      } catch {
        // not empty (something else is in it) or gone: left as it is
      }
    }
  }
}
