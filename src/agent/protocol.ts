// The contract between the control plane and the agent that runs beside each CouchDB.
// The agent serves it over authenticated HTTP (`couchtrove agent serve`); the control plane
// calls it through AgentClient. Both sides import these types, so a change here is a change to both.
import type { BackupSummary, Progress } from '../backup/types.js';
import type { Codec } from '../config/catalogue.js';

export type InstanceState = 'BUILD' | 'RUNNING' | 'SHUTDOWN' | 'FAILED' | 'RESTART_REQUIRED';

export interface InstanceSettings {
  instanceId: string;
  /** CouchDB's HTTP port and address. */
  port: number;
  bindAddress: string;
  /** The volume's mount point: CouchDB's database_dir and view_index_dir. */
  dataDir: string;
  /** Where the agent keeps the instance's local.ini, vm.args, logs and 0600 secret files. */
  instanceDir: string;
  /** Erlang node name, normally couchdb@127.0.0.1 (kept the same on every host). */
  nodeName: string;
  /** Port of this instance's own Erlang port mapper (ERL_EPMD_PORT). */
  epmdPort: number;
  /** Apache CouchDB release directory (with bin/couchdb). */
  couchdbHome: string;
  /** Volume size in bytes: writes beyond it are refused by the agent's checks. */
  volumeBytes?: number;
  /** CouchDB/Erlang settings derived from the flavor. */
  flavor?: { ramMb: number; vcpus: number };
  /** 'section/key' -> value configuration overrides. */
  overrides?: Record<string, string>;
  /**
   * Restore this backup before the first start. With `time` (ISO 8601) and `stream`: the newest cut of that
   * archive stream at or before the time instead (point-in-time restore; backupId is then only informative).
   */
  restore?: {
    storage: string;
    backupId: string;
    keyFile?: string;
    stream?: string;
    time?: string;
    /** Only these databases (their shard files and the shard maps): a one-database restore's scratch server. */
    databases?: string[];
  };
  /**
   * The instance's own OS identity: CouchDB runs as it, and its data, configuration and Erlang cookie
   * belong to it alone (the agent must run as root to switch). Absent: CouchDB runs as the agent's user.
   */
  runAs?: { uid: number; gid: number };
  /** A member of a CouchDB cluster (docs/cluster.md); absent: a single node. */
  cluster?: ClusterMemberSettings;
}

export interface ClusterMemberSettings {
  /** The fixed Erlang distribution port of this member (inet_dist_listen_min = max). */
  distPort: number;
  /** [cluster] n and q. */
  n: number;
  q: number;
  /** The cluster's [couchdb] uuid, the same on every member (CouchDB's cluster setup syncs it). */
  uuid: string;
  /**
   * A 0600 JSON file of the control plane's, as the agent sees it: {"cookie": ..., "authSecret": ...}, the
   * cluster's Erlang cookie and [chttpd_auth] secret, the same on every member. Never in the settings themselves.
   */
  secretsFile: string;
  /**
   * Members are containers (docs/cluster.md, "On containers"): no epmd; every member listens for its peers on
   * distPort on the container's addresses (only its cluster's network reaches another member) and finds
   * them on that same port (-erl_epmd_port). Absent: loopback and the cluster's epmd (local processes).
   */
  epmdless?: boolean;
}

/** What GET /_membership says of this node's view of the cluster. */
export interface ClusterMembership {
  /** Nodes this node is connected to (itself included). */
  allNodes: string[];
  /** Nodes of the node list (_nodes). */
  clusterNodes: string[];
  /** The system databases (_users, _replicator) this node can open. */
  systemDatabases: string[];
}

/** A probe through this member: write one document and read others (written through other members). */
export interface ClusterProbe {
  db: string;
  /** Create the database (through one member only: its shard map then reaches the others through _dbs). */
  create?: boolean;
  /** A document written; the database must exist (waited for while _dbs reaches this node). */
  write?: string;
  read?: string[];
  /** Delete the database after the reads. */
  drop?: boolean;
}

/** What a cluster member's agent does beyond a single node's (docs/cluster.md). */
export interface AgentClusterApi {
  /** Adds these nodes to the node list of this node (_nodes); mem3 spreads it to the others. */
  clusterJoin(nodes: string[]): Promise<ClusterMembership>;
  clusterMembership(): Promise<ClusterMembership>;
  /** Creates the system databases (_users, _replicator) through this node once every node is connected. */
  clusterSetup(): Promise<string[]>;
  clusterProbe(probe: ClusterProbe): Promise<{ read: number }>;
}

