/** Runs one job and reports it as a summary; a failure is part of the summary, never an exception. */
import { baseFromMetadataKey } from '../gardenlinux/naming';
import { tagAliases, type AliasResult } from '../orchestration/aliases';
import { convergeVersion, type IndexUpdate } from '../orchestration/converge';
import { copyRelease, copyWrote, type CopySummary } from '../orchestration/copy-release';
import { aliasesMoved, followAliases, type AliasUpdate } from '../orchestration/follow-aliases';
import { metadataBuildTime, publishBuild, type BuildResult } from '../orchestration/publish-build';
import { retractBuild, type RetractResult } from '../orchestration/retract';
import { signFirst } from '../orchestration/sign-first';
import type { FirstSignatureResult } from '../orchestration/sign-manifest';
import { verifyRelease, type VerifyReport } from '../orchestration/verify-release';
import { displayLocation } from '../registry/location';
import { StateStore } from '../storage/state-store';
import type { Target, TargetSet } from '../target/target';
import type { Clock } from '../util/clock';
import { Deadline } from '../util/deadline';
import { describeError, InputError, PublishError } from '../util/errors';
import type { Logger } from '../util/log';
import type { Job } from './events';
import { openCopyLocation, type Runtime } from './runtime';

export type Outcome = 'published' | 'unchanged' | 'skipped' | 'failed';

export interface JobSummary {
  job: Job['kind'];
  outcome: Outcome;
  base?: string;
  bucket?: string;
  key?: string;
  version?: string;
  reason?: string;
  error?: string;
  errorKind?: string;
  errorCode?: string;
  /** for a failed destination of several: whether running the job again may help */
  retryable?: boolean;
  manifest?: { repository: string; tag: string; digest: string };
  container?: BuildResult['container'];
  indexes?: IndexUpdate[];
  /** a publication's signatures; for sign-first, what it did to each signature image (FirstSignatureResult) */
  signatures?: BuildResult['signatures'] | FirstSignatureResult[];
  /** the manual tag action's tags */
  aliases?: AliasResult;
  /** the ALIAS_TAGS aliases after a publication, reindex or retraction */
  releaseAliases?: AliasUpdate[];
  retracted?: Pick<RetractResult, 'repositories'>;
  /** what the verify action found */
  verify?: VerifyReport;
  /** with several destinations (REGISTRY names more than one): the job's outcome in each */
  targets?: Array<Partial<JobSummary> & { target: string; outcome: Outcome | 'failed' }>;
  /** what the copy action copied (blobs and bytes in the counters below); `archiveWritten`: an oci-archive was written */
  copy?: CopySummary & { archiveWritten?: boolean };
  bytesUploaded: number;
  bytesRead: number;
  blobsUploaded: number;
  blobsSkipped: number;
  durationMs: number;
  messageId?: string;
  s3RequestId?: string;
}

/** Buckets come from events, so they are checked against the configured allow-list (spec §6, README). */
function allowed(rt: Runtime, bucket: string): string {
  const list = rt.config.allowedBuckets;
  if (list !== undefined && !list.includes(bucket)) {
    throw new InputError(`the bucket "${bucket}" is not one this publisher reads (ALLOWED_BUCKETS: ${list.join(', ')})`);
  }
  return bucket;
}

function stateFor(rt: Runtime, bucket: string | undefined): StateStore {
  const stateBucket = rt.config.stateBucket ?? bucket;
  if (stateBucket === undefined) throw new InputError('no bucket for the publisher state: set STATE_BUCKET or name a bucket in the payload');
  return new StateStore(rt.storeFor(stateBucket), rt.config.statePrefix);
}

/** The main repository and every configured container sub-repository, each once. */
function allTargets(targets: TargetSet, rt: Runtime): Target[] {
  const subs = [...new Set(Object.values(rt.config.containerRepositories))];
  return [targets.main, ...subs.map((s) => targets.repository(s))];
}

function subRepository(targets: TargetSet, rt: Runtime, name: string): Target {
  if (!Object.values(rt.config.containerRepositories).includes(name)) {
    throw new InputError(`"${name}" is not one of the configured container repositories (CONTAINER_REPOSITORIES)`);
  }
  return targets.repository(name);
}

/**
 * The targets for the version index, tags and aliases: their requests run on into the stop margin (a writer must
 * list again after its write, see converge.ts) and stop only at the deadline's final point.
 */
function indexTargets(rt: Runtime, deadline: Deadline): TargetSet {
  return rt.targets.forJob({ signal: deadline.finalSignal, timeLeft: () => deadline.finalLeft() });
}

/** Where reindex and retract find the build time of another tool's entries: the build bucket the payload names. */
function buildTimesFrom(rt: Runtime, bucket: string | undefined): { buildTimeOf?: (cname: string) => Promise<string | undefined> } {
  return bucket === undefined ? {} : { buildTimeOf: metadataBuildTime(rt.storeFor(bucket)) };
}

