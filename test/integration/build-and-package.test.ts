/**
 * What a deployment is made of, built as `npm run package` builds it (one file, so the build and the package
 * never race over dist/):
 * - the Lambda bundle: self-contained, copied alone into an empty directory it publishes a build;
 * - the CloudFormation template osls generates from serverless.yml, offline and without AWS credentials;
 * - infra/failure-queue-and-alarms.yml, which the template imports the failure queue from.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { loadConfig } from '../../functions/publish/config';
import { SIGNING_ALGORITHM } from '../../functions/signing/signer';
import { LEFT_OUT_OF_BUILTINS } from '../../tools/build';
import { sampleBuild, writeBuildDir } from '../../tools/sample-builds';

const exec = promisify(execFile);

describe('the Lambda bundle', () => {
  let dir: string;
  const build = sampleBuild({ flavor: 'container', arch: 'arm64' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gl-bundle-'));
    await exec(process.execPath, ['--import', 'tsx', 'tools/build.ts'], { timeout: 120_000 });
    // What Lambda runs: the deployment package, unpacked (by python3's zipfile, a reader other than our writer).
    await exec('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', 'dist/publish.zip', join(dir, 'task')]);
    await writeBuildDir(join(dir, 'bucket'), build);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is zipped with index.mjs at the top, as Lambda expects for the handler index.handler, and every chunk it loads', async () => {
    const { stdout } = await exec('python3', ['-c', 'import sys, zipfile; print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))', 'dist/publish.zip']);
    const names = stdout.trim().split('\n').sort();
    const built = (await readdir('dist/publish', { recursive: true })).filter((f) => f.endsWith('.mjs') || f.endsWith('.mjs.map')).sort();
    assert.deepEqual(names, built);
    assert.ok(names.includes('index.mjs'));
    assert.ok(names.some((n) => n.startsWith('chunks/') && n.endsWith('.mjs')), 'code loaded only when it is needed is in chunks/');
  });

  it('holds only what runs: undici without fetch, WebSocket and mocks; tar, undici, KMS, ECR and the other credential providers outside index.mjs; maps without sources', async () => {
    const task = join(dir, 'task');
    const files = (await readdir(task, { recursive: true })).filter((f) => f.endsWith('.mjs'));
    const code = new Map(await Promise.all(files.map(async (f) => [f, await readFile(join(task, f), 'utf8')] as const)));
    const all = [...code.values()].join('\n');
    // undici's entry module brings these; the subset (functions/registry/undici-subset.mjs) does not.
    for (const absent of ['MockAgent', 'fetch failed', 'WebSocketStream', 'SqliteCacheStore']) assert.ok(!all.includes(absent), `${absent} is in the bundle`);
    const index = code.get('index.mjs') ?? '';
    // What a skipped document or a build without archives never runs is loaded when needed.
    assert.ok(!index.includes('ustar') && all.includes('ustar'), 'the tar reader is in a chunk of its own');
    assert.ok(!index.includes('llhttp') && all.includes('llhttp'), 'undici is loaded with the first registry request');
    assert.ok(!index.includes('sso-oidc'), "the SSO credential provider's client is in a chunk");
    // The KMS and ECR clients are loaded by a function that signs, or pushes to ECR (their services' wire names).
    for (const service of ['TrentService', 'AmazonEC2ContainerRegistry_V20150921']) assert.ok(!index.includes(service) && all.includes(service), `${service} is in a chunk`);
    // The getters of built-ins the bundles leave out are used nowhere in them (tools/build.ts).
    for (const [f, text] of code) for (const name of LEFT_OUT_OF_BUILTINS) assert.doesNotMatch(text, new RegExp(`\\.${name}\\b`), `${f} uses ${name}`);
    // No built-in is imported as an ES module (tools/build.ts: builtins-without-facade).
    for (const [f, text] of code) assert.doesNotMatch(text, /from\s*"(node:)?(fs|crypto|process|http|https|stream|util)"/, `${f} imports a built-in as an ES module`);
    for (const f of files) {
      const map = JSON.parse(await readFile(join(task, `${f}.map`), 'utf8')) as { sources: string[]; sourcesContent?: unknown };
      assert.equal(map.sourcesContent, undefined, `${f}.map carries sources`);
      // Stack traces still name the file: the handler's code maps back to functions/publish/handler.ts.
      if (f === 'index.mjs') assert.ok(map.sources.some((s) => s.endsWith('functions/publish/handler.ts')), map.sources.slice(0, 5).join(', '));
    }
  });

  const invoke = async (event: unknown, env: Record<string, string> = { SOURCE_DIR: resolve(dir, 'bucket') }): Promise<{ ok: boolean; out: string }> => {
    const script = `
      const { handler } = await import(${JSON.stringify(join(dir, 'task', 'index.mjs'))});
      try { console.log(JSON.stringify(await handler(${JSON.stringify(event)}, { awsRequestId: 'bundle-test' }))); }
      catch (err) { console.log(JSON.stringify({ error: err.message })); }`;
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script], {
      cwd: dir,
      env: { PATH: process.env.PATH, REGISTRY: `oci-layout:${join(dir, 'layout')}`, LOG_LEVEL: 'error', ...env },
      timeout: 60_000,
    });
    const last = stdout.trim().split('\n').pop() ?? '';
    return { ok: !last.includes('"error"'), out: last };
  };

  it('runs without node_modules and publishes a build', async () => {
    const r = await invoke({ action: 'publish', bucket: 'local-directory', base: build.base });
    assert.ok(r.ok, r.out);
    const result = JSON.parse(r.out) as { jobs: Array<{ outcome: string; container?: { digest: string } }> };
    assert.equal(result.jobs[0]?.outcome, 'published');
    assert.equal(result.jobs[0]?.container?.digest, build.image?.manifestDigest);
  });

  it("reaches S3 through the AWS SDK, also where the SDK keeps a request's context in AsyncLocalStorage (Lambda with several requests at once)", async () => {
    // Nothing listens on port 9: the read fails at the connection, which is what the SDK got to. With the built-ins
    // plugin leaving out AsyncLocalStorage (a getter of node:async_hooks), it failed before: "is not a constructor".
    const r = await invoke(
      { action: 'publish', bucket: 'gardenlinux-github-releases', base: build.base },
      { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'eu-central-1', AWS_MAX_ATTEMPTS: '1', AWS_LAMBDA_MAX_CONCURRENCY: '4' },
    );
    assert.ok(!r.ok, r.out);
    assert.match(r.out, /ECONNREFUSED/);
    assert.doesNotMatch(r.out, /not a constructor|undefined/);
  });

  it('rejects an unknown event and names the accepted shapes', async () => {
    const r = await invoke({ hello: 'world' });
    assert.ok(!r.ok);
    assert.match(r.out, /unrecognised event; accepted are S3 notifications/);
  });
});

type Rule = { RuleCondition?: unknown; Assertions: Array<{ Assert: unknown; AssertDescription: string }> };
type Template = {
  Resources: Record<string, { Type: string; Properties: Record<string, unknown>; Condition?: string }>;
  Conditions?: Record<string, unknown>;
  Rules?: Record<string, Rule>;
};

type Statement = { role: string; actions: string[]; resources: unknown[]; condition?: unknown };

/** Every Resource value of every IAM statement in the template, with the statement's actions and condition. */
function statements(template: Template): Statement[] {
  const out: Statement[] = [];
  for (const [name, r] of Object.entries(template.Resources)) {
    const docs: unknown[] =
      r.Type === 'AWS::IAM::Role'
        ? ((r.Properties.Policies as Array<{ PolicyDocument: unknown }> | undefined) ?? []).map((p) => p.PolicyDocument)
        : r.Type === 'AWS::IAM::Policy'
          ? [r.Properties.PolicyDocument]
          : [];
    for (const doc of docs as Array<{ Statement: Array<{ Action: string | string[]; Resource: unknown; Condition?: unknown }> }>) {
      for (const st of doc.Statement) {
        out.push({ role: name, actions: [st.Action].flat(), resources: [st.Resource].flat(), ...(st.Condition ? { condition: st.Condition } : {}) });
      }
    }
  }
  return out;
}

