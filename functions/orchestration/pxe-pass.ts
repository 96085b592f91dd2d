/**
 * A PXE bundle (`*.pxe.tar.gz`): the bundle itself is a layer, and so is each top-level file inside it (vmlinuz,
 * initrd, cmdline, root.squashfs), titled with its bare name (spec §3). One read feeds the bundle's upload and,
 * through gunzip and a tar parser, one upload per member; nothing of unknown digest is committed unless the
 * whole bundle parsed (single-pass.ts).
 */
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Parser as TarParser, type ReadEntry } from 'tar';
import { normalizeMemberPath } from '../oci/tar-index';
import type { Target } from '../target/target';
import { InputError } from '../util/errors';
import type { FileTransfer, PublishedBlob, SourceFile } from './file-transfer';
import { SinglePass } from './single-pass';

export interface PxeResult {
  bundle: PublishedBlob;
  members: Array<PublishedBlob & { name: string }>;
}

export function transferPxeBundle(t: FileTransfer, file: SourceFile, target: Target): Promise<PxeResult> {
  return t.limiter.run(() => t.withPassRetries(file, () => pxePass(t, file, target)));
}

async function pxePass(t: FileTransfer, file: SourceFile, target: Target): Promise<PxeResult> {
  const what = t.what(file);
  const known = await t.facts(file);
  if (known?.members) {
    const present = await Promise.all([known.digest, ...known.members.map((m) => m.digest)].map((d) => target.hasBlob(d)));
    if (present.every(Boolean)) {
      t.stats.blobsSkipped += present.length;
      return { bundle: { digest: known.digest, size: known.size }, members: known.members };
    }
  }
  const needBundle = known === undefined || !(await target.hasBlob(known.digest));
  // Opened before any upload starts, so no upload can fail while nobody is waiting for it.
  const source = await t.open(file);
  const pass = new SinglePass(what);
  const members: Array<PublishedBlob & { name: string }> = [];
  let bundle: PublishedBlob | undefined = known ? { digest: known.digest, size: known.size } : undefined;

  const parser = new TarParser({ strict: true });
  pass.whenStopped((error) => parser.abort(error));
  // The parser's own errors are the only ones that mean a bad bundle; after a stop it reports the stop.
  pass.gate(
    new Promise<void>((resolve, reject) => {
      const bad = (err: Error): void => reject(pass.stopped ?? new InputError(`${what}: not a valid gzip-compressed tar (${err.message})`));
      parser.on('error', bad);
      parser.on('abort', bad);
      parser.on('end', () => resolve());
    }),
  );

  const wholes: Writable[] = [];
  if (needBundle) {
    const sink = pass.sink();
    wholes.push(sink);
    t.wholeFileUpload(pass, target, file, known?.digest, sink, (r) => {
      bundle = { digest: r.digest, size: r.size };
    });
  } else t.stats.blobsSkipped++;
  wholes.push(tarParserSink(pass, parser));

  parser.on('entry', (entry: ReadEntry) => {
    let name: string;
    try {
      name = normalizeMemberPath(entry.path, what);
    } catch (err) {
      pass.fail(err);
      return;
    }
    if (entry.type !== 'File' || name.includes('/') || name === '') {
      if (entry.type === 'File') t.log.warn('PXE bundle member below the top level is not published', { file: what, member: name });
      entry.resume();
      return;
    }
    const size = entry.size;
    const knownMember = known?.members?.find((m) => m.name === name && m.size === size);
    const sink = pass.sink();
    entry.pipe(sink);
    void pass.upload(knownMember !== undefined, async (beforeCommit) => {
      let r: PublishedBlob;
      if (knownMember && (await target.hasBlob(knownMember.digest))) {
        t.stats.blobsSkipped++;
        // Drained, not uploaded; a pass that stops meanwhile destroys the sink, which ends this wait too.
        await finished(sink.resume());
        r = knownMember;
      } else {
        r = await t.upload(target, {
          ...(knownMember ? { digest: knownMember.digest } : {}),
          size,
          what: `${what} member ${name}`,
          once: true,
          ...(beforeCommit ? { beforeCommit } : {}),
          open: async () => sink,
        });
      }
      members.push({ name, digest: r.digest, size: r.size });
    });
  });

  await pass.run(source, file.size, wholes, []);
  if (bundle === undefined) throw new Error(`${what}: the bundle's digest is unknown after the pass`);
  members.sort((a, b) => (a.name < b.name ? -1 : 1));
  await t.saveFacts(file, { ...(bundle as PublishedBlob), members });
  return { bundle: bundle as PublishedBlob, members };
}

/** node-tar's parser as a sink of the pass, so the fan-out can feed it with backpressure. */
function tarParserSink(pass: SinglePass, parser: TarParser) {
  const sink = pass.sink();
  sink.on('data', (chunk: Buffer) => {
    if (!parser.write(chunk)) {
      sink.pause();
      parser.once('drain', () => sink.resume());
    }
  });
  sink.on('end', () => parser.end());
  sink.on('error', (err) => parser.abort(err));
  parser.on('abort', (err: Error) => sink.destroy(err));
  return sink;
}
