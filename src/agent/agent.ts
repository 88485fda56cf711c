// The agent: manages one Apache CouchDB 3.x beside it (lifecycle, databases, users, root,
// configuration overrides, backup, restore). Implements the AgentApi contract of protocol.ts; the
// RPC server (server.ts) exposes it to the control plane.
//
// Files. In the agent's own directory: agent-state.json (settings and lifecycle state, no secret).
// In settings.instanceDir: etc/local.ini (the last file of CouchDB's ini chain, 0600), vm.args
// (0600), admin.secret (the agent's generated admin password, 0600, the only copy), log/couchdb.log.
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, invalid } from './errors.js';
import { CouchClient, CouchUnreachableError, type Credentials, type ShardMapDoc } from './couchdb.js';
import { CouchManager, generatePassword } from './manage.js';
import { enforceQuota, type QuotaState } from './quota.js';
import { IniFile } from './ini.js';
import { parseOverrides, type ParsedOverride } from './config-keys.js';
import { checkPortFree, CouchProcess, reasonFromLog, stopEpmd } from './process.js';
import { AGENT_ADMIN, checkBackupId, checkSettings, checkStorageUrl } from './validate.js';
import type { AccessRole, AgentApi, AgentBackupRequest, AgentOpsApi, ConfigurationResult, DataStats, InstanceSettings, InstanceStatus, LogFileInfo, NewUser, UserInfo } from './protocol.js';
import { LOG_KEEP, LOG_MAX_BYTES, maskSecrets, rotateIfLarge, rotatedBytes, tailFile } from './logs.js';
import type { AgentArchiveApi, ArchiveSettings, ArchiveStatus, DatabaseRestoreRequest, DatabaseRestoreResult } from './protocol.js';
import * as net from 'node:net';
import { Archiver } from './archiver.js';
import { cutMetadata, findCut, restoreToTime } from '../backup/archive.js';
import type { AgentReplicationApi, FollowPrimaryRequest, ReplicationCredentials, ReplicationStatus, ReplicationSyncResult } from './protocol.js';
import { fileStore, ReplicationManager, ReplicationMemory } from './replication.js';
import { CODECS } from '../config/option.js';
import { BackupNotFoundError, createBackup, readBackupMetadata, restoreBackup, type BackupSummary, type CouchdbMetadata, type Progress } from '../backup/index.js';
import { openStorage, StorageError, type Backend } from '../storage/index.js';
import { KEY_ID, readKeyFile, type KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError, describeError } from '../util/errors.js';
import { chownTree } from '../util/fs.js';

export interface AgentOptions {
  /** How long CouchDB may take to answer /_up after a start (default 120 s). */
  startTimeoutMs?: number;
  /** How long a graceful stop may take before SIGKILL (default 60 s). */
  stopTimeoutMs?: number;
  /** One line per lifecycle event; never given a secret. */
  log?: (line: string) => void;
  /** Cap of each log file before it is rotated (default 10 MiB), and rotated files kept (default 3). */
  logMaxBytes?: number;
  logKeep?: number;
}

interface PersistedState {
  version: 1;
  settings: InstanceSettings;
  uuid: string;
  /** What the operator asked for last. */
  desired: 'RUNNING' | 'SHUTDOWN';
  /** Sticky failure (start or prepare failed); cleared by a successful start or prepare. */
  failure: string | null;
  /** A restore did not complete: the data is not what was asked for; only prepare clears it. */
  restoreFailed: boolean;
  /** prepare was under way when the agent stopped. */
  building: boolean;
  /** Overrides written to local.ini while CouchDB ran: applied at the next restart. */
  pendingRestart: string[];
  pid: number | null;
  logOffset: number;
  /** Continuous archiving, as last switched (kept across agent restarts). */
  archive?: ArchiveSettings;
}

const STATE_FILE = 'agent-state.json';

export function instanceFiles(s: InstanceSettings) {
  return {
    etcDir: path.join(s.instanceDir, 'etc'),
    localIni: path.join(s.instanceDir, 'etc', 'local.ini'),
    vmArgs: path.join(s.instanceDir, 'vm.args'),
    secret: path.join(s.instanceDir, 'admin.secret'),
    log: path.join(s.instanceDir, 'log', 'couchdb.log'),
    smoosh: path.join(s.instanceDir, 'smoosh'),
    /** CouchDB's HOME: holds the Erlang cookie (.erlang.cookie, 0400), which never goes on a command line. */
    home: path.join(s.instanceDir, 'home'),
    cookie: path.join(s.instanceDir, 'home', '.erlang.cookie'),
  };
}

/** The URL the agent uses to reach its CouchDB (loopback when CouchDB listens on every address). */
export function couchUrl(s: InstanceSettings): string {
  const host = s.bindAddress === 'any' || s.bindAddress === '0.0.0.0' ? '127.0.0.1' : s.bindAddress === '::' ? '::1' : s.bindAddress;
  return `http://${host.includes(':') ? `[${host}]` : host}:${s.port}`;
}

async function freeLoopbackPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Writes a file readable by its owner only, atomically (temp file, fsync, rename). */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  const h = await fsp.open(tmp, 'wx', 0o600);
  try {
    await h.writeFile(content);
    await h.sync();
  } finally {
    await h.close();
  }
  await fsp.chmod(tmp, 0o600);
  await fsp.rename(tmp, file);
}

/**
 * The settings the agent owns in local.ini, whatever a server admin changed over HTTP
 * (/_node/_local/_config lets one change them all at run time: couchdb-3.md): where the data is, where
 * CouchDB listens, where it logs. Values null are removed.
 */
export function managedSettings(s: InstanceSettings, uuid: string): Array<{ section: string; key: string; value: string | null }> {
  const f = instanceFiles(s);
  return [
    { section: 'couchdb', key: 'database_dir', value: s.dataDir },
    { section: 'couchdb', key: 'view_index_dir', value: s.dataDir },
    { section: 'couchdb', key: 'uuid', value: uuid },
    { section: 'couchdb', key: 'single_node', value: 'true' },
    { section: 'couchdb', key: 'uri_file', value: null },
    { section: 'chttpd', key: 'port', value: String(s.port) },
    { section: 'chttpd', key: 'bind_address', value: s.bindAddress },
    { section: 'httpd', key: 'bind_address', value: null },
    { section: 'httpd', key: 'port', value: null },
    { section: 'prometheus', key: 'additional_port', value: null },
    { section: 'prometheus', key: 'bind_address', value: null },
    { section: 'prometheus', key: 'port', value: null },
    { section: 'cluster', key: 'n', value: '1' },
    { section: 'smoosh', key: 'state_dir', value: f.smoosh },
    { section: 'log', key: 'writer', value: 'stderr' },
    { section: 'log', key: 'file', value: null },
  ];
}

