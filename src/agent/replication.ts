// Replication of one Apache CouchDB 3.x from a primary (docs/replication.md): persistent, continuous,
// checkpointed pull replications as `_replicator` documents (one per database), a reconcile step
// (new and deleted databases, `_security`, read-only guards, stuck jobs), status with lag, detach.
//
// The replica's CouchDB pulls: every `_replicator` document's source is the primary (as its
// replication user), its target this CouchDB (as this instance's replication user). Both users are
// server admins named REPLICATION_USER; the read-only guard (a validate_doc_update in GUARD_ID on every
// followed database) refuses every write whose userCtx is not that name. Credentials are kept in memory,
// in the 0600 state file and in the `_replicator` documents (where CouchDB hides them from non-admins);
// they never go to a log line, an error message or argv.
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { AgentError, invalid } from './errors.js';
import { CouchClient, CouchHttpError, enc, httpError, waitForCredentials, type Credentials } from './couchdb.js';
import { generatePassword } from './manage.js';
import { checkDatabaseName } from './validate.js';
import type {
  DatabaseReplicationStatus,
  FollowPrimaryRequest,
  ReplicationCredentials,
  ReplicationJobState,
  ReplicationStatus,
  ReplicationSyncResult,
} from './protocol.js';
import { describeError } from '../util/errors.js';

/** The server admin dedicated to replication, on the primary and on every replica. */
export const REPLICATION_USER = 'couchtrove-replicator';
/** The read-only guard: lives only on replicas, never replicated (every follow replication's selector excludes it). */
export const GUARD_ID = '_design/couchtrove-replica';
/** `_replicator` document ids: FOLLOW_PREFIX + database name with '/' as '~' (not allowed in database names). */
export const FOLLOW_PREFIX = 'couchtrove-follow-';
const REPLICATOR = '_replicator';
/**
 * Per job, instead of CouchDB's 30 s default: after the primary restarts, a job waits this long on a pooled
 * connection to the old process before it retries, so a replica resumes within seconds, not half a minute.
 */
const CONNECTION_TIMEOUT_MS = 10_000;
/** How long detach waits for the jobs of the deleted documents to stop before it locks them out instead. */
const DETACH_WAIT_MS = 10_000;
/** How long status() waits for the primary's answer before reporting it unreachable. */
const PRIMARY_PROBE_MS = 3000;
const USERS = '_users';

export const followDocId = (db: string) => `${FOLLOW_PREFIX}${db.replaceAll('/', '~')}`;
export const databaseOfDocId = (id: string) => id.slice(FOLLOW_PREFIX.length).replaceAll('~', '/');

/** Persisted per instance (agent: <instanceDir>/replication.json, mode 0600). */
export interface ReplicationState {
  version: 1;
  /** This instance's replication user (created on first need, the only copy of its password). */
  user: Credentials | null;
  /** The primary this instance follows, or null when standalone. */
  follow: (Required<Pick<FollowPrimaryRequest, 'primaryUrl' | 'username' | 'password'>> & { databases?: string[]; primaryName?: string }) | null;
  lastSync?: string;
}

export interface ReplicationStore {
  load(): Promise<ReplicationState>;
  save(state: ReplicationState): Promise<void>;
}

/** A 0600 JSON file; `write` must be atomic (the agent passes writePrivateFile). */
export function fileStore(file: string, write: (file: string, content: string) => Promise<void>): ReplicationStore {
  return {
    async load() {
      try {
        const s = JSON.parse(await fsp.readFile(file, 'utf8')) as ReplicationState;
        return { version: 1, user: s.user ?? null, follow: s.follow ?? null, ...(s.lastSync ? { lastSync: s.lastSync } : {}) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, user: null, follow: null };
        throw err;
      }
    },
    async save(state) {
      await write(file, `${JSON.stringify(state, null, 2)}\n`);
    },
  };
}

/** What survives between calls in one process: how far each database's lag scan has verified, when a job was last restarted. */
export class ReplicationMemory {
  readonly verified = new Map<string, string>();
  readonly restartedAt = new Map<string, number>();
  lock: Promise<unknown> = Promise.resolve();
  lastErrors: string[] = [];
}

