/**
 * Registry authentication: anonymous, Basic, and the Bearer token flow of the distribution spec. The registry
 * says which one it wants in a 401 `WWW-Authenticate` challenge; the scheme and the token realm are remembered
 * per host so later requests authenticate up front. Tokens are cached per scope set and refreshed before they
 * expire, because a request with a streamed body cannot be replayed after a 401.
 */
import * as z from 'zod';
import { staticCredentials, type CredentialSource } from './credentials';
import { RegistryError } from './errors';

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header: `Bearer realm="https://…",service="…",scope="a b"` (quoted commas allowed). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = m[2] as string;
  let p: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (p = re.exec(rest)) !== null) {
    params[(p[1] as string).toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: (m[1] as string).toLowerCase(), params };
}

const TokenResponse = z.looseObject({
  token: z.string().min(1).optional(),
  access_token: z.string().min(1).optional(),
  expires_in: z.number().positive().optional(),
});

interface CachedToken {
  token: string;
  expiresAt: number;
  lifetimeMs: number;
}

/** How the authenticator fetches a token; the client supplies it so every request shares retries and logging. */
export type TokenFetcher = (
  url: URL,
  headers: Record<string, string>,
  /** passed through from the caller (the client's per-job scope) */
  context?: unknown,
) => Promise<{ status: number; body: string; wwwAuthenticate?: string }>;

/**
 * Tokens are renewed when less than this is left, so an upload started with one does not outlive it; for
 * short-lived tokens, when half their lifetime is left (else a 60 s token would never be reused).
 */
const REFRESH_MARGIN_MS = 60_000;
/** The distribution spec's default lifetime when the token server does not say. */
const DEFAULT_TOKEN_SECONDS = 60;

export class Authenticator {
  private readonly schemes = new Map<string, 'basic' | 'bearer'>();
  private readonly realms = new Map<string, { realm: string; service?: string }>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<CachedToken>>();

  private readonly source: CredentialSource;

