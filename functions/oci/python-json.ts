/**
 * JSON in exactly the form Python's `json.dumps(value)` writes with its defaults: `", "` between items, `": "`
 * after keys, keys in document order, everything outside printable ASCII escaped as `\uXXXX` (lowercase hex,
 * surrogate pairs for characters above U+FFFF). gl-oci computes a manifest's digest from `json.dumps()` of the
 * parsed manifest, so a manifest written in this form has the same digest for gl-oci as in the registry:
 * `json.dumps(json.loads(b)) == b`.
 *
 * Manifests and indexes hold objects, arrays, strings, integers, booleans and null, which all round-trip. A
 * non-integer number (only ever in an entry another tool wrote) is written as JavaScript writes it, which Python
 * may write differently (`1.0` becomes `1`): the entry is kept rather than the index refused.
 */

const NAMED: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

function quote(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    const code = s.charCodeAt(i);
    const named = NAMED[ch];
    if (named !== undefined) out += named;
    // Python's ensure_ascii keeps U+0020 to U+007E as they are; everything else (DEL included) is escaped.
    else if (code < 0x20 || code > 0x7e) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function write(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`${path}: ${value} has no JSON form`);
      return String(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v, i) => write(v, `${path}[${i}]`)).join(', ')}]`;
      const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
      return `{${entries.map(([k, v]) => `${quote(k)}: ${write(v, `${path}.${k}`)}`).join(', ')}}`;
    }
    default:
      throw new TypeError(`${path}: a ${typeof value} has no JSON form`);
  }
}

/** `value` as Python's `json.dumps(value)` writes it. */
export function pythonJson(value: unknown): string {
  return write(value, '$');
}