export interface ReplicationManagerOptions {
  /** This CouchDB, as a server admin. */
  couch: CouchClient;
  /** This CouchDB's URL as its own replicator reaches it (the target of every follow replication). */
  localUrl: string;
  store: ReplicationStore;
  memory?: ReplicationMemory;
  log?: (line: string) => void;
  /** Timeout for requests to the primary (default 10 s). */
  primaryTimeoutMs?: number;
  /** A crashing job is re-created at most this often, once the primary answers again (default 20 s). */
  restartAfterMs?: number;
  /** Bound of the revs_diff lag scan per database and call (default 5000 changes). */
  lagScanLimit?: number;
  /**
   * Keeps a server admin that was set live (in memory only) across restarts: the agent writes its hash to
   * local.ini, which CouchDB cannot write. Without it, CouchDB persists the value itself.
   */
  persistAdmin?: (name: string) => Promise<void>;
}

interface ReplicatorDoc {
  _id: string;
  _rev?: string;
  source: { url: string; auth?: unknown; headers?: Record<string, string> };
  target: { url: string; auth?: unknown; headers?: Record<string, string> };
  continuous: boolean;
  create_target: boolean;
  selector: Record<string, unknown>;
  couchtrove: { database: string; primary: string; fingerprint: string };
  [other: string]: unknown;
}

interface SchedulerDoc {
  doc_id: string;
  id?: string | null;
  state?: string;
  info?: { error?: unknown; changes_pending?: unknown; checkpointed_source_seq?: unknown; through_seq?: unknown; [k: string]: unknown } | null;
  error_count?: number;
  last_updated?: string;
}

const JOB_STATES: ReplicationJobState[] = ['initializing', 'pending', 'running', 'crashing', 'error', 'failed', 'completed'];

/** The validate_doc_update of the guard: only the replication user writes. */
export function guardFunction(primaryName: string): string {
  const reason = JSON.stringify(`read-only replica of ${primaryName}: writes are refused`);
  return `function (newDoc, oldDoc, userCtx) { if (userCtx && userCtx.name === ${JSON.stringify(REPLICATION_USER)}) { return; } throw({forbidden: ${reason}}); }`;
}

