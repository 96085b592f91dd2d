/**
 * The whole publisher under simulation (issue 21): for one seed, a random workload of Garden Linux builds (several
 * versions, flavors and arches, container builds in a sub-repository, rebuilds of one flavor-arch), published by S3
 * events that may arrive twice, with retractions, reindexes and manual tags, against the simulated bucket and
 * registry of sim-world.ts, with faults on their requests and jobs killed at any moment. Every job runs the real
 * code (runJob: publication, signing with a file key, convergence, aliases, retraction, reindex) and is retried as
 * Lambda (two retries) and then the failure queue's re-drive would retry it, until it succeeds; then the state is
 * checked against invariants. The seed replays everything; a violation comes with the history of requests.
 */
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { metadataKey, parseBaseName } from '../../functions/gardenlinux/naming';
import { containerTags, renderVersionIndex, sameIndex } from '../../functions/gardenlinux/version-index';
import { IndexSchema, parseJson } from '../../functions/oci/descriptor';
import { loadConfig } from '../../functions/publish/config';
import type { Job } from '../../functions/publish/events';
import { runJob, type JobSummary } from '../../functions/publish/run-job';
import type { Runtime } from '../../functions/publish/runtime';
import { checkSignature } from '../../functions/signing/verify-signature';
import { fileSigner, type Signer } from '../../functions/signing/signer';
import { StateStore } from '../../functions/storage/state-store';
import type { Target } from '../../functions/target/target';
import { Deadline } from '../../functions/util/deadline';
import { Logger } from '../../functions/util/log';
import { sampleBuild, type SampleBuild } from '../../tools/sample-builds';
import { formatHistory, SimWorld, type Connection } from './sim-world';

export const BUCKET = 'gardenlinux-github-releases';
const REPO = 'gardenlinux';
const SUB = 'container';
const TEMPLATES = 'latest,{major}';
const STATE_PREFIX = 'oci-publisher/';
/** what Lambda does with a failed asynchronous invocation: two retries, a minute or two apart */
const LAMBDA_RETRIES = [60_000, 120_000];
/** then the failure queue, re-driven by an operator some time later, as often as it takes */
const REDRIVE_MS = 600_000;
/** Lambda's timeout: an attempt still running then is killed */
const TIMEOUT_MS = 900_000;
/** attempts that faults and kills may strike (Lambda's three, two re-drives) */
const FAULTY_ATTEMPTS = 5;
/** attempts after which a job that keeps failing is a violation of its own: the faults have passed by then */
const MAX_ATTEMPTS = FAULTY_ATTEMPTS + 2;

const silent = new Logger({ sink: () => undefined });

export interface SimOptions {
  /** probability that a request of a faulty connection fails in each way */
  faults?: { error: number; throttle: number; lost: number; slow: number };
  /** probability that an attempt is killed at a random moment */
  kill?: number;
  /** the S3 events of the builds arrive within this many milliseconds (4 s; less makes a denser burst) */
  arrivalWindowMs?: number;
}

export interface Violation {
  seed: number;
  invariant: string;
  detail: string;
}

export interface SeedResult {
  seed: number;
  violations: Violation[];
  jobs: number;
  attempts: number;
  requests: number;
  /** simulated time until everything settled */
  simulatedMs: number;
  /** the history of requests, formatted, when there was a violation */
  history?: string;
}

/** One signing key per process: writing and parsing it is not what is simulated. */
let key: { signer: Signer; publicKey: KeyObject } | undefined;
async function signingKey(): Promise<{ signer: Signer; publicKey: KeyObject }> {
  if (key) return key;
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dir = mkdtempSync(join(tmpdir(), 'gl-sim-'));
  const path = join(dir, 'sign.pem');
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  key = { signer: await fileSigner(path), publicKey };
  return key;
}

