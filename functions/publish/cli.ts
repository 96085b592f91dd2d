/**
 * `gl-oci-publish`: the Lambda's code outside Lambda. Configuration comes from the same environment variables;
 * options override them. At a terminal it shows progress and a readable summary (cli-display.ts); otherwise, or
 * with --json, JSON log lines go to stderr and the job summaries to stdout. The exit code is 1 when a job failed
 * (or `verify` found problems), 2 when the command line or the configuration was wrong: a usage error, printed as one
 * line before any job runs (README, "CLI").
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, Option } from 'commander';
import { isBaseName, isVersion, metadataKey } from '../gardenlinux/naming';
import { checkTag } from '../orchestration/aliases';
import { displayLocation, parseCopyLocation, type CopyLocation } from '../registry/location';
import { pullBuild } from '../orchestration/pull-build';
import { fileSigner, parseSigningKey, readPublicKey } from '../signing/signer';
import { BUCKET_NAME } from '../storage/object-store';
import { describeError, InputError } from '../util/errors';
import { Logger } from '../util/log';
import { loadConfig, type Config } from './config';
import { normaliseEvent } from './events';
import { createHandler, JobsFailedError, type HandlerResult, type SqsBatchResult } from './handler';
import { createDisplay, formatPull } from './cli-display';
import { createTargetSet } from './runtime';
import { formatReport } from './verify-table';

interface Globals {
  registry?: string;
  stateBucket?: string;
  statePrefix?: string;
  containerRepositories?: string;
  concurrency?: string;
  logLevel?: string;
  signingKey?: string;
  signContainerImages?: boolean;
  aliasTags?: string;
  json?: boolean;
  quiet?: boolean;
}

/** Placeholder bucket name when a local directory stands in for S3. */
const LOCAL_BUCKET = 'local-directory';

function environment(globals: Globals, dir?: string): Record<string, string | undefined> {
  return {
    ...process.env,
    ...(globals.registry ? { REGISTRY: globals.registry } : {}),
    ...(globals.stateBucket ? { STATE_BUCKET: globals.stateBucket } : {}),
    ...(globals.statePrefix ? { STATE_PREFIX: globals.statePrefix } : {}),
    ...(globals.containerRepositories ? { CONTAINER_REPOSITORIES: globals.containerRepositories } : {}),
    ...(globals.concurrency ? { BLOB_CONCURRENCY: globals.concurrency } : {}),
    ...(globals.logLevel ? { LOG_LEVEL: globals.logLevel } : {}),
    ...(globals.signingKey ? { SIGNING_KEY: globals.signingKey } : {}),
    ...(globals.signContainerImages ? { SIGN_CONTAINER_IMAGES: 'true' } : {}),
    ...(globals.aliasTags ? { ALIAS_TAGS: globals.aliasTags } : {}),
    ...(dir ? { SOURCE_DIR: dir } : {}),
  };
}

/** A wrong command line or configuration: main() prints it as one line and exits 2. */
class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** What a command checks before the handler runs, beyond what every command checks. */
interface Preflight {
  /** what the command's arguments need of the configuration (a configured sub-repository, a records location) */
  check?: (config: Config) => void;
  /** where VERIFY_PUBLIC_KEY came from, for the message (verify's --public-key) */
  publicKeyFrom?: string;
}

/**
 * What the handler would refuse before any job, refused here first, so that it is a usage error (exit 2, one line)
 * and not a failed run: the configuration, the payload the command line makes (or the event file holds), the key
 * files it names, and what the command checks itself.
 */
async function preflight(env: Record<string, string | undefined>, event: unknown, pre: Preflight): Promise<void> {
  const config = loadConfig(env); // a ConfigError names the variable and never shows its value
  pre.check?.(config);
  normaliseEvent(event);
  if (config.verifyPublicKey !== undefined) {
    await readPublicKey(config.verifyPublicKey).catch((err: unknown) => {
      throw new UsageError(`${pre.publicKeyFrom ?? 'VERIFY_PUBLIC_KEY'}: ${(err as Error).message}`);
    });
  }
  if (config.signingKey !== undefined) {
    const ref = parseSigningKey(config.signingKey);
    // A KMS key is opened by the handler (a network call; its failure is not the command line's).
    if (ref.kind === 'file') {
      await fileSigner(ref.path).catch((err: unknown) => {
        throw new UsageError(`SIGNING_KEY: ${(err as Error).message}`);
      });
    }
  }
}

