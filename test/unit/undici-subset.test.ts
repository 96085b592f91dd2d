/**
 * The bundles take functions/registry/undici-subset.mjs for `undici` (tools/build.ts). Everything the code takes
 * from undici must be there, and be undici's own: the tests run the code on the whole of undici, the bundles on
 * the subset.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as undici from 'undici';
import * as subset from '../../functions/registry/undici-subset.mjs';

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Names the code takes from undici as values: `import { A, type B } from 'undici'` and `import('undici').then(({ A }) =>`. */
function valuesTaken(): Set<string> {
  const names = new Set<string>();
  for (const file of sources('functions')) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'undici'/g)) {
      for (const part of (m[1] ?? '').split(',')) {
        const name = part.trim();
        if (name && !name.startsWith('type ')) names.add(name.split(/\s+as\s+/)[0] as string);
      }
    }
    assert.doesNotMatch(text, /import\s+(\*|\w+)\s+(as\s+\w+\s+)?from\s*'undici'/, `${file}: a namespace or default import of undici`);
    for (const m of text.matchAll(/import\('undici'\)\.then\(\(\{([^}]*)\}\)/g)) for (const part of (m[1] ?? '').split(',')) if (part.trim()) names.add(part.trim());
  }
  return names;
}

describe('the undici subset of the bundles', () => {
  it('offers every value the code takes from undici, as undici itself does', () => {
    const taken = valuesTaken();
    assert.ok(taken.has('Agent'), `the registry client's Agent is found among ${[...taken].join(', ')}`);
    for (const name of taken) {
      assert.ok(name in subset, `${name} is not in undici-subset.mjs`);
      assert.equal((subset as Record<string, unknown>)[name], (undici as unknown as Record<string, unknown>)[name], `${name} is undici's own`);
    }
  });

  it("gives every dispatcher undici's request API", async () => {
    const agent = new subset.Agent();
    try {
      assert.equal(typeof agent.request, 'function');
      assert.equal(agent.request, (new undici.Agent() as unknown as { request: unknown }).request);
    } finally {
      await agent.close();
    }
  });
});
