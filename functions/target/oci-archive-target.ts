/**
 * An OCI archive (`oci-archive:<file>`) as the destination of a copy: a tar of an OCI image layout, its files at the
 * tar's root (`oci-layout`, `index.json`, `blobs/sha256/…`), as `skopeo copy … oci-archive:` reads it; a
 * sub-repository is the layout in the sub-directory of its name, as layoutTargets writes it.
 *
 * A tar cannot be written in place, so the copy writes into a layout beside the file, `<file>.partial/`, and
 * finish() packs that into the file (a temporary file, then a rename) and removes it. Until something has to be
 * written, an archive that exists already is only read (layout-reader.ts): a copy that finds everything there writes
 * nothing. The first write unpacks it into `<file>.partial/` first, so what it held stays in the new file. A copy
 * that fails leaves `<file>.partial/` behind; the next copy to the same file goes on from it (blobs and manifests
 * there are not copied again), and packs it. Two copies to one file at once are not supported.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { create, extract } from 'tar';
import { InputError } from '../util/errors';
import type { Logger } from '../util/log';
import { archiveFiles, layoutReaders } from './layout-reader';
import { layoutTargets } from './oci-layout-target';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from './target';

export interface ArchiveDestination {
  targets: TargetSet;
  /**
   * Packs what was staged (by this copy, or by an earlier one that did not finish) into the archive; false when
   * nothing was, and the file is as it was.
   */
  finish(): Promise<boolean>;
}

/** What a layout keeps for itself while it is written: not part of the archive. */
const PRIVATE = /(?:^|\/)(?:\.uploads|index\.json\.lock)(?:\/|$)/;

async function kind(path: string): Promise<'file' | 'directory' | 'other' | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? 'file' : s.isDirectory() ? 'directory' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

class ArchiveStage {
  readonly display: string;
  private readonly stagingDir: string;
  private opened: Promise<void> | undefined;
  /** the layout being written, once there is one */
  private staged: TargetSet | undefined;
  private staging: Promise<TargetSet> | undefined;
  /** the archive as it is, while nothing is staged */
  private existing: TargetSet | undefined;

  constructor(
    private readonly file: string,
    private readonly logger: Logger,
  ) {
    this.display = `oci-archive:${file}`;
    this.stagingDir = `${file}.partial`;
  }

  private open(): Promise<void> {
    this.opened ??= (async () => {
      const [archive, staging] = await Promise.all([kind(this.file), kind(this.stagingDir)]);
      if (archive !== undefined && archive !== 'file') throw new InputError(`${this.display} is not a file`);
      if (staging !== undefined && staging !== 'directory') throw new InputError(`${this.display}: ${this.stagingDir} is in the way (a copy stages the archive there)`);
      if (staging === 'directory') {
        this.logger.info('going on from the staged layout an earlier copy left', { archive: this.file, staging: this.stagingDir });
        this.staged = layoutTargets(this.stagingDir, this.logger);
      } else if (archive === 'file') this.existing = layoutReaders(archiveFiles(this.file));
    })();
    return this.opened;
  }

  /** Where reads go: the staged layout, else the archive as it is, else nowhere (nothing is there yet). */
  async reader(sub: string): Promise<Target | undefined> {
    await this.open();
    const set = this.staged ?? this.existing;
    return set === undefined ? undefined : sub === '' ? set.main : set.repository(sub);
  }

  async writer(sub: string): Promise<Target> {
    const set = await (this.staging ??= this.stage());
    return sub === '' ? set.main : set.repository(sub);
  }

  private async stage(): Promise<TargetSet> {
    await this.open();
    if (this.staged) return this.staged;
    await mkdir(dirname(this.file), { recursive: true });
    if (this.existing) {
      // What the archive holds stays: it is unpacked first (regular files and folders only), then added to.
      const tmp = `${this.stagingDir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      await mkdir(tmp);
      try {
        await extract({ file: this.file, cwd: tmp, strict: true, filter: (_path, entry) => 'type' in entry && ['File', 'OldFile', 'Directory'].includes(entry.type) });
        await rename(tmp, this.stagingDir);
      } catch (err) {
        await rm(tmp, { recursive: true, force: true });
        throw err;
      }
      this.logger.info('unpacked the archive to add to it', { archive: this.file, staging: this.stagingDir });
    }
    this.staged = layoutTargets(this.stagingDir, this.logger);
    return this.staged;
  }

  async finish(): Promise<boolean> {
    await this.open();
    if (!this.staged) return false;
    // Blobs first, the index last, as container archives have it; sub-repositories in between.
    const names = (await readdir(this.stagingDir)).filter((n) => !PRIVATE.test(n));
    const rank = (n: string): number => (n === 'blobs' ? 0 : n === 'index.json' ? 2 : n === 'oci-layout' ? 3 : 1);
    names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    const tmp = `${this.file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await create({ file: tmp, cwd: this.stagingDir, portable: true, filter: (path) => !PRIVATE.test(path) }, names);
      await rename(tmp, this.file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const size = (await stat(this.file)).size;
    await rm(this.stagingDir, { recursive: true, force: true });
    this.staged = undefined;
    this.staging = undefined;
    this.opened = undefined;
    this.logger.info('archive written', { archive: this.file, bytes: size });
    return true;
  }
}

/** One repository of the archive: reads where reads go now, writes into the staged layout. */
class ArchiveTarget implements Target {
  readonly id: string;
  readonly display: string;
  readonly repositoryName: string;

  constructor(
    private readonly stage: ArchiveStage,
    private readonly sub: string,
  ) {
    this.display = sub === '' ? stage.display : `${stage.display}/${sub}`;
    this.id = this.display;
    this.repositoryName = this.display;
  }

  private read<T>(fn: (t: Target) => Promise<T>, none: T): Promise<T> {
    return this.stage.reader(this.sub).then((t) => (t === undefined ? none : fn(t)));
  }

  hasBlob(digest: string): Promise<boolean> {
    return this.read((t) => t.hasBlob(digest), false);
  }

  blobSize(digest: string): Promise<number | undefined> {
    return this.read((t) => t.blobSize(digest), undefined);
  }

  fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
    return this.read((t) => t.fetchBlob(digest, maxBytes), undefined);
  }

  openBlob(digest: string, signal?: AbortSignal): Promise<BlobStream | undefined> {
    return this.read((t) => t.openBlob(digest, signal), undefined);
  }

  resolve(reference: string): Promise<string | undefined> {
    return this.read((t) => t.resolve(reference), undefined);
  }

  getManifest(reference: string): Promise<FetchedManifest | undefined> {
    return this.read((t) => t.getManifest(reference), undefined);
  }

  async pushBlob(blob: BlobSource): Promise<UploadResult> {
    return (await this.stage.writer(this.sub)).pushBlob(blob);
  }

  async putManifest(bytes: Buffer, mediaType: string, reference: string): Promise<string> {
    return (await this.stage.writer(this.sub)).putManifest(bytes, mediaType, reference);
  }
}

export function archiveDestination(file: string, logger: Logger): ArchiveDestination {
  const stage = new ArchiveStage(file, logger);
  const targets = new Map<string, ArchiveTarget>();
  const get = (sub: string): ArchiveTarget => {
    let t = targets.get(sub);
    if (!t) targets.set(sub, (t = new ArchiveTarget(stage, sub)));
    return t;
  };
  const set: TargetSet = { main: get(''), repository: (path) => get(path), forJob: () => set };
  return { targets: set, finish: () => stage.finish() };
}
