// The instance's lifecycle: prepare (lay out, optionally restore a backup, start, verify), start, stop,
// restart, status, and the supervisor that starts a CouchDB again when it dies.
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, invalid } from './errors.js';
import { CouchClient, type Credentials, type ShardMapDoc } from './couchdb.js';
import { generatePassword } from './manage.js';
import { instanceFiles, writePrivateFile } from './files.js';
import { parseOverrides, type ParsedOverride } from './config-keys.js';
import { checkPortFree, CouchProcess, reasonFromLog, stopEpmd } from './process.js';
import { AGENT_ADMIN, checkSettings } from './validate.js';
import type { InstanceSettings, InstanceStatus } from './protocol.js';
import { cutMetadata, findCut, restoreToTime } from '../backup/archive.js';
import { BackupNotFoundError, readBackupMetadata, restoreBackup, type CouchdbMetadata } from '../backup/index.js';
import { openStorage, type Backend } from '../storage/index.js';
import { readKeyFile, type KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError, describeError } from '../util/errors.js';
import { AgentCore, checkWritableDir, couchUrl, type PersistedState } from './core.js';
import type { InstanceConfig } from './configuration.js';

interface OpenRestore {
  storage: Backend;
  key?: KeyMaterial;
  meta: CouchdbMetadata | null;
  /** Point in time: the archive cut chosen. */
  cut?: string;
}

export class Lifecycle {
  constructor(
    private readonly c: AgentCore,
    private readonly config: InstanceConfig,
  ) {}

