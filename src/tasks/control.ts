// The control plane's operations: what the API asks for, checked, written to the state store and
// carried out by durable tasks through the instances' agents. Every long operation claims its instance
// with a compare-and-set on instances.task_id, so conflicting tasks on one instance are refused.
// This file holds the instances themselves; backups (./backups.ts), databases, users and root
// (./access.ts), replication (./replication.ts) and configuration groups (./configurations.ts) are
// functions of the plane in their own modules, and health checks are ./health.ts.
import { createHash, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AgentApi, AgentReplicationApi, InstanceSettings } from '../agent/protocol.js';
import { createWithRoles } from './access.js';
import { openStorage, type Backend } from '../storage/index.js';
import type { ComputeDriver } from '../compute/driver.js';
import { GiB } from '../compute/driver.js';
import type { ServerConfig } from '../config/server.js';
import { flavorOverrides } from '../config/server.js';
import { now, type Row, type StateStore, type InstanceStatus } from '../state/index.js';
import { describeError } from '../util/errors.js';
import { TaskManager, type TaskContext } from './manager.js';
import { badRequest, notFound, unprocessable, ServiceError } from './errors.js';
import { awaitFollowing, registerReplicationTasks, sourceUrl } from './replication.js';
import { HealthMonitor } from './health.js';
import { registerArchiveTasks, retireArchive } from './archive.js';
import { archiveRestoredFrom, backupRestoredFrom, chooseCut, findSource, keptAfterDelete, planInstanceRestore, rememberDeleted, restoreTime, type RestoredFrom } from './recovery.js';
import { groupOverrides, refuseUnsettable, registerConfigurationTasks } from './configurations.js';
import { registerBackupTasks } from './backups.js';
import { registerVerifyTasks } from './verify.js';
import { registerUpgradeTasks } from './upgrade.js';
import { memberNode, memberSettings, registerClusterTasks } from './clusters.js';
import { registerClusterRestartTask } from './cluster-restart.js';
import { registerClusterResizeTasks } from './cluster-resize.js';
import { checkClusterRestore, registerClusterBackupTasks, restoreClusterBackup } from './cluster-backup.js';
import { withTimeout } from '../util/concurrency.js';
import type { BackupSummary } from '../backup/types.js';
import { InstanceKeys, instanceKeysFor } from '../crypto/instance-keys.js';
import { readManifest } from '../backup/repository.js';
import { archiveStorage } from '../backup/archive.js';

/** What the control plane needs from the backup engine (src/backup): injected so tests can replace it. */
export interface BackupEngine {
  /** The stored backup's checksum (sha256 of its catalog); rejects when the backup cannot be read. */
  storedChecksum(repository: string, id: string, keyFile?: string): Promise<string>;
  /** Removes every object of the backup; a missing backup is not an error. The key authenticates the other backups' manifests. */
  delete(repository: string, id: string, keyFile?: string): Promise<void>;
  /**
   * The summary of a complete backup (its manifest authenticates under the key), or null when there is no
   * complete backup of that id. Optional: without it an interrupted backup is always removed.
   */
  stored?(repository: string, id: string, keyFile?: string): Promise<BackupSummary | null>;
  /**
   * Reads the whole backup back (every object, every record's authentication and every file's SHA-256,
   * with the parts of its ancestors it uses) and rejects with what is wrong, naming the object. Resolves
   * with the key id its manifest names (null: not encrypted; undefined: the master) and its checksum.
   */
  verify?(repository: string, id: string, keyFile?: string): Promise<{ keyId: string | null | undefined; checksum: string; bytes: number }>;
}

export interface UserSpec {
  name: string;
  password: string;
  databases: string[];
  /** Of `databases`, those where the user is database admin (design documents, indexes); the rest member. */
  adminOf?: string[];
}

export interface CreateInstanceRequest {
  name: string;
  /** null: a replica's, taken from its source. */
  flavorRef: string | null;
  volumeSize: number | null;
  datastoreVersion: string | null;
  databases: string[];
  users: UserSpec[];
  backupRef: string | null;
  /** Point-in-time restore (couchtrove extension): the backup's instance's archive, as of this time (as typed). */
  restoreTime?: string | null;
  /** Restore by instance and time (couchtrove extension): a live or deleted instance's id or name. */
  instanceRef?: string | null;
  replicaOf: string | null;
  configurationId: string | null;
  /** A cluster member (./clusters.ts): its cluster and the cluster's epmd port. */
  cluster?: { id: string; epmdPort: number };
}

/** The backup a new replica is seeded from (deleted once the replica follows its source). */
const seedId = (replicaId: string): string => `replica-seed-${replicaId}`;

interface CreateParams {
  databases: string[];
  users: Array<{ name: string; databases: string[]; adminOf?: string[] }>;
  restore: string | null;
  /** A cluster backup, restored once CouchDB runs (./cluster-backup.ts). */
  clusterRestore?: string;
  /** Point in time: the archive stream and the time (the cut is chosen again by the agent, the same one). */
  pitr?: { stream: string; time: string; cut: string } | null;
}

