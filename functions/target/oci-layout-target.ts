/**
 * A local OCI image layout as a target (image-spec `image-layout.md`): blobs under `blobs/sha256/`, tags as
 * `org.opencontainers.image.ref.name` annotations in `index.json`. Sub-repositories are layouts in
 * sub-directories. Writes are atomic (temporary file, then rename) and `index.json` updates are serialised, in
 * the process and across processes (a lock file), so concurrent publications do not lose tags.
 *
 * Temporary files live in `.uploads/` beside `blobs/`, never in `blobs/sha256/` (where a reader takes every file
 * for a blob). Each is named after the process writing it; what a process that is gone left behind (a crash, a
 * kill, also in `blobs/sha256/` from earlier versions) is removed when the layout is next opened.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { HashingTap, isDigest, sha256Digest } from '../oci/digest';
import { REF_NAME } from '../oci/container-archive';
import { IndexSchema, parseJson, type Descriptor } from '../oci/descriptor';
import { INDEX_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX } from '../oci/media-types';
import { expectedOf } from '../registry/blob-upload';
import { checkedStream } from '../registry/repository';
import { isRetryable, RegistryError } from '../registry/errors';
import { describeError, IntegrityError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from './target';

const LOCK_STALE_MS = 60_000;

const UPLOADS = '.uploads';
/** Names of temporary files: in `.uploads/`, and (from earlier versions) `<name>.tmp-<pid>-<random>` anywhere. */
const TEMPORARY = /^(?:(\d+)-[0-9a-f]+|.*\.tmp-(\d+)-[0-9a-f]+)$/;

function tmpName(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
}

