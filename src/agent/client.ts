// The control plane's side of the agent RPC: AgentClient implements AgentApi over HTTP (server.ts).
// Errors come back as AgentError with the agent's code and message; a transport failure is an
// AgentError with code UNREACHABLE. The token is sent as a bearer header and never shown.
import { AgentError } from './errors.js';
import type { AgentApi, AgentBackupRequest, AgentErrorCode, ConfigurationResult, InstanceSettings, InstanceStatus, NewUser, UserInfo } from './protocol.js';
import type { AgentArchiveApi, ArchiveSettings, ArchiveStatus, DatabaseRestoreRequest, DatabaseRestoreResult } from './protocol.js';
import type { AgentReplicationApi, FollowPrimaryRequest, ReplicationCredentials, ReplicationStatus, ReplicationSyncResult } from './protocol.js';
import type { AccessRole, AgentOpsApi, DataStats, LogFileInfo } from './protocol.js';
import type { AgentClusterApi, AgentClusterSyncApi, ClusterShardState, ClusterMembership, ClusterProbe, AgentResizeApi, ResizeAnswer, ResizeRequest, AgentClusterBackupApi, ClusterBackupAnswer, ClusterBackupRequest } from './protocol.js';
import type { BackupSummary, Progress } from '../backup/types.js';

export interface AgentClientOptions {
  /** For quick calls (default 60 s). */
  timeoutMs?: number;
  /** For prepare (which may restore), start/stop/restart and backup (default 24 h). */
  longTimeoutMs?: number;
}

const enc = encodeURIComponent;

export class AgentClient implements AgentApi, AgentReplicationApi, AgentOpsApi, AgentArchiveApi, AgentClusterApi, AgentClusterSyncApi, AgentResizeApi, AgentClusterBackupApi {
  readonly #token: string;
  readonly #base: string;
  readonly #timeoutMs: number;
  readonly #longTimeoutMs: number;

  constructor(baseUrl: string, token: string, options: AgentClientOptions = {}) {
    this.#base = baseUrl.replace(/\/+$/, '');
    this.#token = token;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#longTimeoutMs = options.longTimeoutMs ?? 24 * 3600_000;
  }

