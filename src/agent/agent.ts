// The agent: manages one Apache CouchDB 3.x beside it. This class is the AgentApi contract of protocol.ts
// (the RPC server, server.ts, exposes it to the control plane) over the parts that do the work, each in its
// own module around the shared state of core.ts:
// - lifecycle.ts: prepare (lay out, restore, start, verify), start, stop, restart, status, the supervisor;
// - configuration.ts: what CouchDB reads (files.ts, local-ini.ts), overrides, root, the managed settings;
// - backups.ts: backup, one database back; archiving.ts: continuous archiving;
// - operations.ts: volume use and quota, data statistics, logs;
// - manage.ts (databases, users) and replication.ts, reached through CouchDB's HTTP API.
import * as path from 'node:path';
import * as fsp from 'node:fs/promises';
import { AgentCore, couchUrl, type AgentOptions } from './core.js';
import { InstanceConfig } from './configuration.js';
import { Lifecycle } from './lifecycle.js';
import { Backups } from './backups.js';
import type { CleanResult } from './scratch.js';
import { Archiving } from './archiving.js';
import { Operations } from './operations.js';
import { ClusterMember } from './cluster.js';
import { ClusterSync } from './cluster-sync.js';
import { ClusterResize } from './cluster-resize.js';
import { ClusterBackup } from './cluster-backup.js';
import { writePrivateFile } from './files.js';
import { fileStore, ReplicationManager, ReplicationMemory } from './replication.js';
import type { QuotaState } from './quota.js';
import type {
  AccessRole, AgentApi, AgentArchiveApi, AgentBackupRequest, AgentClusterApi, AgentClusterSyncApi, ClusterShardState, ClusterMembership, ClusterProbe, AgentOpsApi, AgentReplicationApi, ArchiveSettings, ArchiveStatus, ConfigurationResult, AgentResizeApi, ResizeAnswer, ResizeRequest, AgentClusterBackupApi, ClusterBackupAnswer, ClusterBackupRequest,
  DatabaseRestoreRequest, DatabaseRestoreResult, DataStats, FollowPrimaryRequest, InstanceSettings, InstanceStatus, LogFileInfo, NewUser,
  ReplicationCredentials, ReplicationStatus, ReplicationSyncResult, UserInfo,
} from './protocol.js';
import type { BackupSummary, Progress } from '../backup/index.js';

export type { AgentOptions } from './core.js';
export { couchUrl } from './core.js';
export { instanceFiles, writePrivateFile } from './files.js';
export { buildLocalIni, managedSettings, renderVmArgs } from './local-ini.js';

export class Agent implements AgentApi, AgentReplicationApi, AgentOpsApi, AgentArchiveApi, AgentClusterApi, AgentClusterSyncApi, AgentResizeApi, AgentClusterBackupApi {
  readonly #c: AgentCore;
  readonly #config: InstanceConfig;
  readonly #life: Lifecycle;
  readonly #backups: Backups;
  readonly #archiving: Archiving;
  readonly #ops: Operations;
  readonly #cluster: ClusterMember;
  readonly #clusterSync: ClusterSync;
  readonly #resize: ClusterResize;
  readonly #clusterBackup: ClusterBackup;
  readonly #replMemory = new ReplicationMemory();

  private constructor(
    readonly agentDir: string,
    options: AgentOptions,
  ) {
    this.#c = new AgentCore(agentDir, options);
    this.#config = new InstanceConfig(this.#c);
    this.#life = new Lifecycle(this.#c, this.#config);
    this.#clusterBackup = new ClusterBackup(this.#c);
    this.#backups = new Backups(this.#c, (dir, o) => Agent.open(dir, o), this.#clusterBackup);
    this.#archiving = new Archiving(this.#c);
    this.#ops = new Operations(this.#c);
    this.#cluster = new ClusterMember(this.#c);
    this.#clusterSync = new ClusterSync(this.#c);
    this.#resize = new ClusterResize(this.#c, (hash) => this.#config.adoptRootHash(hash));
  }

  /** Opens the agent's directory; adopts a CouchDB an earlier agent process left running. */
  static async open(agentDir: string, options: AgentOptions = {}): Promise<Agent> {
    const dir = path.resolve(agentDir);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const agent = new Agent(dir, options);
    await agent.#c.load();
    return agent;
  }

