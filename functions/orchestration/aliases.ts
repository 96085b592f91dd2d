/** Release aliases (spec §5): the exact bytes of the `<version>` index under more tags, so the digest is the same. */
import type { Target } from '../target/target';
import { InputError, IntegrityError } from '../util/errors';
import type { Logger } from '../util/log';

const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

export interface AliasResult {
  repository: string;
  source: string;
  digest: string;
  tags: Array<{ tag: string; changed: boolean }>;
}

export function checkTag(tag: string): string {
  if (!TAG.test(tag)) throw new InputError(`"${tag}" is not a valid tag (letters, digits, "_", "." and "-", at most 128)`);
  return tag;
}

export async function tagAliases(target: Target, version: string, tags: readonly string[], logger: Logger): Promise<AliasResult> {
  checkTag(version);
  tags.forEach(checkTag);
  const source = await target.getManifest(version);
  if (!source) throw new InputError(`${target.display}:${version} does not exist, so there is nothing to tag`);
  const result: AliasResult = { repository: target.display, source: version, digest: source.digest, tags: [] };
  for (const tag of tags) {
    if ((await target.resolve(tag)) === source.digest) {
      result.tags.push({ tag, changed: false });
      continue;
    }
    const digest = await target.putManifest(source.bytes, source.mediaType, tag);
    if (digest !== source.digest) throw new IntegrityError(`${target.display}:${tag} got digest ${digest}, expected ${source.digest}`);
    result.tags.push({ tag, changed: true });
    logger.info('alias tagged', { repository: target.display, tag, source: version, digest });
  }
  return result;
}
