/**
 * CloudWatch metrics in the embedded metric format: one line per job on stdout, which CloudWatch Logs turns into
 * metrics without any API call from the function. Namespace `GardenLinuxOciPublisher`, dimension `Service`.
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

export function metricsRecord(summary: JobSummary, now: number = Date.now()): Record<string, unknown> {
  const values: Record<(typeof METRICS)[number][0], number> = {
    Published: summary.outcome === 'published' ? 1 : 0,
    Unchanged: summary.outcome === 'unchanged' ? 1 : 0,
    Skipped: summary.outcome === 'skipped' ? 1 : 0,
    Failed: summary.outcome === 'failed' ? 1 : 0,
    BytesUploaded: summary.bytesUploaded,
    BlobsUploaded: summary.blobsUploaded,
    Duration: summary.durationMs,
  };
  return {
    _aws: {
      Timestamp: now,
      CloudWatchMetrics: [{ Namespace: METRICS_NAMESPACE, Dimensions: [['Service']], Metrics: METRICS.map(([Name, Unit]) => ({ Name, Unit })) }],
    },
    Service: SERVICE,
    ...values,
    // Searchable in Logs Insights, not dimensions (which would multiply the metrics).
    job: summary.job,
    ...(summary.base ? { base: summary.base } : {}),
  };
}