  /** The instance's id, once prepared (for the log). */
  get instanceId(): string | undefined {
    return this.#c.state?.settings.instanceId;
  }

  /** The settings it was prepared with (a one-database restore reads its scratch instance's). */
  preparedSettings(): InstanceSettings {
    return this.#c.requireState().settings;
  }

  /** For tests and `agent serve` shutdown: the pid of the CouchDB this agent runs, if any. */
  get couchdbPid(): number | null {
    return this.#c.proc?.running ? this.#c.proc.pid : null;
  }

  // --- lifecycle (lifecycle.ts) --------------------------------------------------------------

  prepare(input: InstanceSettings): Promise<InstanceStatus> {
    return this.#life.prepare(input);
  }
  start(): Promise<InstanceStatus> {
    return this.#life.start();
  }
  stop(): Promise<InstanceStatus> {
    return this.#life.stop();
  }
  restart(): Promise<InstanceStatus> {
    return this.#life.restart();
  }
  status(): Promise<InstanceStatus> {
    return this.#life.status();
  }
  /** For `agent serve`: a CouchDB that exits while it should run is started again, with a back-off. */
  startSupervisor(intervalMs = 1000): () => void {
    return this.#life.startSupervisor(intervalMs);
  }

  // --- databases, users (manage.ts), root and configuration (configuration.ts) ---------------

  async listDatabases(): Promise<string[]> {
    return this.#c.mgr().listDatabases();
  }
  async createDatabase(name: string): Promise<void> {
    return this.#c.mgr().createDatabase(name);
  }
  async deleteDatabase(name: string): Promise<void> {
    return this.#c.mgr().deleteDatabase(name);
  }
  async listUsers(): Promise<UserInfo[]> {
    return this.#c.mgr().listUsers();
  }
  async getUser(name: string): Promise<UserInfo> {
    return this.#c.mgr().getUser(name);
  }
  async createUser(user: NewUser): Promise<void> {
    return this.#c.mgr().createUser(user);
  }
  async deleteUser(name: string): Promise<void> {
    return this.#c.mgr().deleteUser(name);
  }
  async changePassword(name: string, password: string): Promise<void> {
    return this.#c.mgr().changePassword(name, password);
  }
  async grantAccess(name: string, databases: string[], role?: AccessRole): Promise<void> {
    return this.#c.mgr().grantAccess(name, databases, role);
  }
  async revokeAccess(name: string, database: string): Promise<void> {
    return this.#c.mgr().revokeAccess(name, database);
  }
  enableRoot(password?: string): Promise<{ name: 'root'; password: string }> {
    return this.#config.enableRoot(password);
  }
  isRootEnabled(): Promise<boolean> {
    return this.#config.isRootEnabled();
  }
  rootStatus(): Promise<{ enabled: boolean; since: string | null }> {
    return this.#config.rootStatus();
  }
  disableRoot(): Promise<void> {
    return this.#config.disableRoot();
  }
  applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult> {
    return this.#config.applyConfiguration(overrides);
  }
  enforceManaged(): Promise<string[]> {
    return this.#config.enforceManaged();
  }
  /** For `agent serve`: managed settings changed in memory over HTTP go back within intervalMs. */
  startManagedWatch(intervalMs = 5000): () => void {
    return this.#c.every(intervalMs, 'managed settings check', () => this.enforceManaged());
  }

  // --- backup, one database back (backups.ts), archiving (archiving.ts) ----------------------

  backup(request: AgentBackupRequest): Promise<BackupSummary & { location: string }> {
    return this.#backups.backup(request);
  }
  async progress(): Promise<Progress | null> {
    return this.#c.progress;
  }
  restoreDatabase(req: DatabaseRestoreRequest): Promise<DatabaseRestoreResult> {
    return this.#backups.restoreDatabase(req);
  }
  /** What `database restore`s of a dead agent left (scratch.ts): cleaned at the agent's start and before every restore. */
  recoverRestores(): Promise<CleanResult> {
    return this.#backups.recoverRestores();
  }
  configureArchive(input: ArchiveSettings): Promise<ArchiveStatus> {
    return this.#archiving.configureArchive(input);
  }
  archiveStatus(): Promise<ArchiveStatus> {
    return this.#archiving.archiveStatus();
  }
  /** For `agent serve`: runs the archiving loop (it does nothing while archiving is off); returns the stop function. */
  startArchiver(): () => Promise<void> {
    return this.#archiving.startArchiver();
  }

