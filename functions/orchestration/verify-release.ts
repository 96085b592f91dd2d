/**
 * Checks a published version the way its readers see it, and reports every problem; it never writes.
 *
 * For the main repository and each container sub-repository that has the version:
 * - the index `<repo>:<version>` exists and parses, and every entry resolves by digest, with the size and media
 *   type the entry states;
 * - each Garden Linux entry's tag `<version>-<cname>-<arch>` names the same digest, and every blob its manifest
 *   names exists with the stated size (HEAD only);
 * - each container entry's platform is its image config's, its blobs exist, and `<arch>-<version>` names the
 *   first entry of its arch (the one a pull by platform gets);
 * - records and index agree: every recorded build is in the index, no retracted build is, and entries no record
 *   names are reported as warnings (another tool wrote them);
 * - the aliases of ALIAS_TAGS hold what the rules say (follow-aliases.ts), `<arch>-<alias>` included;
 * - with a public key: the cosign signature of every artifact manifest (and container image, when those are
 *   signed) is there and passes both cosign's and gardenlinux-update's checks; the report says per signature
 *   whether the key signs layer 0, the only layer gardenlinux-update reads.
 *
 * Every registry request goes through one limiter, so a version of 100 builds is checked with a bounded number
 * of requests in flight.
 */
import type { KeyObject } from 'node:crypto';
import { artifactTagOf } from '../gardenlinux/naming';
import type { AliasTemplate } from '../gardenlinux/release-aliases';
import { containerWinners, effectiveRecords, isContainerEntry, type IndexRecord } from '../gardenlinux/version-index';
import { ImageConfigSchema, ImageManifestSchema, IndexSchema, parseJson, type Descriptor, type ImageIndex } from '../oci/descriptor';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES } from '../oci/media-types';
import { keyFingerprint } from '../signing/signer';
import { checkSignature, type FirstLayerSigner } from '../signing/verify-signature';
import type { Retraction, StateStore } from '../storage/state-store';
import type { FetchedManifest, Target } from '../target/target';
import { describeError } from '../util/errors';
import { Limiter, mapLimit } from '../util/limiter';
import { IndexReader, planAliases, publishedVersions, readSource, versionOfIndex } from './follow-aliases';

const CHECKS = ['index', 'entry', 'tag', 'blob', 'container', 'record', 'alias', 'signature'] as const;
export type CheckName = (typeof CHECKS)[number];

export interface Problem {
  severity: 'error' | 'warning';
  check: CheckName;
  repository: string;
  /** what is wrong: a tag, a digest, a build */
  subject: string;
  message: string;
}

export interface RepositoryReport {
  repository: string;
  /** the digest of `<repo>:<version>`, when it exists */
  index?: string;
  entries: number;
  records: number;
  blobs: number;
  tags: number;
  aliases: number;
  signatures: number;
  /** per signature checked, who signs its layer 0 (the only layer gardenlinux-update reads), by subject */
  firstLayers?: FirstLayerReport[];
  errors: number;
  warnings: number;
}

export interface FirstLayerReport {
  /** the build (cname), or the container image */
  subject: string;
  /** the signed manifest */
  digest: string;
  /** layers of its `.sig` */
  layers: number;
  /** the key checked against (VerifyReport.key), another key, an invalid layer, or none */
  signer: FirstLayerSigner;
  /** the fingerprint of the key signing layer 0, when it is the key checked against */
  key?: string;
}

export interface VerifyReport {
  version: string;
  /** no errors (warnings allowed) */
  ok: boolean;
  repositories: RepositoryReport[];
  problems: Problem[];
  /** the fingerprint of the public key signatures were checked against (keyFingerprint), when there was one */
  key?: string;
  durationMs: number;
}

export interface VerifyOptions {
  state: StateStore;
  /** the main repository first, then the container sub-repositories */
  targets: readonly Target[];
  version: string;
  templates: readonly AliasTemplate[];
  /** checks signatures when given (SIGNING_KEY's public key, or one given by hand) */
  publicKey?: KeyObject;
  /** container image manifests are signed too (SIGN_CONTAINER_IMAGES) */
  signContainerImages?: boolean;
  /** registry requests in flight at most */
  concurrency?: number;
  now?: () => number;
}

