/**
 * CloudWatch metrics in the embedded metric format: one line per job on stdout, which CloudWatch Logs turns into
 * metrics without any API call from the function. Namespace `GardenLinuxOciPublisher`, dimension `Service`; with
 * several destinations also one line per destination with the dimensions `Service` and `Target` (the destination's
 * repository), so a registry that fails while the others publish shows on its own.
 */
import type { JobSummary } from './run-job';

export const METRICS_NAMESPACE = 'GardenLinuxOciPublisher';
export const SERVICE = 'gardenlinux-oci-publisher';

const METRICS = [
  ['Published', 'Count'],
  ['Unchanged', 'Count'],
  ['Skipped', 'Count'],
  ['Failed', 'Count'],
  ['BytesUploaded', 'Bytes'],
  ['BlobsUploaded', 'Count'],
  ['Duration', 'Milliseconds'],
] as const;

type Values = Record<(typeof METRICS)[number][0], number>;

function values(s: Pick<JobSummary, 'outcome' | 'bytesUploaded' | 'blobsUploaded'>, durationMs: number): Values {
  return {
    Published: s.outcome === 'published' ? 1 : 0,
    Unchanged: s.outcome === 'unchanged' ? 1 : 0,
    Skipped: s.outcome === 'skipped' ? 1 : 0,
    Failed: s.outcome === 'failed' ? 1 : 0,
    BytesUploaded: s.bytesUploaded,
    BlobsUploaded: s.blobsUploaded,
    Duration: durationMs,
  };
}

function record(dimensions: string[], now: number, fields: Record<string, unknown>, v: Values, summary: JobSummary): Record<string, unknown> {
  return {
    _aws: {
      Timestamp: now,
      CloudWatchMetrics: [{ Namespace: METRICS_NAMESPACE, Dimensions: [dimensions], Metrics: METRICS.map(([Name, Unit]) => ({ Name, Unit })) }],
    },
    Service: SERVICE,
    ...fields,
    ...v,
    // Searchable in Logs Insights, not dimensions (which would multiply the metrics).
    job: summary.job,
    ...(summary.base ? { base: summary.base } : {}),
  };
}

/** The job's line, by `Service`. */
export function metricsRecord(summary: JobSummary, now: number = Date.now()): Record<string, unknown> {
  return record(['Service'], now, {}, values(summary, summary.durationMs), summary);
}

/**
 * The job's line, and with several destinations one per destination by `Service` and `Target`: each destination's
 * outcome and uploads. A job to one destination writes its line only (its Target would repeat it).
 */
export function metricsRecords(summary: JobSummary, now: number = Date.now()): Array<Record<string, unknown>> {
  const parts = summary.targets ?? [];
  return [
    metricsRecord(summary, now),
    ...parts.map((t) =>
      record(['Service', 'Target'], now, { Target: t.target }, values({ outcome: t.outcome, bytesUploaded: t.bytesUploaded ?? 0, blobsUploaded: t.blobsUploaded ?? 0 }, summary.durationMs), summary),
    ),
  ];
}