/** The account a template is deployed into, for the pseudo parameters of an evaluation. */
const ACCOUNT = { 'AWS::Partition': 'aws', 'AWS::Region': 'eu-central-1', 'AWS::AccountId': '123456789012' } as Record<string, string>;

/**
 * A value of the template as CloudFormation would deploy it into ACCOUNT: Fn::If by the template's conditions
 * (AWS::NoValue: undefined), Fn::Select, Fn::Split, Fn::Sub and Ref of pseudo parameters. Anything else is kept.
 */
function deployed(template: Template, value: unknown, account = ACCOUNT): unknown {
  if (Array.isArray(value)) return value.map((v) => deployed(template, v, account));
  if (value === null || typeof value !== 'object') return value;
  const v = value as Record<string, unknown>;
  const args = (name: string) => v[name] as unknown[];
  if ('Fn::If' in v) {
    const [name, yes, no] = args('Fn::If') as [string, unknown, unknown];
    return deployed(template, condition(template, template.Conditions?.[name], account) ? yes : no, account);
  }
  if ('Fn::Select' in v) return (deployed(template, args('Fn::Select')[1], account) as unknown[])[Number(args('Fn::Select')[0])];
  if ('Fn::Split' in v) return String(deployed(template, args('Fn::Split')[1], account)).split(String(args('Fn::Split')[0]));
  if ('Fn::Sub' in v && typeof v['Fn::Sub'] === 'string') {
    return v['Fn::Sub'].replace(/\$\{([^}]+)\}/g, (_, name: string) => {
      if (!(name in account)) throw new Error(`cannot substitute \${${name}}`);
      return account[name] as string;
    });
  }
  if ('Ref' in v && typeof v.Ref === 'string') return v.Ref === 'AWS::NoValue' ? undefined : v.Ref in account ? account[v.Ref] : value;
  if (Object.keys(v).some((k) => k.startsWith('Fn::'))) return value;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, deployed(template, x, account)]));
}