const MAX_CONFIG_BYTES = 1024 * 1024;
/** records read from the state store at once */
const READERS = 16;

/** A target whose every request waits for the shared limiter. */
function limited(target: Target, limiter: Limiter): Target {
  return {
    id: target.id,
    display: target.display,
    repositoryName: target.repositoryName,
    hasBlob: (d) => limiter.run(() => target.hasBlob(d)),
    blobSize: (d) => limiter.run(() => target.blobSize(d)),
    fetchBlob: (d, n) => limiter.run(() => target.fetchBlob(d, n)),
    openBlob: (d, s) => limiter.run(() => target.openBlob(d, s)),
    pushBlob: () => Promise.reject(new Error('verify never writes')),
    resolve: (r) => limiter.run(() => target.resolve(r)),
    getManifest: (r) => limiter.run(() => target.getManifest(r)),
    putManifest: () => Promise.reject(new Error('verify never writes')),
  };
}

function short(digest: string | undefined): string {
  return digest === undefined ? 'nothing' : digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1…');
}

export async function verifyRelease(o: VerifyOptions): Promise<VerifyReport> {
  const now = o.now ?? Date.now;
  const started = now();
  const limiter = new Limiter(o.concurrency ?? 16);
  const problems: Problem[] = [];
  const repositories: RepositoryReport[] = [];
  for (const [i, raw] of o.targets.entries()) {
    const report = await verifyRepository(o, limited(raw, limiter), i === 0, problems);
    if (report) repositories.push(report);
  }
  // Checks finish in any order; the report reads the same every time: errors first, then by repository and check.
  const repoOrder = o.targets.map((t) => t.display);
  problems.sort(
    (a, b) =>
      Number(a.severity === 'warning') - Number(b.severity === 'warning') ||
      repoOrder.indexOf(a.repository) - repoOrder.indexOf(b.repository) ||
      CHECKS.indexOf(a.check) - CHECKS.indexOf(b.check) ||
      (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0) ||
      (a.message < b.message ? -1 : a.message > b.message ? 1 : 0),
  );
  for (const r of repositories) r.firstLayers?.sort((a, b) => (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0));
  const key = o.publicKey ? { key: keyFingerprint(o.publicKey) } : {};
  return { version: o.version, ok: !problems.some((p) => p.severity === 'error'), repositories, problems, ...key, durationMs: now() - started };
}

interface Listed {
  records: IndexRecord[];
  retractions: Retraction[];
}

async function readRecords(state: StateStore, target: Target, version: string): Promise<Listed> {
  const listing = await state.listVersion(target.id, version);
  const entries = await mapLimit(listing, READERS, (info) => state.readEntry(info));
  const out: Listed = { records: [], retractions: [] };
  for (const e of entries) {
    if (e?.kind === 'record') out.records.push(e.record);
    else if (e?.kind === 'retraction') out.retractions.push(e.retraction);
  }
  return out;
}

async function verifyRepository(o: VerifyOptions, target: Target, isMain: boolean, problems: Problem[]): Promise<RepositoryReport | undefined> {
  const report: RepositoryReport = { repository: target.display, entries: 0, records: 0, blobs: 0, tags: 0, aliases: 0, signatures: 0, errors: 0, warnings: 0 };
  const add = (severity: Problem['severity'], check: CheckName, subject: string, message: string): void => {
    problems.push({ severity, check, repository: target.display, subject, message });
    if (severity === 'error') report.errors++;
    else report.warnings++;
  };
  /** runs one check; a request that fails is a problem of that check, not the end of the run */
  const attempt = async (check: CheckName, subject: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      add('error', check, subject, `could not be checked: ${describeError(err)}`);
    }
  };

  const listed = await readRecords(o.state, target, o.version);
  report.records = listed.records.length;
  const snapshot = await target.getManifest(o.version);
  // A sub-repository without this version (no container build of its flavors) is not part of it.
  if (!isMain && !snapshot && listed.records.length === 0) return undefined;
  const index = readIndex(snapshot, `${target.display}:${o.version}`, (m) => add('error', 'index', o.version, m));
  if (index) {
    report.index = snapshot?.digest;
    report.entries = index.manifests.length;
    await Promise.all([
      ...index.manifests.map((entry) => attempt('entry', entry.annotations?.cname ?? entry.digest, () => checkEntry(o, target, entry, index, report, add))),
      attempt('record', o.version, async () => checkRecords(listed, index, add)),
    ]);
  } else if (!snapshot && (listed.records.length > 0 || isMain)) {
    // (An index that exists but cannot be read was reported by readIndex.)
    add('error', 'index', o.version, `${target.display}:${o.version} does not exist${listed.records.length > 0 ? ` although ${listed.records.length} builds are recorded; reindex ${o.version}` : ''}`);
  }
  if (o.templates.length > 0) await attempt('alias', o.version, () => checkAliases(o, target, report, add));
  return report;
}

