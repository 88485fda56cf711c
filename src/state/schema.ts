// The control plane's tables, as Kysely sees them. Times are ISO 8601 strings (UTC), booleans are 0/1,
// JSON columns are text: the same rows on SQLite and PostgreSQL.

export interface ProjectsTable {
  id: string;
  name: string;
  created: string;
}

export interface FlavorsTable {
  id: string;
  name: string;
  /** MiB */
  ram: number;
  vcpus: number;
}

export interface DatastoreVersionsTable {
  id: string;
  /** Datastore type: always 'couchdb' today. */
  datastore: string;
  name: string;
  active: number;
  is_default: number;
  /** Release directory for this version; null means COUCHDB_HOME or the development engine. */
  couchdb_home: string | null;
}

export type InstanceStatus =
  | 'BUILD' | 'ACTIVE' | 'REBOOT' | 'RESIZE' | 'BACKUP' | 'SHUTDOWN' | 'RESTART_REQUIRED' | 'ERROR' | 'FAILED'
  | 'PROMOTE' | 'EJECT' | 'DETACH' | 'UPGRADE';

export interface InstancesTable {
  id: string;
  project_id: string;
  name: string;
  status: InstanceStatus;
  flavor_id: string;
  /** GB as Trove counts them (the quota is size * 1 GiB). */
  volume_size: number;
  datastore: string;
  datastore_version: string;
  configuration_id: string | null;
  replica_of: string | null;
  /** Where CouchDB listens. */
  host: string | null;
  port: number | null;
  /** The agent's RPC address and its pid (local driver). */
  agent_port: number | null;
  agent_pid: number | null;
  /** The instance's own Erlang port mapper. */
  epmd_port: number | null;
  instance_dir: string | null;
  /** 'couchdb' or 'devengine': what serves this instance. */
  engine: string | null;
  /** Why the instance is ERROR/FAILED, or what the last task reported. */
  fault: string | null;
  /** The task holding the instance; null when idle. Claimed with a compare-and-set update. */
  task_id: string | null;
  /**
   * JSON: what the instance was restored from (the source instance, the archive cut or backup, its time),
   * shown as `restored_from`. Optional in rows written before 0004 and by code that makes no restore.
   */
  restored_from?: string | null;
  /** The cluster this instance is a member of (0006); null or absent: a single instance. */
  cluster_id?: string | null;
  /** A cluster member's fixed Erlang distribution port (0006). */
  dist_port?: number | null;
  created: string;
  updated: string;
}

/** Trove's cluster task names (trove/cluster/tasks.py), and ERROR: a create that failed (fault says why). */
export type ClusterTaskName = 'NONE' | 'BUILDING_INITIAL' | 'DELETING' | 'GROWING_CLUSTER' | 'SHRINKING_CLUSTER' | 'RESTARTING_CLUSTER' | 'BACKING_UP' | 'ERROR';

/** A CouchDB cluster (docs/cluster.md): its members are instances rows with cluster_id. */
export interface ClustersTable {
  id: string;
  project_id: string;
  name: string;
  task_name: ClusterTaskName;
  datastore: string;
  datastore_version: string;
  /** The Erlang port mapper every member registers with (they find each other through it). */
  epmd_port: number;
  /** [cluster] n and q of the members. */
  n: number;
  q: number;
  /** Why the last task failed; null when it did not. */
  fault: string | null;
  /** The task holding the cluster; null when idle. */
  task_id: string | null;
  created: string;
  updated: string;
}

/**
 * A deleted instance whose archive or backups may still be restored (issue 23): what `instance list
 * --deleted` shows and `restorePoint.instanceRef` finds by name. Removed once nothing of it is kept.
 */
export interface DeletedInstancesTable {
  id: string;
  project_id: string;
  name: string;
  flavor_id: string;
  volume_size: number;
  datastore_version: string;
  /** When the instance was made, and deleted (ISO). */
  created: string;
  deleted: string;
  /** Days its archive is kept after the delete; null when it never archived. */
  archive_keep_days: number | null;
}

export type BackupStatus = 'NEW' | 'BUILDING' | 'SAVING' | 'COMPLETED' | 'FAILED' | 'DELETE_FAILED';

