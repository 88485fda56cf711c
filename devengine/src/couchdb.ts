// couchtrove DEVELOPMENT ENGINE - NOT Apache CouchDB.
//
// The program behind devengine/release/bin/couchdb: a stand-in for Apache CouchDB 3.x for tests and
// for trying couchtrove where CouchDB cannot be installed. It reads the configuration the way CouchDB
// does (COUCHDB_INI_FILES, COUCHDB_ARGS_FILE with -name, [chttpd] port/bind_address, [couchdb]
// database_dir/uuid/single_node, [admins] hashed in place in the last ini file) and serves CouchDB's
// HTTP API from express-pouchdb 4.2 + pouchdb 9 (LevelDB under database_dir), with a thin shim in
// front for what express-pouchdb lacks or does differently from CouchDB 3 (/_up, GET /,
// /_node/_local[/_config|_dbs|_nodes], _session with username, _bulk_get with every leaf revision,
// /_scheduler/docs, /_all_dbs hiding internals and refusing anonymous users once an admin exists;
// for replication: `auth.basic` endpoints in _replicator documents, `_changes?filter=_selector` with a
// POST body, and a scheduler state of crashing when a running job's source does not answer).
// What it does not emulate is listed in docs/agent.md. SIGTERM stops it cleanly.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { pbkdf2Sync, randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { IniFile, mergeIni } from '../../src/agent/ini.js';

const require = createRequire(import.meta.url);

export const DEVENGINE_VERSION = '3.5.0-devengine';
const VENDOR = 'couchtrove development engine (express-pouchdb 4.2 + pouchdb 9): NOT Apache CouchDB';
const DB_NAME_RE = /^[a-z][a-z0-9_$()+/-]*$/;
const SYSTEM_DBS = new Set(['_users', '_replicator', '_global_changes']);
/** How long a new admin or a changed user password is refused (CouchDB 3.5 applies them a moment later). */
const AUTH_DELAY_MS = 400;
/** How long a replication job runs on after its _replicator document is deleted. */
const REPLICATION_STOP_MS = 500;
/** How long after its port opens the server creates its system databases. */
const SYSTEM_DB_DELAY_MS = 300;

// ---------------------------------------------------------------------------------------------
// Logging, in CouchDB's shape: "[level] time node <pid> -------- message", to stderr.

const LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency', 'none'];
let logLevel = 1;
let nodeName = 'couchdb@127.0.0.1';

function log(level: string, message: string): void {
  const n = LEVELS.indexOf(level);
  if (n < logLevel) return;
  process.stderr.write(`[${level}] ${new Date().toISOString()} ${nodeName} <0.${process.pid}.0> -------- ${message}\n`);
}

/** The user name of a Basic Authorization header (never its password), or 'undefined' as CouchDB logs an anonymous request. */
function basicUser(h: string | undefined): string {
  const m = /^Basic\s+(\S+)$/i.exec(h ?? '');
  const name = m ? Buffer.from(m[1]!, 'base64').toString('utf8').split(':')[0] : undefined;
  return name && /^[^\s]+$/.test(name) ? name : 'undefined';
}

function setLogLevel(name: string | undefined): void {
  const n = LEVELS.indexOf(name === 'warn' ? 'warning' : (name ?? 'info'));
  logLevel = n < 0 ? 1 : n;
}