function readIndex(snapshot: FetchedManifest | undefined, what: string, fail: (message: string) => void): ImageIndex | undefined {
  if (!snapshot) return undefined;
  if (!INDEX_TYPES.includes(snapshot.mediaType)) {
    fail(`${what} is a ${snapshot.mediaType}, not an image index`);
    return undefined;
  }
  try {
    return parseJson(IndexSchema, snapshot.bytes, what);
  } catch (err) {
    fail((err as Error).message);
    return undefined;
  }
}

type Add = (severity: Problem['severity'], check: CheckName, subject: string, message: string) => void;

async function checkEntry(o: VerifyOptions, target: Target, entry: Descriptor, index: ImageIndex, report: RepositoryReport, add: Add): Promise<void> {
  const cname = entry.annotations?.cname;
  const subject = cname ?? `${entry.platform?.architecture ?? '?'} image ${short(entry.digest)}`;
  const manifest = await target.getManifest(entry.digest);
  if (!manifest) {
    add('error', 'entry', subject, `the index names ${entry.digest}, which does not exist in ${target.display}`);
    return;
  }
  if (manifest.bytes.length !== entry.size) add('error', 'entry', subject, `${entry.digest} is ${manifest.bytes.length} bytes; the index says ${entry.size}`);
  if (manifest.mediaType !== entry.mediaType) add('error', 'entry', subject, `${entry.digest} is a ${manifest.mediaType}; the index says ${entry.mediaType}`);

  const checks: Array<Promise<void>> = [];
  if (cname !== undefined) {
    checks.push(checkTag(target, artifactTagOf(o.version, cname, entry.platform?.architecture), entry.digest, subject, report, add));
  } else if (isContainerEntry(entry)) {
    const arch = entry.platform?.architecture as string;
    const first = index.manifests.find((m) => isContainerEntry(m) && m.platform?.architecture === arch);
    if (first === entry) checks.push(checkTag(target, `${arch}-${o.version}`, entry.digest, subject, report, add));
  }
  if (IMAGE_MANIFEST_TYPES.includes(manifest.mediaType)) checks.push(checkBlobs(target, entry, manifest, subject, report, add));
  const signed = cname !== undefined || (isContainerEntry(entry) && o.signContainerImages === true);
  if (o.publicKey && signed) {
    checks.push(
      (async () => {
        const s = await checkSignature(target, entry.digest, o.publicKey as KeyObject);
        report.signatures++;
        (report.firstLayers ??= []).push({ subject, digest: entry.digest, layers: s.layers, signer: s.firstLayer, ...(s.firstLayerKey ? { key: s.firstLayerKey } : {}) });
        if (!s.cosign || !s.updater) {
          const who = !s.cosign && !s.updater ? 'cosign and gardenlinux-update refuse it' : !s.cosign ? 'cosign refuses it' : 'gardenlinux-update refuses it';
          // The key's signature is there, only not first (a key rotation): the remedy is an action away.
          const fix = s.keyLayer !== undefined && s.keyLayer > 0 && !s.updater ? `; layer ${s.keyLayer} holds this key's signature: sign-first ${o.version} puts it first` : '';
          add('error', 'signature', subject, `${s.tag}: ${who}: ${s.problem ?? 'no valid signature'}${fix}`);
        }
      })(),
    );
  }
  await Promise.all(checks);
}

