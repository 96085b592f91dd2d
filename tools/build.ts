/**
 * `npm run build`: bundles the Lambda (dist/publish/: index.mjs and the chunks it loads when it needs them, zipped
 * as dist/publish.zip for deployment) and the CLI (dist/cli/index.mjs) with esbuild. The AWS SDK is bundled too,
 * deliberately: the runtime's own copy drifts between Lambda releases, and a bundled one is the version the tests
 * ran against.
 *
 * A cold start pays for every byte of JavaScript it compiles, so the function's bundle holds only what runs (the
 * cold start is measured by `npm run bench`, tools/bench-cold-start.ts):
 * - undici is the part the registry client uses (functions/registry/undici-subset.mjs), not fetch, WebSocket,
 *   the mock agents and the cache stores its entry module loads;
 * - code loaded by dynamic import (the AWS SDK's other credential providers and their clients, which a Lambda
 *   with its role's credentials in the environment never loads) is split into chunks loaded only when called;
 * - the source maps map to file and line without carrying the sources (NODE_OPTIONS=--enable-source-maps).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { isBuiltin } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type BuildOptions, type Plugin } from 'esbuild';
import yazl from 'yazl';

// Bundled CommonJS dependencies call require(); an ES module has none of its own.
const banner = "import { createRequire as __glCreateRequire } from 'node:module'; const require = __glCreateRequire(import.meta.url);";

const undiciSubset: Plugin = {
  name: 'undici-subset',
  setup(b) {
    const subset = fileURLToPath(new URL('../functions/registry/undici-subset.mjs', import.meta.url));
    b.onResolve({ filter: /^undici$/ }, () => ({ path: subset }));
  },
};

// An ES module that imports a Node built-in makes Node build the built-in's ES facade, which reads every export,
// getters included: node:http's WebSocket, CloseEvent and MessageEvent load Node's own undici, node:crypto's
// webcrypto and subtle load WebCrypto, node:process's stdin makes a stream. At a cold start that was about a tenth
// of the time spent in Node's own modules. The bundles take the CommonJS module instead, and offer its exports as
// named exports, read when the bundle loads, as the facade does, but for the getters of GETTERS_LEFT_OUT, which
// nothing in the bundle uses: a named import of one fails the build (no such export), and the bundle test checks
// that no output names them. GETTERS_CALLED are read when called (crypto.getRandomValues is WebCrypto's).
const GETTERS_LEFT_OUT: Record<string, readonly string[]> = {
  'node:http': ['WebSocket', 'CloseEvent', 'MessageEvent'],
  'node:crypto': ['webcrypto', 'subtle'],
  'node:process': ['stdin'],
};
const GETTERS_CALLED: Record<string, readonly string[]> = { 'node:crypto': ['getRandomValues'] };
export const LEFT_OUT_OF_BUILTINS = Object.values(GETTERS_LEFT_OUT).flat();
const builtinsWithoutFacade: Plugin = {
  name: 'builtins-without-facade',
  setup(b) {
    b.onResolve({ filter: /^[a-z_/]+$|^node:/ }, (a) =>
      (a.kind === 'import-statement' || a.kind === 'dynamic-import') && isBuiltin(a.path)
        ? { path: a.path.replace(/^(node:)?/, 'node:'), namespace: 'cjs-builtin' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'cjs-builtin' }, async (a) => {
      const builtin = ((await import(a.path)) as { default: object }).default;
      const leftOut = GETTERS_LEFT_OUT[a.path] ?? [];
      const called = GETTERS_CALLED[a.path] ?? [];
      const names = Object.getOwnPropertyNames(builtin).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && n !== 'default' && !leftOut.includes(n) && !called.includes(n));
      const lines = [
        `const m = require(${JSON.stringify(a.path)});`,
        'export default m;',
        `export const { ${names.join(', ')} } = m;`,
        ...called.map((n) => `export function ${n}(...args) { return m.${n}(...args); }`),
      ];
      return { contents: `${lines.join('\n')}\n`, loader: 'js' };
    });
  },
};

/** What every bundle is built with; the target is the Lambda runtime's Node.js (serverless.yml). */
export const bundleOptions: BuildOptions = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  minify: true,
  keepNames: true,
  sourcemap: 'external',
  sourcesContent: false,
  legalComments: 'external',
  banner: { js: banner },
  // ESM builds of dependencies where they have one (the AWS SDK, zod): they tree-shake, CommonJS does not.
  mainFields: ['module', 'main'],
  plugins: [undiciSubset, builtinsWithoutFacade],
  logLevel: 'warning',
};

/** The CLI's bundle, which bin/gl-oci-publish.mjs runs where tsx is not installed (an installed package). */
export async function bundleCli(outfile: string): Promise<void> {
  await build({ ...bundleOptions, entryPoints: [fileURLToPath(new URL('./cli-entry.ts', import.meta.url))], outfile });
}

/**
 * The function's bundle into `outdir`: index.mjs (the handler index.handler) and chunks/. `entries` replaces the
 * entry (tests bundle a child process around the handler the same way).
 */
export async function bundleFunction(outdir: string, entries: Record<string, string> = { index: fileURLToPath(new URL('../functions/publish/index.ts', import.meta.url)) }): Promise<void> {
  await build({
    ...bundleOptions,
    entryPoints: entries,
    outdir,
    // Names of functions and classes are not kept: the wrapper calls that keep them cost a cold start about 8 ms,
    // and the source maps name them in stack traces. Every error class of the code sets its name itself.
    keepNames: false,
    splitting: true,
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
  });
}

/** Every file of a folder, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1)).sort();
}

async function zip(dir: string, names: string[], out: string): Promise<void> {
  const z = new yazl.ZipFile();
  // A fixed date: the same sources give the same zip, so deployments only change when the code does.
  for (const name of names) z.addBuffer(await readFile(join(dir, name)), name, { mtime: new Date('2026-01-01T00:00:00Z'), mode: 0o644 });
  z.end();
  await new Promise<void>((resolve, reject) => {
    z.outputStream.pipe(createWriteStream(out)).on('close', resolve).on('error', reject);
  });
}

async function main(): Promise<void> {
  await rm('dist', { recursive: true, force: true });
  await mkdir('dist', { recursive: true });
  await bundleFunction('dist/publish');
  await bundleCli('dist/cli/index.mjs');
  // The code and its maps; the license notices of the bundled packages stay beside it (dist/publish/*.LEGAL.txt).
  const packaged = (await filesUnder('dist/publish')).filter((f) => f.endsWith('.mjs') || f.endsWith('.mjs.map'));
  await zip('dist/publish', packaged, 'dist/publish.zip');
  const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
  const sizes = await Promise.all(packaged.map(async (f) => ({ f, size: (await stat(join('dist/publish', f))).size })));
  const sum = (pick: (f: string) => boolean) => kib(sizes.filter((s) => pick(s.f)).reduce((n, s) => n + s.size, 0));
  console.log(
    `dist/publish: index.mjs ${sum((f) => f === 'index.mjs')}, chunks ${sum((f) => f.startsWith('chunks/') && f.endsWith('.mjs'))}, ` +
      `maps ${sum((f) => f.endsWith('.map'))}; dist/publish.zip ${kib((await stat('dist/publish.zip')).size)}; dist/cli/index.mjs ${kib((await stat('dist/cli/index.mjs')).size)}`,
  );
}

// Run as a script (`npm run build`), not when a test imports bundleCli.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
