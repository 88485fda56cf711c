// A physical backup of the running instance, and one database back from a backup or the archive through a
// scratch CouchDB beside this one.
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { AgentError, invalid } from './errors.js';
import { CouchClient, CouchUnreachableError, enc, type Credentials } from './couchdb.js';
import { instanceFiles } from './files.js';
import { checkBackupId, checkStorageUrl } from './validate.js';
import type { AgentBackupRequest, DatabaseRestoreRequest, DatabaseRestoreResult, InstanceSettings, InstanceStatus } from './protocol.js';
import { CODECS } from '../config/option.js';
import { createBackup, type BackupSummary } from '../backup/index.js';
import { openStorage, StorageError, type Backend } from '../storage/index.js';
import { KEY_ID, readKeyFile } from '../crypto/keys.js';
import { describeError } from '../util/errors.js';
import { AgentCore, couchUrl, freeLoopbackPort } from './core.js';
import type { AgentOptions } from './core.js';
import { copyDatabase } from './copy-db.js';
import { findPlacement, moveShards, removePlaced } from './place-db.js';
import { placeMaps, suffixCodes, suffixOf } from './shard-map.js';
import type { ClusterBackup } from './cluster-backup.js';
import { claimScratch, cleanScratches, clearMark, markCopy, removeScratchDir, stopScratchProcesses, type CleanResult } from './scratch.js';

/** The scratch instance a one-database restore runs (an Agent of its own). */
export interface ScratchAgent {
  prepare(s: InstanceSettings): Promise<InstanceStatus>;
  stop(): Promise<InstanceStatus>;
  preparedSettings(): InstanceSettings;
}

export class Backups {
  constructor(
    private readonly c: AgentCore,
    private readonly openScratch: (dir: string, options: AgentOptions) => Promise<ScratchAgent>,
    private readonly cluster: ClusterBackup,
  ) {}

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
    const st = this.c.requireUsable();
    labels.instanceId ??= st.settings.instanceId;
    return this.c.exclusive('backup', async () => {
      if (!(await this.c.client().up())) throw new AgentError('NOT_RUNNING', 'CouchDB is not running: a backup needs it to record its databases');
      let storage: Backend;
      try {
        storage = await openStorage(storageUrl);
      } catch (err) {
        throw new AgentError('STORAGE_ERROR', `cannot open backup storage: ${describeError(err)}`);
      }
      this.c.progress = { phase: 'backup', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
      try {
        // A member's part of a cluster backup: its copies of the ranges asked, named by its own shard maps.
        const files = request.shards !== undefined ? await this.cluster.shardFiles(request.shards) : undefined;
        const key = request.keyFile ? await readKeyFile(request.keyFile, request.keyId).catch((err: unknown) => Promise.reject(invalid(describeError(err)))) : undefined;
        const summary = await createBackup({
          dataDir: st.settings.dataDir,
          storage,
          key,
          compression: request.compression,
          ...(files ? { files } : { configDir: instanceFiles(st.settings).etcDir }),
          couchdb: { url: couchUrl(st.settings), username: this.c.admin!.username, password: this.c.admin!.password },
          id,
          labels,
          ...(parent !== undefined ? { parent } : {}),
          progress: (p) => (this.c.progress = p),
        });
        this.c.log(`backup ${id} completed: ${summary.files} files, ${summary.size} bytes stored`);
        return { ...summary, location: storage.location };
      } catch (err) {
        if (err instanceof AgentError) throw err;
        const msg = describeError(err);
        if (err instanceof StorageError) throw new AgentError('STORAGE_ERROR', msg);
        if (/already exists/.test(msg)) throw new AgentError('ALREADY_EXISTS', msg);
        if (err instanceof CouchUnreachableError) throw err;
        throw new AgentError('BACKUP_FAILED', `backup ${id} failed: ${msg}`);
      } finally {
        this.c.progress = null;
        await storage.close().catch(() => undefined);
      }
    });
  }

