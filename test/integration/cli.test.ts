/** The CLI runs the handler's code on a local directory laid out like the bucket. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { OciLayoutTarget } from '../../functions/target/oci-layout-target';
import { Logger } from '../../functions/util/log';
import { s3Event } from '../../tools/local-s3';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';
import { cliInProcess } from '../helpers/cli-in-process';
import { clientSandbox, type ClientSandbox } from '../helpers/clients';
import { parse, sha256 } from '../helpers/expectations';
import { installCli, type InstalledCli } from '../helpers/installed-cli';

const exec = promisify(execFile);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}


/** The CLI as installed from the package (installed-cli.ts), set up before the tests; the checkout's own bin once. */
let installed: InstalledCli | undefined;

async function cli(args: string[], env: Record<string, string> = {}, bin = installed?.bin ?? 'bin/gl-oci-publish.mjs'): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, ...args], {
      env: { ...process.env, REGISTRY: '', ...env },
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('gl-oci-publish (CLI)', () => {
  let dir: string;
  let bucketDir: string;
  let layout: string;
  let clients: ClientSandbox;
  const builds = [sampleBuild({ flavor: 'container', arch: 'amd64' }), sampleBuild({ flavor: 'kvm-gardener_prod', arch: 'arm64' })];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-cli-'));
    bucketDir = join(dir, 'bucket');
    layout = join(dir, 'layout');
    for (const b of builds) await writeBuildDir(bucketDir, b);
    [clients, installed] = await Promise.all([clientSandbox(), installCli()]);
  });
  after(async () => {
    await clients?.cleanup();
    if (installed) await rm(installed.dir, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('documents its commands in --help, from the checkout (TypeScript through tsx) and as installed (the bundle)', async () => {
    const checkout = await cli(['--help'], {}, 'bin/gl-oci-publish.mjs');
    assert.equal(checkout.code, 0, checkout.stderr);
    const r = await cli(['--help']);
    assert.equal(r.stdout, checkout.stdout);
    assert.equal(r.code, 0);
    for (const word of ['publish', 'reindex', 'tag', 'event', '--registry', 'REGISTRY']) assert.ok(r.stdout.includes(word), word);
  });

  it('publishes a build from a local directory and prints the summary as JSON', async () => {
    const r = await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '', '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    const out = parse(r.stdout) as { jobs: Array<{ outcome: string; base: string; container?: { tag: string } }> };
    assert.equal(out.jobs[0]?.outcome, 'published');
    assert.equal(out.jobs[0]?.container?.tag, 'amd64-1877.3');
    // Logs are JSON lines on stderr, so stdout stays machine-readable.
    assert.ok(r.stderr.split('\n').filter(Boolean).every((l) => JSON.parse(l) !== undefined));
  });

  it('publishes to two destinations at once, and reports each (issue 20)', async () => {
    const [one, two] = [join(dir, 'first'), join(dir, 'second')];
    const r = await cli(['-r', `oci-layout:${one},oci-layout:${two}`, 'publish', builds[1]?.base ?? '', '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    const out = parse(r.stdout) as { jobs: Array<{ outcome: string; targets?: Array<{ target: string; outcome: string }> }> };
    assert.equal(out.jobs[0]?.outcome, 'published');
    assert.deepEqual(out.jobs[0]?.targets?.map((t) => [t.target, t.outcome]), [
      [`oci-layout:${one}`, 'published'],
      [`oci-layout:${two}`, 'published'],
    ]);
    for (const layoutDir of [one, two]) {
      const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
      assert.ok(index.manifests.some((m) => m.annotations?.['org.opencontainers.image.ref.name'] === '1877.3'), `${layoutDir} has the version index`);
    }
  });

  it('feeds a saved S3 event to the handler', async () => {
    const file = join(dir, 'event.json');
    await writeFile(file, JSON.stringify(s3Event('some-bucket', `meta/singles/${builds[1]?.base}`)));
    const r = await cli(['-r', `oci-layout:${layout}`, 'event', file, '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0]?.outcome, 'published');
    const index = parse(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`])) as { manifests: unknown[] };
    assert.equal(index.manifests.length, 3, 'one container entry and two Garden Linux entries');
  });

  it('tags release aliases with the exact bytes of the version index', async () => {
    const r = await cli(['-r', `oci-layout:${layout}`, 'tag', '1877.3', '1877', 'latest']);
    assert.equal(r.code, 0, r.stderr);
    const source = sha256(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`]));
    for (const tag of ['1877', 'latest']) assert.equal(sha256(await clients.skopeo(['inspect', '--raw', `oci:${layout}:${tag}`])), source);
  });

  it('restores every entry with reindex after another tool replaced the index', async () => {
    const target = new OciLayoutTarget(layout, 'test', new Logger({ sink: () => undefined }));
    const full = await target.getManifest('1877.3');
    assert.ok(full);
    const entries = (parse(full.bytes) as { manifests: Array<{ annotations?: unknown }> }).manifests;
    // What `podman manifest push` leaves: only the container entry.
    const podmanIndex = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries.filter((e) => !e.annotations) };
    await target.putManifest(Buffer.from(JSON.stringify(podmanIndex)), 'application/vnd.oci.image.index.v1+json', '1877.3');

    const r = await cli(['-r', `oci-layout:${layout}`, 'reindex', '1877.3', '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0]?.outcome, 'published');
    const restored = await target.getManifest('1877.3');
    assert.equal(restored?.digest, full.digest, 'the same index as before, byte for byte');
  });

  it('retracts a build, and publishing it by hand restores it', async () => {
    const kvm = builds[1]?.base ?? '';
    const r = await cli(['-r', `oci-layout:${layout}`, 'retract', kvm, '--dir', bucketDir]);
    assert.equal(r.code, 0, r.stderr);
    const job = (parse(r.stdout) as { jobs: Array<{ outcome: string; retracted?: { repositories: string[] } }> }).jobs[0];
    assert.equal(job?.outcome, 'published');
    assert.deepEqual(job?.retracted?.repositories, [`oci-layout:${layout}`]);
    const cnames = async () =>
      ((parse(await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3`])) as { manifests: Array<{ annotations?: { cname?: string } }> }).manifests)
        .map((m) => m.annotations?.cname)
        .filter(Boolean);
    assert.deepEqual(await cnames(), [builds[0]?.base]);
    // Its artifact manifest stays where it was: retraction takes it out of the version, deletes nothing.
    await clients.skopeo(['inspect', '--raw', `oci:${layout}:1877.3-${kvm}-arm64`]);

    const back = await cli(['-r', `oci-layout:${layout}`, 'publish', kvm, '--dir', bucketDir]);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual((await cnames()).sort(), [builds[0]?.base, kvm].sort());
  });

  it('says what is wrong when the source is missing or the configuration is bad', async () => {
    const noSource = await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '']);
    assert.notEqual(noSource.code, 0);
    assert.match(noSource.stderr, /--bucket <name> \(S3\) or --dir <path>/);

    const badRegistry = await cli(['-r', 'ftp://example.com/x', 'publish', builds[0]?.base ?? '', '--dir', bucketDir]);
    assert.equal(badRegistry.code, 2, 'a bad configuration is a usage error (issue 19)');
    assert.equal(badRegistry.stderr, 'gl-oci-publish: invalid configuration: REGISTRY has a scheme other than http:// and https://; expected "oci-layout:<dir>", "<host>[:port]/<repository>" (HTTPS), or "http://<host>[:port]/<repository>" (plain HTTP)\n');

    const notABuild = await cli(['-r', `oci-layout:${layout}`, 'publish', 'not-a-base-name', '--dir', bucketDir]);
    assert.equal(notABuild.code, 2, 'a base that is not a base is a usage error');
    assert.match(notABuild.stderr, /"not-a-base-name" is not a base name/);
    assert.equal(notABuild.stdout, '', 'no job ran');
  });

  it('exits 2 for every usage error, commander\'s own included, and 0 for help (issue 10)', async () => {
    // A typo: a path where the base name goes. Before, this looked up meta/singles/./… and ended `skipped`, exit 0.
    const typo = await cli(['-r', `oci-layout:${layout}`, 'publish', `./${builds[0]?.base}`, '--dir', bucketDir]);
    assert.equal(typo.code, 2, typo.stdout + typo.stderr);
    assert.match(typo.stderr, /is not a base name/);
    const unknownOption = await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '', '--bukket', 'x']);
    assert.equal(unknownOption.code, 2);
    assert.match(unknownOption.stderr, /unknown option '--bukket'/);
    const missingArgument = await cli(['-r', `oci-layout:${layout}`, 'tag', '1877.3']);
    assert.equal(missingArgument.code, 2);
    assert.match(missingArgument.stderr, /missing required argument 'tags'/);
    const unknownCommand = await cli(['publsh', builds[0]?.base ?? '']);
    assert.equal(unknownCommand.code, 2);
    assert.equal((await cli(['publish', '--help'])).code, 0);
  });

  it('exits 2 with one line for every usage error of every command, before any job runs (issue 19)', async () => {
    const L = ['-r', `oci-layout:${layout}`];
    const base = builds[0]?.base ?? '';
    const notPem = join(dir, 'not-a-key.pub');
    await writeFile(notPem, 'not a key\n');
    const ecPub = join(dir, 'ec.pub');
    await writeFile(ecPub, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'pem', type: 'spki' }) as string);
    const notJson = join(dir, 'not-json.txt');
    await writeFile(notJson, 'Records: nothing\n');
    const unknownEvent = join(dir, 'unknown-event.json');
    await writeFile(unknownEvent, JSON.stringify({ detail: 'nothing' }));
    const badPayload = join(dir, 'bad-payload.json');
    await writeFile(badPayload, JSON.stringify({ action: 'reindex', version: '1877' }));
    const cases: Array<{ what: string; args: string[]; env?: Record<string, string>; says: RegExp }> = [
      // arguments
      { what: 'retract of a name that is no base name', args: [...L, 'retract', 'notabase', '--dir', bucketDir], says: /"notabase" is not a base name/ },
      { what: 'reindex of a version without a minor part', args: [...L, 'reindex', '1877', '--dir', bucketDir], says: /"1877" is not a Garden Linux version such as 1877\.3 or 2150\.0\.0/ },
      { what: 'verify of a version without a minor part', args: [...L, 'verify', '1877', '--dir', bucketDir], says: /"1877" is not a Garden Linux version/ },
      { what: 'tag of a version without a minor part', args: [...L, 'tag', '1877', 'latest'], says: /"1877" is not a Garden Linux version/ },
      { what: 'tag with a tag the registry cannot take', args: [...L, 'tag', '1877.3', 'latest', 'a:b'], says: /"a:b" is not a valid tag/ },
      { what: 'tag in a repository that is not configured', args: [...L, 'tag', '1877.3', 'latest', '--repository', 'fips'], says: /"fips" is not one of the configured container repositories/ },
      // where the build or the records are
      { what: 'publish with --bucket and --dir', args: [...L, 'publish', base, '--bucket', 'gardenlinux-github-releases', '--dir', bucketDir], says: /either --bucket or --dir, not both/ },
      { what: 'reindex with --bucket and --dir', args: [...L, 'reindex', '1877.3', '--bucket', 'gardenlinux-github-releases', '--dir', bucketDir], says: /either --bucket or --dir, not both/ },
      { what: 'retract with --bucket and --dir', args: [...L, 'retract', base, '--bucket', 'gardenlinux-github-releases', '--dir', bucketDir], says: /either --bucket or --dir, not both/ },
      { what: 'verify with --bucket and --dir', args: [...L, 'verify', '1877.3', '--bucket', 'gardenlinux-github-releases', '--dir', bucketDir], says: /either --bucket or --dir, not both/ },
      { what: 'publish without --bucket or --dir', args: [...L, 'publish', base], says: /--bucket <name> \(S3\) or --dir <path>/ },
      { what: 'reindex without --bucket, --dir or STATE_BUCKET', args: [...L, 'reindex', '1877.3'], says: /--bucket <name>, --dir <path> or STATE_BUCKET/ },
      { what: 'retract without --bucket, --dir or STATE_BUCKET', args: [...L, 'retract', base], says: /--bucket <name>, --dir <path> or STATE_BUCKET/ },
      { what: 'verify without --bucket, --dir or STATE_BUCKET', args: [...L, 'verify', '1877.3'], says: /--bucket <name>, --dir <path> or STATE_BUCKET/ },
      { what: 'publish from a bucket that is no bucket name', args: [...L, 'publish', base, '--bucket', 'Not_A_Bucket'], says: /--bucket: "Not_A_Bucket" is not an S3 bucket name/ },
      { what: 'publish from a bucket outside ALLOWED_BUCKETS', args: [...L, 'publish', base, '--bucket', 'other-bucket'], env: { ALLOWED_BUCKETS: 'gardenlinux-github-releases' }, says: /"other-bucket" is not one this publisher reads \(ALLOWED_BUCKETS/ },
      { what: 'publish from a directory that does not exist', args: [...L, 'publish', base, '--dir', join(dir, 'no-such-dir')], says: /--dir: .*no-such-dir is not a directory/ },
      { what: 'reindex in a directory that does not exist', args: [...L, 'reindex', '1877.3', '--dir', join(dir, 'no-such-dir')], says: /--dir: .*no-such-dir is not a directory/ },
      // keys
      { what: 'verify --public-key of a missing file', args: [...L, 'verify', '1877.3', '--dir', bucketDir, '--public-key', join(dir, 'missing.pub')], says: /--public-key: cannot read the public key .*missing\.pub/ },
      { what: 'verify --public-key of a file that is no PEM key', args: [...L, 'verify', '1877.3', '--dir', bucketDir, '--public-key', notPem], says: /--public-key: .*not-a-key\.pub is not a PEM public key/ },
      { what: 'verify --public-key of an EC key', args: [...L, 'verify', '1877.3', '--dir', bucketDir, '--public-key', ecPub], says: /--public-key: .*ec\.pub is a ec key; gardenlinux-update verifies only RSA/ },
      { what: 'a signing key file that does not exist', args: [...L, '-k', `file:${join(dir, 'missing.pem')}`, 'publish', base, '--dir', bucketDir], says: /SIGNING_KEY: cannot read the signing key .*missing\.pem/ },
      // events
      { what: 'event of a missing file', args: [...L, 'event', join(dir, 'missing.json'), '--dir', bucketDir], says: /cannot read the event file .*missing\.json \(ENOENT\)/ },
      { what: 'event of a file that is not JSON', args: [...L, 'event', notJson, '--dir', bucketDir], says: /not-json\.txt is not JSON/ },
      { what: 'event of JSON that is no event', args: [...L, 'event', unknownEvent, '--dir', bucketDir], says: /unrecognised event; accepted are/ },
      { what: 'event of a manual payload with a bad version', args: [...L, 'event', badPayload, '--dir', bucketDir], says: /invalid reindex payload: version: expected a Garden Linux version/ },
      // configuration
      { what: 'no REGISTRY', args: ['publish', base, '--dir', bucketDir], says: /invalid configuration: REGISTRY is required/ },
      { what: 'a REGISTRY of another scheme', args: ['-r', 'ftp://example.com/x', 'publish', base, '--dir', bucketDir], says: /invalid configuration: REGISTRY has a scheme other than/ },
      { what: 'a bad --concurrency', args: [...L, '-j', '0', 'reindex', '1877.3', '--dir', bucketDir], says: /invalid configuration: BLOB_CONCURRENCY must be at least 1/ },
      { what: 'a bad variable', args: [...L, 'verify', '1877.3', '--dir', bucketDir], env: { MD5_CHECK: 'sometimes' }, says: /invalid configuration: MD5_CHECK must be etag, stream or off/ },
      // commander's own
      { what: 'an unknown option', args: [...L, 'publish', base, '--bukket', 'x'], says: /unknown option '--bukket'/ },
      { what: 'a missing argument', args: [...L, 'tag', '1877.3'], says: /missing required argument 'tags'/ },
      { what: 'an unknown command', args: [...L, 'publsh', base], says: /unknown command 'publsh'/ },
      { what: 'a missing option argument', args: [...L, 'verify', '1877.3', '--public-key'], says: /option '-p, --public-key <file>' argument missing/ },
    ];
    const wrong: string[] = [];
    // In this process, one after the other (they share process.env and the output streams); a few of them again as
    // processes of their own below, for the exit status the shell sees.
    for (const c of cases) {
      const r = await cliInProcess(c.args, c.env);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      const problems = [
        ...(r.code === 2 ? [] : [`exit ${r.code}`]),
        ...(lines.length === 1 ? [] : [`${lines.length} lines on stderr`]),
        ...(c.says.test(r.stderr) ? [] : [`not ${String(c.says)}`]),
        ...(/^\s+at .+[(:]\d+/m.test(r.stderr) ? ['a stack trace'] : []),
        ...(r.stdout === '' ? [] : ['output on stdout (a job ran)']),
      ];
      if (problems.length > 0) wrong.push(`${c.what}: ${problems.join(', ')}; stderr: ${r.stderr.slice(0, 240).replaceAll('\n', '⏎')}`);
    }
    assert.deepEqual(wrong, []);
    // One case of each kind as a process of its own: the status the shell sees is main()'s.
    for (const what of ['verify of a version without a minor part', 'verify --public-key of a missing file', 'no REGISTRY', 'an unknown option']) {
      const c = cases.find((x) => x.what === what);
      assert.ok(c, what);
      const r = await cli(c.args, c.env);
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, `${what}: one line`);
      assert.match(r.stderr, c.says, what);
    }
  });

  it('prints no part of a private key given as SIGNING_KEY or -k (issue 19)', async () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const body = pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
    const runs = {
      'SIGNING_KEY, JSON logs': await cli(['-r', `oci-layout:${layout}`, 'publish', builds[0]?.base ?? '', '--dir', bucketDir], { SIGNING_KEY: pem }),
      '-k': await cli(['-r', `oci-layout:${layout}`, '-k', pem, 'reindex', '1877.3', '--dir', bucketDir]),
    };
    for (const [how, r] of Object.entries(runs)) {
      const out = r.stderr + r.stdout;
      assert.doesNotMatch(out, /-----BEGIN/, how);
      for (let i = 0; i + 12 <= body.length; i++) assert.ok(!out.includes(body.slice(i, i + 12)), `${how}: holds "${body.slice(i, i + 12)}" of the key`);
      assert.equal(r.code, 2, `${how}: a usage error`);
      assert.deepEqual(r.stderr.split('\n').filter(Boolean).length, 1, `${how}: one line`);
      assert.match(r.stderr, /^gl-oci-publish: invalid configuration: SIGNING_KEY .*PEM.*file:<path to a PEM private key>/, how);
    }
  });

  it('publishes a folder whose artifacts are symbolic links, and refuses links that leave the folder (issue 10)', async () => {
    const b = sampleBuild({ flavor: 'openstack-gardener_prod', arch: 'amd64', commit: '5e11e1c0' });
    const linked = join(dir, 'linked');
    const out = join(linked, 'build-output');
    await writeBuildDir(out, b);
    // The bucket layout holds links to the build output, as a CI job that assembles it without copying does.
    await mkdir(join(linked, 'objects', b.base), { recursive: true });
    await mkdir(join(linked, 'meta', 'singles'), { recursive: true });
    for (const f of b.files) await symlink(join(out, 'objects', b.base, f.name), join(linked, 'objects', b.base, f.name));
    await symlink(join('..', '..', 'build-output', 'meta', 'singles', b.base), join(linked, 'meta', 'singles', b.base));
    const r = await cli(['-r', `oci-layout:${join(dir, 'linked-layout')}`, 'publish', b.base, '--dir', linked]);
    assert.equal(r.code, 0, r.stderr);
    const job = (parse(r.stdout) as { jobs: Array<{ outcome: string }> }).jobs[0];
    assert.equal(job?.outcome, 'published');
    const manifest = parse(await clients.skopeo(['inspect', '--raw', `oci:${join(dir, 'linked-layout')}:1877.3-${b.base}-amd64`])) as { layers: unknown[] };
    assert.equal(manifest.layers.length, b.files.length);

    // A link that leaves the folder: the job fails and names it.
    const outside = await mkdtemp(join(tmpdir(), 'gl-outside-'));
    try {
      // A linked directory, objects/<base> -> a copy of the build outside (issue 19): refused as a file link is,
      // before anything is published.
      const objects = join(linked, 'objects', b.base);
      await mkdir(join(outside, b.base));
      for (const f of b.files) await writeFile(join(outside, b.base, f.name), f.data);
      await rm(objects, { recursive: true });
      await symlink(join(outside, b.base), objects);
      const dirLayout = join(dir, 'linked-dir-layout');
      const dirRefused = await cli(['-r', `oci-layout:${dirLayout}`, 'publish', b.base, '--dir', linked]);
      assert.equal(dirRefused.code, 1, dirRefused.stderr);
      assert.ok(dirRefused.stdout.includes(`${objects} leads outside ${linked}`), dirRefused.stdout);
      const tags = await readFile(join(dirLayout, 'index.json'), 'utf8').then(
        (t) => (JSON.parse(t) as { manifests: Array<{ annotations?: Record<string, string> }> }).manifests.flatMap((m) => m.annotations?.['org.opencontainers.image.ref.name'] ?? []),
        (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)),
      );
      assert.deepEqual(tags, []);
      // objects/<base> a folder of links into the build output again, as above.
      await rm(objects);
      await mkdir(objects);
      for (const f of b.files) await symlink(join(out, 'objects', b.base, f.name), join(objects, f.name));

      const victim = b.files[0]?.name ?? '';
      await writeFile(join(outside, victim), b.files[0]?.data ?? Buffer.alloc(0));
      await rm(join(linked, 'objects', b.base, victim));
      await symlink(join(outside, victim), join(linked, 'objects', b.base, victim));
      const refused = await cli(['-r', `oci-layout:${join(dir, 'linked-layout')}`, 'publish', b.base, '--dir', linked]);
      assert.equal(refused.code, 1);
      assert.ok(refused.stdout.includes(`${join(objects, victim)} leads outside ${linked}`), refused.stdout);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});
