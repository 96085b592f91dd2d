/**
 * The checks the publisher's guarantees rest on, named so that the simulation (test/sim) can switch one off and show
 * that it then finds a violation: each is there because something breaks without it. Production code never changes
 * them; only tests do, through `withoutGuard`, one at a time.
 */
export interface Guards {
  /** converge.ts: after writing the index or a tag, list the records again (only that listing makes a write safe) */
  relistAfterWrite: boolean;
  /** follow-aliases.ts: write aliases only when a listing and the indexes read after them say the same */
  aliasStaleListing: boolean;
  /** publish-build.ts: the artifact manifest's signature is written before its record (no index names it unsigned) */
  signatureBeforeRecord: boolean;
  /** publish-build.ts: a retracted build is not published again, unless by hand */
  retractionCheck: boolean;
  /** converge.ts: a container tag goes to the newest build of its platform, never to an older writer's own image */
  olderBuildTagCheck: boolean;
}

export const guards: Guards = {
  relistAfterWrite: true,
  aliasStaleListing: true,
  signatureBeforeRecord: true,
  retractionCheck: true,
  olderBuildTagCheck: true,
};

/** Runs `fn` with one guard off, and puts it back however `fn` ends. */
export async function withoutGuard<T>(name: keyof Guards, fn: () => Promise<T>): Promise<T> {
  guards[name] = false;
  try {
    return await fn();
  } finally {
    guards[name] = true;
  }
}