async function checkTag(target: Target, tag: string, digest: string, subject: string, report: RepositoryReport, add: Add): Promise<void> {
  const held = await target.resolve(tag);
  report.tags++;
  if (held === undefined) add('error', 'tag', tag, `${target.display}:${tag} does not exist; the index names ${short(digest)} for ${subject}`);
  else if (held !== digest) add('error', 'tag', tag, `${target.display}:${tag} names ${short(held)}; the index names ${short(digest)} for ${subject}`);
}

async function checkBlobs(target: Target, entry: Descriptor, manifest: FetchedManifest, subject: string, report: RepositoryReport, add: Add): Promise<void> {
  const parsed = ImageManifestSchema.safeParse(JSON.parse(manifest.bytes.toString('utf8')));
  if (!parsed.success) {
    add('error', 'entry', subject, `${entry.digest} is not a readable image manifest`);
    return;
  }
  const blobs = [parsed.data.config, ...parsed.data.layers];
  const checks = blobs.map(async (b, i) => {
    const size = await target.blobSize(b.digest);
    report.blobs++;
    const what = i === 0 ? 'config' : (b.annotations?.['org.opencontainers.image.title'] ?? `layer ${i}`);
    if (size === undefined) add('error', 'blob', subject, `${what} (${b.digest}) is missing from ${target.display}`);
    else if (size !== b.size) add('error', 'blob', subject, `${what} (${short(b.digest)}) is ${size} bytes; the manifest says ${b.size}`);
  });
  if (isContainerEntry(entry)) checks.push(checkPlatform(target, entry, parsed.data.config, subject, add));
  await Promise.all(checks);
}

/** A container entry's platform is its image's: a pull by platform must get an image of that platform. */
async function checkPlatform(target: Target, entry: Descriptor, config: Descriptor, subject: string, add: Add): Promise<void> {
  const bytes = await target.fetchBlob(config.digest, MAX_CONFIG_BYTES);
  if (!bytes) return; // reported as a missing blob
  const parsed = ImageConfigSchema.safeParse(JSON.parse(bytes.toString('utf8')));
  if (!parsed.success) {
    add('error', 'container', subject, `the image config ${short(config.digest)} is not readable`);
    return;
  }
  const image = parsed.data;
  const p = entry.platform;
  const mismatch = (['architecture', 'os', 'variant'] as const).filter((k) => (image[k] ?? undefined) !== (p?.[k] ?? undefined));
  if (mismatch.length > 0) {
    add(
      'error',
      'container',
      subject,
      `the index entry says ${mismatch.map((k) => `${k} ${p?.[k] ?? '(none)'}`).join(', ')}; the image is ${mismatch.map((k) => `${k} ${image[k] ?? '(none)'}`).join(', ')}`,
    );
  }
}

function checkRecords(listed: Listed, index: ImageIndex, add: Add): void {
  const named = index.manifests.filter((m) => m.annotations?.cname !== undefined).length;
  if (listed.records.length === 0 && listed.retractions.length === 0 && named > 0) {
    // A copy (or another tool's publication) brings no records: said once, not once per entry.
    add('warning', 'record', index.manifests[0]?.annotations?.cname ?? '', `no publisher records for this version here (a copy, or another tool published it): its ${named} Garden Linux entries were checked in the registry only`);
    return;
  }
  const digests = new Set(index.manifests.map((m) => m.digest));
  const retracted = listed.retractions.map((r) => ({ base: r.base, digests: r.digests }));
  const effective = effectiveRecords(listed.records, { retracted });
  for (const r of effective) {
    if (r.gardenlinux && !digests.has(r.gardenlinux.digest)) {
      add('error', 'record', r.base, `recorded, but its artifact manifest ${short(r.gardenlinux.digest)} is not in the index; reindex the version`);
    }
  }
  for (const r of containerWinners(effective).values()) {
    const c = r.container as Descriptor;
    if (!digests.has(c.digest)) add('error', 'record', r.base, `the newest ${c.platform?.architecture ?? ''} container build, but its image ${short(c.digest)} is not in the index; reindex the version`);
  }
  const recorded = new Set(listed.records.map((r) => r.base));
  for (const r of listed.retractions) {
    const still = index.manifests.filter((m) => m.annotations?.cname === r.base || r.digests.includes(m.digest));
    if (still.length > 0) add('error', 'record', r.base, `retracted, but the index still names it (${still.map((m) => short(m.digest)).join(', ')}); reindex the version`);
    recorded.add(r.base);
  }
  for (const m of index.manifests) {
    const cname = m.annotations?.cname;
    if (cname !== undefined && !recorded.has(cname)) add('warning', 'record', cname, 'in the index without a record: another tool wrote it, or its record was removed');
  }
}

