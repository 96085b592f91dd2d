/**
 * `npm run build`: bundles the Lambda (dist/publish/index.mjs, zipped as dist/publish.zip for deployment) and
 * the CLI (dist/cli/index.mjs) with esbuild. The AWS SDK is bundled too, deliberately: the runtime's own copy
 * drifts between Lambda releases, and a bundled one is the version the tests ran against (it costs ~600 KB of the
 * bundle, and nothing at cold start that a download would not cost more).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build, type BuildOptions } from 'esbuild';
import yazl from 'yazl';

// Bundled CommonJS dependencies call require(); an ES module has none of its own.
const banner = "import { createRequire as __glCreateRequire } from 'node:module'; const require = __glCreateRequire(import.meta.url);";

const common: BuildOptions = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  minify: true,
  keepNames: true,
  sourcemap: 'external',
  legalComments: 'external',
  banner: { js: banner },
  // ESM builds of dependencies where they have one (the AWS SDK, zod): they tree-shake, CommonJS does not.
  mainFields: ['module', 'main'],
  logLevel: 'warning',
};

/** The CLI's bundle, which bin/gl-oci-publish.mjs runs where tsx is not installed (an installed package). */
export async function bundleCli(outfile: string): Promise<void> {
  await build({ ...common, entryPoints: [fileURLToPath(new URL('./cli-entry.ts', import.meta.url))], outfile });
}

async function zip(files: Array<{ path: string; name: string }>, out: string): Promise<void> {
  const z = new yazl.ZipFile();
  // A fixed date: the same sources give the same zip, so deployments only change when the code does.
  for (const f of files) z.addBuffer(await readFile(f.path), f.name, { mtime: new Date('2026-01-01T00:00:00Z'), mode: 0o644 });
  z.end();
  await new Promise<void>((resolve, reject) => {
    z.outputStream.pipe(createWriteStream(out)).on('close', resolve).on('error', reject);
  });
}

async function main(): Promise<void> {
  await rm('dist', { recursive: true, force: true });
  await mkdir('dist', { recursive: true });
  await build({ ...common, entryPoints: ['functions/publish/index.ts'], outfile: 'dist/publish/index.mjs' });
  await bundleCli('dist/cli/index.mjs');
  await zip(
    [
      { path: 'dist/publish/index.mjs', name: 'index.mjs' },
      { path: 'dist/publish/index.mjs.map', name: 'index.mjs.map' },
    ],
    'dist/publish.zip',
  );
  const size = async (p: string) => `${((await stat(p)).size / 1024).toFixed(0)} KiB`;
  console.log(`dist/publish/index.mjs ${await size('dist/publish/index.mjs')}, dist/publish.zip ${await size('dist/publish.zip')}, dist/cli/index.mjs ${await size('dist/cli/index.mjs')}`);
}

// Run as a script (`npm run build`), not when a test imports bundleCli.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
