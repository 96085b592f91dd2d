import { JobsFailedError, type HandlerResult } from '../../functions/publish/handler';
import type { JobSummary } from '../../functions/publish/run-job';

/** The job summaries of a handler call, whether the jobs succeeded or the handler threw because one failed. */
export async function jobsOf(call: Promise<unknown>): Promise<JobSummary[]> {
  try {
    return ((await call) as HandlerResult).jobs;
  } catch (err) {
    if (err instanceof JobsFailedError) return err.summaries;
    throw err;
  }
}

export async function firstJob(call: Promise<unknown>): Promise<JobSummary> {
  const [job] = await jobsOf(call);
  if (!job) throw new Error('the handler reported no job');
  return job;
}
