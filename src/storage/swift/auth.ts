// Swift authentication from the environment, with python-swiftclient's and OpenStack's variable names:
//   OS_STORAGE_URL + OS_AUTH_TOKEN        a ready token (cannot be renewed: a 401 is final)
//   ST_AUTH + ST_USER + ST_KEY            auth v1 (tempauth, swauth, RadosGW, many public clouds)
//   OS_AUTH_URL + OS_USERNAME + OS_PASSWORD (+ OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME,
//     OS_REGION_NAME, OS_INTERFACE; or the *_ID forms)       Keystone v3 password
//   OS_AUTH_URL + OS_APPLICATION_CREDENTIAL_ID + OS_APPLICATION_CREDENTIAL_SECRET   Keystone v3 application credential
// Secrets only ever travel in request headers or bodies; messages name the auth URL (without user info) and
// the variables to check, never a value.
import { retry, type RetryPolicy } from '../retry.js';
import { StorageError } from '../backend.js';
import { safeUrl, storageError } from '../util.js';

export interface SwiftSession {
  storageUrl: string;
  token: string;
  /** When the token stops working, if the server said; renewed a minute before. */
  expiresAt?: number;
}

export interface SwiftAuth {
  /** For messages: the method and the auth URL, nothing secret. */
  readonly description: string;
  /** False for a ready token: there is nothing to renew it with. */
  readonly renewable: boolean;
  authenticate(signal?: AbortSignal): Promise<SwiftSession>;
}

type Env = NodeJS.ProcessEnv;

function nonEmpty(env: Env, name: string): string | undefined {
  const v = env[name];
  return v !== undefined && v !== '' ? v : undefined;
}

export function swiftAuthFromEnv(env: Env, policy: RetryPolicy = {}): SwiftAuth {
  const storageUrl = nonEmpty(env, 'OS_STORAGE_URL');
  const token = nonEmpty(env, 'OS_AUTH_TOKEN');
  if (storageUrl && token) return new StaticAuth(storageUrl, token);

  const stAuth = nonEmpty(env, 'ST_AUTH');
  if (stAuth) {
    const user = nonEmpty(env, 'ST_USER');
    const key = nonEmpty(env, 'ST_KEY');
    if (!user || !key) throw new StorageError('Swift auth v1: ST_AUTH is set but ST_USER or ST_KEY is missing');
    return new V1Auth(stAuth, user, key, policy);
  }

  const osAuth = nonEmpty(env, 'OS_AUTH_URL');
  if (osAuth) return new KeystoneV3Auth(osAuth, keystoneIdentity(env), env, policy);

  throw new StorageError(
    'Swift credentials missing: set ST_AUTH, ST_USER and ST_KEY (auth v1), or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and ' +
      'OS_PROJECT_NAME (Keystone v3), or OS_STORAGE_URL and OS_AUTH_TOKEN',
  );
}

class StaticAuth implements SwiftAuth {
  readonly renewable = false;
  readonly description: string;
  constructor(private readonly storageUrl: string, private readonly token: string) {
    this.description = `the token in OS_AUTH_TOKEN for ${safeUrl(storageUrl)}`;
  }
  async authenticate(): Promise<SwiftSession> {
    return { storageUrl: this.storageUrl, token: this.token };
  }
}

/** HTTP status → error for an auth request; 5xx, 408 and 429 may pass. */
function authFailure(what: string, status: number, hint: string): StorageError {
  const transient = status >= 500 || status === 408 || status === 429;
  const reason = status === 401 || status === 403 ? `rejected the credentials (HTTP ${status}); check ${hint}` : `answered HTTP ${status}`;
  return storageError(`${what} ${reason}`, { transient });
}

class V1Auth implements SwiftAuth {
  readonly renewable = true;
  readonly description: string;
  constructor(private readonly url: string, private readonly user: string, private readonly key: string, private readonly policy: RetryPolicy) {
    this.description = `Swift auth v1 at ${safeUrl(url)}`;
  }

