/**
 * `npm run bench [-- --size 4GiB] [--layer 200MiB] [--repeat 3] [--concurrency N] [--readers N] [--sweep] [--targets] [--cold-start [--bundle DIR]] [--no-write]`: how fast
 * the publisher moves bytes, against baselines measured in the same run on the same servers (in-process S3,
 * loopback docker-registry).
 *
 * 1. generated builds: one with a large raw image (--size) and the usual small files, and a container build
 *    whose image has one large layer (--layer);
 * 2. baseline: the simplest pipeline moving the same bytes (each S3 object, and each image blob by its byte
 *    range, streamed into one upload with a digest known beforehand), in one process, 4 at a time;
 * 3. the publisher's first publication of both builds from S3: the function's bundle (dist/publish/) handling each
 *    build's S3 event in a process of its own, both at once, as two Lambda invocations run; wall time, throughput,
 *    the ratio to the baseline, peak RSS and what the heap and buffers held at their peaks;
 * 4. a re-run of both builds (last round only): time, bytes uploaded, S3 bytes read, requests made;
 * 5. the container part from a local directory (the CLI), against skopeo copying the same .oci archive, taking
 *    turns at going first;
 * 6. the function's cold start (tools/bench-cold-start.ts); with --cold-start, only this.
 *
 * With --sweep, instead of 3–6: the first publication for each BLOB_CONCURRENCY × S3_READERS in a grid, each
 * against the baseline of its round, to see which defaults are best.
 *
 * With --targets, instead of 2–6: the first publication of both builds to 1, 2 and 3 registries at once (REGISTRY
 * as a list): the bytes read from S3 (counted by a proxy in front of it), the time against the slowest of the three
 * registries alone (each measured on its own in the same round), and the peak RSS against one registry.
 *
 * Every measurement gets a fresh registry (its storage on /dev/shm when there is one, so that disk writeback does not
 * throttle a measurement at random), so no run finds another's blobs. Results are printed and written to
 * docs/benchmarks.md (the section for this size), with the machine they ran on.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { startFaultProxy } from '../test/helpers/fault-proxy';
import { startRegistry, type TestRegistry } from '../test/helpers/registry';
import { s3Event, startLocalS3, type LocalS3 } from './local-s3';
import { coldStartTable, measureColdStart } from './bench-cold-start';
import { functionNodeOptions, lambdaNodeArgs } from './lambda-runtime';
import { metadataYaml, sampleBuild, type SampleBuild } from './sample-builds';
import { Header } from 'tar';

const run = promisify(execFile);
const BUCKET = 'gardenlinux-github-releases';
const MiB = 1024 * 1024;

function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(v.trim());
  if (!m) throw new Error(`not a size: ${v} (e.g. 1GiB, 200MiB)`);
  const unit = { b: 1, kib: 1024, mib: MiB, gib: 1024 * MiB }[(m[2] ?? 'B').toLowerCase() as 'b'] ?? 1;
  return Math.round(Number(m[1]) * unit);
}

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : fallback;
}

const human = (bytes: number) => (bytes >= 1024 * MiB ? `${(bytes / 1024 / MiB).toFixed(2)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`);
const rate = (bytes: number, ms: number) => `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`;

/** A ustar header for a regular file (large files are written around it, not through tar-writer's buffers). */
function tarHeader(path: string, size: number): Buffer {
  const b = Buffer.alloc(512);
  new Header({ path, mode: 0o644, size, mtime: new Date(0), type: 'File', uid: 0, gid: 0 }).encode(b, 0);
  return b;
}

async function drain(w: NodeJS.WritableStream): Promise<void> {
  await new Promise<void>((resolve) => w.once('drain', () => resolve()));
}

interface FileOnDisk {
  name: string;
  path: string;
  size: number;
  digest: string;
  md5: string;
}

