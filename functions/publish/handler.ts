/**
 * The Lambda entry: turns any accepted event into jobs, runs them one after another, logs one JSON summary line
 * per job, and reports. When a job failed, the handler throws after all jobs ran, so Lambda retries the event
 * and the on-failure destination receives it; an SQS batch instead answers with the failed message ids.
 */
import type { Context } from 'aws-lambda';
import { Deadline } from '../util/deadline';
import { describeError } from '../util/errors';
import { Logger } from '../util/log';
import { loadConfig, type Config } from './config';
import { normaliseEvent } from './events';
import { metricsRecords } from './metrics';
import type { TransferObserver } from '../orchestration/context';
import type { VerifyReport } from '../orchestration/verify-release';
import { runJob, type JobSummary } from './run-job';
import { createRuntime, openSigning, type Runtime } from './runtime';

export interface HandlerResult {
  jobs: JobSummary[];
}

export interface SqsBatchResult {
  batchItemFailures: Array<{ itemIdentifier: string }>;
}

export interface HandlerOptions {
  env?: Record<string, string | undefined>;
  /** where log lines go (default stdout) */
  logSink?: (line: string) => void;
  /** replaces the runtime built from the configuration (tests) */
  runtime?: (config: Config, logger: Logger) => Runtime;
  /** told about every upload as it goes (the CLI's progress display) */
  progress?: TransferObserver;
}

export class JobsFailedError extends Error {
  constructor(readonly summaries: JobSummary[]) {
    const failed = summaries.filter((s) => s.outcome === 'failed');
    super(
      `${failed.length} of ${summaries.length} jobs failed: ` +
        failed.map((s) => `${s.base ?? s.key ?? s.version ?? s.job}: ${s.error ?? 'unknown error'}`).join('; '),
    );
    this.name = 'JobsFailedError';
  }
}

/** One line per verify job: an error when the release has problems, with the first of them (all are in the result). */
function logVerify(log: Logger, r: VerifyReport): void {
  const errors = r.problems.filter((p) => p.severity === 'error').length;
  const fields = {
    version: r.version,
    ok: r.ok,
    errors,
    warnings: r.problems.length - errors,
    repositories: r.repositories.map((x) => ({ repository: x.repository, index: x.index, entries: x.entries, errors: x.errors })),
    problems: r.problems.slice(0, 20),
    durationMs: r.durationMs,
  };
  if (r.ok) log.info(`release ${r.version} verified`, fields);
  else log.error(`release ${r.version} has problems`, fields);
}

export function createHandler(options: HandlerOptions = {}) {
  // Kept across invocations of a warm Lambda: connections, tokens and S3 clients are reused.
  let runtime: Runtime | undefined;
  let config: Config | undefined;
  let logger: Logger | undefined;
  let signing = false;

  return async function handler(event: unknown, context?: Partial<Context>): Promise<HandlerResult | SqsBatchResult> {
    if (config === undefined || logger === undefined) {
      const bootLogger = new Logger({ ...(options.logSink ? { sink: options.logSink } : {}) });
      try {
        config = loadConfig(options.env ?? process.env);
      } catch (err) {
        bootLogger.error('configuration rejected', { error: describeError(err) });
        throw err;
      }
      logger = new Logger({ level: config.logLevel, ...(options.logSink ? { sink: options.logSink } : {}) });
      runtime = (options.runtime ?? createRuntime)(config, logger);
      if (options.progress) runtime = { ...runtime, progress: options.progress };
    }
    // Tried again by the next invocation when it failed (KMS unreachable, say): the configuration stays.
    if (!signing) {
      try {
        runtime = await openSigning(runtime as Runtime, logger);
      } catch (err) {
        logger.error('signing key rejected', { error: describeError(err) });
        throw err;
      }
      signing = true;
    }
    const rt = runtime as Runtime;
    const log = logger.child(context?.awsRequestId ? { requestId: context.awsRequestId } : {});

    let normalised;
    try {
      normalised = normaliseEvent(event);
    } catch (err) {
      const shape = event !== null && typeof event === 'object' ? Object.keys(event).slice(0, 10) : typeof event;
      log.error('event rejected', { error: describeError(err), eventKeys: shape });
      throw err;
    }

    // One deadline for all jobs of the invocation: Lambda stops the whole of it.
    const remaining = typeof context?.getRemainingTimeInMillis === 'function' ? context.getRemainingTimeInMillis.bind(context) : undefined;
    const deadline = new Deadline(remaining, rt.config.stopMarginMs);
    const summaries: JobSummary[] = [];
    try {
      for (const job of normalised.jobs) {
        const jobLog = log.child('key' in job ? { bucket: job.bucket, key: job.key } : { job: job.kind });
        const summary = await runJob(rt, job, jobLog, deadline);
        summaries.push(summary);
        const fields = { ...summary };
        if (summary.outcome === 'failed') jobLog.error('job failed', fields);
        else if (summary.verify) logVerify(jobLog, summary.verify);
        else jobLog.info(summary.outcome === 'skipped' ? 'job skipped' : 'job finished', fields);
        // A check is not a publication: it counts in no publication metric.
        if (!summary.verify) for (const line of metricsRecords(summary)) jobLog.raw(line);
      }
    } finally {
      deadline.dispose();
    }

    if (normalised.sqs) {
      const failed = new Set(summaries.filter((s) => s.outcome === 'failed' && s.messageId).map((s) => s.messageId as string));
      return { batchItemFailures: [...failed].map((itemIdentifier) => ({ itemIdentifier })) };
    }
    if (summaries.some((s) => s.outcome === 'failed')) throw new JobsFailedError(summaries);
    return { jobs: summaries };
  };
}
