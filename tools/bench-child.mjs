// The benchmark's publisher process. `handler <event file>`: the function's bundle (dist/publish/index.mjs), as a
// Lambda invocation runs it; otherwise the built CLI (dist/cli/index.mjs) with the arguments that follow
// (`node gl-oci-publish <args>`). Reports on its last stderr line the time spent, the process's peak resident set
// size, the CPU time it used, and the peaks of the JavaScript heap and of the memory of buffers (sampled).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const peak = { heapUsed: 0, arrayBuffers: 0 };
const sample = () => {
  const m = process.memoryUsage();
  peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed);
  peak.arrayBuffers = Math.max(peak.arrayBuffers, m.arrayBuffers);
};
setInterval(sample, 20).unref();

let run;
if (process.argv[2] === 'handler') {
  const { handler } = await import(new URL('../dist/publish/index.mjs', import.meta.url).href);
  const event = JSON.parse(readFileSync(process.argv[3], 'utf8'));
  run = async () => {
    try {
      process.stdout.write(`${JSON.stringify(await handler(event, { awsRequestId: 'bench', getRemainingTimeInMillis: () => 900_000 }))}\n`);
    } catch (err) {
      // A failed job: the summaries say which and why.
      process.stdout.write(`${JSON.stringify({ jobs: err.summaries ?? [{ outcome: 'failed', error: String(err) }] })}\n`);
    }
  };
} else {
  const { main } = await import(new URL('../dist/cli/index.mjs', import.meta.url).href);
  // argv: node bench-child.mjs node gl-oci-publish <args>: the CLI gets it from the second "node" on.
  run = () => main(process.argv.slice(2));
}
const started = performance.now();
await run();
sample();
const usage = process.resourceUsage();
const cpuMs = (usage.userCPUTime + usage.systemCPUTime) / 1000;
// VmHWM, this process's own peak: getrusage's maxRSS survives exec, so a child forked from a large parent would
// report the parent's memory.
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
const maxRssKiB = hwm ? Number(hwm[1]) : usage.maxRSS;
process.stderr.write(
  `\nBENCH ${JSON.stringify({ ms: performance.now() - started, maxRssKiB, cpuMs, heapKiB: Math.round(peak.heapUsed / 1024), buffersKiB: Math.round(peak.arrayBuffers / 1024) })}\n`,
);
