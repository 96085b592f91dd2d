/**
 * A local directory laid out like the bucket (`objects/<base>/…`, `meta/singles/<base>`): the CLI's source. A
 * symbolic link to a regular file inside the directory is that file (a folder of artifacts linked from a build
 * output); a link that leads out of the directory is refused.
 */
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { InputError, SourceError } from '../util/errors';
import type { ObjectData, ObjectInfo, ObjectStore, OpenOptions } from './object-store';

function etagOf(size: number, mtimeMs: number, ino: number): string {
  return `${size.toString(16)}-${Math.floor(mtimeMs * 1000).toString(16)}-${ino.toString(16)}`;
}

export class DirectoryStore implements ObjectStore {
  readonly root: string;
  readonly description: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.description = `dir:${this.root}`;
  }

  private path(key: string): string {
    const p = resolve(this.root, key);
    if (key === '' || key.startsWith('/') || (p !== this.root && !p.startsWith(this.root + sep))) {
      throw new SourceError(`the key "${key}" leaves ${this.root}`);
    }
    return p;
  }

  private realRoot: Promise<string> | undefined;

  private async info(key: string): Promise<ObjectInfo | undefined> {
    const path = this.path(key);
    try {
      if ((await lstat(path)).isSymbolicLink()) {
        const target = await realpath(path);
        const root = await (this.realRoot ??= realpath(this.root));
        if (target !== root && !target.startsWith(root + sep)) {
          throw new InputError(`${path} is a symbolic link to ${target}, outside ${this.root}: refused`);
        }
      }
      const s = await stat(path);
      if (!s.isFile()) return undefined;
      return { key, size: s.size, etag: etagOf(s.size, s.mtimeMs, s.ino), lastModified: s.mtime };
    } catch (err) {
      if (err instanceof InputError) throw err;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SourceError(`reading ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  async listFolders(prefix: string): Promise<string[]> {
    try {
      const entries = await readdir(this.path(prefix.replace(/\/$/, '')), { withFileTypes: true });
      return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    // Walk the deepest directory the prefix names, then filter by the full prefix, like an S3 listing.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const start = dirPart === '' ? this.root : this.path(dirPart);
    const out: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        const full = join(dir, e.name);
        if (e.isDirectory()) await walk(full);
        else if ((e.isFile() || e.isSymbolicLink()) && !e.name.includes('.tmp-')) {
          const key = relative(this.root, full).split(sep).join('/');
          if (!key.startsWith(prefix)) continue;
          const info = await this.info(key);
          if (info) out.push(info);
        }
      }
    };
    await walk(start);
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async get(key: string, options: { etag?: string; maxBytes?: number } = {}): Promise<ObjectData | undefined> {
    const info = await this.info(key);
    if (!info) return undefined;
    if (options.maxBytes !== undefined && info.size > options.maxBytes) {
      throw new SourceError(`${this.path(key)} is ${info.size} bytes, more than the ${options.maxBytes} expected`);
    }
    const stream = await this.open(key, options.etag ? { etag: options.etag } : {});
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    return { bytes, info: { ...info, size: bytes.length } };
  }

  async open(key: string, options: OpenOptions = {}): Promise<Readable> {
    const info = await this.info(key);
    if (!info) throw new SourceError(`${this.path(key)} does not exist`);
    if (options.etag !== undefined && info.etag !== options.etag) {
      throw new SourceError(`reading ${this.path(key)}: the file changed while it was being published`);
    }
    return createReadStream(this.path(key), {
      ...(options.start !== undefined ? { start: options.start } : {}),
      ...(options.end !== undefined ? { end: options.end } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      highWaterMark: 1 << 20,
    });
  }

  async put(key: string, body: Buffer): Promise<void> {
    const target = this.path(key);
    await mkdir(dirname(target), { recursive: true });
    // Write then rename: a concurrent reader sees the old or the new file, never half of one.
    const tmp = `${target}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(body);
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }
}
