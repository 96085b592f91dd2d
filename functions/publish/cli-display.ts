/**
 * What the CLI shows. For a person at a terminal (stderr is one, no --json): a progress line per upload in flight
 * that redraws in place (cli-progress), warnings and errors as plain lines above them, and a readable summary at
 * the end. Otherwise, as the Lambda: the JSON log lines on stderr and the job summaries as JSON on stdout.
 * --quiet keeps only errors and the final summary.
 */
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type { TransferObserver } from '../orchestration/context';
import type { PullResult } from '../orchestration/pull-build';
import type { FirstSignatureResult } from '../orchestration/sign-manifest';
import type { HandlerResult, SqsBatchResult } from './handler';
import type { JobSummary } from './run-job';

export interface DisplayOptions {
  json: boolean;
  quiet: boolean;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** what the progress says of a large file once it is done: `uploaded` (the default) or `downloaded` (pull) */
  doneVerb?: string;
}

export interface Display {
  readonly human: boolean;
  logSink(line: string): void;
  /** for a person: the upload progress; undefined when nothing is drawn */
  progress?: TransferObserver;
  /** prints what the jobs did (stops the progress display first) */
  summaries(result: HandlerResult | SqsBatchResult | { jobs: JobSummary[] }): void;
  stop(): void;
}

interface LogLine {
  level?: string;
  msg?: string;
  [key: string]: unknown;
}

const NAME_WIDTH = 40;
const LARGE = 1024 * 1024;

/** Errors the CLI reports otherwise: the failed job in its summary, a refused configuration or event as its one line. */
const REPORTED_ELSEWHERE = new Set(['job failed', 'configuration rejected', 'event rejected', 'signing key rejected']);

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

function shortDigest(d: string | undefined): string {
  return d === undefined ? '' : d.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]*$/, '$1');
}

/** `s3://bucket/objects/<base>/<file>` and the like: the file name is what a person recognises. */
function fileName(what: string): string {
  return what.split('/').at(-1) ?? what;
}

