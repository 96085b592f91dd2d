/**
 * Manifest reads and writes of one repository. Every read sends the full Accept list (registries answer 404 for
 * a manifest whose type the request does not accept), only a 404 means "none" (spec §5), and every manifest read
 * or written is checked against its digest.
 */
import { isDigest, sha256Digest } from '../oci/digest';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types';
import { IntegrityError } from '../util/errors';
import { RegistryError } from './errors';
import { Operation } from './failure-budget';
import { checkClaimedDigest, errorFrom, fail, header } from './http';
import { sleep } from './retry';
import type { RepositoryAccess } from './repository-access';

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

function mediaTypeHeader(res: { headers: Record<string, string | string[] | undefined> }): string | undefined {
  return header(res, 'content-type')?.split(';')[0]?.trim();
}

export async function headManifest(repo: RepositoryAccess, reference: string): Promise<{ digest?: string; mediaType?: string } | undefined> {
  const what = `HEAD manifest ${repo.name}:${reference}`;
  const res = await repo.send({ method: 'HEAD', url: repo.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT }, what });
  await res.body.dump();
  if (res.status === 404) return undefined;
  if (res.status !== 200) return fail(res, what);
  const digest = header(res, 'docker-content-digest');
  const mediaType = mediaTypeHeader(res);
  return { ...(digest ? { digest } : {}), ...(mediaType ? { mediaType } : {}) };
}

/** The manifest at a tag or digest, or undefined on 404 (and only then: spec §5). */
export async function getManifest(repo: RepositoryAccess, reference: string): Promise<FetchedManifest | undefined> {
  const what = `GET manifest ${repo.name}:${reference}`;
  const { res, bytes } = await repo.client.sendAndRead(
    { method: 'GET', url: repo.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT }, scopes: repo.scopes, what },
    repo.scope,
    2 * MAX_MANIFEST_BYTES,
  );
  if (res.status === 404) {
    await res.body.dump();
    return undefined;
  }
  if (res.status !== 200 || bytes === undefined) return fail(res, what);
  const digest = sha256Digest(bytes);
  if (isDigest(reference) && reference !== digest) {
    throw new IntegrityError(`${what}: the registry returned bytes with digest ${digest}`);
  }
  checkClaimedDigest(res, digest, what);
  let body: { mediaType?: unknown };
  try {
    body = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    if (body === null || typeof body !== 'object') throw new Error('not an object');
  } catch {
    throw new RegistryError(`${what}: the registry returned something that is not a JSON manifest`, { status: 200, code: 'MANIFEST_INVALID' });
  }
  let mediaType = mediaTypeHeader(res);
  if (!mediaType || mediaType === 'application/json' || mediaType === 'application/octet-stream') {
    mediaType = typeof body.mediaType === 'string' ? body.mediaType : undefined;
  }
  if (!mediaType) throw new RegistryError(`${what}: the registry did not say what the manifest is`, { status: 200, code: 'MANIFEST_INVALID' });
  return { bytes, mediaType, digest };
}

/**
 * PUTs manifest bytes exactly as given; returns their digest after checking the registry's.
 *
 * A 400 DIGEST_INVALID is tried again: the bytes' digest is ours, computed here, so the refusal comes from the
 * registry failing to read what the manifest names (distribution's storage rewrites a blob's or manifest's link
 * file in place, and a manifest checked while another request rewrites one reads it half-written).
 */
export async function putManifest(repo: RepositoryAccess, bytes: Buffer, mediaType: string, reference: string): Promise<string> {
  const what = `PUT manifest ${repo.name}:${reference}`;
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new RegistryError(`${what}: ${bytes.length} bytes is above the 4 MiB registries accept`, { code: 'SIZE_INVALID' });
  }
  const digest = sha256Digest(bytes);
  const op = new Operation();
  for (let attempt = 1; ; attempt++) {
    const res = await repo.send({ method: 'PUT', url: repo.url(`manifests/${reference}`), headers: { 'content-type': mediaType }, body: bytes, what }, op);
    if (res.status === 201 || res.status === 200) {
      await res.body.dump();
      checkClaimedDigest(res, digest, what);
      return digest;
    }
    const err = await errorFrom(res, what);
    if (!(res.status === 400 && err.code === 'DIGEST_INVALID')) throw err;
    const wait = repo.client.nextAttempt(err.withRetryable(true), attempt, repo.scope, op);
    repo.client.logger.warn('the registry could not check a manifest it was sent, sending it again', { request: what, attempt, waitMs: wait, error: err.message });
    await sleep(wait, repo.scope.signal);
  }
}
