/**
 * The two verifications a consumer runs on a signature, written again here from their sources' rules (signature
 * spec §6), independent of the publisher's code: cosign's (`cosign verify --key … --insecure-ignore-tlog=true`,
 * any layer may pass) and gardenlinux-update's (only the first layer, RSA PKCS#1 v1.5, canonical base64).
 */
import { constants, createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

const SIG = 'dev.cosignproject.cosign/signature';
const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export type GetManifest = (reference: string) => Promise<Buffer | undefined>;
export type GetBlob = (digest: string) => Promise<Buffer | undefined>;

interface Layer {
  digest: string;
  annotations?: Record<string, string>;
}

async function sigLayers(getManifest: GetManifest, digest: string): Promise<Layer[] | undefined> {
  const bytes = await getManifest(`${digest.replace(':', '-')}.sig`);
  return bytes ? ((JSON.parse(bytes.toString('utf8')) as { layers?: Layer[] }).layers ?? []) : undefined;
}

function claims(payload: Buffer): unknown {
  try {
    return (JSON.parse(payload.toString('utf8')) as { critical?: { image?: Record<string, unknown> } }).critical?.image?.['docker-manifest-digest'];
  } catch {
    return undefined;
  }
}

export async function cosignAccepts(getManifest: GetManifest, getBlob: GetBlob, digest: string, pem: string | KeyObject): Promise<boolean> {
  const key = typeof pem === 'string' ? createPublicKey(pem) : pem;
  for (const l of (await sigLayers(getManifest, digest)) ?? []) {
    const b64 = l.annotations?.[SIG];
    if (typeof b64 !== 'string') continue;
    const p = await getBlob(l.digest);
    if (!p || `sha256:${hex(p)}` !== l.digest) continue;
    const padding = key.asymmetricKeyType === 'rsa' ? { padding: constants.RSA_PKCS1_PADDING } : {};
    if (!verify('sha256', p, { key, ...padding }, Buffer.from(b64, 'base64'))) continue;
    if (claims(p) === digest) return true;
  }
  return false;
}

export async function updaterAccepts(getManifest: GetManifest, getBlob: GetBlob, digest: string, pem: string | KeyObject): Promise<boolean> {
  const key = typeof pem === 'string' ? createPublicKey(pem) : pem;
  const l = (await sigLayers(getManifest, digest))?.[0];
  if (key.asymmetricKeyType !== 'rsa' || !l) return false;
  const b64 = l.annotations?.[SIG] ?? '';
  const sig = Buffer.from(b64, 'base64');
  if (sig.toString('base64') !== b64) return false;
  const msg = await getBlob(l.digest);
  if (!msg || claims(msg) !== digest || `sha256:${hex(msg)}` !== l.digest) return false;
  return verify('sha256', msg, { key, padding: constants.RSA_PKCS1_PADDING }, sig);
}

/** Plain registry GETs for both rules (anonymous, as the updater reads a public repository). */
export function registryReader(origin: string, repository: string): { getManifest: GetManifest; getBlob: GetBlob } {
  const get = async (path: string, accept?: string): Promise<Buffer | undefined> => {
    const res = await fetch(`${origin}/v2/${repository}/${path}`, accept ? { headers: { accept } } : {});
    if (res.status === 404) return undefined;
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  };
  return {
    getManifest: (ref) => get(`manifests/${ref}`, 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json'),
    getBlob: (d) => get(`blobs/${d}`),
  };
}
