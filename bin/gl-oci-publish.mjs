#!/usr/bin/env node
// Runs the CLI from the TypeScript sources when tsx is installed (a development checkout), else from the bundle
// that `npm run build` writes.
import { existsSync } from 'node:fs';

// The AWS SDK's notice about future Node.js versions is for developers of the SDK's users, not for a person
// running this command; the Lambda runs Node.js 22 and never shows it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

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
