/**
 * `npm run build` produces a self-contained Lambda bundle: copied alone into an empty directory (no
 * node_modules), it loads and publishes a build through `handler(event, context)`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';

const exec = promisify(execFile);

describe('the Lambda bundle', () => {
  let dir: string;
  const build = sampleBuild({ flavor: 'container', arch: 'arm64' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-bundle-'));
    await exec(process.execPath, ['--import', 'tsx', 'tools/build.ts'], { timeout: 120_000 });
    await copyFile('dist/publish/index.mjs', join(dir, 'index.mjs'));
    await writeBuildDir(join(dir, 'bucket'), build);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is zipped with index.mjs at the top, as Lambda expects for the handler index.handler', async () => {
    const zip = await readFile('dist/publish.zip');
    assert.equal(zip.readUInt32LE(0), 0x04034b50, 'a zip file');
    assert.ok(zip.includes(Buffer.from('index.mjs')));
  });

  const invoke = async (event: unknown): Promise<{ ok: boolean; out: string }> => {
    const script = `
      const { handler } = await import(${JSON.stringify(join(dir, 'index.mjs'))});
      try { console.log(JSON.stringify(await handler(${JSON.stringify(event)}, { awsRequestId: 'bundle-test' }))); }
      catch (err) { console.log(JSON.stringify({ error: err.message })); }`;
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script], {
      cwd: dir,
      env: { PATH: process.env.PATH, REGISTRY: `oci-layout:${join(dir, 'layout')}`, SOURCE_DIR: resolve(dir, 'bucket'), LOG_LEVEL: 'error' },
      timeout: 60_000,
    });
    const last = stdout.trim().split('\n').pop() ?? '';
    return { ok: !last.includes('"error"'), out: last };
  };

  it('runs without node_modules and publishes a build', async () => {
    const r = await invoke({ action: 'publish', bucket: 'local-directory', base: build.base });
    assert.ok(r.ok, r.out);
    const result = JSON.parse(r.out) as { jobs: Array<{ outcome: string; container?: { digest: string } }> };
    assert.equal(result.jobs[0]?.outcome, 'published');
    assert.equal(result.jobs[0]?.container?.digest, build.image?.manifestDigest);
  });

  it('rejects an unknown event and names the accepted shapes', async () => {
    const r = await invoke({ hello: 'world' });
    assert.ok(!r.ok);
    assert.match(r.out, /unrecognised event; accepted are S3 notifications/);
  });
});
