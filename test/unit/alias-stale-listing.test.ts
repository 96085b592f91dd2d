/**
 * A writer of the lower version whose listing of the versions is older than the aliases it finds (issue 19,
 * defect 2): `latest` and `amd64-latest` already hold 1877.10, written by 1877.10's writer after this writer
 * listed. It must never move them down to 1877.9, neither in the main repository (whose index entries name their
 * version) nor in a container sub-repository (whose index has container entries only). The real alias code,
 * against the in-memory bucket and registry of the simulation, on the simulated clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildArtifactManifest } from '../../functions/gardenlinux/artifact-manifest';
import { flavorArch, parseBaseName } from '../../functions/gardenlinux/naming';
import { parseAliasTemplates } from '../../functions/gardenlinux/release-aliases';
import { renderVersionIndex, type IndexRecord } from '../../functions/gardenlinux/version-index';
import { sha256Digest } from '../../functions/oci/digest';
import { OCI_INDEX, OCI_MANIFEST } from '../../functions/oci/media-types';
import { followAliases } from '../../functions/orchestration/follow-aliases';
import { StateStore } from '../../functions/storage/state-store';
import { Deadline } from '../../functions/util/deadline';
import { Logger } from '../../functions/util/log';
import { MemoryRegistry, MemoryStore, VirtualClock } from '../helpers/simulation';

const silent = new Logger({ sink: () => undefined });
const templates = parseAliasTemplates('latest,{major},{version}.0');

/** A state store whose first listing of the versions was taken before 1877.10 had records. */
class StaleListing extends StateStore {
  listings = 0;
  /** called at every listing, before it is taken */
  onListing: () => void = () => undefined;
  override async listVersions(targetId: string): Promise<string[]> {
    this.onListing();
    const now = await super.listVersions(targetId);
    return this.listings++ === 0 ? now.filter((v) => v !== '1877.10') : now;
  }
}

async function staleWriter(kind: 'main repository' | 'container sub-repository') {
  const clock = new VirtualClock();
  const state = new StaleListing(new MemoryStore(clock, () => 10), 'oci-publisher/');
  const registry = new MemoryRegistry(clock);
  const target = registry.connect({ head: () => 10, get: () => 10, put: () => 10 });
  const images: Record<string, string> = {};
  const indexes: Record<string, string> = {};
  await clock.run(
    (async () => {
      for (const [version, commit] of [['1877.9', 'c1877009'], ['1877.10', 'c1877010']] as const) {
        const name = parseBaseName(`container-amd64-${version}-${commit}`);
        const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: sha256Digest(`config ${version}`) }, layers: [] }));
        const container = { mediaType: OCI_MANIFEST, digest: sha256Digest(image), size: image.length, platform: { architecture: 'amd64', os: 'linux' } };
        await target.putManifest(image, OCI_MANIFEST, container.digest);
        await target.putManifest(image, OCI_MANIFEST, `amd64-${version}`);
        images[version] = container.digest;
        const record: IndexRecord = { base: name.base, flavorArch: flavorArch(name), buildTime: '2026-02-10T11:00:00Z', container };
        if (kind === 'main repository') {
          // The main repository's index also has the build's Garden Linux entry, which names its version.
          const m = buildArtifactManifest(name, 'base,container', [{ title: `${name.base}.oci`, mediaType: 'application/io.gardenlinux.image.archive.format.oci', digest: sha256Digest(name.base), size: 10 }]);
          await target.putManifest(m.bytes, OCI_MANIFEST, m.digest);
          record.gardenlinux = m.indexEntry;
        }
        await state.putRecord(target.id, version, record);
        const rendered = renderVersionIndex([record], undefined);
        assert.ok(rendered);
        await target.putManifest(rendered.bytes, OCI_INDEX, version);
        indexes[version] = rendered.digest;
      }
      // 1877.10's writer has moved the aliases already.
      await target.putManifest(registry.manifests.get(indexes['1877.10'] as string)?.bytes as Buffer, OCI_INDEX, 'latest');
      await target.putManifest(registry.manifests.get(indexes['1877.10'] as string)?.bytes as Buffer, OCI_INDEX, '1877');
      await target.putManifest(registry.manifests.get(images['1877.10'] as string)?.bytes as Buffer, OCI_MANIFEST, 'amd64-latest');
      await target.putManifest(registry.manifests.get(images['1877.10'] as string)?.bytes as Buffer, OCI_MANIFEST, 'amd64-1877');
    })(),
  );
  const before = registry.writes.length;
  // How many writes the writer had made when it listed the versions the second time: none may come before.
  let writesBeforeRelist: number | undefined;
  state.onListing = () => {
    if (state.listings === 1) writesBeforeRelist = registry.writes.length - before;
  };
  const updates = await clock.run(followAliases({ state, target, version: '1877.9', templates, logger: silent, deadline: Deadline.none(), clock, random: () => 0.5 }));
  return { registry, images, indexes, updates, writes: registry.writes.slice(before), listings: state.listings, writesBeforeRelist };
}

describe('a writer whose listing is older than the aliases it finds (issue 19, defect 2)', () => {
  for (const kind of ['main repository', 'container sub-repository'] as const) {
    it(`${kind}: never moves latest, {major} or amd64-latest down, and lists again instead`, async () => {
      const { registry, images, indexes, updates, writes, listings, writesBeforeRelist } = await staleWriter(kind);
      const down = writes.filter(
        (w) => (['latest', '1877'].includes(w.reference) && w.digest !== indexes['1877.10']) || (['amd64-latest', 'amd64-1877'].includes(w.reference) && w.digest !== images['1877.10']),
      );
      assert.deepEqual(down, [], 'no alias was moved down, not even for a round');
      assert.ok(listings >= 2, 'the writer listed the versions again');
      assert.equal(writesBeforeRelist, 0, 'nothing was written on the stale listing');
      // What the rules say for 1877.9: its own {version}.0, and the higher version everywhere else.
      assert.equal(registry.tags.get('latest'), indexes['1877.10']);
      assert.equal(registry.tags.get('1877'), indexes['1877.10']);
      assert.equal(registry.tags.get('amd64-latest'), images['1877.10']);
      assert.equal(registry.tags.get('1877.9.0'), indexes['1877.9']);
      assert.equal(registry.tags.get('amd64-1877.9.0'), images['1877.9']);
      assert.deepEqual(
        Object.fromEntries(updates.map((u) => [u.alias, u.version])),
        { latest: '1877.10', '1877': '1877.10', '1877.9.0': '1877.9' },
        'the job reports the versions the aliases hold',
      );
    });
  }
});
