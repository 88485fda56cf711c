// One node's share of a cluster backup and of its restore (docs/cluster.md, "Cluster backups"), through this
// node's own CouchDB and data directory:
// - `maps`: every shard map (`_dbs`), checked: a tenant may be this CouchDB's admin and write anything
//   there, so a map is used only when its database name, node names, suffix and ranges are what CouchDB
//   itself writes (the ranges cover the hash space once, without overlap);
// - `shardFiles` (for the agent's backup): the file of each asked range as this node's map names it, only
//   when the map places a copy here;
// - `restoreFiles`: shard files of backups placed in the data directory before any map names them here
//   (mem3 opens an existing file rather than creating one: `mem3_shards:create_if_missing`), moved in as the
//   instance's uid (the data directory is the tenant's: place-db.ts) and never over an existing file;
// - `restoreMaps`: the rewritten maps written through this node (mem3 spreads `_dbs` to every node), and
//   the wait until every database opens here.
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, invalid } from './errors.js';
import { enc, type CouchClient, type ShardMapDoc } from './couchdb.js';
import type { AgentCore } from './core.js';
import type { ClusterBackupAnswer, ClusterBackupRequest, ShardFilesPart, ShardMapRecord, ShardRef } from './protocol.js';
import { checkBackupId, checkStorageUrl } from './validate.js';
import { checkShardMap, shardFile } from './shard-map.js';
import { SYSTEM_DATABASES } from './manage.js';
import { placeFile } from './place-db.js';
import { restoreBackup } from '../backup/index.js';
import { isSafeRelativePath } from '../backup/format.js';
import { readKeyFile } from '../crypto/keys.js';
import { openStorage } from '../storage/index.js';
import { syncDir } from '../util/fs.js';
import { describeError } from '../util/errors.js';

/** A shard file as CouchDB names it: shards/<range>/<database><suffix>.couch (a database name may hold '/'). */
const SHARD_FILE = /^shards\/[0-9a-f]{8}-[0-9a-f]{8}\/(?:_users|_replicator|[a-z][a-z0-9_$()+-]*(?:\/[a-z0-9_$()+-]+)*)\.[0-9]{1,20}\.couch$/;

export class ClusterBackup {
  constructor(private readonly c: AgentCore) {}