/** URL without credentials, query or trailing slash; refuses what is not http(s). */
export function checkPrimaryUrl(raw: unknown): string {
  if (typeof raw !== 'string' || raw === '') throw invalid('primaryUrl must be an http(s) URL');
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw invalid(`primaryUrl is not a URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalid('primaryUrl must be an http(s) URL');
  if (u.username || u.password) throw invalid('primaryUrl must not hold credentials (give username and password)');
  if (u.search || u.hash) throw invalid('primaryUrl must not have a query or fragment');
  return `${u.origin}${u.pathname}`.replace(/\/+$/, '');
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function jobState(s: string | undefined): ReplicationJobState {
  return s && (JOB_STATES as string[]).includes(s) ? (s as ReplicationJobState) : 'unknown';
}

function errorText(e: unknown): string | undefined {
  if (e === undefined || e === null) return undefined;
  return (typeof e === 'string' ? e : JSON.stringify(e)).slice(0, 500);
}

export class ReplicationManager {
  readonly #couch: CouchClient;
  readonly #localUrl: string;
  readonly #store: ReplicationStore;
  readonly #mem: ReplicationMemory;
  readonly #log: (line: string) => void;
  readonly #primaryTimeoutMs: number;
  readonly #restartAfterMs: number;
  readonly #lagScanLimit: number;
  readonly #persistAdmin: ((name: string) => Promise<void>) | undefined;

  constructor(o: ReplicationManagerOptions) {
    this.#couch = o.couch;
    this.#localUrl = o.localUrl.replace(/\/+$/, '');
    this.#store = o.store;
    this.#mem = o.memory ?? new ReplicationMemory();
    this.#log = o.log ?? (() => undefined);
    this.#primaryTimeoutMs = o.primaryTimeoutMs ?? 10_000;
    this.#restartAfterMs = o.restartAfterMs ?? 20_000;
    this.#lagScanLimit = o.lagScanLimit ?? 5000;
    this.#persistAdmin = o.persistAdmin;
  }

  /** One change of the replication set-up at a time (follow, sync, detach). */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#mem.lock.then(fn, fn);
    this.#mem.lock = next.catch(() => undefined);
    return next;
  }

  // --- the replication user ------------------------------------------------------------------

  /** Creates (or repairs) this CouchDB's replication user: a server admin with a generated password. */
  async #ensureUser(state: ReplicationState): Promise<Credentials> {
    let user = state.user;
    if (!user) {
      user = { username: REPLICATION_USER, password: generatePassword() };
      state.user = user;
      await this.#store.save(state);
    }
    const probe = new CouchClient(this.#couch.baseUrl, user, 10_000);
    const ok = await probe.session().then(
      (ctx) => ctx.name === user.username && ctx.roles.includes('_admin'),
      () => false,
    );
    if (!ok) {
      await this.#setUser(user);
      this.#log(`replication user ${user.username} set up`);
    }
    return user;
  }

  async #setUser(user: Credentials): Promise<void> {
    // CouchDB hashes the value and keeps the hash in its last ini file; the request body is not logged.
    await this.#couch.putConfig('admins', user.username, user.password, this.#persistAdmin === undefined);
    await waitForCredentials(this.#couch.baseUrl, user, true, `the replication user ${user.username}`);
    await this.#persistAdmin?.(user.username);
  }

  async replicationSource(): Promise<ReplicationCredentials> {
    return this.#serial(async () => {
      const state = await this.#store.load();
      const user = await this.#ensureUser(state);
      return { username: user.username, password: user.password, url: this.#couch.baseUrl };
    });
  }

  // --- follow, sync --------------------------------------------------------------------------

  async followPrimary(request: FollowPrimaryRequest): Promise<ReplicationSyncResult> {
    if (!request || typeof request !== 'object') throw invalid('follow request must be {primaryUrl, username, password, databases?, primaryName?}');
    const primaryUrl = checkPrimaryUrl(request.primaryUrl);
    if (typeof request.username !== 'string' || request.username === '') throw invalid('username must be a non-empty string');
    if (typeof request.password !== 'string' || request.password === '') throw invalid('password must be a non-empty string');
    let databases: string[] | undefined;
    if (request.databases !== undefined) {
      if (!Array.isArray(request.databases)) throw invalid('databases must be a list of database names');
      databases = [...new Set((request.databases as unknown[]).filter((d) => d !== USERS).map((d) => checkDatabaseName(d)))].sort();
    }
    if (request.primaryName !== undefined && (typeof request.primaryName !== 'string' || request.primaryName.length > 200 || /[\r\n]/.test(request.primaryName))) {
      throw invalid('primaryName must be one line of at most 200 characters');
    }
    if (new URL(primaryUrl).origin === new URL(this.#localUrl).origin) throw invalid('an instance cannot follow itself');
    // The primary must answer with these credentials as a server admin before anything changes here.
    const primary = new CouchClient(primaryUrl, { username: request.username, password: request.password }, this.#primaryTimeoutMs);
    let ctx: { name: string | null; roles: string[] };
    try {
      ctx = await primary.session();
    } catch (err) {
      if (err instanceof CouchHttpError && err.httpStatus === 401) throw invalid(`the primary ${primaryUrl} refuses the replication credentials`);
      throw new AgentError('UNREACHABLE', `the primary ${primaryUrl} does not answer: ${describeError(err)}`);
    }
    if (!ctx.roles.includes('_admin')) throw invalid(`the replication user on ${primaryUrl} is not a server admin`);
    return this.#serial(async () => {
      const state = await this.#store.load();
      state.follow = {
        primaryUrl,
        username: request.username,
        password: request.password,
        ...(databases ? { databases } : {}),
        ...(request.primaryName ? { primaryName: request.primaryName } : {}),
      };
      await this.#store.save(state);
      this.#mem.verified.clear();
      this.#log(`following primary ${primaryUrl}${databases ? ` (databases ${databases.join(', ')} and _users)` : ''}`);
      return this.#sync(state);
    });
  }

  async sync(): Promise<ReplicationSyncResult> {
    return this.#serial(async () => this.#sync(await this.#store.load()));
  }

  async #replicatorDocs(): Promise<ReplicatorDoc[]> {
    const rows = await this.#couch.allDocs<ReplicatorDoc>(REPLICATOR, {
      include_docs: true,
      startkey: JSON.stringify(FOLLOW_PREFIX),
      endkey: JSON.stringify(`${FOLLOW_PREFIX}\ufff0`),
    });
    return rows.filter((r) => r.doc && r.id.startsWith(FOLLOW_PREFIX)).map((r) => r.doc!);
  }

  async #sync(state: ReplicationState): Promise<ReplicationSyncResult> {
    const result: ReplicationSyncResult = { added: [], removed: [], securityUpdated: [], restarted: [], errors: [] };
    const follow = state.follow;
    if (!follow) return result;
    const user = await this.#ensureUser(state);
    const primary = new CouchClient(follow.primaryUrl, { username: follow.username, password: follow.password }, this.#primaryTimeoutMs);
    const existing = new Map((await this.#replicatorDocs()).map((d) => [d._id, d]));

    let primaryDbs: string[] | null = null;
    try {
      primaryDbs = (await primary.allDbs()).filter((d) => !d.startsWith('_'));
    } catch (err) {
      result.errors.push(`primary ${follow.primaryUrl} unreachable: ${describeError(err)}`);
    }

    if (primaryDbs) {
      const wanted = [USERS, ...primaryDbs.filter((d) => !follow.databases || follow.databases.includes(d)).sort()];
      const primaryName = follow.primaryName ?? new URL(follow.primaryUrl).host;
      for (const db of wanted) {
        try {
          await this.#followDatabase(db, follow, user, primary, primaryName, existing.get(followDocId(db)), result);
        } catch (err) {
          result.errors.push(`${db}: ${describeError(err)}`);
        }
        existing.delete(followDocId(db));
      }
      // Left: replications of databases the primary no longer has (or no longer to follow).
      for (const doc of existing.values()) {
        const db = doc.couchtrove?.database ?? databaseOfDocId(doc._id);
        try {
          await this.#couch.deleteDoc(REPLICATOR, doc._id, doc._rev!);
          const gone = doc.couchtrove?.primary === follow.primaryUrl && (await primary.dbInfo(db)) === null;
          // A replica mirrors its primary: a database deleted there is deleted here, so a later database
          // of the same name starts empty instead of mixing in the old documents. Only once the job has
          // stopped: a job still running would create it again (create_target).
          if (gone && db !== USERS) {
            await this.#awaitJobsGone([doc._id]);
            await this.#couch.deleteDb(db);
          }
          this.#mem.verified.delete(db);
          result.removed.push(db);
          this.#log(`stopped following ${db}${gone ? ' (deleted on the primary; deleted here too)' : ''}`);
        } catch (err) {
          result.errors.push(`${db}: ${describeError(err)}`);
        }
      }
    }
    state.lastSync = new Date().toISOString();
    await this.#store.save(state);
    this.#mem.lastErrors = result.errors;
    return result;
  }

  #desiredDoc(db: string, follow: NonNullable<ReplicationState['follow']>, user: Credentials): ReplicatorDoc {
    const source = { url: `${follow.primaryUrl}/${enc(db)}`, auth: { basic: { username: follow.username, password: follow.password } } };
    const target = { url: `${this.#localUrl}/${enc(db)}`, auth: { basic: { username: user.username, password: user.password } } };
    const selector = { _id: { $ne: GUARD_ID } };
    // The fingerprint (a hash, so no secret is readable from it) tells whether the document is current.
    const fingerprint = sha(JSON.stringify({ source, target, selector, connection_timeout: CONNECTION_TIMEOUT_MS, v: 1 }));
    return {
      _id: followDocId(db),
      source,
      target,
      continuous: true,
      create_target: true,
      selector,
      connection_timeout: CONNECTION_TIMEOUT_MS,
      couchtrove: { database: db, primary: follow.primaryUrl, fingerprint },
    };
  }

  async #followDatabase(
    db: string,
    follow: NonNullable<ReplicationState['follow']>,
    user: Credentials,
    primary: CouchClient,
    primaryName: string,
    current: ReplicatorDoc | undefined,
    result: ReplicationSyncResult,
  ): Promise<void> {
    // 1. The database exists here with its guard before the replication writes into it.
    if ((await this.#couch.createDb(db)) === 'created') this.#log(`created ${db} to follow the primary`);
    await this.#ensureGuard(db, primaryName);
    // 2. _security, which CouchDB does not replicate, copied from the primary.
    const sec = await primary.getSecurity(db);
    const mine = await this.#couch.getSecurity(db);
    if (JSON.stringify(sec) !== JSON.stringify(mine)) {
      await this.#couch.putSecurity(db, sec);
      result.securityUpdated.push(db);
    }
    // 3. The replication document, (re)written when missing or different.
    const desired = this.#desiredDoc(db, follow, user);
    if (!current || current.couchtrove?.fingerprint !== desired.couchtrove.fingerprint) {
      if (current?._rev) await this.#couch.deleteDoc(REPLICATOR, current._id, current._rev);
      await this.#putReplicatorDoc(desired);
      this.#mem.verified.delete(db);
      result.added.push(db);
      this.#log(`replication of ${db} from ${follow.primaryUrl} ${current ? 're-created' : 'created'}`);
      return;
    }
    // 4. A crashing job whose primary answers again is re-created: same replication id, so it
    // resumes from its checkpoints at once instead of after the scheduler's back-off.
    const job = await this.#schedulerDoc(current._id);
    if (job && (job.state === 'crashing' || job.state === 'error' || job.state === 'failed')) {
      const last = this.#mem.restartedAt.get(db) ?? 0;
      if (Date.now() - last >= this.#restartAfterMs) {
        this.#mem.restartedAt.set(db, Date.now());
        await this.#couch.deleteDoc(REPLICATOR, current._id, current._rev!);
        await this.#putReplicatorDoc(desired);
        result.restarted.push(db);
        this.#log(`replication of ${db} was ${job.state}; re-created now that the primary answers`);
      }
    }
  }

  async #putReplicatorDoc(doc: ReplicatorDoc): Promise<void> {
    const r = await this.#couch.putDoc(REPLICATOR, doc);
    if (r === 'conflict') throw new AgentError('CONFLICT', `${REPLICATOR}/${doc._id} changed while it was being written; the next sync retries`);
  }

  async #ensureGuard(db: string, primaryName: string): Promise<void> {
    const fn = guardFunction(primaryName);
    const current = await this.#couch.getDoc<{ _id: string; _rev: string; validate_doc_update?: string }>(db, GUARD_ID);
    if (current?.validate_doc_update === fn) return;
    // Design documents written by an admin are not subject to validate_doc_update, so the guard can
    // always be installed, changed and removed by the agent.
    const r = await this.#couch.putDoc(db, { _id: GUARD_ID, ...(current ? { _rev: current._rev } : {}), language: 'javascript', validate_doc_update: fn, couchtrove: 'read-only replica guard; removed by detach' });
    if (r === 'conflict') throw new AgentError('CONFLICT', `${db}/${GUARD_ID} changed while it was being written; the next sync retries`);
  }

  /**
   * CouchDB stops a job a moment after its _replicator document is deleted (its document processor follows
   * _replicator's changes): until then it still copies. Detached means no job of those documents runs.
   */
  async #awaitJobsGone(docIds: string[], timeoutMs = 30_000): Promise<void> {
    if (docIds.length === 0) return;
    const ids = new Set(docIds);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.#couch.raw<{ jobs?: { doc_id?: string }[] }>('GET', '/_scheduler/jobs');
      const running = r.status === 200 ? (r.body?.jobs ?? []).filter((j) => j.doc_id !== undefined && ids.has(j.doc_id)) : [];
      if (r.status === 200 && running.length === 0) return;
      if (Date.now() > deadline) throw new AgentError('COUCHDB_ERROR', `replication jobs still run ${timeoutMs / 1000} s after their documents were deleted: ${running.map((j) => j.doc_id).join(', ') || `GET /_scheduler/jobs answered ${r.status}`}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // --- status --------------------------------------------------------------------------------

  async #schedulerDoc(docId: string): Promise<SchedulerDoc | null> {
    const p = `/_scheduler/docs/${REPLICATOR}/${enc(docId)}`;
    const r = await this.#couch.raw<SchedulerDoc>('GET', p);
    if (r.status === 404) return null;
    if (r.status !== 200) throw httpError(r.status, r.body, 'GET', p);
    return r.body;
  }

  async status(): Promise<ReplicationStatus> {
    const state = await this.#store.load();
    const follow = state.follow;
    const docs = await this.#replicatorDocs();
    const errors = [...this.#mem.lastErrors];
    const primary = follow ? new CouchClient(follow.primaryUrl, { username: follow.username, password: follow.password }, this.#primaryTimeoutMs) : null;
    let primaryUp = primary !== null;
    if (primary) {
      try {
        // A short probe: a primary that hangs (a stopped host) must not hold the replica's own status,
        // which eject reads to choose the replica that takes over (issue 23).
        await new CouchClient(follow!.primaryUrl, { username: follow!.username, password: follow!.password }, Math.min(this.#primaryTimeoutMs, PRIMARY_PROBE_MS)).session();
      } catch (err) {
        primaryUp = false;
        const msg = `primary ${follow!.primaryUrl} unreachable: ${describeError(err)}`;
        if (!errors.includes(msg)) errors.unshift(msg);
      }
    }
    const out: DatabaseReplicationStatus[] = [];
    let guarded = docs.length > 0;
    for (const doc of docs.sort((a, b) => a._id.localeCompare(b._id))) {
      const db = doc.couchtrove?.database ?? databaseOfDocId(doc._id);
      const s: DatabaseReplicationStatus = { database: db, docId: doc._id, state: 'unknown', lag: null, lagMethod: 'none' };
      try {
        const job = await this.#schedulerDoc(doc._id);
        if (job) {
          s.state = jobState(job.state);
          const err = errorText(job.info?.error);
          if (err) s.error = err;
          if (job.last_updated) s.lastUpdated = job.last_updated;
          if (typeof job.info?.changes_pending === 'number') {
            s.lag = job.info.changes_pending;
            s.lagMethod = 'changes_pending';
          }
        } else s.error = 'not (yet) known to the replication scheduler';
        const info = await this.#couch.dbInfo(db);
        if (info) {
          s.docCount = info.doc_count;
          s.updateSeq = typeof info.update_seq === 'string' ? info.update_seq : JSON.stringify(info.update_seq);
        }
        const guard = info ? await this.#couch.getDoc<{ validate_doc_update?: string }>(db, GUARD_ID) : null;
        if (!guard?.validate_doc_update) guarded = false;
        if (s.lagMethod === 'none' && primary && primaryUp) {
          const seed = typeof job?.info?.checkpointed_source_seq === 'string' ? job.info.checkpointed_source_seq : undefined;
          const lag = await this.#scanLag(db, primary, seed);
          s.lag = lag.lag;
          s.lagMethod = 'revs_diff';
          if (lag.atLeast) s.lagAtLeast = true;
        }
      } catch (err) {
        s.error = s.error ?? describeError(err);
      }
      out.push(s);
    }
    return {
      role: follow ? 'replica' : 'standalone',
      ...(follow ? { primaryUrl: follow.primaryUrl } : {}),
      readOnly: guarded,
      databases: out,
      errors,
      ...(state.lastSync ? { lastSync: state.lastSync } : {}),
    };
  }

  /**
   * Lag without the scheduler's changes_pending: the primary's changes after the last point known to
   * be on the replica, checked with the replica's _revs_diff. Sequences are opaque: they are only
   * passed back as `since`, never compared. The verified point advances over the prefix of changes
   * whose revisions are all here.
   */
  async #scanLag(db: string, primary: CouchClient, seed: string | undefined): Promise<{ lag: number; atLeast: boolean }> {
    let since = this.#mem.verified.get(db) ?? seed ?? '0';
    let lag = 0;
    let scanned = 0;
    let allPresent = true;
    const batch = 1000;
    for (;;) {
      const r = await primary.json<{ results: { id: string; seq: unknown; changes: { rev: string }[] }[]; last_seq: unknown }>('GET', `/${enc(db)}/_changes`, {
        query: { since, limit: batch, style: 'all_docs' },
      });
      const rows = r.results.filter((row) => row.id !== GUARD_ID);
      if (rows.length) {
        const ask: Record<string, string[]> = {};
        for (const row of rows) ask[row.id] = [...new Set([...(ask[row.id] ?? []), ...row.changes.map((c) => c.rev)])];
        const diff = await this.#couch.raw<Record<string, { missing?: string[] }>>('POST', `/${enc(db)}/_revs_diff`, { body: ask });
        if (diff.status !== 200 && diff.status !== 404) throw httpError(diff.status, diff.body, 'POST', `/${enc(db)}/_revs_diff`);
        const missing = diff.status === 404 ? null : (diff.body ?? {});
        for (const row of rows) {
          const miss = missing === null ? row.changes.map((c) => c.rev) : (missing[row.id]?.missing ?? []).filter((rev) => row.changes.some((c) => c.rev === rev));
          if (miss.length) {
            lag++;
            allPresent = false;
          } else if (allPresent) this.#mem.verified.set(db, typeof row.seq === 'string' ? row.seq : JSON.stringify(row.seq));
        }
      }
      scanned += r.results.length;
      if (allPresent && r.results.length < batch) this.#mem.verified.set(db, typeof r.last_seq === 'string' ? r.last_seq : JSON.stringify(r.last_seq));
      if (r.results.length < batch) return { lag, atLeast: false };
      if (scanned >= this.#lagScanLimit) return { lag, atLeast: true };
      since = typeof r.last_seq === 'string' ? r.last_seq : JSON.stringify(r.last_seq);
    }
  }

  // --- detach --------------------------------------------------------------------------------

  /** Stops following: every follow document deleted, every guard removed, the state forgotten. */
  async detach(): Promise<ReplicationSyncResult> {
    return this.#serial(async () => {
      const result: ReplicationSyncResult = { added: [], removed: [], securityUpdated: [], restarted: [], errors: [] };
      const state = await this.#store.load();
      const stopped: string[] = [];
      for (const doc of await this.#replicatorDocs()) {
        await this.#couch.deleteDoc(REPLICATOR, doc._id, doc._rev!);
        stopped.push(doc._id);
        result.removed.push(doc.couchtrove?.database ?? databaseOfDocId(doc._id));
      }
      try {
        await this.#awaitJobsGone(stopped, DETACH_WAIT_MS);
      } catch (err) {
        // A job reading from a primary that hangs (a stopped host, eject) outlives its document for a long
        // while (apache/couchdb#5554): a new password for the replication user it writes here as, and it can
        // write nothing more when the primary wakes up.
        const user = { username: REPLICATION_USER, password: generatePassword() };
        state.user = user;
        await this.#store.save(state);
        await this.#setUser(user);
        this.#log(`detach: ${describeError(err)}; the replication user has a new password, so they can no longer write here`);
      }
      for (const db of await this.#couch.allDbs()) {
        if (db === REPLICATOR) continue;
        const guard = await this.#couch.getDoc<{ _rev: string }>(db, GUARD_ID);
        if (guard) await this.#couch.deleteDoc(db, GUARD_ID, guard._rev);
      }
      const was = state.follow?.primaryUrl;
      state.follow = null;
      await this.#store.save(state);
      this.#mem.verified.clear();
      this.#mem.lastErrors = [];
      this.#log(`detached${was ? ` from primary ${was}` : ''}: standalone and writable`);
      return result;
    });
  }
}
