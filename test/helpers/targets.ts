/** A target that forwards every call to another, but for the ones a test replaces (latency, counting, faults). */
import type { Target } from '../../functions/target/target';

export function overriding(target: Target, replaced: Partial<Omit<Target, 'id' | 'display' | 'repositoryName'>>): Target {
  return {
    id: target.id,
    display: target.display,
    repositoryName: target.repositoryName,
    hasBlob: (d) => target.hasBlob(d),
    blobSize: (d) => target.blobSize(d),
    fetchBlob: (d, n) => target.fetchBlob(d, n),
    openBlob: (d, s) => target.openBlob(d, s),
    pushBlob: (b) => target.pushBlob(b),
    resolve: (r) => target.resolve(r),
    getManifest: (r) => target.getManifest(r),
    putManifest: (b, m, r) => target.putManifest(b, m, r),
    ...replaced,
  };
}
