/** The summary a person reads after a job (the CLI in a terminal). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSummary } from '../../functions/publish/cli-display';
import type { JobSummary } from '../../functions/publish/run-job';

describe('formatSummary', () => {
  it('a job to several destinations: one line per destination, with its outcome, bytes and error', () => {
    const j: JobSummary = {
      job: 'publish',
      base: 'kvm-amd64-1877.3-c0ffee01',
      outcome: 'failed',
      error: '1 of 2 destinations failed: quay.io/gl: HTTP 403 DENIED',
      bytesUploaded: 3 * 1024 * 1024,
      bytesRead: 3 * 1024 * 1024,
      blobsUploaded: 9,
      blobsSkipped: 0,
      durationMs: 1500,
      targets: [
        { target: 'ghcr.io/gl', outcome: 'published', bytesUploaded: 3 * 1024 * 1024 },
        { target: 'quay.io/gl', outcome: 'failed', bytesUploaded: 0, error: 'HTTP 403 DENIED' },
      ],
    };
    const lines = formatSummary(j).split('\n');
    assert.equal(lines[0], 'failed    kvm-amd64-1877.3-c0ffee01  1.5 s');
    assert.ok(lines.includes('  target     ghcr.io/gl  published, 3.0 MiB uploaded'), lines.join('\n'));
    assert.ok(lines.includes('  target     quay.io/gl  failed, 0 B uploaded: HTTP 403 DENIED'), lines.join('\n'));
  });
});