/** Sets every managed setting in ini; returns the 'section/key' names whose value was different. */
export function assertManaged(ini: IniFile, s: InstanceSettings, uuid: string): string[] {
  const changed: string[] = [];
  for (const m of managedSettings(s, uuid)) {
    if ((ini.get(m.section, m.key) ?? null) === m.value) continue;
    if (m.value === null) ini.delete(m.section, m.key);
    else ini.set(m.section, m.key, m.value);
    changed.push(`${m.section}/${m.key}`);
  }
  return changed;
}

export function renderLocalIni(s: InstanceSettings, uuid: string, admin: Credentials, overrides: ParsedOverride[]): string {
  const ini = IniFile.parse(
    [
      `; Written by the couchtrove agent for instance ${s.instanceId}: the last file of this instance's`,
      '; COUCHDB_INI_FILES. CouchDB writes runtime configuration changes here and replaces plain-text',
      '; admin passwords by hashes on start. Keep this file mode 0600.',
      '',
    ].join('\n'),
  );
  assertManaged(ini, s, uuid);
  ini.set('admins', admin.username, admin.password);
  for (const o of overrides) if (o.value !== null) ini.set(o.section, o.key, o.value);
  return ini.toString();
}

export function renderVmArgs(s: InstanceSettings): string {
  const lines = [
    `# Written by the couchtrove agent for instance ${s.instanceId} (COUCHDB_ARGS_FILE). No cookie here:`,
    '# CouchDB\'s launcher puts these arguments on the command line; Erlang reads $HOME/.erlang.cookie.',
    `-name ${s.nodeName}`,
    '-kernel error_logger silent',
    '-sasl sasl_error_logger false',
    '# Erlang distribution on loopback only.',
    '-kernel inet_dist_use_interface {127,0,0,1}',
    '+K true',
    '+A 16',
    '+Bd -noinput',
  ];
  if (s.flavor) lines.push(`+S ${s.flavor.vcpus}:${s.flavor.vcpus}`);
  return `${lines.join('\n')}\n`;
}

/** A new random Erlang cookie in CouchDB's HOME, readable by its owner only (0400). */
async function writeCookie(f: ReturnType<typeof instanceFiles>): Promise<void> {
  await fsp.mkdir(f.home, { recursive: true, mode: 0o700 });
  await fsp.rm(f.cookie, { force: true });
  await writePrivateFile(f.cookie, randomBytes(24).toString('hex'));
  await fsp.chmod(f.cookie, 0o400);
}

async function checkWritableDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
    const probe = path.join(dir, `.couchtrove-probe-${randomBytes(4).toString('hex')}`);
    await fsp.writeFile(probe, '');
    await fsp.unlink(probe);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    throw new AgentError('INVALID_ARGUMENT', `data directory ${dir} is not writable${code ? ` (${code})` : ''}: ${describeError(err)}`);
  }
}

async function usedBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await fsp.lstat(p).catch(() => null);
        if (st) total += st.blocks * 512;
      }
    }
  };
  await walk(dir);
  return total;
}

interface OpenRestore {
  storage: Backend;
  key?: KeyMaterial;
  meta: CouchdbMetadata | null;
  /** Point in time: the archive cut chosen. */
  cut?: string;
}

export class Agent implements AgentApi, AgentReplicationApi, AgentOpsApi, AgentArchiveApi {
  #state: PersistedState | null = null;
  #proc: CouchProcess | null = null;
  #busy: string | null = null;
  #progress: Progress | null = null;
  #admin: Credentials | null = null;
  #manager: CouchManager | null = null;
  #version: string | undefined;
  #configLock: Promise<unknown> = Promise.resolve();
  /** Set by the supervisor while CouchDB is down and a restart is due. */
  #restartNote: string | null = null;
  readonly #replMemory = new ReplicationMemory();
  #archiver: Archiver | null = null;
  readonly #startTimeoutMs: number;
  readonly #stopTimeoutMs: number;
  readonly #log: (line: string) => void;
  readonly #logMaxBytes: number;
  readonly #logKeep: number;

  private constructor(
    readonly agentDir: string,
    options: AgentOptions,
  ) {
    this.#startTimeoutMs = options.startTimeoutMs ?? 120_000;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 60_000;
    this.#log = options.log ?? (() => undefined);
    this.#logMaxBytes = options.logMaxBytes ?? LOG_MAX_BYTES;
    this.#logKeep = options.logKeep ?? LOG_KEEP;
  }

  /** The instance's id, once prepared (for the log). */
  get instanceId(): string | undefined {
    return this.#state?.settings.instanceId;
  }

  /** Opens the agent's directory; adopts a CouchDB an earlier agent process left running. */
  static async open(agentDir: string, options: AgentOptions = {}): Promise<Agent> {
    const dir = path.resolve(agentDir);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const agent = new Agent(dir, options);
    await agent.#load();
    return agent;
  }

  async #load(): Promise<void> {
    let text: string;
    try {
      text = await fsp.readFile(path.join(this.agentDir, STATE_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const st = JSON.parse(text) as PersistedState;
    this.#state = st;
    if (st.pid) this.#proc = CouchProcess.adopt(st.pid, st.logOffset);
    await this.#loadSecret().catch(() => undefined);
    if (st.building) {
      // An agent that died during prepare leaves an instance nobody can vouch for.
      st.building = false;
      st.failure = 'the agent stopped while preparing the instance; prepare it again';
      if (st.settings.restore) st.restoreFailed = true;
      await this.#persist();
    }
  }

  async #loadSecret(): Promise<void> {
    const s = this.#requireState().settings;
    const c = JSON.parse(await fsp.readFile(instanceFiles(s).secret, 'utf8')) as Credentials;
    this.#admin = { username: c.username, password: c.password };
    this.#manager = null;
  }

  async #persist(): Promise<void> {
    if (this.#state) await writePrivateFile(path.join(this.agentDir, STATE_FILE), `${JSON.stringify(this.#state, null, 2)}\n`);
  }

  #requireState(): PersistedState {
    if (!this.#state) throw new AgentError('CONFLICT', 'the instance has not been prepared');
    return this.#state;
  }

  /** One lifecycle operation at a time; a second one is refused while the first runs. */
  async #exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.#busy) throw new AgentError('CONFLICT', `the agent is busy (${this.#busy}); try again when it has finished`);
    this.#busy = name;
    try {
      return await fn();
    } finally {
      this.#busy = null;
    }
  }

  #client(timeoutMs?: number): CouchClient {
    const st = this.#requireState();
    return new CouchClient(couchUrl(st.settings), this.#admin ?? undefined, timeoutMs);
  }

