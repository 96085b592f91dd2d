/** A token-authenticated docker-registry and its token server, for tests that put proxies in front of both. */
import { startRegistry, type TestRegistry } from './registry';
import { startTokenServer, type TokenServer } from './token-server';

export const USER = 'publisher';
export const PASSWORD = 'pw-8d0c54a1-not-in-any-log';

export interface RegistryStack {
  registry: TestRegistry;
  tokens: TokenServer;
  stop(): Promise<void>;
}

export async function startTokenRegistry(): Promise<RegistryStack> {
  const tokens = await startTokenServer({ [USER]: PASSWORD });
  const registry = await startRegistry({ auth: { kind: 'token', realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, certPem: tokens.certPem } });
  return {
    registry,
    tokens,
    async stop() {
      await registry.stop();
      await tokens.stop();
    },
  };
}
