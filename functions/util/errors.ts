/**
 * Error classes shared by every module. Each carries a stable `kind` so the job summary and the logs can say
 * what went wrong without parsing messages, and a `retryable` flag so callers know whether trying again helps.
 */
export type ErrorKind =
  | 'input' // bad event, metadata, archive, configuration: retrying cannot help
  | 'integrity' // bytes do not match a digest, size or md5
  | 'registry' // the registry refused or failed
  | 'source' // S3 or the local source failed
  | 'timeout' // the job stopped at a safe point because time ran out
  | 'conflict' // concurrent writers did not settle within the bound
  | 'signing'; // the signing key was refused, or signing failed

export class PublishError extends Error {
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PublishError';
    this.kind = kind;
    this.retryable = options?.retryable ?? false;
  }
}

export class InputError extends PublishError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('input', message, options);
    this.name = 'InputError';
  }
}

export class IntegrityError extends PublishError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('integrity', message, options);
    this.name = 'IntegrityError';
  }
}

export class SourceError extends PublishError {
  constructor(message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super('source', message, options);
    this.name = 'SourceError';
  }
}

/** Whether `err` or one of its causes (five levels deep at most) satisfies `test`. */
export function someCause(err: unknown, test: (e: Error) => boolean): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) if (test(e)) return true;
  return false;
}

/** The `code` of an error (Node's and undici's errors carry one), or undefined. */
export function errorCode(e: Error): unknown {
  return (e as { code?: unknown }).code;
}

/** A message for logs and summaries: the error's own message plus its causes, one level each. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 4; depth++) {
    if (cur instanceof Error) {
      if (!parts.some((p) => p.includes(cur instanceof Error ? cur.message : ''))) parts.push(cur.message);
      cur = cur.cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join(': ');
}