/** A condition of the template, evaluated as CloudFormation would (its operands are literals after packaging). */
function condition(template: Template, value: unknown, account = ACCOUNT): boolean {
  const v = value as Record<string, unknown[]>;
  if (v['Fn::Not']) return !condition(template, v['Fn::Not'][0], account);
  if (v['Fn::Or']) return v['Fn::Or'].some((c) => condition(template, c, account));
  if (v['Fn::And']) return v['Fn::And'].every((c) => condition(template, c, account));
  if (v['Fn::Equals']) return deployed(template, v['Fn::Equals'][0], account) === deployed(template, v['Fn::Equals'][1], account);
  if (typeof (value as { Condition?: unknown }).Condition === 'string') return condition(template, template.Conditions?.[(value as { Condition: string }).Condition], account);
  throw new Error(`cannot evaluate ${JSON.stringify(value)}`);
}

/**
 * The descriptions of the template's rule assertions that fail when deployed into `region`, as CloudFormation
 * evaluates its Rules before it creates or changes anything (the rule functions these rules use: Fn::Equals, Fn::Not,
 * Fn::And, Fn::Or, and Ref of a pseudo parameter). A Rules section cannot be tried offline otherwise.
 */
function failedAssertions(template: Template, region: string): string[] {
  const account: Record<string, string> = { ...ACCOUNT, 'AWS::Region': region };
  const holds = (e: unknown): boolean | string => {
    if (typeof e === 'string') return e;
    const v = e as Record<string, unknown>;
    const args = (name: string) => v[name] as unknown[];
    if ('Fn::Equals' in v) return holds(args('Fn::Equals')[0]) === holds(args('Fn::Equals')[1]);
    if ('Fn::Not' in v) return !holds(args('Fn::Not')[0]);
    if ('Fn::And' in v) return args('Fn::And').every((c) => holds(c) === true);
    if ('Fn::Or' in v) return args('Fn::Or').some((c) => holds(c) === true);
    if (typeof v.Ref === 'string' && v.Ref in account) return account[v.Ref] as string;
    throw new Error(`cannot evaluate ${JSON.stringify(e)} in a rule`);
  };
  return Object.values(template.Rules ?? {}).flatMap((rule) =>
    rule.RuleCondition !== undefined && holds(rule.RuleCondition) !== true ? [] : rule.Assertions.filter((a) => holds(a.Assert) !== true).map((a) => a.AssertDescription),
  );
}

