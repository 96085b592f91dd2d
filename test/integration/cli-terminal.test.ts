/**
 * The CLI as a person at a terminal sees it, driven under a pseudo-terminal by script(1): a progress line per file
 * in flight that redraws in place, and a readable summary; piped, JSON only. No notice from the AWS SDK; expected
 * errors, and a Node.js older than 22, as one clear line without a stack trace.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startLocalS3, uploadBuild, type LocalS3 } from '../../tools/local-s3';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';
import { BUCKET } from '../helpers/expectations';
import { installCli, type InstalledCli } from '../helpers/installed-cli';
import { startRegistry, type TestRegistry } from '../helpers/registry';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const NOTICE = /NodeVersionSupportWarning|will require node/;

interface Run {
  code: number;
  /** what the terminal received, escape sequences included */
  raw: string;
  /** the same as lines of text: escape sequences removed, each redraw on its own line */
  text: string;
}

/** The environment of a person's shell: none of the test runner's settings (the SDK notice is not switched off). */
function shellEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, REGISTRY: '', ...extra };
  delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  delete env.NODE_TEST_CONTEXT;
  return env;
}

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

/** The CLI as installed from the package (installed-cli.ts), set up before the tests. */
let installed: InstalledCli | undefined;
function installedBin(): string {
  if (!installed) throw new Error('the CLI is not installed yet');
  return installed.bin;
}

/** Runs the CLI with both stdout and stderr on a pseudo-terminal. */
async function onTerminal(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const command = [process.execPath, installedBin(), ...args].map(quote).join(' ');
  const r: { stdout?: string; code?: number } = await exec('script', ['-qec', command, '/dev/null'], { env: shellEnv(env), timeout: 120_000, maxBuffer: 64 * MiB }).then(
    (x) => ({ stdout: x.stdout, code: 0 }),
    (e: { stdout?: string; code?: number }) => e,
  );
  const raw = r.stdout ?? '';
  // eslint-disable-next-line no-control-regex
  const text = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '\n').replace(/\r/g, '\n').split('\n').filter((l) => l.trim() !== '').join('\n');
  return { code: r.code ?? -1, raw, text };
}