export interface BackupsTable {
  id: string;
  project_id: string;
  instance_id: string | null;
  name: string;
  description: string | null;
  status: BackupStatus;
  parent_id: string | null;
  /** Repository URL the backup was written to. */
  location: string | null;
  /** Bytes stored in the repository. */
  size_bytes: number | null;
  /** Data bytes read from the instance. */
  data_bytes: number | null;
  files: number | null;
  checksum: string | null;
  datastore: string;
  datastore_version: string;
  /** JSON of the engine's Progress while running. */
  progress: string | null;
  fail_reason: string | null;
  task_id: string | null;
  created: string;
  updated: string;
  /** When a backup.verify task last started or ended; null: never verified. */
  verified_at: string | null;
  /** 'running', 'ok', or 'failed: <what was found, naming the object>'; null: never verified. */
  verify_result: string | null;
  /** A cluster backup's cluster (0007); null: an instance's backup. */
  cluster_id: string | null;
  /** JSON: a cluster backup's record (src/tasks/cluster-backup.ts): its shard maps and per-member parts. */
  cluster: string | null;
}

export type TaskStatus = 'NEW' | 'RUNNING' | 'COMPLETED' | 'FAILED';

export interface TasksTable {
  id: string;
  project_id: string;
  kind: string;
  instance_id: string | null;
  backup_id: string | null;
  status: TaskStatus;
  /** JSON parameters. */
  params: string;
  /** Last step reached, for resuming. */
  step: string | null;
  error: string | null;
  attempts: number;
  /** After this time the task is failed by the watchdog. */
  deadline: string | null;
  heartbeat: string;
  /** The process running the task (TaskManager.owner: host:pid:random); null once released or before 0003. */
  owner: string | null;
  /** The owner's lease: after this time (ISO) another process may take the task over. Null: free now. */
  lease_until: string | null;
  created: string;
  updated: string;
}

/** A leader lease (src/tasks/leader.ts): one process does the named periodic work while it holds it. */
export interface LeasesTable {
  /** What the lease is for, e.g. 'health'. */
  id: string;
  owner: string;
  /** ISO time after which another process may take it. */
  expires: string;
}

export interface ConfigurationsTable {
  id: string;
  project_id: string;
  name: string;
  description: string | null;
  /** JSON object 'section/key' -> value. */
  values: string;
  datastore: string;
  datastore_version: string;
  created: string;
  updated: string;
}

/** A backup schedule of an instance or a cluster (src/tasks/schedules.ts). */
export interface BackupSchedulesTable {
  id: string;
  project_id: string;
  /** What it backs up: the instance's id, or the cluster's (then cluster_id is set too: the column is older than clusters, and NOT NULL). */
  instance_id: string;
  /** A cluster's schedule: the cluster's id (null: an instance's; written before 0008). */
  cluster_id: string | null;
  name: string;
  description: string | null;
  /** 5-field cron pattern, UTC. */
  pattern: string;
  incremental: number;
  /** Retention applied to this schedule's backups after each run; null: not set. */
  keep_last: number | null;
  keep_daily: number | null;
  keep_weekly: number | null;
  /** When the schedule fires next (ISO, UTC). */
  next_run: string;
  last_run: string | null;
  /** What the last run did: the backup it made, or why it was skipped or failed. */
  last_result: string | null;
  /** 1: each run verifies the backup it took and the schedule's least recently verified one (null: written before 0004). */
  verify: number | null;
  created: string;
  updated: string;
}

/** Which backups a schedule made (its retention only considers these). id is the backup's id. */
export interface BackupScheduleRunsTable {
  id: string;
  schedule_id: string;
  created: string;
}

export interface Database {
  backup_schedules: BackupSchedulesTable;
  backup_schedule_runs: BackupScheduleRunsTable;
  projects: ProjectsTable;
  flavors: FlavorsTable;
  datastore_versions: DatastoreVersionsTable;
  instances: InstancesTable;
  deleted_instances: DeletedInstancesTable;
  backups: BackupsTable;
  tasks: TasksTable;
  leases: LeasesTable;
  configurations: ConfigurationsTable;
  clusters: ClustersTable;
}

export type TableName = keyof Database;