  authenticate(signal?: AbortSignal): Promise<SwiftSession> {
    return retry(this.description, async () => {
      let res: Response;
      try {
        res = await fetch(this.url, { headers: { 'X-Auth-User': this.user, 'X-Auth-Key': this.key }, signal: signal ?? null });
      } catch (err) {
        throw storageError(`${this.description}: ${networkReason(err)}`, { cause: err, transient: !signal?.aborted });
      }
      await res.body?.cancel();
      if (res.status < 200 || res.status > 299) throw authFailure(this.description, res.status, 'ST_USER and ST_KEY');
      const storageUrl = res.headers.get('x-storage-url');
      const token = res.headers.get('x-auth-token') ?? res.headers.get('x-storage-token');
      if (!storageUrl || !token) throw storageError(`${this.description} answered without X-Storage-Url or X-Auth-Token`);
      const expires = Number(res.headers.get('x-auth-token-expires'));
      return { storageUrl, token, ...(Number.isFinite(expires) && expires > 0 ? { expiresAt: Date.now() + expires * 1000 } : {}) };
    }, this.policy);
  }
}

export interface KeystoneIdentity {
  identity: Record<string, unknown>;
  scope?: Record<string, unknown>;
}

/** The body of POST /v3/auth/tokens from the OS_* variables (exported for tests). */
export function keystoneIdentity(env: Env): KeystoneIdentity {
  const acId = nonEmpty(env, 'OS_APPLICATION_CREDENTIAL_ID');
  const acSecret = nonEmpty(env, 'OS_APPLICATION_CREDENTIAL_SECRET');
  if (acId && acSecret) {
    // An application credential carries its own project scope.
    return { identity: { methods: ['application_credential'], application_credential: { id: acId, secret: acSecret } } };
  }
  const password = nonEmpty(env, 'OS_PASSWORD');
  const userId = nonEmpty(env, 'OS_USER_ID');
  const username = nonEmpty(env, 'OS_USERNAME');
  if (!password || (!userId && !username)) {
    throw new StorageError('Keystone v3: OS_AUTH_URL is set but OS_USERNAME (or OS_USER_ID) or OS_PASSWORD is missing');
  }
  const domain = (idVar: string, nameVar: string): Record<string, string> => {
    const id = nonEmpty(env, idVar);
    if (id) return { id };
    const name = nonEmpty(env, nameVar) ?? nonEmpty(env, 'OS_DEFAULT_DOMAIN_NAME');
    if (name) return { name };
    return { id: nonEmpty(env, 'OS_DEFAULT_DOMAIN_ID') ?? nonEmpty(env, 'OS_DEFAULT_DOMAIN') ?? 'default' };
  };
  const user: Record<string, unknown> = userId ? { id: userId, password } : { name: username, domain: domain('OS_USER_DOMAIN_ID', 'OS_USER_DOMAIN_NAME'), password };
  const identity = { methods: ['password'], password: { user } };
  const projectId = nonEmpty(env, 'OS_PROJECT_ID') ?? nonEmpty(env, 'OS_TENANT_ID');
  const projectName = nonEmpty(env, 'OS_PROJECT_NAME') ?? nonEmpty(env, 'OS_TENANT_NAME');
  if (projectId) return { identity, scope: { project: { id: projectId } } };
  if (projectName) return { identity, scope: { project: { name: projectName, domain: domain('OS_PROJECT_DOMAIN_ID', 'OS_PROJECT_DOMAIN_NAME') } } };
  throw new StorageError('Keystone v3: set OS_PROJECT_NAME (or OS_PROJECT_ID): Swift needs a project-scoped token');
}

interface CatalogEntry {
  type?: string;
  endpoints?: { interface?: string; region?: string; region_id?: string; url?: string }[];
}

