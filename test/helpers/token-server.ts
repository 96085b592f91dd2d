/**
 * A token server for distribution's token auth (test only): issues ES256 JWTs signed with a throw-away key whose
 * self-signed certificate the registry trusts. Authenticated requests get what they ask for; anonymous ones get
 * pull only. It can hand out tokens that are already expired, to test the client's refresh.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomUUID, sign, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certPem: string;
  /** every request: scopes asked for, whether credentials came, what the answer was */
  requests: Array<{ scopes: string[]; authenticated: boolean; status: number }>;
  /** tokens issued, to check that none leak into logs */
  issued: string[];
  /** the next n tokens are issued already expired (beyond the registry's 60 s leeway) */
  expireNext(n: number): void;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(users: Record<string, string>): Promise<TokenServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gl-token-'));
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=gl-test-token'],
    { stdio: 'ignore' },
  );
  const key = createPrivateKey(readFileSync(join(dir, 'key.pem')));
  const certPem = readFileSync(join(dir, 'cert.pem'), 'utf8');
  rmSync(dir, { recursive: true, force: true });
  const certDer = new X509Certificate(certPem).raw;
  const service = 'gl-test-registry';
  const issuer = 'gl-test-issuer';
  const requests: TokenServer['requests'] = [];
  const issued: string[] = [];
  let expired = 0;

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const scopes = url.searchParams.getAll('scope');
    const authHeader = req.headers.authorization;
    let authenticated = false;
    if (authHeader?.startsWith('Basic ')) {
      const [user, ...rest] = Buffer.from(authHeader.slice(6), 'base64').toString().split(':');
      if (user === undefined || users[user] !== rest.join(':')) {
        requests.push({ scopes, authenticated: false, status: 401 });
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"wrong credentials"}');
        return;
      }
      authenticated = true;
    }
    const access = scopes.flatMap((s) => {
      const [type, name, actions] = s.split(':');
      if (type !== 'repository' || !name || !actions) return [];
      const granted = actions.split(',').filter((a) => authenticated || a === 'pull');
      return [{ type, name, actions: granted }];
    });
    const now = Math.floor(Date.now() / 1000);
    const stale = expired > 0;
    if (stale) expired--;
    const exp = stale ? now - 600 : now + 300;
    const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', x5c: [certDer.toString('base64')] }));
    const claims = b64url(
      JSON.stringify({ iss: issuer, sub: authenticated ? 'publisher' : '', aud: service, exp, nbf: now - 700, iat: now - 700, jti: randomUUID(), access }),
    );
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), { key, dsaEncoding: 'ieee-p1363' });
    const token = `${header}.${claims}.${b64url(signature)}`;
    issued.push(token);
    requests.push({ scopes, authenticated, status: 200 });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPem,
    requests,
    issued,
    expireNext(n) {
      expired = n;
    },
    stop: () => new Promise((r) => server.close(() => r())),
  };
}
