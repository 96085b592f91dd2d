/**
 * Garden Linux build names (spec §1). A base name is `<flavor>-<arch>-<version>-<commit>`; it is parsed from the
 * right because the flavor itself may contain dashes.
 */
import { InputError } from '../util/errors';

export const ARCHITECTURES = ['amd64', 'arm64'] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

export interface BaseName {
  /** the whole base name, e.g. `container-amd64-1877.3-75df9f40` */
  base: string;
  flavor: string;
  arch: Architecture;
  version: string;
  /** 8 lowercase hex characters, or `local` */
  commit: string;
}

const COMMIT = /^(?:[0-9a-f]{8}|local)$/;
const VERSION = /^\d+(?:\.\d+){1,2}$/;
const FLAVOR = /^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$/;

export function isVersion(value: string): boolean {
  return VERSION.test(value);
}

export function parseBaseName(base: string): BaseName {
  const fail = (why: string): never => {
    throw new InputError(
      `"${base}" is not a Garden Linux base name (<flavor>-<arch>-<version>-<commit>, e.g. container-amd64-1877.3-75df9f40): ${why}`,
    );
  };
  if (base.length === 0 || base.length > 200) fail('empty or longer than 200 characters');
  const parts = base.split('-');
  if (parts.length < 4) fail('it has fewer than four dash-separated parts');
  const commit = parts.pop() as string;
  const version = parts.pop() as string;
  const arch = parts.pop() as string;
  const flavor = parts.join('-');
  if (!COMMIT.test(commit)) fail(`the commit "${commit}" is neither 8 lowercase hex characters nor "local"`);
  if (!VERSION.test(version)) fail(`the version "${version}" is not digits and dots like 1877.3 or 2150.0.0`);
  if (!(ARCHITECTURES as readonly string[]).includes(arch)) fail(`the architecture "${arch}" is not amd64 or arm64`);
  if (!FLAVOR.test(flavor)) fail(`the flavor "${flavor}" has characters other than letters, digits, "-" and "_"`);
  return { base, flavor, arch: arch as Architecture, version, commit };
}

export function isBaseName(value: string): boolean {
  try {
    parseBaseName(value);
    return true;
  } catch {
    return false;
  }
}

/** `<flavor>-<arch>`: builds sharing it compete for the same place in the version index. */
export function flavorArch(name: BaseName): string {
  return `${name.flavor}-${name.arch}`;
}

export const METADATA_PREFIX = 'meta/singles/';
export const OBJECTS_PREFIX = 'objects/';

/** The base name a metadata key names, or undefined when the key is not directly under `meta/singles/`. */
export function baseFromMetadataKey(key: string): string | undefined {
  if (!key.startsWith(METADATA_PREFIX)) return undefined;
  const rest = key.slice(METADATA_PREFIX.length);
  if (rest.length === 0 || rest.includes('/')) return undefined;
  return rest;
}

export function metadataKey(base: string): string {
  return `${METADATA_PREFIX}${base}`;
}

export function objectsPrefix(base: string): string {
  return `${OBJECTS_PREFIX}${base}/`;
}

/** Tag of a build's Garden Linux artifact manifest, as `gl-oci` writes it (spec §3). */
export function artifactManifestTag(name: BaseName): string {
  return `${name.version}-${name.base}-${name.arch}`;
}

/**
 * The tag of the artifact manifest a version index entry names (`<version>-<cname>-<arch>`): from the base name
 * when `cname` is one of this version, else from the entry's architecture (an entry another tool wrote).
 */
export function artifactTagOf(version: string, cname: string, arch: string | undefined): string {
  try {
    const name = parseBaseName(cname);
    if (name.version === version) return artifactManifestTag(name);
  } catch {
    // not one of ours: built from the entry
  }
  return `${version}-${cname}-${arch ?? 'unknown'}`;
}

/** Tag of a container build's image manifest (spec §4). */
export function containerTag(name: BaseName): string {
  return `${name.arch}-${name.version}`;
}
