/**
 * The CLI as someone who installed the package runs it: bin/gl-oci-publish.mjs beside the bundle `npm run build`
 * makes (dist/cli/index.mjs), in a folder with no node_modules above it, so the bin takes its bundle path. It
 * starts in about a third of the CPU time the TypeScript sources take through tsx, which the tests that run the
 * CLI dozens of times need; the checkout's bin still runs in cli.test.ts and in the
 * tests that need the TypeScript sources (signing, rotation).
 */
import { copyFile, mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleCli } from '../../tools/build';

export interface InstalledCli {
  /** the installed bin/gl-oci-publish.mjs */
  bin: string;
  /** the folder it is installed in (remove it when done) */
  dir: string;
}

export async function installCli(): Promise<InstalledCli> {
  const dir = await mkdtemp(join(tmpdir(), 'gl-cli-package-'));
  await mkdir(join(dir, 'bin'));
  await copyFile(fileURLToPath(new URL('../../bin/gl-oci-publish.mjs', import.meta.url)), join(dir, 'bin', 'gl-oci-publish.mjs'));
  await bundleCli(join(dir, 'dist', 'cli', 'index.mjs'));
  return { bin: join(dir, 'bin', 'gl-oci-publish.mjs'), dir };
}
