/** Refusals caused by a customer-managed KMS key say what to do, naming the deployment's own parameter. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { KMS_KEYS_PARAMETER, kmsHint } from '../../functions/util/kms-hint';

const named = (name: string, message: string): Error => Object.assign(new Error(message), { name });

describe('kmsHint', () => {
  it('names the parameter serverless.yml has', () => {
    const sls = YAML.parse(readFileSync('serverless.yml', 'utf8')) as { params: { default: Record<string, unknown> } };
    assert.ok(KMS_KEYS_PARAMETER in sls.params.default, `serverless.yml has no parameter ${KMS_KEYS_PARAMETER}`);
  });

  it('names the KMS action AWS says is missing', () => {
    const decrypt = kmsHint(named('AccessDenied', 'User: arn:aws:sts::1:assumed-role/r/f is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:eu-central-1:1:key/k'));
    assert.match(decrypt ?? '', /^the function's role lacks kms:Decrypt on the KMS key that encrypts it: add the key's ARN to the deployment parameter kmsKeyArns/);
    // A record written into a bucket whose default encryption is such a key.
    const write = kmsHint(named('AccessDenied', 'User: … is not authorized to perform: kms:GenerateDataKey on resource: arn:aws:kms:…'));
    assert.match(write ?? '', /lacks kms:GenerateDataKey .*kmsKeyArns/);
  });

  it("reads Secrets Manager's answers: Access to KMS is not allowed, DecryptionFailure", () => {
    assert.match(kmsHint(named('AccessDeniedException', 'Access to KMS is not allowed')) ?? '', /lacks kms:Decrypt .*kmsKeyArns/);
    assert.match(kmsHint(named('DecryptionFailure', "Secrets Manager can't decrypt the protected secret text using the provided KMS key.")) ?? '', /lacks kms:Decrypt .*or the key is disabled.*kmsKeyArns/);
  });

  it("S3's KMS.* codes: a key that cannot be used", () => {
    assert.match(kmsHint(named('KMS.DisabledException', 'arn:aws:kms:… is disabled.')) ?? '', /cannot be used \(KMS\.DisabledException\): check that it is enabled/);
    // A key's ARN in the message is not an action ("kms:eu" was read from it).
    const arn = kmsHint(named('KMS.DisabledException', 'arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab is disabled.'));
    assert.match(arn ?? '', /cannot be used \(KMS\.DisabledException\)/);
    assert.doesNotMatch(arn ?? '', /kms:eu/);
  });

  it('says nothing about refusals KMS has no part in', () => {
    assert.equal(kmsHint(named('AccessDenied', 'Access Denied')), undefined);
    assert.equal(kmsHint(named('AccessDeniedException', 'User: … is not authorized to perform: secretsmanager:GetSecretValue on resource: gl/registry')), undefined);
    assert.equal(kmsHint('kms:Decrypt'), undefined);
  });
});
