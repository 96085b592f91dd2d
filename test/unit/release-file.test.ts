import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { featuresFromRelease, parseReleaseFile } from '../../functions/gardenlinux/release-file';

const RELEASE = [
  'ID=gardenlinux',
  'NAME="Garden Linux"',
  'PRETTY_NAME="Garden Linux 1877.3"',
  'IMAGE_VERSION=1877.3',
  'GARDENLINUX_PLATFORM=container',
  'GARDENLINUX_FEATURES=_slim,base,container',
  'GARDENLINUX_VERSION=1877.3',
  'GARDENLINUX_COMMIT_ID=75df9f40',
  '',
].join('\n');

describe('parseReleaseFile', () => {
  it('reads KEY=value lines', () => {
    const v = parseReleaseFile(RELEASE);
    assert.equal(v.get('ID'), 'gardenlinux');
    assert.equal(v.get('GARDENLINUX_FEATURES'), '_slim,base,container');
    assert.equal(v.get('GARDENLINUX_COMMIT_ID'), '75df9f40');
    assert.equal(v.get('GARDENLINUX_VERSION'), '1877.3');
    assert.equal(v.get('GARDENLINUX_PLATFORM'), 'container');
    assert.equal(v.size, 8);
  });

  it('strips double and single quotes around values', () => {
    const v = parseReleaseFile(`NAME="Garden Linux"\nPRETTY='Garden Linux 1877.3'\n`);
    assert.equal(v.get('NAME'), 'Garden Linux');
    assert.equal(v.get('PRETTY'), 'Garden Linux 1877.3');
  });

  it('keeps unbalanced quotes as they are', () => {
    const v = parseReleaseFile(`A="open\nB='mixed"\n`);
    assert.equal(v.get('A'), '"open');
    assert.equal(v.get('B'), `'mixed"`);
  });

  it('keeps "=" inside values', () => {
    assert.equal(parseReleaseFile('CMDLINE=console=ttyS0 root=LABEL=ROOT\n').get('CMDLINE'), 'console=ttyS0 root=LABEL=ROOT');
  });

  it('handles CRLF line ends and surrounding spaces', () => {
    const v = parseReleaseFile('ID=gardenlinux\r\n  GARDENLINUX_FEATURES = base,metal  \r\n');
    assert.equal(v.get('ID'), 'gardenlinux');
    assert.equal(v.get('GARDENLINUX_FEATURES'), 'base,metal');
  });

  it('skips comments, blank lines and lines without a key', () => {
    const v = parseReleaseFile('# comment=ignored\n\nnot a pair\n=novalue\nID=gardenlinux\n');
    assert.deepEqual([...v.entries()], [['ID', 'gardenlinux']]);
  });

  it('keeps an empty value as an empty string', () => {
    assert.equal(parseReleaseFile('EMPTY=\n').get('EMPTY'), '');
    assert.equal(parseReleaseFile('EMPTY=""\n').get('EMPTY'), '');
  });

  it('lets a later line win over an earlier one', () => {
    assert.equal(parseReleaseFile('ID=a\nID=b\n').get('ID'), 'b');
  });
});

describe('featuresFromRelease', () => {
  it('returns GARDENLINUX_FEATURES as written', () => {
    assert.equal(featuresFromRelease(RELEASE), '_slim,base,container');
  });
  it('unquotes the value', () => {
    assert.equal(featuresFromRelease('GARDENLINUX_FEATURES="base,server,metal,_pxe"\n'), 'base,server,metal,_pxe');
  });
  it('is undefined when the key is missing', () => {
    assert.equal(featuresFromRelease('ID=gardenlinux\n'), undefined);
  });
  it('is undefined when the value is empty (so the caller falls back to modifiers)', () => {
    assert.equal(featuresFromRelease('GARDENLINUX_FEATURES=\n'), undefined);
    assert.equal(featuresFromRelease('GARDENLINUX_FEATURES=""\n'), undefined);
  });
});