  async #call<T>(method: string, path: string, body?: unknown, long = false): Promise<T> {
    const timeout = long ? this.#longTimeoutMs : this.#timeoutMs;
    let res: Response;
    try {
      res = await fetch(`${this.#base}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeout),
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${timeout} ms` : (e.cause?.code ?? e.message);
      throw new AgentError('UNREACHABLE', `agent at ${this.#base} is not reachable (${method} ${path}): ${why}`);
    }
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text === '' ? null : JSON.parse(text);
    } catch {
      json = null;
    }
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string } } | null)?.error;
      if (e && typeof e.code === 'string' && typeof e.message === 'string') throw new AgentError(e.code as AgentErrorCode, e.message);
      throw new AgentError('INTERNAL', `agent answered ${res.status} to ${method} ${path}`);
    }
    return json as T;
  }

  prepare(settings: InstanceSettings): Promise<InstanceStatus> {
    return this.#call('POST', '/v1/prepare', settings, true);
  }
  start(): Promise<InstanceStatus> {
    return this.#call('POST', '/v1/start', undefined, true);
  }
  stop(): Promise<InstanceStatus> {
    return this.#call('POST', '/v1/stop', undefined, true);
  }
  restart(): Promise<InstanceStatus> {
    return this.#call('POST', '/v1/restart', undefined, true);
  }
  status(): Promise<InstanceStatus> {
    return this.#call('GET', '/v1/status');
  }
  volumeUsage(): Promise<{ used: number; total: number }> {
    return this.#call('GET', '/v1/volume');
  }

  listDatabases(): Promise<string[]> {
    return this.#call('GET', '/v1/databases');
  }
  async createDatabase(name: string): Promise<void> {
    await this.#call('POST', '/v1/databases', { name });
  }
  async deleteDatabase(name: string): Promise<void> {
    await this.#call('DELETE', `/v1/databases/${enc(name)}`);
  }

  listUsers(): Promise<UserInfo[]> {
    return this.#call('GET', '/v1/users');
  }
  getUser(name: string): Promise<UserInfo> {
    return this.#call('GET', `/v1/users/${enc(name)}`);
  }
  async createUser(user: NewUser): Promise<void> {
    await this.#call('POST', '/v1/users', user);
  }
  async deleteUser(name: string): Promise<void> {
    await this.#call('DELETE', `/v1/users/${enc(name)}`);
  }
  async changePassword(name: string, password: string): Promise<void> {
    await this.#call('PUT', `/v1/users/${enc(name)}/password`, { password });
  }
  async grantAccess(name: string, databases: string[], role?: AccessRole): Promise<void> {
    await this.#call('POST', `/v1/users/${enc(name)}/access`, role === undefined ? { databases } : { databases, role });
  }
  async revokeAccess(name: string, database: string): Promise<void> {
    await this.#call('DELETE', `/v1/users/${enc(name)}/access/${enc(database)}`);
  }

  enableRoot(password?: string): Promise<{ name: 'root'; password: string }> {
    return this.#call('POST', '/v1/root', password === undefined ? {} : { password });
  }
  async isRootEnabled(): Promise<boolean> {
    return (await this.#call<{ enabled: boolean }>('GET', '/v1/root')).enabled;
  }
  async rootStatus(): Promise<{ enabled: boolean; since: string | null }> {
    const r = await this.#call<{ enabled: boolean; since?: string | null }>('GET', '/v1/root');
    return { enabled: r.enabled, since: r.since ?? null };
  }
  async disableRoot(): Promise<void> {
    await this.#call('DELETE', '/v1/root');
  }

  applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult> {
    return this.#call('POST', '/v1/configuration', { overrides });
  }

  backup(request: AgentBackupRequest): Promise<BackupSummary & { location: string }> {
    return this.#call('POST', '/v1/backups', request, true);
  }
  async progress(): Promise<Progress | null> {
    return (await this.#call<{ progress: Progress | null }>('GET', '/v1/progress')).progress;
  }

  configureArchive(settings: ArchiveSettings): Promise<ArchiveStatus> {
    return this.#call('POST', '/v1/archive', settings);
  }
  archiveStatus(): Promise<ArchiveStatus> {
    return this.#call('GET', '/v1/archive');
  }
  restoreDatabase(request: DatabaseRestoreRequest): Promise<DatabaseRestoreResult> {
    return this.#call('POST', '/v1/database-restores', request, true);
  }

  replicationSource(): Promise<ReplicationCredentials> {
    return this.#call('POST', '/v1/replication/source');
  }
  followPrimary(request: FollowPrimaryRequest): Promise<ReplicationStatus> {
    return this.#call('POST', '/v1/replication/follow', request);
  }
  syncReplication(): Promise<ReplicationSyncResult> {
    return this.#call('POST', '/v1/replication/sync');
  }
  replicationStatus(): Promise<ReplicationStatus> {
    return this.#call('GET', '/v1/replication');
  }
  detach(): Promise<ReplicationStatus> {
    return this.#call('POST', '/v1/replication/detach');
  }

  dataStats(): Promise<DataStats> {
    return this.#call('GET', '/v1/stats');
  }
  logs(): Promise<LogFileInfo[]> {
    return this.#call('GET', '/v1/logs');
  }
  readLog(name: string, lines: number): Promise<{ name: string; text: string; lines: number }> {
    return this.#call('GET', `/v1/logs/${enc(name)}?lines=${lines}`);
  }

  clusterJoin(nodes: string[]): Promise<ClusterMembership> {
    return this.#call('POST', '/v1/cluster/join', { nodes });
  }
  clusterMembership(): Promise<ClusterMembership> {
    return this.#call('GET', '/v1/cluster');
  }
  async clusterSetup(): Promise<string[]> {
    return (await this.#call<{ created: string[] }>('POST', '/v1/cluster/setup', {})).created;
  }
  clusterProbe(probe: ClusterProbe): Promise<{ read: number }> {
    return this.#call('POST', '/v1/cluster/probe', probe);
  }
  clusterShards(sync?: string[]): Promise<ClusterShardState> {
    return this.#call('POST', '/v1/cluster/shards', { sync: sync ?? [] });
  }
  clusterResize(req: ResizeRequest): Promise<ResizeAnswer> {
    return this.#call('POST', '/v1/cluster/resize', req);
  }
  clusterBackup(req: ClusterBackupRequest): Promise<ClusterBackupAnswer> {
    return this.#call('POST', '/v1/cluster/backup', req);
  }
}
