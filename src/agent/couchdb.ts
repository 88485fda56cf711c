// A typed client for the parts of Apache CouchDB 3.x's HTTP API the agent uses (docs:
// ../shared/docs/couchdb-3.md "HTTP API used for management"). fetch, basic auth from memory, a
// timeout on every request. Errors name the method, the path and CouchDB's answer, never the
// credentials (they are not in the URL, and the Authorization header is never printed).
import { AgentError } from './errors.js';

export interface Credentials {
  username: string;
  password: string;
}

export interface SecurityObject {
  admins?: { names?: string[]; roles?: string[] };
  members?: { names?: string[]; roles?: string[] };
  [other: string]: unknown;
}

export interface UserDoc {
  _id: string;
  _rev?: string;
  name: string;
  type: 'user';
  roles: string[];
  password?: string;
  [other: string]: unknown;
}

export interface DatabaseInfo {
  db_name: string;
  doc_count: number;
  doc_del_count?: number;
  update_seq: unknown;
  sizes?: { file?: number; active?: number; external?: number };
}

export interface ShardMapDoc {
  _id: string;
  _rev: string;
  by_node?: Record<string, string[]>;
  by_range?: Record<string, string[]>;
  changelog?: unknown[];
  [other: string]: unknown;
}

/** CouchDB answered with an HTTP error status. */
export class CouchHttpError extends AgentError {
  constructor(
    readonly httpStatus: number,
    readonly error: string,
    readonly reason: string,
    readonly method: string,
    readonly path: string,
  ) {
    super('COUCHDB_ERROR', `CouchDB answered ${httpStatus} ${error}${reason ? ` (${reason})` : ''} to ${method} ${path}`);
    this.name = 'CouchHttpError';
  }
}

/** CouchDB could not be reached (refused, timed out). */
export class CouchUnreachableError extends AgentError {
  constructor(url: string, cause: string) {
    super('NOT_RUNNING', `CouchDB at ${url} is not answering: ${cause}`);
    this.name = 'CouchUnreachableError';
  }
}

export interface RequestOptions {
  body?: unknown;
  /** A body already serialized as JSON (instead of body). */
  rawBody?: string;
  query?: Record<string, string | number | boolean>;
  timeoutMs?: number;
  headers?: Record<string, string>;
  /** Send no credentials (for /_up). */
  anonymous?: boolean;
}

export const enc = encodeURIComponent;
export const userDocId = (name: string) => `org.couchdb.user:${name}`;

/**
 * A document's path under its database. Design and local document ids keep their slash: CouchDB 3.5
 * answers `/_design%2Fname` with a 301 to `/_design/name` (couchdb-3.md), which a client that does not
 * follow redirects sees as an error. The name after the prefix is encoded as any other id.
 */
export function docPath(db: string, id: string): string {
  const special = /^(_design|_local)\/(.+)$/s.exec(id);
  return `/${enc(db)}/${special ? `${special[1]}/${enc(special[2]!)}` : enc(id)}`;
}