/** IAM's wildcards in a Resource: `*` any run of characters, `?` any one. */
function iamMatches(pattern: string, arn: string): boolean {
  return new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`).test(arn);
}

/** The function's environment as deployed: each Fn::If resolved with the template's own conditions. */
function deployedEnv(template: Template): Record<string, string> {
  const vars = (template.Resources.PublishLambdaFunction?.Properties as { Environment: { Variables: Record<string, unknown> } }).Environment.Variables;
  return Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, deployed(template, v) as string]));
}

/**
 * Where the code lists (objects/<base>/ in publish-build.ts; records/ and digests/ under the state prefix in
 * state-store.ts), and meta/singles/, whose missing keys S3Store tells from refused ones by listing them.
 */
function listedPrefixes(statePrefix: string): string[] {
  return ['objects/*', 'meta/singles/*', `${statePrefix}records/*`, `${statePrefix}digests/*`];
}

/** The s3:prefix patterns the function's one s3:ListBucket statement is restricted to. */
function listCondition(template: Template): unknown {
  const list = statements(template).filter((s) => s.actions.includes('s3:ListBucket'));
  assert.equal(list.length, 1);
  assert.deepEqual(Object.keys(list[0]?.condition ?? {}), ['StringLike'], 'a condition of one operator');
  const byKey = (list[0]?.condition as { StringLike: Record<string, unknown> }).StringLike;
  assert.deepEqual(Object.keys(byKey), ['s3:prefix']);
  return byKey['s3:prefix'];
}

/** The template osls makes of serverless.yml with these `--param` settings, into `out`. */
async function packageTemplate(out: string, params: string[] = []): Promise<Template> {
  // No AWS credentials, no network use: what CI and a developer without an account can run.
  await exec(process.execPath, ['node_modules/osls/bin/serverless.js', 'package', '--stage', 'prod', '--package', out, ...params.map((p) => `--param=${p}`)], {
    env: { PATH: process.env.PATH, HOME: out, SLS_TELEMETRY_DISABLED: '1', SLS_NOTIFICATIONS_MODE: 'off' },
    timeout: 120_000,
  });
  return JSON.parse(await readFile(join(out, 'cloudformation-template-update-stack.json'), 'utf8')) as Template;
}

describe('the CloudFormation template (osls package)', () => {
  let template: Template;
  let out: string;

  before(async () => {
    out = await mkdtemp(join(tmpdir(), 'gl-package-'));
    template = await packageTemplate(out);
  });
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  const fn = () => template.Resources.PublishLambdaFunction?.Properties as Record<string, unknown>;

  it('runs nodejs22.x on arm64 with 2 GB, 900 s, 512 MB of /tmp and the zip npm run build made, with no reserved concurrency', () => {
    assert.equal(fn().Runtime, 'nodejs22.x');
    assert.deepEqual(fn().Architectures, ['arm64']);
    assert.equal(fn().MemorySize, 2048);
    assert.equal(fn().Timeout, 900);
    assert.deepEqual(fn().EphemeralStorage, { Size: 512 });
    assert.equal(fn().Handler, 'index.handler');
    assert.match(String((fn().Code as { S3Key: string }).S3Key), /publish\.zip$/);
    // A new account may have 10 executions in all, and Lambda refuses a reservation that leaves fewer than 10.
    assert.deepEqual(fn().ReservedConcurrentExecutions, { 'Fn::If': ['ReservesConcurrency', 'none', { Ref: 'AWS::NoValue' }] });
    assert.equal(condition(template, template.Conditions?.ReservesConcurrency), false);
    assert.equal(deployed(template, fn().ReservedConcurrentExecutions), undefined, 'the property is left out');
  });

  it('logs JSON, kept 30 days', () => {
    assert.deepEqual(fn().LoggingConfig, { ApplicationLogLevel: 'INFO', LogFormat: 'JSON', SystemLogLevel: 'WARN' });
    assert.equal(template.Resources.PublishLogGroup?.Properties.RetentionInDays, 30);
  });

  it('is triggered by objects created under meta/singles/ of the existing bucket, and nothing else', () => {
    const s3 = Object.values(template.Resources).filter((r) => r.Type === 'Custom::S3');
    assert.equal(s3.length, 1);
    assert.equal(s3[0]?.Properties.BucketName, 'gardenlinux-github-releases');
    assert.deepEqual(s3[0]?.Properties.BucketConfigs, [{ Event: 's3:ObjectCreated:*', Rules: [{ Prefix: 'meta/singles/' }] }]);
    assert.ok(!Object.values(template.Resources).some((r) => r.Type === 'AWS::S3::Bucket' && r.Properties.BucketName === 'gardenlinux-github-releases'), 'the bucket is not created');
  });

  it('retries a failed event once, drops it after 6 hours, and sends it to the infra stack\'s queue', () => {
    const conf = Object.values(template.Resources).find((r) => r.Type === 'AWS::Lambda::EventInvokeConfig')?.Properties;
    assert.equal(conf?.MaximumRetryAttempts, 1);
    assert.equal(conf?.MaximumEventAgeInSeconds, 21600);
    assert.deepEqual(conf?.DestinationConfig, { OnFailure: { Destination: { 'Fn::ImportValue': 'gardenlinux-oci-publisher-infra-FailureQueueArn' } } });
  });

  it('keeps the credentials out of the template: only the secret\'s name is there', () => {
    const env = (fn().Environment as { Variables: Record<string, string> }).Variables;
    assert.equal(env.REGISTRY_CREDENTIALS_SECRET, 'gardenlinux-oci-publisher/registry');
    assert.equal(env.ALLOWED_BUCKETS, 'gardenlinux-github-releases');
    assert.ok(!('REGISTRY_PASSWORD' in env) && !('REGISTRY_USERNAME' in env));
  });

  it('sets an environment the function accepts, with the benchmark\'s throughput defaults', () => {
    const config = loadConfig(deployedEnv(template));
    assert.equal(config.blobConcurrency, 4);
    assert.equal(config.s3Readers, 1);
    assert.equal(config.stopMarginMs, 30_000);
    assert.equal(config.credentialsSecret, 'gardenlinux-oci-publisher/registry');
  });

  it("grants least privilege: the build's objects, the state prefix, one secret, one queue", () => {
    const sts = statements(template);
    const sub = (s: string) => ({ 'Fn::Sub': s });
    const of = (action: string) => sts.filter((s) => s.actions.includes(action) && s.role !== 'IamRoleCustomResourcesLambdaExecution').flatMap((s) => s.resources);
    assert.deepEqual(of('s3:GetObject'), [
      sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases/objects/*'),
      sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases/meta/singles/*'),
      sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases/oci-publisher/*'),
    ]);
    assert.deepEqual(of('s3:PutObject'), [sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases/oci-publisher/*')]);
    assert.deepEqual(of('s3:DeleteObject'), [sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases/oci-publisher/*')], 'a retraction deletes a record');
    assert.deepEqual(of('s3:ListBucket'), [sub('arn:${AWS::Partition}:s3:::gardenlinux-github-releases')]);
    assert.deepEqual(listCondition(template), listedPrefixes(deployedEnv(template).STATE_PREFIX as string), 'listing only where the code lists');
    assert.deepEqual(
      of('secretsmanager:GetSecretValue').map((r) => deployed(template, r)),
      ['arn:aws:secretsmanager:eu-central-1:123456789012:secret:gardenlinux-oci-publisher/registry-??????'],
    );
    assert.deepEqual(of('sqs:SendMessage'), [{ 'Fn::ImportValue': 'gardenlinux-oci-publisher-infra-FailureQueueArn' }]);
    // No wildcard resource, except where AWS offers no resource-level permission (ecr:GetAuthorizationToken).
    const wildcards = sts.filter((s) => s.resources.includes('*'));
    assert.deepEqual(wildcards.map((s) => s.actions), [['ecr:GetAuthorizationToken']]);
    // Nothing may delete but the publisher's own records, or write outside the state prefix.
    const deleting = sts.filter((s) => s.actions.some((a) => /Delete|\*$/.test(a)));
    assert.deepEqual(deleting.map((s) => s.actions), [['s3:GetObject', 's3:PutObject', 's3:DeleteObject']], JSON.stringify(sts.map((s) => s.actions)));
  });

  it('lets the helper that subscribes to the bucket touch this bucket and this function only', () => {
    const helper = statements(template).filter((s) => s.role === 'IamRoleCustomResourcesLambdaExecution');
    assert.deepEqual(helper.map((s) => s.resources), [
      [{ 'Fn::Sub': 'arn:${AWS::Partition}:s3:::gardenlinux-github-releases' }],
      [{ 'Fn::Sub': 'arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:gardenlinux-oci-publisher-prod-publish' }],
    ]);
  });

  it('adds the secret policy only with a secret, the ECR policy only with an ECR repository, the signing policy only with a key, the KMS keys policy only with keys', () => {
    assert.equal(template.Resources.KmsKeysPolicy?.Condition, 'UsesKmsKeys');
    assert.equal(condition(template, template.Conditions?.UsesKmsKeys), false, 'no kmsKeyArns: no statement at all');
    assert.equal(template.Resources.RegistrySecretPolicy?.Condition, 'UsesSecret');
    assert.equal(template.Resources.EcrPushPolicy?.Condition, 'UsesEcr');
    assert.deepEqual(template.Conditions?.UsesEcr, { 'Fn::Not': [{ 'Fn::Equals': ['', ''] }] }, 'off by default');
    assert.equal(template.Resources.SigningKeyPolicy?.Condition, 'UsesSigningKey');
    assert.deepEqual(template.Conditions?.UsesSigningKey, { 'Fn::Not': [{ 'Fn::Or': [{ 'Fn::Equals': ['none', ''] }, { 'Fn::Equals': ['none', 'none'] }] }] }, 'off by default');
    const env = (fn().Environment as { Variables: Record<string, unknown> }).Variables;
    assert.deepEqual(env.SIGNING_KEY, { 'Fn::If': ['UsesSigningKey', 'awskms:///none', ''] });
    // The condition is false: CloudFormation sets "", and the function starts without signing.
    assert.equal(deployedEnv(template).SIGNING_KEY, '');
    const config = loadConfig(deployedEnv(template));
    assert.equal(config.signingKey, undefined);
    assert.equal(config.signContainerImages, false);
    assert.deepEqual(config.aliasTemplates, [], 'no release aliases unless a deployment asks');
  });

  it("refuses to deploy outside the bucket's region, before anything is created, saying why", async () => {
    assert.deepEqual(Object.keys(template.Rules ?? {}), ['StackInBucketRegion'], 'osls passed the Rules section through (infra/cloudformation-rules.cjs)');
    assert.deepEqual(failedAssertions(template, 'eu-central-1'), [], 'the bucket is in eu-central-1: the stack deploys there');
    const refused = failedAssertions(template, 'us-east-1');
    assert.equal(refused.length, 1);
    assert.match(refused[0] as string, /^the stack must be deployed in the bucket's region \(eu-central-1\): S3 notifies only a Lambda function in its own region/);
    assert.match(refused[0] as string, /set bucketRegion to the region of the bucket gardenlinux-github-releases/);
    // The first deployment creates the stack from this template: refused there, it creates nothing at all.
    const create = JSON.parse(await readFile(join(out, 'cloudformation-template-create-stack.json'), 'utf8')) as Template;
    assert.deepEqual(create.Rules, template.Rules);
  });

  it('lets the function read the one secret named, not another whose name begins alike', () => {
    assert.equal(condition(template, template.Conditions?.SecretIsArn), false, 'a name, not an ARN');
    const [pattern] = statements(template).filter((s) => s.actions.includes('secretsmanager:GetSecretValue')).flatMap((s) => s.resources.map((r) => deployed(template, r)));
    const arn = (name: string) => `arn:aws:secretsmanager:eu-central-1:123456789012:secret:${name}`;
    // Secrets Manager's ARN of a secret: its name, "-" and 6 random characters.
    assert.ok(iamMatches(String(pattern), arn('gardenlinux-oci-publisher/registry-AbCdEf')));
    assert.ok(!iamMatches(String(pattern), arn('gardenlinux-oci-publisher/registry-other-AbCdEf')), 'registry-other is another secret');
    assert.ok(!iamMatches(String(pattern), arn('gardenlinux-oci-publisher/registry2-AbCdEf')));
  });

  it('imports the failure queue the infra stack exports, which alarms on errors, queue depth, duration, throttles, dropped events and failed deliveries', async () => {
    const infra = YAML.parse(await readFile('infra/failure-queue-and-alarms.yml', 'utf8')) as Template & { Outputs: Record<string, { Export?: { Name: unknown } }> };
    assert.deepEqual(infra.Outputs.FailureQueueArn?.Export?.Name, { 'Fn::Sub': '${AWS::StackName}-FailureQueueArn' });
    const alarms = Object.values(infra.Resources).filter((r) => r.Type === 'AWS::CloudWatch::Alarm').map((r) => r.Properties);
    const byMetric = new Map(alarms.map((a) => [`${String(a.Namespace)} ${String(a.MetricName)}`, a]));
    assert.ok(byMetric.has('AWS/Lambda Errors'));
    assert.ok(byMetric.has('AWS/SQS ApproximateNumberOfMessagesVisible'));
    assert.deepEqual(byMetric.get('AWS/Lambda Duration')?.Threshold, { Ref: 'DurationAlarmMilliseconds' });
    assert.equal((infra as unknown as { Parameters: Record<string, { Default: unknown }> }).Parameters.DurationAlarmMilliseconds?.Default, 780000);
    for (const metric of ['Throttles', 'AsyncEventsDropped', 'DestinationDeliveryFailures']) {
      assert.deepEqual(byMetric.get(`AWS/Lambda ${metric}`)?.Dimensions, [{ Name: 'FunctionName', Value: { Ref: 'FunctionName' } }], `${metric} of this function`);
    }
    // The function the alarms watch is the one this template deploys (the infra stack's default FunctionName).
    const name = (infra as unknown as { Parameters: Record<string, { Default: unknown }> }).Parameters.FunctionName?.Default;
    assert.equal(name, template.Resources.PublishLambdaFunction?.Properties.FunctionName);
    for (const a of alarms) assert.ok(Array.isArray(a.AlarmActions), `${String(a.MetricName)} notifies`);
  });
});

describe('the CloudFormation template for an ECR registry with container sub-repositories', () => {
  let out: string;
  let template: Template;
  const repo = 'arn:aws:ecr:eu-central-1:123456789012:repository/gardenlinux';
  before(async () => {
    out = await mkdtemp(join(tmpdir(), 'gl-package-ecr-'));
    template = await packageTemplate(out, [`ecrRepositoryArn=${repo}`, 'credentialsSecret=none', 'registry=123456789012.dkr.ecr.eu-central-1.amazonaws.com/gardenlinux']);
  });
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('lets the function push to the repository and to every <repository>/<sub> of CONTAINER_REPOSITORIES, without hand edits', () => {
    assert.deepEqual(template.Conditions?.UsesEcr, { 'Fn::Not': [{ 'Fn::Equals': [repo, ''] }] });
    const push = statements(template).find((s) => s.actions.includes('ecr:PutImage'));
    assert.ok(push, 'an ECR push statement');
    assert.deepEqual(push.resources, [repo, `${repo}/*`]);
    const env = (template.Resources.PublishLambdaFunction?.Properties as { Environment: { Variables: Record<string, string> } }).Environment.Variables;
    const subs = Object.values(JSON.parse(env.CONTAINER_REPOSITORIES ?? '{}') as Record<string, string>);
    assert.ok(subs.length > 0, 'the default deployment maps container flavors to sub-repositories');
    for (const sub of subs) {
      const arn = `${repo}/${sub}`;
      const covered = push.resources.some((r) => typeof r === 'string' && (r === arn || (r.endsWith('/*') && arn.startsWith(r.slice(0, -1)))));
      assert.ok(covered, `${arn} is covered`);
    }
    assert.ok(push.resources.includes(repo), 'the main repository is covered');
  });

  it('reads no secret: the function takes its ECR token with its role', () => {
    const config = loadConfig(deployedEnv(template));
    assert.equal(config.credentialsSecret, undefined);
    assert.deepEqual(template.Conditions?.UsesSecret, { 'Fn::Not': [{ 'Fn::Or': [{ 'Fn::Equals': ['none', ''] }, { 'Fn::Equals': ['none', 'none'] }] }] });
  });
});

describe('the CloudFormation template with a signing key and release aliases', () => {
  let out: string;
  let template: Template;
  const key = 'arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
  before(async () => {
    out = await mkdtemp(join(tmpdir(), 'gl-package-kms-'));
    template = await packageTemplate(out, [`signingKeyArn=${key}`, 'signContainerImages=true', 'aliasTags=latest,{major},{version}.0']);
  });
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('grants kms:Sign, with the one algorithm the signer asks for, and kms:GetPublicKey on that key only, and configures the function to sign with it', () => {
    assert.deepEqual(template.Conditions?.UsesSigningKey, { 'Fn::Not': [{ 'Fn::Or': [{ 'Fn::Equals': [key, ''] }, { 'Fn::Equals': [key, 'none'] }] }] });
    const kms = statements(template).filter((s) => s.role === 'SigningKeyPolicy');
    // The algorithm is the signer's own constant: the policy cannot drift from what Sign asks for.
    assert.deepEqual(kms, [
      { role: 'SigningKeyPolicy', actions: ['kms:Sign'], resources: [key], condition: { StringEquals: { 'kms:SigningAlgorithm': SIGNING_ALGORITHM } } },
      { role: 'SigningKeyPolicy', actions: ['kms:GetPublicKey'], resources: [key] },
    ]);
    assert.ok(statements(template).every((s) => s.role === 'SigningKeyPolicy' || !s.actions.some((a) => a === 'kms:Sign' || a === 'kms:GetPublicKey')), 'no other statement signs');
    const env = (template.Resources.PublishLambdaFunction?.Properties as { Environment: { Variables: Record<string, unknown> } }).Environment.Variables;
    assert.deepEqual(env.SIGNING_KEY, { 'Fn::If': ['UsesSigningKey', `awskms:///${key}`, ''] });
    // The condition is true: CloudFormation sets the URI, which the function accepts.
    const config = loadConfig(deployedEnv(template));
    assert.equal(config.signingKey, `awskms:///${key}`);
    assert.equal(config.signContainerImages, true);
    assert.deepEqual(config.aliasTemplates.map((t) => t.text), ['latest', '{major}', '{version}.0'], 'the aliasTags parameter reaches ALIAS_TAGS');
  });
});

describe('the CloudFormation template for another account', () => {
  let out: string;
  let template: Template;
  const secretArn = 'arn:aws:secretsmanager:us-east-1:210987654321:secret:publisher/registry-Xy12Zw';
  const keys = ['arn:aws:kms:us-east-1:210987654321:key/1111aaaa-11aa-11aa-11aa-111111aaaaaa', 'arn:aws:kms:us-east-1:210987654321:key/2222bbbb-22bb-22bb-22bb-222222bbbbbb'];
  const east = { ...ACCOUNT, 'AWS::Region': 'us-east-1', 'AWS::AccountId': '210987654321' };
  before(async () => {
    out = await mkdtemp(join(tmpdir(), 'gl-package-account-'));
    template = await packageTemplate(out, [`credentialsSecret=${secretArn}`, 'reservedConcurrency=10', 'memorySize=4096', 'bucket=publisher-builds', 'bucketRegion=us-east-1', 'statePrefix=publisher-state/', `kmsKeyArns=${keys.join(',')}`]);
  });
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('takes a secret given as its full ARN as it is', () => {
    assert.equal(condition(template, template.Conditions?.SecretIsArn), true);
    const resources = statements(template).filter((s) => s.actions.includes('secretsmanager:GetSecretValue')).flatMap((s) => s.resources.map((r) => deployed(template, r)));
    assert.deepEqual(resources, [secretArn]);
    assert.equal(loadConfig(deployedEnv(template)).credentialsSecret, secretArn, 'and the function reads it by that ARN');
  });

  it("deploys in the bucket's region only", () => {
    assert.deepEqual(failedAssertions(template, 'us-east-1'), []);
    assert.deepEqual(failedAssertions(template, 'eu-central-1'), [
      "the stack must be deployed in the bucket's region (us-east-1): S3 notifies only a Lambda function in its own region. Deploy with --region us-east-1, or set bucketRegion to the region of the bucket publisher-builds (docs/operations.md, \"Deploy\")",
    ]);
  });

  it("lists the bucket under this deployment's state prefix, and where the code lists", () => {
    assert.equal(deployedEnv(template).STATE_PREFIX, 'publisher-state/');
    assert.deepEqual(listCondition(template), listedPrefixes('publisher-state/'));
    const reads = statements(template).filter((s) => s.actions.includes('s3:GetObject') && s.role === 'IamRoleLambdaExecution');
    assert.ok(reads.some((s) => JSON.stringify(s.resources).includes('publisher-builds/publisher-state/*')), 'the records are read and written there too');
  });

  it('lets the function use exactly the KMS keys named, and only through S3 and Secrets Manager', () => {
    assert.equal(condition(template, template.Conditions?.UsesKmsKeys), true);
    const inStack = (s: Statement) => {
      const name = template.Resources[s.role]?.Condition;
      return name === undefined || condition(template, template.Conditions?.[name], east);
    };
    // Every KMS permission the deployed role has (no signing key here).
    const kms = statements(template)
      .filter((s) => inStack(s) && s.actions.some((a) => a.startsWith('kms:')))
      .map((s) => ({ role: s.role, actions: s.actions, resources: s.resources.flatMap((r) => deployed(template, r, east)), condition: deployed(template, s.condition, east) }));
    assert.deepEqual(kms, [
      // Reading SSE-KMS objects and the secret.
      { role: 'KmsKeysPolicy', actions: ['kms:Decrypt'], resources: keys, condition: { StringEquals: { 'kms:ViaService': ['s3.us-east-1.amazonaws.com', 'secretsmanager.us-east-1.amazonaws.com'] } } },
      // Writing the records into a bucket whose default encryption is such a key.
      { role: 'KmsKeysPolicy', actions: ['kms:GenerateDataKey'], resources: keys, condition: { StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } } },
    ]);
  });

  it('reserves the concurrency and takes the memory size the parameters give', () => {
    const fn = template.Resources.PublishLambdaFunction?.Properties as Record<string, unknown>;
    assert.equal(condition(template, template.Conditions?.ReservesConcurrency), true);
    // CloudFormation takes the string "10" for the integer property.
    assert.equal(Number(deployed(template, fn.ReservedConcurrentExecutions)), 10);
    assert.equal(fn.MemorySize, 4096);
  });
});