/**
 * Runs the handler once with the display the situation asks for; prints a failure as one line and sets the exit
 * status. `summaries`: print the job summaries (the verify command prints its report instead). Usage errors are
 * thrown before the handler starts (preflight); one the handler finds all the same (an InputError raised before any
 * job ran) exits 2 as well, a failed job 1.
 */
async function invoke(
  globals: Globals,
  event: unknown,
  dir?: string,
  extraEnv: Record<string, string> = {},
  summaries = true,
  pre: Preflight = {},
): Promise<HandlerResult | SqsBatchResult | undefined> {
  const env = { ...environment(globals, dir), ...extraEnv };
  await preflight(env, event, pre);
  const display = createDisplay({ json: globals.json === true, quiet: globals.quiet === true, stdout: process.stdout, stderr: process.stderr });
  const handler = createHandler({
    env,
    logSink: (line) => display.logSink(line),
    ...(display.progress ? { progress: display.progress } : {}),
  });
  try {
    const result = await handler(event, { awsRequestId: `cli-${process.pid}` });
    if (summaries) display.summaries(result);
    if ('batchItemFailures' in result && result.batchItemFailures.length > 0) process.exitCode = 1;
    return result;
  } catch (err) {
    if (err instanceof JobsFailedError && summaries) display.summaries({ jobs: err.summaries });
    process.stderr.write(`gl-oci-publish: ${describeError(err)}\n`);
    // Jobs report their failures in their summaries (JobsFailedError); an InputError escapes the handler only before
    // any job ran: the configuration or the event was refused.
    process.exitCode = err instanceof InputError ? 2 : 1;
    return undefined;
  } finally {
    display.stop();
  }
}

