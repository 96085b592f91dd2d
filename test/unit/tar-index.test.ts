import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, Header, Pax } from 'tar';
import { indexTar, normalizeMemberPath, type RangeReader, type TarMember } from '../../functions/oci/tar-index';
import { InputError } from '../../functions/util/errors';
import { makeTar } from '../../tools/tar-writer';

const WHAT = 'test.oci';

function reader(archive: Buffer): { read: RangeReader; calls: Array<[number, number]> } {
  const calls: Array<[number, number]> = [];
  const read: RangeReader = async (start, length) => {
    calls.push([start, length]);
    return Buffer.from(archive.subarray(start, start + length));
  };
  return { read, calls };
}

async function index(archive: Buffer): Promise<Map<string, TarMember>> {
  return indexTar(reader(archive).read, archive.length, WHAT);
}

function bytes(archive: Buffer, m: TarMember | undefined): Buffer {
  assert.ok(m, 'member missing');
  return archive.subarray(m.offset, m.offset + m.size);
}

async function assertInputError(p: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    for (const pat of patterns) assert.match(err.message, pat);
    return true;
  });
}

function pad(b: Buffer): Buffer {
  const rest = (512 - (b.length % 512)) % 512;
  return rest === 0 ? b : Buffer.concat([b, Buffer.alloc(rest)]);
}

function headerBlock(data: { path: string; size: number; type: 'File' | 'NextFileHasLongPath' | 'OldGnuLongPath' | 'Directory' }): Buffer {
  const block = Buffer.alloc(512);
  new Header({ ...data, mode: 0o644, uid: 0, gid: 0, mtime: new Date(0), uname: 'root', gname: 'root' }).encode(block, 0);
  return block;
}

/** A GNU long-name record (`L`) followed by the member it names, whose own header holds a truncated name. */
function gnuLongMember(name: string, data: Buffer, type: 'NextFileHasLongPath' | 'OldGnuLongPath' = 'NextFileHasLongPath'): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  return Buffer.concat([
    headerBlock({ path: '././@LongLink', size: nameBytes.length, type }),
    pad(nameBytes),
    headerBlock({ path: name.slice(0, 99), size: data.length, type: 'File' }),
    pad(data),
  ]);
}

/** A pax extended header (`x`) setting `path`, followed by the member, whose own header holds another name. */
function paxMember(path: string, data: Buffer, headerPath = 'PaxHeader-placeholder'): Buffer {
  return Buffer.concat([new Pax({ path }).encode(), headerBlock({ path: headerPath, size: data.length, type: 'File' }), pad(data)]);
}

const TRAILER = Buffer.alloc(1024);

