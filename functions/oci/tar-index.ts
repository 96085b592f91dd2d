/**
 * Locates the members of an uncompressed tar with ranged reads: each header is read where the previous member
 * ends, so a multi-GB archive in S3 is indexed with a few small requests and its members can then be streamed
 * from their byte ranges. Header decoding (ustar, pax and GNU long names) is node-tar's.
 */
import { Header, Pax } from 'tar';
import { InputError } from '../util/errors';

export interface TarMember {
  /** normalised: no `./` prefix, no empty or `.` components */
  path: string;
  /** offset of the first data byte in the archive */
  offset: number;
  size: number;
  type: 'file' | 'link' | 'other';
}

/** Reads `length` bytes at `start` of the archive (fewer only at its end). */
export type RangeReader = (start: number, length: number) => Promise<Buffer>;

const BLOCK = 512;
/**
 * Bytes read per request while looking for headers: enough for the headers and small members that sit together
 * (index.json, manifests, configs), small enough that a window over the start of a big layer wastes little.
 */
const WINDOW = 16 * 1024;
const MAX_MEMBERS = 100_000;
const MAX_META_BYTES = 1024 * 1024;

/** Normalises a member path; a path that is absolute or climbs out with `..` is refused (path traversal). */
export function normalizeMemberPath(raw: string, what: string): string {
  if (raw.startsWith('/')) throw new InputError(`${what}: member "${raw}" has an absolute path`);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new InputError(`${what}: member "${raw}" climbs out of the archive with ".."`);
  return parts.join('/');
}

/** Caches one window of the archive, so consecutive small members cost one request. */
function windowed(read: RangeReader, total: number): RangeReader {
  let start = -1;
  let buf: Buffer = Buffer.alloc(0);
  return async (at, length) => {
    if (at >= start && at + length <= start + buf.length) return buf.subarray(at - start, at - start + length);
    const want = Math.min(Math.max(length, WINDOW), total - at);
    buf = await read(at, want);
    start = at;
    return buf.subarray(0, Math.min(length, buf.length));
  };
}

export async function indexTar(readRange: RangeReader, total: number, what: string): Promise<Map<string, TarMember>> {
  const read = windowed(readRange, total);
  const members = new Map<string, TarMember>();
  let offset = 0;
  let pax: Pax | undefined;
  let globalPax: Pax | undefined;
  let longPath: string | undefined;
  let count = 0;
  let sawHeader = false;
  while (offset < total) {
    if (total - offset < BLOCK) throw new InputError(`${what}: truncated (a partial header at byte ${offset})`);
    const block = await read(offset, BLOCK);
    if (block.length < BLOCK) throw new InputError(`${what}: truncated (a partial header at byte ${offset})`);
    if (block.every((b) => b === 0)) break; // end-of-archive marker
    let header: Header;
    try {
      header = new Header(block, 0, pax, globalPax);
    } catch {
      // node-tar refuses numeric fields it cannot decode; for an index, that is simply not a tar header.
      throw new InputError(sawHeader ? `${what}: damaged tar header at byte ${offset}` : `${what}: not a tar archive`);
    }
    if (!header.cksumValid) {
      throw new InputError(sawHeader ? `${what}: damaged tar header at byte ${offset}` : `${what}: not a tar archive`);
    }
    sawHeader = true;
    if (++count > MAX_MEMBERS) throw new InputError(`${what}: more than ${MAX_MEMBERS} members`);
    const size = header.size ?? 0;
    const dataStart = offset + BLOCK;
    if (dataStart + size > total) {
      throw new InputError(`${what}: truncated (member "${header.path ?? ''}" needs ${size} bytes, ${total - dataStart} are left)`);
    }
    const next = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    const meta = async (): Promise<string> => {
      if (size > MAX_META_BYTES) throw new InputError(`${what}: an extended header of ${size} bytes`);
      return (await read(dataStart, size)).toString('utf8');
    };
    switch (header.type) {
      case 'ExtendedHeader':
        pax = Pax.parse(await meta(), pax, false);
        break;
      case 'GlobalExtendedHeader':
        globalPax = Pax.parse(await meta(), globalPax, true);
        break;
      case 'NextFileHasLongPath':
      case 'OldGnuLongPath':
        longPath = (await meta()).replace(/\0.*$/s, '');
        break;
      default: {
        // A pax path is the whole path: node-tar's Header would still prepend the ustar prefix field to it.
        const path = normalizeMemberPath(longPath ?? pax?.path ?? header.path ?? '', what);
        const type = header.type === 'File' || header.type === 'OldFile' || header.type === 'ContiguousFile'
          ? 'file'
          : header.type === 'Link' || header.type === 'SymbolicLink'
            ? 'link'
            : 'other';
        if (path !== '' && type !== 'other') {
          if (members.has(path)) throw new InputError(`${what}: member "${path}" occurs twice`);
          members.set(path, { path, offset: dataStart, size, type });
        }
        pax = undefined;
        longPath = undefined;
      }
    }
    offset = next;
  }
  if (!sawHeader) throw new InputError(`${what}: not a tar archive (empty)`);
  return members;
}