  constructor(
    credentials: Credentials | CredentialSource | undefined,
    private readonly fetchToken: TokenFetcher,
    /** httpsOnly: credentials go to an HTTPS registry only through an HTTPS token realm, never in clear */
    private readonly options: { httpsOnly?: boolean; now?: () => number } = {},
  ) {
    this.source = credentials !== undefined && 'get' in credentials ? credentials : staticCredentials(credentials);
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private static basic(c: Credentials): string {
    return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  }

  /**
   * The Authorization header for a request to `host` needing `scopes`, when the host's scheme is already known;
   * undefined for a host that has not challenged yet (the request goes out anonymously and learns it).
   */
  async authorization(host: string, scopes: readonly string[], context?: unknown): Promise<string | undefined> {
    const scheme = this.schemes.get(host);
    if (scheme === 'basic') {
      const c = await this.source.get();
      return c ? Authenticator.basic(c) : undefined;
    }
    if (scheme === 'bearer') return `Bearer ${(await this.token(host, scopes, false, context)).token}`;
    return undefined;
  }

  /**
   * Learns from a 401 challenge and prepares the next attempt. `sentAuthorization` says whether the failed
   * request carried credentials: a request sent before the scheme was known (several start at once) is simply
   * retried, while Basic credentials refused, or a token refused twice, are final, unless the credentials can be
   * fetched anew (a rotated secret, a new ECR token): then once more with those. `refused` counts the 401s the
   * request had although it carried credentials.
   */
  async onChallenge(
    host: string,
    header: string | undefined,
    scopes: readonly string[],
    sentAuthorization: boolean,
    context?: unknown,
    refused = 1,
  ): Promise<void> {
    const challenge = header ? parseChallenge(header) : undefined;
    if (challenge?.scheme === 'basic') {
      if (!(await this.source.get())) {
        throw new RegistryError(
          `${host} requires credentials (Basic) and none are configured: set REGISTRY_USERNAME and REGISTRY_PASSWORD, or REGISTRY_CREDENTIALS_SECRET`,
          { status: 401, code: 'UNAUTHORIZED' },
        );
      }
      if (sentAuthorization && this.schemes.get(host) === 'basic') {
        if (this.source.refreshable && refused <= 1) {
          this.source.invalidate();
          return;
        }
        throw new RegistryError(`${host} rejected the configured credentials (${this.source.description})`, { status: 401, code: 'UNAUTHORIZED' });
      }
      this.schemes.set(host, 'basic');
      return;
    }
    if (challenge?.scheme === 'bearer' && challenge.params.realm) {
      this.schemes.set(host, 'bearer');
      this.realms.set(host, { realm: challenge.params.realm, ...(challenge.params.service ? { service: challenge.params.service } : {}) });
      const challenged = challenge.params.scope ? challenge.params.scope.split(' ').filter((s) => s !== '') : [];
      const all = [...new Set([...scopes, ...challenged])];
      if (sentAuthorization && challenge.params.error === 'insufficient_scope' && challenged.every((s) => scopes.includes(s))) {
        throw new RegistryError(`${host} denied the token the registry issued for ${scopes.join(' ')} (insufficient_scope)`, {
          status: 401,
          code: 'UNAUTHORIZED',
        });
      }
      // Refetch only when the refused request carried a token; one sent before the scheme was known can use
      // the token a concurrent request may have fetched meanwhile.
      await this.token(host, all, sentAuthorization, context);
      // Remember the widened scope set under the requested one too, so the retry finds it.
      if (all.length !== scopes.length) this.tokens.set(this.cacheKey(host, scopes), await this.token(host, all, false, context));
      return;
    }
    throw new RegistryError(`${host} answered 401 without a usable challenge (${header ?? 'no WWW-Authenticate header'})`, {
      status: 401,
      code: 'UNAUTHORIZED',
    });
  }

  /** Makes sure the token for `scopes` lives long enough for a long request (an upload). */
  async ensureFresh(host: string, scopes: readonly string[], context?: unknown): Promise<void> {
    if (this.schemes.get(host) === 'bearer') await this.token(host, scopes, false, context);
  }

  private cacheKey(host: string, scopes: readonly string[]): string {
    const r = this.realms.get(host);
    return `${host} ${r?.realm ?? ''} ${r?.service ?? ''} ${[...scopes].sort().join(' ')}`;
  }

  private async token(host: string, scopes: readonly string[], force: boolean, context?: unknown): Promise<CachedToken> {
    const key = this.cacheKey(host, scopes);
    const cached = this.tokens.get(key);
    if (!force && cached && cached.expiresAt - Math.min(REFRESH_MARGIN_MS, cached.lifetimeMs / 2) > this.now()) return cached;
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const p = this.requestToken(host, scopes, context)
      .then((t) => {
        this.tokens.set(key, t);
        return t;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async requestToken(host: string, scopes: readonly string[], context?: unknown): Promise<CachedToken> {
    try {
      return await this.requestTokenOnce(host, scopes, context);
    } catch (err) {
      // Refused credentials that can be fetched anew (rotated): once more with the new ones.
      if (!(err instanceof RegistryError) || err.code !== 'UNAUTHORIZED' || !this.source.refreshable) throw err;
      this.source.invalidate();
      return this.requestTokenOnce(host, scopes, context);
    }
  }

  private async requestTokenOnce(host: string, scopes: readonly string[], context?: unknown): Promise<CachedToken> {
    const realm = this.realms.get(host);
    if (!realm) throw new RegistryError(`${host}: no token realm known`, { code: 'UNAUTHORIZED', status: 401 });
    let url: URL;
    try {
      url = new URL(realm.realm);
    } catch {
      throw new RegistryError(`${host}: the token realm "${realm.realm}" is not a URL`, { code: 'UNAUTHORIZED', status: 401 });
    }
    if (this.options.httpsOnly && url.protocol !== 'https:') {
      throw new RegistryError(`${host} names the token realm ${url.origin}, which is not HTTPS; refusing to send credentials there`, {
        status: 401,
        code: 'UNAUTHORIZED',
      });
    }
    if (realm.service) url.searchParams.set('service', realm.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    const credentials = await this.source.get();
    if (credentials) headers.authorization = Authenticator.basic(credentials);
    const started = this.now();
    const res = await this.fetchToken(url, headers, context);
    if (res.status === 401 || res.status === 403) {
      throw new RegistryError(
        `the token server ${url.origin} refused ${credentials ? `the configured credentials (${this.source.description})` : 'an anonymous token'} (HTTP ${res.status})`,
        { status: res.status, code: res.status === 401 ? 'UNAUTHORIZED' : 'DENIED' },
      );
    }
    if (res.status !== 200) {
      throw new RegistryError(`the token server ${url.origin} answered HTTP ${res.status}`, {
        status: res.status,
        code: 'UNKNOWN',
        retryable: res.status >= 500 || res.status === 429,
      });
    }
    let parsed: z.infer<typeof TokenResponse>;
    try {
      parsed = TokenResponse.parse(JSON.parse(res.body));
    } catch {
      throw new RegistryError(`the token server ${url.origin} did not answer with a token`, { status: 200, code: 'UNKNOWN' });
    }
    const token = parsed.token ?? parsed.access_token;
    if (!token) throw new RegistryError(`the token server ${url.origin} did not answer with a token`, { status: 200, code: 'UNKNOWN' });
    const lifetimeMs = (parsed.expires_in ?? DEFAULT_TOKEN_SECONDS) * 1000;
    return { token, expiresAt: started + lifetimeMs, lifetimeMs };
  }
}