  /**
   * One database back: the backup (or the archive as of a time) is restored into a scratch CouchDB beside
   * this one (its own agent directory, loopback port and epmd, never serving clients), the database is
   * copied into the running CouchDB by the agent (copy-db.ts: revision histories, conflicts, attachments,
   * design documents; deleted documents as tombstones; each batch read back and compared) and its
   * _security, the counts are compared, and the scratch instance is stopped and removed. The live instance serves
   * throughout; only `replace` touches the live database of that name (deleted, then copied).
   */
  async restoreDatabase(req: DatabaseRestoreRequest): Promise<DatabaseRestoreResult> {
    const st = this.c.requireUsable();
    if (!req || typeof req !== 'object' || typeof req.database !== 'string' || req.database === '') throw invalid('database restore request must be {database, backupId? | time?, as?, replace?}');
    const as = req.as ?? req.database;
    const archive = st.archive;
    const storage = req.storage !== undefined ? checkStorageUrl(req.storage) : archive?.storage;
    if (!storage) throw invalid('no repository: give storage (archiving is not configured on this instance)');
    const keyFile = req.keyFile ?? (req.storage === undefined ? archive?.keyFile : undefined);
    if ((req.backupId === undefined) === (req.time === undefined)) throw invalid('give exactly one of backupId and time');
    const stream = req.stream ?? archive?.stream ?? st.settings.instanceId;
    if (req.time !== undefined && Number.isNaN(Date.parse(req.time))) throw invalid(`time must be an ISO 8601 time, got ${JSON.stringify(req.time)}`);
    const live = this.c.client();
    // The restored copy may hold a quota guard of when its backup was taken: looked for once (quota.ts).
    if (!st.quotaGuarded) {
      st.quotaGuarded = true;
      await this.c.persist();
    }
    // What a restore killed with its agent left (scratch server, partial copy) goes first: a retry works.
    await this.recoverRestores();
    const exists = (await live.dbInfo(as)) !== null;
    if (exists && !req.replace) throw new AgentError('ALREADY_EXISTS', `database ${as} exists in the instance: give another name (as) or replace`);
    await this.c.checkQuota();

    const t0 = performance.now();
    const scratchDir = path.join(st.settings.instanceDir, `scratch-${randomBytes(4).toString('hex')}`);
    const claim = claimScratch(scratchDir);
    let marked = false;
    let verified = false;
    const placed: string[] = [];
    let scratch: ScratchAgent;
    try {
      // The scratch directory is the agent's (the instance may pass through it); only its data is the instance's.
      await fsp.mkdir(scratchDir, { mode: 0o711 });
      await fsp.chmod(scratchDir, st.settings.runAs ? 0o711 : 0o700);
      await fsp.mkdir(path.join(scratchDir, 'data'), { mode: 0o700 });
      if (st.settings.runAs) await this.c.privileged.give(path.join(scratchDir, 'data'), st.settings.runAs, false);
      scratch = await this.openScratch(path.join(scratchDir, 'agent'), { startTimeoutMs: this.c.startTimeoutMs, stopTimeoutMs: this.c.stopTimeoutMs, privileged: this.c.privileged, log: (l) => this.c.log(`scratch: ${l}`) });
    } catch (err) {
      await removeScratchDir(scratchDir);
      claim.release();
      throw err;
    }
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
        // Only the database's shard files and the shard maps, not the whole instance.
        restore: { ...restore, databases: [req.database] },
      });
      if (prepared.state !== 'RUNNING') throw new AgentError('BACKUP_FAILED', `the scratch CouchDB did not start from the backup: ${prepared.reason ?? prepared.state}`);
      const restoreMs = performance.now() - t0;
      const scratchAdmin = JSON.parse(await fsp.readFile(instanceFiles(scratch.preparedSettings()).secret, 'utf8')) as Credentials;
      const scratchUrl = couchUrl(scratch.preparedSettings());
      const src = new CouchClient(scratchUrl, scratchAdmin, 600_000);
      const info = await src.dbInfo(req.database);
      if (!info) throw new AgentError('NOT_FOUND', `database ${req.database} is not in the backup${req.time ? ` as of ${req.time}` : ''}`);
      const t1 = performance.now();
      // The restored shard files become the database where they can (place-db.ts); copied where not.
      const placement = s.cluster || req.copy ? null : await findPlacement(src, path.join(scratchDir, 'data'), req.database);
      let done: Omit<DatabaseRestoreResult, 'database' | 'as' | 'from' | 'restoreMs' | 'copyMs' | 'totalMs'>;
      const security = await src.getSecurity(req.database);
      if (placement) {
        // Nothing may hold the files open or write them: the scratch goes before they move.
        await scratch.stop();
        await stopScratchProcesses(scratchDir);
      }
      // The placed files take a suffix the replaced database's is not (place-db.ts).
      const replaced = placement && exists ? await live.raw<{ shard_suffix?: number[] }>('GET', `/_node/_local/_dbs/${enc(as)}`) : null;
      // From here until verified, `as` holds an unverified copy: marked, so that whoever finds the marker
      // (this restore's failure, the next agent's start, the next restore) deletes it.
      await markCopy(scratchDir, as);
      marked = true;
      if (exists) await live.deleteDb(as);
      if (placement) {
        const moved = await moveShards(placement, s.dataDir, as, s.runAs, async (file) => {
          placed.push(file);
          await markCopy(scratchDir, as, placed);
        }, replaced?.body?.shard_suffix ? suffixOf({ shard_suffix: replaced.body.shard_suffix }) : undefined);
        // The backup's map, on this node alone, naming the placed files.
        await live.putNodeLocalDoc('_dbs', placeMaps([{ ...placement.map, _id: as, shard_suffix: suffixCodes(moved.suffix) }], [await live.nodeName()])[0]!);
        const got = await live.dbInfo(as);
        const counts = (x: { doc_count: number; doc_del_count?: number } | null) => `${x?.doc_count} documents, ${x?.doc_del_count} deleted`;
        if (counts(got) !== counts(info)) throw new AgentError('BACKUP_FAILED', `the placed database ${as} holds ${counts(got)}, the backup's ${counts(info)}`);
        if (JSON.stringify(await live.getSecurity(as)) !== JSON.stringify(security)) throw new AgentError('BACKUP_FAILED', `the placed database ${as} does not hold the backup's _security`);
        let bytes = 0;
        for (const f of moved.files) bytes += (await fsp.lstat(f)).size;
        done = { method: 'placed', docCount: info.doc_count, docDelCount: info.doc_del_count ?? 0, conflicts: null, attachments: null, copiedBytes: bytes };
      } else {
        // Streamed by the agent (copy-db.ts): every leaf revision with its history and attachments, each
        // batch read back from the live CouchDB and compared; then the counts.
        const copied = await copyDatabase(src, req.database, new CouchClient(couchUrl(s), this.c.admin!, 600_000), as);
        await live.putSecurity(as, security);
        done = { method: 'copied', docCount: copied.docs, docDelCount: copied.deleted, conflicts: copied.conflicts, attachments: copied.attachments, copiedBytes: copied.bytes };
      }
      await clearMark(scratchDir);
      verified = true;
      const copyMs = performance.now() - t1;
      this.c.log(`database ${req.database} restored as ${as} from ${req.time ? `archive ${stream} at ${req.time}` : `backup ${req.backupId}`} (${done.method}): ${done.docCount} documents, ${done.docDelCount} deleted${done.method === 'copied' ? `, ${done.conflicts} conflicts, ${done.attachments} attachments` : `, ${done.copiedBytes} bytes of shard files`}`);
      return {
        database: req.database,
        as,
        from: req.backupId ?? `${stream}@${req.time}`,
        ...done,
        restoreMs,
        copyMs,
        totalMs: performance.now() - t0,
      };
    } finally {
      if (marked && !verified) {
        // A copy that failed is not left to pass for the database: removed (the marker stays if CouchDB
        // does not answer now, for the next clean).
        if (await live.deleteDb(as).then(() => true, () => false) && (await removePlaced(placed, st.settings.runAs).then(() => true, () => false))) await clearMark(scratchDir);
      }
      await scratch.stop().catch(() => undefined);
      // Whatever the scratch's stop left (its epmd, a CouchDB that did not stop in time).
      await stopScratchProcesses(scratchDir);
      await removeScratchDir(scratchDir);
      claim.release();
    }
  }

  /**
   * Cleans what `database restore`s of a dead agent left (./scratch.ts): their scratch CouchDB and epmd
   * stopped, their directories removed, their unverified copies deleted. At the agent's start and before
   * every restore; a copy whose CouchDB does not answer yet stays marked for the next call.
   */
  async recoverRestores(): Promise<CleanResult> {
    const st = this.c.state;
    if (!st) return { scratches: [], deleted: [], kept: [] };
    return cleanScratches(st.settings.instanceDir, async (db, files) => {
      await this.c.client().deleteDb(db);
      await removePlaced(files, st.settings.runAs);
    }, (m) => this.c.log(m));
  }
}
