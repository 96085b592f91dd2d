/**
 * `npm run demo`: a publication on an embedded default, with no AWS account and no registry. It starts an
 * in-process S3, uploads generated builds of one version the way Garden Linux CI does (files first, metadata
 * last), sends the handler one S3 event per build, all at once, and publishes to a local OCI image layout. Each
 * artifact manifest is signed (cosign's `.sig`) with an RSA key the demo generates, as the Lambda signs with KMS.
 */
import { generateKeyPairSync } from 'node:crypto';
import { rm, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createHandler, type HandlerResult } from '../functions/publish/handler';
import { s3Event, startLocalS3, uploadBuild } from './local-s3';
import { sampleBuild } from './sample-builds';

const BUCKET = 'gardenlinux-github-releases';
const out = resolve(process.argv[2] ?? 'demo-output');
const layout = join(out, 'oci-layout');

async function main(): Promise<void> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const s3 = await startLocalS3([BUCKET]);
  const logLines: string[] = [];
  try {
    const builds = [
      sampleBuild({ flavor: 'container', arch: 'amd64' }),
      sampleBuild({ flavor: 'container', arch: 'arm64' }),
      sampleBuild({ flavor: 'metal_pxe', arch: 'amd64', pxe: true }),
      sampleBuild({ flavor: 'aws-gardener_prod', arch: 'amd64' }),
      sampleBuild({ flavor: 'gcp-gardener_prod', arch: 'arm64' }),
    ];
    console.log(`in-process S3 at ${s3.endpoint}, bucket ${BUCKET}`);
    for (const b of builds) {
      await uploadBuild(s3.client, BUCKET, b);
      console.log(`  uploaded objects/${b.base}/ (${b.files.length} files) and meta/singles/${b.base}`);
    }

    // Garden Linux signs with an RSA-4096 key in KMS; the demo signs the same way with a key file of its own.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 4096 });
    const keyFile = join(out, 'oci-sign.key');
    const pubFile = join(out, 'oci-sign.pub');
    await writeFile(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    await writeFile(pubFile, publicKey.export({ format: 'pem', type: 'spki' }));
    console.log(`
signing key (RSA-4096, generated): ${keyFile}, public key ${pubFile}`);

    const handler = createHandler({
      env: { ...s3.env, REGISTRY: `oci-layout:${layout}`, LOG_LEVEL: 'info', SIGNING_KEY: `file:${keyFile}`, ALIAS_TAGS: 'latest,{major}' },
      logSink: (line) => logLines.push(line),
    });
    console.log(`\npublishing ${builds.length} builds at once to oci-layout:${layout} ...`);
    const started = Date.now();
    const results = (await Promise.all(
      builds.map((b, i) => handler(s3Event(BUCKET, `meta/singles/${b.base}`), { awsRequestId: `demo-${i}` })),
    )) as HandlerResult[];
    console.log(`done in ${Date.now() - started} ms\n`);
    for (const r of results) {
      for (const j of r.jobs) {
        console.log(
          `  ${j.outcome.padEnd(9)} ${j.base}  manifest ${j.manifest?.digest.slice(0, 19)}…  ${j.blobsUploaded} blobs, ${j.bytesUploaded} bytes uploaded` +
            (j.container ? `  image ${j.container.tag} ${j.container.digest.slice(0, 19)}…` : ''),
        );
      }
    }

    const again = (await handler(s3Event(BUCKET, `meta/singles/${builds[0]?.base}`), { awsRequestId: 'demo-rerun' })) as HandlerResult;
    const rerun = again.jobs[0];
    console.log(`\nre-run of ${rerun?.base}: ${rerun?.outcome}, ${rerun?.bytesUploaded} bytes uploaded, ${rerun?.bytesRead} bytes read from S3`);

    const { OciLayoutTarget } = await import('../functions/target/oci-layout-target');
    const { Logger } = await import('../functions/util/log');
    const { checkSignature } = await import('../functions/signing/verify-signature');
    const target = new OciLayoutTarget(layout, 'demo', new Logger({ sink: () => undefined }));
    const index = await target.getManifest('1877.3');
    if (!index) throw new Error('the demo produced no version index');
    const parsed = JSON.parse(index.bytes.toString('utf8')) as {
      manifests: Array<{ digest: string; platform?: { os: string; architecture: string }; annotations?: Record<string, string> }>;
    };
    console.log(`\nversion index 1877.3 (${index.digest}):`);
    for (const m of parsed.manifests) {
      const kind = m.annotations?.cname ? `gardenlinux ${m.annotations.cname}` : `container   ${m.platform?.os}/${m.platform?.architecture}`;
      let signature = '';
      if (m.annotations?.cname) {
        const c = await checkSignature(target, m.digest, publicKey);
        signature = `  ${c.tag.slice(0, 19)}…sig: cosign ${c.cosign ? 'ok' : 'FAILS'}, gardenlinux-update ${c.updater ? 'ok' : 'FAILS'}`;
        if (!c.cosign || !c.updater) process.exitCode = 1;
      }
      console.log(`  ${kind.padEnd(58)} ${m.digest.slice(0, 19)}…${signature}`);
    }
    const aliases = (rerun?.releaseAliases ?? []).map((a) => `${a.alias} → ${a.version}${(a.tags ?? []).map((t) => `, ${t.tag}`).join('')}`);
    console.log(`\nrelease aliases (ALIAS_TAGS=latest,{major}): ${aliases.join('; ')}`);

    // The check a release engineer runs afterwards: the same as `gl-oci-publish verify 1877.3`.
    const { formatReport } = await import('../functions/publish/verify-table');
    const checked = (await handler({ action: 'verify', bucket: BUCKET, version: '1877.3' }, { awsRequestId: 'demo-verify' })) as HandlerResult;
    const report = checked.jobs[0]?.verify;
    if (!report?.ok) process.exitCode = 1;
    console.log(`\nverify 1877.3:\n${report ? formatReport(report) : 'no report'}`);
    await writeFile(join(out, 'publisher.log'), logLines.join('\n') + '\n');
    console.log(`\nlogs (JSON lines): ${join(out, 'publisher.log')}`);
    console.log(`look at the result:\n  skopeo inspect --raw oci:${layout}:1877.3\n  skopeo inspect oci:${layout}:amd64-1877.3`);
    const signed = parsed.manifests.find((m) => m.annotations?.cname);
    if (signed) {
      const tag = `${signed.digest.replace(':', '-')}.sig`;
      const glTag = `1877.3-${signed.annotations?.cname}-${signed.annotations?.architecture}`;
      console.log(
        `verify a signature as consumers do, once copied to a registry (the signature travels as its own tag):\n` +
          `  skopeo copy oci:${layout}:${tag} docker://<registry>/<repo>:${tag}\n` +
          `  skopeo copy oci:${layout}:${glTag} docker://<registry>/<repo>:${glTag}\n` +
          `  cosign verify --key ${pubFile} --insecure-ignore-tlog=true <registry>/<repo>@${signed.digest}`,
      );
    }
  } finally {
    await s3.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
