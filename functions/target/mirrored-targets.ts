/**
 * Several destinations behind one Target, for the blob phase of a publication: each file is read from the source
 * once and its bytes are handed to every destination that lacks the blob (a tee with backpressure, so memory stays
 * at a few buffers and the read goes as fast as the slowest destination takes it).
 *
 * A destination that fails (down, refusing credentials or uploads, out of retries) is set aside with its error,
 * and the others go on: its branch of the tee is dropped, and it gets no further requests. Only when every
 * destination has failed does a call fail, with the first destination's error. A failure of the source itself
 * (the read breaks, the pass is stopped) fails the call as it is, and is no destination's fault.
 *
 * What each destination moved is counted on its own, for the job's report per destination.
 */
import { PassThrough, pipeline, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { RegistryError } from '../registry/errors';
import { HashingTap } from '../oci/digest';
import { expectedOf } from '../registry/blob-upload';
import { describeError } from '../util/errors';
import type { Logger } from '../util/log';
import type { BlobSource, BlobStream, FetchedManifest, Target, TargetSet, UploadResult } from './target';

export interface MirrorCounters {
  bytesUploaded: number;
  blobsUploaded: number;
  blobsSkipped: number;
}

/** One destination of a mirror: its targets, its failure (once it failed), what it moved. */
export interface MirrorMember {
  readonly targets: TargetSet;
  failure?: unknown;
  readonly counters: MirrorCounters;
}

/** Why a branch of the tee is no longer fed: its destination finished or failed. */
class BranchGone extends Error {
  constructor() {
    super('this destination no longer takes the bytes');
    this.name = 'BranchGone';
  }
}

/** What a destination's blob source reads: its branch of the tee at first, the source itself for a retry. */
interface Branch {
  stream: PassThrough;
  taken: boolean;
}

export class Mirror {
  readonly members: MirrorMember[];
  /** per member and digest: whether it has the blob, as its last HEAD said */
  private readonly has: Array<Map<string, boolean>>;

  constructor(
    sets: readonly TargetSet[],
    private readonly logger: Logger,
    /** true: a failure is not held against a member (the signal that the whole job stops) */
    private readonly stopping: () => boolean = () => false,
    /** how long a destination may take no bytes while the others wait, before it is set aside (a stalled registry) */
    readonly stallMs: number = 60_000,
  ) {
    this.members = sets.map((targets) => ({ targets, counters: { bytesUploaded: 0, blobsUploaded: 0, blobsSkipped: 0 } }));
    this.has = sets.map(() => new Map());
  }

  /** The members that have not failed. */
  live(): MirrorMember[] {
    return this.members.filter((m) => m.failure === undefined);
  }

  /** One Target over the same repository of every member: the main one, or a sub-repository. */
  target(repository?: string): Target {
    const pick = (m: MirrorMember): Target => (repository === undefined ? m.targets.main : m.targets.repository(repository));
    // One destination is no mirror: its own target, whose failures are the job's.
    if (this.members.length === 1) return pick(this.members[0] as MirrorMember);
    return new MirroredTarget(this, pick, this.members.map(pick));
  }

  /**
   * Runs `fn` for each live member at once. A member whose call fails is set aside; the results of the others are
   * returned. When no member is left, the first failure is thrown.
   */
  async each<T>(what: string, fn: (m: MirrorMember, i: number) => Promise<T>): Promise<Array<{ member: MirrorMember; index: number; value: T }>> {
    if (this.members.length === 1) return [{ member: this.members[0] as MirrorMember, index: 0, value: await fn(this.members[0] as MirrorMember, 0) }];
    const live = this.members.flatMap((m, index) => (m.failure === undefined ? [{ m, index }] : []));
    if (live.length === 0) throw this.noneLeft();
    const settled = await Promise.allSettled(live.map(({ m, index }) => fn(m, index)));
    const out: Array<{ member: MirrorMember; index: number; value: T }> = [];
    for (const [k, r] of settled.entries()) {
      const { m, index } = live[k] as { m: MirrorMember; index: number };
      if (r.status === 'fulfilled') out.push({ member: m, index, value: r.value });
      else this.setAside(m, r.reason, what);
    }
    if (out.length === 0) throw this.noneLeft();
    return out;
  }

  setAside(m: MirrorMember, err: unknown, what: string): void {
    if (this.stopping()) throw err;
    if (m.failure !== undefined) return;
    m.failure = err;
    this.logger.error('a destination failed; the others go on', { target: m.targets.main.display, during: what, error: describeError(err) });
  }

  private noneLeft(): unknown {
    return this.members.find((m) => m.failure !== undefined)?.failure ?? new Error('no destination');
  }

  knownPresent(member: number, digest: string): boolean | undefined {
    return this.has[member]?.get(digest);
  }

  remember(member: number, digest: string, present: boolean): void {
    this.has[member]?.set(digest, present);
  }
}

class MirroredTarget implements Target {
  readonly id: string;
  readonly display: string;
  readonly repositoryName: string;

  constructor(
    private readonly mirror: Mirror,
    private readonly pick: (m: MirrorMember) => Target,
    all: readonly Target[],
  ) {
    this.id = all.map((t) => t.id).join(',');
    this.display = all.map((t) => t.display).join(', ');
    this.repositoryName = all.map((t) => t.repositoryName).join(', ');
  }

  /** Whether every live member has the blob (each one's answer is kept for the upload that may follow). */
  async hasBlob(digest: string): Promise<boolean> {
    const answers = await this.mirror.each(`HEAD ${digest}`, async (m, i) => {
      const present = await this.pick(m).hasBlob(digest);
      this.mirror.remember(i, digest, present);
      return present;
    });
    const all = answers.every((a) => a.value);
    // Every destination has it: the caller skips it, and so it counts for each.
    if (all) for (const a of answers) a.member.counters.blobsSkipped++;
    return all;
  }

  /** The digest a reference resolves to when it resolves to the same one in every live member. */
  async resolve(reference: string): Promise<string | undefined> {
    const answers = await this.mirror.each(`HEAD ${reference}`, (m) => this.pick(m).resolve(reference));
    const first = answers[0]?.value;
    return answers.every((a) => a.value === first) ? first : undefined;
  }

  /**
   * Uploads to every live member that lacks the blob, from one read of `blob`. Members known to have it (by the
   * HEAD of hasBlob) are skipped and counted so.
   */
  async pushBlob(blob: BlobSource): Promise<UploadResult> {
    const known = blob.digest;
    const lacking = this.mirror.members.flatMap((m, i) => {
      if (m.failure !== undefined) return [];
      if (known !== undefined && this.mirror.knownPresent(i, known) === true) {
        m.counters.blobsSkipped++;
        return [];
      }
      return [{ m, i }];
    });
    if (lacking.length === 0) {
      if (this.mirror.live().length === 0) await this.mirror.each('upload', async () => undefined);
      // A source that can be read only once (a pass's sink) is read to its end all the same: its pass waits for
      // every consumer.
      if (blob.once) await finished((await blob.open()).resume());
      return { digest: known as string, size: blob.size };
    }
    const branches: Branch[] = lacking.map(() => ({ stream: new PassThrough({ highWaterMark: 1 << 20 }), taken: false }));
    for (const b of branches) b.stream.on('error', () => undefined);
    // The furthest member's progress is the blob's: the caller counts the bytes of one copy.
    const progress = lacking.map(() => 0);
    let reported = 0;
    const advance = (k: number, n: number): void => {
      progress[k] = (progress[k] as number) + n;
      const furthest = Math.max(...progress);
      if (furthest > reported) {
        blob.onBytes?.(furthest - reported);
        reported = furthest;
      }
    };
    // One hash for every destination: the bytes are checked (digest, size, md5) before they reach the branches, and
    // a mismatch fails the read before its last byte, so no upload can commit bad bytes.
    const checked = new HashingTap(expectedOf(blob), { failOnMismatch: true });
    const reading = (async () => {
      const source = await blob.open();
      pipeline(source, checked, () => undefined);
      await tee(checked, branches.map((b) => b.stream), this.mirror.stallMs);
    })();
    reading.catch(() => undefined);
    const uploads = lacking.map(({ m, i }, k) => {
      const branch = branches[k] as Branch;
      let current: HashingTap = checked;
      // Counted for the destination once its upload succeeded: bytes of an attempt that failed are no upload.
      let sent = 0;
      const child: BlobSource = {
        ...blob,
        checkedUpstream: () => current.complete,
        onBytes: (n) => {
          sent += n;
          advance(k, n);
        },
        open: async () => {
          if (!branch.taken) {
            branch.taken = true;
            return branch.stream;
          }
          // A retry of this member alone reads the source again (only a source that can be read again is retried),
          // and checks it on its own.
          current = new HashingTap(expectedOf(blob), { failOnMismatch: true });
          const again = await blob.open();
          pipeline(again, current, () => undefined);
          return current;
        },
      };
      return this.pick(m)
        .pushBlob(child)
        .then((r) => {
          m.counters.bytesUploaded += Math.min(sent, blob.size);
          m.counters.blobsUploaded++;
          this.mirror.remember(i, r.digest, true);
          return r;
        })
        .finally(() => {
          // Done or failed: the tee no longer waits for this branch.
          if (!branch.stream.destroyed && !branch.stream.writableFinished) branch.stream.destroy(new BranchGone());
        });
    });
    const settled = await Promise.allSettled(uploads);
    try {
      await reading;
    } catch (err) {
      // The source broke, or every branch went away: the first is the source's failure, not a destination's.
      if (!(err instanceof BranchGone)) throw err;
    }
    let result: UploadResult | undefined;
    for (const [k, r] of settled.entries()) {
      const { m } = lacking[k] as { m: MirrorMember };
      if (r.status === 'fulfilled') {
        if (result !== undefined && r.value.digest !== result.digest) throw new Error(`${blob.what}: destinations computed different digests`);
        result ??= r.value;
      } else {
        this.mirror.setAside(m, r.reason, `uploading ${blob.what}`);
      }
    }
    if (result === undefined) {
      // Nobody took the bytes: the source (when it failed) or the first member's failure says why.
      return this.mirror.each('upload', async () => undefined).then(() => ({ digest: known as string, size: blob.size }));
    }
    return result;
  }

  blobSize(): Promise<number | undefined> {
    return Promise.reject(new Error('a mirror serves the blob phase only'));
  }

  fetchBlob(): Promise<Buffer | undefined> {
    return Promise.reject(new Error('a mirror serves the blob phase only'));
  }

  openBlob(): Promise<BlobStream | undefined> {
    return Promise.reject(new Error('a mirror serves the blob phase only'));
  }

  getManifest(): Promise<FetchedManifest | undefined> {
    return Promise.reject(new Error('a mirror serves the blob phase only'));
  }

  putManifest(): Promise<string> {
    return Promise.reject(new Error('a mirror serves the blob phase only'));
  }
}

/**
 * Copies `source` into every branch, as fast as the slowest live branch takes it. A branch that is destroyed (its
 * destination finished or failed) is dropped; when none is left, the read stops with BranchGone.
 */
async function tee(source: Readable, branches: PassThrough[], stallMs: number): Promise<void> {
  const live = new Set(branches);
  try {
    for await (const data of source) {
      const chunk = data as Buffer;
      for (const b of [...live]) {
        if (b.destroyed) {
          live.delete(b);
          continue;
        }
        if (!b.write(chunk)) {
          const ok = await drainedOrGone(b, stallMs);
          if (!ok) live.delete(b);
        }
      }
      if (live.size === 0) throw new BranchGone();
    }
    for (const b of live) b.end();
  } catch (err) {
    source.destroy();
    for (const b of live) b.destroy(err as Error);
    throw err;
  }
}

/**
 * Resolves true when `b` takes more, false when it went away first. A branch that takes nothing for `stallMs` is
 * cut off (its upload fails, retryably, and its destination is set aside): one stalled registry must not hold the
 * others back for longer than that.
 */
function drainedOrGone(b: PassThrough, stallMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      b.off('drain', onDrain);
      b.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    const timer = setTimeout(() => {
      b.destroy(new RegistryError(`took no bytes for ${Math.round(stallMs / 1000)} s while the other destinations waited`, { code: 'STALLED', retryable: true }));
    }, stallMs);
    b.on('drain', onDrain);
    b.on('close', onClose);
  });
}