/** The runtime's clock and random source, when a simulation set them. */
function timing(rt: Runtime): { clock?: Clock; random?: () => number } {
  return { ...(rt.clock ? { clock: rt.clock } : {}), ...(rt.random ? { random: rt.random } : {}) };
}

/** A job is not started with less time than this left. */
const MIN_JOB_MS = 5_000;

/** Every destination of the configuration (REGISTRY may name several), the first one first. */
export function destinationsOf(rt: Runtime): TargetSet[] {
  return [rt.targets, ...(rt.moreTargets ?? [])];
}

/** The error of a job some of whose destinations failed: which, and why. */
function failedDestinations(failed: ReadonlyArray<{ target: string; error?: string }>, of: number): string {
  return `${failed.length} of ${of} destinations failed: ${failed.map((t) => `${t.target}: ${t.error ?? 'failed'}`).join('; ')}`;
}

/**
 * Runs one job in every destination. A publication reads each file once for all of them (publish-build.ts); the
 * other jobs run in each destination on its own, at once, and their summaries are joined: the job failed when one
 * destination failed, and `targets` says what happened in each.
 */
export async function runJob(rt: Runtime, job: Job, logger: Logger, deadline: Deadline = Deadline.none()): Promise<JobSummary> {
  const sets = destinationsOf(rt);
  // A copy names its own source and destination; a publication reads once for all destinations.
  if (sets.length === 1 || job.kind === 'publish' || job.kind === 'copy' || job.kind === 'invalid' || job.kind === 'ignore') return runIn(rt, job, logger, deadline);
  const started = Date.now();
  const parts = await Promise.all(sets.map((set) => runIn({ ...rt, targets: set, moreTargets: [] }, job, logger.child({ target: set.main.display }), deadline)));
  return joinSummaries(
    parts.map((p, i) => ({ ...p, target: (sets[i] as TargetSet).main.display })),
    Date.now() - started,
  );
}

function joinSummaries(parts: ReadonlyArray<JobSummary & { target: string }>, durationMs: number): JobSummary {
  const first = parts[0] as JobSummary;
  const failed = parts.filter((p) => p.outcome === 'failed');
  const outcome: Outcome = failed.length > 0 ? 'failed' : parts.some((p) => p.outcome === 'published') ? 'published' : parts.every((p) => p.outcome === 'skipped') ? 'skipped' : 'unchanged';
  const sum = (k: 'bytesUploaded' | 'bytesRead' | 'blobsUploaded' | 'blobsSkipped'): number => parts.reduce((n, p) => n + p[k], 0);
  const joined = <T>(pick: (p: JobSummary) => T[] | undefined): T[] | undefined => (parts.some((p) => pick(p) !== undefined) ? parts.flatMap((p) => pick(p) ?? []) : undefined);
  const indexes = joined((p) => p.indexes);
  const releaseAliases = joined((p) => p.releaseAliases);
  const retracted = joined((p) => p.retracted?.repositories);
  const reports = parts.flatMap((p) => (p.verify ? [p.verify] : []));
  const { durationMs: _d, targets: _t, error: _e, errorKind: _k, errorCode: _c, indexes: _i, releaseAliases: _r, retracted: _x, verify: _v, ...common } = first;
  const firstFailure = failed[0];
  return {
    ...common,
    outcome,
    ...(firstFailure
      ? {
          error: failedDestinations(failed, parts.length),
          ...(firstFailure.errorKind ? { errorKind: firstFailure.errorKind } : {}),
          ...(firstFailure.errorCode ? { errorCode: firstFailure.errorCode } : {}),
        }
      : {}),
    ...(indexes ? { indexes } : {}),
    ...(releaseAliases ? { releaseAliases } : {}),
    ...(retracted ? { retracted: { repositories: retracted } } : {}),
    ...(reports.length > 0
      ? {
          verify: {
            ...(reports[0] as VerifyReport),
            ok: reports.every((r) => r.ok),
            repositories: reports.flatMap((r) => r.repositories),
            problems: reports.flatMap((r) => r.problems),
            durationMs: Math.max(...reports.map((r) => r.durationMs)),
          },
        }
      : {}),
    bytesUploaded: sum('bytesUploaded'),
    bytesRead: sum('bytesRead'),
    blobsUploaded: sum('blobsUploaded'),
    blobsSkipped: sum('blobsSkipped'),
    durationMs,
    targets: parts.map(({ job: _j, durationMs: _dd, messageId: _m, s3RequestId: _s, ...p }) => p),
  };
}