/** Builds are made once per process and reused by every seed that picks them: generating them is not simulated. */
const made = new Map<string, SampleBuild>();
function build(flavor: string, arch: 'amd64' | 'arm64', version: string, rebuild: number): SampleBuild {
  const id = `${flavor}/${arch}/${version}/${rebuild}`;
  let b = made.get(id);
  if (!b) {
    // Named by what it is, not by when it was first made: a seed replays the same in any process.
    const commit = createHash('sha256').update(id).digest('hex').slice(0, 8);
    b = sampleBuild({ flavor, arch, version, commit, lean: true, imageSize: 4096, buildTime: new Date(Date.UTC(2026, 2, 1, 10, rebuild, 0)).toISOString() });
    made.set(id, b);
  }
  return b;
}

interface Planned {
  /** when the event arrives: milliseconds after the start, or after the job it follows succeeded */
  at: number;
  job: Job;
  /** a job that must have succeeded first (an operator acts on what they saw done) */
  after?: Planned;
  /** what the job means for the expectations once it succeeded */
  effect?: { publish?: string; retract?: string; byHand?: boolean };
}

/** The workload of one seed: which builds, which events and operator actions, when. */
function workload(random: () => number, arrivalWindowMs = 4_000): { builds: SampleBuild[]; plan: Planned[] } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const versions = random() < 0.5 ? ['1877.9', '1877.10'] : ['1877.10'];
  const flavors = ['kvm', 'container', 'aws'];
  const builds: SampleBuild[] = [];
  const count = 3 + Math.floor(random() * 5);
  for (let i = 0; i < count; i++) {
    const b = build(pick(flavors), pick(['amd64', 'arm64'] as const), pick(versions), random() < 0.3 ? 1 : 0);
    if (!builds.includes(b)) builds.push(b);
  }
  const plan: Planned[] = [];
  const publish = (b: SampleBuild, at: number, origin: Job['origin'] = 's3', after?: Planned): Planned => {
    const p: Planned = { at, job: { kind: 'publish', bucket: BUCKET, key: metadataKey(b.base), origin }, effect: { publish: b.base, byHand: origin === 'manual' }, ...(after ? { after } : {}) };
    plan.push(p);
    return p;
  };
  const first = new Map<SampleBuild, Planned>();
  for (const b of builds) {
    const at = Math.floor(random() * arrivalWindowMs);
    first.set(b, publish(b, at));
    // S3 delivers at least once: sometimes twice, later.
    if (random() < 0.3) publish(b, at + Math.floor(random() * 400_000));
  }
  // Operators: a retraction of a published build (sometimes restored by hand), a reindex, a manual tag.
  if (random() < 0.5) {
    const b = pick(builds);
    const retract: Planned = { at: Math.floor(random() * 200_000), job: { kind: 'retract', bucket: BUCKET, base: b.base, origin: 'manual' }, effect: { retract: b.base }, after: first.get(b) as Planned };
    plan.push(retract);
    if (random() < 0.3) publish(b, Math.floor(random() * 100_000), 'manual', retract);
  }
  if (random() < 0.3) plan.push({ at: Math.floor(random() * 300_000), job: { kind: 'reindex', bucket: BUCKET, version: pick(versions), origin: 'manual' } });
  if (random() < 0.2) {
    // A manual tag of a version some build of which was published.
    const b = pick(builds);
    plan.push({ at: Math.floor(random() * 300_000), job: { kind: 'tag', version: b.version, tags: ['stable'], origin: 'manual' }, after: first.get(b) as Planned });
  }
  return { builds, plan };
}