/** Writes `size` random bytes (1 MiB at a time), hashing them on the way. */
async function randomFile(path: string, size: number): Promise<{ size: number; digest: string; md5: string }> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  const out = createWriteStream(path);
  const chunk = Buffer.allocUnsafe(MiB);
  for (let left = size; left > 0; left -= MiB) {
    const piece = left >= MiB ? randomFillSync(chunk) : randomFillSync(Buffer.allocUnsafe(left));
    sha.update(piece);
    md5.update(piece);
    if (!out.write(Buffer.from(piece))) await drain(out);
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { size, digest: `sha256:${sha.digest('hex')}`, md5: md5.digest('hex') };
}

async function hashFile(path: string): Promise<{ size: number; digest: string; md5: string }> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  for await (const c of createReadStream(path, { highWaterMark: MiB })) {
    sha.update(c as Buffer);
    md5.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { size, digest: `sha256:${sha.digest('hex')}`, md5: md5.digest('hex') };
}

/** A GL-style .oci archive whose image has one gzip layer over `layerSize` random bytes, written to disk. */
async function containerArchive(dir: string, path: string, layerSize: number) {
  // The layer: a tar of one random file, gzipped (level 1: random data does not compress anyway).
  const payload = join(dir, 'payload.bin');
  await randomFile(payload, layerSize);
  const tarPath = join(dir, 'rootfs.tar');
  const tarOut = createWriteStream(tarPath);
  tarOut.write(tarHeader('usr/lib/payload.bin', layerSize));
  for await (const c of createReadStream(payload, { highWaterMark: MiB })) if (!tarOut.write(c)) await drain(tarOut);
  tarOut.write(Buffer.alloc((512 - (layerSize % 512)) % 512 + 1024));
  await new Promise<void>((r) => tarOut.end(r));
  const rootfs = await hashFile(tarPath);
  const layerPath = join(dir, 'layer.tar.gz');
  await new Promise<void>((resolve, reject) => {
    createReadStream(tarPath).pipe(createGzip({ level: 1 })).pipe(createWriteStream(layerPath)).on('finish', resolve).on('error', reject);
  });
  const layer = await hashFile(layerPath);
  await rm(payload);
  await rm(tarPath);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [rootfs.digest] } }));
  const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size }],
    }),
  );
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'container-amd64' } }] }));
  // Blobs first, as image.oci writes them: config, layer, manifest; then index.json and oci-layout.
  const out = createWriteStream(path);
  const blockFor = tarHeader;
  const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
  let offset = 0;
  const put = async (b: Buffer) => {
    offset += b.length;
    if (!out.write(b)) await drain(out);
  };
  await put(blockFor(`blobs/sha256/${sha(config).slice(7)}`, config.length));
  const configOffset = offset;
  await put(config);
  await put(pad(config.length));
  await put(blockFor(`blobs/sha256/${layer.digest.slice(7)}`, layer.size));
  const layerOffset = offset;
  for await (const c of createReadStream(layerPath, { highWaterMark: MiB })) await put(c as Buffer);
  await put(pad(layer.size));
  for (const [name, data] of [[`blobs/sha256/${sha(manifest).slice(7)}`, manifest], ['index.json', index], ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')]] as const) {
    await put(blockFor(name, data.length));
    await put(data);
    await put(pad(data.length));
  }
  await put(Buffer.alloc(1024));
  await new Promise<void>((r) => out.end(r));
  await rm(layerPath);
  return {
    imageBlobs: [
      { digest: sha(config), size: config.length, start: configOffset },
      { digest: layer.digest, size: layer.size, start: layerOffset },
    ],
    manifestDigest: sha(manifest),
  };
}

/** A build's small files from sampleBuild, with one file replaced by a large one written to disk. */
async function writeBuild(root: string, b: SampleBuild, large: (dir: string, path: string) => Promise<void>, largeName: string): Promise<FileOnDisk[]> {
  const dir = join(root, 'objects', b.base);
  await mkdir(dir, { recursive: true });
  await mkdir(join(root, 'meta', 'singles'), { recursive: true });
  const files: FileOnDisk[] = [];
  for (const f of b.files) {
    const path = join(dir, f.name);
    if (f.name === largeName) await large(dir, path);
    else await writeFile(path, f.data);
    files.push({ name: f.name, path, ...(await hashFile(path)) });
  }
  await writeFile(join(root, 'meta', 'singles', b.base), metadataYaml({ flavor: b.flavor, arch: b.arch, commit: b.commit }, b.base, b.platform, b.features, files, b.version, b.commit));
  return files;
}

