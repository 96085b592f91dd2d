// One cold start as Lambda's Node.js runtime makes it: a fresh process imports the function's bundle and calls its
// handler with one event. Without a bundle, the bare process (the baseline). Reports on its last stderr line the
// job's outcome and this process's peak resident set size (VmHWM).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [bundle, event] = process.argv.slice(2);
let outcome = 'none';
if (bundle && event) {
  const { handler } = await import(pathToFileURL(bundle).href);
  const result = await handler(JSON.parse(event), { awsRequestId: 'cold-start', getRemainingTimeInMillis: () => 900_000 });
  outcome = result.jobs.map((j) => j.outcome).join(',');
}
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stderr.write(`\nCOLD ${JSON.stringify({ outcome, maxRssKiB: hwm ? Number(hwm[1]) : process.resourceUsage().maxRSS })}\n`);
