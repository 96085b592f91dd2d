/**
 * The CLI's `--dir` source and record store: what a symbolic link in the directory may lead to (issue 10 for file
 * links, issue 19 defect 4 for linked directories). Only what lies inside the directory's real path is read or
 * written; anything that leads outside is refused with one line naming it.
 */
import assert from 'node:assert/strict';
import { renameSync, symlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DirectoryStore } from '../../functions/storage/directory-store';
import { InputError } from '../../functions/util/errors';

const BASE = 'kvm-amd64-1877.3-75df9f40';

/** Asserts that `p` fails with an InputError of one line that names `path` and says it leads outside. */
async function refused(p: Promise<unknown>, path: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
    assert.ok(err.message.includes(path), `names ${path}: ${err.message}`);
    assert.match(err.message, /leads outside/);
    return true;
  });
}

async function text(store: DirectoryStore, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await store.open(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('DirectoryStore and symbolic links', () => {
  let tmp: string;
  let n = 0;
  /** A fresh root with one build in `objects/<BASE>` and `meta/singles/<BASE>`, and a folder outside it. */
  async function fixture(): Promise<{ root: string; outside: string }> {
    const dir = join(tmp, `case-${n++}`);
    const root = join(dir, 'root');
    const outside = join(dir, 'outside');
    await mkdir(join(root, 'objects', BASE), { recursive: true });
    await mkdir(join(root, 'meta', 'singles'), { recursive: true });
    await writeFile(join(root, 'objects', BASE, 'a.raw'), 'inside a');
    await writeFile(join(root, 'meta', 'singles', BASE), 'inside meta');
    await mkdir(join(outside, 'objects', BASE), { recursive: true });
    await mkdir(join(outside, 'meta', 'singles'), { recursive: true });
    await writeFile(join(outside, 'objects', BASE, 'a.raw'), 'outside a');
    await writeFile(join(outside, 'objects', BASE, 'secret.raw'), 'outside secret');
    await writeFile(join(outside, 'meta', 'singles', BASE), 'outside meta');
    return { root, outside };
  }

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'gl-dirstore-'));
  });
  after(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('refuses a linked objects/<base> that leads outside: list, get, open', async () => {
    const { root, outside } = await fixture();
    await rm(join(root, 'objects', BASE), { recursive: true });
    await symlink(join(outside, 'objects', BASE), join(root, 'objects', BASE));
    const store = new DirectoryStore(root);
    await refused(store.list(`objects/${BASE}/`), join(root, 'objects', BASE));
    await refused(store.get(`objects/${BASE}/secret.raw`), join(root, 'objects', BASE, 'secret.raw'));
    await refused(store.open(`objects/${BASE}/a.raw`), join(root, 'objects', BASE, 'a.raw'));
    // Listing from a higher prefix meets the link while walking.
    await refused(store.list('objects/'), join(root, 'objects', BASE));
  });

  it('refuses objects/ itself linked outside', async () => {
    const { root, outside } = await fixture();
    await rm(join(root, 'objects'), { recursive: true });
    await symlink(join(outside, 'objects'), join(root, 'objects'));
    const store = new DirectoryStore(root);
    await refused(store.list(`objects/${BASE}/`), join(root, 'objects', BASE));
    await refused(store.listFolders('objects/'), join(root, 'objects'));
    await refused(store.get(`objects/${BASE}/a.raw`), join(root, 'objects', BASE, 'a.raw'));
  });

  it('refuses a linked meta/ or meta/singles/ that leads outside', async () => {
    for (const linked of ['meta', join('meta', 'singles')]) {
      const { root, outside } = await fixture();
      await rm(join(root, linked), { recursive: true });
      await symlink(join(outside, linked), join(root, linked));
      const store = new DirectoryStore(root);
      await refused(store.get(`meta/singles/${BASE}`), join(root, 'meta', 'singles', BASE));
      await refused(store.list('meta/singles/'), join(root, linked));
    }
  });

  it('refuses a link to a link that leads outside, for directories and for files', async () => {
    const { root, outside } = await fixture();
    // objects/<base> -> <root>/hop -> <outside>/objects/<base>
    await rm(join(root, 'objects', BASE), { recursive: true });
    await symlink(join(outside, 'objects', BASE), join(root, 'hop'));
    await symlink(join('..', 'hop'), join(root, 'objects', BASE));
    const store = new DirectoryStore(root);
    await refused(store.list(`objects/${BASE}/`), join(root, 'objects', BASE));
    await refused(store.get(`objects/${BASE}/a.raw`), join(root, 'objects', BASE, 'a.raw'));
    // meta/singles/<base> -> <root>/hop-file -> <outside>/meta/singles/<base>
    await rm(join(root, 'meta', 'singles', BASE));
    await symlink(join(outside, 'meta', 'singles', BASE), join(root, 'hop-file'));
    await symlink(join('..', '..', 'hop-file'), join(root, 'meta', 'singles', BASE));
    await refused(store.get(`meta/singles/${BASE}`), join(root, 'meta', 'singles', BASE));
  });

  it('refuses a file link that leads outside inside a directory linked within the root', async () => {
    const { root, outside } = await fixture();
    // objects/<base> -> <root>/build/<base> (inside), whose b.raw -> <outside>/…/secret.raw
    await mkdir(join(root, 'build', BASE), { recursive: true });
    await writeFile(join(root, 'build', BASE, 'a.raw'), 'built a');
    await symlink(join(outside, 'objects', BASE, 'secret.raw'), join(root, 'build', BASE, 'b.raw'));
    await rm(join(root, 'objects', BASE), { recursive: true });
    await symlink(join('..', 'build', BASE), join(root, 'objects', BASE));
    const store = new DirectoryStore(root);
    assert.equal(await text(store, `objects/${BASE}/a.raw`), 'built a');
    await refused(store.get(`objects/${BASE}/b.raw`), join(root, 'objects', BASE, 'b.raw'));
    await refused(store.list(`objects/${BASE}/`), join(root, 'objects', BASE, 'b.raw'));
  });

  it('refuses a linked subdirectory that leads outside, met while listing', async () => {
    const { root, outside } = await fixture();
    await symlink(join(outside, 'objects'), join(root, 'objects', BASE, 'sub'));
    const store = new DirectoryStore(root);
    await refused(store.list(`objects/${BASE}/`), join(root, 'objects', BASE, 'sub'));
    // A listing whose prefix does not reach the link does not look at it.
    assert.deepEqual(
      (await store.list(`objects/${BASE}/a`)).map((o) => o.key),
      [`objects/${BASE}/a.raw`],
    );
  });

  it('reads links whose real path is inside the root: files and directories, relative, absolute and chained', async () => {
    const { root } = await fixture();
    await mkdir(join(root, 'build', BASE), { recursive: true });
    await writeFile(join(root, 'build', BASE, 'a.raw'), 'built a');
    await writeFile(join(root, 'build', 'meta'), 'built meta');
    await rm(join(root, 'objects', BASE), { recursive: true });
    await symlink(join(root, 'build', BASE), join(root, 'hop'));
    await symlink(join('..', 'hop'), join(root, 'objects', BASE)); // a link to a link to a directory
    await symlink(join(root, 'build', BASE, 'a.raw'), join(root, 'build', BASE, 'c.raw')); // absolute file link
    await rm(join(root, 'meta', 'singles', BASE));
    await symlink(join('..', '..', 'build', 'meta'), join(root, 'meta', 'singles', BASE)); // relative file link
    const store = new DirectoryStore(root);
    assert.deepEqual(
      (await store.list(`objects/${BASE}/`)).map((o) => [o.key, o.size]),
      [
        [`objects/${BASE}/a.raw`, 7],
        [`objects/${BASE}/c.raw`, 7],
      ],
    );
    assert.equal((await store.get(`objects/${BASE}/c.raw`))?.bytes.toString(), 'built a');
    assert.equal((await store.get(`meta/singles/${BASE}`))?.bytes.toString(), 'built meta');
    assert.equal(await text(store, `objects/${BASE}/a.raw`), 'built a');
    assert.deepEqual(await store.listFolders('objects/'), [BASE]);
    // A link to nothing is no object, as a missing file is none.
    await symlink(join(root, 'nowhere'), join(root, 'objects', 'dangling'));
    assert.equal(await store.get('objects/dangling'), undefined);
  });

  it('lists the files of a directory linked within the root, met while walking, without looping', async () => {
    const { root } = await fixture();
    await mkdir(join(root, 'build', 'parts'), { recursive: true });
    await writeFile(join(root, 'build', 'parts', 'p.raw'), 'part');
    await symlink(join('..', '..', 'build', 'parts'), join(root, 'objects', BASE, 'parts'));
    await symlink('..', join(root, 'objects', BASE, 'up')); // leads back to objects/: a loop, not followed
    const store = new DirectoryStore(root);
    assert.deepEqual(
      (await store.list(`objects/${BASE}/`)).map((o) => o.key),
      [`objects/${BASE}/a.raw`, `objects/${BASE}/parts/p.raw`],
    );
  });

  it('listFolders refuses linked folders that lead outside and lists those that stay inside', async () => {
    const { root, outside } = await fixture();
    await mkdir(join(outside, 'records', '9.9'), { recursive: true });
    await mkdir(join(root, 'state', 'records', 't', '1.0'), { recursive: true });
    await mkdir(join(root, 'elsewhere', '2.0'), { recursive: true });
    await symlink(join(root, 'elsewhere', '2.0'), join(root, 'state', 'records', 't', '2.0'));
    const store = new DirectoryStore(root);
    assert.deepEqual(await store.listFolders('state/records/t/'), ['1.0', '2.0']);
    await symlink(join(outside, 'records', '9.9'), join(root, 'state', 'records', 't', '9.9'));
    await refused(store.listFolders('state/records/t/'), join(root, 'state', 'records', 't', '9.9'));
    await symlink(join(outside, 'records'), join(root, 'state', 'records', 'u'));
    await refused(store.listFolders('state/records/u/'), join(root, 'state', 'records', 'u'));
  });

  it('writes and deletes records only inside the root', async () => {
    const { root, outside } = await fixture();
    await mkdir(join(outside, 'state', 'records', 't', '1.0'), { recursive: true });
    await writeFile(join(outside, 'state', 'records', 't', '1.0', 'old.json'), '{}');
    await symlink(join(outside, 'state'), join(root, 'oci-publisher'));
    const store = new DirectoryStore(root);
    await refused(store.put('oci-publisher/records/t/1.0/new.json', Buffer.from('{}')), join(root, 'oci-publisher'));
    await refused(store.put('oci-publisher/records/t/2.0/new.json', Buffer.from('{}')), join(root, 'oci-publisher'));
    await refused(store.delete('oci-publisher/records/t/1.0/old.json'), join(root, 'oci-publisher'));
    assert.deepEqual(await readdir(join(outside, 'state', 'records', 't')), ['1.0']);
    assert.deepEqual(await readdir(join(outside, 'state', 'records', 't', '1.0')), ['old.json']);

    // Records under a folder linked within the root are written there; a key that is itself a link is replaced,
    // not written through.
    await rm(join(root, 'oci-publisher'));
    await mkdir(join(root, 'state-real'));
    await symlink('state-real', join(root, 'oci-publisher'));
    await store.put('oci-publisher/records/t/1.0/a.json', Buffer.from('{"a":1}'));
    assert.equal(await readFile(join(root, 'state-real', 'records', 't', '1.0', 'a.json'), 'utf8'), '{"a":1}');
    await symlink(join(outside, 'state', 'records', 't', '1.0', 'old.json'), join(root, 'state-real', 'records', 't', '1.0', 'b.json'));
    await store.put('oci-publisher/records/t/1.0/b.json', Buffer.from('{"b":1}'));
    assert.equal(await readFile(join(outside, 'state', 'records', 't', '1.0', 'old.json'), 'utf8'), '{}');
    assert.equal((await store.get('oci-publisher/records/t/1.0/b.json'))?.bytes.toString(), '{"b":1}');
    await store.delete('oci-publisher/records/t/1.0/a.json');
    await assert.rejects(stat(join(root, 'state-real', 'records', 't', '1.0', 'a.json')), { code: 'ENOENT' });
  });

  it('accepts a root given through a symbolic link, and still refuses what leads outside it', async () => {
    const { root, outside } = await fixture();
    const viaLink = join(root, '..', 'root-link');
    await symlink(root, viaLink);
    await symlink(join(viaLink, 'objects', BASE, 'a.raw'), join(root, 'objects', BASE, 'b.raw')); // through the link
    await symlink(join(root, 'objects', BASE, 'a.raw'), join(root, 'objects', BASE, 'c.raw')); // through the real path
    const store = new DirectoryStore(viaLink);
    assert.deepEqual(
      (await store.list(`objects/${BASE}/`)).map((o) => o.key),
      [`objects/${BASE}/a.raw`, `objects/${BASE}/b.raw`, `objects/${BASE}/c.raw`],
    );
    assert.equal(await text(store, `objects/${BASE}/b.raw`), 'inside a');
    assert.deepEqual(await store.listFolders('objects/'), [BASE]);
    await store.put('oci-publisher/records/t/1.0/x.json', Buffer.from('{}'));
    assert.equal(await readFile(join(root, 'oci-publisher', 'records', 't', '1.0', 'x.json'), 'utf8'), '{}');
    await symlink(join(outside, 'objects', BASE), join(root, 'objects', 'other'));
    await refused(store.list('objects/other/'), join(viaLink, 'objects', 'other'));
  });

  it('reads ranges of a linked file, and refuses a version other than the one asked for', async () => {
    const { root } = await fixture();
    await symlink('a.raw', join(root, 'objects', BASE, 'b.raw'));
    const store = new DirectoryStore(root);
    const info = (await store.list(`objects/${BASE}/b`))[0];
    assert.equal(info?.size, 8);
    const chunks: Buffer[] = [];
    for await (const c of await store.open(`objects/${BASE}/b.raw`, { start: 2, end: 5, etag: info?.etag ?? '' })) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'side');
    await assert.rejects(store.open(`objects/${BASE}/b.raw`, { etag: 'other' }), /changed while it was being published/);
    await assert.rejects(store.get(`objects/${BASE}/b.raw`, { etag: 'other' }), /changed while it was being published/);
    await assert.rejects(store.get(`objects/${BASE}/b.raw`, { maxBytes: 4 }), /is 8 bytes, more than the 4 expected/);
    await assert.rejects(store.open(`objects/${BASE}/none.raw`), /does not exist/);
  });

  it('streams the file it checked, even when the link is changed before the stream is read', async () => {
    const { root, outside } = await fixture();
    await symlink(join(root, 'objects', BASE, 'a.raw'), join(root, 'objects', BASE, 'b.raw'));
    const store = new DirectoryStore(root);
    const stream = await store.open(`objects/${BASE}/b.raw`);
    // Swapped at once, before the stream had a turn: the bytes must still be the checked file's.
    symlinkSync(join(outside, 'objects', BASE, 'secret.raw'), join(root, 'objects', BASE, 'b.tmp'));
    renameSync(join(root, 'objects', BASE, 'b.tmp'), join(root, 'objects', BASE, 'b.raw'));
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'inside a');
  });
});
