#!/usr/bin/env node
// Runs the CLI from the TypeScript sources when tsx is installed (a development checkout), else from the bundle
// that `npm run build` writes.
import { existsSync } from 'node:fs';

let main;
try {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../functions/publish/cli.ts'));
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
  const bundle = new URL('../dist/cli/index.mjs', import.meta.url);
  if (!existsSync(bundle)) {
    process.stderr.write('gl-oci-publish: run `npm ci` (development) or `npm run build` first\n');
    process.exit(2);
  }
  ({ main } = await import(bundle.href));
}
await main(process.argv);
