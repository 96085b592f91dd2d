/**
 * The tests run on what the Lambda runs: the Node.js major of serverless.yml's runtime, for this process and for
 * the `node` that tools started by name (tsx, the CLI's #!/usr/bin/env node) find on PATH.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { bundleOptions } from '../../tools/build';

const runtime = (YAML.parse(readFileSync('serverless.yml', 'utf8')) as { provider: { runtime: string } }).provider.runtime;
const major = (version: string) => Number(/^v?(\d+)\./.exec(version)?.[1]);

describe('Node.js', () => {
  it(`is the Lambda's release (${runtime}) in this process and on PATH`, () => {
    const lambda = Number(/^nodejs(\d+)\.x$/.exec(runtime)?.[1]);
    const onPath = execFileSync('node', ['--version'], { encoding: 'utf8' }).trim();
    console.log(`node --version: ${onPath}; this process: ${process.version} (${process.execPath}); Lambda: ${runtime}`);
    assert.equal(major(process.version), lambda);
    assert.equal(major(onPath), lambda);
  });

  it('the bundles target that release, and package.json says so', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
    assert.equal(pkg.engines.node, `>=${major(process.version)}`);
    assert.equal(bundleOptions.target, `node${major(process.version)}`);
  });
});
