/** The `.release` file of a build: os-release `KEY=value` lines whose values may be quoted. */
export function parseReleaseFile(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.length >= 2 && value.endsWith(quote)) value = value.slice(1, -1);
    values.set(key, value);
  }
  return values;
}

/** The feature list of a build: `GARDENLINUX_FEATURES` from `.release`, as written there (comma-joined). */
export function featuresFromRelease(text: string): string | undefined {
  const features = parseReleaseFile(text).get('GARDENLINUX_FEATURES');
  return features === undefined || features === '' ? undefined : features;
}