interface ChildResult {
  ms: number;
  maxRssKiB: number;
  cpuMs?: number;
  /** peaks of the JavaScript heap and of buffers, sampled every 20 ms */
  heapKiB?: number;
  buffersKiB?: number;
  wallMs: number;
  stdout: string;
}

function child(args: string[], env: Record<string, string>): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c));
    p.stderr.on('data', (c: Buffer) => (stderr += c));
    p.on('close', (code) => {
      const wallMs = performance.now() - started;
      const line = stderr.split('\n').find((l) => l.startsWith('BENCH '));
      if (code !== 0 || !line) return reject(new Error(`${args.join(' ')} exited with ${code}:\n${stderr.slice(-3000)}`));
      resolve({ ...(JSON.parse(line.slice(6)) as { ms: number; maxRssKiB: number; cpuMs?: number; heapKiB?: number; buffersKiB?: number }), wallMs, stdout });
    });
  });
}

interface Summary {
  jobs: Array<{ outcome: string; bytesUploaded: number; bytesRead: number; blobsUploaded: number; blobsSkipped: number; durationMs: number; error?: string }>;
}

async function main(): Promise<void> {
  const size = parseSize(option('size', '1GiB'));
  const layerSize = parseSize(option('layer', '200MiB'));
  const concurrency = option('concurrency', '');
  const readers = option('readers', '');
  const sweep = process.argv.includes('--sweep');
  const targets = process.argv.includes('--targets');
  const write = !process.argv.includes('--no-write');
  if (process.argv.includes('--cold-start')) return coldStart(write);
  const work = await mkdtemp(join(tmpdir(), 'gl-bench-'));
  const registries: TestRegistry[] = [];
  let s3: LocalS3 | undefined;
  // Registry storage in memory where there is a tmpfs: the kernel's writeback of gigabytes to disk would otherwise
  // throttle whichever measurement it happens to overlap, for seconds.
  const shm = await stat('/dev/shm').then((s) => s.isDirectory(), () => false);
  const freshRegistry = async () => {
    const r = await startRegistry(shm ? { parentDir: '/dev/shm' } : {});
    registries.push(r);
    return r;
  };
  const stopRegistry = async (r: TestRegistry) => {
    await r.stop();
    registries.splice(registries.indexOf(r), 1);
  };
  try {
    console.log(`generating builds: a ${human(size)} raw image, a container with a ${human(layerSize)} layer ...`);
    const bucketDir = join(work, 'bucket');
    const raw = sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64', commit: 'be4c0001' });
    const container = sampleBuild({ flavor: 'container', arch: 'amd64', commit: 'be4c0002' });
    const rawFiles = await writeBuild(bucketDir, raw, async (_d, p) => void (await randomFile(p, size)), `${raw.base}.raw`);
    let written: Awaited<ReturnType<typeof containerArchive>> | undefined;
    const containerFiles = await writeBuild(bucketDir, container, async (d, p) => void (written = await containerArchive(d, p, layerSize)), `${container.base}.oci`);
    if (!written) throw new Error('no container archive');
    const image = written;
    const archive = containerFiles.find((f) => f.name.endsWith('.oci')) as FileOnDisk;

    s3 = await startLocalS3([BUCKET]);
    for (const [b, files] of [[raw, rawFiles], [container, containerFiles]] as const) {
      for (const f of files) {
        await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `objects/${b.base}/${f.name}`, Body: createReadStream(f.path), ContentLength: f.size }));
      }
      await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `meta/singles/${b.base}`, Body: await readFile(join(bucketDir, 'meta', 'singles', b.base)) }));
    }
    // What setup wrote must reach the disk before anything is measured.
    await run('sync');
    const fileBytes = [...rawFiles, ...containerFiles].reduce((n, f) => n + f.size, 0);
    const imageBytes = image.imageBlobs.reduce((n, b) => n + b.size, 0);
    const movedBytes = fileBytes + imageBytes;

    const repeat = Math.max(1, Number(option('repeat', '3')));
    const baselineBlobs = [
      ...[[raw, rawFiles], [container, containerFiles]].flatMap(([b, files]) => (files as FileOnDisk[]).map((f) => ({ key: `objects/${(b as SampleBuild).base}/${f.name}`, digest: f.digest, size: f.size }))),
      ...image.imageBlobs.map((b) => ({ key: `objects/${container.base}/${archive.name}`, digest: b.digest, size: b.size, start: b.start })),
    ];
    const publishBoth = async (e: Record<string, string>) => {
      const started = performance.now();
      const results = await Promise.all(
        [raw, container].map(async (b) => {
          const file = join(work, `event-${b.base}.json`);
          await writeFile(file, JSON.stringify(s3Event(BUCKET, `meta/singles/${b.base}`)));
          // The function's bundle, as a Lambda invocation runs it: with the runtime's node arguments.
          return child([...lambdaArgs, 'tools/bench-child.mjs', 'handler', file], e);
        }),
      );
      const wallMs = performance.now() - started;
      // The summary is the last line; log lines (warnings) come before it.
      const jobs = results.flatMap((r) => (JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Summary).jobs);
      for (const j of jobs) if (j.outcome === 'failed') throw new Error(`publication failed: ${j.error}`);
      // Measured inside the processes, like the baseline: process start and module loading (a Lambda cold start)
      // are not part of moving the bytes. The two run at once; the later one ends the publication.
      const ms = Math.max(...results.map((r) => r.ms));
      // The process with the largest peak, and what its heap and buffers held at their peaks.
      const largest = results.reduce((a, b) => (b.maxRssKiB > a.maxRssKiB ? b : a));
      return { ms, wallMs, jobs, maxRssKiB: largest.maxRssKiB, heapKiB: largest.heapKiB ?? 0, buffersKiB: largest.buffersKiB ?? 0, cpuMs: results.reduce((n, r) => n + (r.cpuMs ?? 0), 0) };
    };
    // The function as deployed: serverless.yml's NODE_OPTIONS, and the node arguments of Lambda's runtime.
    const nodeOptions = await functionNodeOptions();
    const lambdaArgs = await lambdaNodeArgs();
    const pubEnv = (registry: TestRegistry, extra: Record<string, string> = {}) => ({
      ...(s3 as LocalS3).env,
      NODE_OPTIONS: nodeOptions,
      REGISTRY: `http://${registry.host}/gardenlinux`,
      LOG_LEVEL: 'warn',
      ...(concurrency ? { BLOB_CONCURRENCY: concurrency } : {}),
      ...(readers ? { S3_READERS: readers } : {}),
      ...extra,
    });
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const spread = (xs: number[]) => (xs.length > 1 ? ` (${(Math.min(...xs) / 1000).toFixed(2)}–${(Math.max(...xs) / 1000).toFixed(2)})` : '');
    const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB, Node ${process.version}, ${(await run('docker-registry', ['--version'])).stdout.trim()}, ${(await run('skopeo', ['--version'])).stdout.trim()}`;
    const measureBaseline = async (): Promise<number> => {
      const base = await freshRegistry();
      const r = await child(['--import', 'tsx', 'tools/bench-baseline.ts', JSON.stringify({ endpoint: (s3 as LocalS3).endpoint, bucket: BUCKET, registry: base.url, repository: 'baseline', concurrency: 4, blobs: baselineBlobs })], {});
      await stopRegistry(base);
      return r.ms;
    };

    if (targets) {
      /** Bytes of the builds read from S3: answers to GETs of their objects and documents, not of the records. */
      const buildBytes = (log: Array<{ method: string; path: string; responseBytes?: number }>) =>
        log.filter((e) => e.method === 'GET' && /\/(objects|meta)\//.test(e.path)).reduce((n, e) => n + (e.responseBytes ?? 0), 0);
      /** The machine's CPU time so far (all cores), busy and in all, from /proc/stat (in clock ticks). */
      const machineCpu = async () => {
        const fields = ((await readFile('/proc/stat', 'utf8')).split('\n')[0] as string).trim().split(/\s+/).slice(1).map(Number);
        const total = fields.reduce((n, x) => n + x, 0);
        return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
      };
      const publishTo = async (count: number) => {
        const regs = await Promise.all(Array.from({ length: count }, () => freshRegistry()));
        const s3Proxy = await startFaultProxy();
        s3Proxy.setUpstream((s3 as LocalS3).endpoint);
        const before = await machineCpu();
        const r = await publishBoth(pubEnv(regs[0] as TestRegistry, { REGISTRY: regs.map((x) => `http://${x.host}/gardenlinux`).join(','), AWS_ENDPOINT_URL_S3: s3Proxy.url }));
        const after = await machineCpu();
        const read = buildBytes(s3Proxy.log);
        await s3Proxy.close();
        for (const x of regs) await stopRegistry(x);
        return { ...r, read, busy: (after.busy - before.busy) / (after.total - before.total) };
      };
      type Cell = { ms: number; read: number; rss: number; cpu: number; busy: number };
      const cells = new Map<string, Cell[]>();
      const add = (k: string, v: { ms: number; read: number; maxRssKiB: number; cpuMs: number; busy: number }) =>
        cells.set(k, [...(cells.get(k) ?? []), { ms: v.ms, read: v.read, rss: v.maxRssKiB, cpu: v.cpuMs, busy: v.busy }]);
      for (let i = 1; i <= repeat; i++) {
        console.log(`targets round ${i} of ${repeat} ...`);
        // Each registry alone; the slowest of the three is what several at once are held against.
        const alone = [];
        for (let k = 0; k < 3; k++) alone.push(await publishTo(1));
        const slowest = alone.reduce((a, b) => (b.ms > a.ms ? b : a));
        add('1', slowest);
        for (const n of [2, 3]) {
          const r = await publishTo(n);
          add(String(n), r);
          console.log(`  ${n} registries: ${(r.ms / 1000).toFixed(2)} s, ${human(r.read)} read (alone, slowest: ${(slowest.ms / 1000).toFixed(2)} s)`);
        }
      }
      const medOf = (k: string, f: (x: Cell) => number) => med((cells.get(k) ?? []).map(f));
      const one = { ms: medOf('1', (x) => x.ms), rss: medOf('1', (x) => x.rss), cpu: medOf('1', (x) => x.cpu) };
      const rows = ['1', '2', '3'].map((n) => {
        const ms = medOf(n, (x) => x.ms);
        const rss = medOf(n, (x) => x.rss);
        const cpu = medOf(n, (x) => x.cpu);
        return `| ${n} | ${human(medOf(n, (x) => x.read))} | ${(ms / 1000).toFixed(2)} s | **${(ms / one.ms).toFixed(2)}** | ${(rss / 1024).toFixed(0)} MiB | **${(rss / one.rss).toFixed(2)}** | ${(cpu / 1000).toFixed(2)} s (${(cpu / one.cpu).toFixed(2)}) | ${Math.round(medOf(n, (x) => x.busy) * 100)}% |`;
      });
      const table = [
        '| registries | bytes read from S3 | time (first publication, both builds) | time / slowest registry alone | peak RSS | RSS / one registry | publisher CPU (/ one registry) | machine CPU busy |',
        '|---|---|---|---|---|---|---|---|',
        ...rows,
      ].join('\n');
      const heading = `## Several registries, ${human(size)} raw image, ${human(layerSize)} container layer`;
      const section = `${heading}\n\nMachine: ${machine}. Run on ${new Date().toISOString().slice(0, 10)} with \`npm run bench -- --targets --size ${option('size', '1GiB')} --layer ${option('layer', '200MiB')} --repeat ${repeat}\`: medians of ${repeat} rounds; each round publishes both builds to each of three fresh registries alone, then to two and to three at once. Bytes read: the answers of S3 to reads of the builds' objects and documents (${human(fileBytes)} of files), counted by a proxy in front of it. The row for one registry is the slowest of the three alone. Publisher CPU: both publisher processes; machine CPU busy: all processes (publisher, registries, S3, proxy) over all cores while they ran.\n\n${table}\n`;
      console.log(`\n${section}`);
      if (write) await writeSection(heading, section);
      return;
    }

    if (sweep) {
      const grid = { concurrency: [2, 4, 8], readers: [1, 2, 4] };
      const cells = new Map<string, number[]>();
      const baselines: number[] = [];
      for (let i = 1; i <= repeat; i++) {
        console.log(`sweep round ${i} of ${repeat} ...`);
        baselines.push(await measureBaseline());
        for (const c of grid.concurrency) {
          for (const r of grid.readers) {
            const reg = await freshRegistry();
            const { ms } = await publishBoth(pubEnv(reg, { BLOB_CONCURRENCY: String(c), S3_READERS: String(r) }));
            await stopRegistry(reg);
            const key = `${c}/${r}`;
            cells.set(key, [...(cells.get(key) ?? []), ms]);
            console.log(`  BLOB_CONCURRENCY=${c} S3_READERS=${r}: ${(ms / 1000).toFixed(2)} s`);
          }
        }
      }
      const baselineMs = med(baselines);
      const header = `| BLOB_CONCURRENCY \\ S3_READERS | ${grid.readers.join(' | ')} |`;
      const lines = grid.concurrency.map((c) => `| ${c} | ${grid.readers.map((r) => {
        const ms = med(cells.get(`${c}/${r}`) as number[]);
        return `${(baselineMs / ms).toFixed(2)} (${(ms / 1000).toFixed(2)} s)`;
      }).join(' | ')} |`);
      const table = [header, `|---|${grid.readers.map(() => '---|').join('')}`, ...lines].join('\n');
      const heading = `## Parallelism sweep, ${human(size)} raw image, ${human(layerSize)} container layer`;
      const section = `${heading}\n\nMachine: ${machine}. Run on ${new Date().toISOString().slice(0, 10)} with \`npm run bench -- --sweep --size ${option('size', '1GiB')} --layer ${option('layer', '200MiB')} --repeat ${repeat}\`. Each cell: publisher/baseline throughput of the first publication (median of ${repeat}; the publisher's median time in brackets); baseline ${(baselineMs / 1000).toFixed(2)} s${spread(baselines)}, ${rate(movedBytes, baselineMs)}.\n\n${table}\n`;
      console.log(`\n${section}`);
      if (write) await writeSection(heading, section);
      return;
    }

    const samples = { baseline: [] as number[], publisher: [] as number[], part: [] as number[], skopeo: [] as number[], wholeContainer: [] as number[], rss: [] as number[], heap: [] as number[], buffers: [] as number[], cpu: [] as number[] };
    let containerJob: Summary['jobs'][number] | undefined;
    /**
     * The container part from a local directory: the build's other files are in the registry already (a first
     * publication, whose image blobs and manifest were then deleted), so what is measured is the image: reading
     * the archive's blob ranges and pushing them, its manifest, and the index.
     */
    const measurePart = async (): Promise<void> => {
      const reg = await freshRegistry();
      const dirEnv = { REGISTRY: `http://${reg.host}/gardenlinux`, LOG_LEVEL: 'warn', ...(concurrency ? { BLOB_CONCURRENCY: concurrency } : {}) };
      const cli = (args: string[]) => child(['tools/bench-child.mjs', 'node', 'gl-oci-publish', ...args], dirEnv);
      samples.wholeContainer.push((await cli(['publish', container.base, '--dir', bucketDir])).ms);
      for (const b of [...image.imageBlobs.map((x) => `blobs/${x.digest}`), `manifests/${image.manifestDigest}`]) {
        const res = await fetch(`${reg.url}/v2/gardenlinux/${b}`, { method: 'DELETE' });
        if (res.status !== 202) throw new Error(`DELETE ${b}: ${res.status}`);
      }
      const part = await cli(['publish', container.base, '--dir', bucketDir]);
      samples.part.push(part.ms);
      containerJob = (JSON.parse(part.stdout) as Summary).jobs[0];
      console.log(`  container part ${(part.ms / 1000).toFixed(2)} s`);
      await stopRegistry(reg);
    };
    /** skopeo copying the same archive to a fresh registry: extracting it, then pushing the image. */
    const measureSkopeo = async (): Promise<void> => {
      const reg = await freshRegistry();
      const started = performance.now();
      await run('skopeo', ['copy', '--dest-tls-verify=false', `oci-archive:${archive.path}:container-amd64`, `docker://${reg.host}/gardenlinux:amd64-1877.3`], {
        env: { ...process.env, HOME: work, TMPDIR: work },
      });
      const ms = performance.now() - started;
      samples.skopeo.push(ms);
      console.log(`  skopeo ${(ms / 1000).toFixed(2)} s`);
      await stopRegistry(reg);
    };
    let first: Awaited<ReturnType<typeof publishBoth>> | undefined;
    let rerun: { result: Awaited<ReturnType<typeof publishBoth>>; registryRequests: number; s3Requests: number } | undefined;
    for (let i = 1; i <= repeat; i++) {
      console.log(`round ${i} of ${repeat} ...`);
      samples.baseline.push(await measureBaseline());
      // The publisher's first publication: one process per build, at once, like two Lambda invocations.
      const pubRegistry = await freshRegistry();
      first = await publishBoth(pubEnv(pubRegistry));
      samples.publisher.push(first.ms);
      samples.rss.push(first.maxRssKiB);
      samples.heap.push(first.heapKiB);
      samples.buffers.push(first.buffersKiB);
      samples.cpu.push(first.cpuMs);
      if (i === repeat) {
        // The re-run of the last publication, through counting proxies.
        const regProxy = await startFaultProxy();
        regProxy.setUpstream(pubRegistry.url);
        const s3Proxy = await startFaultProxy();
        s3Proxy.setUpstream(s3.endpoint);
        const result = await publishBoth(pubEnv(pubRegistry, { REGISTRY: `http://${regProxy.host}/gardenlinux`, AWS_ENDPOINT_URL_S3: s3Proxy.url }));
        rerun = { result, registryRequests: regProxy.log.length, s3Requests: s3Proxy.log.length };
        await regProxy.close();
        await s3Proxy.close();
      }
      // Stopped before the next measurement: with a registry holding the publication still running, the container
      // measurements below ran up to 1.7 times slower on the development machine.
      await stopRegistry(pubRegistry);
      // The container part and skopeo take turns going first, so that neither is always the one that runs right
      // after the large publication.
      const order = i % 2 === 1 ? [measurePart, measureSkopeo] : [measureSkopeo, measurePart];
      for (const measure of order) await measure();
    }
    if (!first || !rerun) throw new Error('no measurement');
    const uploaded = first.jobs.reduce((n, j) => n + j.bytesUploaded, 0);

    const baselineMs = med(samples.baseline);
    const publisherMs = med(samples.publisher);
    const partMs = med(samples.part);
    const skopeoMs = med(samples.skopeo);
    const rows: Array<[string, string]> = [
      ['bytes moved (files + image blobs)', `${human(movedBytes)} (${human(fileBytes)} + ${human(imageBytes)}); publisher uploaded ${human(uploaded)}`],
      ['baseline (stream each blob from S3 into one upload, 4 at a time, measured inside its process)', `${(baselineMs / 1000).toFixed(2)} s${spread(samples.baseline)}, ${rate(movedBytes, baselineMs)}`],
      ['publisher (the function bundle), first publication (2 processes at once, measured inside them)', `${(publisherMs / 1000).toFixed(2)} s${spread(samples.publisher)}, ${rate(movedBytes, publisherMs)}`],
      ['**publisher / baseline throughput**', `**${(baselineMs / publisherMs).toFixed(2)}**`],
      ['publisher CPU time (both processes)', `${(med(samples.cpu) / 1000).toFixed(2)} s`],
      ['publisher peak RSS (largest process, VmHWM)', `${(med(samples.rss) / 1024).toFixed(0)} MiB (${samples.rss.map((x) => (x / 1024).toFixed(0)).join(', ')}); its peaks of JavaScript heap ${(med(samples.heap) / 1024).toFixed(0)} MiB and buffers ${(med(samples.buffers) / 1024).toFixed(0)} MiB`],
      ['container build from a local directory (CLI), first publication', `${(med(samples.wholeContainer) / 1000).toFixed(2)} s (archive and image: ${human(archive.size + imageBytes)})`],
      ['container part (image) from a local directory (CLI)', `${(partMs / 1000).toFixed(2)} s${spread(samples.part)}, ${rate(imageBytes, partMs)} (${containerJob?.blobsUploaded} blobs, ${human(containerJob?.bytesUploaded ?? 0)})`],
      ['skopeo copy oci-archive: → docker://, same archive', `${(skopeoMs / 1000).toFixed(2)} s${spread(samples.skopeo)}, ${rate(imageBytes, skopeoMs)}`],
      ['**skopeo / publisher time (container part)**', `**${(skopeoMs / partMs).toFixed(2)}**`],
      ['re-run of both builds: wall time (processes included)', `${(rerun.result.wallMs / 1000).toFixed(2)} s; in the handler: ${rerun.result.jobs.map((j) => `${(j.durationMs / 1000).toFixed(2)} s`).join(', ')}`],
      ['re-run: bytes uploaded / S3 bytes read', `${rerun.result.jobs.reduce((n, j) => n + j.bytesUploaded, 0)} / ${rerun.result.jobs.reduce((n, j) => n + j.bytesRead, 0)}`],
      ['re-run: requests made', `${rerun.registryRequests} to the registry, ${rerun.s3Requests} to S3`],
    ];
    const table = ['| measure | result |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
    const section = `## ${human(size)} raw image, ${human(layerSize)} container layer\n\nMachine: ${machine}. Run on ${new Date().toISOString().slice(0, 10)} with \`npm run bench -- --size ${option('size', '1GiB')} --layer ${option('layer', '200MiB')} --repeat ${repeat}${concurrency ? ` --concurrency ${concurrency}` : ''}${readers ? ` --readers ${readers}` : ''}\`: medians of ${repeat} rounds (range in brackets), each measure against a fresh registry.\n\n${table}\n`;
    console.log(`\n${section}`);
    if (write) await writeSection(`## ${human(size)} raw image, ${human(layerSize)} container layer`, section);
  } finally {
    await Promise.all(registries.map((r) => r.stop()));
    await s3?.close();
    await rm(work, { recursive: true, force: true });
  }
  if (!sweep && !targets) await coldStart(write);
}