/** The details of a log line worth a person's attention, as `key=value`. */
function details(line: LogLine): string {
  const keys = ['error', 'base', 'repository', 'file', 'digest', 'request', 'status', 'attempt'];
  const parts = keys.flatMap((k) => (line[k] === undefined ? [] : [`${k}=${typeof line[k] === 'string' ? line[k] : JSON.stringify(line[k])}`]));
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

/** What sign-first did to one signature image, for a person. */
function firstAction(s: FirstSignatureResult): string {
  const what =
    s.action === 'already-first' ? 'the key signs layer 0 already' : s.action === 'moved' ? `moved from layer ${s.from ?? '?'} to layer 0` : s.action === 'signed' ? 'signed (layer 0)' : 'signed and put first';
  return `${what}, ${s.layers} ${s.layers === 1 ? 'layer' : 'layers'}  ${s.subject}`;
}

export function formatSummary(j: JobSummary): string {
  const out: string[] = [];
  const what = j.base ?? (j.version ? `version ${j.version}` : j.key ?? j.job);
  out.push(`${j.outcome.padEnd(9)} ${what}${j.job !== 'publish' ? ` (${j.job})` : ''}  ${(j.durationMs / 1000).toFixed(1)} s`);
  const row = (label: string, text: string) => out.push(`  ${label.padEnd(10)} ${text}`);
  if (j.error) row('error', j.error);
  if (j.reason) row('reason', j.reason);
  if (j.manifest) row('manifest', `${j.manifest.repository}:${j.manifest.tag}  ${shortDigest(j.manifest.digest)}`);
  if (j.container) row('image', `${j.container.repository}:${j.container.tag}  ${shortDigest(j.container.digest)}${j.container.tagged ? '' : '  (a newer build holds the tag)'}`);
  for (const s of j.signatures ?? []) row('signature', `${s.tag.slice(0, 19)}….sig  ${'action' in s ? firstAction(s as FirstSignatureResult) : s.written ? 'written' : 'already there'}`);
  for (const i of j.indexes ?? []) row('index', `${i.repository}:${i.tag}  ${shortDigest(i.digest)}  ${i.changed ? 'written' : 'unchanged'}, ${i.entries} ${i.entries === 1 ? 'entry' : 'entries'}`);
  const aliases = (j.releaseAliases ?? []).map((a) => `${a.alias}${a.changed ? '*' : ''}→${a.version}`);
  if (aliases.length > 0) row('aliases', `${aliases.join(' ')}  (* moved now)`);
  if (j.aliases) row('tags', j.aliases.tags.map((t) => `${t.tag}${t.changed ? '*' : ''}`).join(' '));
  if (j.retracted) row('retracted', j.retracted.repositories.join(', '));
  for (const t of j.targets ?? []) {
    const moved = t.bytesUploaded === undefined ? '' : `, ${bytes(t.bytesUploaded)} uploaded`;
    row('target', `${t.target}  ${t.outcome}${moved}${t.error ? `: ${t.error}` : t.reason ? `: ${t.reason}` : ''}`);
  }
  if (j.copy) {
    const c = j.copy;
    row('from', c.from);
    row('to', `${c.to}${c.archiveWritten ? '  (archive written)' : ''}`);
    for (const r of c.repositories) row('index', `${r.repository}:${j.version ?? ''}  ${shortDigest(r.index)}, ${r.manifests} manifests, ${r.blobs} blobs`);
    const counts = (pick: 'written' | 'skipped') =>
      ([['manifests', c.manifests], ['signatures', c.signatures], ['indexes', c.indexes], ['tags', c.tags], ['aliases', c.aliases]] as const)
        .map(([label, n]) => `${n[pick]} ${label}`)
        .join(', ');
    row('written', counts('written'));
    row('there', `${counts('skipped')} (already at the destination)`);
    if (c.aliases.names.length > 0) row('aliases', c.aliases.names.join(' '));
    for (const l of c.left ?? []) row('not copied', `${l.repository}:${l.tag}  ${l.reason}`);
  }
  if ((j.job === 'publish' || j.job === 'copy') && j.outcome !== 'skipped' && (j.outcome !== 'failed' || j.bytesRead > 0)) {
    row('moved', `${bytes(j.bytesUploaded)} uploaded in ${j.blobsUploaded} blobs, ${j.blobsSkipped} already there; ${bytes(j.bytesRead)} read`);
  }
  return out.join('\n');
}

/** What a pull did, for a person. */
export function formatPull(r: PullResult): string {
  const out = [`pulled    ${r.base}  ${(r.durationMs / 1000).toFixed(1)} s`];
  const row = (label: string, text: string) => out.push(`  ${label.padEnd(10)} ${text}`);
  row('manifest', `${r.repository}@${shortDigest(r.manifest.digest)}  ${r.manifest.foundBy === 'index' ? `from the version index ${r.manifest.reference}` : `by its tag ${r.manifest.reference} (in no version index)`}`);
  if (r.signature) row('signature', `verified with ${r.signature.key}${r.signature.firstLayer === 'this-key' ? '' : ` (layer 0: ${r.signature.firstLayer})`}`);
  const count = (o: string) => r.files.filter((f) => f.outcome === o).length;
  row('files', `${count('written')} written, ${count('replaced')} replaced, ${count('unchanged')} already there; ${bytes(r.bytesWritten)} written to ${r.to}`);
  if (r.bundleMembers.length > 0) row('members', `${r.bundleMembers.join(', ')}: in the PXE bundle, not written on their own`);
  row('metadata', `${r.metadata.key} ${r.metadata.outcome === 'unchanged' ? 'already there' : r.metadata.outcome} (made from the artifact manifest)`);
  return `${out.join('\n')}\n`;
}

export function createDisplay(o: DisplayOptions): Display {
  if (o.json || !o.stderr.isTTY) {
    return {
      human: false,
      logSink(line) {
        if (o.quiet && !line.includes('"level":"error"')) return;
        o.stderr.write(`${line}\n`);
      },
      summaries(result) {
        o.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      },
      stop() {},
    };
  }

  let bars: MultiBar | undefined;
  const active = new Map<number, { bar: SingleBar; full: string; name: string; size: number; done: number; started: number }>();
  let next = 1;
  const say = (text: string) => {
    if (bars && active.size > 0) bars.log(`${text}\n`);
    else o.stderr.write(`${text}\n`);
  };
  function stop(): void {
    bars?.stop();
    bars = undefined;
  }
  const multibar = (): MultiBar =>
    (bars ??= new MultiBar(
      {
        stream: o.stderr,
        format: '{name} {bar} {percentage}% | {done} of {total_size} | {rate} | {eta_formatted} left',
        hideCursor: true,
        clearOnComplete: true,
        autopadding: true,
        barsize: 20,
        etaBuffer: 50,
        fps: 10,
      },
      Presets.shades_classic,
    ));
  const payload = (t: { name: string; size: number; done: number; started: number }) => {
    const seconds = (Date.now() - t.started) / 1000;
    return { name: t.name, done: bytes(t.done), total_size: bytes(t.size), rate: seconds > 0.2 ? `${bytes(t.done / seconds)}/s` : '…' };
  };

  const progress: TransferObserver | undefined = o.quiet
    ? undefined
    : {
        started(what, size) {
          const handle = next++;
          const full = fileName(what);
          // The end of a file name tells the files of a build apart (…75df9f40.raw, …75df9f40.raw.log).
          const name = (full.length > NAME_WIDTH ? `…${full.slice(-(NAME_WIDTH - 1))}` : full).padEnd(NAME_WIDTH);
          const t = { name, size, done: 0, started: Date.now() };
          const bar = multibar().create(Math.max(size, 1), 0, payload(t));
          active.set(handle, { ...t, full, bar });
          multibar().update();
          return handle;
        },
        advanced(handle, n) {
          const t = active.get(handle);
          if (!t) return;
          t.done += n;
          t.bar.update(t.done, payload(t));
        },
        finished(handle) {
          const t = active.get(handle);
          if (!t) return;
          active.delete(handle);
          t.bar.update(t.done, payload(t));
          bars?.remove(t.bar);
          // Nothing in flight: the display goes, so that what follows is written on a clean line.
          if (active.size === 0) stop();
          const seconds = (Date.now() - t.started) / 1000;
          // Small files come and go too fast to matter; a large one gets a line once it is done.
          if (t.done >= LARGE) say(`${o.doneVerb ?? 'uploaded'} ${t.full}  ${bytes(t.done)} in ${seconds.toFixed(1)} s, ${bytes(t.done / Math.max(seconds, 0.001))}/s`);
        },
      };


  return {
    human: true,
    ...(progress ? { progress } : {}),
    logSink(text) {
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        return;
      }
      if (line._aws !== undefined || (line.msg && REPORTED_ELSEWHERE.has(line.msg)) || line.msg?.startsWith('release ')) return;
      if (line.level === 'error') say(`error: ${line.msg ?? ''}${details(line)}`);
      else if (line.level === 'warn' && !o.quiet) say(`warning: ${line.msg ?? ''}${details(line)}`);
    },
    summaries(result) {
      stop();
      const jobs = 'jobs' in result ? result.jobs : [];
      const text = jobs.length > 0 ? `${jobs.map(formatSummary).join('\n\n')}\n` : 'batchItemFailures' in result ? `${JSON.stringify(result)}\n` : 'nothing to do\n';
      // The readable summary goes to the terminal; JSON to a stdout that is piped, as scripts expect.
      if (o.stdout.isTTY) o.stdout.write(text);
      else {
        o.stderr.write(text);
        o.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      }
    },
    stop,
  };
}