export class CouchClient {
  readonly #auth: string | undefined;
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    credentials?: Credentials,
    private readonly timeoutMs = 30_000,
  ) {
    const u = new URL(baseUrl);
    if (u.username || u.password) throw new AgentError('INVALID_ARGUMENT', 'the CouchDB URL must not hold credentials');
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#auth = credentials ? `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}` : undefined;
  }

  /** The credentials' header, for a request this client cannot make (bytes, not JSON). */
  authHeaders(): Record<string, string> {
    return this.#auth ? { authorization: this.#auth } : {};
  }

  /** Any request; resolves with the status and the parsed body (or null), whatever the status. */
  async raw<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; body: T | null }> {
    let url = `${this.baseUrl}${path}`;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) q.set(k, String(v));
      url += `?${q.toString()}`;
    }
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.#auth && !opts.anonymous) headers.authorization = this.#auth;
    if (opts.body !== undefined || opts.rawBody !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
        signal: AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs),
        redirect: 'manual',
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const cause = e.name === 'TimeoutError' ? `no answer within ${opts.timeoutMs ?? this.timeoutMs} ms to ${method} ${path}` : (e.cause?.code ?? e.cause?.message ?? e.message);
      throw new CouchUnreachableError(this.baseUrl, cause);
    }
    const text = await res.text().catch(() => '');
    let body: T | null = null;
    if (text !== '') {
      try {
        body = JSON.parse(text) as T;
      } catch {
        body = null;
      }
    }
    return { status: res.status, body };
  }

  /** A request that must succeed (2xx); throws CouchHttpError otherwise. */
  async json<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const r = await this.raw<T>(method, path, opts);
    if (r.status < 200 || r.status > 299) throw httpError(r.status, r.body, method, path);
    return r.body as T;
  }

  // --- server -------------------------------------------------------------------------------

  /** GET /_up with a short timeout: true when CouchDB says ok. */
  async up(timeoutMs = 2000): Promise<boolean> {
    try {
      const r = await this.raw<{ status?: string }>('GET', '/_up', { timeoutMs, anonymous: true });
      return r.status === 200 && r.body?.status === 'ok';
    } catch {
      return false;
    }
  }

  info(): Promise<{ couchdb: string; version: string; uuid?: string; vendor?: { name?: string } }> {
    return this.json('GET', '/');
  }

  async nodeName(): Promise<string> {
    return (await this.json<{ name: string }>('GET', '/_node/_local')).name;
  }

  async session(): Promise<{ name: string | null; roles: string[] }> {
    const s = await this.json<{ userCtx: { name: string | null; roles: string[] } }>('GET', '/_session');
    return s.userCtx;
  }

  // --- databases ----------------------------------------------------------------------------

  allDbs(): Promise<string[]> {
    return this.json('GET', '/_all_dbs');
  }

  /** Database info, or null when the database does not exist. */
  async dbInfo(db: string): Promise<DatabaseInfo | null> {
    const r = await this.raw<DatabaseInfo>('GET', `/${enc(db)}`);
    if (r.status === 404) return null;
    if (r.status !== 200) throw httpError(r.status, r.body, 'GET', `/${enc(db)}`);
    return r.body!;
  }

  async createDb(db: string): Promise<'created' | 'exists'> {
    const r = await this.raw('PUT', `/${enc(db)}`);
    if (r.status === 201 || r.status === 202) return 'created';
    if (r.status === 412) return 'exists';
    // CouchDB 3.5 with single_node = true creates _users and _replicator itself just after start; a PUT
    // racing it answers 500 {"error":"error","reason":"conflict"} (couchdb-3.md). The other writer made it.
    if (r.status === 500 && JSON.stringify(r.body ?? '').includes('conflict')) {
      for (let i = 0; i < 50; i++) {
        if ((await this.dbInfo(db)) !== null) return 'exists';
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw httpError(r.status, r.body, 'PUT', `/${enc(db)}`);
  }

  async deleteDb(db: string): Promise<boolean> {
    const r = await this.raw('DELETE', `/${enc(db)}`);
    if (r.status === 200 || r.status === 202) return true;
    if (r.status === 404) return false;
    throw httpError(r.status, r.body, 'DELETE', `/${enc(db)}`);
  }

  getSecurity(db: string): Promise<SecurityObject> {
    return this.json('GET', `/${enc(db)}/_security`);
  }

  async putSecurity(db: string, sec: SecurityObject): Promise<void> {
    await this.json('PUT', `/${enc(db)}/_security`, { body: sec });
  }

  // --- documents ----------------------------------------------------------------------------

  async getDoc<T>(db: string, id: string): Promise<T | null> {
    const p = docPath(db, id);
    const r = await this.raw<T>('GET', p);
    if (r.status === 404) return null;
    if (r.status !== 200) throw httpError(r.status, r.body, 'GET', p);
    return r.body;
  }

  /** PUT a document; 'conflict' when it exists already (or its _rev is stale). */
  async putDoc(db: string, doc: { _id: string; [field: string]: unknown }): Promise<'ok' | 'conflict'> {
    const p = docPath(db, doc._id);
    const r = await this.raw('PUT', p, { body: doc });
    if (r.status === 201 || r.status === 202) return 'ok';
    if (r.status === 409) return 'conflict';
    throw httpError(r.status, r.body, 'PUT', p);
  }

  async deleteDoc(db: string, id: string, rev: string): Promise<'ok' | 'conflict' | 'missing'> {
    const p = docPath(db, id);
    const r = await this.raw('DELETE', p, { query: { rev } });
    if (r.status === 200 || r.status === 202) return 'ok';
    if (r.status === 409) return 'conflict';
    if (r.status === 404) return 'missing';
    throw httpError(r.status, r.body, 'DELETE', p);
  }

  async allDocs<T>(db: string, query: Record<string, string | number | boolean>): Promise<{ id: string; doc?: T }[]> {
    const r = await this.json<{ rows: { id: string; doc?: T }[] }>('GET', `/${enc(db)}/_all_docs`, { query });
    return r.rows;
  }

  // --- node-local configuration -------------------------------------------------------------

  async getConfig(section: string, key: string): Promise<string | null> {
    const p = `/_node/_local/_config/${enc(section)}/${enc(key)}`;
    const r = await this.raw<string>('GET', p);
    if (r.status === 404) return null;
    if (r.status !== 200) throw httpError(r.status, r.body, 'GET', p);
    return r.body;
  }

  /** The whole configuration as CouchDB runs it, by section: one request (one line in CouchDB's log). */
  async getAllConfig(): Promise<Record<string, Record<string, string>>> {
    return this.json<Record<string, Record<string, string>>>('GET', '/_node/_local/_config');
  }

  /**
   * Sets a value live; returns the previous value. persist false (X-Couch-Persist) keeps it in memory only:
   * the agent writes local.ini itself, which an isolated CouchDB can read but not write.
   */
  async putConfig(section: string, key: string, value: string, persist = true): Promise<string> {
    return this.json<string>('PUT', `/_node/_local/_config/${enc(section)}/${enc(key)}`, { body: value, ...persistHeader(persist) });
  }

  /** Removes a value; false when it was not set. Without persist, a value the ini files still hold comes back. */
  async deleteConfig(section: string, key: string, persist = true): Promise<boolean> {
    const p = `/_node/_local/_config/${enc(section)}/${enc(key)}`;
    const r = await this.raw('DELETE', p, persistHeader(persist));
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    throw httpError(r.status, r.body, 'DELETE', p);
  }

  // --- node-local databases (shard maps, nodes) ---------------------------------------------

  async nodeLocalDocs<T>(db: '_dbs' | '_nodes'): Promise<T[]> {
    const r = await this.json<{ rows: { id: string; doc?: T }[] }>('GET', `/_node/_local/${db}/_all_docs`, { query: { include_docs: true } });
    return r.rows.filter((row) => !row.id.startsWith('_design/') && row.doc).map((row) => row.doc!);
  }

  async putNodeLocalDoc(db: '_dbs' | '_nodes', doc: { _id: string; _rev?: string }): Promise<void> {
    await this.json('PUT', `/_node/_local/${db}/${enc(doc._id)}`, { body: doc });
  }

  async deleteNodeLocalDoc(db: '_dbs' | '_nodes', id: string): Promise<boolean> {
    const p = `/_node/_local/${db}/${enc(id)}`;
    const r = await this.raw<{ _rev: string }>('GET', p);
    if (r.status === 404) return false;
    if (r.status !== 200) throw httpError(r.status, r.body, 'GET', p);
    await this.json('DELETE', p, { query: { rev: r.body!._rev } });
    return true;
  }
}

/**
 * Polls _session with the credentials until CouchDB accepts them (as a server admin when admin). CouchDB
 * 3.5 applies a new admin password and a changed user password a moment after it acknowledged them
 * (couchdb-3.md): callers wait here so that what they return is true.
 */
export async function waitForCredentials(baseUrl: string, credentials: Credentials, admin: boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const client = new CouchClient(baseUrl, credentials, 5000);
  const deadline = Date.now() + timeoutMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    const r = await client.raw<{ userCtx?: { name?: string | null; roles?: string[] } }>('GET', '/_session');
    const ctx = r.status === 200 ? r.body?.userCtx : undefined;
    if (ctx?.name === credentials.username && (!admin || ctx.roles?.includes('_admin'))) return;
    if (Date.now() > deadline) throw new AgentError('COUCHDB_ERROR', `CouchDB did not accept ${what} within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

export function httpError(status: number, body: unknown, method: string, path: string): CouchHttpError {
  const b = (body && typeof body === 'object' ? body : {}) as { error?: unknown; reason?: unknown };
  return new CouchHttpError(status, typeof b.error === 'string' ? b.error : 'error', typeof b.reason === 'string' ? b.reason.slice(0, 300) : '', method, path);
}

function persistHeader(persist: boolean): { headers?: Record<string, string> } {
  return persist ? {} : { headers: { 'x-couch-persist': 'false' } };
}
