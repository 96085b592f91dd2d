import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Authenticator, parseChallenge, type TokenFetcher } from '../../functions/registry/auth';
import { RegistryError } from '../../functions/registry/errors';

const HOST = 'registry.example.com';
const REALM = 'https://auth.example.com/token';
const SERVICE = 'registry.example.com';
const PULL = 'repository:gardenlinux/gardenlinux:pull';
const PUSH = 'repository:gardenlinux/gardenlinux:pull,push';
const OTHER = 'repository:gardenlinux/nightly:pull,push';
const CREDS = { username: 'robot', password: 's3cret' };
const BASIC = `Basic ${Buffer.from('robot:s3cret').toString('base64')}`;

interface Call {
  url: URL;
  headers: Record<string, string>;
}
type Reply = { status: number; body: string; wwwAuthenticate?: string };

/** A token server stand-in: records every request and answers with `reply` (token-1, token-2, … by default). */
function tokenServer(reply?: (call: Call, n: number) => Reply | Promise<Reply>): { calls: Call[]; fetch: TokenFetcher } {
  const calls: Call[] = [];
  const fetch: TokenFetcher = async (url, headers) => {
    const call = { url: new URL(url.href), headers: { ...headers } };
    calls.push(call);
    const n = calls.length;
    return reply ? reply(call, n) : { status: 200, body: JSON.stringify({ token: `token-${n}`, expires_in: 300 }) };
  };
  return { calls, fetch };
}

function bearer(params: { realm?: string; service?: string; scope?: string; error?: string } = {}): string {
  const p = { realm: REALM, service: SERVICE, ...params };
  return `Bearer ${Object.entries(p)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}`;
}

