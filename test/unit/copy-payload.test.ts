/**
 * How a copy is asked for and refused before it reads anything: the `copy` payload, the locations it names
 * (`oci-archive:` for a copy only, never REGISTRY), the job's own checks, and where the registry credentials go.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../functions/publish/config';
import { normaliseEvent } from '../../functions/publish/events';
import { createHandler } from '../../functions/publish/handler';
import { copyCredentials } from '../../functions/publish/runtime';
import { displayLocation, parseCopyLocation, parseTargetLocation } from '../../functions/registry/location';
import { InputError } from '../../functions/util/errors';
import { firstJob } from '../helpers/jobs';

describe('copy locations', () => {
  it('a copy takes what REGISTRY takes, and oci-archive:<file>', () => {
    assert.deepEqual(parseCopyLocation('oci-archive:./carry/gl.tar', '--to'), { kind: 'oci-archive', file: resolve('carry/gl.tar') });
    assert.deepEqual(parseCopyLocation('oci-layout:out', '--to'), { kind: 'oci-layout', dir: resolve('out') });
    assert.deepEqual(parseCopyLocation('http://127.0.0.1:5000/gl', '--from'), { kind: 'registry', scheme: 'http', host: '127.0.0.1:5000', repository: 'gl' });
    assert.equal(displayLocation(parseCopyLocation('oci-archive:/x/gl.tar', 'to')), 'oci-archive:/x/gl.tar');
    assert.equal(displayLocation(parseCopyLocation('ghcr.io/gardenlinux/gardenlinux', 'to')), 'ghcr.io/gardenlinux/gardenlinux');
  });

  it('names the option in its messages, never the value', () => {
    assert.throws(() => parseCopyLocation('oci-archive:', '--to'), /^InputError: --to oci-archive: names no file; expected "oci-layout:<dir>", "oci-archive:<file>", /);
    assert.throws(() => parseCopyLocation('oci-archive:/tmp/', '--to'), /--to oci-archive: names a directory/);
    assert.throws(() => parseCopyLocation('user:s3cret@ghcr.io/gl', '--from'), (e: unknown) => e instanceof InputError && /^--from must not contain credentials/.test(e.message) && !e.message.includes('s3cret'));
  });

  it('REGISTRY refuses an archive: nothing can be published into one', () => {
    assert.throws(() => parseTargetLocation('oci-archive:/tmp/gl.tar'), /^InputError: REGISTRY: an oci-archive: is what "copy" reads or writes .*; publish to an oci-layout:<dir> and copy the version to an oci-archive:<file>$/);
    assert.throws(() => loadConfig({ REGISTRY: 'oci-archive:/tmp/gl.tar' }), /^ConfigError: invalid configuration: REGISTRY: an oci-archive: is what "copy" reads/);
  });
});

describe('the copy payload', () => {
  it('becomes one copy job with its locations parsed; from defaults to REGISTRY, aliases to false', () => {
    assert.deepEqual(normaliseEvent({ action: 'copy', version: '1877.3', to: 'oci-archive:/carry/gl.tar' }).jobs, [
      { kind: 'copy', version: '1877.3', to: { kind: 'oci-archive', file: '/carry/gl.tar' }, aliases: false, origin: 'manual' },
    ]);
    assert.deepEqual(normaliseEvent({ action: 'copy', version: '2150.0.0', from: 'oci-layout:/l', to: 'ghcr.io/gl/gl', aliases: true }).jobs[0], {
      kind: 'copy',
      version: '2150.0.0',
      to: { kind: 'registry', scheme: 'https', host: 'ghcr.io', repository: 'gl/gl' },
      from: { kind: 'oci-layout', dir: '/l' },
      aliases: true,
      origin: 'manual',
    });
  });

  it('refuses a payload without a destination, with a location that is none, or with unknown fields', () => {
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877.3' }), /^InputError: invalid copy payload: to: /);
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877', to: 'ghcr.io/gl/gl' }), /invalid copy payload: version: expected a Garden Linux version/);
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877.3', to: 'not a place' }), /^InputError: invalid copy payload: "to" names no repository; expected /);
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877.3', to: 'ghcr.io/gl/gl', from: 'oci-archive:' }), /invalid copy payload: "from" oci-archive: names no file/);
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877.3', to: 'ghcr.io/gl/gl', aliases: 'yes' }), /invalid copy payload: aliases: /);
    assert.throws(() => normaliseEvent({ action: 'copy', version: '1877.3', to: 'ghcr.io/gl/gl', tags: ['x'] }), /invalid copy payload: /);
  });

  it('the job refuses to copy a place onto itself, and --aliases without ALIAS_TAGS, before it reads anything', async () => {
    const run = (payload: Record<string, unknown>) =>
      firstJob(createHandler({ env: { REGISTRY: 'oci-layout:/nonexistent/gl-copy-test' }, logSink: () => undefined })({ action: 'copy', version: '1877.3', ...payload }));
    const same = await run({ to: 'oci-layout:/nonexistent/gl-copy-test' });
    assert.deepEqual([same.outcome, same.errorKind, same.error], ['failed', 'input', 'the copy would read and write oci-layout:/nonexistent/gl-copy-test: give another destination; nothing was copied']);
    const aliases = await run({ to: 'oci-layout:/nonexistent/elsewhere', aliases: true });
    assert.deepEqual([aliases.outcome, aliases.errorKind], ['failed', 'input']);
    assert.match(aliases.error ?? '', /^copying the aliases needs their templates: set ALIAS_TAGS/);
    const notALayout = await run({ from: 'oci-layout:/nonexistent/source', to: 'oci-layout:/nonexistent/elsewhere' });
    assert.deepEqual([notALayout.errorKind, notALayout.error], ['input', 'oci-layout:/nonexistent/source is not an OCI image layout (it has no oci-layout file); nothing was copied']);
  });
});

describe('copy credentials', () => {
  it("go to REGISTRY's host only: a registry on another host is reached without them", async () => {
    const config = loadConfig({ REGISTRY: 'registry.internal:5000/gl', REGISTRY_USERNAME: 'site', REGISTRY_PASSWORD: 'pw-not-for-others' });
    assert.deepEqual(await copyCredentials(config, 'registry.internal:5000').get(), { username: 'site', password: 'pw-not-for-others' });
    assert.equal(await copyCredentials(config, 'ghcr.io').get(), undefined);
    assert.equal(await copyCredentials(config, 'registry.internal:5001').get(), undefined, 'another port is another registry');
    const layout = loadConfig({ REGISTRY: 'oci-layout:/tmp/x', REGISTRY_USERNAME: 'site', REGISTRY_PASSWORD: 'pw' });
    assert.equal(await copyCredentials(layout, 'registry.internal:5000').get(), undefined);
  });
});