describe('indexTar: members', () => {
  it('gives the data offset and size of each member', async () => {
    const layout = Buffer.from('{"imageLayoutVersion": "1.0.0"}');
    const indexJson = Buffer.alloc(600, 0x61);
    const archive = makeTar([
      { path: 'oci-layout', data: layout },
      { path: 'index.json', data: indexJson },
      { path: 'blobs/', type: 'Directory' },
      { path: 'blobs/sha256/empty', data: Buffer.alloc(0) },
      { path: 'blobs/sha256/exact', data: Buffer.alloc(512, 0x62) },
    ]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()], ['oci-layout', 'index.json', 'blobs/sha256/empty', 'blobs/sha256/exact']);
    assert.deepEqual(members.get('oci-layout'), { path: 'oci-layout', offset: 512, size: layout.length, type: 'file' });
    assert.deepEqual(members.get('index.json'), { path: 'index.json', offset: 1536, size: 600, type: 'file' });
    // the directory header sits at 2560; the empty file's header at 3072
    assert.deepEqual(members.get('blobs/sha256/empty'), { path: 'blobs/sha256/empty', offset: 3584, size: 0, type: 'file' });
    assert.deepEqual(members.get('blobs/sha256/exact'), { path: 'blobs/sha256/exact', offset: 4096, size: 512, type: 'file' });
    assert.deepEqual(bytes(archive, members.get('oci-layout')), layout);
    assert.deepEqual(bytes(archive, members.get('index.json')), indexJson);
  });

  it('normalises "./" prefixes and skips directory entries', async () => {
    const archive = makeTar([
      { path: './', type: 'Directory' },
      { path: './blobs/', type: 'Directory' },
      { path: './blobs/sha256/', type: 'Directory' },
      { path: './blobs/sha256/aaaa', data: Buffer.from('blob') },
      { path: './index.json', data: Buffer.from('{}') },
      { path: './/oci-layout', data: Buffer.from('layout') },
    ]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()].sort(), ['blobs/sha256/aaaa', 'index.json', 'oci-layout']);
    assert.equal(bytes(archive, members.get('blobs/sha256/aaaa')).toString(), 'blob');
    assert.equal(bytes(archive, members.get('index.json')).toString(), '{}');
    assert.equal(bytes(archive, members.get('oci-layout')).toString(), 'layout');
    assert.equal(members.get('index.json')?.path, 'index.json');
  });

  it('lists symbolic links as links', async () => {
    const archive = makeTar([
      { path: 'target', data: Buffer.from('x') },
      { path: 'index.json', type: 'SymbolicLink', linkpath: 'target' },
    ]);
    const members = await index(archive);
    assert.equal(members.get('index.json')?.type, 'link');
    assert.equal(members.get('target')?.type, 'file');
  });

  it('indexes an archive without the end-of-archive blocks', async () => {
    const archive = makeTar([{ path: 'a', data: Buffer.from('hello') }], { trailer: false });
    assert.equal(archive.length, 1024);
    const members = await index(archive);
    assert.deepEqual(members.get('a'), { path: 'a', offset: 512, size: 5, type: 'file' });
  });

  it('stops at the end-of-archive marker and ignores what follows', async () => {
    const archive = Buffer.concat([makeTar([{ path: 'a', data: Buffer.from('x') }]), Buffer.from('trailing garbage '.repeat(64))]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()], ['a']);
  });

  it('reads a name longer than 100 characters from a ustar prefix', async () => {
    const name = `blobs/sha256/${'d'.repeat(64)}/${'e'.repeat(60)}`;
    assert.ok(name.length > 100);
    const archive = makeTar([{ path: name, data: Buffer.from('long') }]);
    const members = await index(archive);
    assert.equal(bytes(archive, members.get(name)).toString(), 'long');
  });
});