/** A cluster member's own view of its catch-up (src/agent/cluster-sync.ts). */
export interface ClusterShardState {
  /** This node's Erlang node name. */
  node: string;
  /** `_membership`: the nodes it is connected to (itself included), and those of the node list. */
  allNodes: string[];
  clusterNodes: string[];
  /** mem3_sync's backlog on this node (`_system` internal_replication_jobs). */
  backlog: number;
  /** Each shard file on this node ("shards/<range>/<db>.<suffix>", the same name on every copy): doc_count + doc_del_count. */
  shards: Record<string, number>;
}

/** Catch-up after a member was down (a rolling restart waits on it). */
export interface AgentClusterSyncApi {
  /** This member's shard files and backlog; `sync`: databases whose ranges CouchDB is first asked to push now. */
  clusterShards(sync?: string[]): Promise<ClusterShardState>;
}

export interface InstanceStatus {
  state: InstanceState;
  /** Why the state is FAILED (or RESTART_REQUIRED). */
  reason?: string;
  /** CouchDB version as reported by GET /. */
  version?: string;
  /** 'section/key' settings written to the ini that wait for a restart (with state RESTART_REQUIRED). */
  pendingRestart?: string[];
}

/** A user's access to a database: member (read and write documents) or admin (also design documents and indexes). */
export type AccessRole = 'admin' | 'member';

export interface UserInfo {
  name: string;
  roles: string[];
  /** Databases whose _security members (or admins) list this user by name. */
  databases: string[];
  /** Of those, the databases whose _security admins list this user (role admin); absent from older agents. */
  adminOf?: string[];
}

export interface NewUser {
  name: string;
  password: string;
  roles?: string[];
  databases?: string[];
}

export interface ConfigurationResult {
  /** Keys applied live through /_node/_local/_config. */
  applied: string[];
  /** Keys written to the instance's ini that need a restart. */
  pending: string[];
  restartRequired: boolean;
}

export interface AgentBackupRequest {
  storage: string;
  id: string;
  keyFile?: string;
  /** The key's id, recorded in the manifest (`instance:<id>`): the control plane picks the key by it. */
  keyId?: string;
  compression?: Codec;
  labels?: Record<string, string>;
  /** Parent backup id (in the same storage): an incremental backup on top of it. */
  parent?: string;
  /**
   * A cluster member's part of a cluster backup (docs/cluster.md, "Cluster backups"): only this node's
   * copies of these shard ranges (their shard files, named by this node's own shard maps), no configuration.
   */
  shards?: ShardRef[];
}

/** One shard range of one database. */
export interface ShardRef {
  db: string;
  range: string;
}

export interface AgentApi {
  prepare(settings: InstanceSettings): Promise<InstanceStatus>;
  start(): Promise<InstanceStatus>;
  stop(): Promise<InstanceStatus>;
  restart(): Promise<InstanceStatus>;
  status(): Promise<InstanceStatus>;
  volumeUsage(): Promise<{ used: number; total: number }>;

  listDatabases(): Promise<string[]>;
  createDatabase(name: string): Promise<void>;
  deleteDatabase(name: string): Promise<void>;

  listUsers(): Promise<UserInfo[]>;
  getUser(name: string): Promise<UserInfo>;
  createUser(user: NewUser): Promise<void>;
  deleteUser(name: string): Promise<void>;
  changePassword(name: string, password: string): Promise<void>;
  /** role defaults to member; admin also puts the user in the databases' _security admins. */
  grantAccess(name: string, databases: string[], role?: AccessRole): Promise<void>;
  revokeAccess(name: string, database: string): Promise<void>;

  enableRoot(password?: string): Promise<{ name: 'root'; password: string }>;
  isRootEnabled(): Promise<boolean>;
  /** Whether root is enabled and since when the agent enabled it (absent in agents before issue 23). */
  rootStatus?(): Promise<{ enabled: boolean; since: string | null }>;
  disableRoot(): Promise<void>;

  /** Keys of the published catalogue only; null puts a key back to CouchDB's default. */
  applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult>;

  backup(request: AgentBackupRequest): Promise<BackupSummary & { location: string }>;
  /** Progress of the running backup or restore, if any. */
  progress(): Promise<Progress | null>;
}