/** What every restore says it used (./recovery.ts), kept with the instance for `show`. */
export function restoredFromOf(inst: Row<'instances'>): Record<string, unknown> | undefined {
  if (!inst.restored_from) return undefined;
  try {
    return JSON.parse(inst.restored_from) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export const DATASTORE = 'couchdb';
/** A backup in these states is being written; reconcile (here) and ./backups.ts both need them. */
export const RUNNING_BACKUP = ['NEW', 'BUILDING', 'SAVING'] as const;

/** Stable ids for datastores and versions (the same on every start and every store). */
export function stableId(kind: string, name: string): string {
  const h = createHash('sha1').update(`couchtrove:${kind}:${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export interface ControlPlaneOptions {
  config: ServerConfig;
  store: StateStore;
  compute: ComputeDriver;
  backups: BackupEngine;
  log?: (m: string) => void;
  /** Watchdog period, ms. */
  watchdogMs?: number;
  /** How often a running backup's progress is read, ms. */
  progressMs?: number;
  /** Health check period, ms (default: the configuration's health_interval). */
  healthMs?: number;
}

export class ControlPlane {
  readonly config: ServerConfig;
  readonly store: StateStore;
  readonly compute: ComputeDriver;
  readonly tasks: TaskManager;
  readonly backups: BackupEngine;
  readonly log: (m: string) => void;
  /** How often a running backup's progress is read, ms (./backups.ts). */
  readonly progressMs: number;
  private readonly keyFile: string | undefined;
  /** Per-instance keys derived from the master key file; undefined without encryption. */
  readonly instanceKeys: InstanceKeys | undefined;
  readonly health: HealthMonitor;

  constructor(options: ControlPlaneOptions) {
    this.config = options.config;
    this.store = options.store;
    this.compute = options.compute;
    this.backups = options.backups;
    this.log = options.log ?? (() => undefined);
    this.progressMs = options.progressMs ?? 1000;
    // The sweep that takes over a dead process's tasks runs at least once per lease.
    const leaseMs = this.config.taskLease * 1000;
    this.tasks = new TaskManager(this.store, { watchdogMs: options.watchdogMs ?? Math.min(5000, leaseMs / 3), leaseMs, log: this.log, subject: (t) => this.taskSubject(t) });
    this.keyFile = this.config.backupEncryption ? (this.config.backupKeyFile ?? path.join(this.config.stateDir, 'backup.key')) : undefined;
    this.instanceKeys = instanceKeysFor(this.config);
    this.registerHandlers();
    registerBackupTasks(this);
    registerVerifyTasks(this);
    registerReplicationTasks(this);
    registerConfigurationTasks(this);
    registerUpgradeTasks(this);
    registerArchiveTasks(this);
    registerClusterTasks(this);
    registerClusterRestartTask(this);
    registerClusterResizeTasks(this);
    registerClusterBackupTasks(this);
    this.health = new HealthMonitor(this, options.healthMs ?? this.config.healthInterval * 1000, this.log);
  }

  /** "instance ID (NAME)", "backup ID (NAME)" or both: what a task's end line names (src/tasks/manager.ts). */
  private async taskSubject(t: Row<'tasks'>): Promise<string> {
    const parts: string[] = [];
    const inst = t.instance_id ? await this.store.get('instances', t.instance_id) : undefined;
    if (t.instance_id) parts.push(`instance ${t.instance_id}${inst ? ` (${inst.name})` : ''}`);
    const b = t.backup_id ? await this.store.get('backups', t.backup_id) : undefined;
    if (t.backup_id) parts.push(`backup ${t.backup_id}${b ? ` (${b.name})` : ''}`);
    return parts.join(', ');
  }

  /** The master key file: the control plane's own reads (checksums, deletes, retention) derive every instance key from it. */
  get backupKeyFile(): string | undefined {
    return this.keyFile;
  }

  /**
   * What an agent request needs to write (or read) backups of `inst` with its own key: the key file as the
   * agent sees it and the id recorded in the manifests. Empty without encryption.
   */
  async ownKey(inst: Row<'instances'>): Promise<{ keyFile?: string; keyId?: string }> {
    // A container's own key and the repository's credentials, copied in if it lacks them.
    await this.compute.ensureOwnKey?.(inst);
    if (!this.instanceKeys) return {};
    const host = await this.instanceKeys.file(inst.id);
    return { keyFile: this.compute.paths(inst).keyFile ?? host, keyId: InstanceKeys.keyId(inst.id) };
  }

  /**
   * The key an agent needs to read backup `id` (in `storage`, or in archive stream `stream` of it) of
   * instance `owner`, for a restore into `target`: chosen by the key id its manifest records, which must be
   * the owner's (no key id: written with the master key before per-instance keys). Another instance's key,
   * or the master, is installed for this restore only (removeRestoreKey); a manifest that cannot be read
   * gets the owner's key, never the master (the restore then fails on the manifest anyway).
   */
  async restoreKey(target: Row<'instances'>, owner: string | null, storage: string, id: string, stream?: string): Promise<{ keyFile?: string }> {
    if (!this.instanceKeys) return {};
    let keyId: string | undefined | null; // null: unencrypted; undefined: the master
    try {
      const m = await this.withStorage(storage, (repo) => readManifest(stream ? archiveStorage(repo, stream) : repo, id));
      keyId = m.body.encryption ? m.body.encryption.keyId : null;
    } catch (err) {
      if (!owner) throw unprocessable(`Backup ${id} cannot be restored: its manifest cannot be read (${describeError(err)}).`);
      keyId = InstanceKeys.keyId(owner);
    }
    // This server encrypts: a plain manifest proves nothing (anyone who can write the repository can make
    // one under a real backup's id), so it is never handed to an agent without a key (issue 22).
    if (keyId === null) throw unprocessable(`Backup ${id} is not encrypted, but this server encrypts its backups: its manifest cannot be authenticated (forged, or written without a key), so it is not restored.`);
    if (keyId !== undefined && (owner === null || keyId !== InstanceKeys.keyId(owner))) {
      throw unprocessable(`Backup ${id} names key ${keyId}, not the key of the instance it belongs to${owner ? ` (${owner})` : ''}: it is not restored.`);
    }
    if (keyId === undefined) this.log(`backup ${id}: written with the master key (before per-instance keys); instance ${target.id}'s agent reads it with the master key for this restore`);
    const host = keyId === undefined ? this.keyFile! : await this.instanceKeys.file(owner!);
    if (owner === target.id && keyId !== undefined) return { keyFile: this.compute.paths(target).keyFile ?? host };
    return { keyFile: this.compute.installRestoreKey ? await this.compute.installRestoreKey(target, host, keyId) : host };
  }

  /** Seeds flavors and datastore versions from the configuration and recovers interrupted tasks. */
  async start(): Promise<{ resumed: string[]; failed: string[] }> {
    for (const f of this.config.flavors) await this.store.upsert('flavors', { id: f.id, name: f.name, ram: f.ram, vcpus: f.vcpus });
    for (const f of await this.store.find('flavors')) {
      if (!this.config.flavors.some((c) => c.id === f.id)) await this.store.remove('flavors', f.id);
    }
    for (const v of this.config.datastoreVersions) {
      await this.store.upsert('datastore_versions', {
        id: stableId('version', `${DATASTORE}:${v.name}`), datastore: DATASTORE, name: v.name,
        active: v.active ? 1 : 0, is_default: v.default ? 1 : 0, couchdb_home: v.couchdbHome ?? null,
      });
    }
    const r = await this.tasks.recover();
    await this.reconcile();
    this.health.start();
    return r;
  }

  private stopped = false;

  /** True once stop() is called: background work (./backups.ts) gives up rather than delay the stop. */
  get stopping(): boolean {
    return this.stopped;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.health.stop();
    await this.tasks.stop();
  }

  /**
   * Rows a lost task left behind: instances held by a finished or missing task, backups in a running
   * state without a live task. Each is put in a true state.
   */
  async reconcile(): Promise<void> {
    for (const i of await this.store.find('instances')) {
      if (i.task_id === null) continue;
      const t = await this.store.get('tasks', i.task_id);
      if (!t || t.status === 'COMPLETED' || t.status === 'FAILED') {
        await this.release(i.id, i.task_id, t?.error ?? 'the task holding the instance was lost');
      }
    }
    for (const b of await this.store.find('backups', { status: [...RUNNING_BACKUP] })) {
      const t = b.task_id ? await this.store.get('tasks', b.task_id) : undefined;
      if (!t || t.status === 'COMPLETED' || t.status === 'FAILED') {
        await this.store.update('backups', b.id, { status: 'FAILED', fail_reason: t?.error ?? 'the backup task was lost', progress: null, updated: now() }, { status: [...RUNNING_BACKUP] });
      }
    }
  }

  // ---- lookups -------------------------------------------------------------------------------

  async instance(projectId: string, id: string): Promise<Row<'instances'>> {
    const i = await this.store.get('instances', id);
    if (!i || i.project_id !== projectId) throw notFound(`Instance ${id} could not be found.`);
    return i;
  }

  async backup(projectId: string, id: string): Promise<Row<'backups'>> {
    const b = await this.store.get('backups', id);
    if (!b || b.project_id !== projectId) throw notFound(`Backup ${id} could not be found.`);
    return b;
  }

  /**
   * A configuration group by id or by name: names are unique per project, and the clients send the name
   * as it is typed to some calls (`openstack database configuration set NAME`, `trove configuration-patch NAME`).
   */
  async configuration(projectId: string, id: string): Promise<Row<'configurations'>> {
    const byId = await this.store.get('configurations', id);
    const c = byId?.project_id === projectId ? byId : (await this.store.find('configurations', { project_id: projectId, name: id }))[0];
    if (!c) throw notFound(`Configuration group ${id} could not be found.`);
    return c;
  }

  async flavor(ref: string): Promise<Row<'flavors'>> {
    const f = (await this.store.get('flavors', ref)) ?? (await this.store.find('flavors')).find((x) => x.name === ref);
    if (!f) throw notFound(`Flavor ${ref} could not be found.`);
    return f;
  }

  async datastoreVersion(ref: string | null): Promise<Row<'datastore_versions'>> {
    const all = await this.store.find('datastore_versions', { datastore: DATASTORE });
    const v = ref === null ? all.find((x) => x.is_default === 1) : all.find((x) => x.id === ref || x.name === ref);
    if (!v) throw notFound(`Datastore version ${ref ?? '(default)'} for datastore ${DATASTORE} could not be found.`);
    if (v.active !== 1) throw badRequest(`Datastore version ${v.name} is not active.`);
    return v;
  }

  // ---- instances ------------------------------------------------------------------------------

  async createInstance(projectId: string, req: CreateInstanceRequest): Promise<Row<'instances'>> {
    // A replica without a flavor or volume size takes its source's, as Trove does.
    const source = req.replicaOf !== null ? await this.instance(projectId, req.replicaOf) : null;
    if (req.flavorRef === null && !source) throw badRequest('"flavorRef" is required.');
    const flavor = await this.flavor(req.flavorRef ?? source!.flavor_id);
    const version = await this.datastoreVersion(req.datastoreVersion);
    let size = req.volumeSize ?? (source && this.config.couchdb.volumeSupport ? source.volume_size : null);
    if (this.config.couchdb.volumeSupport) {
      if (size === null) throw badRequest('Volume size is required: the couchdb datastore has volume_support = true.');
      if (size > this.config.maxVolumeSize) throw new ServiceError(413, 'overLimit', `Volume size ${size} GB is over the limit of ${this.config.maxVolumeSize} GB.`);
    } else {
      if (size !== null) throw badRequest('Volume support is disabled ([couchdb] volume_support = false): do not give a volume size.');
      size = 0;
    }
    let configuration: Row<'configurations'> | null = null;
    if (req.configurationId) {
      configuration = await this.configuration(projectId, req.configurationId);
      refuseUnsettable(configuration);
    }
    let primary: Row<'instances'> | null = null;
    if (source) {
      primary = source;
      if (primary.status !== 'ACTIVE') throw unprocessable(`Instance ${primary.id} is ${primary.status}: a replica needs an ACTIVE source.`);
      if (primary.replica_of !== null) throw unprocessable(`Instance ${primary.id} is itself a replica: replicate from its primary ${primary.replica_of}.`);
      if (req.backupRef !== null) throw badRequest('A replica starts from its source: give replica_of or a backup, not both.');
    }
    let restore: Row<'backups'> | null = null;
    let pitr: CreateParams['pitr'] = null;
    let restoredFrom: RestoredFrom | null = null;
    if (req.instanceRef) {
      if (req.backupRef !== null || source) throw badRequest('"restorePoint" takes "instanceRef" or "backupRef", not both, and a replica starts from its source.');
      const from = await findSource(this, projectId, req.instanceRef);
      const plan = await planInstanceRestore(this, projectId, from, restoreTime(req.restoreTime ?? 'latest', '"restorePoint"."restoreTime"').t);
      restoredFrom = plan.restoredFrom;
      if (plan.pitr) pitr = { stream: plan.pitr.stream, cut: plan.pitr.cut, time: plan.pitr.time };
      restore = plan.backup;
    } else if (req.backupRef !== null) {
      restore = await this.backup(projectId, req.backupRef);
    }
    if (restore) {
      if (restore.status !== 'COMPLETED') throw unprocessable(`Backup ${restore.id} is not COMPLETED (status ${restore.status}): it cannot be restored.`);
      if (restore.datastore !== DATASTORE) throw unprocessable(`Backup ${restore.id} is of datastore ${restore.datastore}, not ${DATASTORE}.`);
      const need = restore.data_bytes ?? 0;
      if (this.config.couchdb.volumeSupport && need > size * GiB) {
        throw unprocessable(`Backup ${restore.id} holds ${(need / GiB).toFixed(3)} GB of data: it does not fit a volume of ${size} GB.`);
      }
      let stored: string | undefined;
      if (restore.cluster_id) await checkClusterRestore(this, restore, 1, size);
      else try {
        // The master key file: the engine derives the backup's instance key from it (the key id in its manifest).
        stored = await this.backups.storedChecksum(restore.location ?? this.config.repository, restore.id, this.keyFile);
      } catch (err) {
        throw unprocessable(`Backup ${restore.id} cannot be read from ${restore.location ?? this.config.repository}: ${describeError(err)}`);
      }
      if (!restore.cluster_id && stored !== restore.checksum) throw unprocessable(`Backup ${restore.id}: the stored checksum ${stored} does not match the recorded ${restore.checksum ?? '(none)'}.`);
    }
    if (req.restoreTime && !req.instanceRef) {
      // The older form: a backup names the instance whose archive is read.
      if (!restore?.instance_id) throw badRequest('"restorePoint"."restoreTime" needs an "instanceRef" (or a "backupRef" of an instance that was archived): the time is looked up in that instance\'s archive.');
      const { t } = restoreTime(req.restoreTime, '"restorePoint"."restoreTime"');
      const c = await chooseCut(this, restore.instance_id, t);
      if (!c) throw unprocessable(`Instance ${restore.instance_id} has no archive: restore backup ${restore.id} without a time, or give another backup.`);
      pitr = { stream: c.stream, cut: c.cut, time: c.time };
      restoredFrom = { instance_id: restore.instance_id, ...archiveRestoredFrom(c, t) };
      restore = null;
    } else if (restore && !restoredFrom) {
      restoredFrom = { instance_id: restore.instance_id ?? '', ...(await backupRestoredFrom(this, restore, null)) };
    }
    for (const u of req.users) {
      for (const d of u.databases) {
        if (!req.databases.includes(d)) throw badRequest(`User ${u.name} is given database ${d}, which is not in the instance's databases.`);
      }
    }
    await this.ensureProject(projectId);
    const id = randomUUID();
    const task = await this.tasks.create({
      kind: 'instance.create', projectId, instanceId: id, timeout: this.config.couchdb.usageTimeout,
      params: { databases: req.databases, users: req.users.map((u) => ({ name: u.name, databases: u.databases, ...(u.adminOf?.length ? { adminOf: u.adminOf } : {}) })), restore: restore && !restore.cluster_id ? restore.id : null, ...(restore?.cluster_id ? { clusterRestore: restore.id } : {}), pitr } satisfies CreateParams,
    });
    this.writeSecrets(task.id, Object.fromEntries(req.users.map((u) => [u.name, u.password])));
    const t = now();
    const row: Row<'instances'> = {
      id, project_id: projectId, name: req.name, status: 'BUILD', flavor_id: flavor.id, volume_size: size,
      datastore: DATASTORE, datastore_version: version.name, configuration_id: configuration?.id ?? null, replica_of: primary?.id ?? null,
      host: null, port: null, agent_port: null, agent_pid: null, epmd_port: req.cluster?.epmdPort ?? null, instance_dir: null, engine: this.engineFor(version),
      ...(req.cluster ? { cluster_id: req.cluster.id } : {}),
      fault: null, task_id: task.id, restored_from: restoredFrom ? JSON.stringify(restoredFrom) : null, created: t, updated: t,
    };
    await this.store.insert('instances', row);
    this.tasks.start(task);
    return row;
  }

  private engineFor(v: Row<'datastore_versions'>): string {
    return v.couchdb_home ? 'couchdb' : this.compute.engine.kind;
  }

  /** Claims the instance for a new task; refused (422) when it is busy or in the wrong state. Also used by ./replication.ts. */
  async claim(projectId: string, instanceId: string, kind: string, status: InstanceStatus, allowed: InstanceStatus[], params: unknown, timeout: number, backupId?: string, taskId?: string): Promise<Row<'tasks'>> {
    const inst = await this.instance(projectId, instanceId);
    const refuse = async (current: Row<'instances'>): Promise<never> => {
      const holder = current.task_id ? await this.store.get('tasks', current.task_id) : undefined;
      const why = holder && (holder.status === 'NEW' || holder.status === 'RUNNING') ? ` while its ${holder.kind} task ${holder.id} runs` : '';
      throw unprocessable(`Instance ${instanceId} is ${current.status}${why}: ${kind.replace('.', ' ')} is refused (allowed when ${allowed.join(' or ')} and idle).`);
    };
    if (!allowed.includes(inst.status) || inst.task_id !== null) await refuse(inst);
    const task = await this.tasks.create({ kind, projectId, instanceId, backupId: backupId ?? null, params, timeout, ...(taskId ? { id: taskId } : {}) });
    const ok = await this.store.update('instances', instanceId, { status, task_id: task.id, updated: now() }, { task_id: null, status: allowed, project_id: projectId });
    if (!ok) {
      await this.tasks.discard(task.id);
      await refuse((await this.store.get('instances', instanceId)) ?? inst);
    }
    return task;
  }

  /** Starts the delete; answers what it keeps (archive, backups) and until when. */
  async deleteInstance(projectId: string, id: string, opts: { cluster?: boolean } = {}): Promise<Record<string, unknown>> {
    const inst = await this.instance(projectId, id);
    if (inst.cluster_id && !opts.cluster) throw badRequest(`Instance ${id} is a member of cluster ${inst.cluster_id}: delete the cluster (openstack database cluster delete).`);
    // As Trove: a source with replicas stays until they are detached or it is ejected.
    const replicas: Row<'instances'>[] = [];
    for (const r of await this.store.find('instances', { replica_of: id })) {
      const task = r.task_id ? await this.store.get('tasks', r.task_id) : undefined;
      if (task?.kind !== 'instance.delete') replicas.push(r); // a replica being deleted no longer counts
    }
    if (replicas.length > 0) {
      throw badRequest(`Instance ${id} is the replication source of ${replicas.map((r) => r.id).join(', ')}: detach its replicas (or eject it) before deleting it.`);
    }
    // Delete wins over a task that is stuck past its deadline.
    if (inst.task_id) await this.tasks.expireIfOverdue(inst.task_id);
    const task = await this.claim(projectId, id, 'instance.delete', 'SHUTDOWN',
      ['ACTIVE', 'ERROR', 'FAILED', 'SHUTDOWN', 'RESTART_REQUIRED', 'BUILD'], {}, this.config.taskTimeout);
    // Read before the task runs: the archive the repository holds now, the backups that stay.
    const kept = await keptAfterDelete(this, inst);
    this.tasks.start(task);
    return kept;
  }

  async restartInstance(projectId: string, id: string): Promise<void> {
    const task = await this.claim(projectId, id, 'instance.restart', 'REBOOT', ['ACTIVE', 'RESTART_REQUIRED', 'SHUTDOWN', 'ERROR'], {}, this.config.taskTimeout);
    this.tasks.start(task);
  }

  async resizeFlavor(projectId: string, id: string, flavorRef: string): Promise<void> {
    const inst = await this.instance(projectId, id);
    const flavor = await this.flavor(flavorRef);
    if (flavor.id === inst.flavor_id) throw badRequest(`Instance ${id} already has flavor ${flavor.id}.`);
    const task = await this.claim(projectId, id, 'instance.resize_flavor', 'RESIZE', ['ACTIVE', 'RESTART_REQUIRED'], { flavorId: flavor.id }, this.config.taskTimeout);
    this.tasks.start(task);
  }

  async resizeVolume(projectId: string, id: string, size: number): Promise<void> {
    const inst = await this.instance(projectId, id);
    if (!this.config.couchdb.volumeSupport) throw badRequest('Volume support is disabled ([couchdb] volume_support = false).');
    if (size <= inst.volume_size) throw badRequest(`The new volume size ${size} must be larger than the current volume size of ${inst.volume_size}: volumes only grow.`);
    if (size > this.config.maxVolumeSize) throw new ServiceError(413, 'overLimit', `Volume size ${size} GB is over the limit of ${this.config.maxVolumeSize} GB.`);
    const task = await this.claim(projectId, id, 'instance.resize_volume', 'RESIZE', ['ACTIVE', 'RESTART_REQUIRED'], { size }, this.config.taskTimeout);
    this.tasks.start(task);
  }

  /**
   * Where an instance's agent writes its backups and archive: the repository, or the part of it the compute
   * driver gives the instance (docker: <repo>/instances/<id>/ of a file:// repository, all its container sees).
   */
  repositoryOf(instanceId: string): string {
    return this.compute.repositoryFor?.(instanceId, this.config.repository) ?? this.config.repository;
  }

  /** Runs f on the server's repository (backups, archives, published logs), opened for it and closed after. */
  async withRepository<T>(f: (repo: Backend) => Promise<T>): Promise<T> {
    return this.withStorage(this.config.repository, f);
  }

  /** Runs f on the repository at url (a backup's location), opened for it and closed after. */
  async withStorage<T>(url: string, f: (repo: Backend) => Promise<T>): Promise<T> {
    const repo = await openStorage(url);
    try {
      return await f(repo);
    } finally {
      await repo.close();
    }
  }

  /** Volume use in bytes, or null when the agent does not answer quickly. */
  async volumeUsed(inst: Row<'instances'>): Promise<number | null> {
    if (!inst.agent_port || !['ACTIVE', 'RESTART_REQUIRED', 'BACKUP', 'REBOOT', 'RESIZE'].includes(inst.status)) return null;
    try {
      const a = await this.compute.agent(inst);
      const r = await withTimeout(a.volumeUsage(), 2000);
      return r.used;
    } catch {
      return null;
    }
  }

  // ---- helpers --------------------------------------------------------------------------------

  async ensureProject(projectId: string): Promise<void> {
    if (!(await this.store.get('projects', projectId))) {
      const p = this.config.projects.find((x) => x.id === projectId);
      try {
        await this.store.insert('projects', { id: projectId, name: p?.name ?? projectId, created: now() });
      } catch {
        // inserted concurrently
      }
    }
  }

  private secretsFile(taskId: string): string {
    return path.join(this.config.stateDir, 'secrets', `${taskId}.json`);
  }

  private writeSecrets(taskId: string, secrets: Record<string, string>): void {
    if (Object.keys(secrets).length === 0) return;
    fs.mkdirSync(path.dirname(this.secretsFile(taskId)), { recursive: true, mode: 0o700 });
    fs.writeFileSync(this.secretsFile(taskId), JSON.stringify(secrets), { mode: 0o600 });
  }

  private readSecrets(taskId: string): Record<string, string> {
    try {
      return JSON.parse(fs.readFileSync(this.secretsFile(taskId), 'utf8')) as Record<string, string>;
    } catch {
      return {};
    }
  }

  private dropSecrets(taskId: string): void {
    fs.rmSync(this.secretsFile(taskId), { force: true });
  }

  /** The settings the agent gets for an instance. */
  async settings(inst: Row<'instances'>, changes: { flavorId?: string; volumeSize?: number; configurationId?: string | null; restore?: string | null; pitr?: CreateParams['pitr']; datastoreVersion?: string } = {}): Promise<InstanceSettings> {
    const flavor = await this.flavor(changes.flavorId ?? inst.flavor_id);
    const versions = await this.store.find('datastore_versions', { datastore: DATASTORE, name: changes.datastoreVersion ?? inst.datastore_version });
    const where = this.compute.paths(inst);
    // A container image fixes its release directory; elsewhere the version's own, else the driver's engine.
    const home = where.couchdbHome ?? versions[0]?.couchdb_home ?? this.compute.engine.home;
    const confId = changes.configurationId === undefined ? inst.configuration_id : changes.configurationId;
    const conf = confId ? await this.store.get('configurations', confId) : undefined;
    const { dataDir, agentDir, runAs } = where;
    const size = changes.volumeSize ?? inst.volume_size;
    const s: InstanceSettings = {
      instanceId: inst.id,
      port: inst.port ?? 0,
      bindAddress: where.bindAddress ?? inst.host ?? '127.0.0.1',
      dataDir,
      instanceDir: agentDir,
      nodeName: inst.cluster_id ? memberNode(inst, this.compute) : 'couchdb@127.0.0.1',
      epmdPort: inst.epmd_port ?? 0,
      couchdbHome: home,
      flavor: { ramMb: flavor.ram, vcpus: flavor.vcpus },
      overrides: { ...flavorOverrides(flavor), ...(conf ? groupOverrides(conf) : {}) },
    };
    if (runAs) s.runAs = runAs;
    if (inst.cluster_id) s.cluster = await memberSettings(this, inst);
    if (this.config.couchdb.volumeSupport) s.volumeBytes = size * GiB;
    if (changes.restore || changes.pitr) {
      const b = changes.restore ? await this.store.get('backups', changes.restore) : undefined;
      s.restore = { storage: this.restoreStorage(inst, changes.restore ?? '', b), backupId: changes.restore ?? '' };
      // Archives live in their instance's repository (archive/<instance id>/), whatever the backup's location.
      if (changes.pitr) s.restore = { storage: this.repositoryOf(changes.pitr.stream), backupId: changes.pitr.cut, stream: changes.pitr.stream, time: changes.pitr.time };
      // A replica's seed has no row: it is a backup of the replica's source.
      const owner = changes.pitr ? changes.pitr.stream : (b?.instance_id ?? inst.replica_of);
      Object.assign(s.restore, await this.restoreKey(inst, owner, s.restore.storage, s.restore.backupId, changes.pitr ? changes.pitr.stream : undefined));
    }
    return s;
  }

  /** The repository backup `id` is read from to prepare `inst` (a replica's seed has no row: its source's). */
  private restoreStorage(inst: Row<'instances'>, id: string, b: Row<'backups'> | undefined): string {
    if (b) return b.location ?? this.config.repository;
    return id === seedId(inst.id) && inst.replica_of ? this.repositoryOf(inst.replica_of) : this.config.repository;
  }

  /** Other instances' repositories a new instance reads its starting backup from (lent read-only to a container). */
  private async lentRepositories(inst: Row<'instances'>, params: CreateParams): Promise<string[]> {
    if (!this.compute.repositoryFor) return [];
    const out = new Set<string>();
    if (params.pitr) out.add(this.repositoryOf(params.pitr.stream));
    else if (params.restore) out.add(this.restoreStorage(inst, params.restore, await this.store.get('backups', params.restore)));
    if (inst.replica_of && !params.restore) out.add(this.repositoryOf(inst.replica_of));
    out.delete(this.repositoryOf(inst.id));
    return [...out];
  }


  /**
   * Gives the instance back (task_id null) in the state its agent reports. What the agent said (or that it
   * did not answer) follows the task's reason after AGENT_PART, so the health monitor can drop it once the
   * agent answers again and keep the task's reason (taskPart).
   */
  async release(instanceId: string, taskId: string, fault: string | null, patch: Partial<Row<'instances'>> = {}): Promise<void> {
    const inst = await this.store.get('instances', instanceId);
    if (!inst) return;
    let status: InstanceStatus = 'ERROR';
    let why = fault;
    try {
      if (!inst.agent_port) throw new Error('the instance was never placed');
      const a = await this.compute.agent({ ...inst, ...patch });
      const s = await withTimeout(a.status(), 5000);
      status = s.state === 'RUNNING' ? 'ACTIVE' : s.state === 'RESTART_REQUIRED' ? 'RESTART_REQUIRED' : s.state === 'SHUTDOWN' ? 'SHUTDOWN' : s.state === 'BUILD' ? 'ERROR' : 'ERROR';
      if (s.reason && status !== 'ACTIVE') why = withAgentPart(why, s.reason);
    } catch (err) {
      why = withAgentPart(why, describeError(err));
    }
    await this.store.update('instances', instanceId, { ...patch, status, fault: status === 'ACTIVE' ? fault : why, task_id: null, updated: now() }, { task_id: taskId });
  }

  private async setInstance(ctx: TaskContext<unknown>, patch: Partial<Row<'instances'>>): Promise<Row<'instances'>> {
    const id = ctx.task.instance_id!;
    if (!(await this.store.update('instances', id, { ...patch, updated: now() }, { task_id: ctx.task.id }))) {
      throw new Error(`instance ${id} is no longer held by task ${ctx.task.id}`);
    }
    return (await this.store.get('instances', id))!;
  }

  async held(ctx: TaskContext<unknown>): Promise<Row<'instances'>> {
    const inst = await this.store.get('instances', ctx.task.instance_id ?? '');
    if (!inst || inst.task_id !== ctx.task.id) throw new Error(`instance ${ctx.task.instance_id} is no longer held by task ${ctx.task.id}`);
    return inst;
  }

  /**
   * Backs up the replica's source into the repository under seedId(replica), for the replica's prepare to
   * restore. On failure (the source is busy, say) the replica starts empty and replication copies
   * everything: slower, not wrong. The seed is deleted once the replica follows its source.
   */
  private async seedReplica(inst: Row<'instances'>): Promise<string | null> {
    const id = seedId(inst.id);
    try {
      const primary = await this.store.get('instances', inst.replica_of ?? '');
      if (!primary?.agent_port) throw new Error(`the source instance ${inst.replica_of} has no agent`);
      const source = await this.compute.agent(primary);
      const repo = this.repositoryOf(primary.id);
      await this.backups.delete(repo, id, this.keyFile).catch(() => undefined); // a leftover of an interrupted create
      const req: Parameters<AgentApi['backup']>[0] = { storage: repo, id, labels: { purpose: 'replica-seed', instance_id: primary.id, replica_id: inst.id }, ...(await this.ownKey(primary)) };
      await agentCall(source.backup(req));
      this.log(`replica ${inst.id}: seeded from backup ${id} of ${primary.id}`);
      return id;
    } catch (err) {
      this.log(`replica ${inst.id}: seeding from a backup of its source failed (${describeError(err)}); replication will copy everything`);
      await this.backups.delete(inst.replica_of ? this.repositoryOf(inst.replica_of) : this.config.repository, id, this.keyFile).catch(() => undefined);
      return null;
    }
  }

  private registerHandlers(): void {
    const failInstance = async (task: Row<'tasks'>, reason: string): Promise<void> => {
      if (task.instance_id) await this.release(task.instance_id, task.id, reason);
    };

    this.tasks.register<CreateParams>('instance.create', {
      resumable: true,
      run: async (ctx) => {
        let inst = await this.held(ctx);
        // The instance's own key exists before its agent does (a container gets its copy at creation).
        if (this.instanceKeys) await this.instanceKeys.file(inst.id);
        // A container sees another instance's part of the repository only while it restores from it.
        const readOnly = await this.lentRepositories(inst, ctx.params);
        const placement = await this.compute.provision(inst, readOnly.length ? { readOnly } : {});
        inst = await this.setInstance(ctx, {
          host: placement.host, port: placement.port, agent_port: placement.agentPort, agent_pid: placement.agentPid,
          epmd_port: placement.epmdPort, instance_dir: placement.instanceDir, engine: placement.engine,
          ...(placement.distPort !== undefined ? { dist_port: placement.distPort } : {}),
        });
        await ctx.step('provisioned');
        const agent = await this.compute.agent(inst);
        const st = await agent.status();
        if (st.state !== 'RUNNING') {
          if (!ctx.resumed || ctx.task.step === null || ctx.task.step === 'provisioned') {
            // A replica starts from a fresh physical backup of its source: far quicker than replicating
            // every document from nothing; replication then only has to catch up.
            const seed = inst.replica_of && !ctx.params.restore ? await this.seedReplica(inst) : null;
            let prepared: Awaited<ReturnType<AgentApi['prepare']>>;
            try {
              prepared = await agentCall(agent.prepare(await this.settings(inst, { restore: ctx.params.restore ?? seed, pitr: ctx.params.pitr ?? null })));
            } finally {
              // Another instance's key was lent for this restore only.
              await this.compute.removeRestoreKey?.(inst).catch((err: unknown) => this.log(`instance ${inst.id}: removing the restore key: ${describeError(err)}`));
            }
            if (seed && prepared.state === 'FAILED') {
              this.log(`replica ${inst.id}: restoring the seed failed (${prepared.reason ?? 'no reason given'}); starting without it, replication copies everything`);
              await agentCall(agent.prepare(await this.settings(inst)));
            }
            await ctx.step('prepared');
          }
          // Whatever was lent for the restore goes before CouchDB first starts (also when resumed after a crash).
          if (this.compute.endRestore) await this.compute.endRestore(inst);
          const s = await agentCall(agent.start());
          if (s.state !== 'RUNNING') throw new Error(`CouchDB did not start: ${s.state}${s.reason ? `: ${s.reason}` : ''}`);
          const whole = ctx.params.clusterRestore ? await this.store.get('backups', ctx.params.clusterRestore) : undefined;
          if (whole) await restoreClusterBackup(this, whole, [inst]);
        }
        await ctx.step('started');
        const dbs = new Set(await agentCall(agent.listDatabases()));
        for (const d of ctx.params.databases) if (!dbs.has(d)) await agentCall(agent.createDatabase(d));
        await ctx.step('databases');
        const secrets = this.readSecrets(ctx.task.id);
        // A cluster member has no _users before its cluster is joined (and is given no users).
        const users = new Set(ctx.params.users.length === 0 ? [] : (await agentCall(agent.listUsers())).map((u) => u.name));
        for (const u of ctx.params.users) {
          if (users.has(u.name)) continue;
          const password = secrets[u.name];
          if (password === undefined) throw new Error(`the password of user ${u.name} was lost in the interruption; create the user again`);
          await createWithRoles(agent, { name: u.name, password, databases: u.databases, ...(u.adminOf ? { adminOf: u.adminOf } : {}) });
        }
        await ctx.step('users');
        if (inst.replica_of) {
          const primary = await this.store.get('instances', inst.replica_of);
          if (!primary || !primary.host || !primary.port) throw new Error(`the source instance ${inst.replica_of} is gone`);
          const source = (await this.compute.agent(primary)) as AgentApi & Partial<AgentReplicationApi>;
          const replica = agent as AgentApi & Partial<AgentReplicationApi>;
          if (!source.replicationSource || !replica.followPrimary) throw new Error('this agent cannot replicate');
          const creds = await agentCall(source.replicationSource());
          await agentCall(replica.followPrimary({ primaryUrl: await sourceUrl(this, primary, inst), username: creds.username, password: creds.password, primaryName: primary.id }));
          // ACTIVE only once it is guarded and has caught up: a replica that does not follow is not healthy.
          await awaitFollowing(this, inst);
          await this.backups.delete(this.repositoryOf(primary.id), seedId(inst.id), this.keyFile).catch(() => undefined);
          await ctx.step('replicating');
        }
        if (inst.configuration_id) {
          const conf = await this.store.get('configurations', inst.configuration_id);
          const overrides = conf ? groupOverrides(conf) : {};
          if (Object.keys(overrides).length > 0) await agentCall(agent.applyConfiguration(overrides));
        }
        this.dropSecrets(ctx.task.id);
        await this.setInstance(ctx, { status: 'ACTIVE', fault: null, task_id: null });
      },
      failed: async (task, reason) => {
        this.dropSecrets(task.id);
        if (!task.instance_id) return;
        await this.store.update('instances', task.instance_id, { status: 'ERROR', fault: `create failed: ${reason}`, task_id: null, updated: now() }, { task_id: task.id });
      },
    });

    this.tasks.register('instance.delete', {
      resumable: true,
      run: async (ctx) => {
        const inst = await this.held(ctx);
        await this.compute.destroy(inst);
        // Its backups stay readable: the control plane derives the key from the master again when needed.
        await this.instanceKeys?.drop(inst.id);
        await ctx.step('destroyed');
        // Restorable by id or name while its archive or backups are kept (instance list --deleted).
        await rememberDeleted(this, inst, await retireArchive(this, inst));
        await this.store.remove('instances', inst.id, { task_id: ctx.task.id });
      },
      failed: async (task, reason) => {
        if (task.instance_id) await this.store.update('instances', task.instance_id, { status: 'ERROR', fault: `delete failed: ${reason}`, task_id: null, updated: now() }, { task_id: task.id });
      },
    });

    this.tasks.register('instance.restart', {
      resumable: true,
      run: async (ctx) => {
        const inst = await this.held(ctx);
        await this.compute.ensureAgent(inst);
        const agent = await this.compute.agent(inst);
        const s = await agentCall(agent.restart());
        if (s.state !== 'RUNNING') throw new Error(`CouchDB did not come back: ${s.state}${s.reason ? `: ${s.reason}` : ''}`);
        await this.release(inst.id, ctx.task.id, null);
      },
      failed: failInstance,
    });

    this.tasks.register<{ flavorId: string }>('instance.resize_flavor', {
      resumable: true,
      run: async (ctx) => {
        const inst = await this.held(ctx);
        // Containers get the new memory and CPU limits while they run; the data stays where it is.
        if (this.compute.resizeFlavor) await this.compute.resizeFlavor(inst, await this.flavor(ctx.params.flavorId));
        const agent = await this.compute.agent(inst);
        await agentCall(agent.prepare(await this.settings(inst, { flavorId: ctx.params.flavorId })));
        const s = await agentCall(agent.restart());
        if (s.state !== 'RUNNING') throw new Error(`CouchDB did not come back with the new flavor: ${s.state}${s.reason ? `: ${s.reason}` : ''}`);
        await this.release(inst.id, ctx.task.id, null, { flavor_id: ctx.params.flavorId });
      },
      failed: failInstance,
    });

    this.tasks.register<{ size: number }>('instance.resize_volume', {
      resumable: true,
      run: async (ctx) => {
        const inst = await this.held(ctx);
        await this.compute.resizeVolume(inst, ctx.params.size);
        const agent = await this.compute.agent(inst);
        await agentCall(agent.prepare(await this.settings(inst, { volumeSize: ctx.params.size })));
        await this.release(inst.id, ctx.task.id, null, { volume_size: ctx.params.size });
      },
      failed: failInstance,
    });
  }
}

/** Starts what release() says about the agent in a fault, alone or after the task's reason and "; ". */
export const AGENT_PART = 'agent: ';

function withAgentPart(fault: string | null, agent: string): string {
  return fault ? `${fault}; ${AGENT_PART}${agent}` : `${AGENT_PART}${agent}`;
}

/** A fault without what release() said about the agent then: the task's own reason, or null when that is all it was. */
export function taskPart(fault: string | null): string | null {
  if (fault === null || fault.startsWith(AGENT_PART)) return null;
  const at = fault.lastIndexOf(`; ${AGENT_PART}`);
  return at < 0 ? fault : fault.slice(0, at);
}

/**
 * Faults that are a task's verdict on the instance itself (it was never made, or is half destroyed), not on
 * its agent: the health monitor never clears them, whatever the agent says (a restart or delete does).
 */
export const VERDICT_FAULTS = ['create failed: ', 'delete failed: '];

/** Agent failures become 422s with the agent's message: the request was valid, the instance refused it. */
export async function agentCall<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    const status = (err as { status?: unknown }).status;
    if (status === 404) throw notFound(describeError(err));
    if (status === 400) throw badRequest(describeError(err));
    if (status === 507) throw unprocessable(`${describeError(err)} (grow the volume with resize volume)`);
    if (typeof status === 'number' && status >= 400 && status < 500) throw new ServiceError(status === 409 ? 409 : 422, status === 409 ? 'conflictingRequest' : 'unprocessableEntity', describeError(err));
    // An agent that does not answer, or whose CouchDB does not: the service is unavailable, not broken.
    if (status === 503 || status === 502) throw new ServiceError(503, 'serviceUnavailable', describeError(err));
    throw err;
  }
}

