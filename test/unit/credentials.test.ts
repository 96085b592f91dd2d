/** Registry credentials from Secrets Manager and from ECR, with the SDK clients mocked. */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ECRClient, GetAuthorizationTokenCommand } from '@aws-sdk/client-ecr';
import { GetSecretValueCommand, ResourceNotFoundException, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { loadConfig } from '../../functions/publish/config';
import { credentialSource } from '../../functions/publish/runtime';
import { Authenticator } from '../../functions/registry/auth';
import { ecrCredentials, ecrRegistry, secretCredentials } from '../../functions/registry/credentials';
import { RegistryError } from '../../functions/registry/errors';

const sm = mockClient(SecretsManagerClient);
const ecr = mockClient(ECRClient);
afterEach(() => {
  sm.reset();
  ecr.reset();
});

const secret = (username: string, password: string) => ({ SecretString: JSON.stringify({ username, password }) });

describe('credentials from a Secrets Manager secret', () => {
  it('reads {username, password} from the secret and keeps it for 15 minutes', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'gl/registry' }).resolves(secret('robot', 'pw-1'));
    let now = 1_000_000;
    const source = secretCredentials(async () => new SecretsManagerClient({ region: 'eu-central-1' }), 'gl/registry', { now: () => now });
    assert.deepEqual(await source.get(), { username: 'robot', password: 'pw-1' });
    now += 14 * 60 * 1000;
    await source.get();
    assert.equal(sm.commandCalls(GetSecretValueCommand).length, 1, 'cached');
    sm.on(GetSecretValueCommand).resolves(secret('robot', 'pw-2'));
    now += 2 * 60 * 1000;
    assert.deepEqual(await source.get(), { username: 'robot', password: 'pw-2' }, 'a rotation is picked up after the cache time');
    assert.equal(sm.commandCalls(GetSecretValueCommand).length, 2);
  });

  it('reads the secret again at once after invalidate (the registry refused it)', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce(secret('robot', 'old')).resolves(secret('robot', 'new'));
    const source = secretCredentials(async () => new SecretsManagerClient({ region: 'eu-central-1' }), 'gl/registry');
    assert.equal((await source.get())?.password, 'old');
    source.invalidate();
    assert.equal((await source.get())?.password, 'new');
  });

  it('shares one read among concurrent callers', async () => {
    sm.on(GetSecretValueCommand).resolves(secret('robot', 'pw'));
    const source = secretCredentials(async () => new SecretsManagerClient({ region: 'eu-central-1' }), 'gl/registry');
    await Promise.all([source.get(), source.get(), source.get()]);
    assert.equal(sm.commandCalls(GetSecretValueCommand).length, 1);
  });

  it('says when the secret has the wrong shape, without repeating what it holds', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: '{"user":"robot","pass":"hunter2-value"}' });
    const source = secretCredentials(async () => new SecretsManagerClient({ region: 'eu-central-1' }), 'gl/registry');
    await assert.rejects(source.get(), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.match(err.message, /the secret gl\/registry is not JSON of the form \{"username": "…", "password": "…"\}/);
      assert.ok(!err.message.includes('hunter2'));
      return true;
    });
  });

  it('says when the secret cannot be read', async () => {
    sm.on(GetSecretValueCommand).rejects(new ResourceNotFoundException({ message: "Secrets Manager can't find the specified secret.", $metadata: {} }));
    const source = secretCredentials(async () => new SecretsManagerClient({ region: 'eu-central-1' }), 'gl/missing');
    await assert.rejects(source.get(), /reading the registry credentials from the secret gl\/missing failed: ResourceNotFoundException/);
  });
});