async function runIn(rt: Runtime, job: Job, logger: Logger, deadline: Deadline): Promise<JobSummary> {
  const started = Date.now();
  const counters = { bytesUploaded: 0, bytesRead: 0, blobsUploaded: 0, blobsSkipped: 0 };
  const ids = { ...('messageId' in job && job.messageId ? { messageId: job.messageId } : {}) };
  const done = (s: Omit<JobSummary, 'durationMs' | 'job' | 'bytesUploaded' | 'bytesRead' | 'blobsUploaded' | 'blobsSkipped'> & Partial<JobSummary>): JobSummary => ({
    job: job.kind,
    ...counters,
    ...ids,
    ...s,
    durationMs: Date.now() - started,
  });
  const where: Partial<JobSummary> = {};
  try {
    switch (job.kind) {
      case 'invalid':
        throw new InputError(job.error);
      case 'ignore':
        return done({ outcome: 'skipped', reason: job.reason });
      case 'publish': {
        const base = baseFromMetadataKey(job.key);
        Object.assign(where, {
          ...(base ? { base } : {}),
          bucket: job.bucket,
          key: job.key,
          ...(job.s3RequestId ? { s3RequestId: job.s3RequestId } : {}),
        });
        const source = rt.storeFor(allowed(rt, job.bucket));
        deadline.ensure(`publishing ${job.key}`, MIN_JOB_MS);
        const r = await publishBuild(
          {
            source,
            sourceName: job.bucket,
            state: stateFor(rt, job.bucket),
            destinations: destinationsOf(rt).map((set) => ({
              targets: set.forJob({ signal: deadline.signal, timeLeft: () => deadline.left() }),
              indexTargets: set.forJob({ signal: deadline.finalSignal, timeLeft: () => deadline.finalLeft() }),
            })),
            containerRepositories: rt.config.containerRepositories,
            logger,
            blobConcurrency: rt.config.blobConcurrency,
            md5Check: rt.config.md5Check,
            deadline,
            counters,
            rangeReaders: rt.config.s3Readers,
            rangePartBytes: rt.config.s3PartBytes,
            ...(rt.signer ? { signer: rt.signer, signContainerImages: rt.config.signContainerImages } : {}),
            aliasTemplates: rt.config.aliasTemplates,
            imageSource: rt.config.imageSource,
            ...(rt.progress ? { progress: rt.progress } : {}),
            stallMs: rt.config.registryTimeoutMs,
            ...timing(rt),
          },
          job.key,
          { byHand: job.origin === 'manual' },
        );
        const { outcome, targets, ...rest } = r;
        if (targets === undefined) return done({ ...where, outcome, ...rest });
        const failed = targets.filter((t) => t.outcome === 'failed');
        const first = failed[0];
        return done({
          ...where,
          ...rest,
          outcome: first ? 'failed' : outcome,
          ...(first ? { error: failedDestinations(failed, targets.length), ...(first.errorKind ? { errorKind: first.errorKind } : {}), ...(first.errorCode ? { errorCode: first.errorCode } : {}) } : {}),
          targets,
        });
      }
      case 'reindex': {
        Object.assign(where, { version: job.version, ...(job.bucket ? { bucket: job.bucket } : {}) });
        const state = stateFor(rt, job.bucket === undefined ? undefined : allowed(rt, job.bucket));
        const indexes: IndexUpdate[] = [];
        const releaseAliases: AliasUpdate[] = [];
        const targets = indexTargets(rt, deadline);
        for (const target of allTargets(targets, rt)) {
          const listed = await state.listVersion(target.id, job.version);
          if (listed.length === 0 && target !== targets.main) continue;
          // By hand after an incident: every entry is checked to exist, so a deleted manifest leaves the index.
          indexes.push((await convergeVersion({ state, target, version: job.version, logger, deadline, checkEntries: true, ...buildTimesFrom(rt, job.bucket), ...timing(rt) })).update);
          releaseAliases.push(...(await followAliases({ state, target, version: job.version, templates: rt.config.aliasTemplates, logger, deadline, ...timing(rt) })));
        }
        const moved = aliasesMoved(releaseAliases);
        return done({ ...where, outcome: indexes.some((i) => i.changed) || moved ? 'published' : 'unchanged', indexes, ...(releaseAliases.length > 0 ? { releaseAliases } : {}) });
      }
      case 'tag': {
        Object.assign(where, { version: job.version });
        deadline.ensure(`tagging ${job.version}`, MIN_JOB_MS);
        const targets = indexTargets(rt, deadline);
        const target = job.repository ? subRepository(targets, rt, job.repository) : targets.main;
        const aliases = await tagAliases(target, job.version, job.tags, logger);
        return done({ ...where, outcome: aliases.tags.some((t) => t.changed) ? 'published' : 'unchanged', aliases });
      }
      case 'verify': {
        Object.assign(where, { version: job.version, ...(job.bucket ? { bucket: job.bucket } : {}) });
        const state = stateFor(rt, job.bucket === undefined ? undefined : allowed(rt, job.bucket));
        const report = await verifyRelease({
          state,
          targets: allTargets(indexTargets(rt, deadline), rt),
          version: job.version,
          templates: rt.config.aliasTemplates,
          ...(rt.verifyKey ? { publicKey: rt.verifyKey } : {}),
          signContainerImages: rt.config.signContainerImages,
        });
        // Nothing changed; what is wrong is in the report (the job itself did its work).
        return done({ ...where, outcome: 'unchanged', verify: report });
      }
      case 'sign-first': {
        Object.assign(where, { version: job.version });
        // Checked before any request: without the key there is nothing to put first, and nothing is touched.
        if (!rt.signer) {
          throw new InputError(
            `sign-first needs the signing key whose signature goes first: set SIGNING_KEY (the deployment's signingKeyArn, the CLI's --signing-key); nothing was read or written`,
          );
        }
        deadline.ensure(`putting the signatures of ${job.version} first`, MIN_JOB_MS);
        const placed: FirstSignatureResult[] = [];
        where.signatures = placed;
        await signFirst({
          targets: allTargets(rt.targets.forJob({ signal: deadline.signal, timeLeft: () => deadline.left() }), rt),
          version: job.version,
          signer: rt.signer,
          signContainerImages: rt.config.signContainerImages,
          logger,
          counters,
          results: placed,
        });
        return done({ ...where, outcome: placed.some((r) => r.written) ? 'published' : 'unchanged' });
      }
      case 'copy': {
        Object.assign(where, { version: job.version });
        const fromLocation = job.from ?? rt.config.target;
        if (displayLocation(fromLocation) === displayLocation(job.to)) {
          throw new InputError(`the copy would read and write ${displayLocation(job.to)}: give another destination; nothing was copied`);
        }
        if (job.aliases && rt.config.aliasTemplates.length === 0) {
          throw new InputError('copying the aliases needs their templates: set ALIAS_TAGS (the CLI: -a) as the source has them; nothing was copied');
        }
        deadline.ensure(`copying ${job.version}`, MIN_JOB_MS);
        const limits = { signal: deadline.signal, timeLeft: () => deadline.left() };
        const from = await openCopyLocation(fromLocation, 'source', rt.config, logger);
        const to = await openCopyLocation(job.to, 'destination', rt.config, logger);
        let copy: CopySummary;
        try {
          copy = await copyRelease({
            version: job.version,
            from: from.targets.forJob(limits),
            to: to.targets.forJob(limits),
            repositories: Object.values(rt.config.containerRepositories),
            aliases: job.aliases ? rt.config.aliasTemplates : [],
            logger,
            blobConcurrency: rt.config.blobConcurrency,
            counters,
            signal: deadline.signal,
            ...(rt.progress ? { progress: rt.progress } : {}),
          });
        } catch (err) {
          if (to.finish) logger.info('the copy stopped; what it staged is kept, and the next copy to the same archive goes on from it', { to: to.display });
          throw err;
        }
        const archiveWritten = to.finish ? await to.finish() : false;
        return done({
          ...where,
          outcome: copyWrote(copy, counters) || archiveWritten ? 'published' : 'unchanged',
          copy: { ...copy, ...(to.finish ? { archiveWritten } : {}) },
        });
      }
      case 'retract': {
        Object.assign(where, { base: job.base, ...(job.bucket ? { bucket: job.bucket } : {}) });
        const state = stateFor(rt, job.bucket === undefined ? undefined : allowed(rt, job.bucket));
        const r = await retractBuild(state, allTargets(indexTargets(rt, deadline), rt), job.base, logger, deadline, {
          ...buildTimesFrom(rt, job.bucket),
          aliasTemplates: rt.config.aliasTemplates,
          ...timing(rt),
        });
        return done({
          ...where,
          version: r.version,
          outcome: r.indexes.some((i) => i.changed) || aliasesMoved(r.releaseAliases ?? []) ? 'published' : 'unchanged',
          indexes: r.indexes,
          ...(r.releaseAliases ? { releaseAliases: r.releaseAliases } : {}),
          retracted: { repositories: r.repositories },
        });
      }
    }
  } catch (caught) {
    // Once the time is up, whatever broke next (an aborted stream, a cancelled request) broke because of it.
    const err = deadline.signal.aborted && !(caught instanceof PublishError) ? deadline.signal.reason : caught;
    const code = (err as { code?: unknown }).code;
    return done({
      ...where,
      outcome: 'failed',
      error: describeError(err),
      errorKind: err instanceof PublishError ? err.kind : 'internal',
      ...(typeof code === 'string' ? { errorCode: code } : {}),
    });
  }
}
