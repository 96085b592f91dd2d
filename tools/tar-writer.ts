/**
 * Writes tar archives in memory for sample builds and tests. Headers are encoded by node-tar; this only lays
 * them out with their padding, in the order given, so tests can also build archives that are wrong on purpose.
 */
import { Header } from 'tar';

export interface TarEntry {
  path: string;
  data?: Buffer;
  type?: 'File' | 'Directory' | 'SymbolicLink';
  linkpath?: string;
}

export function makeTar(entries: readonly TarEntry[], options: { trailer?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    const type = e.type ?? 'File';
    const header = new Header({
      path: e.path,
      mode: type === 'Directory' ? 0o755 : 0o644,
      uid: 0,
      gid: 0,
      size: type === 'File' ? data.length : 0,
      mtime: new Date(0),
      type,
      ...(e.linkpath ? { linkpath: e.linkpath } : {}),
      uname: 'root',
      gname: 'root',
    });
    const block = Buffer.alloc(512);
    if (header.encode(block, 0)) throw new Error(`tar-writer: path too long for a ustar header: ${e.path}`);
    parts.push(block);
    if (type === 'File' && data.length > 0) {
      parts.push(data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad > 0) parts.push(Buffer.alloc(pad));
    }
  }
  if (options.trailer !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
