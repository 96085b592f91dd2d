// Runs the built CLI (dist/cli/index.mjs) as the benchmark's publisher process and reports, on its last stderr
// line, the time spent in it, the process's peak resident set size and the CPU time it used.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const { main } = await import(new URL('../dist/cli/index.mjs', import.meta.url).href);
const started = performance.now();
// argv: node bench-child.mjs node gl-oci-publish <args>: the CLI gets it from the second "node" on.
await main(process.argv.slice(2));
const usage = process.resourceUsage();
const cpuMs = (usage.userCPUTime + usage.systemCPUTime) / 1000;
// VmHWM, this process's own peak: getrusage's maxRSS survives exec, so a child forked from a large parent would
// report the parent's memory.
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
const maxRssKiB = hwm ? Number(hwm[1]) : usage.maxRSS;
process.stderr.write(`\nBENCH ${JSON.stringify({ ms: performance.now() - started, maxRssKiB, cpuMs })}\n`);