  async prepare(input: InstanceSettings): Promise<InstanceStatus> {
    const s = checkSettings(input);
    const overrides = parseOverrides(s.overrides ?? {}, true);
    await this.c.exclusive('prepare', async () => {
      await fsp.access(path.join(s.couchdbHome, 'bin', 'couchdb'), fs.constants.X_OK).catch(() => {
        throw invalid(`couchdbHome ${s.couchdbHome} has no executable bin/couchdb (it must be an Apache CouchDB release directory)`);
      });
      // Everything a restore needs is checked before anything changes.
      let restore: OpenRestore | null = null;
      if (s.restore) restore = await this.#openRestore(s.restore);
      const previous = this.c.state;
      try {
        if (this.c.proc?.running) await this.stopProcess();
        const st: PersistedState = {
          version: 1,
          settings: s,
          // A cluster member has the cluster's uuid (the same on every member, as CouchDB's cluster setup makes it).
          uuid: s.cluster?.uuid ?? previous?.uuid ?? randomUUID().replaceAll('-', ''),
          desired: 'RUNNING',
          failure: null,
          restoreFailed: false,
          building: true,
          pendingRestart: [],
          pid: null,
          logOffset: 0,
          ...(previous?.archive ? { archive: previous.archive } : {}),
          // A backup taken of a full volume holds its guards: the quota check looks for them once (quota.ts).
          ...(previous?.quotaGuarded || s.restore ? { quotaGuarded: true } : {}),
        };
        this.c.state = st;
        this.c.manager = null;
        await this.c.persist();
        try {
          await this.#build(st, overrides, restore, previous !== null);
          st.building = false;
          await this.c.persist();
          this.c.log(`instance ${s.instanceId} prepared${s.restore ? ` from backup ${s.restore.backupId}` : ''}`);
        } catch (err) {
          const reason = describeError(err);
          st.building = false;
          st.failure = s.restore ? `restore of backup ${s.restore.backupId} did not complete: ${reason}` : reason;
          st.restoreFailed = s.restore !== undefined;
          if (this.c.proc?.running) await this.stopProcess().catch(() => undefined);
          await this.c.persist();
          this.c.log(`instance ${s.instanceId} FAILED: ${st.failure}`);
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
        const cut = await findCut(storage, r.stream, Date.parse(r.time), key).catch((err: unknown) => Promise.reject(invalid(describeError(err))));
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
    this.c.admin = admin;
    this.c.manager = null;
    // A new local.ini: nothing of a previous one is carried over. The plain password is in it only until the
    // first start, when the agent replaces it by CouchDB's hash (#persistAdmin).
    await this.config.writeInstanceFiles(st, null, overrides);
    if (s.runAs) await this.c.privileged.give(s.dataDir, s.runAs, true);

    if (restore && s.restore) {
      this.c.progress = { phase: 'restore', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
      try {
        const pitr = restore.cut !== undefined && s.restore.stream !== undefined && s.restore.time !== undefined;
        const restored = await (pitr ? restoreToTime : restoreBackup)({
          storage: restore.storage,
          id: s.restore.backupId,
          stream: s.restore.stream ?? '',
          time: Date.parse(s.restore.time ?? ''),
          dataDir: s.dataDir,
          key: restore.key,
          ...(s.restore.databases ? { databases: s.restore.databases } : {}),
          // A data directory with something in it is refused on a first prepare (wrong volume?);
          // preparing again with a backup asks for the data to be replaced (only once the restore succeeded).
          force: replacing,
          progress: (p) => (this.c.progress = p),
        });
        for (const dir of restored.removedStaging) this.c.log(`removed ${dir}, left in the data directory by an interrupted restore`);
        if (restore.cut) this.c.log(`restored archive ${s.restore.stream} as of cut ${restore.cut} (restore time ${s.restore.time})`);
      } finally {
        this.c.progress = null;
      }
      // Restored as the agent: now the instance's (CouchDB is not running, nothing of it can race the walk).
      if (s.runAs) await this.c.privileged.give(s.dataDir, s.runAs, true);
      // Another node name: CouchDB must not meet the old node's membership (couchdb-3.md).
      if (restore.meta?.node && restore.meta.node !== s.nodeName) await fsp.rm(path.join(s.dataDir, '_nodes.couch'), { force: true });
    }

    const failure = await this.#startProcess(st);
    if (failure) throw new CouchtroveError(failure);
    const ctx = await this.c.client().session();
    if (!ctx.roles.includes('_admin')) throw new CouchtroveError('the generated admin is not a server admin: admin party was not ended');
    // Restored databases of another node open only once their shard maps name this node.
    const renamed = Boolean(restore?.meta?.node && restore.meta.node !== s.nodeName);
    if (renamed) await this.#renameNode(restore!.meta!.node, s.nodeName);
    // A cluster member's system databases are made through one node once all have joined (the cluster task).
    if (!s.cluster) await this.c.managerNoCheck().ensureSystemDatabases();
    if (restore?.meta) {
      const only = s.restore?.databases;
      await this.#verifyRestore(only ? { ...restore.meta, databases: restore.meta.databases.filter((d) => only.includes(d.name)) } : restore.meta, renamed);
    }
  }

  /** The rename procedure of couchdb-3.md: every shard map and the node list name the new node. */
  async #renameNode(oldNode: string, newNode: string): Promise<void> {
    const couch = this.c.client();
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
    this.c.log(`shard maps moved from node ${oldNode} to ${newNode}`);
  }

  /** Every database recorded in the backup opens with at least its recorded document count. */
  async #verifyRestore(meta: CouchdbMetadata, renamed: boolean): Promise<void> {
    const couch = this.c.client();
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

  /** Starts CouchDB and waits for /_up; returns the failure reason, or null when it runs. */
  async #startProcess(st: PersistedState): Promise<string | null> {
    const s = st.settings;
    const f = instanceFiles(s);
    try {
      await this.config.reassert(st);
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
    this.c.proc = proc;
    this.c.lastAnswer = 0; // a new process has answered nothing yet
    st.pid = proc.pid;
    st.pidStarted = proc.started;
    st.logOffset = proc.logOffset;
    await this.c.persist();
    const secrets = this.c.admin ? [this.c.admin.password] : [];
    const anon = new CouchClient(couchUrl(s));
    const deadline = Date.now() + this.c.startTimeoutMs;
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
        return `CouchDB did not answer /_up within ${Math.round(this.c.startTimeoutMs / 1000)} s: ${await reasonFromLog(f.log, proc.logOffset, secrets)}`;
      }
      await sleep(100);
    }
    // The server answering must be this instance's (same uuid), not another one on the port.
    try {
      const info = await this.c.client().info();
      this.c.version = info.version;
      if (info.uuid !== undefined && info.uuid !== st.uuid) {
        await proc.stop(this.c.stopTimeoutMs);
        st.pid = null;
        return `another CouchDB (uuid ${info.uuid}) answers on ${couchUrl(s)}`;
      }
    } catch (err) {
      await proc.stop(this.c.stopTimeoutMs);
      st.pid = null;
      return `CouchDB started but does not accept the agent's admin: ${describeError(err)}`;
    }
    this.c.log(`CouchDB started (pid ${proc.pid}) on ${couchUrl(s)}`);
    await this.config.keepAgentAdminHash();
    return null;
  }

  async stopProcess(): Promise<void> {
    const st = this.c.state;
    const proc = this.c.proc;
    if (proc?.running) {
      const { forced } = await proc.stop(this.c.stopTimeoutMs);
      this.c.log(forced ? `CouchDB (pid ${proc.pid}) did not stop within ${this.c.stopTimeoutMs} ms: killed` : `CouchDB (pid ${proc.pid}) stopped`);
    }
    this.c.proc = null;
    if (st) {
      await stopEpmd(st.settings.couchdbHome, st.settings.epmdPort);
      st.pid = null;
    }
  }

  async start(): Promise<InstanceStatus> {
    await this.c.exclusive('start', async () => {
      const st = this.c.requireState();
      if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance cannot start: ${st.failure ?? 'its restore did not complete'}; prepare it again`);
      if (st.building) throw new AgentError('CONFLICT', 'the instance is being prepared');
      st.desired = 'RUNNING';
      if (!(this.c.proc?.running && (await this.c.client().up()))) {
        if (this.c.proc?.running) await this.stopProcess();
        const failure = await this.#startProcess(st);
        st.failure = failure;
        if (!failure) st.pendingRestart = [];
      }
      await this.c.persist();
    });
    return this.status();
  }

  async stop(): Promise<InstanceStatus> {
    await this.c.exclusive('stop', async () => {
      const st = this.c.requireState();
      st.desired = 'SHUTDOWN';
      await this.stopProcess();
      if (!st.restoreFailed) st.failure = null;
      await this.c.persist();
    });
    return this.status();
  }

  async restart(): Promise<InstanceStatus> {
    await this.c.exclusive('restart', async () => {
      const st = this.c.requireState();
      if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance cannot start: ${st.failure ?? 'its restore did not complete'}; prepare it again`);
      await this.stopProcess();
      st.desired = 'RUNNING';
      const failure = await this.#startProcess(st);
      st.failure = failure;
      if (!failure) st.pendingRestart = [];
      await this.c.persist();
    });
    return this.status();
  }

  async status(): Promise<InstanceStatus> {
    const st = this.c.state;
    if (!st) return { state: 'BUILD', reason: 'waiting for prepare' };
    if (st.building) return { state: 'BUILD', reason: st.settings.restore ? `restoring backup ${st.settings.restore.backupId}` : 'preparing' };
    if (st.failure) return { state: 'FAILED', reason: st.failure };
    // The supervisor's start after a crash says what it recovers from (the health monitor shows it).
    if (this.c.busy === 'start' || this.c.busy === 'restart') return { state: 'BUILD', reason: this.c.busy === 'start' && this.c.restartNote ? this.c.restartNote : `${this.c.busy}ing` };
    if (st.desired === 'SHUTDOWN') return { state: 'SHUTDOWN' };
    const s = st.settings;
    // The managed settings watch asks CouchDB every 5 s: an answer within 3 of its rounds stands for /_up.
    // A recent answer stands for /_up only while the process lives: a killed CouchDB shows at once.
    let up = this.c.proc?.running !== false && this.c.answeredWithin(15_000);
    if (!up && (up = await this.c.client().up(2000))) this.c.answered();
    if (up) {
      if (!this.c.version) this.c.version = await this.c.client(5000).info().then((i) => i.version, () => undefined);
      const version = this.c.version ? { version: this.c.version } : {};
      if (st.pendingRestart.length) return { state: 'RESTART_REQUIRED', reason: `configuration waiting for a restart: ${st.pendingRestart.join(', ')}`, pendingRestart: [...st.pendingRestart], ...version };
      return { state: 'RUNNING', ...version };
    }
    const f = instanceFiles(s);
    const secrets = this.c.admin ? [this.c.admin.password] : [];
    if (!this.c.proc || !this.c.proc.running) {
      const exit = this.c.proc?.exitInfo();
      const how = exit && (exit.code !== null || exit.signal !== null) ? ` (${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`})` : '';
      if (this.c.restartNote) return { state: 'FAILED', reason: this.c.restartNote };
      return { state: 'FAILED', reason: `CouchDB is not running${how}: ${await reasonFromLog(f.log, st.logOffset, secrets)}` };
    }
    return { state: 'FAILED', reason: `CouchDB (pid ${this.c.proc.pid}) does not answer ${couchUrl(s)}/_up` };
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
    let lastExit = '';
    const tick = async (): Promise<void> => {
      const st = this.c.state;
      if (!st || st.desired !== 'RUNNING' || st.building || st.restoreFailed || this.c.busy || !this.c.admin) return;
      // A failure of prepare or of an operator's start is theirs to report; only our own restarts are retried.
      if (st.failure !== null && st.failure !== ownFailure) return;
      if (this.c.proc?.running) {
        upSince ||= Date.now();
        if (attempt > 0 && Date.now() - upSince > 60_000) attempt = 0;
        this.c.restartNote = null;
        return;
      }
      upSince = 0;
      if (nextAt === 0) {
        const exit = this.c.proc?.exitInfo();
        const how = (lastExit = exit?.signal ? `killed by ${exit.signal}` : exit?.code !== undefined && exit.code !== null ? `exited with code ${exit.code}` : 'is not running');
        const delay = Math.min(60_000, 1000 * 2 ** attempt);
        nextAt = Date.now() + delay;
        this.c.restartNote = `CouchDB ${how}; the agent starts it again in ${Math.round(delay / 1000)} s (restart ${attempt + 1})`;
        this.c.log(this.c.restartNote);
        return;
      }
      if (Date.now() < nextAt) return;
      nextAt = 0;
      attempt++;
      this.c.restartNote = `CouchDB ${lastExit}; the agent is starting it again (restart ${attempt})`;
      await this.c.exclusive('start', async () => {
        const failure = await this.#startProcess(st);
        st.failure = ownFailure = failure;
        if (failure) this.c.log(`restart ${attempt} of CouchDB failed: ${failure}`);
        else this.c.log(`CouchDB is running again after restart ${attempt}`);
        await this.c.persist();
      });
    };
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      tick()
        .catch((err: unknown) => this.c.log(`supervisor: ${describeError(err)}`))
        .finally(() => (running = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
