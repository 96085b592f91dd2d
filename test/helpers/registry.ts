/**
 * A real CNCF distribution registry (Debian's docker-registry) for tests: started on 127.0.0.1 with a free
 * port and a temporary directory, optionally with htpasswd (Basic) or token (Bearer) authentication.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
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

export async function startRegistry(options: { auth?: RegistryAuth; relativeUrls?: boolean; parentDir?: string } = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(options.parentDir ?? tmpdir(), 'gl-registry-'));
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
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
    '  addr: 127.0.0.1:0',
    '  secret: test-only-secret',
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
  const port = await new Promise<number>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`docker-registry did not start:\n${output}`)), 20_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run docker-registry (apt-get install docker-registry): ${err.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`docker-registry exited with ${code}:\n${output}`));
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  child.stderr?.resume();
  const host = `127.0.0.1:${port}`;
  // Wait until it answers (401 counts: it is up, and wants credentials).
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`http://${host}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      if (i > 100) throw new Error('docker-registry does not answer');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
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