  /** For operations that need a usable CouchDB. */
  #requireUsable(): PersistedState {
    const st = this.#requireState();
    if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance is FAILED: ${st.failure ?? 'restore did not complete'}`);
    if (this.#busy === 'prepare') throw new AgentError('CONFLICT', 'the instance is being prepared');
    if (!this.#admin) throw new AgentError('CONFLICT', 'the instance has no admin credentials; prepare it again');
    return st;
  }

  #mgr(): CouchManager {
    this.#requireUsable();
    return this.#managerNoCheck();
  }

  #managerNoCheck(): CouchManager {
    if (!this.#manager) this.#manager = new CouchManager(this.#client(), { beforeGrowth: () => this.#checkQuota() });
    return this.#manager;
  }

  async #checkQuota(): Promise<void> {
    const st = this.#requireState();
    const quota = st.settings.volumeBytes;
    if (quota === undefined) return;
    const used = await usedBytes(st.settings.dataDir);
    if (used >= quota) throw new AgentError('VOLUME_FULL', `the volume is full: ${used} of ${quota} bytes used`);
  }

  // --- lifecycle ----------------------------------------------------------------------------

  async prepare(input: InstanceSettings): Promise<InstanceStatus> {
    const s = checkSettings(input);
    const overrides = parseOverrides(s.overrides ?? {}, true);
    await this.#exclusive('prepare', async () => {
      await fsp.access(path.join(s.couchdbHome, 'bin', 'couchdb'), fs.constants.X_OK).catch(() => {
        throw invalid(`couchdbHome ${s.couchdbHome} has no executable bin/couchdb (it must be an Apache CouchDB release directory)`);
      });
      // Everything a restore needs is checked before anything changes.
      let restore: OpenRestore | null = null;
      if (s.restore) restore = await this.#openRestore(s.restore);
      const previous = this.#state;
      try {
        if (this.#proc?.running) await this.#stopProcess();
        const st: PersistedState = {
          version: 1,
          settings: s,
          uuid: previous?.uuid ?? randomUUID().replaceAll('-', ''),
          desired: 'RUNNING',
          failure: null,
          restoreFailed: false,
          building: true,
          pendingRestart: [],
          pid: null,
          logOffset: 0,
          ...(previous?.archive ? { archive: previous.archive } : {}),
        };
        this.#state = st;
        this.#manager = null;
        await this.#persist();
        try {
          await this.#build(st, overrides, restore, previous !== null);
          st.building = false;
          await this.#persist();
          this.#log(`instance ${s.instanceId} prepared${s.restore ? ` from backup ${s.restore.backupId}` : ''}`);
        } catch (err) {
          const reason = describeError(err);
          st.building = false;
          st.failure = s.restore ? `restore of backup ${s.restore.backupId} did not complete: ${reason}` : reason;
          st.restoreFailed = s.restore !== undefined;
          if (this.#proc?.running) await this.#stopProcess().catch(() => undefined);
          await this.#persist();
          this.#log(`instance ${s.instanceId} FAILED: ${st.failure}`);
        }
      } finally {
        await restore?.storage.close().catch(() => undefined);
      }
    });
    return this.status();
  }

  async #openRestore(r: NonNullable<InstanceSettings['restore']>): Promise<OpenRestore> {
    let storage: Backend;
    try {
      storage = await openStorage(r.storage);
    } catch (err) {
      throw invalid(`cannot open backup storage: ${describeError(err)}`);
    }
    try {
      const key = r.keyFile ? await readKeyFile(r.keyFile).catch((err: unknown) => Promise.reject(invalid(describeError(err)))) : undefined;
      if (r.time !== undefined && r.stream !== undefined) {
        // Point in time: the cut is chosen now, so that a time outside the window is refused before anything changes.
        const cut = await findCut(storage, r.stream, Date.parse(r.time)).catch((err: unknown) => Promise.reject(invalid(describeError(err))));
        return { storage, key, meta: await cutMetadata(storage, r.stream, cut.id, key), cut: cut.id };
      }
      const { couchdb } = await readBackupMetadata(storage, r.backupId, key).catch((err: unknown) => {
        if (err instanceof BackupNotFoundError) throw new AgentError('NOT_FOUND', `backup ${r.backupId} not found in ${storage.location}`);
        throw invalid(`cannot read backup ${r.backupId}: ${describeError(err)}`);
      });
      return { storage, key, meta: couchdb };
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  }

  async #build(st: PersistedState, overrides: ParsedOverride[], restore: OpenRestore | null, replacing: boolean): Promise<void> {
    const s = st.settings;
    const f = instanceFiles(s);
    await fsp.mkdir(s.instanceDir, { recursive: true, mode: 0o700 });
    await checkWritableDir(s.dataDir);

    const admin: Credentials = { username: AGENT_ADMIN, password: generatePassword() };
    await writePrivateFile(f.secret, `${JSON.stringify(admin)}\n`);
    this.#admin = admin;
    this.#manager = null;
    await fsp.mkdir(f.smoosh, { recursive: true, mode: 0o700 });
    // The plain password is in local.ini (0600) only until CouchDB's first start replaces it by a hash.
    await writePrivateFile(f.localIni, renderLocalIni(s, st.uuid, admin, overrides));
    await writePrivateFile(f.vmArgs, renderVmArgs(s));
    await writeCookie(f);
    await this.#ownFiles(s);

    if (restore && s.restore) {
      this.#progress = { phase: 'restore', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
      try {
        const pitr = restore.cut !== undefined && s.restore.stream !== undefined && s.restore.time !== undefined;
        const restored = await (pitr ? restoreToTime : restoreBackup)({
          storage: restore.storage,
          id: s.restore.backupId,
          stream: s.restore.stream ?? '',
          time: Date.parse(s.restore.time ?? ''),
          dataDir: s.dataDir,
          key: restore.key,
          owner: s.runAs ? `${s.runAs.uid}:${s.runAs.gid}` : `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`,
          // A data directory with something in it is refused on a first prepare (wrong volume?);
          // preparing again with a backup asks for the data to be replaced (only once the restore succeeded).
          force: replacing,
          progress: (p) => (this.#progress = p),
        });
        for (const dir of restored.removedStaging) this.#log(`removed ${dir}, left in the data directory by an interrupted restore`);
        if (restore.cut) this.#log(`restored archive ${s.restore.stream} as of cut ${restore.cut} (restore time ${s.restore.time})`);
      } finally {
        this.#progress = null;
      }
      // Another node name: CouchDB must not meet the old node's membership (couchdb-3.md).
      if (restore.meta?.node && restore.meta.node !== s.nodeName) await fsp.rm(path.join(s.dataDir, '_nodes.couch'), { force: true });
    }

    const failure = await this.#startProcess(st);
    if (failure) throw new CouchtroveError(failure);
    const ctx = await this.#client().session();
    if (!ctx.roles.includes('_admin')) throw new CouchtroveError('the generated admin is not a server admin: admin party was not ended');
    // Restored databases of another node open only once their shard maps name this node.
    const renamed = Boolean(restore?.meta?.node && restore.meta.node !== s.nodeName);
    if (renamed) await this.#renameNode(restore!.meta!.node, s.nodeName);
    await this.#managerNoCheck().ensureSystemDatabases();
    if (restore?.meta) await this.#verifyRestore(restore.meta, renamed);
  }

  /** The rename procedure of couchdb-3.md: every shard map and the node list name the new node. */
  async #renameNode(oldNode: string, newNode: string): Promise<void> {
    const couch = this.#client();
    const swap = (n: unknown) => (n === oldNode ? newNode : n);
    for (const doc of await couch.nodeLocalDocs<ShardMapDoc>('_dbs')) {
      if (!JSON.stringify(doc).includes(JSON.stringify(oldNode))) continue;
      const next: ShardMapDoc = { ...doc };
      if (doc.by_node) next.by_node = Object.fromEntries(Object.entries(doc.by_node).map(([k, v]) => [swap(k) as string, v]));
      if (doc.by_range) next.by_range = Object.fromEntries(Object.entries(doc.by_range).map(([k, v]) => [k, v.map((n) => swap(n) as string)]));
      if (Array.isArray(doc.changelog)) next.changelog = doc.changelog.map((e) => (Array.isArray(e) ? e.map(swap) : e));
      await couch.putNodeLocalDoc('_dbs', next);
    }
    await couch.deleteNodeLocalDoc('_nodes', oldNode);
    this.#log(`shard maps moved from node ${oldNode} to ${newNode}`);
  }

  /** Every database recorded in the backup opens with at least its recorded document count. */
  async #verifyRestore(meta: CouchdbMetadata, renamed: boolean): Promise<void> {
    const couch = this.#client();
    // Errors (a shard still opening) may pass; after a rename CouchDB may also take a moment to see
    // the new shard maps. A database missing or short of documents otherwise stays so.
    const start = Date.now();
    let problems: string[] = [];
    for (;;) {
      problems = [];
      let errors = false;
      for (const db of meta.databases) {
        try {
          const info = await couch.dbInfo(db.name);
          if (!info) problems.push(`${db.name}: missing`);
          else if (info.doc_count < db.docCount) problems.push(`${db.name}: ${info.doc_count} documents, the backup recorded ${db.docCount}`);
        } catch (err) {
          errors = true;
          problems.push(`${db.name}: ${describeError(err)}`);
        }
      }
      const waited = Date.now() - start;
      if (problems.length === 0 || !((errors && waited < 30_000) || (renamed && waited < 10_000))) break;
      await sleep(500);
    }
    if (problems.length) {
      const shown = problems.slice(0, 5).join('; ');
      throw new CouchtroveError(`${problems.length} of ${meta.databases.length} databases did not come back: ${shown}${problems.length > 5 ? '; ...' : ''}`);
    }
  }

  /**
   * With runAs, what CouchDB reads and writes belongs to the instance's identity and to nobody else:
   * its data, local.ini (CouchDB writes runtime changes there), vm.args, smoosh state and HOME with the
   * cookie. The instance directory itself stays the agent's, searchable only, so admin.secret, the
   * agent's state and the log stay out of CouchDB's reach.
   */
  async #ownFiles(s: InstanceSettings): Promise<void> {
    if (!s.runAs) return;
    const { uid, gid } = s.runAs;
    const f = instanceFiles(s);
    await fsp.chmod(s.instanceDir, 0o711);
    for (const p of [f.etcDir, f.localIni, f.vmArgs, f.smoosh, f.home, f.cookie]) await fsp.chown(p, uid, gid);
    await chownTree(s.dataDir, uid, gid);
    await fsp.chmod(s.dataDir, 0o700);
  }

  /**
   * Before every start: the settings the agent manages go back to its values in local.ini (a server
   * admin may have changed them over HTTP), and what was reset is logged.
   */
  async #reassert(st: PersistedState): Promise<void> {
    const s = st.settings;
    const f = instanceFiles(s);
    const ini = IniFile.parse(await fsp.readFile(f.localIni, 'utf8'));
    const reset = assertManaged(ini, s, st.uuid);
    if (this.#admin && ini.get('admins', this.#admin.username) === undefined) {
      ini.set('admins', this.#admin.username, this.#admin.password);
      reset.push(`admins/${this.#admin.username}`);
    }
    // vm.args and the cookie are the agent's alone; an instance prepared by an older agent had its cookie in vm.args.
    const vmArgs = renderVmArgs(s);
    const files = reset.length > 0 || (await fsp.readFile(f.vmArgs, 'utf8').catch(() => '')) !== vmArgs || !fs.existsSync(f.cookie);
    if (!files) return;
    await writePrivateFile(f.localIni, ini.toString());
    await writePrivateFile(f.vmArgs, vmArgs);
    if (!fs.existsSync(f.cookie)) await writeCookie(f);
    await this.#ownFiles(s);
    if (reset.length > 0) this.#log(`settings changed over HTTP reset to the agent's before start: ${reset.join(', ')}`);
  }

  /** Starts CouchDB and waits for /_up; returns the failure reason, or null when it runs. */
  async #startProcess(st: PersistedState): Promise<string | null> {
    const s = st.settings;
    const f = instanceFiles(s);
    try {
      await this.#reassert(st);
    } catch (err) {
      return `cannot check ${f.localIni}: ${describeError(err)}`;
    }
    try {
      await checkPortFree(s.bindAddress, s.port);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'EADDRINUSE' ? `cannot start CouchDB: port ${s.port} on ${s.bindAddress} is already in use (EADDRINUSE)` : `cannot start CouchDB: cannot listen on ${s.bindAddress}:${s.port}: ${describeError(err)}`;
    }
    const defaultIni = path.join(s.couchdbHome, 'etc', 'default.ini');
    const iniFiles = [...(fs.existsSync(defaultIni) ? [defaultIni] : []), f.localIni];
    let proc: CouchProcess;
    try {
      proc = await CouchProcess.launch({ couchdbHome: s.couchdbHome, iniFiles, argsFile: f.vmArgs, epmdPort: s.epmdPort, logFile: f.log, home: f.home, ...(s.runAs ? { runAs: s.runAs } : {}) });
    } catch (err) {
      return `cannot start CouchDB: ${describeError(err)}`;
    }
    this.#proc = proc;
    st.pid = proc.pid;
    st.logOffset = proc.logOffset;
    await this.#persist();
    const secrets = this.#admin ? [this.#admin.password] : [];
    const anon = new CouchClient(couchUrl(s));
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (!proc.running) {
        const exit = proc.exitInfo();
        st.pid = null;
        return `CouchDB exited during start (${exit?.signal ? `signal ${exit.signal}` : `code ${exit?.code ?? '?'}`}): ${await reasonFromLog(f.log, proc.logOffset, secrets)}`;
      }
      if (await anon.up(1000)) break;
      if (Date.now() > deadline) {
        await proc.stop(5000);
        st.pid = null;
        return `CouchDB did not answer /_up within ${Math.round(this.#startTimeoutMs / 1000)} s: ${await reasonFromLog(f.log, proc.logOffset, secrets)}`;
      }
      await sleep(100);
    }
    // The server answering must be this instance's (same uuid), not another one on the port.
    try {
      const info = await this.#client().info();
      this.#version = info.version;
      if (info.uuid !== undefined && info.uuid !== st.uuid) {
        await proc.stop(this.#stopTimeoutMs);
        st.pid = null;
        return `another CouchDB (uuid ${info.uuid}) answers on ${couchUrl(s)}`;
      }
    } catch (err) {
      await proc.stop(this.#stopTimeoutMs);
      st.pid = null;
      return `CouchDB started but does not accept the agent's admin: ${describeError(err)}`;
    }
    this.#log(`CouchDB started (pid ${proc.pid}) on ${couchUrl(s)}`);
    return null;
  }

  async #stopProcess(): Promise<void> {
    const st = this.#state;
    const proc = this.#proc;
    if (proc?.running) {
      const { forced } = await proc.stop(this.#stopTimeoutMs);
      this.#log(forced ? `CouchDB (pid ${proc.pid}) did not stop within ${this.#stopTimeoutMs} ms: killed` : `CouchDB (pid ${proc.pid}) stopped`);
    }
    this.#proc = null;
    if (st) {
      await stopEpmd(st.settings.couchdbHome, st.settings.epmdPort);
      st.pid = null;
    }
  }

  async start(): Promise<InstanceStatus> {
    await this.#exclusive('start', async () => {
      const st = this.#requireState();
      if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance cannot start: ${st.failure ?? 'its restore did not complete'}; prepare it again`);
      if (st.building) throw new AgentError('CONFLICT', 'the instance is being prepared');
      st.desired = 'RUNNING';
      if (!(this.#proc?.running && (await this.#client().up()))) {
        if (this.#proc?.running) await this.#stopProcess();
        const failure = await this.#startProcess(st);
        st.failure = failure;
        if (!failure) st.pendingRestart = [];
      }
      await this.#persist();
    });
    return this.status();
  }

  async stop(): Promise<InstanceStatus> {
    await this.#exclusive('stop', async () => {
      const st = this.#requireState();
      st.desired = 'SHUTDOWN';
      await this.#stopProcess();
      if (!st.restoreFailed) st.failure = null;
      await this.#persist();
    });
    return this.status();
  }

  async restart(): Promise<InstanceStatus> {
    await this.#exclusive('restart', async () => {
      const st = this.#requireState();
      if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance cannot start: ${st.failure ?? 'its restore did not complete'}; prepare it again`);
      await this.#stopProcess();
      st.desired = 'RUNNING';
      const failure = await this.#startProcess(st);
      st.failure = failure;
      if (!failure) st.pendingRestart = [];
      await this.#persist();
    });
    return this.status();
  }

  async status(): Promise<InstanceStatus> {
    const st = this.#state;
    if (!st) return { state: 'BUILD', reason: 'waiting for prepare' };
    if (st.building) return { state: 'BUILD', reason: st.settings.restore ? `restoring backup ${st.settings.restore.backupId}` : 'preparing' };
    if (st.failure) return { state: 'FAILED', reason: st.failure };
    if (this.#busy === 'start' || this.#busy === 'restart') return { state: 'BUILD', reason: `${this.#busy}ing` };
    if (st.desired === 'SHUTDOWN') return { state: 'SHUTDOWN' };
    const s = st.settings;
    if (await this.#client().up(2000)) {
      if (!this.#version) this.#version = await this.#client(5000).info().then((i) => i.version, () => undefined);
      const version = this.#version ? { version: this.#version } : {};
      if (st.pendingRestart.length) return { state: 'RESTART_REQUIRED', reason: `configuration waiting for a restart: ${st.pendingRestart.join(', ')}`, pendingRestart: [...st.pendingRestart], ...version };
      return { state: 'RUNNING', ...version };
    }
    const f = instanceFiles(s);
    const secrets = this.#admin ? [this.#admin.password] : [];
    if (!this.#proc || !this.#proc.running) {
      const exit = this.#proc?.exitInfo();
      const how = exit && (exit.code !== null || exit.signal !== null) ? ` (${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`})` : '';
      if (this.#restartNote) return { state: 'FAILED', reason: this.#restartNote };
      return { state: 'FAILED', reason: `CouchDB is not running${how}: ${await reasonFromLog(f.log, st.logOffset, secrets)}` };
    }
    return { state: 'FAILED', reason: `CouchDB (pid ${this.#proc.pid}) does not answer ${couchUrl(s)}/_up` };
  }

  async volumeUsage(): Promise<{ used: number; total: number }> {
    const s = this.#requireState().settings;
    const used = await usedBytes(s.dataDir);
    let total = s.volumeBytes;
    if (total === undefined) {
      const fsStat = await fsp.statfs(s.dataDir);
      total = fsStat.blocks * fsStat.bsize;
    }
    return { used, total };
  }

  // --- databases, users, root ---------------------------------------------------------------

  async listDatabases(): Promise<string[]> {
    return this.#mgr().listDatabases();
  }
  async createDatabase(name: string): Promise<void> {
    return this.#mgr().createDatabase(name);
  }
  async deleteDatabase(name: string): Promise<void> {
    return this.#mgr().deleteDatabase(name);
  }
  async listUsers(): Promise<UserInfo[]> {
    return this.#mgr().listUsers();
  }
  async getUser(name: string): Promise<UserInfo> {
    return this.#mgr().getUser(name);
  }
  async createUser(user: NewUser): Promise<void> {
    return this.#mgr().createUser(user);
  }
  async deleteUser(name: string): Promise<void> {
    return this.#mgr().deleteUser(name);
  }
  async changePassword(name: string, password: string): Promise<void> {
    return this.#mgr().changePassword(name, password);
  }
  async grantAccess(name: string, databases: string[], role?: AccessRole): Promise<void> {
    return this.#mgr().grantAccess(name, databases, role);
  }

  // --- operations: data statistics, logs (docs/operations.md) -------------------------------

  async dataStats(): Promise<DataStats> {
    return this.#mgr().dataStats();
  }

  /** The log files: CouchDB's (once prepared) and the agent's own. */
  #logFiles(): Map<string, string> {
    const m = new Map<string, string>();
    if (this.#state) m.set('couchdb', instanceFiles(this.#state.settings).log);
    m.set('agent', path.join(this.agentDir, 'agent.log'));
    return m;
  }

  async logs(): Promise<LogFileInfo[]> {
    const out: LogFileInfo[] = [];
    for (const [name, file] of this.#logFiles()) {
      const size = await fsp.stat(file).then((x) => x.size, () => 0);
      out.push({ name, size, rotatedBytes: await rotatedBytes(file, this.#logKeep), maxBytes: this.#logMaxBytes, keep: this.#logKeep });
    }
    return out;
  }

  async readLog(name: string, lines: number): Promise<{ name: string; text: string; lines: number }> {
    const file = this.#logFiles().get(name);
    if (!file) throw new AgentError('NOT_FOUND', `no log ${JSON.stringify(String(name).slice(0, 40))}: the logs are ${[...this.#logFiles().keys()].join(', ')}`);
    if (!Number.isInteger(lines) || lines < 0 || lines > 100_000) throw invalid('lines must be 0 to 100000');
    // CouchDB logs request lines, never passwords; the agent's admin password is masked all the same.
    const text = maskSecrets(await tailFile(file, lines), this.#admin ? [this.#admin.password] : []);
    return { name, text, lines: text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0) };
  }

  /** Rotates every log file that reached its cap (see ./logs.ts); returns the names rotated. */
  async rotateLogs(): Promise<string[]> {
    const done: string[] = [];
    for (const [name, file] of this.#logFiles()) if (await rotateIfLarge(file, this.#logMaxBytes, this.#logKeep)) done.push(name);
    return done;
  }

  /** For `agent serve`: checks the logs' sizes every intervalMs. */
  startLogRotation(intervalMs = 30_000): () => void {
    return this.#every(intervalMs, 'log rotation', async () => {
      for (const n of await this.rotateLogs()) this.#log(`rotated the ${n} log (cap ${this.#logMaxBytes} bytes, ${this.#logKeep} kept)`);
    });
  }

  /** Runs fn every intervalMs, never two at once; a failure is logged. Returns the stop function. */
  #every(intervalMs: number, what: string, fn: () => Promise<unknown>): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      fn()
        .catch((err: unknown) => this.#log(`${what} failed: ${describeError(err)}`))
        .finally(() => (running = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  async revokeAccess(name: string, database: string): Promise<void> {
    return this.#mgr().revokeAccess(name, database);
  }
  async enableRoot(password?: string): Promise<{ name: 'root'; password: string }> {
    return this.#withConfigLock(() => this.#mgr().enableRoot(password));
  }
  async isRootEnabled(): Promise<boolean> {
    return this.#mgr().isRootEnabled();
  }
  async disableRoot(): Promise<void> {
    return this.#withConfigLock(() => this.#mgr().disableRoot());
  }

  // --- configuration ------------------------------------------------------------------------

  /** CouchDB and the agent both write local.ini: one change at a time. */
  #withConfigLock<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#configLock.then(fn, fn);
    this.#configLock = next.catch(() => undefined);
    return next;
  }

  async applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult> {
    const parsed = parseOverrides(overrides, false, true);
    const st = this.#requireUsable();
    return this.#withConfigLock(async () => {
      const couch = this.#client();
      const running = this.#proc?.running === true && (await couch.up());
      const applied: string[] = [];
      const pending: ParsedOverride[] = [];
      const undo: { o: ParsedOverride; previous: string | null }[] = [];
      try {
        for (const o of parsed) {
          if (o.kind === 'live' && running) {
            // A reset deletes the key (CouchDB also drops it from local.ini): CouchDB's default applies again.
            const previous = o.value === null ? await couch.getConfig(o.section, o.key) : await couch.putConfig(o.section, o.key, o.value);
            if (o.value === null) await couch.deleteConfig(o.section, o.key);
            undo.push({ o, previous });
            applied.push(`${o.section}/${o.key}`);
          } else pending.push(o);
        }
        if (pending.length) {
          const file = instanceFiles(st.settings).localIni;
          const ini = IniFile.parse(await fsp.readFile(file, 'utf8'));
          for (const o of pending) {
            if (o.value === null) ini.delete(o.section, o.key);
            else ini.set(o.section, o.key, o.value);
          }
          await writePrivateFile(file, ini.toString());
        }
      } catch (err) {
        for (const { o, previous } of undo.reverse()) {
          await (previous === null || previous === '' ? couch.deleteConfig(o.section, o.key) : couch.putConfig(o.section, o.key, previous)).catch(() => undefined);
        }
        throw err;
      }
      const pendingKeys = pending.map((o) => `${o.section}/${o.key}`);
      const next = { ...st.settings.overrides };
      for (const o of parsed) {
        if (o.value === null) delete next[`${o.section}/${o.key}`];
        else next[`${o.section}/${o.key}`] = o.value;
      }
      st.settings.overrides = next;
      if (running) st.pendingRestart = [...new Set([...st.pendingRestart, ...pendingKeys])];
      await this.#persist();
      return { applied, pending: pendingKeys, restartRequired: running && pendingKeys.length > 0 };
    });
  }

  // --- backup -------------------------------------------------------------------------------

  async backup(request: AgentBackupRequest): Promise<BackupSummary & { location: string }> {
    if (!request || typeof request !== 'object') throw invalid('backup request must be {storage, id, keyFile?, compression?, labels?}');
    const storageUrl = checkStorageUrl(request.storage);
    const id = checkBackupId(request.id);
    if (request.compression !== undefined && !(CODECS as readonly string[]).includes(request.compression)) {
      throw invalid(`compression must be one of ${CODECS.join(', ')}, got ${JSON.stringify(request.compression)}`);
    }
    if (request.keyFile !== undefined && (typeof request.keyFile !== 'string' || !path.isAbsolute(request.keyFile))) throw invalid('keyFile must be an absolute path');
    if (request.keyId !== undefined && (typeof request.keyId !== 'string' || !KEY_ID.test(request.keyId))) throw invalid('keyId must be like instance:<id>');
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(request.labels ?? {})) {
      if (typeof v !== 'string') throw invalid(`label ${k} must be a string`);
      labels[k] = v;
    }
    const parent = request.parent === undefined || request.parent === null ? undefined : checkBackupId(request.parent, 'parent backup id');
    const st = this.#requireUsable();
    labels.instanceId ??= st.settings.instanceId;
    return this.#exclusive('backup', async () => {
      if (!(await this.#client().up())) throw new AgentError('NOT_RUNNING', 'CouchDB is not running: a backup needs it to record its databases');
      let storage: Backend;
      try {
        storage = await openStorage(storageUrl);
      } catch (err) {
        throw new AgentError('STORAGE_ERROR', `cannot open backup storage: ${describeError(err)}`);
      }
      this.#progress = { phase: 'backup', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
      try {
        const key = request.keyFile ? await readKeyFile(request.keyFile, request.keyId).catch((err: unknown) => Promise.reject(invalid(describeError(err)))) : undefined;
        const summary = await createBackup({
          dataDir: st.settings.dataDir,
          storage,
          key,
          compression: request.compression,
          configDir: instanceFiles(st.settings).etcDir,
          couchdb: { url: couchUrl(st.settings), username: this.#admin!.username, password: this.#admin!.password },
          id,
          labels,
          ...(parent !== undefined ? { parent } : {}),
          progress: (p) => (this.#progress = p),
        });
        this.#log(`backup ${id} completed: ${summary.files} files, ${summary.size} bytes stored`);
        return { ...summary, location: storage.location };
      } catch (err) {
        if (err instanceof AgentError) throw err;
        const msg = describeError(err);
        if (err instanceof StorageError) throw new AgentError('STORAGE_ERROR', msg);
        if (/already exists/.test(msg)) throw new AgentError('ALREADY_EXISTS', msg);
        if (err instanceof CouchUnreachableError) throw err;
        throw new AgentError('BACKUP_FAILED', `backup ${id} failed: ${msg}`);
      } finally {
        this.#progress = null;
        await storage.close().catch(() => undefined);
      }
    });
  }

  async progress(): Promise<Progress | null> {
    return this.#progress;
  }

  // --- continuous archiving (src/agent/archiver.ts, docs/agent.md) -------------------------------

  #archiverFor(st: PersistedState): Archiver {
    if (!this.#archiver) {
      const s = st.settings;
      this.#archiver = new Archiver(st.archive, {
        dataDir: s.dataDir,
        configDir: instanceFiles(s).etcDir,
        couchdb: () => ({ url: couchUrl(s), username: this.#admin?.username, password: this.#admin?.password }),
        labels: { instanceId: s.instanceId },
        // Never during a prepare (the data directory is being replaced) or while CouchDB is down.
        ready: () => this.#busy !== 'prepare' && this.#state?.building === false && !this.#state.restoreFailed && this.#admin !== null && this.#proc?.running === true,
      }, this.#log);
    }
    return this.#archiver;
  }

  async configureArchive(input: ArchiveSettings): Promise<ArchiveStatus> {
    const st = this.#requireState();
    if (!input || typeof input !== 'object' || typeof input.enabled !== 'boolean') throw invalid('archive settings must be {enabled, storage?, keyFile?, stream?, interval?, keepDays?, rebaseShare?, baseIntervalHours?, compression?}');
    const next: ArchiveSettings = { ...(st.archive ?? {}), ...input };
    next.stream ??= st.settings.instanceId;
    if (next.enabled) {
      next.storage = checkStorageUrl(next.storage);
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(next.stream)) throw invalid(`archive stream must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got ${JSON.stringify(next.stream)}`);
      if (next.keyFile !== undefined && (typeof next.keyFile !== 'string' || !path.isAbsolute(next.keyFile))) throw invalid('keyFile must be an absolute path');
      if (next.keyId !== undefined && (typeof next.keyId !== 'string' || !KEY_ID.test(next.keyId))) throw invalid('keyId must be like instance:<id>');
    }
    const num = (v: unknown, name: string, min: number, max: number) => {
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)) throw invalid(`archive ${name} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
    };
    num(next.interval, 'interval', 1, 3600);
    num(next.keepDays, 'keepDays', 0.0001, 3650);
    num(next.rebaseShare, 'rebaseShare', 0.01, 100);
    num(next.baseIntervalHours, 'baseIntervalHours', 0.01, 24 * 365);
    if (next.compression !== undefined && !(CODECS as readonly string[]).includes(next.compression)) throw invalid(`compression must be one of ${CODECS.join(', ')}`);
    await this.#archiverFor(st).configure(next);
    st.archive = next;
    await this.#persist();
    this.#log(`archiving ${next.enabled ? `on: a cut every ${next.interval ?? 5} s to archive/${next.stream}/ of ${next.storage}` : 'off'}`);
    return this.#archiverFor(st).status();
  }

  async archiveStatus(): Promise<ArchiveStatus> {
    return this.#archiverFor(this.#requireState()).status();
  }

  /**
   * One database back: the backup (or the archive as of a time) is restored into a scratch CouchDB beside
   * this one (its own agent directory, loopback port and epmd, never serving clients), the database is
   * copied into the running CouchDB by CouchDB's own replication (revision histories, conflicts,
   * attachments, design documents; deleted documents as tombstones) and its _security by hand, the
   * document counts are compared, and the scratch instance is stopped and removed. The live instance serves
   * throughout; only `replace` touches the live database of that name (deleted, then copied).
   */
  async restoreDatabase(req: DatabaseRestoreRequest): Promise<DatabaseRestoreResult> {
    const st = this.#requireUsable();
    if (!req || typeof req !== 'object' || typeof req.database !== 'string' || req.database === '') throw invalid('database restore request must be {database, backupId? | time?, as?, replace?}');
    const as = req.as ?? req.database;
    const archive = st.archive;
    const storage = req.storage !== undefined ? checkStorageUrl(req.storage) : archive?.storage;
    if (!storage) throw invalid('no repository: give storage (archiving is not configured on this instance)');
    const keyFile = req.keyFile ?? (req.storage === undefined ? archive?.keyFile : undefined);
    if ((req.backupId === undefined) === (req.time === undefined)) throw invalid('give exactly one of backupId and time');
    const stream = req.stream ?? archive?.stream ?? st.settings.instanceId;
    if (req.time !== undefined && Number.isNaN(Date.parse(req.time))) throw invalid(`time must be an ISO 8601 time, got ${JSON.stringify(req.time)}`);
    const live = this.#client();
    const exists = (await live.dbInfo(as)) !== null;
    if (exists && !req.replace) throw new AgentError('ALREADY_EXISTS', `database ${as} exists in the instance: give another name (as) or replace`);
    await this.#checkQuota();

    const t0 = performance.now();
    const scratchDir = path.join(st.settings.instanceDir, `scratch-${randomUUID().slice(0, 8)}`);
    await fsp.mkdir(path.join(scratchDir, 'data'), { recursive: true, mode: 0o700 });
    if (st.settings.runAs) await chownTree(scratchDir, st.settings.runAs.uid, st.settings.runAs.gid);
    const scratch = await Agent.open(path.join(scratchDir, 'agent'), { startTimeoutMs: this.#startTimeoutMs, stopTimeoutMs: this.#stopTimeoutMs, log: (l) => this.#log(`scratch: ${l}`) });
    try {
      const s = st.settings;
      const restore: NonNullable<InstanceSettings['restore']> = { storage, backupId: req.backupId ?? 'pitr', ...(keyFile ? { keyFile } : {}) };
      if (req.time !== undefined) Object.assign(restore, { stream, time: req.time });
      const prepared = await scratch.prepare({
        instanceId: `${s.instanceId}-scratch`,
        port: await freeLoopbackPort(),
        bindAddress: '127.0.0.1',
        dataDir: path.join(scratchDir, 'data'),
        instanceDir: path.join(scratchDir, 'instance'),
        // The backup's node name: its shard maps open as they are (the scratch has its own epmd).
        nodeName: s.nodeName,
        epmdPort: await freeLoopbackPort(),
        couchdbHome: s.couchdbHome,
        ...(s.runAs ? { runAs: s.runAs } : {}),
        restore,
      });
      if (prepared.state !== 'RUNNING') throw new AgentError('BACKUP_FAILED', `the scratch CouchDB did not start from the backup: ${prepared.reason ?? prepared.state}`);
      const restoreMs = performance.now() - t0;
      const scratchAdmin = JSON.parse(await fsp.readFile(instanceFiles(scratch.#requireState().settings).secret, 'utf8')) as Credentials;
      const scratchUrl = couchUrl(scratch.#requireState().settings);
      const src = new CouchClient(scratchUrl, scratchAdmin, 600_000);
      const info = await src.dbInfo(req.database);
      if (!info) throw new AgentError('NOT_FOUND', `database ${req.database} is not in the backup${req.time ? ` as of ${req.time}` : ''}`);
      const t1 = performance.now();
      if (exists) await live.deleteDb(as);
      const basic = (c: Credentials) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
      // One-shot replication run by the live CouchDB, credentials in headers (never in a URL or a log).
      const r = await new CouchClient(couchUrl(s), this.#admin!, 24 * 3_600_000).raw<{ ok?: boolean; reason?: string; history?: unknown[] }>('POST', '/_replicate', {
        body: {
          source: { url: `${scratchUrl}/${encodeURIComponent(req.database)}`, headers: { Authorization: basic(scratchAdmin) } },
          target: { url: `${couchUrl(s)}/${encodeURIComponent(as)}`, headers: { Authorization: basic(this.#admin!) } },
          create_target: true,
        },
        timeoutMs: 24 * 3_600_000,
      });
      if (r.status !== 200 || !r.body?.ok) throw new AgentError('COUCHDB_ERROR', `copying ${req.database} from the scratch CouchDB failed: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
      await live.putSecurity(as, await src.getSecurity(req.database));
      const copied = await live.dbInfo(as);
      if (!copied || copied.doc_count !== info.doc_count) throw new AgentError('BACKUP_FAILED', `database ${as} holds ${copied?.doc_count ?? 'no'} documents after the copy, the backup ${info.doc_count}`);
      const copyMs = performance.now() - t1;
      this.#log(`database ${req.database} restored as ${as} from ${req.time ? `archive ${stream} at ${req.time}` : `backup ${req.backupId}`}: ${info.doc_count} documents`);
      return { database: req.database, as, from: req.backupId ?? `${stream}@${req.time}`, docCount: info.doc_count, docDelCount: info.doc_del_count ?? 0, restoreMs, copyMs, totalMs: performance.now() - t0 };
    } finally {
      await scratch.stop().catch(() => undefined);
      await fsp.rm(scratchDir, { recursive: true, force: true });
    }
  }

  /** For `agent serve`: runs the archiving loop (it does nothing while archiving is off); returns the stop function. */
  startArchiver(): () => Promise<void> {
    let stopTimer: (() => void) | null = null;
    const wait = setInterval(() => {
      if (!this.#state || stopTimer) return;
      stopTimer = this.#archiverFor(this.#state).start();
      clearInterval(wait);
    }, 200);
    wait.unref();
    return async () => {
      clearInterval(wait);
      stopTimer?.();
      await this.#archiver?.stop();
    };
  }

  // --- replication (src/agent/replication.ts, docs/replication.md) ----------------------------

  #replication(): ReplicationManager {
    const st = this.#requireUsable();
    return new ReplicationManager({
      couch: this.#client(),
      localUrl: couchUrl(st.settings),
      store: fileStore(path.join(st.settings.instanceDir, 'replication.json'), writePrivateFile),
      memory: this.#replMemory,
      log: this.#log,
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
    return this.#every(intervalMs, 'replication sync', async () => {
      if (this.#busy || this.#state?.desired !== 'RUNNING' || !this.#admin) return;
      await this.#replication().sync();
    });
  }

  /**
   * Client writes beyond the volume quota are refused (quota.ts). `agent serve` runs this every few
   * seconds; it does nothing without a quota or while CouchDB is not running.
   */
  async enforceQuota(): Promise<QuotaState | null> {
    const st = this.#state;
    const quota = st?.settings.volumeBytes;
    if (!st || quota === undefined || this.#busy || st.desired !== 'RUNNING' || !this.#admin || !this.#proc?.running) return null;
    const state = await enforceQuota(this.#client(), await usedBytes(st.settings.dataDir), quota);
    if (state.full) this.#log(`volume full: ${state.used} of ${state.quota} bytes used; client writes are refused`);
    return state;
  }

  startQuotaWatch(intervalMs = 10_000): () => void {
    return this.#every(intervalMs, 'volume quota check', () => this.enforceQuota());
  }

  /**
   * For `agent serve`: a CouchDB that exits while it should run is started again, after 1, 2, 4 ... 60 s
   * (the delay resets once it has run for a minute). Each restart is logged with how it exited, and
   * status() says when the next attempt comes.
   */
  startSupervisor(intervalMs = 1000): () => void {
    let attempt = 0;
    let nextAt = 0;
    let upSince = 0;
    let running = false;
    let ownFailure: string | null = null;
    const tick = async (): Promise<void> => {
      const st = this.#state;
      if (!st || st.desired !== 'RUNNING' || st.building || st.restoreFailed || this.#busy || !this.#admin) return;
      // A failure of prepare or of an operator's start is theirs to report; only our own restarts are retried.
      if (st.failure !== null && st.failure !== ownFailure) return;
      if (this.#proc?.running) {
        upSince ||= Date.now();
        if (attempt > 0 && Date.now() - upSince > 60_000) attempt = 0;
        this.#restartNote = null;
        return;
      }
      upSince = 0;
      if (nextAt === 0) {
        const exit = this.#proc?.exitInfo();
        const how = exit?.signal ? `killed by ${exit.signal}` : exit?.code !== undefined && exit.code !== null ? `exited with code ${exit.code}` : 'is not running';
        const delay = Math.min(60_000, 1000 * 2 ** attempt);
        nextAt = Date.now() + delay;
        this.#restartNote = `CouchDB ${how}; the agent starts it again in ${Math.round(delay / 1000)} s (restart ${attempt + 1})`;
        this.#log(this.#restartNote);
        return;
      }
      if (Date.now() < nextAt) return;
      nextAt = 0;
      attempt++;
      await this.#exclusive('start', async () => {
        const failure = await this.#startProcess(st);
        st.failure = ownFailure = failure;
        if (failure) this.#log(`restart ${attempt} of CouchDB failed: ${failure}`);
        else this.#log(`CouchDB is running again after restart ${attempt}`);
        await this.#persist();
      });
    };
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      tick()
        .catch((err: unknown) => this.#log(`supervisor: ${describeError(err)}`))
        .finally(() => (running = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** For tests and `agent serve` shutdown: the pid of the CouchDB this agent runs, if any. */
  get couchdbPid(): number | null {
    return this.#proc?.running ? this.#proc.pid : null;
  }
}
