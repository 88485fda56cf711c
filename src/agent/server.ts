// The agent's RPC: the AgentApi over JSON/HTTP (fastify), for the control plane's AgentClient.
// Every request carries `Authorization: Bearer <token>`; the token is read from the file named in the
// serve configuration (mode 0600), never from argv. Errors are `{error: {code, message}}` with the
// HTTP status of the code (errors.ts). Request logs name method, path and status, never a body.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { isIP } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { AgentError, HTTP_STATUS, invalid } from './errors.js';
import type { AgentApi, AgentErrorBody, AgentErrorCode, AgentServeConfig, InstanceSettings, NewUser } from './protocol.js';
import type { AccessRole, AgentArchiveApi, AgentClusterApi, AgentClusterSyncApi, AgentResizeApi, AgentClusterBackupApi, ClusterBackupRequest, ClusterProbe, ResizeRequest, AgentOpsApi, AgentReplicationApi, ArchiveSettings, DatabaseRestoreRequest, FollowPrimaryRequest } from './protocol.js';
import { CouchtroveError, describeError } from '../util/errors.js';

export interface AgentServerOptions {
  host: string;
  port: number;
  token: string;
  /** The replication routes answer NOT_FOUND when the agent does not implement AgentReplicationApi. */
  agent: AgentApi & Partial<AgentReplicationApi> & Partial<AgentOpsApi>;
  /** One line per request (method, path, status, time), and server events. */
  log?: (line: string) => void;
}

export interface RunningAgentServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

const sha = (s: string) => createHash('sha256').update(s).digest();

function errorBody(code: AgentErrorCode, message: string): AgentErrorBody {
  return { error: { code, message } };
}

type Body = Record<string, unknown>;

function bodyOf(req: FastifyRequest): Body {
  const b = req.body;
  if (b === undefined || b === null) return {};
  if (typeof b !== 'object' || Array.isArray(b)) throw invalid('request body must be a JSON object');
  return b as Body;
}

function param(req: FastifyRequest, name: string): string {
  const v = (req.params as Record<string, string | undefined>)[name];
  if (v === undefined || v === '') throw invalid(`missing ${name}`);
  return v;
}

