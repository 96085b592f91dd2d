/**
 * One Lambda process for test/integration/lambda-processes.test.ts (bundled with esbuild and run by plain node).
 * It loads the handler and creates it, prints `ready` on stdout, waits for a `go` line on stdin, then invokes the
 * handler once with the event given as its first argument and a Lambda-like context, prints
 * `result <job summaries as JSON>` and exits: 0 when no job failed, 1 otherwise, 2 when stdin closed before `go`.
 * The configuration comes from the environment, as in a Lambda; LATENCY_MS (optional) makes every manifest
 * request wait a random few milliseconds first, like test/helpers/latency.ts does in-process. Log lines go to
 * stderr, so stdout carries only the protocol.
 */
import { createInterface } from 'node:readline';
import { createHandler, JobsFailedError, type HandlerResult } from '../../functions/publish/handler';
import { withLatency } from './latency';

const event: unknown = JSON.parse(process.argv[2] ?? 'null');
const latencyMs = Number(process.env.LATENCY_MS ?? 0);
const handler = createHandler({
  logSink: (line) => process.stderr.write(`${line}\n`),
  ...(latencyMs > 0 ? { runtime: withLatency(latencyMs) } : {}),
});

/** Exits once the line is written (stdout may be a pipe the parent reads slowly). */
function finish(code: number, line?: string): void {
  if (line === undefined) process.exit(code);
  process.stdout.write(`${line}\n`, () => process.exit(code));
}

process.stdout.write('ready\n');
let go = false;
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'go') {
    go = true;
    break;
  }
}
if (!go) finish(2);
else {
  // A Lambda's context: a request id for the logs, and the time left (the longest a Lambda may run).
  const end = Date.now() + 900_000;
  try {
    const result = (await handler(event, { awsRequestId: `process-${process.pid}`, getRemainingTimeInMillis: () => end - Date.now() })) as HandlerResult;
    finish(result.jobs.some((j) => j.outcome === 'failed') ? 1 : 0, `result ${JSON.stringify(result.jobs)}`);
  } catch (err) {
    if (err instanceof JobsFailedError) finish(1, `result ${JSON.stringify(err.summaries)}`);
    else {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      finish(1);
    }
  }
}
