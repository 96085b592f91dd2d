/**
 * Reading an OCI image layout that a copy takes a release from, without writing to it: a directory
 * (`oci-layout:<dir>`) or a tar of one (`oci-archive:<file>`, the layout's files at the tar's root, as
 * `skopeo copy … oci-archive:` writes it). Tags are the `org.opencontainers.image.ref.name` annotations of
 * `index.json`; a sub-repository is the layout in the sub-directory of its name, as layoutTargets writes it.
 *
 * An archive is not unpacked: its members are found once by their headers (tar-index.ts) and each blob is read from
 * its byte range, so a multi-GB archive costs no disk space and its blobs stream.
 */
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { REF_NAME } from '../oci/container-archive';
import { isDigest, sha256Digest } from '../oci/digest';
import { IndexSchema, parseJson, type Descriptor } from '../oci/descriptor';
import { MAX_MANIFEST_BYTES } from '../oci/media-types';
import { indexTar, type TarMember } from '../oci/tar-index';
import { checkedStream } from '../registry/repository';
import { InputError, IntegrityError } from '../util/errors';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from './target';

/** The files of a layout, by their path inside it (`index.json`, `blobs/sha256/<hex>`, `<sub>/index.json`). */
export interface LayoutFiles {
  /** `oci-layout:<dir>` or `oci-archive:<file>` */
  readonly display: string;
  /** the size of a regular file, or undefined when there is none */
  size(path: string): Promise<number | undefined>;
  /** its bytes from the start, `size` of them */
  stream(path: string, size: number): Promise<Readable>;
}

export function directoryFiles(dir: string): LayoutFiles {
  return {
    display: `oci-layout:${dir}`,
    async size(path) {
      try {
        const s = await stat(join(dir, path));
        return s.isFile() ? s.size : undefined;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
        throw err;
      }
    },
    stream: async (path) => createReadStream(join(dir, path)),
  };
}

/** The regular files of a tar, found by reading its headers where each member ends (once, when first asked). */
export function archiveFiles(file: string): LayoutFiles {
  const display = `oci-archive:${file}`;
  let members: Promise<Map<string, TarMember>> | undefined;
  const index = (): Promise<Map<string, TarMember>> =>
    (members ??= (async () => {
      let total: number;
      try {
        const s = await stat(file);
        if (!s.isFile()) throw new InputError(`${display} is not a file`);
        total = s.size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(`${display} does not exist`);
        throw err;
      }
      const fh = await open(file, 'r');
      try {
        return await indexTar(
          async (start, length) => {
            const buf = Buffer.alloc(length);
            const { bytesRead } = await fh.read(buf, 0, length, start);
            return buf.subarray(0, bytesRead);
          },
          total,
          display,
        );
      } finally {
        await fh.close();
      }
    })());
  return {
    display,
    async size(path) {
      const m = (await index()).get(path);
      return m?.type === 'file' ? m.size : undefined;
    },
    async stream(path, size) {
      const m = (await index()).get(path);
      if (m?.type !== 'file' || m.size !== size) throw new IntegrityError(`${display}: member ${path} changed while it was read`);
      return size === 0 ? Readable.from([]) : createReadStream(file, { start: m.offset, end: m.offset + size - 1 });
    },
  };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** One repository of a layout that is read, never written. */
export class LayoutReader implements Target {
  readonly id: string;
  readonly display: string;
  readonly repositoryName: string;

  constructor(
    private readonly files: LayoutFiles,
    /** '' for the layout itself, `<sub>` for a sub-repository */
    private readonly sub: string,
  ) {
    this.display = sub === '' ? files.display : `${files.display}/${sub}`;
    this.id = this.display;
    this.repositoryName = this.display;
  }

  private path(p: string): string {
    return this.sub === '' ? p : posix.join(this.sub, p);
  }

  private blobPath(digest: string): string {
    if (!isDigest(digest)) throw new IntegrityError(`"${digest}" is not a sha256 digest`);
    return this.path(`blobs/sha256/${digest.slice('sha256:'.length)}`);
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await this.blobSize(digest)) !== undefined;
  }

  blobSize(digest: string): Promise<number | undefined> {
    return this.files.size(this.blobPath(digest));
  }

  async fetchBlob(digest: string, maxBytes: number): Promise<Buffer | undefined> {
    const opened = await this.openBlob(digest);
    if (!opened) return undefined;
    if (opened.size > maxBytes) {
      opened.stream.destroy();
      throw new IntegrityError(`${this.display}: blob ${digest} is larger than ${maxBytes} bytes`);
    }
    return readAll(opened.stream);
  }

  async openBlob(digest: string): Promise<BlobStream | undefined> {
    const path = this.blobPath(digest);
    const size = await this.files.size(path);
    if (size === undefined) return undefined;
    return { size, stream: checkedStream(await this.files.stream(path, size), { digest, size, what: `${this.display}: blob ${digest}` }) };
  }

  pushBlob(_blob: BlobSource): Promise<UploadResult> {
    return Promise.reject(new InputError(`${this.display} is read by a copy, never written`));
  }

  putManifest(): Promise<string> {
    return Promise.reject(new InputError(`${this.display} is read by a copy, never written`));
  }

  private async readIndex(): Promise<Descriptor[]> {
    const path = this.path('index.json');
    const size = await this.files.size(path);
    if (size === undefined) return [];
    if (size > MAX_MANIFEST_BYTES) throw new InputError(`${this.display}: index.json is larger than ${MAX_MANIFEST_BYTES} bytes`);
    return parseJson(IndexSchema, await readAll(await this.files.stream(path, size)), `${this.display}/index.json`).manifests;
  }

  private async find(reference: string): Promise<Descriptor | undefined> {
    const manifests = await this.readIndex();
    if (isDigest(reference)) {
      const size = await this.blobSize(reference);
      if (size === undefined) return undefined;
      return manifests.find((m) => m.digest === reference) ?? { mediaType: '', digest: reference, size };
    }
    return manifests.find((m) => m.annotations?.[REF_NAME] === reference);
  }

  async resolve(reference: string): Promise<string | undefined> {
    return (await this.find(reference))?.digest;
  }

  async getManifest(reference: string): Promise<FetchedManifest | undefined> {
    const desc = await this.find(reference);
    if (!desc) return undefined;
    const bytes = await this.fetchBlob(desc.digest, MAX_MANIFEST_BYTES);
    if (!bytes) throw new InputError(`${this.display}: ${reference} names the blob ${desc.digest}, which is not in the layout`);
    const digest = sha256Digest(bytes);
    let mediaType = desc.mediaType;
    if (!mediaType) {
      try {
        const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
        mediaType = typeof parsed.mediaType === 'string' ? parsed.mediaType : '';
      } catch {
        throw new InputError(`${this.display}: ${reference} is not a JSON manifest`);
      }
    }
    return { bytes, mediaType, digest };
  }
}

/** The repositories of a layout that is only read: the layout, and its sub-repositories in sub-directories. */
export function layoutReaders(files: LayoutFiles): TargetSet {
  const targets = new Map<string, LayoutReader>();
  const get = (sub: string): LayoutReader => {
    let t = targets.get(sub);
    if (!t) targets.set(sub, (t = new LayoutReader(files, sub)));
    return t;
  };
  const set: TargetSet = { main: get(''), repository: (path) => get(path), forJob: () => set };
  return set;
}
