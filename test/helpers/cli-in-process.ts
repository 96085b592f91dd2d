/**
 * The CLI's main() in this process, with the environment of a shell that has `env` set: what it wrote and the exit
 * status it set. For the many cases that need no process of their own (usage errors, jobs whose output is read): a
 * process each would cost the CLI's start-up each time. Only text is captured: the test runner's own messages on
 * stdout (binary, when it runs a file as a child) pass through.
 */
import { main } from '../../functions/publish/cli';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cliInProcess(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const saved = { env: process.env, stdout: process.stdout.write, stderr: process.stderr.write, exitCode: process.exitCode };
  const out = { stdout: '', stderr: '' };
  const capture = (stream: 'stdout' | 'stderr', original: typeof process.stdout.write) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (typeof chunk !== 'string') return (original as (...a: unknown[]) => boolean).call(process[stream], chunk, ...rest);
      out[stream] += chunk;
      return true;
    }) as typeof process.stdout.write;
  // The variables that would configure a job from the outside are unset unless `env` sets them.
  process.env = { ...process.env, REGISTRY: '', SIGNING_KEY: '', VERIFY_PUBLIC_KEY: '', ...env };
  process.exitCode = undefined;
  process.stdout.write = capture('stdout', saved.stdout);
  process.stderr.write = capture('stderr', saved.stderr);
  try {
    await main(['node', 'gl-oci-publish', ...args]);
    return { code: typeof process.exitCode === 'number' ? process.exitCode : 0, ...out };
  } finally {
    process.env = saved.env;
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
    process.exitCode = saved.exitCode;
  }
}