function fatal(message: string): never {
  log('error', message);
  process.stderr.write(`Kernel pid terminated (application_controller) (${message})\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Configuration: the ini chain, the args file.

interface IniSource {
  file: string;
  ini: IniFile;
}

function iniChain(home: string): string[] {
  const env = process.env.COUCHDB_INI_FILES;
  if (env && env.trim() !== '') return env.trim().split(/\s+/);
  const out: string[] = [];
  const etc = path.join(home, 'etc');
  const withDir = (base: string) => {
    out.push(path.join(etc, `${base}.ini`));
    const d = path.join(etc, `${base}.d`);
    if (fs.existsSync(d)) for (const f of fs.readdirSync(d).sort()) if (f.endsWith('.ini')) out.push(path.join(d, f));
  };
  withDir('default');
  withDir('local');
  return out;
}

function readIni(file: string): IniFile {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fatal(`cannot read ini file ${file}: ${(err as Error).message}`);
    log('warning', `ini file ${file} does not exist`);
  }
  const ini = IniFile.parse(text);
  const p = ini.problems[0];
  if (p) fatal(`{config_parse_error, "${file}", line ${p.line}: ${JSON.stringify(p.text)}}`);
  return ini;
}

function writeIniAtomic(src: IniSource): void {
  const tmp = `${src.file}.tmp-${process.pid}`;
  let mode = 0o600;
  try {
    mode = fs.statSync(src.file).mode & 0o777;
  } catch {
    // new file
  }
  fs.writeFileSync(tmp, src.ini.toString(), { mode });
  fs.renameSync(tmp, src.file);
}

function readIniQuietly(file: string): IniFile | null {
  try {
    const ini = IniFile.parse(fs.readFileSync(file, 'utf8'));
    return ini.problems.length === 0 ? ini : null;
  } catch {
    return null;
  }
}

function readNodeName(home: string): string {
  const file = process.env.COUCHDB_ARGS_FILE ?? path.join(home, 'etc', 'vm.args');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return fatal(`cannot read args file ${file}: ${(err as Error).message}`);
  }
  for (const raw of text.split(/\r?\n/)) {
    const m = /^\s*-s?name\s+(\S+)\s*$/.exec(raw);
    if (m) {
      const name = m[1]!;
      if (!/^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$/.test(name)) fatal(`Protocol 'inet_tcp': invalid node name: ${name}`);
      return name;
    }
  }
  return 'couchdb@127.0.0.1';
}

function hashPassword(password: string): string {
  const salt = randomBytes(16).toString('hex');
  const iterations = 10;
  const derived = pbkdf2Sync(password, salt, iterations, 20, 'sha1').toString('hex');
  return `-pbkdf2-${derived},${salt},${iterations}`;
}

const isHashed = (v: string) => /^-(pbkdf2|hashed)[-:]/.test(v);

function intSetting(config: Map<string, Map<string, string>>, section: string, key: string, dflt: number): number {
  const raw = config.get(section)?.get(key);
  if (raw === undefined || raw === '') return dflt;
  if (!/^\d+$/.test(raw)) fatal(`{badarg, [{erlang, list_to_integer, [${JSON.stringify(raw)}]}, {config, ${section}, ${key}}]}`);
  return Number(raw);
}

// ---------------------------------------------------------------------------------------------
// Node-local databases (_dbs shard maps, _nodes), kept as JSON in database_dir.

interface ShardMap {
  _id: string;
  _rev: string;
  shard_suffix: number[];
  changelog: [string, string, string][];
  by_node: Record<string, string[]>;
  by_range: Record<string, string[]>;
  props: Record<string, unknown>;
}

interface NodeDoc {
  _id: string;
  _rev: string;
}

/** A rough check that an Erlang term's brackets and braces close in order. */
function balancedTerm(text: string): boolean {
  const open: string[] = [];
  for (const c of text) {
    if (c === '[' || c === '{') open.push(c);
    else if (c === ']' || c === '}') if (open.pop() !== (c === ']' ? '[' : '{')) return false;
  }
  return open.length === 0;
}

class NodeLocal {
  dbs: Record<string, ShardMap> = {};
  nodes: Record<string, NodeDoc> = {};
  constructor(private readonly file: string) {
    if (fs.existsSync(file)) {
      const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { dbs?: Record<string, ShardMap>; nodes?: Record<string, NodeDoc> };
      this.dbs = data.dbs ?? {};
      this.nodes = data.nodes ?? {};
    }
  }
  save(): void {
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ dbs: this.dbs, nodes: this.nodes }));
    fs.renameSync(tmp, this.file);
  }
  static rev(previous?: string): string {
    const n = previous ? Number(previous.split('-')[0]) + 1 : 1;
    return `${n}-${randomBytes(16).toString('hex')}`;
  }
  newMap(db: string): ShardMap {
    const suffix = `.${Math.floor(Date.now() / 1000)}`;
    const range = '00000000-ffffffff';
    return {
      _id: db,
      _rev: NodeLocal.rev(),
      shard_suffix: [...suffix].map((c) => c.charCodeAt(0)),
      changelog: [['add', range, nodeName]],
      by_node: { [nodeName]: [range] },
      by_range: { [range]: [nodeName] },
      props: {},
    };
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers.

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'must-revalidate', server: `CouchDB/${DEVENGINE_VERSION} (couchtrove devengine)`, ...headers });
  res.end(text);
}

const notFound = (res: http.ServerResponse, reason = 'missing') => send(res, 404, { error: 'not_found', reason });
const unauthorized = (res: http.ServerResponse, reason = 'You are not a server admin.') => send(res, 401, { error: 'unauthorized', reason });

async function readBody(req: http.IncomingMessage, limit = 64 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Database names as stored by the backend: express-pouchdb strips '/' from file names, so map it. */
const toBackend = (db: string) => db.replaceAll('/', '~');
const fromBackend = (db: string) => db.replaceAll('~', '/');

// ---------------------------------------------------------------------------------------------

interface Backend {
  port: number;
  internal: string; // Authorization header of the internal admin
}

interface Session {
  ok: boolean;
  status: number;
  name: string | null;
  roles: string[];
}

class DevEngine {
  private readonly sources: IniSource[];
  private readonly last: IniSource;
  private backend!: Backend;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- express-pouchdb has no types
  private app!: any;
  private nodeLocal!: NodeLocal;
  private front!: http.Server;
  private backendServer!: http.Server;

  constructor(private readonly home: string) {
    this.sources = iniChain(home).map((file) => ({ file, ini: readIni(file) }));
    if (this.sources.length === 0) fatal('no ini files');
    this.last = this.sources[this.sources.length - 1]!;
  }

  private config(): Map<string, Map<string, string>> {
    return mergeIni(this.sources.map((s) => s.ini));
  }

  private get(section: string, key: string): string | undefined {
    const v = this.config().get(section)?.get(key);
    return v === '' ? undefined : v;
  }

  /**
   * Writes one change to the last ini file as CouchDB does: re-read, edit that line, write back. The value
   * is in memory first; a file that cannot be written makes the request fail with its error code (400
   * eacces, as CouchDB answers), the value staying in memory.
   */
  private persist(section: string, key: string, value: string | null): string | null {
    let onDisk = this.last.ini;
    try {
      onDisk = IniFile.parse(fs.readFileSync(this.last.file, 'utf8'));
    } catch {
      // keep the in-memory copy
    }
    for (const ini of new Set([onDisk, this.last.ini])) {
      if (value === null) ini.delete(section, key);
      else ini.set(section, key, value);
    }
    try {
      writeIniAtomic({ file: this.last.file, ini: onDisk });
      return null;
    } catch (err) {
      return ((err as NodeJS.ErrnoException).code ?? 'error').toLowerCase();
    }
  }

  /** A delete that is not persisted: what the ini files on disk hold comes back, as in CouchDB. */
  private unsetInMemory(section: string, key: string): void {
    this.last.ini.delete(section, key);
    const onDisk = readIniQuietly(this.last.file)?.get(section, key);
    if (onDisk !== undefined) this.last.ini.set(section, key, onDisk);
  }

  /** POST _config/_reload: every ini file read again, in-memory changes dropped (one that cannot be read is kept). */
  private reloadConfig(): void {
    for (const s of this.sources) s.ini = readIniQuietly(s.file) ?? s.ini;
  }

  private admins(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [k, v] of this.config().get('admins') ?? []) if (v !== '') out.set(k, v);
    return out;
  }

  async start(): Promise<void> {
    nodeName = readNodeName(this.home);
    setLogLevel(this.get('log', 'level'));
    log('notice', `couchtrove development engine ${DEVENGINE_VERSION} starting: NOT Apache CouchDB (ini files: ${this.sources.map((s) => s.file).join(' ')})`);
    const config = this.config();
    const port = intSetting(config, 'chttpd', 'port', 5984);
    // CouchDB parses [chttpd] server_options as an Erlang term at start and does not come up when it is not one.
    const serverOptions = this.get('chttpd', 'server_options');
    if (serverOptions !== undefined && serverOptions !== '' && !balancedTerm(serverOptions)) fatal(`{error,{bad_term,{chttpd,server_options,${JSON.stringify(serverOptions)}}}}`);
    if (port > 65535) fatal(`{badarg, invalid port ${port}}`);
    intSetting(config, 'couchdb', 'max_dbs_open', 500);
    intSetting(config, 'couchdb', 'max_document_size', 8000000);
    intSetting(config, 'chttpd', 'max_http_request_size', 4294967296);
    let bind = this.get('chttpd', 'bind_address') ?? '127.0.0.1';
    if (bind === 'any') bind = '0.0.0.0';
    const dbDir = path.resolve(this.home, this.get('couchdb', 'database_dir') ?? './data');
    if (this.admins().size === 0) fatal('No Admin Account Found, aborting startup. Please configure an admin account in your local.ini file.');

    // Plain-text admin passwords are hashed and written to the last ini file, as CouchDB does.
    let hashedAny = false;
    for (const [name, value] of this.admins()) {
      if (!isHashed(value)) {
        this.last.ini.set('admins', name, hashPassword(value));
        hashedAny = true;
      }
    }
    if (!this.get('couchdb', 'uuid')) {
      this.last.ini.set('couchdb', 'uuid', randomUUID().replaceAll('-', ''));
      hashedAny = true;
    }
    if (hashedAny) {
      try {
        writeIniAtomic(this.last);
      } catch (err) {
        // As CouchDB: the hashes stay in memory when the last ini file cannot be written (an isolated
        // instance's local.ini is the agent's); the server starts all the same.
        log('error', `config: cannot persist to ${this.last.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }

    try {
      fs.mkdirSync(dbDir, { recursive: true });
      const probe = path.join(dbDir, `.devengine-probe-${process.pid}`);
      fs.writeFileSync(probe, '');
      fs.unlinkSync(probe);
    } catch (err) {
      fatal(`database_dir ${dbDir} is not writable: {error, ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}}`);
    }
    this.nodeLocal = new NodeLocal(path.join(dbDir, '_dbs.devengine.json'));

    await this.startBackend(dbDir);
    await this.reconcile();
    // As CouchDB 3.5: with single_node the system databases are created just after start, not before
    // the port opens; a client's PUT racing that creation gets 500 conflict (couchdb-3.md).
    if (this.get('couchdb', 'single_node') === 'true') {
      for (const db of ['_users', '_replicator']) if (!this.nodeLocal.dbs[db]) this.systemPending.add(db);
      setTimeout(() => void this.createSystemDbs(), SYSTEM_DB_DELAY_MS).unref();
    }
    if (!this.nodeLocal.nodes[nodeName]) {
      this.nodeLocal.nodes[nodeName] = { _id: nodeName, _rev: NodeLocal.rev() };
      this.nodeLocal.save();
    }

    this.front = http.createServer((req, res) => {
      const started = Date.now();
      // As CouchDB's request line: the user the request names (Basic auth) or undefined, before the method.
      res.on('finish', () => log('notice', `${req.socket.localAddress}:${port} ${req.socket.remoteAddress} ${basicUser(req.headers.authorization)} ${req.method} ${(req.url ?? '').split('?')[0]} ${res.statusCode} ${Date.now() - started}`));
      this.handle(req, res).catch((err: unknown) => {
        log('error', `request ${req.method} ${(req.url ?? '').split('?')[0]} failed: ${(err as Error).stack ?? String(err)}`);
        if (!res.headersSent) send(res, 500, { error: 'internal_server_error', reason: String((err as Error).message ?? err) });
        else res.destroy();
      });
    });
    await new Promise<void>((resolve) => {
      this.front.once('error', (err: NodeJS.ErrnoException) => fatal(`chttpd failed to listen on ${bind}:${port}: {error, ${(err.code ?? err.message).toLowerCase()}}`));
      this.front.listen(port, bind, () => resolve());
    });
    const actual = (this.front.address() as AddressInfo).port;
    log('notice', `Apache CouchDB stand-in has started on http://${bind}:${actual}/ (node ${nodeName}, data ${dbDir})`);
    process.stdout.write(`couchtrove devengine: NOT Apache CouchDB. Listening on http://${bind}:${actual}/\n`);
  }

  private async startBackend(dbDir: string): Promise<void> {
    const PouchDBBase = require('pouchdb') as { defaults(o: object): unknown };
    const expressPouchDB = require('express-pouchdb') as (p: unknown, o: object) => unknown;
    const PouchDB = PouchDBBase.defaults({ prefix: `${dbDir}/` });
    const logFile = this.get('log', 'writer') === 'file' && this.get('log', 'file') ? this.get('log', 'file')! : '/dev/null';
    this.app = expressPouchDB(PouchDB, {
      mode: 'fullCouchDB',
      inMemoryConfig: true,
      logPath: logFile,
      overrideMode: { exclude: ['routes/fauxton'] },
    });
    const internalName = `devengine-internal-${randomBytes(4).toString('hex')}`;
    const internalPassword = randomBytes(24).toString('hex');
    const set = (section: string, key: string, value: string) =>
      new Promise<void>((resolve, reject) => this.app.couchConfig.set(section, key, value, (err: unknown) => (err ? reject(err) : resolve())));
    await set('couchdb', 'uuid', this.get('couchdb', 'uuid')!);
    await set('admins', internalName, hashPassword(internalPassword));
    for (const [name, hash] of this.admins()) await set('admins', name, hash);
    this.backendServer = http.createServer(this.app);
    await new Promise<void>((resolve, reject) => {
      this.backendServer.once('error', reject);
      this.backendServer.listen(0, '127.0.0.1', () => resolve());
    });
    this.backend = {
      port: (this.backendServer.address() as AddressInfo).port,
      internal: `Basic ${Buffer.from(`${internalName}:${internalPassword}`).toString('base64')}`,
    };
  }

  private async backendSet(section: string, key: string, value: string | null): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const cb = (err: unknown) => (err ? reject(err) : resolve());
      if (value === null) this.app.couchConfig.delete(section, key, cb);
      else this.app.couchConfig.set(section, key, value, cb);
    });
  }

  /** A request to express-pouchdb; as the internal admin unless headers say otherwise. */
  private async call(method: string, pathname: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; json: Json }> {
    const res = await fetch(`http://127.0.0.1:${this.backend.port}${pathname}`, {
      method,
      headers: { accept: 'application/json', 'content-type': 'application/json', ...(headers ?? { authorization: this.backend.internal }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    let json: Json = null;
    try {
      json = JSON.parse(text) as Json;
    } catch {
      json = text;
    }
    return { status: res.status, json };
  }

  private async backendDbs(): Promise<string[]> {
    const r = await this.call('GET', '/_all_dbs');
    if (r.status !== 200 || !Array.isArray(r.json)) throw new Error(`_all_dbs failed: ${r.status}`);
    return (r.json as string[]).filter((n) => !n.startsWith('pouch__')).map(fromBackend);
  }

  /** System databases not created yet (single_node start). */
  private readonly systemPending = new Set<string>();

  private async createSystemDbs(): Promise<void> {
    for (const db of [...this.systemPending]) {
      this.systemPending.delete(db);
      await this.ensureDb(db).catch((err: unknown) => log('error', `cannot create ${db}: ${(err as Error).message}`));
    }
  }

  private async ensureDb(db: string): Promise<void> {
    const r = await this.call('PUT', `/${encodeURIComponent(toBackend(db))}`);
    if (r.status === 201) log('notice', `created system database ${db}`);
    if (!this.nodeLocal.dbs[db]) {
      this.nodeLocal.dbs[db] = this.nodeLocal.newMap(db);
      this.nodeLocal.save();
    }
  }

  /** Every database has a shard map, every map a database (as after CouchDB's own start). */
  private async reconcile(): Promise<void> {
    const dbs = new Set(await this.backendDbs());
    let changed = false;
    for (const db of dbs) {
      if (!this.nodeLocal.dbs[db]) {
        this.nodeLocal.dbs[db] = this.nodeLocal.newMap(db);
        changed = true;
      }
    }
    for (const db of Object.keys(this.nodeLocal.dbs)) {
      if (!dbs.has(db)) {
        delete this.nodeLocal.dbs[db];
        changed = true;
      }
    }
    if (changed) this.nodeLocal.save();
  }

  private clientHeaders(req: http.IncomingMessage): Record<string, string> {
    const h: Record<string, string> = {};
    if (req.headers.authorization) h.authorization = req.headers.authorization;
    if (req.headers.cookie) h.cookie = req.headers.cookie;
    return h;
  }

  private async session(req: http.IncomingMessage): Promise<Session> {
    const r = await this.call('GET', '/_session', undefined, this.clientHeaders(req));
    const ctx = (r.json as { userCtx?: { name: string | null; roles: string[] } } | null)?.userCtx;
    return { ok: r.status === 200, status: r.status, name: ctx?.name ?? null, roles: ctx?.roles ?? [] };
  }

  /** Sends 401 and returns false unless the request comes from a server admin. */
  private async requireAdmin(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
    const s = await this.session(req);
    if (!s.ok) {
      send(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' });
      return false;
    }
    if (!s.roles.includes('_admin')) {
      unauthorized(res);
      return false;
    }
    return true;
  }

  private proxy(req: http.IncomingMessage, res: http.ServerResponse, pathAndQuery: string, body?: Buffer): void {
    const headers = { ...req.headers };
    delete headers.host;
    if (body) {
      headers['content-length'] = String(body.length);
      delete headers['transfer-encoding'];
    }
    const up = http.request({ host: '127.0.0.1', port: this.backend.port, method: req.method, path: pathAndQuery, headers }, (r) => {
      // express-pouchdb answers 401 to a signed-in user who is not a member of a database; CouchDB 3.5 says
      // 403 forbidden (401 is only for who has not signed in or gave a wrong password).
      if (r.statusCode === 401 && req.headers.authorization) {
        r.resume();
        void this.session(req).then(
          (s) => (s.ok && s.name !== null ? send(res, 403, { error: 'forbidden', reason: 'You are not allowed to access this db.' }) : send(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' })),
          () => send(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' }),
        );
        return;
      }
      const out = { ...r.headers };
      if (typeof out.location === 'string') out.location = fromBackend(out.location);
      res.writeHead(r.statusCode ?? 502, out);
      r.pipe(res);
    });
    up.on('error', (err) => {
      if (!res.headersSent) send(res, 502, { error: 'internal_server_error', reason: err.message });
      else res.destroy();
    });
    res.on('close', () => up.destroy());
    if (body) up.end(body);
    else req.pipe(up);
  }

  /**
   * Credentials CouchDB 3.5 does not accept yet, by user name, until a time: a new admin's password is
   * hashed in the background, and a changed _users password reaches the authentication cache through
   * the changes feed (couchdb-3.md). Here such a user gets 401 for AUTH_DELAY_MS, whatever the password.
   */
  private readonly authPending = new Map<string, number>();

  private authNotYet(req: http.IncomingMessage): boolean {
    const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const name = Buffer.from(m[1]!, 'base64').toString('utf8').split(':')[0] ?? '';
    const until = this.authPending.get(name);
    if (until === undefined) return false;
    if (Date.now() < until) return true;
    this.authPending.delete(name);
    return false;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (this.authNotYet(req)) return send(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const raw = url.pathname.split('/').slice(1);
    if (raw.length > 0 && raw[raw.length - 1] === '' && raw.length > 1) raw.pop();
    let segs: string[];
    try {
      segs = raw.map((s) => decodeURIComponent(s));
    } catch {
      return send(res, 400, { error: 'bad_request', reason: 'invalid URL encoding' });
    }
    const method = req.method ?? 'GET';
    const first = segs[0] ?? '';

    if (first === '') {
      if (method !== 'GET' && method !== 'HEAD') return send(res, 405, { error: 'method_not_allowed', reason: 'Only GET,HEAD allowed' });
      return send(res, 200, {
        couchdb: 'Welcome',
        version: DEVENGINE_VERSION,
        git_sha: 'devengine',
        uuid: this.get('couchdb', 'uuid'),
        features: ['devengine'],
        vendor: { name: VENDOR },
      });
    }
    if (first === '_up') return send(res, 200, { status: 'ok', seeds: {} });
    if (first === '_node') return this.handleNode(req, res, segs.slice(1), method);
    if (first === '_membership') {
      if (!(await this.requireAdmin(req, res))) return;
      return send(res, 200, { all_nodes: [nodeName], cluster_nodes: [nodeName] });
    }
    if (first === '_all_dbs') {
      if (!(await this.requireAdmin(req, res))) return;
      const dbs = (await this.backendDbs()).sort();
      return send(res, 200, dbs);
    }
    if (first === '_session' && method === 'POST') {
      const body = await readBody(req);
      return this.proxy(req, res, url.pathname + url.search, rewriteSessionBody(body, req.headers['content-type']));
    }
    if (first === '_scheduler') return this.handleScheduler(req, res, segs.slice(1));
    if (first === '_replicate' && method === 'POST') {
      if (!(await this.requireAdmin(req, res))) return;
      let body: Buffer;
      try {
        body = rewriteReplicateEndpoints(await readBody(req));
      } catch {
        return send(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
      }
      return this.proxy(req, res, url.pathname + url.search, body);
    }
    if (first === '_config' || first === '_restart' || first === '_log' || first === '_db_updates') return notFound(res);
    if (first.startsWith('_') && !SYSTEM_DBS.has(first)) return this.proxy(req, res, url.pathname + url.search);
    return this.handleDb(req, res, first, segs.slice(1), raw.slice(1), url.search, method);
  }

  private async handleDb(req: http.IncomingMessage, res: http.ServerResponse, db: string, rest: string[], rawRest: string[], search: string, method: string): Promise<void> {
    // CouchDB 3.5 redirects a design document id whose slash is encoded (couchdb-3.md).
    const encodedDesign = /^_design%2F(.+)$/i.exec(rawRest[0] ?? '');
    if (encodedDesign) {
      res.setHeader('location', `/${encodeURIComponent(db)}/_design/${[encodedDesign[1], ...rawRest.slice(1)].join('/')}${search}`);
      return send(res, 301, { error: 'moved_permanently', reason: 'the design document id must not have its slash encoded' });
    }
    const backendPath = `/${[encodeURIComponent(toBackend(db)), ...rawRest].join('/')}${search}`;
    let map = this.nodeLocal.dbs[db];
    if (!map && !(rest.length === 0 && method === 'PUT') && (await this.call('GET', `/${encodeURIComponent(toBackend(db))}`)).status === 200) {
      // Created inside express-pouchdb (its replicator, its auth): give it a shard map as CouchDB would have.
      map = this.nodeLocal.dbs[db] = this.nodeLocal.newMap(db);
      this.nodeLocal.save();
    }
    if (map && !map.by_node[nodeName]) {
      log('error', `could not open shards of ${db}: no shard on node ${nodeName}`);
      return send(res, 500, { error: 'internal_server_error', reason: 'No DB shards could be opened.' });
    }
    if (rest.length === 0 && method === 'PUT' && this.systemPending.has(db)) {
      if (!(await this.requireAdmin(req, res))) return;
      this.systemPending.delete(db);
      await this.ensureDb(db);
      return send(res, 500, { error: 'error', reason: 'conflict' });
    }
    if (rest.length === 0 && method === 'PUT') {
      if (!DB_NAME_RE.test(db) && !SYSTEM_DBS.has(db)) {
        return send(res, 400, {
          error: 'illegal_database_name',
          reason: `Name: '${db}'. Only lowercase characters (a-z), digits (0-9), and any of the characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.`,
        });
      }
      if (!(await this.requireAdmin(req, res))) return;
      if (map) return send(res, 412, { error: 'file_exists', reason: 'The database could not be created, the file already exists.' });
      const r = await this.call('PUT', backendPath);
      if (r.status === 201) {
        this.nodeLocal.dbs[db] = this.nodeLocal.newMap(db);
        this.nodeLocal.save();
      }
      return send(res, r.status, r.json);
    }
    if (rest.length === 0 && method === 'DELETE') {
      if (!(await this.requireAdmin(req, res))) return;
      if (!map) return send(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
      const r = await this.call('DELETE', backendPath);
      if (r.status === 200) {
        delete this.nodeLocal.dbs[db];
        this.nodeLocal.save();
      }
      return send(res, r.status, r.json);
    }
    if (!map) return send(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
    if (rest.length === 0 && method === 'GET') {
      const r = await this.call('GET', backendPath, undefined, this.clientHeaders(req));
      const info = r.json as Record<string, Json>;
      if (r.status === 200 && info && typeof info === 'object') {
        info.db_name = db;
        info.doc_del_count ??= 0;
        info.instance_start_time ??= '0';
        info.props = map.props as Record<string, Json>;
      }
      return send(res, r.status, info);
    }
    // A changed (not a new) user document reaches CouchDB's authentication cache a moment later.
    if (db === '_users' && rest.length === 1 && rest[0]!.startsWith('org.couchdb.user:') && (method === 'PUT' || method === 'DELETE')) {
      if ((await this.call('GET', `/_users/${encodeURIComponent(rest[0]!)}`)).status === 200) this.authPending.set(rest[0]!.slice('org.couchdb.user:'.length), Date.now() + AUTH_DELAY_MS);
    }
    if (rest.length === 1 && rest[0] === '_bulk_get' && method === 'POST') return this.bulkGet(req, res, db, search);
    if (rest.length === 1 && rest[0] === '_changes' && method === 'POST' && new URLSearchParams(search).get('filter') === '_selector') return this.selectorChanges(req, res, db, search);
    if (db === '_replicator' && rest.length === 1 && method === 'PUT' && !rest[0]!.startsWith('_')) {
      let body: Buffer;
      try {
        body = rewriteReplicatorAuth(await readBody(req));
      } catch {
        return send(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
      }
      return this.proxy(req, res, backendPath, body);
    }
    // As CouchDB 3.5, whose document processor stops a job a moment after its _replicator document is
    // deleted: the deletion is acknowledged at once and done (the job stopped) REPLICATION_STOP_MS later.
    if (db === '_replicator' && rest.length === 1 && method === 'DELETE' && !rest[0]!.startsWith('_')) {
      if (!(await this.requireAdmin(req, res))) return;
      const rev = new URLSearchParams(search).get('rev') ?? '';
      const current = await this.call('GET', `/_replicator/${encodeURIComponent(rest[0]!)}`);
      if (current.status !== 200) return send(res, current.status, current.json);
      if ((current.json as { _rev?: string })._rev !== rev) return send(res, 409, { error: 'conflict', reason: 'Document update conflict.' });
      setTimeout(() => void this.call('DELETE', backendPath).catch(() => undefined), REPLICATION_STOP_MS).unref();
      return send(res, 200, { ok: true, id: rest[0], rev: NodeLocal.rev(rev) });
    }
    return this.proxy(req, res, backendPath);
  }

  /**
   * CouchDB 3's `POST /db/_changes?filter=_selector` with `{"selector": ...}` (express-pouchdb ignores the body):
   * the backend's changes with the documents, filtered here. longpoll is emulated by polling (heartbeat newlines
   * while waiting, as CouchDB sends); feed=continuous is refused.
   */
  private async selectorChanges(req: http.IncomingMessage, res: http.ServerResponse, db: string, search: string): Promise<void> {
    let selector: Record<string, unknown>;
    try {
      const body = JSON.parse((await readBody(req)).toString('utf8')) as { selector?: Record<string, unknown> };
      if (!body || typeof body.selector !== 'object' || body.selector === null) throw new Error('no selector');
      selector = body.selector;
    } catch {
      return send(res, 400, { error: 'bad_request', reason: 'Selector must be specified in POST payload' });
    }
    const params = new URLSearchParams(search);
    const feed = params.get('feed');
    if (feed === 'continuous' || feed === 'eventsource') return send(res, 400, { error: 'bad_request', reason: 'devengine: _selector with feed=continuous is not emulated' });
    const wantDocs = params.get('include_docs') === 'true';
    const q = new URLSearchParams(params);
    for (const k of ['filter', 'feed', 'timeout', 'heartbeat']) q.delete(k);
    q.set('include_docs', 'true');
    const matches = (require('pouchdb-selector-core') as { matchesSelector(doc: unknown, sel: unknown): boolean }).matchesSelector;
    const headers = this.clientHeaders(req);
    const timeoutMs = Math.min(Number(params.get('timeout') ?? 25_000) || 25_000, 55_000);
    const deadline = Date.now() + timeoutMs;
    let headerSent = false;
    let lastBeat = Date.now();
    for (;;) {
      const r = await this.call('GET', `/${encodeURIComponent(toBackend(db))}/_changes?${q.toString()}`, undefined, headers);
      if (r.status !== 200) return headerSent ? void res.end(`${JSON.stringify(r.json)}\n`) : send(res, r.status, r.json);
      const out = r.json as { results: { id: string; doc?: Record<string, unknown> }[]; last_seq: Json };
      const results = out.results
        .filter((row) => row.doc && matches(row.doc, selector))
        .map((row) => {
          if (wantDocs) return row;
          const { doc: _doc, ...rest } = row;
          return rest;
        });
      if (results.length > 0 || feed !== 'longpoll' || Date.now() >= deadline || res.destroyed) {
        const body = `${JSON.stringify({ results, last_seq: out.last_seq, pending: 0 })}\n`;
        if (headerSent) return void res.end(body);
        return send(res, 200, { results, last_seq: out.last_seq, pending: 0 });
      }
      // Nothing matched yet: continue after the backend's last_seq (as a longpoll would).
      if (out.results.length > 0) q.set('since', typeof out.last_seq === 'string' ? out.last_seq : JSON.stringify(out.last_seq));
      if (Date.now() - lastBeat > 5000) {
        if (!headerSent) {
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'must-revalidate' });
          headerSent = true;
        }
        res.write('\n');
        lastBeat = Date.now();
      }
      await new Promise((r2) => setTimeout(r2, 250));
    }
  }

  /** CouchDB 3's _bulk_get: an entry without rev returns every leaf revision (conflicts and deleted ones). */
  private async bulkGet(req: http.IncomingMessage, res: http.ServerResponse, db: string, search: string): Promise<void> {
    let body: { docs?: { id?: string; rev?: string; atts_since?: string[] }[] };
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as typeof body;
    } catch {
      return send(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
    }
    if (!body || typeof body !== 'object' || !Array.isArray(body.docs)) return send(res, 400, { error: 'bad_request', reason: "Missing JSON list of 'docs'." });
    const params = new URLSearchParams(search);
    const results: unknown[] = [];
    const headers = this.clientHeaders(req);
    for (const entry of body.docs) {
      const id = entry?.id;
      if (typeof id !== 'string') {
        results.push({ id: id ?? null, docs: [{ error: { id: id ?? null, rev: entry?.rev ?? null, error: 'bad_request', reason: 'document id missed' } }] });
        continue;
      }
      const q = new URLSearchParams();
      q.set('open_revs', entry.rev ? JSON.stringify([entry.rev]) : 'all');
      for (const k of ['revs', 'attachments', 'latest']) {
        const v = params.get(k);
        if (v !== null) q.set(k, v);
      }
      const r = await this.call('GET', `/${encodeURIComponent(toBackend(db))}/${encodeURIComponent(id)}?${q.toString()}`, undefined, headers);
      if (r.status === 401 || r.status === 403) return send(res, r.status, r.json);
      if (r.status !== 200 || !Array.isArray(r.json)) {
        results.push({ id, docs: [{ error: { id, rev: entry.rev ?? 'undefined', error: 'not_found', reason: 'missing' } }] });
        continue;
      }
      const docs = (r.json as { ok?: Json; missing?: string }[]).map((d) =>
        d.ok !== undefined ? { ok: d.ok } : { error: { id, rev: d.missing ?? entry.rev ?? 'undefined', error: 'not_found', reason: 'missing' } },
      );
      results.push({ id, docs });
    }
    return send(res, 200, { results });
  }

  private async handleNode(req: http.IncomingMessage, res: http.ServerResponse, segs: string[], method: string): Promise<void> {
    const node = segs[0];
    if (node !== '_local' && node !== nodeName) return send(res, 404, { error: 'not_found', reason: `unknown node ${node ?? ''}` });
    if (!(await this.requireAdmin(req, res))) return;
    const what = segs[1];
    if (what === undefined) return send(res, 200, { name: nodeName });
    if (what === '_config') return this.handleConfig(req, res, segs.slice(2), method);
    if (what === '_all_dbs') return send(res, 200, ['_dbs', '_nodes', '_users']);
    if (what === '_dbs') return this.handleNodeLocalDb(req, res, 'dbs', segs.slice(2), method);
    if (what === '_nodes') return this.handleNodeLocalDb(req, res, 'nodes', segs.slice(2), method);
    if (what === '_system') return send(res, 200, { uptime: Math.round(process.uptime()), memory: process.memoryUsage() });
    return notFound(res);
  }

  private async handleNodeLocalDb(req: http.IncomingMessage, res: http.ServerResponse, which: 'dbs' | 'nodes', segs: string[], method: string): Promise<void> {
    const store = (which === 'dbs' ? this.nodeLocal.dbs : this.nodeLocal.nodes) as Record<string, ShardMap | NodeDoc>;
    const id = segs[0];
    if (id === undefined) {
      const n = Object.keys(store).length;
      return send(res, 200, { db_name: `_${which}`, doc_count: n, doc_del_count: 0, update_seq: String(n), sizes: { file: 0, external: 0, active: 0 } });
    }
    if (id === '_all_docs') {
      const include = new URL(req.url ?? '/', 'http://x').searchParams.get('include_docs') === 'true';
      const ids = Object.keys(store).sort();
      return send(res, 200, { total_rows: ids.length, offset: 0, rows: ids.map((k) => ({ id: k, key: k, value: { rev: store[k]!._rev }, ...(include ? { doc: store[k] } : {}) })) });
    }
    const current = store[id];
    if (method === 'GET') return current ? send(res, 200, current) : send(res, 404, { error: 'not_found', reason: 'missing' });
    if (method === 'PUT') {
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
      } catch {
        return send(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
      }
      if (current && doc._rev !== current._rev) return send(res, 409, { error: 'conflict', reason: 'Document update conflict.' });
      if (!current && doc._rev !== undefined) return send(res, 409, { error: 'conflict', reason: 'Document update conflict.' });
      const next = { ...doc, _id: id, _rev: NodeLocal.rev(current?._rev) } as ShardMap;
      store[id] = next;
      this.nodeLocal.save();
      return send(res, 201, { ok: true, id, rev: next._rev });
    }
    if (method === 'DELETE') {
      if (!current) return send(res, 404, { error: 'not_found', reason: 'missing' });
      const rev = new URL(req.url ?? '/', 'http://x').searchParams.get('rev');
      if (rev !== current._rev) return send(res, 409, { error: 'conflict', reason: 'Document update conflict.' });
      delete store[id];
      this.nodeLocal.save();
      return send(res, 200, { ok: true, id, rev: NodeLocal.rev(rev) });
    }
    return send(res, 405, { error: 'method_not_allowed', reason: 'Only GET,PUT,DELETE allowed' });
  }

  private async handleConfig(req: http.IncomingMessage, res: http.ServerResponse, segs: string[], method: string): Promise<void> {
    const config = this.config();
    const [section, key] = segs;
    if (section === undefined) {
      if (method !== 'GET') return send(res, 405, { error: 'method_not_allowed', reason: 'Only GET allowed' });
      const out: Record<string, Record<string, string>> = {};
      for (const [s, entries] of config) out[s] = Object.fromEntries([...entries].filter(([, v]) => v !== ''));
      return send(res, 200, out);
    }
    if (section === '_reload') {
      if (method !== 'POST') return send(res, 405, { error: 'method_not_allowed', reason: 'Only POST allowed' });
      this.reloadConfig();
      return send(res, 200, { ok: true });
    }
    if (key === undefined) {
      if (method !== 'GET') return send(res, 405, { error: 'method_not_allowed', reason: 'Only GET allowed' });
      return send(res, 200, Object.fromEntries([...(config.get(section) ?? [])].filter(([, v]) => v !== '')));
    }
    const current = config.get(section)?.get(key);
    const persist = req.headers['x-couch-persist'] !== 'false';
    if (method === 'GET') return current === undefined || current === '' ? send(res, 404, { error: 'not_found', reason: 'unknown_config_value' }) : send(res, 200, current);
    if (method === 'PUT') {
      let value: unknown;
      try {
        value = JSON.parse((await readBody(req)).toString('utf8'));
      } catch {
        return send(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
      }
      if (typeof value !== 'string') return send(res, 400, { error: 'bad_request', reason: 'config value must be a JSON string' });
      if (/[\r\n\0]/.test(value)) return send(res, 400, { error: 'bad_request', reason: 'config value must be one line' });
      if (section === 'admins' && !isHashed(value)) value = hashPassword(value);
      if (section === 'admins') {
        await this.backendSet('admins', key, value as string);
        this.authPending.set(key, Date.now() + AUTH_DELAY_MS);
      }
      if (section === 'log' && key === 'level') setLogLevel(value as string);
      const failed = persist ? this.persist(section, key, value as string) : (this.last.ini.set(section, key, value as string), null);
      if (failed) return send(res, 400, { error: 'bad_request', reason: failed });
      return send(res, 200, current ?? '');
    }
    if (method === 'DELETE') {
      if (current === undefined || current === '') return send(res, 404, { error: 'not_found', reason: 'unknown_config_value' });
      if (section === 'admins') await this.backendSet('admins', key, null);
      for (const s of this.sources) {
        if (s === this.last) continue;
        // A key set in an earlier file would come back after a restart: shadow it with an empty value.
        if (s.ini.get(section, key) !== undefined && s.ini.get(section, key) !== '') {
          const failed = persist ? this.persist(section, key, '') : (this.last.ini.set(section, key, ''), null);
          return failed ? send(res, 400, { error: 'bad_request', reason: failed }) : send(res, 200, current);
        }
      }
      const failed = persist ? this.persist(section, key, null) : (this.unsetInMemory(section, key), null);
      return failed ? send(res, 400, { error: 'bad_request', reason: failed }) : send(res, 200, current);
    }
    return send(res, 405, { error: 'method_not_allowed', reason: 'Only GET,PUT,DELETE allowed' });
  }

  /** Replication state as CouchDB 3's scheduler shows it, from the _replicator documents. */
  private async handleScheduler(req: http.IncomingMessage, res: http.ServerResponse, segs: string[]): Promise<void> {
    if (!(await this.requireAdmin(req, res))) return;
    const r = await this.call('GET', '/_replicator/_all_docs?include_docs=true');
    const rows = r.status === 200 ? ((r.json as { rows?: { id: string; doc?: Record<string, Json> }[] }).rows ?? []) : [];
    const docs = await Promise.all(rows
      .filter((row) => !row.id.startsWith('_design/') && row.doc)
      .map(async (row) => {
        const d = row.doc!;
        const state = d._replication_state;
        let mapped = state === 'triggered' ? 'running' : state === 'completed' ? 'completed' : state === 'error' ? 'crashing' : 'initializing';
        // pouchdb's replicator retries silently: a running job whose source does not answer is shown as
        // CouchDB 3 shows it, crashing with the error (found by probing the source here).
        const probeError = mapped === 'running' ? await probeEndpoint(d.source) : null;
        if (probeError) mapped = 'crashing';
        const when = typeof d._replication_state_time === 'string' ? d._replication_state_time : new Date().toISOString();
        return {
          database: '_replicator',
          doc_id: row.id,
          id: (d._replication_id as string | undefined) ?? null,
          node: nodeName,
          // As CouchDB 3.5: a job still initializing is listed without its endpoints.
          source: mapped === 'initializing' ? null : redact(d.source),
          target: mapped === 'initializing' ? null : redact(d.target),
          state: mapped,
          info: probeError ? { error: probeError } : state === 'error' ? { error: String(d._replication_state_reason ?? 'error') } : mapped === 'completed' ? (d._replication_stats ?? {}) : null,
          error_count: state === 'error' || probeError ? 1 : 0,
          start_time: when,
          last_updated: when,
        };
      }));
    if (segs[0] === 'docs') {
      if (segs.length === 1) return send(res, 200, { total_rows: docs.length, offset: 0, docs });
      const doc = docs.find((d) => segs[1] === '_replicator' && d.doc_id === segs[2]);
      return doc ? send(res, 200, doc) : notFound(res);
    }
    if (segs[0] === 'jobs') {
      const jobs = docs.filter((d) => d.state === 'running').map((d) => ({ id: d.id, database: d.database, doc_id: d.doc_id, source: d.source, target: d.target, node: d.node, start_time: d.start_time, history: [] }));
      return send(res, 200, { total_rows: jobs.length, offset: 0, jobs });
    }
    return notFound(res);
  }

  async stop(): Promise<void> {
    log('notice', 'SIGTERM received - shutting down');
    await Promise.all(
      [this.front, this.backendServer].filter(Boolean).map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
  }
}

/** Error of an unreachable replication endpoint (in CouchDB's words), or null when it answers. */
async function probeEndpoint(v: Json | undefined): Promise<string | null> {
  let url: string | undefined;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (typeof v === 'string') url = v;
  else if (v && typeof v === 'object' && !Array.isArray(v) && typeof v.url === 'string') {
    url = v.url;
    const h = v.headers;
    if (h && typeof h === 'object' && !Array.isArray(h) && typeof h.Authorization === 'string') headers.authorization = h.Authorization;
  }
  if (!url) return null;
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`;
      u.username = '';
      u.password = '';
    }
    const r = await fetch(u, { headers, signal: AbortSignal.timeout(2000) });
    await r.arrayBuffer().catch(() => undefined);
    if (r.status === 401 || r.status === 403) return `unauthorized: ${redact(url)} refused the credentials`;
    if (r.status >= 500) return `${redact(url)} answered ${r.status}`;
    return null;
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    return `{conn_failed,{error,${(e.cause?.code ?? e.name).toLowerCase()}}} reaching ${redact(url)}`;
  }
}

/**
 * CouchDB 3 takes endpoint credentials as `{"url", "auth": {"basic": {"username", "password"}}}`; pouchdb's
 * replicator only reads `headers.Authorization` (and fails on an object endpoint without headers).
 */
function rewriteReplicatorAuth(body: Buffer): Buffer {
  const doc = JSON.parse(body.toString('utf8')) as Record<string, Json>;
  for (const k of ['source', 'target']) {
    const ep = doc[k];
    if (!ep || typeof ep !== 'object' || Array.isArray(ep)) continue;
    const headers = (ep.headers && typeof ep.headers === 'object' && !Array.isArray(ep.headers) ? ep.headers : {}) as Record<string, Json>;
    const basic = (ep.auth as { basic?: { username?: unknown; password?: unknown } } | undefined)?.basic;
    if (basic && typeof basic.username === 'string' && typeof basic.password === 'string') {
      headers.Authorization = `Basic ${Buffer.from(`${basic.username}:${basic.password}`).toString('base64')}`;
    }
    ep.headers = headers;
  }
  // pouchdb-replicator keeps the signature of a job whose document was deleted with DELETE (the deletion
  // carries no _replication_id), so a later document with the same settings counts as a duplicate and
  // never starts (CouchDB 3 starts it). A per-write nonce keeps the signatures apart; the replication id
  // (checkpoints) does not depend on it.
  if (doc._deleted !== true) doc.devengine_nonce = randomUUID();
  return Buffer.from(JSON.stringify(doc));
}

/**
 * CouchDB 3's one-shot POST /_replicate takes endpoints as `{"url", "headers": {"Authorization"}}` (what
 * the agent's single-database restore sends); express-pouchdb's answers 500 to an object endpoint. Inside
 * the stand-in only, the endpoint becomes a URL with the credentials in it, which PouchDB understands.
 */
function rewriteReplicateEndpoints(body: Buffer): Buffer {
  const doc = JSON.parse(body.toString('utf8')) as Record<string, Json>;
  for (const k of ['source', 'target']) {
    const ep = doc[k];
    if (!ep || typeof ep !== 'object' || Array.isArray(ep) || typeof ep.url !== 'string') continue;
    const url = new URL(ep.url);
    const h = (ep.headers && typeof ep.headers === 'object' && !Array.isArray(ep.headers) ? ep.headers : {}) as Record<string, Json>;
    const m = /^Basic (.+)$/.exec(String(h.Authorization ?? h.authorization ?? ''));
    if (m) {
      const [user, ...pw] = Buffer.from(m[1]!, 'base64').toString('utf8').split(':');
      url.username = encodeURIComponent(user!);
      url.password = encodeURIComponent(pw.join(':'));
    }
    doc[k] = url.toString();
  }
  return Buffer.from(JSON.stringify(doc));
}

function redact(v: Json | undefined): Json {
  const one = (u: string) => {
    try {
      const url = new URL(u);
      if (url.password) url.password = '*****';
      return url.toString();
    } catch {
      return u;
    }
  };
  if (typeof v === 'string') return one(v);
  if (v && typeof v === 'object' && !Array.isArray(v) && typeof v.url === 'string') return one(v.url);
  return v ?? null;
}

/** CouchDB 3 accepts `username` as well as `name` in POST /_session; express-pouchdb only `name`. */
function rewriteSessionBody(body: Buffer, contentType: string | undefined): Buffer {
  const text = body.toString('utf8');
  if ((contentType ?? '').includes('application/json')) {
    try {
      const obj = JSON.parse(text) as Record<string, unknown>;
      if (obj && typeof obj === 'object' && obj.name === undefined && obj.username !== undefined) {
        obj.name = obj.username;
        delete obj.username;
        return Buffer.from(JSON.stringify(obj));
      }
    } catch {
      return body;
    }
    return body;
  }
  const form = new URLSearchParams(text);
  if (!form.has('name') && form.has('username')) {
    form.set('name', form.get('username')!);
    form.delete('username');
    return Buffer.from(form.toString());
  }
  return body;
}

async function main(): Promise<void> {
  const home = path.resolve(process.env.COUCHTROVE_DEVENGINE_HOME ?? path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'devengine', 'release'));
  const engine = new DevEngine(home);
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), 5000).unref();
    engine.stop().then(
      () => process.exit(0),
      () => process.exit(0),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await engine.start();
}

main().catch((err: unknown) => fatal(`startup failed: ${(err as Error).stack ?? String(err)}`));
