#!/usr/bin/env node
// Runs every test/**/*.test.ts, each file in its own process (Node's test runner, TypeScript through tsx), as many
// at once as the machine has cores (TEST_CONCURRENCY overrides). The longest files start first, by the durations
// in test/durations.json, so a run ends about when its longest file does. A file that runs past its budget
// (TEST_FILE_BUDGET_SECONDS, 120) is stopped with everything it started and fails with its name and its time;
// nothing else is cancelled. Each file's output is printed whole when it ends, and the run ends with the slowest
// files and the totals.
//
// The whole suite also runs the typecheck (`tsc --noEmit`) alongside the files.
//
//   npm test -- unit concurrency     only the files whose path contains one of the words (no typecheck)
//   npm test -- --record             also write the durations of this run to test/durations.json
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const DURATIONS = join(root, 'test', 'durations.json');

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? find(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [join(dir, e.name)] : [],
  );
}

/** Whether `dir` is a folder this process can write to. */
function usable(dir) {
  try {
    accessSync(dir, constants.W_OK);
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

function wholeNumber(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`${name} must be a whole number of at least 1`);
    process.exit(2);
  }
  return n;
}

const args = process.argv.slice(2);
const record = args.includes('--record');
const filters = args.filter((a) => !a.startsWith('--'));
const concurrency = wholeNumber('TEST_CONCURRENCY', availableParallelism());
const budgetMs = wholeNumber('TEST_FILE_BUDGET_SECONDS', 120) * 1000;

const allFiles = find(join(root, 'test')).map((f) => relative(root, f));
const files = allFiles.filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
const typecheck = filters.length === 0;
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}

let known = {};
try {
  known = JSON.parse(readFileSync(DURATIONS, 'utf8'));
} catch {
  // No durations yet: the files start in name order.
}
// Longest first; a file without a recorded duration counts as long, so a new slow file cannot end the run late.
const expected = (f) => known[f] ?? 60;
const queue = [...files].sort((a, b) => expected(b) - expected(a) || (a < b ? -1 : 1));

// The files' temporary folders (registries, S3, layouts) go to memory where there is a tmpfs: the tests write and
// read gigabytes in all, and a disk's journal costs CPU time a 2-core machine does not have to spare. Everything
// is removed at the end, also what a file stopped over its budget left.
// The name is short: podman refuses a run root (under TMPDIR in the tests) longer than 50 characters.
const scratch = mkdtempSync(join(process.env.TEST_TMPDIR ?? (usable('/dev/shm') ? '/dev/shm' : tmpdir()), 'glt-'));
// A larger young generation: the tests stream hundreds of MiB through short-lived buffers, and collect less often
// with it (about 3% less CPU time for the suite). Every node process a file starts inherits it.
const env = {
  ...process.env,
  TMPDIR: scratch,
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-semi-space-size=32`.trim(),
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};
const started = Date.now();
const results = [];

/** Runs one command in its own process group; resolves with its exit status, output and time. */
function runProcess(argv, { budget } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(argv[0], argv.slice(1), { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const output = [];
    child.stdout.on('data', (c) => output.push(c));
    child.stderr.on('data', (c) => output.push(c));
    let overran = false;
    const timer =
      budget === undefined
        ? undefined
        : setTimeout(() => {
            overran = true;
            // The whole group: registries, proxies and clients the file started go with it.
            try {
              process.kill(-child.pid, 'SIGKILL');
            } catch {
              // already gone
            }
          }, budget);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, overran, ms: Date.now() - t0, output: Buffer.concat(output).toString('utf8') });
    });
  });
}

function counts(tapFile) {
  const out = { tests: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
  let text = '';
  try {
    text = readFileSync(tapFile, 'utf8');
  } catch {
    return out;
  }
  // The totals are the last lines of the TAP stream.
  for (const key of Object.keys(out)) {
    const m = [...text.matchAll(new RegExp(`^# ${key} (\\d+)$`, 'gm'))].at(-1);
    if (m) out[key] = Number(m[1]);
  }
  return out;
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function runFile(file, index) {
  const tap = join(scratch, `${index}.tap`);
  const r = await runProcess(
    [
      process.execPath,
      '--import',
      'tsx',
      '--test',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      file,
    ],
    { budget: budgetMs },
  );
  const c = counts(tap);
  const ok = r.code === 0 && !r.overran;
  process.stdout.write(r.output);
  const what = r.overran
    ? `stopped after ${seconds(r.ms)}: over its budget of ${seconds(budgetMs)} (TEST_FILE_BUDGET_SECONDS)`
    : `${c.pass}/${c.tests} passed${c.fail ? `, ${c.fail} failed` : ''}${c.cancelled ? `, ${c.cancelled} cancelled` : ''}${r.code !== 0 && c.fail === 0 ? `, exit ${r.code ?? r.signal}` : ''}, ${seconds(r.ms)}`;
  process.stdout.write(`${ok ? '✔' : '✖'} ${file}: ${what}\n\n`);
  results.push({ file, ok, ms: r.ms, overran: r.overran, ...c });
}

