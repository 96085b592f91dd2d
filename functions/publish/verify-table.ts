/** The verify report as a person at a terminal reads it: a line per repository, then a line per problem. */
import type { VerifyReport } from '../orchestration/verify-release';
import type { FirstLayerSigner } from '../signing/verify-signature';

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function count(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function formatReport(r: VerifyReport): string {
  const errors = r.problems.filter((p) => p.severity === 'error').length;
  const warnings = r.problems.length - errors;
  const verdict = r.ok ? (warnings > 0 ? `complete, ${count(warnings, 'warning')}` : 'complete') : `${count(errors, 'error')}, ${count(warnings, 'warning')}`;
  const parts = [
    `${r.version}: ${verdict} (checked in ${(r.durationMs / 1000).toFixed(1)} s)`,
    '',
    table(
      ['REPOSITORY', 'INDEX', 'ENTRIES', 'RECORDS', 'BLOBS', 'TAGS', 'ALIASES', 'SIGNATURES', 'ERRORS', 'WARNINGS'],
      r.repositories.map((x) => [
        x.repository,
        x.index ? `${x.index.slice(0, 19)}…` : 'missing',
        String(x.entries),
        String(x.records),
        String(x.blobs),
        String(x.tags),
        String(x.aliases),
        String(x.signatures),
        String(x.errors),
        String(x.warnings),
      ]),
    ),
  ];
  const signed = r.repositories.filter((x) => (x.firstLayers?.length ?? 0) > 0);
  if (r.key !== undefined && signed.length > 0) {
    const words: Record<FirstLayerSigner, string> = { 'this-key': 'this key', 'another-key': 'another key', invalid: 'invalid', none: 'no signature' };
    parts.push('', `Layer 0 of each signature (the only layer gardenlinux-update reads), against the key ${r.key}:`);
    for (const x of signed) {
      const counts = (Object.keys(words) as FirstLayerSigner[]).flatMap((k) => {
        const n = (x.firstLayers ?? []).filter((f) => f.signer === k).length;
        return n > 0 ? [`${n} ${words[k]}`] : [];
      });
      parts.push(`  ${x.repository}: ${counts.join(', ')}`);
    }
  }
  if (r.problems.length > 0) {
    parts.push('', table(['SEVERITY', 'CHECK', 'SUBJECT', 'PROBLEM'], r.problems.map((p) => [p.severity, p.check, p.subject, r.repositories.length > 1 ? `${p.repository}: ${p.message}` : p.message])));
  }
  return `${parts.join('\n')}\n`;
}
