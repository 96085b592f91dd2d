/**
 * `npm run sim -- --seeds N [--from F] [--seed S] [--workers W] [--guard-off NAME] [--burst-ms MS]`: the whole publisher under
 * deterministic simulation (test/helpers/sim-publisher.ts). Runs seeds F … F+N-1 (default 1 … 500) in W processes
 * (default: one per core), or the one seed S, printed with its history when it violates an invariant. Every seed
 * replays exactly: `--seed S` runs the same requests in the same order as the run that reported it.
 *
 * With --guard-off, one of the guards of functions/util/guards.ts is switched off, to see the simulation find what
 * it guards against; --burst-ms makes the S3 events of a seed arrive within MS instead of 4 000 ms. Exit status 1
 * when any seed violated an invariant.
 */
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { guards, type Guards } from '../functions/util/guards';
import { runSeed, type SeedResult, type SimOptions, type Violation } from '../test/helpers/sim-publisher';

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** The workload's options from the command line. */
function simOptions(): SimOptions {
  const burst = option('burst-ms');
  return burst === undefined ? {} : { arrivalWindowMs: Number(burst) };
}

interface Totals {
  seeds: number;
  jobs: number;
  attempts: number;
  requests: number;
  violations: Violation[];
}

async function runRange(from: number, count: number): Promise<Totals> {
  const t: Totals = { seeds: 0, jobs: 0, attempts: 0, requests: 0, violations: [] };
  for (let seed = from; seed < from + count; seed++) {
    const r: SeedResult = await runSeed(seed, simOptions());
    t.seeds++;
    t.jobs += r.jobs;
    t.attempts += r.attempts;
    t.requests += r.requests;
    t.violations.push(...r.violations);
  }
  return t;
}

function worker(from: number, count: number, guardOff: string | undefined): Promise<Totals> {
  return new Promise((resolve, reject) => {
    const burst = option('burst-ms');
    const args = ['--import', 'tsx', 'tools/sim.ts', '--worker', '--from', String(from), '--seeds', String(count), ...(guardOff ? ['--guard-off', guardOff] : []), ...(burst ? ['--burst-ms', burst] : [])];
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as Totals) : reject(new Error(`worker ${from}+${count} exited with ${code}`))));
  });
}

async function main(): Promise<void> {
  const guardOff = option('guard-off');
  if (guardOff !== undefined) {
    if (!(guardOff in guards)) throw new Error(`--guard-off: one of ${Object.keys(guards).join(', ')}`);
    guards[guardOff as keyof Guards] = false;
  }
  const one = option('seed');
  if (one !== undefined) {
    const r = await runSeed(Number(one), simOptions());
    console.log(`seed ${r.seed}: ${r.jobs} jobs, ${r.attempts} attempts, ${r.requests} requests, settled after ${(r.simulatedMs / 1000).toFixed(0)} simulated s`);
    for (const v of r.violations) console.log(`VIOLATION ${v.invariant}: ${v.detail}`);
    if (r.history) console.log(`\nhistory (last requests):\n${r.history}`);
    process.exitCode = r.violations.length > 0 ? 1 : 0;
    return;
  }
  const from = Number(option('from') ?? '1');
  const count = Number(option('seeds') ?? '500');
  if (process.argv.includes('--worker')) {
    process.stdout.write(JSON.stringify(await runRange(from, count)));
    return;
  }
  const workers = Math.max(1, Math.min(count, Number(option('workers') ?? String(cpus().length))));
  const started = performance.now();
  const per = Math.ceil(count / workers);
  const slices = Array.from({ length: workers }, (_, i) => [from + i * per, Math.max(0, Math.min(per, count - i * per))] as const).filter(([, n]) => n > 0);
  const parts = await Promise.all(slices.map(([f, n]) => worker(f, n, guardOff)));
  const t = parts.reduce<Totals>((a, b) => ({ seeds: a.seeds + b.seeds, jobs: a.jobs + b.jobs, attempts: a.attempts + b.attempts, requests: a.requests + b.requests, violations: [...a.violations, ...b.violations] }), { seeds: 0, jobs: 0, attempts: 0, requests: 0, violations: [] });
  const s = (performance.now() - started) / 1000;
  console.log(`${t.seeds} seeds (${from}…${from + count - 1}${guardOff ? `, guard ${guardOff} off` : ''}): ${t.jobs} jobs, ${t.attempts} attempts, ${t.requests} requests; ${t.violations.length} violations; ${s.toFixed(1)} s on ${slices.length} processes (${(t.seeds / s).toFixed(0)} seeds/s)`);
  const bySeed = new Map<number, Violation[]>();
  for (const v of t.violations) bySeed.set(v.seed, [...(bySeed.get(v.seed) ?? []), v]);
  for (const [seed, vs] of [...bySeed].slice(0, 20)) console.log(`seed ${seed}: ${vs.map((v) => `${v.invariant}: ${v.detail}`).join('; ')}   (replay: npm run sim -- --seed ${seed}${guardOff ? ` --guard-off ${guardOff}` : ''})`);
  process.exitCode = t.violations.length > 0 ? 1 : 0;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 2;
});
