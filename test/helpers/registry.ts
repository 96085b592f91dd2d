/**
 * A real CNCF distribution registry (Debian's docker-registry) for tests: started on 127.0.0.1 with a free
 * port and a temporary directory, optionally with htpasswd (Basic) or token (Bearer) authentication.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';

export interface TestRegistry {
  /** 127.0.0.1:<port> */
  host: string;
  url: string;
  dir: string;
  stop(): Promise<void>;
}

export type RegistryAuth =
  | { kind: 'htpasswd'; username: string; password: string }
  | { kind: 'token'; realm: string; service: string; issuer: string; certPem: string };

/** A port that was free a moment ago (the registry is given it: it logs nothing at the level it runs with). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startRegistry(options: { auth?: RegistryAuth; relativeUrls?: boolean; parentDir?: string } = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(options.parentDir ?? tmpdir(), 'gl-registry-'));
  // Another process may take the port between freePort() and the registry's bind: then it is tried again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await serve(dir, await freePort(), options);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function serve(dir: string, port: number, options: { auth?: RegistryAuth; relativeUrls?: boolean }): Promise<TestRegistry> {
  const lines = [
    'version: 0.1',
    'log:',
    // Errors only: at info it logs every request, and its logging costs a good part of its CPU time.
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${join(dir, 'data')}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: test-only-secret',
    // Answers carry this header, so a registry another test file started on the same port is never taken for ours.
    '  headers:',
    `    X-Test-Registry: [${JSON.stringify(dir)}]`,
    ...(options.relativeUrls ? ['  relativeurls: true'] : []),
  ];
  const auth = options.auth;
  if (auth?.kind === 'htpasswd') {
    // Cost 4: distribution checks the hash on every request, and cost 12 costs ~180 ms each.
    await writeFile(join(dir, 'htpasswd'), `${auth.username}:${bcrypt.hashSync(auth.password, 4)}\n`);
    lines.push('auth:', '  htpasswd:', '    realm: test-registry', `    path: ${join(dir, 'htpasswd')}`);
  } else if (auth?.kind === 'token') {
    await writeFile(join(dir, 'token.crt'), auth.certPem);
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${auth.realm}`,
      `    service: ${auth.service}`,
      `    issuer: ${auth.issuer}`,
      `    rootcertbundle: ${join(dir, 'token.crt')}`,
    );
  }
  await writeFile(join(dir, 'config.yml'), lines.join('\n') + '\n');

  const child: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  // What it says before it answers (errors only): the reason when it does not start.
  let output = '';
  const keep = (chunk: Buffer): void => {
    if (output.length < 64 * 1024) output += chunk.toString();
  };
  child.stderr?.on('data', keep);
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new Error(`could not run docker-registry (apt-get install docker-registry): ${err.message}`)));
    child.once('exit', (code) => reject(new Error(`docker-registry exited with ${code}: ${output}`)));
  });
  failed.catch(() => undefined);
  const host = `127.0.0.1:${port}`;
  // Up when it answers (401 counts: it is up, and wants credentials).
  const deadline = Date.now() + 20_000;
  for (;;) {
    const up = await Promise.race([
      fetch(`http://${host}/v2/`).then(
        (res) => (res.status === 200 || res.status === 401) && res.headers.get('x-test-registry') === dir,
        () => false,
      ),
      failed,
    ]);
    if (up) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`docker-registry did not answer on ${host} within 20 s: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.stderr?.off('data', keep);
  child.stderr?.resume();
  return {
    host,
    url: `http://${host}`,
    dir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
