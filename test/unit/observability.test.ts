/** What operators read: the metrics line per job (embedded metric format) and the progress lines of long uploads. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TransferStats } from '../../functions/orchestration/context';
import { metricsRecord, metricsRecords } from '../../functions/publish/metrics';
import type { JobSummary } from '../../functions/publish/run-job';
import { memoryLogger } from '../../functions/util/log';

const summary = (over: Partial<JobSummary>): JobSummary => ({
  job: 'publish',
  outcome: 'published',
  bytesUploaded: 0,
  bytesRead: 0,
  blobsUploaded: 0,
  blobsSkipped: 0,
  durationMs: 0,
  ...over,
});

describe('metrics per destination', () => {
  it('a job to one destination: its line only', () => {
    const lines = metricsRecords(summary({ bytesUploaded: 9, blobsUploaded: 2 }), 1);
    assert.deepEqual(lines, [metricsRecord(summary({ bytesUploaded: 9, blobsUploaded: 2 }), 1)]);
  });

  it('a job to several: each destination counts its own outcome and bytes', () => {
    const job = summary({
      outcome: 'failed',
      bytesUploaded: 30,
      targets: [
        { target: 'ghcr.io/gl', outcome: 'published', bytesUploaded: 30, blobsUploaded: 3 },
        { target: 'quay.io/gl', outcome: 'failed', bytesUploaded: 0, blobsUploaded: 0 },
      ],
    });
    const [all, a, b] = metricsRecords(job, 1) as Array<Record<string, unknown>>;
    assert.deepEqual((a?._aws as { CloudWatchMetrics: Array<{ Dimensions: string[][] }> }).CloudWatchMetrics[0]?.Dimensions, [['Service', 'Target']]);
    assert.deepEqual([all?.Failed, all?.Target], [1, undefined], 'the job line has no Target');
    assert.deepEqual([a?.Target, a?.Published, a?.Failed, a?.BytesUploaded], ['ghcr.io/gl', 1, 0, 30]);
    assert.deepEqual([b?.Target, b?.Published, b?.Failed, b?.BytesUploaded], ['quay.io/gl', 0, 1, 0]);
  });
});

describe('metrics in the embedded metric format', () => {
  it('declares its metrics for CloudWatch and gives their values', () => {
    const line = metricsRecord(summary({ base: 'container-amd64-1877.3-75df9f40', bytesUploaded: 123_456, blobsUploaded: 7, durationMs: 4_200 }), 1_764_237_000_000);
    assert.deepEqual(line, {
      _aws: {
        Timestamp: 1_764_237_000_000,
        CloudWatchMetrics: [
          {
            Namespace: 'GardenLinuxOciPublisher',
            Dimensions: [['Service']],
            Metrics: [
              { Name: 'Published', Unit: 'Count' },
              { Name: 'Unchanged', Unit: 'Count' },
              { Name: 'Skipped', Unit: 'Count' },
              { Name: 'Failed', Unit: 'Count' },
              { Name: 'BytesUploaded', Unit: 'Bytes' },
              { Name: 'BlobsUploaded', Unit: 'Count' },
              { Name: 'Duration', Unit: 'Milliseconds' },
            ],
          },
        ],
      },
      Service: 'gardenlinux-oci-publisher',
      Published: 1,
      Unchanged: 0,
      Skipped: 0,
      Failed: 0,
      BytesUploaded: 123_456,
      BlobsUploaded: 7,
      Duration: 4_200,
      job: 'publish',
      base: 'container-amd64-1877.3-75df9f40',
    });
  });

  it('counts one of published, unchanged, skipped, failed per job', () => {
    for (const outcome of ['published', 'unchanged', 'skipped', 'failed'] as const) {
      const r = metricsRecord(summary({ outcome }));
      const counts = { published: r.Published, unchanged: r.Unchanged, skipped: r.Skipped, failed: r.Failed };
      assert.deepEqual(Object.entries(counts).filter(([, v]) => v === 1).map(([k]) => k), [outcome]);
    }
  });
});

describe('progress lines of long uploads', () => {
  it('reports done, total and throughput, at most once per interval', () => {
    let now = 0;
    const { logger, lines } = memoryLogger('info');
    const stats = new TransferStats(logger, 100 * 1048576, 5_000, () => now);
    const MiB = 1048576;
    for (const [t, bytes] of [[500, 10], [2_000, 10], [4_900, 10], [5_100, 20], [7_000, 10], [9_000, 10], [10_200, 10]] as const) {
      now = t;
      stats.uploaded(bytes * MiB);
    }
    const progress = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'upload progress');
    assert.equal(progress.length, 2, 'at 5.1 s and 10.2 s only');
    assert.deepEqual(
      progress.map((p) => ({ done: p.bytesDone, total: p.bytesTotal, rate: p.mibPerSecond, elapsed: p.elapsedMs })),
      [
        { done: 50 * MiB, total: 100 * MiB, rate: 9.8, elapsed: 5_100 },
        { done: 80 * MiB, total: 100 * MiB, rate: 5.9, elapsed: 10_200 },
      ],
    );
  });
});