export async function runSeed(seed: number, options: SimOptions = {}): Promise<SeedResult> {
  const world = new SimWorld(seed);
  const faults = options.faults ?? { error: 0.004, throttle: 0.002, lost: 0.004, slow: 0.005 };
  world.faults.set(faults);
  const killRate = options.kill ?? 0.15;
  const { signer, publicKey } = await signingKey();
  const config = loadConfig({
    REGISTRY: `sim.invalid/${REPO}`,
    CONTAINER_REPOSITORIES: JSON.stringify({ container: SUB }),
    ALIAS_TAGS: TEMPLATES,
    STATE_PREFIX,
    STATE_BUCKET: BUCKET,
    BLOB_CONCURRENCY: '2',
    MD5_CHECK: 'stream',
  });
  const random = world.random;
  const { builds, plan } = workload(random, options.arrivalWindowMs);
  // At every moment: an index stored under a version names only artifact manifests that are signed already.
  const moments: Violation[] = [];
  // At every moment, until a retraction may have emptied a version: an alias never moves to a lower version.
  let retracting = false;
  const aliasHeld = new Map<string, number[]>();
  const imageVersion = new Map(builds.flatMap((b) => (b.image ? [[b.image.manifestDigest, b.version] as const] : [])));
  const versionKey = (v: string): number[] => v.split('.').map(Number);
  const lower = (a: number[], b: number[]): boolean => (a[0] as number) < (b[0] as number) || (a[0] === b[0] && (a[1] as number) < (b[1] as number));
  world.registry.onTag = (repo, tag, bytes, mediaType) => {
    if (/^(latest|\d+)$/.test(tag) && mediaType.includes('index') && !retracting) {
      const entries = parseJson(IndexSchema, bytes, `${repo}:${tag}`).manifests;
      const held = entries.map((m) => (m.annotations?.cname ? parseBaseName(m.annotations.cname).version : imageVersion.get(m.digest))).find((v) => v !== undefined);
      if (held !== undefined) {
        const key = `${repo}:${tag}`;
        const before = aliasHeld.get(key);
        if (before && lower(versionKey(held), before)) moments.push({ seed, invariant: 'an alias never moves down, at any moment', detail: `${key} moved from ${before.join('.')} to ${held} at ${world.clock.now()} ms` });
        else aliasHeld.set(key, versionKey(held));
      }
    }
    if (!/^\d+\.\d+$/.test(tag) || !mediaType.includes('index')) return;
    for (const m of parseJson(IndexSchema, bytes, `${repo}:${tag}`).manifests) {
      const cname = m.annotations?.cname;
      if (cname === undefined) continue;
      const sig = `${m.digest.replace(':', '-')}.sig`;
      if (!world.registry.tagsOf(repo).has(sig)) moments.push({ seed, invariant: 'no index names an unsigned artifact manifest, at any moment', detail: `${repo}:${tag} named ${cname} at ${world.clock.now()} ms before its signature existed` });
    }
  };
  for (const b of builds) {
    for (const f of b.files) world.bucket.putObject(`objects/${b.base}/${f.name}`, f.data);
    world.bucket.putObject(metadataKey(b.base), Buffer.from(b.metadata));
  }
  const runtime = (conn: Connection): Runtime => ({
    config,
    targets: world.registry.targets(REPO, conn),
    storeFor: () => world.bucket.connect(conn),
    signer,
    verifyKey: publicKey,
    clock: world.clock,
    random,
  });

  let attempts = 0;
  const stuck: Violation[] = [];
  /** the successful jobs, in the order they succeeded (what the expectations follow) */
  const succeeded: Array<{ planned: Planned; summary: JobSummary }> = [];
  const done = new Map<Planned, Promise<void>>();
  const runPlanned = (p: Planned, index: number): Promise<void> => {
    let promise = done.get(p);
    if (promise) return promise;
    promise = (async () => {
      if (p.after) await runPlanned(p.after, plan.indexOf(p.after));
      await world.clock.sleep(p.at);
      if (p.job.kind === 'retract') retracting = true;
      const retries = [...LAMBDA_RETRIES];
      const errors: string[] = [];
      for (let attempt = 1; ; attempt++) {
        attempts++;
        // Faults and kills come and go: after Lambda's retries and two re-drives, they have passed, and the job must
        // then complete.
        const stormy = attempt <= FAULTY_ATTEMPTS;
        const conn = world.connect(`job${index}.${attempt}`, { faulty: stormy });
        if (stormy && random() < killRate) conn.killAt(world.clock.now() + Math.floor(random() * 30_000));
        conn.killAt(world.clock.now() + TIMEOUT_MS);
        const summary = await runJob(runtime(conn), p.job, silent, Deadline.none());
        conn.close();
        if (summary.outcome !== 'failed') {
          succeeded.push({ planned: p, summary });
          return;
        }
        errors.push(`${attempt}: ${summary.error}`);
        if (attempt >= MAX_ATTEMPTS) {
          stuck.push({ seed, invariant: 'every job completes once the faults pass', detail: `job${index} (${p.job.kind}) failed ${attempt} times: ${errors.join(' | ')}` });
          return;
        }
        await world.clock.sleep(retries.shift() ?? REDRIVE_MS);
      }
    })();
    done.set(p, promise);
    return promise;
  };
  await world.clock.run(Promise.all(plan.map((p, i) => runPlanned(p, i))));

  // Settled: check the state with requests that neither fail nor take time.
  const violations = [...stuck, ...moments.slice(0, 3), ...(await check(world, config.containerRepositories, succeeded, publicKey, builds, seed))];
  return {
    seed,
    violations,
    jobs: plan.length,
    attempts,
    requests: world.history.length,
    simulatedMs: world.clock.now(),
    ...(violations.length > 0 ? { history: formatHistory(world.history, Number(process.env.SIM_HISTORY ?? 400)) } : {}),
  };
}

