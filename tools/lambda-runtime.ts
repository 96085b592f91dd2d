/**
 * How Lambda runs the function, for the benchmark and the tests that start it as processes: serverless.yml's
 * NODE_OPTIONS, and the arguments Lambda's Node.js runtime starts node with.
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';

/** The NODE_OPTIONS serverless.yml gives the function, so that measurements run it as it is deployed. */
export async function functionNodeOptions(): Promise<string> {
  const serverless = YAML.parse(await readFile('serverless.yml', 'utf8')) as { provider: { environment: Record<string, unknown> } };
  return String(serverless.provider.environment.NODE_OPTIONS ?? '');
}

/**
 * The arguments Lambda's Node.js runtime starts node with for the function's memory size (serverless.yml's default
 * memorySize): its bootstrap gives V8 a tenth of the memory as young generation (two semi-spaces) and the rest as
 * old generation, and exposes gc. They come after NODE_OPTIONS, so theirs win.
 */
export async function lambdaNodeArgs(): Promise<string[]> {
  const serverless = YAML.parse(await readFile('serverless.yml', 'utf8')) as { params: { default: { memorySize: number | string } } };
  return lambdaNodeArgsFor(Number(serverless.params.default.memorySize));
}

export function lambdaNodeArgsFor(memoryMb: number): string[] {
  const newSpace = Math.floor(memoryMb / 10);
  return ['--expose-gc', '--max-http-header-size', '81920', `--max-semi-space-size=${Math.floor(newSpace / 2)}`, `--max-old-space-size=${memoryMb - newSpace}`];
}
