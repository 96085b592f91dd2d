/** pythonJson against the real python3: `json.dumps(json.loads(b)) == b` for what it writes, and the same bytes as Python's. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { pythonJson } from '../../functions/oci/python-json';

/** Python's json.dumps of each value (given as compact JSON), one per line. */
function pythonDumps(values: unknown[]): string[] {
  const program = 'import json,sys\nfor line in sys.stdin:\n    print(json.dumps(json.loads(line)))\n';
  const input = values.map((v) => JSON.stringify(v)).join('\n') + '\n';
  return execFileSync('python3', ['-c', program], { input, encoding: 'utf8' }).trimEnd().split('\n');
}

const CASES: unknown[] = [
  {},
  [],
  { a: [] , b: {} },
  { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [{ size: 0, digest: 'sha256:00' }] },
  { text: 'quote " backslash \\ slash / newline \n tab \t cr \r bs \b ff \f nul \u0000 us \u001f del \u007f' },
  { text: 'Grüße, naïve café — “quotes” € ☃ 日本' },
  { text: 'astral 😀 𝄞 and a lone surrogate \ud800 end' },
  { 'key with ü': true, other: false, none: null, n: 9007199254740991, neg: -42 },
  { order: 'kept', b: 1, a: 2, z: [3, 2, 1] },
];

describe("pythonJson: Python's json.dumps form", () => {
  it('writes what python3 writes, byte for byte', () => {
    const python = pythonDumps(CASES);
    for (const [i, value] of CASES.entries()) assert.equal(pythonJson(value), python[i], JSON.stringify(value));
  });

  it('survives a json.dumps(json.loads(b)) round trip in python3 unchanged', () => {
    const written = CASES.map(pythonJson);
    const program = 'import json,sys\nfor line in sys.stdin:\n    b = line.rstrip("\\n")\n    print("same" if json.dumps(json.loads(b)) == b else "differs: " + b)\n';
    const out = execFileSync('python3', ['-c', program], { input: written.join('\n') + '\n', encoding: 'utf8' }).trimEnd().split('\n');
    assert.deepEqual(out, CASES.map(() => 'same'));
  });

  it('writes a fraction as Python does, and refuses what JSON cannot hold', () => {
    assert.equal(pythonJson({ ratio: 1.5, small: 0.25 }), pythonDumps([{ ratio: 1.5, small: 0.25 }])[0]);
    assert.throws(() => pythonJson({ n: Number.NaN }), /\$\.n: NaN has no JSON form/);
    assert.throws(() => pythonJson({ f: () => 1 }), /a function has no JSON form/);
  });
});
