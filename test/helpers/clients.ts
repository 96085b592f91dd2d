/** skopeo and podman as real clients of what was published, each with its own throw-away state. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ClientSandbox {
  dir: string;
  skopeo(args: string[]): Promise<string>;
  podman(args: string[]): Promise<string>;
  cleanup(): Promise<void>;
}

export async function clientSandbox(): Promise<ClientSandbox> {
  const dir = await mkdtemp(join(tmpdir(), 'gl-clients-'));
  await writeFile(join(dir, 'auth.json'), '{"auths":{}}');
  const env = {
    ...process.env,
    HOME: dir,
    XDG_RUNTIME_DIR: dir,
    XDG_CONFIG_HOME: join(dir, 'config'),
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
  };
  const exec = async (cmd: string, args: string[]): Promise<string> => {
    try {
      const { stdout } = await run(cmd, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
    }
  };
  const podmanBase = ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none'];
  return {
    dir,
    skopeo: (args) => exec('skopeo', args),
    podman: (args) => exec('podman', [...podmanBase, ...args]),
    async cleanup() {
      await exec('podman', [...podmanBase, 'system', 'reset', '--force']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}