/** Runs the CLI with stdout and stderr piped, as a script would. */
async function piped(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return exec(process.execPath, [installedBin(), ...args], { env: shellEnv(env), timeout: 120_000, maxBuffer: 64 * MiB }).then(
    (x) => ({ code: 0, stdout: x.stdout, stderr: x.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  );
}

describe('the CLI at a terminal', () => {
  let dir: string;
  let registry: TestRegistry;
  let locked: TestRegistry;
  let s3: LocalS3;
  const big = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', imageSize: 48 * MiB });
  const small = sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64' });
  const fromS3 = sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'amd64', commit: 'c0ffee05' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-cli-terminal-'));
    for (const b of [big, small]) await writeBuildDir(join(dir, 'bucket'), b);
    [registry, locked, s3, installed] = await Promise.all([
      startRegistry(),
      startRegistry({ auth: { kind: 'htpasswd', username: 'robot', password: 'the-right-one' } }),
      startLocalS3([BUCKET]),
      installCli(),
    ]);
    await uploadBuild(s3.client, BUCKET, fromS3);
  });
  after(async () => {
    await Promise.all([registry?.stop(), locked?.stop(), s3?.close()]);
    if (installed) await rm(installed.dir, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows a progress line per file that redraws in place, then a readable summary; no JSON, no SDK notice', async () => {
    const r = await onTerminal(['-r', `http://${registry.host}/terminal`, '-a', 'latest', 'publish', big.base, '--dir', join(dir, 'bucket')]);
    assert.equal(r.code, 0, r.text);
    // A bar for the disk image, with bytes, rate and time left; drawn again as bytes go (the cursor moves back).
    const bars = r.text.split('\n').filter((l) => /75df9f40\.raw +[█░]+ +\d+% \| [\d.]+ (B|KiB|MiB) of 48 MiB \| .+ \| +\d+s left/.test(l));
    assert.ok(bars.length >= 2, `progress lines for the .raw:\n${r.text}`);
    assert.match(r.raw, /\x1b\[\d*[AGK]/, 'redrawn in place with cursor movement');
    assert.match(r.text, /^uploaded aws-gardener_prod-amd64-1877\.3-75df9f40\.raw {2}48 MiB in [\d.]+ s, [\d.]+ (KiB|MiB|GiB)\/s$/m);
    // The summary: what went where, digests shortened, bytes moved, time.
    assert.match(r.text, /^published aws-gardener_prod-amd64-1877\.3-75df9f40 {2}[\d.]+ s$/m);
    assert.match(r.text, new RegExp(`^  manifest +${registry.host}/terminal:1877\\.3-aws-gardener_prod-amd64-1877\\.3-75df9f40-amd64 {2}sha256:[0-9a-f]{12}$`, 'm'));
    assert.match(r.text, new RegExp(`^  index +${registry.host}/terminal:1877\\.3 {2}sha256:[0-9a-f]{12} {2}written, 1 entry$`, 'm'));
    assert.match(r.text, /^ {2}aliases +latest\*→1877\.3/m);
    assert.match(r.text, /^ {2}moved +48 MiB uploaded in \d+ blobs, 0 already there; 48 MiB read$/m);
    assert.doesNotMatch(r.text, /^\{/m, 'no JSON log lines');
    assert.doesNotMatch(r.raw, NOTICE);
  });

  it('--quiet: only the summary', async () => {
    const r = await onTerminal(['-r', `http://${registry.host}/quiet`, '--quiet', 'publish', big.base, '--dir', join(dir, 'bucket')]);
    assert.equal(r.code, 0, r.text);
    assert.doesNotMatch(r.text, /%|uploaded aws/, 'no progress');
    assert.match(r.text, /^published aws-gardener_prod-amd64-1877\.3-75df9f40/m);
  });

  it('piped: JSON log lines on stderr and the JSON summary on stdout, nothing else', async () => {
    const r = await piped(['-r', `http://${registry.host}/piped`, 'publish', small.base, '--dir', join(dir, 'bucket')]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.ok(lines.length > 0);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not JSON: ${l}`);
    assert.equal((JSON.parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0]?.outcome, 'published');
    assert.doesNotMatch(r.stdout + r.stderr, /█|░/);
  });

  it('publishes from S3 at a terminal and piped, with no AWS SDK notice about the Node.js version', async () => {
    const env = { ...s3.env };
    const terminal = await onTerminal(['-r', `http://${registry.host}/sdk`, 'publish', fromS3.base, '--bucket', BUCKET], env);
    assert.equal(terminal.code, 0, terminal.text);
    assert.doesNotMatch(terminal.raw, NOTICE);
    const pipe = await piped(['-r', `http://${registry.host}/sdk`, 'publish', fromS3.base, '--bucket', BUCKET], env);
    assert.equal(pipe.code, 0, pipe.stderr);
    assert.doesNotMatch(pipe.stderr + pipe.stdout, NOTICE);
  });

  it('on a Node.js older than 22: one line and exit 2, before anything runs', async () => {
    // An older release, as the command sees it: process.version and process.versions.node say 20.18.1.
    const older = `data:text/javascript,${encodeURIComponent("Object.defineProperty(process, 'version', { value: 'v20.18.1' }); Object.defineProperty(process.versions, 'node', { value: '20.18.1' });")}`;
    const r = await exec(process.execPath, ['--import', older, installedBin(), '-r', `http://${registry.host}/old`, 'publish', small.base, '--dir', join(dir, 'bucket')], {
      env: shellEnv(),
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
    );
    assert.equal(r.code, 2);
    assert.equal(r.stderr, 'gl-oci-publish needs Node.js 22 or later (the Lambda runs nodejs22.x); this is v20.18.1\n');
    const tags = await fetch(`http://${registry.host}/v2/old/tags/list`);
    assert.equal(tags.status, 404, 'nothing was published');
  });

  it('expected errors are one clear line and an exit status, never a stack trace', async () => {
    const noStack = (out: string) => assert.doesNotMatch(out, /^\s+at .+[(:]\d+/m, `a stack trace:\n${out}`);

    const usage = await onTerminal(['-r', `http://${registry.host}/x`, 'publish', '--bucket']);
    assert.equal(usage.code, 2);
    assert.match(usage.text, /error: option '-b, --bucket <bucket>' argument missing/);
    noStack(usage.text);

    const noRegistry = await onTerminal(['publish', small.base, '--dir', join(dir, 'bucket')]);
    assert.equal(noRegistry.code, 2, 'a bad configuration is a usage error (issue 19)');
    assert.deepEqual(noRegistry.text.split('\n'), ['gl-oci-publish: invalid configuration: REGISTRY is required (the CLI: -r, --registry)']);

    const missing = await onTerminal(['-r', `http://${registry.host}/x`, 'publish', 'metal-amd64-1877.3-0badc0de', '--dir', join(dir, 'bucket')]);
    assert.equal(missing.code, 1);
    assert.match(missing.text, /^failed +metal-amd64-1877\.3-0badc0de/m);
    assert.match(missing.text, /^gl-oci-publish: 1 of 1 jobs failed: metal-amd64-1877\.3-0badc0de: .*meta\/singles\/metal-amd64-1877\.3-0badc0de does not exist$/m);
    noStack(missing.text);

    const refused = await onTerminal(['-r', `http://${locked.host}/x`, 'publish', small.base, '--dir', join(dir, 'bucket')], { REGISTRY_USERNAME: 'robot', REGISTRY_PASSWORD: 'a-wrong-one' });
    assert.equal(refused.code, 1);
    assert.match(refused.text, /rejected the configured credentials \(REGISTRY_USERNAME\/REGISTRY_PASSWORD\)/);
    assert.doesNotMatch(refused.raw, /a-wrong-one/, 'the password is never printed');
    noStack(refused.text);

    const none = await onTerminal(['-r', `http://${locked.host}/x`, 'publish', small.base, '--dir', join(dir, 'bucket')]);
    assert.equal(none.code, 1);
    assert.match(none.text, /requires credentials \(Basic\) and none are configured: set REGISTRY_USERNAME and REGISTRY_PASSWORD/);
    noStack(none.text);
  });
});
