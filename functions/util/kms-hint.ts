/**
 * Objects and secrets encrypted with a customer-managed KMS key can be read only when the function's role may use
 * that key, which the deployment grants through one parameter. A refusal for that reason says so, or the job
 * would fail with an AccessDenied that looks like a missing S3 or Secrets Manager permission.
 */

/** The deployment parameter (serverless.yml) that lets the function's role use customer-managed KMS keys. */
export const KMS_KEYS_PARAMETER = 'kmsKeyArns';

const WHERE = `add the key's ARN to the deployment parameter ${KMS_KEYS_PARAMETER} (docs/operations.md, "Encrypted buckets and secrets")`;

/**
 * What to do about an AWS error that a KMS key caused, or undefined for any other error. AWS names the missing
 * action in the message ("… is not authorized to perform: kms:Decrypt …", S3's AccessDenied); Secrets Manager says
 * "Access to KMS is not allowed" (AccessDeniedException), or DecryptionFailure; S3 has KMS.* codes for a key that
 * cannot be used at all.
 */
export function kmsHint(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // An action is capitalised (kms:Decrypt); a key ARN (arn:aws:kms:eu-central-1:…) is not one.
  const action = /\bkms:([A-Z][A-Za-z]+)/.exec(err.message)?.[1];
  if (action !== undefined) return `the function's role lacks kms:${action} on the KMS key that encrypts it: ${WHERE}`;
  if (/access to kms is not allowed/i.test(err.message)) return `the function's role lacks kms:Decrypt on the KMS key that encrypts it: ${WHERE}`;
  if (err.name === 'DecryptionFailure') return `the function's role lacks kms:Decrypt on the KMS key that encrypts it, or the key is disabled: ${WHERE}`;
  if (err.name.startsWith('KMS.')) return `the KMS key that encrypts it cannot be used (${err.name}): check that it is enabled, and ${WHERE}`;
  return undefined;
}