describe('credentials for ECR from ecr:GetAuthorizationToken', () => {
  const token = (password: string, expiresAt: Date) => ({
    authorizationData: [{ authorizationToken: Buffer.from(`AWS:${password}`).toString('base64'), expiresAt, proxyEndpoint: 'https://123456789012.dkr.ecr.eu-central-1.amazonaws.com' }],
  });

  it('recognises ECR hosts, with their account and region', () => {
    assert.deepEqual(ecrRegistry('123456789012.dkr.ecr.eu-central-1.amazonaws.com'), { accountId: '123456789012', region: 'eu-central-1' });
    assert.deepEqual(ecrRegistry('123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn'), { accountId: '123456789012', region: 'cn-northwest-1' });
    assert.equal(ecrRegistry('ghcr.io'), undefined);
    assert.equal(ecrRegistry('123.dkr.ecr.eu-central-1.amazonaws.com'), undefined);
  });

  it('decodes the token as Basic credentials and refreshes it an hour before it expires', async () => {
    let now = Date.parse('2026-11-27T10:00:00Z');
    ecr.on(GetAuthorizationTokenCommand, { registryIds: ['123456789012'] }).resolvesOnce(token('token-1', new Date('2026-11-27T22:00:00Z'))).resolves(token('token-2', new Date('2026-11-28T10:00:00Z')));
    const source = ecrCredentials(async () => new ECRClient({ region: 'eu-central-1' }), '123456789012', () => now);
    assert.deepEqual(await source.get(), { username: 'AWS', password: 'token-1' });
    now = Date.parse('2026-11-27T20:30:00Z');
    assert.equal((await source.get())?.password, 'token-1', 'still valid for an hour and a half');
    now = Date.parse('2026-11-27T21:10:00Z');
    assert.equal((await source.get())?.password, 'token-2', 'less than an hour left: a new token');
    assert.equal(ecr.commandCalls(GetAuthorizationTokenCommand).length, 2);
  });

  it('gives the registry the token as Basic authorization', async () => {
    ecr.on(GetAuthorizationTokenCommand).resolves(token('ecr-pw', new Date(Date.now() + 12 * 3600_000)));
    const auth = new Authenticator(ecrCredentials(async () => new ECRClient({ region: 'eu-central-1' }), '123456789012'), async () => ({ status: 500, body: '' }));
    const host = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
    await auth.onChallenge(host, 'Basic realm="https://123456789012.dkr.ecr.eu-central-1.amazonaws.com/",service="ecr.amazonaws.com"', [], false);
    assert.equal(await auth.authorization(host, []), `Basic ${Buffer.from('AWS:ecr-pw').toString('base64')}`);
  });

  it('fetches a new token once when the registry refuses the current one', async () => {
    ecr.on(GetAuthorizationTokenCommand).resolvesOnce(token('revoked', new Date(Date.now() + 12 * 3600_000))).resolves(token('fresh', new Date(Date.now() + 12 * 3600_000)));
    const auth = new Authenticator(ecrCredentials(async () => new ECRClient({ region: 'eu-central-1' }), '123456789012'), async () => ({ status: 500, body: '' }));
    const host = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
    await auth.onChallenge(host, 'Basic realm="ecr"', [], false);
    await auth.onChallenge(host, 'Basic realm="ecr"', [], true, undefined, 1);
    assert.equal(await auth.authorization(host, []), `Basic ${Buffer.from('AWS:fresh').toString('base64')}`);
    await assert.rejects(auth.onChallenge(host, 'Basic realm="ecr"', [], true, undefined, 2), /rejected the configured credentials \(ecr:GetAuthorizationToken for 123456789012\)/);
  });
});