async function check(
  world: SimWorld,
  repositories: Readonly<Record<string, string>>,
  succeeded: ReadonlyArray<{ planned: Planned; summary: JobSummary }>,
  publicKey: KeyObject,
  builds: readonly SampleBuild[],
  seed: number,
): Promise<Violation[]> {
  const out: Violation[] = [];
  const fail = (invariant: string, detail: string): void => void out.push({ seed, invariant, detail });
  const conn = world.connect('check', { faulty: false, instant: true });
  const targets = world.registry.targets(REPO, conn);
  const state = new StateStore(world.bucket.connect(conn), STATE_PREFIX);
  const repos: Target[] = [targets.main, ...[...new Set(Object.values(repositories))].map((s) => targets.repository(s))];

  // What the operators asked for: a published build is wanted; a retraction takes it out, and only a publication by
  // hand that succeeded after the retraction brings it back (a late or repeated S3 event does not).
  const wanted = new Map<string, boolean>();
  const retractedOnPurpose = new Set<string>();
  for (const { planned, summary } of succeeded) {
    const e = planned.effect;
    if (e?.retract) {
      wanted.set(e.retract, false);
      retractedOnPurpose.add(e.retract);
    }
    if (e?.publish && summary.outcome !== 'skipped' && (e.byHand || !retractedOnPurpose.has(e.publish))) wanted.set(e.publish, true);
  }
  const byBase = new Map(builds.map((b) => [b.base, b]));

  for (const target of repos) {
    const versions = [...new Set(builds.map((b) => b.version))];
    for (const version of versions) {
      const listing = await state.listVersion(target.id, version);
      const entries = (await Promise.all(listing.map((i) => state.readEntry(i)))).filter((e) => e !== undefined);
      const records = entries.flatMap((e) => (e.kind === 'record' ? [e.record] : []));
      const retracted = entries.flatMap((e) => (e.kind === 'retraction' ? [e.retraction] : []));
      const fetched = await target.getManifest(version);
      if (!fetched) {
        if (records.length > 0) fail('records and index agree', `${target.display}:${version} does not exist, ${records.length} records`);
        continue;
      }
      const index = parseJson(IndexSchema, fetched.bytes, `${target.display}:${version}`);
      // 1. The index is what its records render to (order, exactly once, nothing retracted): rendering it again
      // changes nothing.
      const again = renderVersionIndex(records, index, { retracted });
      if (again && !sameIndex(again, fetched)) fail('records and index agree', `${target.display}:${version}: rendering the records again gives another index`);
      const cnames = index.manifests.flatMap((m) => (m.annotations?.cname ? [m.annotations.cname] : []));
      // Each platform's <arch>-<version> tag names the image of the newest build of that platform.
      for (const t of containerTags(records, version, { retracted })) {
        const at = world.registry.tagsOf(target.id.replace(/^sim\//, '')).get(t.tag);
        if (at !== t.entry.digest) fail('container tags name the newest build', `${target.display}:${t.tag} names ${at ?? 'nothing'}, the newest build ${t.base} has ${t.entry.digest}`);
      }
      for (const c of new Set(cnames)) if (cnames.filter((x) => x === c).length > 1) fail('exactly once', `${target.display}:${version} names ${c} twice`);
      // 2. The operators' last word: a build published (and not retracted since) is in; a retracted one is not.
      const isMain = target === targets.main;
      for (const [base, want] of wanted) {
        const b = byBase.get(base);
        if (!b || b.version !== version) continue;
        const inSub = !isMain && b.flavor === 'container';
        if (!isMain && !inSub) continue;
        const named = isMain ? cnames.includes(base) : records.some((r) => r.base === base) && index.manifests.some((m) => m.digest === records.find((r) => r.base === base)?.container?.digest);
        if (want && isMain && !named) fail('published builds are in their index', `${target.display}:${version} lacks ${base}`);
        if (!want && named) fail('retracted builds are not named', `${target.display}:${version} still names ${base}`);
      }
      // 3. Everything an index names exists, and every Garden Linux entry of a recorded build is signed in layer 0.
      for (const m of index.manifests) {
        if (!(await target.getManifest(m.digest))) fail('nothing names a missing manifest', `${target.display}:${version} names ${m.digest}, missing`);
        const cname = m.annotations?.cname;
        if (cname && records.some((r) => r.base === cname)) {
          const sig = await checkSignature(target, m.digest, publicKey);
          if (sig.firstLayer !== 'this-key') fail('signed in layer 0', `${target.display}:${version} entry ${cname}: layer 0 is ${sig.firstLayer}`);
        }
      }
    }
    // 4. No tag names a missing manifest; no alias names a retracted build.
    const gone = new Set([...wanted].filter(([, w]) => !w).map(([b]) => b));
    for (const [tag, digest] of world.registry.tagsOf(target.id.replace(/^sim\//, ''))) {
      const m = world.registry.manifest(target.id.replace(/^sim\//, ''), digest);
      if (!m) {
        fail('nothing names a missing manifest', `${target.display}:${tag} names ${digest}, missing`);
        continue;
      }
      if (/^(latest|\d+)$/.test(tag)) {
        const named = parseJson(IndexSchema, m.bytes, tag).manifests;
        for (const g of gone) {
          const image = byBase.get(g)?.image?.manifestDigest;
          if (named.some((x) => x.annotations?.cname === g || (image !== undefined && x.digest === image))) fail('no alias names a retracted build', `${target.display}:${tag} names ${g}`);
        }
      }
      if (/^(amd64|arm64)-(latest|\d+)$/.test(tag)) {
        for (const g of gone) if (byBase.get(g)?.image?.manifestDigest === digest) fail('no alias names a retracted build', `${target.display}:${tag} is the image of ${g}`);
      }
    }
  }
  // 5. verify reports no problem on a settled release.
  for (const version of new Set(builds.map((b) => b.version))) {
    const report = await runJob(
      { config: loadConfig({ REGISTRY: `sim.invalid/${REPO}`, CONTAINER_REPOSITORIES: JSON.stringify(repositories), ALIAS_TAGS: TEMPLATES, STATE_PREFIX, STATE_BUCKET: BUCKET }), targets, storeFor: () => world.bucket.connect(conn), verifyKey: publicKey },
      { kind: 'verify', bucket: BUCKET, version, origin: 'manual' },
      silent,
    );
    const errors = report.verify?.problems.filter((p) => p.severity === 'error') ?? [];
    if (report.outcome === 'failed') fail('verify runs', `verify ${version}: ${report.error}`);
    for (const e of errors) fail('verify finds nothing on a settled run', `${version}: ${e.repository} ${e.subject}: ${e.message}`);
  }
  return out;
}