export async function startAgentServer(opts: AgentServerOptions): Promise<RunningAgentServer> {
  if (opts.token.length < 16) throw new CouchtroveError('the agent token must be at least 16 characters');
  const expected = sha(opts.token);
  const log = opts.log ?? (() => undefined);
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024, routerOptions: { maxParamLength: 512 } });
  const api = opts.agent;

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (\S+)$/.exec(h);
    if (!m || !timingSafeEqual(sha(m[1]!), expected)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send(errorBody('UNAUTHORIZED', 'missing or wrong bearer token'));
    }
    return undefined;
  });
  app.addHook('onResponse', async (req, reply) => {
    log(`${req.method} ${req.url} ${reply.statusCode} ${Math.round(reply.elapsedTime)}ms`);
  });
  app.setErrorHandler((err: unknown, _req, reply) => {
    if (err instanceof AgentError) return reply.code(HTTP_STATUS[err.code]).send(errorBody(err.code, err.message));
    const e = err as { statusCode?: number; validation?: unknown; message?: string };
    if (e.validation || (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)) {
      return reply.code(e.statusCode ?? 400).send(errorBody('INVALID_ARGUMENT', describeError(err)));
    }
    log(`internal error: ${describeError(err)}`);
    return reply.code(500).send(errorBody('INTERNAL', `internal error: ${describeError(err)}`));
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('NOT_FOUND', `no RPC ${req.method} ${req.url.split('?')[0]}`)));

  const ok = { ok: true };
  // Lifecycle.
  app.post('/v1/prepare', async (req) => api.prepare(bodyOf(req) as unknown as InstanceSettings));
  app.post('/v1/start', async () => api.start());
  app.post('/v1/stop', async () => api.stop());
  app.post('/v1/restart', async () => api.restart());
  app.get('/v1/status', async () => api.status());
  app.get('/v1/volume', async () => api.volumeUsage());
  // Databases.
  app.get('/v1/databases', async () => api.listDatabases());
  app.post('/v1/databases', async (req, reply) => {
    await api.createDatabase(bodyOf(req).name as string);
    return reply.code(201).send(ok);
  });
  app.delete('/v1/databases/:name', async (req) => {
    await api.deleteDatabase(param(req, 'name'));
    return ok;
  });
  // Users.
  app.get('/v1/users', async () => api.listUsers());
  app.get('/v1/users/:name', async (req) => api.getUser(param(req, 'name')));
  app.post('/v1/users', async (req, reply) => {
    await api.createUser(bodyOf(req) as unknown as NewUser);
    return reply.code(201).send(ok);
  });
  app.delete('/v1/users/:name', async (req) => {
    await api.deleteUser(param(req, 'name'));
    return ok;
  });
  app.put('/v1/users/:name/password', async (req) => {
    await api.changePassword(param(req, 'name'), bodyOf(req).password as string);
    return ok;
  });
  app.post('/v1/users/:name/access', async (req) => {
    const role = bodyOf(req).role;
    if (role !== undefined && role !== 'admin' && role !== 'member') throw invalid('role must be admin or member');
    await api.grantAccess(param(req, 'name'), bodyOf(req).databases as string[], role as AccessRole | undefined);
    return ok;
  });
  app.delete('/v1/users/:name/access/:database', async (req) => {
    await api.revokeAccess(param(req, 'name'), param(req, 'database'));
    return ok;
  });
  // Root.
  app.post('/v1/root', async (req) => {
    const pw = bodyOf(req).password;
    if (pw !== undefined && typeof pw !== 'string') throw invalid('password must be a string');
    return api.enableRoot(pw);
  });
  app.get('/v1/root', async () => (api.rootStatus ? api.rootStatus() : { enabled: await api.isRootEnabled(), since: null }));
  app.delete('/v1/root', async () => {
    await api.disableRoot();
    return ok;
  });
  // Configuration, backup.
  app.post('/v1/configuration', async (req) => api.applyConfiguration(bodyOf(req).overrides as Record<string, string | null>));
  app.post('/v1/backups', async (req) => api.backup(bodyOf(req) as never));
  app.get('/v1/progress', async () => ({ progress: await api.progress() }));
  // Continuous archiving (docs/agent.md).
  const arch = (): AgentArchiveApi => {
    const a = api as Partial<AgentArchiveApi>;
    if (!a.configureArchive || !a.archiveStatus || !a.restoreDatabase) throw new AgentError('NOT_FOUND', 'this agent does not implement archiving');
    return a as AgentArchiveApi;
  };
  app.post('/v1/archive', async (req) => arch().configureArchive(bodyOf(req) as unknown as ArchiveSettings));
  app.get('/v1/archive', async () => arch().archiveStatus());
  app.post('/v1/database-restores', async (req) => arch().restoreDatabase(bodyOf(req) as unknown as DatabaseRestoreRequest));
  // Replication (docs/replication.md). The follow request carries the primary's credentials: it is never logged.
  const repl = (): AgentReplicationApi => {
    const r = api as Partial<AgentReplicationApi>;
    if (!r.followPrimary || !r.replicationSource || !r.syncReplication || !r.replicationStatus || !r.detach) throw new AgentError('NOT_FOUND', 'this agent does not implement replication');
    return r as AgentReplicationApi;
  };
  app.post('/v1/replication/source', async () => repl().replicationSource());
  app.post('/v1/replication/follow', async (req) => repl().followPrimary(bodyOf(req) as unknown as FollowPrimaryRequest));
  app.post('/v1/replication/sync', async () => repl().syncReplication());
  app.get('/v1/replication', async () => repl().replicationStatus());
  app.post('/v1/replication/detach', async () => repl().detach());
  // Operations: data statistics and the log files (docs/operations.md).
  const ops = (): AgentOpsApi => {
    const r = api as Partial<AgentOpsApi>;
    if (!r.dataStats || !r.logs || !r.readLog) throw new AgentError('NOT_FOUND', 'this agent does not implement data statistics and logs');
    return r as AgentOpsApi;
  };
  app.get('/v1/stats', async () => ops().dataStats());
  app.get('/v1/logs', async () => ops().logs());
  app.get('/v1/logs/:name', async (req) => {
    const q = req.query as Record<string, string | undefined>;
    const lines = q.lines === undefined ? 50 : Number(q.lines);
    return ops().readLog(param(req, 'name'), lines);
  });

  // Cluster membership (docs/cluster.md).
  const cluster = (): AgentClusterApi => {
    const r = api as Partial<AgentClusterApi>;
    if (!r.clusterJoin || !r.clusterMembership || !r.clusterSetup || !r.clusterProbe) throw new AgentError('NOT_FOUND', 'this agent does not implement clusters');
    return r as AgentClusterApi;
  };
  app.get('/v1/cluster', async () => cluster().clusterMembership());
  app.post('/v1/cluster/join', async (req) => cluster().clusterJoin(bodyOf(req).nodes as string[]));
  app.post('/v1/cluster/setup', async () => ({ created: await cluster().clusterSetup() }));
  app.post('/v1/cluster/probe', async (req) => cluster().clusterProbe(bodyOf(req) as unknown as ClusterProbe));
  app.post('/v1/cluster/shards', async (req) => {
    const r = api as Partial<AgentClusterSyncApi>;
    if (!r.clusterShards) throw new AgentError('NOT_FOUND', 'this agent does not implement clusters');
    return r.clusterShards((bodyOf(req).sync as string[] | undefined) ?? []);
  });
  app.post('/v1/cluster/resize', async (req) => {
    const r = api as Partial<AgentResizeApi>;
    if (!r.clusterResize) throw new AgentError('NOT_FOUND', 'this agent does not move shards');
    return r.clusterResize(bodyOf(req) as unknown as ResizeRequest);
  });
  app.post('/v1/cluster/backup', async (req) => {
    const r = api as Partial<AgentClusterBackupApi>;
    if (!r.clusterBackup) throw new AgentError('NOT_FOUND', 'this agent does not back up clusters');
    return r.clusterBackup(bodyOf(req) as unknown as ClusterBackupRequest);
  });

  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const url = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  log(`couchtrove agent RPC listening on ${url}`);
  return { url, app, close: () => app.close() };
}