/** --bucket and --dir, each checked: one of them at most, a bucket name, an existing directory. */
function place(options: { bucket?: string; dir?: string }): { bucket?: string; dir?: string } {
  if (options.bucket && options.dir) throw new UsageError('give either --bucket or --dir, not both');
  if (options.bucket !== undefined && !BUCKET_NAME.test(options.bucket)) throw new UsageError(`--bucket: "${options.bucket}" is not an S3 bucket name`);
  if (options.dir !== undefined && !statSync(options.dir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new UsageError(`--dir: ${options.dir} is not a directory`);
  }
  if (options.dir) return { bucket: LOCAL_BUCKET, dir: options.dir };
  return options.bucket ? { bucket: options.bucket } : {};
}

/** Where the publisher records are: a bucket (else STATE_BUCKET), or the directory used to publish. */
function recordsIn(options: { bucket?: string; dir?: string }): { bucket?: string; dir?: string } {
  return place(options);
}

/** What the records commands need of the configuration: somewhere the records are, a bucket it may read. */
function recordsCheck(where: { bucket?: string; dir?: string }): (config: Config) => void {
  return (config) => {
    if (where.bucket === undefined && config.stateBucket === undefined) {
      throw new UsageError('say where the records are: --bucket <name>, --dir <path> or STATE_BUCKET (--state-bucket)');
    }
    bucketAllowed(where, config);
  };
}

/** ALLOWED_BUCKETS, checked before the job that would refuse the bucket (its list is not repeated). */
function bucketAllowed(where: { bucket?: string; dir?: string }, config: Config): void {
  if (where.dir === undefined && where.bucket !== undefined && config.allowedBuckets !== undefined && !config.allowedBuckets.includes(where.bucket)) {
    throw new UsageError(`--bucket: "${where.bucket}" is not one this publisher reads (ALLOWED_BUCKETS)`);
  }
}

function source(options: { bucket?: string; dir?: string }): { bucket: string; dir?: string } {
  const { bucket, dir } = place(options);
  if (bucket !== undefined) return { bucket, ...(dir ? { dir } : {}) };
  throw new UsageError('say where the build is: --bucket <name> (S3) or --dir <path> (a directory laid out like the bucket)');
}

/** A Garden Linux version as the versions index is named: <major>.<minor>[.<patch>] (naming.ts, spec §1). */
function version(value: string): string {
  if (!isVersion(value)) throw new UsageError(`"${value}" is not a Garden Linux version such as 1877.3 or 2150.0.0 (<major>.<minor>[.<patch>])`);
  return value;
}

function example(command: string): string {
  return `\nExample:\n  ${command}\n`;
}

export function buildProgram(): Command {
  // Usage errors are thrown, not exited with 1 (the status of a failed job): main() exits 2. Set before the
  // subcommands are added, which take it over. Commander's own messages (an unknown option, a missing argument)
  // are one line too, like every usage error: no help after them, but where to find it.
  const program = new Command('gl-oci-publish')
    .exitOverride()
    .configureOutput({ outputError: (message, write) => write(`gl-oci-publish: ${message.trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`) })
    .description(
      'Publish Garden Linux builds to an OCI registry: the container image, the Garden Linux artifact manifest and ' +
        'the version index. The same code as the Lambda; every option falls back to its environment variable.',
    )
    .addOption(new Option('-r, --registry <target>', 'target: <host>/<repo>, http://<host:port>/<repo> or oci-layout:<dir>').env('REGISTRY'))
    .addOption(new Option('--state-bucket <bucket>', 'bucket of the publisher records (default: the build bucket)').env('STATE_BUCKET'))
    .addOption(new Option('--state-prefix <prefix>', 'key prefix of the publisher records').env('STATE_PREFIX'))
    .addOption(new Option('--container-repositories <json>', 'container flavor to sub-repository map').env('CONTAINER_REPOSITORIES'))
    .addOption(new Option('-j, --concurrency <n>', 'blobs uploaded at once').env('BLOB_CONCURRENCY'))
    .addOption(new Option('--log-level <level>', 'debug, info, warn or error').env('LOG_LEVEL'))
    .addOption(new Option('--json', 'JSON log lines on stderr and JSON summaries on stdout, as the Lambda (the default when stderr is not a terminal)'))
    .addOption(new Option('-q, --quiet', 'print only errors and the final summary'))
    .addOption(
      new Option('-k, --signing-key <key>', 'sign artifact manifests (cosign .sig): file:<path to a PEM private key> or awskms:///<key id, ARN or alias>').env(
        'SIGNING_KEY',
      ),
    )
    .addOption(new Option('--sign-container-images', 'sign the container image manifests too'))
    .addOption(new Option('-a, --alias-tags <list>', 'aliases that follow the highest version, e.g. latest,{major},{version}.0').env('ALIAS_TAGS'))
    .addHelpText(
      'after',
      `
Credentials: REGISTRY_USERNAME / REGISTRY_PASSWORD. S3: the usual AWS variables; AWS_ENDPOINT_URL_S3 and
S3_FORCE_PATH_STYLE=true for S3-compatible stores. Signing: --signing-key (SIGNING_KEY) writes cosign's
sha256-<hex>.sig next to every artifact manifest; verify with
cosign verify --key <public key> --insecure-ignore-tlog=true <repo>@<digest>.

Examples:
  gl-oci-publish -r ghcr.io/gardenlinux/nightly publish container-amd64-1877.3-75df9f40 --bucket gardenlinux-github-releases
  gl-oci-publish -r oci-layout:./out publish metal_pxe-amd64-1877.3-75df9f40 --dir ./bucket-copy
  gl-oci-publish -r localhost:5000/gl -k file:./oci-sign.key publish kvm-amd64-1877.3-75df9f40 --dir ./bucket-copy
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux reindex 1877.3 --bucket gardenlinux-github-releases
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux tag 1877.3 1877 latest
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux retract metal_pxe-amd64-1877.3-75df9f40 --bucket gardenlinux-github-releases
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux -a latest,{major},{version}.0 verify 1877.3 --bucket gardenlinux-github-releases
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux -k awskms:///alias/gardenlinux-release-oci-sign sign-first 1877.3
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux copy 1877.3 --to oci-archive:gardenlinux-1877.3.tar
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux pull metal_pxe-amd64-1877.3-75df9f40 --to ./bucket-copy --public-key oci-sign.pub
  gl-oci-publish -r oci-layout:./out event saved-s3-event.json`,
    );

  program
    .command('publish')
    .description('publish one build, named by its base name or its metadata key (meta/singles/<base>)')
    .argument('<build>', 'base name (container-amd64-1877.3-75df9f40) or metadata key')
    .option('-b, --bucket <bucket>', 'read the build from this S3 bucket')
    .option('-d, --dir <path>', 'read the build from a local directory laid out like the bucket')
    .addHelpText('after', example('gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux publish container-amd64-1877.3-75df9f40 --bucket gardenlinux-github-releases'))
    .action(async (build: string, options: { bucket?: string; dir?: string }) => {
      const s = source(options);
      // A typo (a path, a missing part) would look up a key that is no build and end `skipped`: refused instead.
      if (!build.startsWith('meta/singles/') && !isBaseName(build)) {
        throw new Error(`"${build}" is not a base name such as container-amd64-1877.3-75df9f40 (<flavor>-<arch>-<version>-<commit>), nor a metadata key meta/singles/<base>`);
      }
      const key = build.startsWith('meta/singles/') ? build : metadataKey(build);
      await invoke(program.opts<Globals>(), { action: 'publish', bucket: s.bucket, key }, s.dir, {}, true, { check: (config) => bucketAllowed(s, config) });
    });

  program
    .command('reindex')
    .description('render the version index <version> again from the publisher records')
    .argument('<version>', 'Garden Linux version, e.g. 1877.3')
    .option('-b, --bucket <bucket>', 'bucket holding the records (default: STATE_BUCKET)')
    .option('-d, --dir <path>', 'directory holding the records (the --dir used to publish)')
    .addHelpText('after', example('gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux reindex 1877.3 --bucket gardenlinux-github-releases'))
    .action(async (v: string, options: { bucket?: string; dir?: string }) => {
      const where = recordsIn(options);
      const { bucket, dir } = where;
      await invoke(program.opts<Globals>(), { action: 'reindex', version: version(v), ...(bucket ? { bucket } : {}) }, dir, {}, true, { check: recordsCheck(where) });
    });

  program
    .command('tag')
    .description('put the exact bytes of the <version> index under more tags (release aliases)')
    .argument('<version>', 'Garden Linux version whose index is tagged')
    .argument('<tags...>', 'alias tags, e.g. 1877 latest')
    .option('--repository <path>', 'a configured container sub-repository instead of the main repository')
    .addHelpText('after', example('gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux tag 1877.3 1877 latest'))
    .action(async (v: string, tags: string[], options: { repository?: string }) => {
      version(v);
      for (const tag of tags) {
        try {
          checkTag(tag);
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
      }
      const { repository } = options;
      await invoke(program.opts<Globals>(), { action: 'tag', version: v, tags, ...(repository ? { repository } : {}) }, undefined, {}, true, {
        check: (config) => {
          if (repository !== undefined && !Object.values(config.containerRepositories).includes(repository)) {
            throw new UsageError(`--repository: "${repository}" is not one of the configured container repositories (CONTAINER_REPOSITORIES)`);
          }
        },
      });
    });

  program
    .command('retract')
    .description('take one build out of its version on purpose: its records go, its entries leave the version index')
    .argument('<base>', 'base name of the build, e.g. metal_pxe-amd64-1877.3-75df9f40')
    .option('-b, --bucket <bucket>', 'bucket holding the records (default: STATE_BUCKET)')
    .option('-d, --dir <path>', 'directory holding the records (the --dir used to publish)')
    .addHelpText('after', example('gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux retract metal_pxe-amd64-1877.3-75df9f40 --bucket gardenlinux-github-releases'))
    .action(async (base: string, options: { bucket?: string; dir?: string }) => {
      if (!isBaseName(base)) throw new UsageError(`"${base}" is not a base name such as metal_pxe-amd64-1877.3-75df9f40 (<flavor>-<arch>-<version>-<commit>)`);
      const where = recordsIn(options);
      const { bucket, dir } = where;
      await invoke(program.opts<Globals>(), { action: 'retract', base, ...(bucket ? { bucket } : {}) }, dir, {}, true, { check: recordsCheck(where) });
    });

  program
    .command('verify')
    .description('check a published version as its readers see it and report every problem; writes nothing')
    .argument('<version>', 'Garden Linux version, e.g. 1877.3')
    .option('-b, --bucket <bucket>', 'bucket holding the records (default: STATE_BUCKET)')
    .option('-d, --dir <path>', 'directory holding the records (the --dir used to publish)')
    .option('-p, --public-key <file>', 'check signatures against this PEM public key (default: the signing key, if any)')
    .option('--json', 'print the report as JSON (the default when standard output is not a terminal)')
    .addHelpText(
      'after',
      `\nExit status 0 when the release is complete, 1 when anything is wrong (or the check could not be made), 2 for a usage error.${example('gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux -a latest,{major},{version}.0 verify 1877.3 --bucket gardenlinux-github-releases')}`,
    )
    .action(async (v: string, options: { bucket?: string; dir?: string; publicKey?: string; json?: boolean }) => {
      const where = recordsIn(options);
      const { bucket, dir } = where;
      const globals = program.opts<Globals>();
      const keyFile: Record<string, string> = options.publicKey ? { VERIFY_PUBLIC_KEY: options.publicKey } : {};
      const result = await invoke(globals, { action: 'verify', version: version(v), ...(bucket ? { bucket } : {}) }, dir, keyFile, false, {
        check: recordsCheck(where),
        publicKeyFrom: '--public-key',
      });
      const report = result && 'jobs' in result ? result.jobs[0]?.verify : undefined;
      if (report === undefined) {
        // invoke() has set 1 (the check failed) or 2 (refused before it began)
        if (!process.exitCode) process.exitCode = 1;
        return;
      }
      process.stdout.write(options.json || globals.json || !process.stdout.isTTY ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
      if (!report.ok) process.exitCode = 1;
    });

  program
    .command('sign-first')
    .description(
      "after a key rotation: put the signing key's signature first (layer 0, the only one gardenlinux-update reads) in the .sig of " +
        'every artifact manifest of <version>, signing where it has none; the other signatures stay, in their order',
    )
    .argument('<version>', 'Garden Linux version, e.g. 1877.3')
    .addHelpText(
      'after',
      `\nNeeds --signing-key (SIGNING_KEY): the new key. Container images too with --sign-container-images (and
--container-repositories as deployed). Writes only the .sig tags whose layer 0 is not that key's; a second run
writes nothing. Ship the new public key in a release before this (docs/operations.md, "Rotate the signing key").${example(
        'gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux -k awskms:///alias/gardenlinux-release-oci-sign sign-first 1877.3',
      )}`,
    )
    .action(async (v: string) => {
      const globals = program.opts<Globals>();
      // Refused before anything is read: without the key there is nothing to put first.
      if (!globals.signingKey) {
        throw new UsageError('sign-first needs the key whose signature goes first: --signing-key file:<path to a PEM private key> or awskms:///<key> (or SIGNING_KEY)');
      }
      await invoke(globals, { action: 'sign-first', version: version(v) });
    });

  program
    .command('copy')
    .description(
      'copy a complete release to another registry, an OCI layout or an OCI archive: the version index, every manifest and ' +
        'blob it reaches, the artifact and container tags, the signatures, and with --aliases the aliases holding it',
    )
    .argument('<version>', 'Garden Linux version, e.g. 1877.3')
    .requiredOption('--to <location>', 'where it goes: <host>/<repo>, http://<host:port>/<repo>, oci-layout:<dir> or oci-archive:<file>')
    .option('--from <location>', 'where it is, in the same forms (default: -r, REGISTRY)')
    .option('--aliases', 'also the ALIAS_TAGS aliases (-a) that hold this version at the source, and their <arch>-<alias> tags')
    .addHelpText(
      'after',
      `\nDigests never change: manifests are copied byte for byte, children before parents. What the destination has
already is not copied again, so a copy that stopped is simply run again, and a second copy writes nothing.
Container sub-repositories: --container-repositories as deployed. Credentials (REGISTRY_USERNAME/PASSWORD) go
to REGISTRY's host only; without -r, REGISTRY is the registry among --to and --from (--to first).

Examples:
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux -a latest,{major},{version}.0 copy 1877.3 --aliases --to registry.example.net/gardenlinux
  gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux copy 1877.3 --to oci-archive:gardenlinux-1877.3.tar
  gl-oci-publish -r registry.internal/gardenlinux copy 1877.3 --from oci-archive:gardenlinux-1877.3.tar --to registry.internal/gardenlinux
`,
    )
    .action(async (v: string, options: { to: string; from?: string; aliases?: boolean }) => {
      version(v);
      const globals = program.opts<Globals>();
      const location = (value: string, name: string): CopyLocation => {
        try {
          return parseCopyLocation(value, name);
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
      };
      const to = location(options.to, '--to');
      const from = options.from === undefined ? undefined : location(options.from, '--from');
      const registry = globals.registry?.trim() || process.env.REGISTRY?.trim() || undefined;
      if (from === undefined && registry === undefined) {
        throw new UsageError('say where the release is: --from <location>, or -r <registry> (REGISTRY)');
      }
      // The configuration needs a REGISTRY: without one, the copy's registry (where the credentials go), else its layout.
      const extraEnv: Record<string, string> = {};
      if (registry === undefined) {
        const sides: Array<[CopyLocation, string]> = [[to, options.to], ...(from && options.from ? [[from, options.from] as [CopyLocation, string]] : [])];
        const pick = sides.find(([l]) => l.kind === 'registry') ?? sides.find(([l]) => l.kind === 'oci-layout');
        if (!pick) throw new UsageError('copying from one oci-archive to another needs -r <registry> (REGISTRY) for the configuration; or copy the file');
        extraEnv.REGISTRY = pick[1];
      }
      await invoke(globals, { action: 'copy', version: v, to: options.to, ...(options.from ? { from: options.from } : {}), ...(options.aliases ? { aliases: true } : {}) }, undefined, extraEnv, true, {
        check: (config) => {
          if (displayLocation(from ?? config.target) === displayLocation(to)) throw new UsageError('--to names the place the release is copied from; give another destination');
          if (options.aliases && config.aliasTemplates.length === 0) {
            throw new UsageError('--aliases copies the aliases of ALIAS_TAGS: give them with -a, --alias-tags (as the source has them)');
          }
        },
      });
    });

  program
    .command('pull')
    .description(
      'write a build back as it was uploaded, from the registry alone: <dir>/objects/<base>/<file> for every file its ' +
        'artifact manifest carries, and a metadata document <dir>/meta/singles/<base> made from the manifest',
    )
    .argument('<base>', 'base name of the build, e.g. metal_pxe-amd64-1877.3-75df9f40')
    .requiredOption('-t, --to <dir>', 'the directory to write to, laid out like the bucket (made when missing)')
    .option('--version <version>', "the version index to find the build in, when it is not the base name's version")
    .option('-p, --public-key <file>', "write nothing unless the artifact manifest's cosign signature verifies with this PEM public key")
    .option('-f, --force', 'replace files whose bytes differ from the build in the registry (identical files are kept, never downloaded again)')
    .option('--json', 'print the result as JSON (the default when standard output is not a terminal)')
    .addHelpText(
      'after',
      `\nFiles are checked against their digests while they are written, under temporary names, and get their names only when
every file is complete; a failure or a refused signature leaves the directory as it was. A file already there with
other bytes is refused (exit 1, nothing written) unless --force. Exit status 0 when the build is written, 1 when it
is not in the registry, a signature or a file is refused, or a download fails, 2 for a usage error.${example(
        'gl-oci-publish -r ghcr.io/gardenlinux/gardenlinux pull metal_pxe-amd64-1877.3-75df9f40 --to ./bucket-copy --public-key oci-sign.pub',
      )}`,
    )
    .action(async (base: string, options: { to: string; version?: string; publicKey?: string; force?: boolean; json?: boolean }) => {
      // Everything the command line can get wrong is refused here, before any request (exit 2).
      if (!isBaseName(base)) throw new UsageError(`"${base}" is not a base name such as metal_pxe-amd64-1877.3-75df9f40 (<flavor>-<arch>-<version>-<commit>)`);
      if (options.version !== undefined) version(options.version);
      if (statSync(options.to, { throwIfNoEntry: false })?.isDirectory() === false) throw new UsageError(`--to: ${options.to} is not a directory`);
      const globals = program.opts<Globals>();
      const config = loadConfig(environment(globals));
      const publicKey =
        options.publicKey === undefined
          ? undefined
          : await readPublicKey(options.publicKey).catch((err: unknown) => {
              throw new UsageError(`--public-key: ${(err as Error).message}`);
            });
      const display = createDisplay({ json: globals.json === true || options.json === true, quiet: globals.quiet === true, stdout: process.stdout, stderr: process.stderr, doneVerb: 'downloaded' });
      const logger = new Logger({ level: config.logLevel, sink: (line) => display.logSink(line) });
      try {
        const result = await pullBuild({
          target: createTargetSet(config.target, config, logger).main,
          base,
          ...(options.version !== undefined ? { version: options.version } : {}),
          to: options.to,
          ...(publicKey ? { publicKey } : {}),
          force: options.force === true,
          concurrency: config.blobConcurrency,
          logger,
          ...(display.progress ? { progress: display.progress } : {}),
        });
        display.stop();
        process.stdout.write(options.json || globals.json || !process.stdout.isTTY ? `${JSON.stringify(result, null, 2)}\n` : formatPull(result));
      } catch (err) {
        display.stop();
        // Not the command line's fault: the build, the registry, a signature, the output directory.
        process.stderr.write(`gl-oci-publish: ${describeError(err)}\n`);
        process.exitCode = 1;
      }
    });

  program
    .command('event')
    .description('feed a saved event (S3, EventBridge, SQS or a manual payload) to the handler')
    .argument('<file>', 'JSON file, or - for standard input')
    .option('-d, --dir <path>', 'serve every bucket the event names from this local directory')
    .addHelpText('after', example('gl-oci-publish -r oci-layout:./out event infra/events/s3-put.json --dir ./bucket-copy'))
    .action(async (file: string, options: { dir?: string }) => {
      const { dir } = place(options);
      let text: string;
      try {
        text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
      } catch (err) {
        throw new UsageError(`cannot read the event file ${file} (${String((err as { code?: unknown }).code ?? (err as Error).message)})`);
      }
      let event: unknown;
      try {
        event = JSON.parse(text);
      } catch {
        throw new UsageError(`${file} is not JSON`);
      }
      await invoke(program.opts<Globals>(), event, dir);
    });

  return program;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Exit status: 0 done, 1 a job failed (verify: the release has problems), 2 the command line or the configuration
 * was wrong: whatever an action throws is a usage error (UsageError, ConfigError, the InputError of a payload), as
 * are commander's own (it has printed them already, on one line). Help and version exit 0.
 */
export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    process.stderr.write(`gl-oci-publish: ${describeError(err)}\n`);
    process.exitCode = 2;
  }
}