/** Whether the process with this id still runs on this machine (EPERM: it does, as another user). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class OciLayoutTarget implements Target {
  readonly id: string;
  readonly display: string;
  readonly repositoryName: string;
  private ready: Promise<void> | undefined;
  /** serialises index.json updates inside this process */
  private indexChain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dir: string,
    id: string,
    private readonly logger: Logger,
  ) {
    this.id = id;
    this.display = `oci-layout:${dir}`;
    this.repositoryName = resolve(dir);
  }

  private blobPath(digest: string): string {
    if (!isDigest(digest)) throw new IntegrityError(`"${digest}" is not a sha256 digest`);
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
      await mkdir(join(this.dir, UPLOADS), { recursive: true });
      await writeFile(join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}', { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      await this.removeLeftovers();
    })();
    return this.ready;
  }

  /** A temporary file in `.uploads/`, named after this process. */
  private tmp(): string {
    return join(this.dir, UPLOADS, `${process.pid}-${Math.random().toString(16).slice(2)}`);
  }

  /** Removes the temporary files of processes that are gone: partial uploads can be gigabytes. */
  private async removeLeftovers(): Promise<void> {
    for (const where of [join(this.dir, UPLOADS), join(this.dir, 'blobs', 'sha256'), this.dir]) {
      const names = await readdir(where).catch(() => [] as string[]);
      for (const name of names) {
        const m = TEMPORARY.exec(name);
        const pid = Number(m?.[1] ?? m?.[2]);
        if (!m || (where !== join(this.dir, UPLOADS) && m[2] === undefined) || running(pid)) continue;
        await rm(join(where, name), { force: true });
        this.logger.info('removed a temporary file an interrupted run left in the OCI layout', { file: join(where, name) });
      }
    }
  }

  async hasBlob(digest: string): Promise<boolean> {
    await this.init();
    try {
      return (await stat(this.blobPath(digest))).isFile();
    } catch {
      return false;
    }
  }

  async blobSize(digest: string): Promise<number | undefined> {
    await this.init();
    try {
      const s = await stat(this.blobPath(digest));
      return s.isFile() ? s.size : undefined;
    } catch {
      return undefined;
    }
  }

  async fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
    await this.init();
    const path = this.blobPath(digest);
    try {
      if ((await stat(path)).size > maxBytes) throw new IntegrityError(`${this.display}: blob ${digest} is larger than ${maxBytes} bytes`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const bytes = await readFile(path);
    if (sha256Digest(bytes) !== digest) throw new IntegrityError(`${this.display}: blob ${digest} holds bytes with digest ${sha256Digest(bytes)}`);
    return bytes;
  }

  async openBlob(digest: string): Promise<BlobStream | undefined> {
    await this.init();
    const path = this.blobPath(digest);
    let size: number;
    try {
      const s = await stat(path);
      if (!s.isFile()) return undefined;
      size = s.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return { size, stream: checkedStream(createReadStream(path), { digest, size, what: `${this.display}: blob ${digest}` }) };
  }

  async pushBlob(blob: BlobSource): Promise<UploadResult> {
    await this.init();
    for (let attempt = 1; ; attempt++) {
      const tmp = this.tmp();
      try {
        const tap = new HashingTap(expectedOf(blob), { failOnMismatch: true, ...(blob.onBytes ? { onBytes: blob.onBytes } : {}) });
        await pipeline(await blob.open(), tap, createWriteStream(tmp));
        const seen = tap.verify();
        await blob.beforeCommit?.();
        await rename(tmp, this.blobPath(seen.digest));
        return seen;
      } catch (err) {
        await rm(tmp, { force: true });
        if (!isRetryable(err) || blob.once || attempt >= 3) throw err;
        this.logger.warn('blob copy failed, restarting it', { blob: blob.what, attempt, error: describeError(err) });
      }
    }
  }

  private async readIndex(): Promise<{ manifests: Descriptor[]; [k: string]: unknown }> {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(this.dir, 'index.json'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
      throw err;
    }
    return parseJson(IndexSchema, bytes, `${join(this.dir, 'index.json')}`);
  }

  private async find(reference: string): Promise<Descriptor | undefined> {
    await this.init();
    if (isDigest(reference)) {
      if (!(await this.hasBlob(reference))) return undefined;
      const known = (await this.readIndex()).manifests.find((m) => m.digest === reference);
      return known ?? { mediaType: '', digest: reference, size: (await stat(this.blobPath(reference))).size };
    }
    return (await this.readIndex()).manifests.find((m) => m.annotations?.[REF_NAME] === reference);
  }

  async resolve(reference: string): Promise<string | undefined> {
    return (await this.find(reference))?.digest;
  }

  async getManifest(reference: string): Promise<FetchedManifest | undefined> {
    const desc = await this.find(reference);
    if (!desc) return undefined;
    const bytes = await readFile(this.blobPath(desc.digest));
    const digest = sha256Digest(bytes);
    if (digest !== desc.digest) throw new IntegrityError(`${this.display}: blob ${desc.digest} holds bytes with digest ${digest}`);
    let mediaType = desc.mediaType;
    if (!mediaType) {
      const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
      mediaType = typeof parsed.mediaType === 'string' ? parsed.mediaType : '';
    }
    return { bytes, mediaType, digest };
  }

  async putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
    if (bytes.length > MAX_MANIFEST_BYTES) throw new IntegrityError(`${this.display}: a manifest of ${bytes.length} bytes is above 4 MiB`);
    await this.init();
    const digest = sha256Digest(bytes);
    if (isDigest(reference) && reference !== digest) throw new IntegrityError(`manifest bytes have digest ${digest}, not ${reference}`);
    if (INDEX_TYPES.includes(mediaType)) await this.checkChildren(bytes, reference);
    if (!(await this.hasBlob(digest))) {
      const tmp = this.tmp();
      await writeFile(tmp, bytes);
      await rename(tmp, this.blobPath(digest));
    }
    if (!isDigest(reference)) await this.tag(reference, { mediaType, digest, size: bytes.length });
    return digest;
  }

  /** As registries do: an index naming a manifest that is not there is refused. */
  private async checkChildren(bytes: Buffer, reference: string): Promise<void> {
    const index = parseJson(IndexSchema, bytes, `${this.display}:${reference}`);
    for (const m of index.manifests) {
      if (!(await this.hasBlob(m.digest))) {
        throw new RegistryError(`${this.display}:${reference}: the index names ${m.digest}, which is not in the layout`, { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
      }
    }
  }

  private tag(name: string, desc: Descriptor): Promise<void> {
    const run = this.indexChain.then(() => this.withFileLock(() => this.writeTag(name, desc)));
    this.indexChain = run.catch(() => undefined);
    return run;
  }

  private async writeTag(name: string, desc: Descriptor): Promise<void> {
    const index = await this.readIndex();
    const others = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== name);
    index.manifests = [...others, { ...desc, annotations: { [REF_NAME]: name } }];
    const path = join(this.dir, 'index.json');
    const tmp = this.tmp();
    await writeFile(tmp, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, ...index, manifests: index.manifests }));
    await rename(tmp, path);
  }

  /**
   * Serialises writers in other processes (the CLI run twice at once): an exclusive lock file, stale after 60 s.
   * A stale lock is taken over by renaming it away first and checking that what was renamed is still stale, so
   * two processes that both saw it stale cannot remove each other's fresh lock.
   */
  private async withFileLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = join(this.dir, 'index.json.lock');
    for (let waited = 0; ; waited += 20) {
      try {
        const fh = await open(lock, 'wx');
        await fh.close();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
        if (age > LOCK_STALE_MS) await this.takeOver(lock);
        else if (waited > 2 * LOCK_STALE_MS) throw new PublishError('conflict', `${lock} is held by another process`);
        else await sleep(20);
      }
    }
    try {
      return await fn();
    } finally {
      await rm(lock, { force: true });
    }
  }

  private async takeOver(lock: string): Promise<void> {
    const aside = tmpName(`${lock}.stale`);
    try {
      await rename(lock, aside);
    } catch {
      return; // gone already: someone else took it over
    }
    const age = await stat(aside).then((s) => Date.now() - s.mtimeMs, () => Infinity);
    if (age <= LOCK_STALE_MS) {
      // A fresh lock was renamed (it replaced the stale one meanwhile): put it back unless a newer one is there.
      await link(aside, lock).catch(() => undefined);
    }
    await rm(aside, { force: true });
  }
}

export function layoutTargets(dir: string, logger: Logger): TargetSet {
  // The id names the directory without spelling out a local path in the state store.
  const id = `oci-layout-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
  const targets = new Map<string, OciLayoutTarget>();
  const get = (sub: string): OciLayoutTarget => {
    let t = targets.get(sub);
    if (!t) targets.set(sub, (t = new OciLayoutTarget(sub === '' ? dir : join(dir, sub), sub === '' ? id : `${id}/${sub}`, logger)));
    return t;
  };
  const set: TargetSet = { main: get(''), repository: (path) => get(path), forJob: () => set };
  return set;
}