  async run(req: ClusterBackupRequest): Promise<ClusterBackupAnswer> {
    if (!req || typeof req !== 'object') throw invalid('a cluster backup request is an object with "op"');
    const couch = this.c.client();
    const node = await couch.nodeName();
    switch (req.op) {
      case 'maps':
        return { node, maps: await this.maps(couch) };
      case 'restoreFiles': {
        if (!Array.isArray(req.parts) || req.parts.length > 64) throw invalid('"parts" must be a list of at most 64 backups');
        let files = 0;
        for (const p of req.parts) files += await this.#restoreFiles(p);
        return { node, files };
      }
      case 'restoreMaps':
        return { node, docs: await this.#restoreMaps(couch, req.maps, req.write === true) };
      default:
        throw invalid(`unknown cluster backup operation ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  /** Every database's map (design documents of `_dbs` are not maps). */
  async maps(couch: CouchClient): Promise<ShardMapRecord[]> {
    const docs = await couch.nodeLocalDocs<ShardMapDoc>('_dbs');
    return docs.filter((d) => !d._id.startsWith('_design/')).map(checkShardMap);
  }

  /** This node's files of the ranges asked, by its own maps: each range must have a copy here. */
  async shardFiles(shards: ShardRef[]): Promise<string[]> {
    if (!Array.isArray(shards) || shards.length > 100_000) throw invalid('"shards" must be a list of {db, range}');
    const couch = this.c.client();
    const node = await couch.nodeName();
    const byDb = new Map((await this.maps(couch)).map((m) => [m._id, m]));
    return shards.map((s) => {
      const m = s && typeof s === 'object' ? byDb.get(s.db) : undefined;
      if (!m) throw new AgentError('CONFLICT', `no shard map of ${JSON.stringify(String(s?.db).slice(0, 80))} on ${node}`);
      if (!(m.by_range[s.range] ?? []).includes(node)) throw new AgentError('CONFLICT', `the shard map of ${m._id} places no copy of ${String(s.range).slice(0, 20)} on ${node}`);
      return shardFile(m, s.range);
    });
  }

  async #restoreFiles(p: ShardFilesPart): Promise<number> {
    if (!p || typeof p !== 'object' || !Array.isArray(p.files) || p.files.length === 0 || p.files.length > 100_000) throw invalid('a part is {storage, backupId, keyFile?, files}');
    for (const f of p.files) if (typeof f !== 'string' || !SHARD_FILE.test(f) || !isSafeRelativePath(f)) throw invalid(`not a shard file: ${JSON.stringify(String(f).slice(0, 80))}`);
    if (p.keyFile !== undefined && (typeof p.keyFile !== 'string' || !path.isAbsolute(p.keyFile))) throw invalid('keyFile must be an absolute path');
    const s = this.c.requireUsable().settings;
    const id = checkBackupId(p.backupId);
    for (const f of p.files) {
      if (await fsp.lstat(path.join(s.dataDir, f)).then(() => true, () => false)) throw new AgentError('ALREADY_EXISTS', `${f} exists in the data directory already`);
    }
    const storage = await openStorage(checkStorageUrl(p.storage)).catch((err: unknown) => Promise.reject(new AgentError('STORAGE_ERROR', `cannot open backup storage: ${describeError(err)}`)));
    // Restored beside the live files (the same file system: each move is a rename), then moved one by one.
    const stage = path.join(s.dataDir, `.couchtrove-shards-${randomBytes(6).toString('hex')}`);
    try {
      const key = p.keyFile ? await readKeyFile(p.keyFile) : undefined;
      await restoreBackup({ storage, id, dataDir: stage, key, files: p.files });
      // Given to the instance's uid, then moved in as that uid: the live data directory is the tenant's.
      if (s.runAs) await this.c.privileged.give(stage, s.runAs, true);
      for (const f of p.files) await placeFile(path.join(stage, f), path.join(s.dataDir, f), s.dataDir, { timeout: 600_000, ...(s.runAs ?? {}) });
      for (const dir of new Set(p.files.map((f) => path.dirname(path.join(s.dataDir, f))))) await syncDir(dir);
      this.c.log(`cluster restore: ${p.files.length} shard files of backup ${id} placed`);
      return p.files.length;
    } finally {
      await fsp.rm(stage, { recursive: true, force: true });
      await storage.close().catch(() => undefined);
    }
  }

  async #restoreMaps(couch: CouchClient, maps: ShardMapRecord[], write: boolean): Promise<Record<string, number>> {
    if (!Array.isArray(maps) || maps.length > 100_000) throw invalid('"maps" must be a list of shard maps');
    const checked = maps.map((m) => {
      const c = checkShardMap(m as unknown as ShardMapDoc);
      if (Array.isArray(m.changelog) && m.changelog.length <= 4096) c.changelog = m.changelog.filter((e) => Array.isArray(e) && e.length === 3 && e.every((x) => typeof x === 'string' && x.length <= 300));
      return c;
    });
    if (write) {
      for (const m of checked) {
        const p = `/_node/_local/_dbs/${enc(m._id)}`;
        if ((await couch.raw('GET', p)).status === 200) {
          // A new instance's own empty system databases give way to the backup's; nothing else does.
          if (!SYSTEM_DATABASES.includes(m._id)) throw new AgentError('ALREADY_EXISTS', `database ${m._id} exists here already`);
          await couch.deleteDb(m._id);
        }
        const r = await couch.raw('PUT', p, { body: m });
        if (r.status !== 201 && r.status !== 202) throw new AgentError('CONFLICT', `writing the shard map of ${m._id} answered ${r.status}: ${JSON.stringify(r.body)}`);
      }
    }
    // Every database opens through this node (mem3 brings the maps written through another node).
    const docs: Record<string, number> = {};
    const deadline = Date.now() + 120_000;
    for (const m of checked) {
      for (;;) {
        const r = await couch.raw<{ doc_count?: number }>('GET', `/${enc(m._id)}`);
        if (r.status === 200 && typeof r.body?.doc_count === 'number') {
          docs[m._id] = r.body.doc_count;
          break;
        }
        if (Date.now() > deadline) throw new AgentError('CONFLICT', `database ${m._id} does not open through this node: ${r.status} ${JSON.stringify(r.body)}`);
        await sleep(250);
      }
    }
    return docs;
  }
}