  // --- cluster membership (cluster.ts) --------------------------------------------------------

  clusterJoin(nodes: string[]): Promise<ClusterMembership> {
    return this.#cluster.clusterJoin(nodes);
  }
  clusterMembership(): Promise<ClusterMembership> {
    return this.#cluster.clusterMembership();
  }
  clusterSetup(): Promise<string[]> {
    return this.#cluster.clusterSetup();
  }
  clusterProbe(probe: ClusterProbe): Promise<{ read: number }> {
    return this.#cluster.clusterProbe(probe);
  }
  clusterShards(sync?: string[]): Promise<ClusterShardState> {
    return this.#clusterSync.clusterShards(sync);
  }
  /** Shard moves (and root) for grow and shrink (cluster-resize.ts). */
  clusterResize(req: ResizeRequest): Promise<ResizeAnswer> {
    return this.#resize.run(req);
  }
  /** Shard maps and shard files for cluster backups and their restore (cluster-backup.ts). */
  clusterBackup(req: ClusterBackupRequest): Promise<ClusterBackupAnswer> {
    return this.#clusterBackup.run(req);
  }

  // --- operations (operations.ts) -------------------------------------------------------------

  volumeUsage(): Promise<{ used: number; total: number }> {
    return this.#ops.volumeUsage();
  }
  dataStats(): Promise<DataStats> {
    return this.#ops.dataStats();
  }
  logs(): Promise<LogFileInfo[]> {
    return this.#ops.logs();
  }
  readLog(name: string, lines: number): Promise<{ name: string; text: string; lines: number }> {
    return this.#ops.readLog(name, lines);
  }
  rotateLogs(): Promise<string[]> {
    return this.#ops.rotateLogs();
  }
  /** For `agent serve`: checks the logs' sizes every intervalMs. */
  startLogRotation(intervalMs = 30_000): () => void {
    return this.#c.every(intervalMs, 'log rotation', async () => {
      for (const n of await this.rotateLogs()) this.#c.log(`rotated the ${n} log (cap ${this.#c.logMaxBytes} bytes, ${this.#c.logKeep} kept)`);
    });
  }
  /** Client writes beyond the volume quota are refused (quota.ts); nothing without a quota or while CouchDB is down. */
  enforceQuota(): Promise<QuotaState | null> {
    return this.#ops.enforceQuota();
  }
  startQuotaWatch(intervalMs = 10_000): () => void {
    return this.#c.every(intervalMs, 'volume quota check', () => this.enforceQuota());
  }

  // --- replication (replication.ts, docs/replication.md) ---------------------------------------

  #replication(): ReplicationManager {
    const st = this.#c.requireUsable();
    return new ReplicationManager({
      couch: this.#c.client(),
      localUrl: couchUrl(st.settings),
      store: fileStore(path.join(st.settings.instanceDir, 'replication.json'), writePrivateFile),
      memory: this.#replMemory,
      log: this.#c.log,
      persistAdmin: (name) => this.#c.withConfigLock(() => this.#config.persistAdmin(name)),
    });
  }

  async replicationSource(): Promise<ReplicationCredentials> {
    return this.#replication().replicationSource();
  }
  async followPrimary(request: FollowPrimaryRequest): Promise<ReplicationStatus> {
    const r = this.#replication();
    await r.followPrimary(request);
    return r.status();
  }
  async syncReplication(): Promise<ReplicationSyncResult> {
    return this.#replication().sync();
  }
  async replicationStatus(): Promise<ReplicationStatus> {
    return this.#replication().status();
  }
  async detach(): Promise<ReplicationStatus> {
    const r = this.#replication();
    await r.detach();
    return r.status();
  }

  /** For `agent serve`: runs syncReplication every intervalMs while CouchDB runs; returns the stop function. */
  startReplicationSync(intervalMs = 5000): () => void {
    return this.#c.every(intervalMs, 'replication sync', async () => {
      if (this.#c.busy || this.#c.state?.desired !== 'RUNNING' || !this.#c.admin) return;
      await this.#replication().sync();
    });
  }
}