/** Continuous archiving (docs/agent.md, "archive"): what the control plane switches. */
export interface ArchiveSettings {
  enabled: boolean;
  /** Repository URL and key file; the stream is archive/<stream>/ in it (the instance id by default). */
  storage?: string;
  keyFile?: string;
  /** The key's id, recorded in every cut's manifest. */
  keyId?: string;
  stream?: string;
  /** Seconds between cuts (default 5). */
  interval?: number;
  /** Days of restore points kept (default 7). */
  keepDays?: number;
  /** A new base once the cuts since the base stored more than this share of it (default 0.5). */
  rebaseShare?: number;
  /** A new base at least this often (hours, default 24). */
  baseIntervalHours?: number;
  compression?: Codec;
}

export interface ArchiveStatus {
  enabled: boolean;
  interval: number;
  keepDays: number;
  stream: string | null;
  /** The newest restore point (ISO), and how far behind now it is. */
  restorePoint: string | null;
  lagSeconds: number | null;
  /** Lagging more than 3 intervals (and 10 s): archiving is failing or too slow. */
  behind: boolean;
  latestCut: string | null;
  /** The last cut's error while it keeps failing, with since when. */
  error: string | null;
  failingSince: string | null;
  cuts: { base: number; incremental: number; unchanged: number; failed: number };
  /** Since the agent started: bytes stored, plain bytes copied, CPU seconds spent on cuts. */
  bytesStored: number;
  bytesCopied: number;
  cpuSeconds: number;
  /** Oldest restore point kept in the repository (after the last retention pass). */
  oldestRestorePoint: string | null;
}

/** The JSON file given to `couchtrove agent serve --config FILE`. */
export interface AgentServeConfig {
  /** Address the agent's RPC listens on (loopback for local instances). */
  host: string;
  port: number;
  /** File (mode 0600) holding the bearer token the control plane sends. */
  tokenFile: string;
  /** The agent's own directory: instance settings, ini files, logs, secrets. */
  instanceDir: string;
  /** A container's: the object store's credentials (JSON of the storage driver's variables, 0400), read at each open of the repository. */
  storageCredentialsFile?: string;
}

/**
 * Error codes of the agent's RPC (body `{error: {code, message}}`); AgentClient rethrows them as
 * AgentError (src/agent/errors.ts) with the same code. The message names the cause and never holds a secret.
 */
export type AgentErrorCode =
  | 'INVALID_ARGUMENT' // 400: a name, setting or value that is not valid; nothing was changed
  | 'REFUSED' // 400: a configuration key that would break the instance; nothing was changed
  | 'UNAUTHORIZED' // 401: missing or wrong bearer token
  | 'NOT_FOUND' // 404: unknown user, database, backup or route
  | 'ALREADY_EXISTS' // 409: the user, database or backup id exists already
  | 'CONFLICT' // 409: not possible in the instance's state (not prepared, busy, restore failed)
  | 'NOT_RUNNING' // 409: CouchDB is not running
  | 'VOLUME_FULL' // 507: the volume's quota (volumeBytes) is used up
  | 'COUCHDB_ERROR' // 502: CouchDB answered something unexpected
  | 'STORAGE_ERROR' // 502: the backup repository failed
  | 'BACKUP_FAILED' // 500: the backup engine failed
  | 'INTERNAL' // 500
  | 'UNREACHABLE'; // AgentClient only: the agent did not answer (connection refused, timeout)

export interface AgentErrorBody {
  error: { code: AgentErrorCode; message: string };
}

// --- replication (issue 6; docs/replication.md) ----------------------------------------------
// Kept out of AgentApi so that existing implementations stay valid: the agent (Agent) and its RPC
// client (AgentClient) implement both; the control plane uses `AgentApi & AgentReplicationApi`.

/** What a replica's agent needs to follow a primary. Credentials go over the authenticated RPC only. */
export interface FollowPrimaryRequest {
  /** The primary's CouchDB base URL as reachable from the replica's CouchDB, without credentials. */
  primaryUrl: string;
  /** The primary's replication user (from the primary agent's replicationSource()). */
  username: string;
  password: string;
  /** Follow only these user databases (default: every non-system database); `_users` is always followed. */
  databases?: string[];
  /** Shown in the read-only error clients get (default: the primary URL's host:port), e.g. the instance id. */
  primaryName?: string;
}