async function assertRegistryError(p: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<RegistryError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof RegistryError, `expected a RegistryError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.kind, 'registry');
  for (const pat of patterns) assert.match(caught.message, pat);
  return caught;
}

describe('parseChallenge', () => {
  it('reads a Bearer challenge with realm, service and a scope containing a comma', () => {
    assert.deepEqual(
      parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"'),
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:samalba/my-app:pull,push' },
      },
    );
  });

  it('keeps spaces inside a quoted scope list', () => {
    const c = parseChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull repository:c/d:pull,push"');
    assert.equal(c?.params.scope, 'repository:a/b:pull repository:c/d:pull,push');
    assert.deepEqual(c?.params.scope?.split(' '), ['repository:a/b:pull', 'repository:c/d:pull,push']);
  });

  it('reads error="insufficient_scope"', () => {
    const c = parseChallenge('Bearer realm="https://auth/token",service="reg",scope="repository:x:push",error="insufficient_scope"');
    assert.equal(c?.scheme, 'bearer');
    assert.equal(c?.params.error, 'insufficient_scope');
    assert.equal(c?.params.scope, 'repository:x:push');
  });

  it('reads a Basic challenge with a realm containing spaces', () => {
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
  });

  it('unescapes escaped quotes and backslashes in quoted values', () => {
    const c = parseChallenge('Basic realm="say \\"hi\\", then go", charset="UTF-8"');
    assert.equal(c?.params.realm, 'say "hi", then go');
    assert.equal(c?.params.charset, 'UTF-8');
    assert.equal(parseChallenge('Basic realm="a\\\\b"')?.params.realm, 'a\\b');
  });

  it('tolerates spaces around "=" and ","', () => {
    const c = parseChallenge('  Bearer   realm = "https://a/token" ,  service = "svc" , scope="s"');
    assert.deepEqual(c, { scheme: 'bearer', params: { realm: 'https://a/token', service: 'svc', scope: 's' } });
  });

  it('reads unquoted values', () => {
    const c = parseChallenge('Bearer realm=https://a.example/token,service=svc');
    assert.deepEqual(c, { scheme: 'bearer', params: { realm: 'https://a.example/token', service: 'svc' } });
  });

  it('lowercases the scheme and parameter names but not values', () => {
    const c = parseChallenge('BEARER Realm="https://A.example/Token",SERVICE="Svc"');
    assert.deepEqual(c, { scheme: 'bearer', params: { realm: 'https://A.example/Token', service: 'Svc' } });
  });

  it('reads a bare scheme', () => {
    assert.deepEqual(parseChallenge('Basic'), { scheme: 'basic', params: {} });
  });

  it('returns undefined for a header without a scheme', () => {
    assert.equal(parseChallenge(''), undefined);
    assert.equal(parseChallenge('   '), undefined);
    assert.equal(parseChallenge('"quoted"'), undefined);
  });
});

describe('Authenticator: before any challenge', () => {
  it('sends requests anonymously and fetches no token', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch);
    assert.equal(await auth.authorization(HOST, [PUSH]), undefined);
    await auth.ensureFresh(HOST, [PUSH]);
    assert.equal(server.calls.length, 0);
  });
});

describe('Authenticator: Basic', () => {
  it('answers a Basic challenge with the credentials from then on', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch);
    await auth.onChallenge(HOST, 'Basic realm="Registry Realm"', [PUSH], false);
    assert.equal(await auth.authorization(HOST, [PUSH]), BASIC);
    assert.equal(await auth.authorization(HOST, [OTHER]), BASIC);
    assert.equal(server.calls.length, 0);
  });

  it('remembers the scheme per host', async () => {
    const auth = new Authenticator(CREDS, tokenServer().fetch);
    await auth.onChallenge(HOST, 'Basic realm="r"', [PUSH], false);
    assert.equal(await auth.authorization('other.example.com', [PUSH]), undefined);
  });

  it('refuses a Basic challenge when no credentials are configured', async () => {
    const auth = new Authenticator(undefined, tokenServer().fetch);
    const err = await assertRegistryError(auth.onChallenge(HOST, 'Basic realm="r"', [PUSH], false), 'UNAUTHORIZED', /requires credentials/, /registry\.example\.com/);
    assert.equal(err.status, 401);
    assert.equal(err.retryable, false);
    assert.equal(await auth.authorization(HOST, [PUSH]), undefined);
  });

  it('a second Basic challenge to a request that carried Basic credentials means they were rejected', async () => {
    const auth = new Authenticator(CREDS, tokenServer().fetch);
    await auth.onChallenge(HOST, 'Basic realm="r"', [PUSH], false);
    const err = await assertRegistryError(auth.onChallenge(HOST, 'Basic realm="r"', [PUSH], true), 'UNAUTHORIZED', /rejected the configured credentials/);
    assert.equal(err.status, 401);
  });

  it('a Basic challenge to a request sent anonymously before the scheme was known is simply retried', async () => {
    const auth = new Authenticator(CREDS, tokenServer().fetch);
    await auth.onChallenge(HOST, 'Basic realm="r"', [PUSH], false);
    // a concurrent request that went out before the first challenge was learnt
    await auth.onChallenge(HOST, 'Basic realm="r"', [OTHER], false);
    assert.equal(await auth.authorization(HOST, [OTHER]), BASIC);
  });
});

describe('Authenticator: Bearer', () => {
  it('fetches a token with service and every scope as query parameters, with Basic credentials', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 1_000_000 });
    await auth.onChallenge(HOST, bearer({ scope: PULL }), [PUSH], false);
    assert.equal(server.calls.length, 1);
    const call = server.calls[0];
    assert.ok(call);
    assert.equal(`${call.url.origin}${call.url.pathname}`, REALM);
    assert.equal(call.url.searchParams.get('service'), SERVICE);
    assert.deepEqual(call.url.searchParams.getAll('scope').sort(), [PULL, PUSH].sort());
    assert.equal(call.headers.authorization, BASIC);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
    assert.equal(server.calls.length, 1, 'the widened token is found under the requested scope set');
  });

  it('fetches an anonymous token without an Authorization header', async () => {
    const server = tokenServer();
    const auth = new Authenticator(undefined, server.fetch);
    await auth.onChallenge(HOST, bearer({ scope: PULL }), [PULL], false);
    assert.equal(server.calls.length, 1);
    assert.deepEqual(server.calls[0]?.headers, {});
    assert.deepEqual(server.calls[0]?.url.searchParams.getAll('scope'), [PULL]);
    assert.equal(await auth.authorization(HOST, [PULL]), 'Bearer token-1');
  });

  it('omits service when the challenge has none and keeps the realm query', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch);
    await auth.onChallenge(HOST, 'Bearer realm="https://auth.example.com/token?account=robot"', [PUSH], false);
    const url = server.calls[0]?.url;
    assert.ok(url);
    assert.equal(url.searchParams.has('service'), false);
    assert.equal(url.searchParams.get('account'), 'robot');
    assert.deepEqual(url.searchParams.getAll('scope'), [PUSH]);
  });

  it('accepts access_token instead of token', async () => {
    const server = tokenServer(() => ({ status: 200, body: JSON.stringify({ access_token: 'oauth-token', expires_in: 300 }) }));
    const auth = new Authenticator(CREDS, server.fetch);
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer oauth-token');
  });

  it('caches tokens per scope set, whatever the order of the scopes', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    assert.equal(server.calls.length, 1);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
    assert.equal(await auth.authorization(HOST, [OTHER]), 'Bearer token-2');
    assert.equal(await auth.authorization(HOST, [PUSH, OTHER]), 'Bearer token-3');
    assert.equal(await auth.authorization(HOST, [OTHER, PUSH]), 'Bearer token-3');
    assert.equal(await auth.authorization(HOST, [OTHER]), 'Bearer token-2');
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
    assert.equal(server.calls.length, 3);
    assert.deepEqual(server.calls[1]?.url.searchParams.getAll('scope'), [OTHER]);
  });

  it('refreshes a token when less than a minute of its life is left', async () => {
    let now = 1_000_000;
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => now });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false); // expires_in 300 → lives until now + 300 s
    now += 200_000; // 100 s left
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
    await auth.ensureFresh(HOST, [PUSH]);
    assert.equal(server.calls.length, 1);
    now += 50_000; // 50 s left: renew
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-2');
    assert.equal(server.calls.length, 2);
    now += 10_000; // the new token has 290 s left
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-2');
    assert.equal(server.calls.length, 2);
  });

  it('ensureFresh renews a token close to expiry before a long upload', async () => {
    let now = 0;
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => now });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    now = 250_000;
    await auth.ensureFresh(HOST, [PUSH]);
    assert.equal(server.calls.length, 2);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-2');
    assert.equal(server.calls.length, 2);
  });

  it('reuses a token without expires_in for requests that follow at once', async () => {
    // The distribution spec's default lifetime is 60 s; a token fetched a moment ago must not be fetched again
    // for the very next request (GHCR answers without expires_in).
    let now = 5_000_000;
    const server = tokenServer((_c, n) => ({ status: 200, body: JSON.stringify({ token: `plain-${n}` }) }));
    const auth = new Authenticator(CREDS, server.fetch, { now: () => now });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    now += 1_000;
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer plain-1');
    assert.equal(server.calls.length, 1);
  });

  it('fetches a fresh token when a request that carried one is challenged again', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], true);
    assert.equal(server.calls.length, 2);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-2');
  });

  it('a request sent before the scheme was known reuses the token a concurrent request fetched', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    assert.equal(server.calls.length, 1);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-1');
  });

  it('widens the scope set when the challenge names a scope the request lacked', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    await auth.onChallenge(HOST, bearer({ scope: OTHER, error: 'insufficient_scope' }), [PUSH], true);
    assert.equal(server.calls.length, 2);
    assert.deepEqual(server.calls[1]?.url.searchParams.getAll('scope').sort(), [OTHER, PUSH].sort());
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-2');
    assert.equal(server.calls.length, 2);
  });

  it('insufficient_scope for scopes the token already had means access is denied', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    const err = await assertRegistryError(
      auth.onChallenge(HOST, bearer({ scope: PUSH, error: 'insufficient_scope' }), [PUSH], true),
      'UNAUTHORIZED',
      /insufficient_scope/,
    );
    assert.equal(err.status, 401);
    assert.equal(server.calls.length, 1);
  });

  it('concurrent requests for the same scope set share one token fetch', async () => {
    let release: (() => void) | undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let now = 0;
    const server = tokenServer(async (_c, n) => {
      if (n > 1) await gate;
      return { status: 200, body: JSON.stringify({ token: `token-${n}`, expires_in: 300 }) };
    });
    const auth = new Authenticator(CREDS, server.fetch, { now: () => now });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    now = 290_000; // expired by the margin: the next requests need a new token
    const all = Promise.all([auth.authorization(HOST, [PUSH]), auth.authorization(HOST, [PUSH]), auth.ensureFresh(HOST, [PUSH]), auth.authorization(HOST, [PUSH])]);
    await new Promise((r) => setImmediate(r));
    assert.equal(server.calls.length, 2);
    release?.();
    const [a, b, , d] = await all;
    assert.deepEqual([a, b, d], ['Bearer token-2', 'Bearer token-2', 'Bearer token-2']);
    assert.equal(server.calls.length, 2);
  });

  it('concurrent first requests for different scope sets fetch separately', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { now: () => 0 });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    const [a, b] = await Promise.all([auth.authorization(HOST, [OTHER]), auth.authorization(HOST, [PULL])]);
    assert.notEqual(a, b);
    assert.equal(server.calls.length, 3);
  });

  it('a failed token fetch is not cached: the next request tries again', async () => {
    let now = 0;
    const server = tokenServer((_c, n) =>
      n === 2 ? { status: 503, body: 'unavailable' } : { status: 200, body: JSON.stringify({ token: `token-${n}`, expires_in: 300 }) },
    );
    const auth = new Authenticator(CREDS, server.fetch, { now: () => now });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    now = 300_000;
    const err = await assertRegistryError(auth.authorization(HOST, [PUSH]), 'UNKNOWN', /HTTP 503/);
    assert.equal(err.retryable, true);
    assert.equal(await auth.authorization(HOST, [PUSH]), 'Bearer token-3');
  });
});

describe('Authenticator: token server failures', () => {
  it('401 from the token server is UNAUTHORIZED and names the credentials', async () => {
    const server = tokenServer(() => ({ status: 401, body: '{"errors":[{"code":"UNAUTHORIZED"}]}' }));
    const auth = new Authenticator(CREDS, server.fetch);
    const err = await assertRegistryError(auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false), 'UNAUTHORIZED', /refused the configured credentials/, /HTTP 401/, /auth\.example\.com/);
    assert.equal(err.status, 401);
    assert.equal(err.retryable, false);
  });

  it('401 for an anonymous token says so', async () => {
    const server = tokenServer(() => ({ status: 401, body: '' }));
    const auth = new Authenticator(undefined, server.fetch);
    await assertRegistryError(auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false), 'UNAUTHORIZED', /anonymous token/);
  });

  it('403 from the token server is DENIED', async () => {
    const server = tokenServer(() => ({ status: 403, body: '' }));
    const auth = new Authenticator(CREDS, server.fetch);
    const err = await assertRegistryError(auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false), 'DENIED', /HTTP 403/);
    assert.equal(err.status, 403);
  });

  it('5xx and 429 are retryable, other statuses are not', async () => {
    for (const [status, retryable] of [
      [500, true],
      [502, true],
      [429, true],
      [404, false],
    ] as const) {
      const auth = new Authenticator(CREDS, tokenServer(() => ({ status, body: '' })).fetch);
      const err = await assertRegistryError(auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false), 'UNKNOWN', new RegExp(`HTTP ${status}`));
      assert.equal(err.retryable, retryable, `HTTP ${status}`);
      assert.equal(err.status, status);
    }
  });

  it('an answer without a token is an error', async () => {
    for (const body of ['not json', '{}', '{"token":""}', '{"token":42}', '[]']) {
      const auth = new Authenticator(CREDS, tokenServer(() => ({ status: 200, body })).fetch);
      await assertRegistryError(auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false), 'UNKNOWN', /did not answer with a token/);
    }
  });

  it('a realm that is not a URL is an error, without a fetch', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch);
    await assertRegistryError(auth.onChallenge(HOST, bearer({ realm: 'not a url', scope: PUSH }), [PUSH], false), 'UNAUTHORIZED', /not a URL/);
    assert.equal(server.calls.length, 0);
  });
});

describe('Authenticator: unusable challenges', () => {
  it('a 401 without WWW-Authenticate is UNAUTHORIZED', async () => {
    const auth = new Authenticator(CREDS, tokenServer().fetch);
    const err = await assertRegistryError(auth.onChallenge(HOST, undefined, [PUSH], false), 'UNAUTHORIZED', /no WWW-Authenticate header/);
    assert.equal(err.status, 401);
  });

  it('a Bearer challenge without a realm is unusable', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch);
    await assertRegistryError(auth.onChallenge(HOST, 'Bearer service="x"', [PUSH], false), 'UNAUTHORIZED', /without a usable challenge/, /Bearer service="x"/);
    assert.equal(server.calls.length, 0);
  });

  it('an unknown scheme is unusable', async () => {
    const auth = new Authenticator(CREDS, tokenServer().fetch);
    await assertRegistryError(auth.onChallenge(HOST, 'Negotiate abc', [PUSH], false), 'UNAUTHORIZED', /Negotiate/);
  });
});

describe('Authenticator: a token realm in clear text', () => {
  it('sends no credentials to an http:// realm of an HTTPS registry', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { httpsOnly: true });
    await assert.rejects(auth.onChallenge(HOST, bearer({ realm: 'http://auth.example.com/token', scope: PUSH }), [PUSH], false), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.match(err.message, /token realm http:\/\/auth\.example\.com, which is not HTTPS; refusing to send credentials there/);
      return true;
    });
    assert.equal(server.calls.length, 0);
  });

  it('uses an https:// realm as usual', async () => {
    const server = tokenServer();
    const auth = new Authenticator(CREDS, server.fetch, { httpsOnly: true });
    await auth.onChallenge(HOST, bearer({ scope: PUSH }), [PUSH], false);
    assert.equal(server.calls.length, 1);
  });
});
