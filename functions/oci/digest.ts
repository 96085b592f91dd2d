import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { IntegrityError } from '../util/errors';

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: string): boolean {
  return DIGEST.test(value);
}

export function sha256Digest(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The 2-byte config blob `{}` of Garden Linux artifact manifests. */
export const EMPTY_JSON = Buffer.from('{}');
export const EMPTY_JSON_DIGEST = sha256Digest(EMPTY_JSON);

export interface Expected {
  digest?: string;
  size?: number;
  md5?: string;
  /** what the bytes are, for error messages */
  what: string;
}

export interface Hashed {
  digest: string;
  size: number;
  md5?: string;
}

/**
 * A pass-through stream that hashes what flows through it and counts the bytes. `verify()` compares the result
 * with what was expected; a pipeline can also let the tap fail itself at the end (`failOnMismatch`), so a
 * corrupt source never completes an upload that trusts the stream.
 */
export class HashingTap extends Transform {
  private readonly sha256: Hash = createHash('sha256');
  private readonly md5Hash: Hash | undefined;
  private bytes = 0;
  private result: Hashed | undefined;

  constructor(
    private readonly expected: Expected,
    private readonly options: { failOnMismatch?: boolean; onBytes?: (n: number) => void } = {},
  ) {
    super({ highWaterMark: 1 << 20 });
    this.md5Hash = expected.md5 ? createHash('md5') : undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.result !== undefined || (this.expected.size !== undefined && this.bytes + chunk.length > this.expected.size)) {
      cb(new IntegrityError(`${this.expected.what}: more than the expected ${this.expected.size} bytes`));
      return;
    }
    this.sha256.update(chunk);
    this.md5Hash?.update(chunk);
    this.bytes += chunk.length;
    this.options.onBytes?.(chunk.length);
    // With the size known, the result is final at the last byte, before that byte is passed on: a mismatch then
    // keeps an upload from ever completing, and the result does not wait for end-of-stream events (a consumer
    // such as an HTTP client may close the stream as soon as it has its answer).
    if (this.bytes === this.expected.size) {
      try {
        this.finish();
      } catch (err) {
        cb(err as Error);
        return;
      }
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (this.result === undefined) this.finish();
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb();
  }

  private finish(): void {
    this.result = {
      digest: `sha256:${this.sha256.digest('hex')}`,
      size: this.bytes,
      ...(this.md5Hash ? { md5: this.md5Hash.digest('hex') } : {}),
    };
    if (this.options.failOnMismatch) this.verify();
  }

  /** The result once every expected byte went through, else undefined. */
  get complete(): Hashed | undefined {
    return this.result;
  }

  /** The digest, size and md5 of everything that passed; only after the stream ended. */
  hashed(): Hashed {
    if (this.result === undefined) throw new Error(`${this.expected.what}: the stream has not ended`);
    return this.result;
  }

  /** Throws an IntegrityError when the bytes differ from what was expected; returns what was seen. */
  verify(): Hashed {
    return verifyHashed(this.hashed(), this.expected);
  }
}

export function verifyHashed(seen: Hashed, expected: Expected): Hashed {
  if (expected.size !== undefined && seen.size !== expected.size) {
    throw new IntegrityError(`${expected.what}: ${seen.size} bytes, expected ${expected.size}`);
  }
  if (expected.digest !== undefined && seen.digest !== expected.digest) {
    throw new IntegrityError(`${expected.what}: digest ${seen.digest}, expected ${expected.digest}`);
  }
  if (expected.md5 !== undefined && seen.md5 !== undefined && seen.md5 !== expected.md5) {
    throw new IntegrityError(`${expected.what}: md5 ${seen.md5}, but the metadata says ${expected.md5}`);
  }
  return seen;
}

export function hashBuffer(bytes: Buffer, withMd5: boolean): Hashed {
  return {
    digest: sha256Digest(bytes),
    size: bytes.length,
    ...(withMd5 ? { md5: createHash('md5').update(bytes).digest('hex') } : {}),
  };
}