/** 6. The function's cold start (tools/bench-cold-start.ts), its own section. */
async function coldStart(write: boolean): Promise<void> {
  console.log('cold starts: 10 fresh processes of each kind ...');
  // --bundle DIR: another build of the function (an earlier commit's dist/publish), to compare in the same hour.
  const result = await measureColdStart(option('bundle', 'dist/publish'));
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`;
  const heading = '## Cold start of the function';
  const section = `${heading}\n\nMachine: ${machine}. Run on ${new Date().toISOString().slice(0, 10)} with \`npm run bench -- --cold-start\` (also the last part of \`npm run bench\`): fresh processes importing the function's bundle as Lambda unpacks it (NODE_OPTIONS of serverless.yml), each handling one event from the in-process S3, against bare \`node\` running the same child script without a bundle; medians of 10, in turns.\n\n${coldStartTable(result)}\n`;
  console.log(`\n${section}`);
  if (write) await writeSection(heading, section);
}

/** Replaces this size's section of docs/benchmarks.md (other sizes' sections stay). */
async function writeSection(heading: string, section: string): Promise<void> {
  const path = 'docs/benchmarks.md';
  const intro = [
    '# Benchmarks',
    '',
    'Written by `npm run bench` (tools/bench.ts): each section is one run of it, figures measured against baselines in',
    'the same run, on the machine named. Rerun it to check them; `-- --size 4GiB` for the large-image section.',
    '',
  ].join('\n');
  let text = intro;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    // first run
  }
  const sections = text.split(/^(?=## )/m);
  const head = sections[0]?.startsWith('# ') ? (sections.shift() as string) : intro;
  const others = sections.filter((s) => !s.startsWith(heading));
  await writeFile(path, [head.trimEnd() + '\n', ...[...others, section].map((s) => s.trimEnd() + '\n')].join('\n'));
  console.log(`written to ${path}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