async function checkAliases(o: VerifyOptions, target: Target, report: RepositoryReport, add: Add): Promise<void> {
  const versions = await publishedVersions(o.state, target);
  if (!versions.includes(o.version)) return;
  const reader = new IndexReader(target);
  const plans = await planAliases(target, o.templates, o.version, versions, reader);
  // No alias may name a retracted build. Looked up in the versions the plan read (those above a goal among them)
  // and the version checked, each once.
  const retractions = new Map<string, Promise<Retraction[]>>();
  const retractedIn = (v: string): Promise<Retraction[]> => {
    let p = retractions.get(v);
    if (p === undefined) retractions.set(v, (p = o.state.listRetractions(target.id, v)));
    return p;
  };
  const retractedAmong = async (vs: Iterable<string>): Promise<Retraction[]> =>
    (await Promise.all([...new Set([...vs, ...reader.seen.keys()])].filter((v) => versions.includes(v)).map(retractedIn))).flat();
  const describe = (r: Retraction[]): string => r.map((x) => x.base).sort().join(', ');
  await Promise.all(
    plans.map(async (plan) => {
      report.aliases++;
      const expected = plan.source.manifest.digest;
      const empty = plan.source.index.manifests.length === 0 ? ', which holds no build' : '';
      const held = plan.current === undefined ? undefined : plan.current === expected ? plan.source : await readSource(target, plan.alias);
      const heldVersion = held ? versionOfIndex(held.index) : undefined;
      const retracted = held ? (await retractedAmong([o.version, plan.version, ...(heldVersion ? [heldVersion] : [])])).filter((r) => names(held.index, r)) : [];
      const naming = retracted.length > 0 ? `; it names the retracted ${retracted.length === 1 ? 'build' : 'builds'} ${describe(retracted)}` : '';
      if (plan.current !== expected) {
        const holds = plan.current === undefined ? 'does not exist' : `holds ${short(plan.current)}${heldVersion ? ` (the index of ${heldVersion}${reader.seen.has(heldVersion) && plan.current !== reader.seen.get(heldVersion) ? ' as it was before' : ''})` : ''}`;
        add('error', 'alias', plan.alias, `${target.display}:${plan.alias} ${holds}${naming}; by "${plan.template}" it must hold ${plan.version} (${short(expected)}${empty})`);
      } else if (retracted.length > 0) {
        add('error', 'alias', plan.alias, `${target.display}:${plan.alias} holds the index of ${plan.version}${naming}; reindex ${plan.version}`);
      }
      await Promise.all(
        plan.arches.map(async (a) => {
          report.aliases++;
          if (a.current === a.digest) return;
          const gone = a.current === undefined ? [] : (await retractedAmong([o.version, plan.version, ...(a.version ? [a.version] : [])])).filter((r) => r.digests.includes(a.current as string));
          const image = gone.length > 0 ? ` (the image of the retracted build ${describe(gone)})` : '';
          const must = a.version === undefined ? `an empty index (${short(a.digest)}): no version "${plan.template}" may hold has an image of ${a.arch}` : `the image of ${a.arch}-${a.version} (${short(a.digest)})`;
          add('error', 'alias', a.tag, `${target.display}:${a.tag} ${a.current === undefined ? 'does not exist' : `names ${short(a.current)}${image}`}; it must name ${must}`);
        }),
      );
    }),
  );
}

/** Whether an index names a retracted build: by its cname, or by a manifest its record named. */
function names(index: ImageIndex, r: Retraction): boolean {
  return index.manifests.some((m) => m.annotations?.cname === r.base || r.digests.includes(m.digest));
}