/** Reads and checks `couchtrove agent serve --config FILE`. */
export async function readServeConfig(file: string): Promise<AgentServeConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    throw new CouchtroveError(`cannot read agent configuration ${file}: ${describeError(err)}`);
  }
  const c = raw as Partial<AgentServeConfig> | null;
  const bad = (what: string) => new CouchtroveError(`agent configuration ${file}: ${what}`);
  if (!c || typeof c !== 'object') throw bad('must be a JSON object {host, port, tokenFile, instanceDir}');
  if (typeof c.host !== 'string' || isIP(c.host) === 0) throw bad(`host must be an IP address, got ${JSON.stringify(c.host)}`);
  if (typeof c.port !== 'number' || !Number.isInteger(c.port) || c.port < 0 || c.port > 65535) throw bad(`port must be 0-65535, got ${JSON.stringify(c.port)}`);
  for (const k of ['tokenFile', 'instanceDir'] as const) {
    if (typeof c[k] !== 'string' || !path.isAbsolute(c[k])) throw bad(`${k} must be an absolute path`);
  }
  if (c.storageCredentialsFile !== undefined && (typeof c.storageCredentialsFile !== 'string' || !path.isAbsolute(c.storageCredentialsFile))) throw bad('storageCredentialsFile must be an absolute path');
  return { host: c.host, port: c.port, tokenFile: c.tokenFile!, instanceDir: c.instanceDir!, ...(c.storageCredentialsFile ? { storageCredentialsFile: c.storageCredentialsFile } : {}) };
}

/** The bearer token: the file's content without surrounding white space; the file must be 0600 or stricter. */
export async function readTokenFile(file: string): Promise<string> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    throw new CouchtroveError(`cannot read token file ${file}: ${describeError(err)}`);
  }
  if ((st.mode & 0o077) !== 0) throw new CouchtroveError(`token file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
  const token = (await fsp.readFile(file, 'utf8')).trim();
  if (token.length < 16 || /\s/.test(token)) throw new CouchtroveError(`token file ${file} must hold one token of at least 16 characters`);
  return token;
}
