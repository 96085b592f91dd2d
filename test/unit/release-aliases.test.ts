import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { aliasFor, aliasGroups, compareVersions, parseAliasTemplates } from '../../functions/gardenlinux/release-aliases';
import { loadConfig } from '../../functions/publish/config';

const t = (s: string) => parseAliasTemplates(s);

describe('release alias templates (ALIAS_TAGS)', () => {
  it('fills in the placeholders, and skips a template a version does not fit', () => {
    const [latest, major, dotZero, full] = t('latest,{major},{version}.0,{major}.{minor}.{patch}');
    assert.equal(aliasFor(latest!, '1877.3'), 'latest');
    assert.equal(aliasFor(major!, '1877.3'), '1877');
    assert.equal(aliasFor(dotZero!, '1877.3'), '1877.3.0');
    assert.equal(aliasFor(full!, '1877.3'), undefined, 'no patch part');
    assert.equal(aliasFor(full!, '1877.3.1'), '1877.3.1');
    assert.equal(aliasFor(major!, 'today'), undefined, 'not a version');
  });

  it('refuses what would not make a tag, unknown placeholders and duplicates, naming the template by its place (issue 19)', () => {
    assert.throws(() => t('latest,{build}'), /^InputError: ALIAS_TAGS: template #2 uses a placeholder other than \{version\}, \{major\}, \{minor\} and \{patch\}$/);
    assert.throws(() => t('latest,-x'), /^InputError: ALIAS_TAGS: template #2 does not make a valid tag/);
    assert.throws(() => t('latest,{major},latest'), /template #3 repeats template #1/);
    assert.throws(() => t('1877'), /template #1 looks like a version/);
    assert.throws(() => loadConfig({ REGISTRY: 'ghcr.io/gl/gl', ALIAS_TAGS: 'latest,a b' }), /^ConfigError: invalid configuration: ALIAS_TAGS: template #2 does not make a valid tag \(letters/);
    assert.deepEqual(loadConfig({ REGISTRY: 'ghcr.io/gl/gl', ALIAS_TAGS: ' latest , {major} ' }).aliasTemplates.map((x) => x.text), ['latest', '{major}']);
    assert.deepEqual(loadConfig({ REGISTRY: 'ghcr.io/gl/gl' }).aliasTemplates, []);
  });
});

describe('comparing Garden Linux versions', () => {
  it('compares part by part, numerically', () => {
    const sorted = ['1877.10', '1592.18', '1877.9', '1877', '1877.3.1', '1877.3', '934.11'].sort(compareVersions);
    assert.deepEqual(sorted, ['934.11', '1592.18', '1877', '1877.3', '1877.3.1', '1877.9', '1877.10']);
    assert.equal(compareVersions('1877.3', '1877.3'), 0);
  });
});

describe('which version each alias must hold', () => {
  const templates = t('latest,{major},{version}.0');
  const groups = (version: string, versions: string[]) => Object.fromEntries(aliasGroups(templates, version, versions).map((g) => [g.alias, g.members]));

  it('latest groups every version, {major} the versions of its major, {version}.0 the version itself; highest first', () => {
    assert.deepEqual(groups('1877.3', ['1592.18', '1877.3', '1877.10']), { latest: ['1877.10', '1877.3', '1592.18'], '1877': ['1877.10', '1877.3'], '1877.3.0': ['1877.3'] });
    assert.deepEqual(groups('1592.18', ['1592.18', '1877.3']), { latest: ['1877.3', '1592.18'], '1592': ['1592.18'], '1592.18.0': ['1592.18'] });
  });

  it('counts the version being published even before its records are listed', () => {
    assert.deepEqual(groups('1877.4', ['1877.3']), { latest: ['1877.4', '1877.3'], '1877': ['1877.4', '1877.3'], '1877.4.0': ['1877.4'] });
  });

  it('two templates naming one alias make one group of both', () => {
    const both = parseAliasTemplates('{major},{version}');
    assert.deepEqual(
      aliasGroups(both, '1877', ['1877', '1877.3']).map((g) => [g.alias, g.members]),
      [['1877', ['1877.3', '1877']]],
    );
  });
});
