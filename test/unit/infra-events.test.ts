/** Every console test event under infra/events/ is accepted by the handler's schemas and means what its name says. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { normaliseEvent } from '../../functions/publish/events';

const dir = 'infra/events';
const expected: Record<string, string> = {
  's3-put.json': 'publish',
  'publish.json': 'publish',
  'publish-by-base.json': 'publish',
  'reindex.json': 'reindex',
  'tag.json': 'tag',
  'retract.json': 'retract',
  'verify.json': 'verify',
  'sign-first.json': 'sign-first',
  'copy.json': 'copy',
};

describe('console test events (infra/events)', () => {
  it('has an event for every manual payload and for an S3 put', () => {
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.json')).sort(), Object.keys(expected).sort());
  });
  for (const [file, kind] of Object.entries(expected)) {
    it(`${file} becomes one ${kind} job`, () => {
      const { jobs } = normaliseEvent(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8')));
      assert.equal(jobs.length, 1);
      assert.equal(jobs[0]?.kind, kind);
      if (jobs[0]?.kind === 'publish') assert.match(jobs[0].key, /^meta\/singles\/[a-z_]+-(amd64|arm64)-1877\.3-75df9f40$/);
    });
  }
});