/** The replication user of an instance (a server admin dedicated to replication) and where the agent reaches its CouchDB. */
export interface ReplicationCredentials {
  username: string;
  password: string;
  /** The agent's own view of its CouchDB (often loopback): the control plane substitutes an address the replicas can reach. */
  url: string;
}

/** States of CouchDB 3's replication scheduler, plus 'unknown' when the scheduler does not (yet) list the document. */
export type ReplicationJobState = 'initializing' | 'pending' | 'running' | 'crashing' | 'error' | 'failed' | 'completed' | 'unknown';

export interface DatabaseReplicationStatus {
  database: string;
  /** The `_replicator` document id. */
  docId: string;
  state: ReplicationJobState;
  error?: string;
  /** Changes on the primary not yet on the replica; null when it cannot be known now. */
  lag: number | null;
  /** How lag was measured: the scheduler's changes_pending, or the revs_diff scan (docs/replication.md). */
  lagMethod: 'changes_pending' | 'revs_diff' | 'none';
  /** lag counts only the part scanned (the scan is bounded): the true lag may be higher. */
  lagAtLeast?: boolean;
  /** The replica's copy: document count and update sequence (opaque: compare only for equality). */
  docCount?: number;
  updateSeq?: string;
  lastUpdated?: string;
}

export interface ReplicationStatus {
  role: 'replica' | 'standalone';
  primaryUrl?: string;
  /** The read-only guard is installed on every followed database. */
  readOnly: boolean;
  databases: DatabaseReplicationStatus[];
  /** Problems of the whole replica (primary unreachable, last sync failed), each naming its cause. */
  errors: string[];
  lastSync?: string;
}

export interface ReplicationSyncResult {
  /** Databases whose replication was created (or re-created with new settings). */
  added: string[];
  /** Databases no longer on the primary: replication removed and the replica's copy deleted. */
  removed: string[];
  /** Databases whose _security was copied from the primary. */
  securityUpdated: string[];
  /** Crashing replications re-created (same replication id, so they resume from their checkpoints). */
  restarted: string[];
  errors: string[];
}

export interface AgentArchiveApi {
  configureArchive(settings: ArchiveSettings): Promise<ArchiveStatus>;
  archiveStatus(): Promise<ArchiveStatus>;
  restoreDatabase(request: DatabaseRestoreRequest): Promise<DatabaseRestoreResult>;
}

/** One database back from a backup or an archive time, into the running instance (docs/agent.md). */
export interface DatabaseRestoreRequest {
  database: string;
  /** Repository URL and key file (the archive's by default). */
  storage?: string;
  keyFile?: string;
  /** A backup id in the repository, or an archive stream (default: the archive's) and a time. */
  backupId?: string;
  stream?: string;
  time?: string;
  /** Name in the running instance (default: the same name, which then needs `replace`). */
  as?: string;
  /** Replace the live database of that name (deleted, then copied). */
  replace?: boolean;
  /** Copy document by document even where the restored files could become the database (slower; to compare). */
  copy?: boolean;
}

export interface DatabaseRestoreResult {
  database: string;
  as: string;
  /** The backup or archive cut restored from. */
  from: string;
  docCount: number;
  docDelCount: number;
  /**
   * `placed`: the restored shard files became the database (place-db.ts); `copied`: document by document
   * (copy-db.ts: the development engine, a cluster member).
   */
  method: 'placed' | 'copied';
  /** Copied only: live leaf revisions besides the winners, attachments (each checked by digest). */
  conflicts: number | null;
  attachments: number | null;
  /** Bytes of shard files placed, or of JSON copied. */
  copiedBytes: number;
  /** Milliseconds: restoring into the scratch CouchDB, placing or copying, in all. */
  restoreMs: number;
  copyMs: number;
  totalMs: number;
}

export interface AgentReplicationApi {
  /** On a primary (or a replica about to be promoted): ensures the replication user and returns it. */
  replicationSource(): Promise<ReplicationCredentials>;
  /** Makes this instance follow a primary (replacing any previous primary) and syncs once. */
  followPrimary(request: FollowPrimaryRequest): Promise<ReplicationStatus>;
  /** The reconcile step: new/deleted databases, _security, guards, stuck jobs. Safe to call repeatedly. */
  syncReplication(): Promise<ReplicationSyncResult>;
  replicationStatus(): Promise<ReplicationStatus>;
  /** Stops following: replication documents and read-only guards removed; the instance is standalone and writable. */
  detach(): Promise<ReplicationStatus>;
}