describe('indexTar: GNU long names and pax headers', () => {
  it('takes the name from a GNU long-name record', async () => {
    const longName = `blobs/sha256/${'a'.repeat(200)}`;
    const data = Buffer.from('long-named blob');
    const archive = Buffer.concat([gnuLongMember(longName, data), makeTar([{ path: 'after', data: Buffer.from('z') }])]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()], [longName, 'after']);
    const m = members.get(longName);
    assert.deepEqual(m, { path: longName, offset: 512 + 512 + 512, size: data.length, type: 'file' });
    assert.deepEqual(bytes(archive, m), data);
    assert.equal(members.has(longName.slice(0, 99)), false);
    // the long name applies to one member only
    assert.equal(bytes(archive, members.get('after')).toString(), 'z');
  });

  it('takes the name from an old GNU long-name record (N)', async () => {
    const longName = `./dir/${'n'.repeat(150)}`;
    const archive = Buffer.concat([gnuLongMember(longName, Buffer.from('n'), 'OldGnuLongPath'), TRAILER]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()], [longName.slice(2)]);
  });

  it('takes the name from a pax path header', async () => {
    const longName = `./blobs/sha256/${'b'.repeat(180)}`;
    const data = Buffer.alloc(700, 0x42);
    const paxed = paxMember(longName, data);
    const archive = Buffer.concat([paxed, makeTar([{ path: 'next', data: Buffer.from('n') }])]);
    const members = await index(archive);
    const name = longName.slice(2);
    assert.deepEqual([...members.keys()], [name, 'next']);
    const m = members.get(name);
    assert.equal(m?.size, 700);
    assert.equal(m?.offset, new Pax({ path: longName }).encode().length + 512);
    assert.deepEqual(bytes(archive, m), data);
    assert.equal(members.has('PaxHeader-placeholder'), false);
    // the pax header applied to its member only
    assert.equal(bytes(archive, members.get('next')).toString(), 'n');
  });

  it('a pax path replaces the whole ustar name, prefix field included', async () => {
    // What node-tar and other pax writers emit for a name that does not fit: the ustar header keeps a split
    // prefix/name approximation, the pax record carries the real path.
    const longName = `blobs/sha256/${'l'.repeat(150)}`;
    const data = Buffer.from('pax+prefix');
    const archive = Buffer.concat([paxMember(longName, data, longName), TRAILER]);
    assert.notEqual(archive[new Pax({ path: longName }).encode().length + 345], 0, 'the ustar prefix field is filled');
    const members = await index(archive);
    assert.deepEqual([...members.keys()], [longName]);
    assert.deepEqual(bytes(archive, members.get(longName)), data);
  });

  it('skips a global pax header', async () => {
    const archive = Buffer.concat([new Pax({ comment: 'made by a test' }, true).encode(), makeTar([{ path: 'a', data: Buffer.from('x') }])]);
    const members = await index(archive);
    assert.deepEqual([...members.keys()], ['a']);
    assert.equal(bytes(archive, members.get('a')).toString(), 'x');
  });

  it('indexes an archive node-tar creates from a directory with long names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tar-index-'));
    try {
      const src = join(dir, 'src');
      const longName = 'l'.repeat(150);
      mkdirSync(join(src, 'blobs', 'sha256'), { recursive: true });
      writeFileSync(join(src, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      writeFileSync(join(src, 'blobs', 'sha256', longName), 'long');
      writeFileSync(join(src, 'index.json'), Buffer.alloc(1500, 0x7b));
      const file = join(dir, 'out.tar');
      create({ cwd: src, file, sync: true, portable: true }, ['.']);
      const archive = readFileSync(file);
      const members = await index(archive);
      assert.deepEqual([...members.keys()].sort(), [`blobs/sha256/${longName}`, 'index.json', 'oci-layout']);
      assert.equal(bytes(archive, members.get(`blobs/sha256/${longName}`)).toString(), 'long');
      assert.deepEqual(bytes(archive, members.get('index.json')), Buffer.alloc(1500, 0x7b));
      assert.equal(bytes(archive, members.get('oci-layout')).toString(), '{"imageLayoutVersion":"1.0.0"}');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('indexTar: large members', () => {
  /** A reader over a sparse archive: the given pieces at their offsets, zeros everywhere else. */
  function sparse(total: number, pieces: Array<[number, Buffer]>): { read: RangeReader; calls: Array<[number, number]> } {
    const calls: Array<[number, number]> = [];
    const read: RangeReader = async (start, length) => {
      calls.push([start, length]);
      const out = Buffer.alloc(Math.max(0, Math.min(length, total - start)));
      for (const [at, piece] of pieces) {
        const from = Math.max(at, start);
        const to = Math.min(at + piece.length, start + out.length);
        if (to > from) piece.copy(out, from - start, from - at, to - at);
      }
      return out;
    };
    return { read, calls };
  }

  it('locates the member after one larger than 8 GiB (base-256 size field)', async () => {
    const size = 9 * 1024 ** 3 + 5;
    const bigHeader = Buffer.alloc(512);
    new Header({ path: 'disk.raw', size, type: 'File', mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) }).encode(bigHeader, 0);
    const afterAt = 512 + Math.ceil(size / 512) * 512;
    const rest = makeTar([{ path: 'after', data: Buffer.from('tail') }]);
    const total = afterAt + rest.length;
    const r = sparse(total, [
      [0, bigHeader],
      [afterAt, rest],
    ]);
    const members = await indexTar(r.read, total, WHAT);
    assert.deepEqual(members.get('disk.raw'), { path: 'disk.raw', offset: 512, size, type: 'file' });
    assert.deepEqual(members.get('after'), { path: 'after', offset: afterAt + 512, size: 4, type: 'file' });
    assert.equal(r.calls.length, 2);
  });

  it('takes the size from a pax header', async () => {
    const data = Buffer.alloc(1_000, 0x33);
    const archive = Buffer.concat([
      new Pax({ size: data.length }).encode(),
      headerBlock({ path: 'sized', size: 0, type: 'File' }),
      pad(data),
      makeTar([{ path: 'next', data: Buffer.from('n') }]),
    ]);
    const members = await index(archive);
    assert.equal(members.get('sized')?.size, 1_000);
    assert.deepEqual(bytes(archive, members.get('sized')), data);
    assert.equal(bytes(archive, members.get('next')).toString(), 'n');
  });
});

describe('indexTar: refusals', () => {
  it('refuses an archive truncated inside a member', async () => {
    const full = makeTar([
      { path: 'a', data: Buffer.from('x') },
      { path: 'big', data: Buffer.alloc(2000, 1) },
    ]);
    const cut = full.subarray(0, 1024 + 512 + 1000);
    await assertInputError(index(cut), /test\.oci/, /truncated/, /"big"/);
  });

  it('refuses an archive truncated inside a header', async () => {
    const full = makeTar([
      { path: 'a', data: Buffer.from('x') },
      { path: 'b', data: Buffer.from('y') },
    ]);
    await assertInputError(index(full.subarray(0, 1024 + 100)), /truncated/, /partial header at byte 1024/);
  });

  it('refuses input that is not a tar', async () => {
    const notTar = Buffer.from('{"schemaVersion":2,"manifests":[]}'.padEnd(2048, ' '));
    await assertInputError(index(notTar), /test\.oci/, /not a tar archive/);
    const gz = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(1020, 7)]);
    await assertInputError(index(gz), /not a tar archive/);
  });

  it('refuses an empty archive', async () => {
    await assertInputError(index(Buffer.alloc(0)), /not a tar archive/, /empty/);
    await assertInputError(index(Buffer.alloc(1024)), /not a tar archive/, /empty/);
  });

  it('refuses a damaged header after a good one', async () => {
    const archive = makeTar([
      { path: 'a', data: Buffer.from('x') },
      { path: 'b', data: Buffer.from('y') },
    ]);
    archive[1024 + 10] = 0x5a; // corrupt the second header's name: its checksum no longer matches
    await assertInputError(index(archive), /damaged tar header at byte 1024/);
  });

  it('refuses a member that climbs out with ".."', async () => {
    await assertInputError(index(makeTar([{ path: '../x', data: Buffer.from('x') }])), /test\.oci/, /"\.\.\/x"/, /climbs out/);
    await assertInputError(index(makeTar([{ path: 'blobs/../../etc/passwd', data: Buffer.from('x') }])), /climbs out/);
  });

  it('refuses a member with an absolute path', async () => {
    await assertInputError(index(makeTar([{ path: '/etc/passwd', data: Buffer.from('x') }])), /"\/etc\/passwd"/, /absolute path/);
  });

  it('refuses traversal hidden in a GNU long name or a pax path', async () => {
    await assertInputError(index(Buffer.concat([gnuLongMember(`../${'x'.repeat(120)}`, Buffer.from('x')), TRAILER])), /climbs out/);
    await assertInputError(index(Buffer.concat([paxMember('/abs/evil', Buffer.from('x'), 'innocent'), TRAILER])), /absolute path/);
  });

  it('refuses a member that occurs twice, also when spelled differently', async () => {
    await assertInputError(
      index(
        makeTar([
          { path: 'index.json', data: Buffer.from('{}') },
          { path: 'index.json', data: Buffer.from('{"x":1}') },
        ]),
      ),
      /"index\.json" occurs twice/,
    );
    await assertInputError(
      index(
        makeTar([
          { path: 'blobs/sha256/aa', data: Buffer.from('1') },
          { path: './blobs/sha256/aa', data: Buffer.from('2') },
        ]),
      ),
      /"blobs\/sha256\/aa" occurs twice/,
    );
  });
});