async function runTypecheck() {
  const r = await runProcess([process.execPath, join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', root]);
  const ok = r.code === 0;
  process.stdout.write(`${r.output}${ok ? '✔' : '✖'} typecheck (tsc --noEmit): ${ok ? 'no errors' : `exit ${r.code}`}, ${seconds(r.ms)}\n\n`);
  results.push({ file: 'typecheck (tsc --noEmit)', ok, ms: r.ms, overran: false, tests: 0, pass: 0, fail: ok ? 0 : 1, cancelled: 0, skipped: 0, todo: 0 });
}

process.stdout.write(
  `${files.length} test files, ${concurrency} at a time (cores: ${availableParallelism()}), at most ${seconds(budgetMs)} each${typecheck ? ', and the typecheck' : ''}; ` +
    `temporary files in ${scratch}\n\n`,
);
let next = 0;
// The typecheck takes one place from the start: it is as long as a long file.
const jobs = typecheck ? [runTypecheck] : [];
async function worker() {
  for (;;) {
    const job = jobs.shift();
    if (job) {
      await job();
      continue;
    }
    if (next >= queue.length) return;
    const i = next++;
    await runFile(queue[i], i);
  }
}
await Promise.all(Array.from({ length: Math.min(concurrency, queue.length + jobs.length) }, worker));
rmSync(scratch, { recursive: true, force: true });

const wall = Date.now() - started;
const tested = results.filter((r) => r.file.endsWith('.ts'));
const slowest = [...tested].sort((a, b) => b.ms - a.ms).slice(0, 10);
const total = (k) => tested.reduce((n, r) => n + r[k], 0);
const failed = results.filter((r) => !r.ok);
process.stdout.write(`slowest files:\n${slowest.map((r) => `  ${seconds(r.ms).padStart(8)}  ${r.file}`).join('\n')}\n\n`);
process.stdout.write(
  `${tested.length} ${tested.length === 1 ? "file" : "files"}, ${total('tests')} tests: ${total('pass')} passed, ${total('fail')} failed, ${total('cancelled')} cancelled, ` +
    `${total('skipped')} skipped, ${total('todo')} todo; ${seconds(wall)} in all\n`,
);
if (failed.length > 0) process.stdout.write(`failed: ${failed.map((r) => `${r.file}${r.overran ? ' (over its budget)' : ''}`).join(', ')}\n`);

if (record) {
  const durations = { ...known };
  for (const r of tested) durations[r.file] = Math.round(r.ms / 100) / 10;
  // Files that are gone are forgotten.
  const sorted = Object.fromEntries(Object.entries(durations).filter(([f]) => allFiles.includes(f)).sort(([a], [b]) => (a < b ? -1 : 1)));
  writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 2)}\n`);
  process.stdout.write(`durations written to ${relative(root, DURATIONS)}\n`);
}
process.exit(failed.length > 0 ? 1 : 0);
