/**
 * Where content goes, as configured in REGISTRY: a registry repository (`ghcr.io/gardenlinux/gardenlinux`,
 * `http://127.0.0.1:5000/gl`) or a local OCI image layout (`oci-layout:/some/dir`).
 *
 * A copy (`copy --from/--to`, the `copy` action's `from`/`to`) also takes `oci-archive:<file>`: a tar of an OCI
 * image layout, for carrying a release somewhere. It is parsed by parseCopyLocation only: an archive is written
 * whole at the end of a copy, so nothing can be published into one, and REGISTRY refuses it.
 */
import { resolve } from 'node:path';
import { InputError } from '../util/errors';

export type TargetLocation =
  | { kind: 'registry'; scheme: 'https' | 'http'; host: string; repository: string }
  | { kind: 'oci-layout'; dir: string };

/** Where a copy reads from or writes to: a publication target, or an OCI archive (a tar of a layout). */
export type CopyLocation = TargetLocation | { kind: 'oci-archive'; file: string };

const ARCHIVE = 'oci-archive:';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$/;

/** Checks a repository path (`gardenlinux/gardenlinux`, `gl/fips`) against the distribution grammar. */
export function isRepositoryPath(path: string): boolean {
  return path.length > 0 && path.length <= 255 && path.split('/').every((c) => COMPONENT.test(c));
}

/**
 * Parses REGISTRY. A message never repeats the value or a part of it: a mistaken value may be a secret (a password
 * or token pasted into the wrong variable), and messages reach the logs. It says which part is wrong instead.
 */
export function parseTargetLocation(raw: string, name = 'REGISTRY'): TargetLocation {
  return parseLocation(raw, name, false) as TargetLocation;
}

/**
 * Parses a copy's source or destination (`name` says which, for messages): what REGISTRY takes, and
 * `oci-archive:<file>`.
 */
export function parseCopyLocation(raw: string, name: string): CopyLocation {
  return parseLocation(raw, name, true);
}

/** How a location is written in messages and summaries: `<host>/<repository>`, `oci-layout:<dir>`, `oci-archive:<file>`. */
export function displayLocation(location: CopyLocation): string {
  switch (location.kind) {
    case 'registry':
      return `${location.host}/${location.repository}`;
    case 'oci-layout':
      return `oci-layout:${location.dir}`;
    case 'oci-archive':
      return `${ARCHIVE}${location.file}`;
  }
}

function parseLocation(raw: string, name: string, archive: boolean): CopyLocation {
  const expected = `expected "oci-layout:<dir>", ${archive ? '"oci-archive:<file>", ' : ''}"<host>[:port]/<repository>" (HTTPS), or "http://<host>[:port]/<repository>" (plain HTTP)`;
  const value = raw.trim();
  if (value.startsWith('oci-layout:')) {
    const dir = value.slice('oci-layout:'.length);
    if (dir === '') throw new InputError(`${name} oci-layout: names no directory; ${expected}`);
    return { kind: 'oci-layout', dir: resolve(dir) };
  }
  if (value.startsWith(ARCHIVE)) {
    if (!archive) {
      throw new InputError(
        `${name}: an oci-archive: is what "copy" reads or writes (a tar written whole at its end), not a place to publish to; publish to an oci-layout:<dir> and copy the version to an oci-archive:<file>`,
      );
    }
    const file = value.slice(ARCHIVE.length);
    if (file === '') throw new InputError(`${name} oci-archive: names no file; ${expected}`);
    if (file.endsWith('/')) throw new InputError(`${name} oci-archive: names a directory; an archive is a file (a tar of an OCI image layout)`);
    return { kind: 'oci-archive', file: resolve(file) };
  }
  // Credentials written into the location must neither work nor reach a message (and so a log). Neither a host nor
  // a repository path holds "@", so any "@" is taken for credentials, wherever the password's own "/" or ":" put it.
  if (value.includes('@')) {
    throw new InputError(`${name} must not contain credentials: set REGISTRY_USERNAME and REGISTRY_PASSWORD instead`);
  }
  let scheme: 'https' | 'http' = 'https';
  let rest = value;
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(value);
  if (m) {
    const s = (m[1] as string).toLowerCase();
    if (s !== 'https' && s !== 'http') throw new InputError(`${name} has a scheme other than http:// and https://; ${expected}`);
    scheme = s;
    rest = m[2] as string;
  }
  rest = rest.replace(/\/+$/, '');
  const slash = rest.indexOf('/');
  if (slash <= 0) throw new InputError(`${name} names no repository; ${expected}`);
  const host = rest.slice(0, slash);
  const repository = rest.slice(slash + 1);
  const port = /:(\d+)$/.exec(host)?.[1];
  if (!HOST.test(host) || (port !== undefined && (Number(port) < 1 || Number(port) > 65535))) {
    throw new InputError(`${name}: its host (before the first "/") is not a host name with an optional port (1-65535); ${expected}`);
  }
  if (!isRepositoryPath(repository)) {
    throw new InputError(
      `${name}: its repository (after the host) is not a repository path (lowercase letters, digits, ".", "_", "-", separated by "/"); ${expected}`,
    );
  }
  return { kind: 'registry', scheme, host: host.toLowerCase(), repository };
}