// --- operations: data statistics and CouchDB's log (issue 15; docs/operations.md) -------------
// Kept out of AgentApi, like replication, so that other implementations stay valid.

/** What the user databases hold (system databases left out). */
export interface DataStats {
  databases: number;
  /** Documents not deleted, summed over the databases. */
  documents: number;
  /** Bytes of the database files (sizes.file). */
  fileBytes: number;
  /** Bytes of live data in them (sizes.active): fileBytes minus what compaction would reclaim. */
  activeBytes: number;
}

/** One log file the agent writes or keeps (CouchDB's own log, the agent's log). */
export interface LogFileInfo {
  name: string;
  /** Bytes in the current file. */
  size: number;
  /** Bytes in the rotated files kept beside it (name.1 ...). */
  rotatedBytes: number;
  /** The current file is rotated when it reaches this size. */
  maxBytes: number;
  /** Rotated files kept. */
  keep: number;
}

export interface AgentOpsApi {
  dataStats(): Promise<DataStats>;
  logs(): Promise<LogFileInfo[]>;
  /** The log's last `lines` lines (0: the whole current file, at most 16 MiB), with secrets the agent knows masked. */
  readLog(name: string, lines: number): Promise<{ name: string; text: string; lines: number }>;
}

/**
 * Moving shard copies between cluster members (docs/cluster.md, "Grow and shrink"), as CouchDB's "moving a
 * shard" procedure does it through one member's own CouchDB: read and edit the shard maps (`_dbs`), hold a
 * member out of interactive requests while its new copies fill (maintenance mode), start internal
 * replication, count a copy's documents, drop a copy no map names on this node, and take a node off `_nodes`;
 * a new member also takes root's password hash from another member (each node has its own [admins]).
 */
export type ResizeRequest =
  | { op: 'maps' }
  | { op: 'place'; db: string; add: Array<[range: string, node: string]>; remove: Array<[range: string, node: string]> }
  | { op: 'copies'; db: string }
  | { op: 'maintenance'; on: boolean }
  | { op: 'sync'; db: string }
  | { op: 'drop'; db: string; range: string }
  | { op: 'forget'; node: string }
  | { op: 'adoptRoot'; from: string };

/** One database's shard map: which nodes hold a copy of each range. */
export interface ShardMap {
  db: string;
  byRange: Record<string, string[]>;
}

export interface ResizeAnswer {
  /** This member's Erlang node name. */
  node: string;
  /** maps: every database's map; place: the edited one. */
  maps?: ShardMap[];
  /** copies: this node's copies of the database, range -> documents (live and deleted); null: not made yet. */
  copies?: Record<string, number | null>;
  /** drop, forget: whether there was something to remove; adoptRoot: whether the other node had a root. */
  removed?: boolean;
  adopted?: boolean;
}

export interface AgentResizeApi {
  clusterResize(req: ResizeRequest): Promise<ResizeAnswer>;
}

/** A shard map as `_dbs` holds it (by_range, by_node, changelog, shard_suffix, props), checked by the agent that read it. */
export interface ShardMapRecord {
  _id: string;
  by_range: Record<string, string[]>;
  by_node: Record<string, string[]>;
  changelog: unknown[];
  shard_suffix: number[];
  props?: { partitioned: true };
}

/** One backup's shard files to restore into this node's data directory (a part of a cluster backup). */
export interface ShardFilesPart {
  storage: string;
  backupId: string;
  keyFile?: string;
  files: string[];
}

/**
 * Cluster backups and their restore (src/agent/cluster-backup.ts): read every shard map; place shard files
 * from backups into the data directory (before any map names them here); write shard maps (one node does,
 * mem3 spreads them) and wait until every database opens through this node.
 */
export type ClusterBackupRequest =
  | { op: 'maps' }
  | { op: 'restoreFiles'; parts: ShardFilesPart[] }
  | { op: 'restoreMaps'; maps: ShardMapRecord[]; write: boolean };

export interface ClusterBackupAnswer {
  node: string;
  maps?: ShardMapRecord[];
  /** restoreFiles: files placed; restoreMaps: documents of every database, as this node answers. */
  files?: number;
  docs?: Record<string, number>;
}

export interface AgentClusterBackupApi {
  clusterBackup(req: ClusterBackupRequest): Promise<ClusterBackupAnswer>;
}