describe('which source the runtime uses', () => {
  it('the secret when one is named, then the environment, then ECR for ECR hosts, else none', async () => {
    sm.on(GetSecretValueCommand).resolves(secret('from-secret', 'x'));
    ecr.on(GetAuthorizationTokenCommand).resolves({ authorizationData: [{ authorizationToken: Buffer.from('AWS:from-ecr').toString('base64'), expiresAt: new Date(Date.now() + 3600_000 * 12) }] });
    const ecrHost = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
    const bySecret = credentialSource(loadConfig({ REGISTRY: `${ecrHost}/gl`, REGISTRY_CREDENTIALS_SECRET: 'gl/registry', AWS_REGION: 'eu-central-1' }), ecrHost);
    assert.equal((await bySecret.get())?.username, 'from-secret');
    const byEnv = credentialSource(loadConfig({ REGISTRY: 'ghcr.io/gl', REGISTRY_USERNAME: 'env-user', REGISTRY_PASSWORD: 'env-pw' }), 'ghcr.io');
    assert.equal((await byEnv.get())?.username, 'env-user');
    const byRole = credentialSource(loadConfig({ REGISTRY: `${ecrHost}/gl` }), ecrHost);
    assert.equal((await byRole.get())?.password, 'from-ecr');
    const none = credentialSource(loadConfig({ REGISTRY: 'ghcr.io/gl' }), 'ghcr.io');
    assert.equal(await none.get(), undefined);
  });
});

describe('credentials of several registries (issue 20)', () => {
  it('each host gets its own secret, or its own entry of one secret; an ECR host keeps the role', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'gl/ghcr' }).resolves(secret('ghcr-robot', 'pw-g'));
    sm.on(GetSecretValueCommand, { SecretId: 'gl/both' }).resolves({ SecretString: JSON.stringify({ 'ghcr.io': { username: 'g', password: 'pw-g' }, 'QUAY.io': { username: 'q', password: 'pw-q' } }) });
    ecr.on(GetAuthorizationTokenCommand).resolves({ authorizationData: [{ authorizationToken: Buffer.from('AWS:from-ecr').toString('base64') }] });
    const ecrHost = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
    const perHost = loadConfig({ REGISTRY: `ghcr.io/gl,${ecrHost}/gl`, REGISTRY_CREDENTIALS_SECRET: '{"ghcr.io":"gl/ghcr"}' });
    assert.equal((await credentialSource(perHost, 'ghcr.io').get())?.username, 'ghcr-robot');
    assert.equal((await credentialSource(perHost, ecrHost).get())?.password, 'from-ecr', 'a host without a secret: ECR by the role');
    const keyed = loadConfig({ REGISTRY: `ghcr.io/gl,quay.io/gl,${ecrHost}/gl`, REGISTRY_CREDENTIALS_SECRET: 'gl/both' });
    assert.equal((await credentialSource(keyed, 'ghcr.io').get())?.username, 'g');
    assert.equal((await credentialSource(keyed, 'quay.io').get())?.username, 'q', 'host keys match without regard to case');
    assert.equal((await credentialSource(keyed, ecrHost).get())?.password, 'from-ecr', 'the shared secret is not sent to ECR');
  });

  it('a flat secret for several hosts, or a keyed one without the host, is refused without showing what it holds', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'gl/flat' }).resolves(secret('robot', 'pw-flat-secret'));
    sm.on(GetSecretValueCommand, { SecretId: 'gl/other' }).resolves({ SecretString: JSON.stringify({ 'docker.io': { username: 'd', password: 'pw-other-secret' } }) });
    const flat = loadConfig({ REGISTRY: 'ghcr.io/gl,quay.io/gl', REGISTRY_CREDENTIALS_SECRET: 'gl/flat' });
    await assert.rejects(credentialSource(flat, 'ghcr.io').get(), (err: Error) => {
      assert.ok(err instanceof RegistryError);
      assert.match(err.message, /holds one username and password, and REGISTRY names several registries: key its credentials by host, \{"ghcr\.io"/);
      assert.doesNotMatch(err.message, /pw-flat-secret|robot/);
      return true;
    });
    const other = loadConfig({ REGISTRY: 'ghcr.io/gl,quay.io/gl', REGISTRY_CREDENTIALS_SECRET: 'gl/other' });
    await assert.rejects(credentialSource(other, 'quay.io').get(), (err: Error) => {
      assert.match(err.message, /the secret gl\/other holds no credentials for quay\.io/);
      assert.doesNotMatch(err.message, /pw-other-secret|docker\.io/);
      return true;
    });
  });
});