/** The object-store endpoint of a Keystone v3 catalog for the region and interface (exported for tests). */
export function pickObjectStoreEndpoint(catalog: unknown, region: string | undefined, iface: string): string {
  const entries = Array.isArray(catalog) ? (catalog as CatalogEntry[]) : [];
  const service = entries.find((e) => e.type === 'object-store');
  if (!service) throw new StorageError('Keystone v3: the token catalog has no object-store service (is Swift registered?)');
  const wanted = iface.replace(/URL$/, '');
  const matches = (service.endpoints ?? []).filter(
    (e) => (e.interface ?? 'public') === wanted && (!region || e.region_id === region || e.region === region) && typeof e.url === 'string',
  );
  if (matches.length === 0) {
    const have = (service.endpoints ?? []).map((e) => `${e.interface ?? '?'}/${e.region_id ?? e.region ?? '?'}`).join(', ');
    throw new StorageError(`Keystone v3: no ${wanted} object-store endpoint${region ? ` in region ${region}` : ''} (catalog has: ${have || 'none'}); check OS_REGION_NAME and OS_INTERFACE`);
  }
  if (!region && matches.length > 1) {
    const regions = [...new Set(matches.map((e) => e.region_id ?? e.region))];
    if (regions.length > 1) throw new StorageError(`Keystone v3: object-store endpoints in several regions (${regions.join(', ')}): set OS_REGION_NAME`);
  }
  return matches[0]!.url!;
}

class KeystoneV3Auth implements SwiftAuth {
  readonly renewable = true;
  readonly description: string;
  private readonly tokensUrl: string;
  private readonly region: string | undefined;
  private readonly iface: string;

  constructor(authUrl: string, private readonly body: KeystoneIdentity, env: Env, private readonly policy: RetryPolicy) {
    const base = authUrl.replace(/\/+$/, '');
    this.tokensUrl = /\/v3$/.test(base) ? `${base}/auth/tokens` : `${base}/v3/auth/tokens`;
    this.description = `Keystone v3 at ${safeUrl(authUrl)}`;
    this.region = nonEmpty(env, 'OS_REGION_NAME');
    this.iface = nonEmpty(env, 'OS_INTERFACE') ?? nonEmpty(env, 'OS_ENDPOINT_TYPE') ?? 'public';
  }

  authenticate(signal?: AbortSignal): Promise<SwiftSession> {
    return retry(this.description, async () => {
      let res: Response;
      try {
        res = await fetch(this.tokensUrl, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ auth: this.body }),
          signal: signal ?? null,
        });
      } catch (err) {
        throw storageError(`${this.description}: ${networkReason(err)}`, { cause: err, transient: !signal?.aborted });
      }
      if (res.status !== 201 && res.status !== 200) {
        await res.body?.cancel();
        throw authFailure(this.description, res.status, 'OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and the domain variables');
      }
      const token = res.headers.get('x-subject-token');
      let doc: { token?: { catalog?: unknown; expires_at?: string } };
      try {
        doc = (await res.json()) as typeof doc;
      } catch (err) {
        throw storageError(`${this.description} answered with a body that is not JSON`, { cause: err });
      }
      if (!token) throw storageError(`${this.description} answered without X-Subject-Token`);
      const storageUrl = pickObjectStoreEndpoint(doc.token?.catalog, this.region, this.iface);
      const expiresAt = doc.token?.expires_at ? Date.parse(doc.token.expires_at) : NaN;
      return { storageUrl, token, ...(Number.isFinite(expiresAt) ? { expiresAt } : {}) };
    }, this.policy);
  }
}

/** "connection refused" and the like, from fetch's error and its cause; never headers or bodies. */
export function networkReason(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 4; depth++) {
    const o = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof o.code === 'string') {
      parts.push(o.code);
      break;
    }
    if (typeof o.message === 'string' && o.message && o.message !== 'fetch failed') parts.push(o.message);
    e = o.cause;
  }
  const text = parts.join(': ') || 'request failed';
  const known: Record<string, string> = {
    ECONNREFUSED: 'connection refused', ECONNRESET: 'connection reset', EPIPE: 'connection closed while sending',
    UND_ERR_SOCKET: 'connection closed by the server', ETIMEDOUT: 'timed out', ENOTFOUND: 'host not found',
    UND_ERR_HEADERS_TIMEOUT: 'no answer in time', UND_ERR_BODY_TIMEOUT: 'the answer stalled',
  };
  return known[text] ? `${known[text]} (${text})` : text;
}
