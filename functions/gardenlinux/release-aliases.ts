/**
 * Release aliases as a function of what was published (ALIAS_TAGS): templates such as `latest`, `{major}`,
 * `{version}.0` or `nightly`. A template names one alias per version (`{major}` of 1877.3 is `1877`); the
 * versions that name the same alias form its group, and the alias holds the highest of them. So `latest` follows
 * the newest version, `1877` the newest 1877.x, and `{version}.0` each version itself. Pure: no I/O.
 */
import { InputError } from '../util/errors';

export interface AliasTemplate {
  /** as configured, e.g. `{major}` */
  text: string;
  /** the placeholders it uses */
  placeholders: ReadonlyArray<Placeholder>;
}

type Placeholder = 'version' | 'major' | 'minor' | 'patch';
const PLACEHOLDER = /\{([a-z]+)\}/g;
const KNOWN: readonly Placeholder[] = ['version', 'major', 'minor', 'patch'];
/** what a tag may hold once the placeholders are filled in (the OCI distribution spec's tag grammar) */
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** a Garden Linux version: numbers separated by dots (1877, 1877.3, 1877.3.1) */
const VERSION = /^\d+(?:\.\d+)*$/;

/** Whether a version is numbers separated by dots, the versions the aliases compare (other folders are sub-repositories). */
export function isNumericVersion(value: string): boolean {
  return VERSION.test(value);
}

/**
 * Parses the comma-separated ALIAS_TAGS. A template holds literal tag characters and the placeholders
 * `{version}` (1877.3), `{major}` (1877), `{minor}` (3) and `{patch}`; one that uses a part a version lacks does not
 * apply to it (`{major}.{minor}.{patch}` skips 1877.3). A refused template is named by its place in the list, never
 * by its text (issue 19: a configuration message never repeats a value, which may be a secret in the wrong place).
 */
export function parseAliasTemplates(value: string): AliasTemplate[] {
  const texts = value.split(',').map((t) => t.trim()).filter((t) => t !== '');
  return texts.map((text, i) => {
    const which = `template #${i + 1}`;
    const first = texts.indexOf(text);
    if (first < i) throw new InputError(`ALIAS_TAGS: ${which} repeats template #${first + 1}; name each alias once`);
    const placeholders = [...text.matchAll(PLACEHOLDER)].map((m) => m[1] as string);
    const unknown = placeholders.find((p) => !KNOWN.includes(p as Placeholder));
    if (unknown !== undefined) throw new InputError(`ALIAS_TAGS: ${which} uses a placeholder other than {version}, {major}, {minor} and {patch}`);
    const sample = text.replace(PLACEHOLDER, '0');
    if (!TAG.test(sample) || /[{}]/.test(sample)) {
      throw new InputError(`ALIAS_TAGS: ${which} does not make a valid tag (letters, digits, "_", "." and "-", at most 128, not starting with "." or "-")`);
    }
    if (placeholders.length === 0 && VERSION.test(text)) {
      throw new InputError(`ALIAS_TAGS: ${which} looks like a version; an alias that is a version would be overwritten by that version's index`);
    }
    return { text, placeholders: placeholders as Placeholder[] };
  });
}

/** The alias a template names for a version, or undefined when it does not apply to it. */
export function aliasFor(template: AliasTemplate, version: string): string | undefined {
  if (!VERSION.test(version)) return template.placeholders.length === 0 ? template.text : undefined;
  const parts = version.split('.');
  const values: Record<Placeholder, string | undefined> = { version, major: parts[0], minor: parts[1], patch: parts[2] };
  if (template.placeholders.some((p) => values[p] === undefined)) return undefined;
  const alias = template.text.replace(PLACEHOLDER, (_, p: Placeholder) => values[p] as string);
  // An alias that would be another version's own tag (`{major}` of 1877.3 is 1877, if 1877 is ever a version)
  // is still the alias: versions of Garden Linux have two parts.
  return TAG.test(alias) ? alias : undefined;
}

/** Garden Linux versions compared part by part, numerically: 1877.10 > 1877.9 > 1877 > 1592.18. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.');
  const pb = b.split('.');
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx < ny ? -1 : 1;
    } else if (Number.isNaN(nx) !== Number.isNaN(ny)) {
      // A number sorts above a word: 1877.3 above 1877.rc1.
      return Number.isNaN(nx) ? -1 : 1;
    } else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

export interface AliasGroup {
  alias: string;
  /** the template that names it (of two naming one alias, the one whose group is highest) */
  template: string;
  /** the versions that name the alias, highest first */
  members: string[];
}

/**
 * The aliases that `version` belongs to, each with its group: the versions among `versions` (the versions
 * published to the repository; `version` counts whether listed or not) that name the same alias, highest first.
 */
export function aliasGroups(templates: readonly AliasTemplate[], version: string, versions: Iterable<string>): AliasGroup[] {
  const all = [...new Set([...versions, version])];
  const groups: AliasGroup[] = [];
  for (const t of templates) {
    const alias = aliasFor(t, version);
    if (alias === undefined) continue;
    const members = all.filter((v) => aliasFor(t, v) === alias).sort((a, b) => compareVersions(b, a));
    // Two templates may name one alias (`{major}` and `{version}` of 1877): one group of both, the higher template's.
    const same = groups.find((g) => g.alias === alias);
    if (same === undefined) groups.push({ alias, template: t.text, members });
    else {
      if (compareVersions(members[0] as string, same.members[0] as string) > 0) same.template = t.text;
      same.members = [...new Set([...same.members, ...members])].sort((a, b) => compareVersions(b, a));
    }
  }
  return groups;
}
