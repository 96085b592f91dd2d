/**
 * docs/format.md stays in step with the code: every test it names exists, and its media-type table gives, for
 * every suffix it lists, the media type the code gives.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { mediaTypeForFile, UNKNOWN_MEDIA_TYPE } from '../../functions/gardenlinux/media-types';

const doc = readFileSync('docs/format.md', 'utf8');

/** `a.{b,c}.{d,e}` → a.b.d, a.b.e, a.c.d, a.c.e */
function expand(pattern: string): string[] {
  const m = /\{([^}]+)\}/.exec(pattern);
  if (!m) return [pattern];
  return (m[1] as string).split(',').flatMap((alt) => expand(pattern.slice(0, m.index) + alt + pattern.slice(m.index + m[0].length)));
}

describe('docs/format.md', () => {
  it('names only tests that exist', () => {
    const named = [...new Set([...doc.matchAll(/`(test\/[^`]+)`/g)].map((m) => m[1] as string))];
    assert.ok(named.length >= 15, `${named.length} tests named`);
    assert.deepEqual(named.filter((p) => !existsSync(p)), []);
  });

  it('gives the media type the code gives for every suffix in its table', () => {
    const section = doc.slice(doc.indexOf('| suffix | media type |'), doc.indexOf('Anything else is published'));
    const rows = section.split('\n').filter((l) => l.startsWith('| `'));
    assert.ok(rows.length >= 15, `${rows.length} rows`);
    let checked = 0;
    for (const row of rows) {
      const [suffixes, type] = row.split('|').slice(1, 3).map((c) => c.trim()) as [string, string];
      const mediaType = /`([^`]+)`/.exec(type)?.[1] as string;
      for (const pattern of [...suffixes.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string)) {
        for (const suffix of expand(pattern)) {
          const expected = mediaType.replace('<suffix>', suffix);
          assert.equal(mediaTypeForFile(`gl-amd64-1877.3-75df9f40.${suffix}`), expected, `${suffix} (row: ${row})`);
          checked++;
        }
      }
    }
    assert.ok(checked >= 40, `${checked} suffixes checked`);
    assert.equal(mediaTypeForFile('gl-amd64-1877.3-75df9f40.unheard-of'), undefined, `anything else is ${UNKNOWN_MEDIA_TYPE}`);
  });
});
