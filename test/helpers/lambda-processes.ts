/**
 * Lambda instances as OS processes for tests: test/helpers/lambda-child.ts bundled once with esbuild, one process
 * per event. Each process reports `ready` after loading the handler and waits for `go`, so a test can start many
 * and let them run at one moment.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { lambdaNodeArgsFor } from '../../tools/lambda-runtime';
import { bundleFunction } from '../../tools/build';
import type { JobSummary } from '../../functions/publish/run-job';

/** Bundles the child into `dir` as the function is bundled (tools/build.ts); returns the script's path. */
export async function bundleLambdaChild(dir: string): Promise<string> {
  await bundleFunction(dir, { 'lambda-child': fileURLToPath(new URL('./lambda-child.ts', import.meta.url)) });
  return join(dir, 'lambda-child.mjs');
}

/** A started Lambda process and what it said. */
export interface LambdaProcess {
  /** what the test calls it in messages */
  name: string;
  proc: ChildProcess;
  ready: Promise<void>;
  exited: Promise<number | null>;
  stderr: string[];
  result?: JobSummary[];
}

/**
 * The children run as the function is deployed: with the NODE_OPTIONS serverless.yml gives it, and started with the
 * arguments Lambda's runtime gives node for its memory size.
 */
const serverless = YAML.parse(readFileSync(fileURLToPath(new URL('../../serverless.yml', import.meta.url)), 'utf8')) as {
  provider: { environment: Record<string, unknown> };
  params: { default: { memorySize: number | string } };
};
const FUNCTION_NODE_OPTIONS = String(serverless.provider.environment.NODE_OPTIONS ?? '');
const LAMBDA_NODE_ARGS = lambdaNodeArgsFor(Number(serverless.params.default.memorySize));

/** The environment of a child: the test's, less what would make it part of the test run, with the function's NODE_OPTIONS. */
export function childEnv(extra: Record<string, string | undefined>): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, NODE_OPTIONS: FUNCTION_NODE_OPTIONS, ...extra };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

export function startLambdaProcess(bundle: string, name: string, event: unknown, env: Record<string, string | undefined>): LambdaProcess {
  const proc = spawn(process.execPath, [...LAMBDA_NODE_ARGS, bundle, JSON.stringify(event)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const p: LambdaProcess = { name, proc, stderr: [], ready: Promise.resolve(), exited: Promise.resolve(null) };
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => p.stderr.push(chunk));
  p.exited = new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (code) => resolve(code));
  });
  p.ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (line === 'ready') resolve();
      else if (line.startsWith('result ')) p.result = JSON.parse(line.slice('result '.length)) as JobSummary[];
    });
    void p.exited.then(
      (code) => reject(new Error(`${name}: exited with ${code} before it was ready:\n${tail(p)}`)),
      reject,
    );
  });
  // An exit after `ready` is the normal end; only the rejection before it matters.
  p.ready.catch(() => undefined);
  return p;
}

export function tail(p: LambdaProcess, chars = 3000): string {
  const all = p.stderr.join('');
  return all.length > chars ? `…${all.slice(-chars)}` : all;
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Starts one process per event, waits until all are ready, lets them go at once and waits for them to end. */
export async function runAtOnce(bundle: string, runs: ReadonlyArray<{ name: string; event: unknown }>, env: Record<string, string | undefined>, timeoutMs = 120_000): Promise<LambdaProcess[]> {
  const processes = runs.map((r) => startLambdaProcess(bundle, r.name, r.event, env));
  try {
    await withTimeout(Promise.all(processes.map((p) => p.ready)), 60_000, `starting ${processes.length} processes`);
    for (const p of processes) p.proc.stdin?.end('go\n');
    await withTimeout(Promise.all(processes.map((p) => p.exited)), timeoutMs, `${processes.length} processes running`);
    return processes;
  } finally {
    for (const p of processes) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  }
}