describe('indexTar: ranged reads', () => {
  it('reads a small archive with one request', async () => {
    const archive = makeTar([
      { path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion": "1.0.0"}') },
      { path: 'index.json', data: Buffer.alloc(1000, 0x20) },
      { path: 'blobs/', type: 'Directory' },
      { path: 'blobs/sha256/aa', data: Buffer.alloc(4_000, 1) },
      { path: 'blobs/sha256/bb', data: Buffer.alloc(5_000, 2) },
    ]);
    // Smaller than the 16 KiB window the index reads at a time.
    assert.ok(archive.length <= 16 * 1024);
    const r = reader(archive);
    const members = await indexTar(r.read, archive.length, WHAT);
    assert.equal(members.size, 4);
    assert.equal(r.calls.length, 1);
    assert.deepEqual(r.calls[0], [0, archive.length]);
  });

  it('reads a pax archive with one request too', async () => {
    const archive = Buffer.concat([paxMember(`blobs/${'p'.repeat(200)}`, Buffer.from('x')), gnuLongMember(`blobs/${'g'.repeat(200)}`, Buffer.from('y')), TRAILER]);
    const r = reader(archive);
    const members = await indexTar(r.read, archive.length, WHAT);
    assert.equal(members.size, 2);
    assert.equal(r.calls.length, 1);
  });

  it('skips over a large member instead of reading it', async () => {
    const bigSize = 3 * 1024 * 1024;
    const archive = makeTar([
      { path: 'small', data: Buffer.from('s') },
      { path: 'big', data: Buffer.alloc(bigSize, 0xee) },
      { path: 'after', data: Buffer.from('a') },
    ]);
    const r = reader(archive);
    const members = await indexTar(r.read, archive.length, WHAT);
    assert.deepEqual([...members.keys()], ['small', 'big', 'after']);
    const big = members.get('big');
    assert.ok(big);
    assert.equal(big.offset, 1536);
    assert.equal(big.size, bigSize);
    // one window at the start, one at the header after the big member; nothing in between is requested
    assert.equal(r.calls.length, 2);
    const afterHeader = big.offset + bigSize;
    assert.equal(r.calls[1]?.[0], afterHeader);
    const bytesRead = r.calls.reduce((n, [, len]) => n + len, 0);
    assert.ok(bytesRead < archive.length / 4, `read ${bytesRead} of ${archive.length} bytes`);
    assert.equal(bytes(archive, members.get('after')).toString(), 'a');
  });

  it('never asks for bytes past the end of the archive', async () => {
    const archive = makeTar([{ path: 'a', data: Buffer.alloc(100) }]);
    const r = reader(archive);
    await indexTar(r.read, archive.length, WHAT);
    for (const [start, length] of r.calls) assert.ok(start + length <= archive.length, `${start}+${length}`);
  });
});

describe('normalizeMemberPath', () => {
  it('removes "./", empty and "." components', () => {
    assert.equal(normalizeMemberPath('./a/./b//c', WHAT), 'a/b/c');
    assert.equal(normalizeMemberPath('a/', WHAT), 'a');
    assert.equal(normalizeMemberPath('./', WHAT), '');
  });

  it('refuses absolute paths and ".." components', () => {
    assert.throws(() => normalizeMemberPath('/a', WHAT), (e: unknown) => e instanceof InputError && /absolute/.test(e.message));
    assert.throws(() => normalizeMemberPath('a/../b', WHAT), (e: unknown) => e instanceof InputError && /\.\./.test(e.message));
  });

  it('allows names that merely contain dots', () => {
    assert.equal(normalizeMemberPath('a/..b/c..', WHAT), 'a/..b/c..');
  });
});
