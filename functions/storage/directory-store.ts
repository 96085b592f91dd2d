/**
 * A local directory laid out like the bucket (`objects/<base>/…`, `meta/singles/<base>`): the CLI's source, and the
 * place of the publisher's records when `--dir` is used. A symbolic link in it, to a file or to a folder, at any
 * level, is what it leads to as long as its real path is inside the directory's real path; anything whose real path
 * leads outside (a linked `objects/`, `objects/<base>`, `meta/`, a file link, a link to a link) is refused with an
 * InputError, for reads, listings and writes alike.
 */
import { constants, createReadStream } from 'node:fs';
import { mkdir, open, readdir, realpath, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { errorCode, InputError, SourceError } from '../util/errors';
import type { ObjectData, ObjectInfo, ObjectStore, OpenOptions } from './object-store';

function etagOf(size: number, mtimeMs: number, ino: number): string {
  return `${size.toString(16)}-${Math.floor(mtimeMs * 1000).toString(16)}-${ino.toString(16)}`;
}

/** Whether `path` is `root` or below it (both absolute and normalised). */
function within(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** A path that does not exist, or that goes through a file as if it were a folder: no object there. */
function missing(err: unknown): boolean {
  return errorCode(err as Error) === 'ENOENT' || errorCode(err as Error) === 'ENOTDIR';
}

/** How often a file that is replaced between opening and checking is opened again. */
const OPEN_ATTEMPTS = 3;

export class DirectoryStore implements ObjectStore {
  readonly root: string;
  readonly description: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.description = `dir:${this.root}`;
  }

  private path(key: string): string {
    const p = resolve(this.root, key);
    if (key === '' || key.startsWith('/') || !within(p, this.root)) {
      throw new SourceError(`the key "${key}" leaves ${this.root}`);
    }
    return p;
  }

  private realRootPromise: Promise<string> | undefined;

  /** The root's real path: a root given through a symbolic link is compared by what it leads to. */
  private realRoot(): Promise<string> {
    const p = (this.realRootPromise ??= realpath(this.root));
    p.catch(() => {
      if (this.realRootPromise === p) this.realRootPromise = undefined;
    });
    return p;
  }

  /**
   * The real path of `path`, or undefined when there is nothing there; refused when it leads outside the real root.
   * `shown` is the path the message names (the one under the root as given, when `path` is already partly resolved).
   */
  private async inside(path: string, shown = path): Promise<string | undefined> {
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      if (missing(err)) return undefined;
      throw new SourceError(`reading ${shown}: ${(err as Error).message}`, { cause: err });
    }
    if (!within(real, await this.realRoot())) {
      throw new InputError(`${shown} leads outside ${this.root} (its real path is ${real}): refused`);
    }
    return real;
  }

  /**
   * The regular file of `key`, opened for reading, with what it is; undefined when there is none.
   *
   * Open first, then check: the descriptor is opened, the path's real path is checked to be inside the real root,
   * and the file at that real path must be the opened one (same device and inode). Checking first and opening after
   * would leave a moment in which a link could be turned to lead outside and its target be read; this way every byte
   * read comes from the file that was inside when checked. A file replaced in between (a link turned, a record
   * renamed over) fails the identity check and is opened again.
   */
  private async openFile(key: string): Promise<{ fh: FileHandle; info: ObjectInfo } | undefined> {
    const path = this.path(key);
    for (let attempt = 1; ; attempt++) {
      let fh: FileHandle;
      try {
        // O_NONBLOCK: a FIFO put in place of a file must not block the open (regular files ignore the flag).
        fh = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
      } catch (err) {
        if (missing(err)) return undefined;
        throw new SourceError(`reading ${path}: ${(err as Error).message}`, { cause: err });
      }
      let kept = false;
      try {
        const s = await fh.stat();
        const real = await this.inside(path);
        const now = real === undefined ? undefined : await stat(real).catch((err: unknown) => (missing(err) ? undefined : Promise.reject(err)));
        if (now !== undefined && now.dev === s.dev && now.ino === s.ino) {
          if (!s.isFile()) return undefined;
          kept = true;
          return { fh, info: { key, size: s.size, etag: etagOf(s.size, s.mtimeMs, s.ino), lastModified: s.mtime } };
        }
      } catch (err) {
        if (err instanceof InputError || err instanceof SourceError) throw err;
        throw new SourceError(`reading ${path}: ${(err as Error).message}`, { cause: err });
      } finally {
        if (!kept) await fh.close();
      }
      if (attempt >= OPEN_ATTEMPTS) {
        throw new SourceError(`reading ${path}: it was replaced each time it was opened`, { retryable: true });
      }
    }
  }

  private async info(key: string): Promise<ObjectInfo | undefined> {
    const file = await this.openFile(key);
    if (!file) return undefined;
    await file.fh.close();
    return file.info;
  }

  async listFolders(prefix: string): Promise<string[]> {
    const dir = this.path(prefix.replace(/\/$/, ''));
    const real = await this.inside(dir);
    if (real === undefined) return [];
    let entries;
    try {
      entries = await readdir(real, { withFileTypes: true });
    } catch (err) {
      if (missing(err)) return [];
      throw err;
    }
    const names: string[] = [];
    for (const e of entries) {
      if (e.isDirectory()) names.push(e.name);
      else if (e.isSymbolicLink()) {
        const target = await this.inside(join(real, e.name), join(dir, e.name));
        if (target !== undefined && (await stat(target).catch(() => undefined))?.isDirectory()) names.push(e.name);
      }
    }
    return names.sort();
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    // Walk the deepest directory the prefix names, then filter by the full prefix, like an S3 listing. Folders are
    // read by their checked real path; a link met on the way is checked before it is followed, and every file is
    // opened and checked again (info), so a link turned after its check can show a name, never an outside file.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const start = dirPart === '' ? this.root : this.path(dirPart);
    // Whether a key, or keys below it as a folder, can match the prefix: others are not looked at.
    const wanted = (key: string): boolean => key.startsWith(prefix) || `${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`);
    const out: ObjectInfo[] = [];
    const walk = async (dir: string, real: string, path: string[]): Promise<void> => {
      let entries;
      try {
        entries = await readdir(real, { withFileTypes: true });
      } catch (err) {
        if (missing(err)) return;
        throw err;
      }
      for (const e of entries) {
        const full = join(dir, e.name);
        const key = relative(this.root, full).split(sep).join('/');
        if (!wanted(key)) continue;
        if (e.isDirectory()) {
          const sub = join(real, e.name);
          await walk(full, sub, [...path, sub]);
          continue;
        }
        if (e.isSymbolicLink()) {
          const target = await this.inside(join(real, e.name), full);
          if (target === undefined) continue; // a link to nothing
          const s = await stat(target).catch(() => undefined);
          if (s?.isDirectory()) {
            // A link back to a folder being walked (or above it) would loop: it is not followed.
            if (!path.some((p) => within(p, target))) await walk(full, target, [...path, target]);
            continue;
          }
        } else if (!e.isFile()) continue;
        if (!key.startsWith(prefix) || e.name.includes('.tmp-')) continue;
        const info = await this.info(key);
        if (info) out.push(info);
      }
    };
    const realStart = await this.inside(start);
    if (realStart !== undefined) await walk(start, realStart, [realStart]);
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async get(key: string, options: { etag?: string; maxBytes?: number } = {}): Promise<ObjectData | undefined> {
    const file = await this.openFile(key);
    if (!file) return undefined;
    try {
      const { info } = file;
      if (options.maxBytes !== undefined && info.size > options.maxBytes) {
        throw new SourceError(`${this.path(key)} is ${info.size} bytes, more than the ${options.maxBytes} expected`);
      }
      if (options.etag !== undefined && info.etag !== options.etag) {
        throw new SourceError(`reading ${this.path(key)}: the file changed while it was being published`);
      }
      const bytes = await file.fh.readFile();
      return { bytes, info: { ...info, size: bytes.length } };
    } finally {
      await file.fh.close();
    }
  }

  async open(key: string, options: OpenOptions = {}): Promise<Readable> {
    const file = await this.openFile(key);
    if (!file) throw new SourceError(`${this.path(key)} does not exist`);
    if (options.etag !== undefined && file.info.etag !== options.etag) {
      await file.fh.close();
      throw new SourceError(`reading ${this.path(key)}: the file changed while it was being published`);
    }
    // The stream reads the descriptor that was checked, and closes it when it ends or is stopped.
    return createReadStream(this.path(key), {
      fd: file.fh,
      ...(options.start !== undefined ? { start: options.start } : {}),
      ...(options.end !== undefined ? { end: options.end } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      highWaterMark: 1 << 20,
    });
  }

  /**
   * The real path of the folder `dir`, made if need be, refused when it (or the nearest existing folder above it,
   * checked before anything is made, since making folders follows links) leads outside the real root. A link turned
   * between these checks and the write is not caught: the records are the publisher's own, and the check is there
   * to keep a linked folder from sending them out of the directory, not to resist someone racing it.
   */
  private async folder(dir: string): Promise<string> {
    let existing = dir;
    while ((await this.inside(existing)) === undefined && existing !== this.root) existing = dirname(existing);
    await mkdir(dir, { recursive: true });
    const real = await this.inside(dir);
    if (real === undefined) throw new SourceError(`${dir} disappeared while it was being written to`);
    return real;
  }

  async put(key: string, body: Buffer): Promise<void> {
    const target = this.path(key);
    const dir = await this.folder(dirname(target));
    const name = basename(target);
    // Write then rename: a concurrent reader sees the old or the new file, never half of one. Both happen in the
    // checked real folder; the temporary file is created exclusively (no link there is followed), and the rename
    // replaces a link at the key rather than writing through it.
    const tmp = join(dir, `${name}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`);
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(body);
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, name));
  }

  async delete(key: string): Promise<void> {
    const target = this.path(key);
    const dir = await this.inside(dirname(target));
    if (dir === undefined) return;
    // rm removes a link itself, never what it leads to.
    await rm(join(dir, basename(target)), { force: true });
  }
}
