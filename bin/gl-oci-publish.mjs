#!/usr/bin/env node
// Runs the CLI from the TypeScript sources when tsx is installed (a development checkout), else from the bundle
// that `npm run build` writes.
import { existsSync } from 'node:fs';

// The Lambda runs Node.js 22 and every test runs on it; older releases are not tested, so they are refused here with
// a line that says so rather than failing somewhere later.
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  process.stderr.write(`gl-oci-publish needs Node.js 22 or later (the Lambda runs nodejs22.x); this is ${process.version}\n`);
  process.exit(2);
}

// The AWS SDK's notice about future Node.js versions is for developers of the SDK's users, not for a person
// running this command (it shows on releases the SDK is about to leave, as 22 will be one day).
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
