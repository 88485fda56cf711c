// Continuous archiving (docs/backup-format.md, "Continuous archiving"): a stream of consistent cuts of a
// running CouchDB, each an incremental backup on the previous cut with a delta catalog, stored as a
// repository of its own under `archive/<stream>/` of the instance's repository. A cut in which no file
// changed stores nothing but the stream's small head object; a base (a full backup) starts a new chain
// when the chain has grown past a share of its base or the base is older than the base interval.
import type { Backend } from '../storage/backend.js';
import { ObjectNotFoundError } from '../storage/backend.js';
import { PrefixedBackend } from '../storage/prefixed.js';
import type { KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import { writeBackup, removeObjects } from './backup.js';
import { measure } from './snapshot.js';
import { keys, type Catalog } from './format.js';
import { openBackup, putBuffer, readManifest, readObject, type OpenedBackup } from './repository.js';
import { restoreBackup } from './restore.js';
import type { BackupOptions, RestoreOptions, RestoreResult } from './types.js';

/** Stream names: the control plane uses instance ids. */
export const STREAM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HEAD = 'head.json';
/** c-<13-digit ms of the cut's start>-<b: base | i: incremental>: sortable by time, parsed without reading. */
const CUT_ID = /^c-(\d{13})-([bi])$/;

export function archiveStorage(storage: Backend, stream: string): Backend {
  if (!STREAM_NAME.test(stream)) throw new CouchtroveError(`invalid archive stream name ${JSON.stringify(stream)}`);
  return new PrefixedBackend(storage, `archive/${stream}/`);
}

export interface CutRef {
  id: string;
  /** ms since the epoch, from the id: when the cut was begun (its data is at least this recent). */
  at: number;
  base: boolean;
}

export function parseCutId(id: string): CutRef | null {
  const m = CUT_ID.exec(id);
  return m ? { id, at: Number(m[1]), base: m[2] === 'b' } : null;
}

/** The stream's head: rewritten after every cut, also one that found nothing new. */
export interface ArchiveHead {
  stream: string;
  /** The newest cut stored. */
  latest: string | null;
  /** End of that cut's measuring pass (ms). */
  latestEnd: number | null;
  /** The newest restore point (ms): the last moment the data directory was seen equal to the latest cut. */
  restorePoint: number | null;
  base: string | null;
  /** Bytes stored by the base, and by the cuts since it. */
  baseSize: number;
  chainSize: number;
  baseAt: number | null;
}

export async function readHead(stream: Backend): Promise<ArchiveHead | null> {
  try {
    return JSON.parse((await readObject(stream, HEAD, 1 << 20)).toString('utf8')) as ArchiveHead;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  }
}

/** Every cut with a manifest (complete), oldest first. Incomplete leftovers are returned apart. */
export async function listCuts(stream: Backend): Promise<{ cuts: CutRef[]; incomplete: string[] }> {
  const manifests = new Set<string>();
  const seen = new Set<string>();
  for await (const o of stream.list(keys.backupsPrefix)) {
    const [, id, name] = o.key.split('/');
    if (!id) continue;
    seen.add(id);
    if (name === 'manifest.json') manifests.add(id);
  }
  const cuts = [...manifests].map(parseCutId).filter((c): c is CutRef => c !== null);
  cuts.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : 1));
  return { cuts, incomplete: [...seen].filter((id) => !manifests.has(id)) };
}

export interface ArchiveOptions {
  /** The instance's repository; the stream lives under archive/<stream>/ in it. */
  storage: Backend;
  stream: string;
  key?: KeyMaterial;
  dataDir: string;
  configDir?: string;
  couchdb?: BackupOptions['couchdb'];
  compression?: BackupOptions['compression'];
  labels?: Record<string, string>;
  /** A new base once the cuts since the base have stored more than this share of the base (default 0.5). */
  rebaseShare?: number;
  /** A new base once the base is older than this (ms; default one day). */
  baseIntervalMs?: number;
}

export interface CutResult {
  kind: 'base' | 'incremental' | 'unchanged';
  id: string | null;
  /** Bytes stored by this cut (the head object not counted). */
  size: number;
  /** Plain bytes copied. */
  bytes: number;
  restorePoint: number;
  ms: number;
}

/**
 * One stream's writer. Keeps the latest cut's whole catalog in memory between cuts (its size is the number
 * of files and extents of the chain, never the data), so a cut reads nothing back from the repository.
 */
export class ArchiveStream {
  readonly store: Backend;
  #latest: OpenedBackup | null = null;
  #head: ArchiveHead;
  #loaded = false;

  constructor(readonly opts: ArchiveOptions) {
    this.store = archiveStorage(opts.storage, opts.stream);
    this.#head = { stream: opts.stream, latest: null, latestEnd: null, restorePoint: null, base: null, baseSize: 0, chainSize: 0, baseAt: null };
  }

  get head(): ArchiveHead {
    return { ...this.#head };
  }

  /** Continues from the newest complete cut in the repository (after an agent restart). */
  async #load(): Promise<void> {
    const head = await readHead(this.store).catch(() => null);
    const { cuts } = await listCuts(this.store);
    // The listing, not the head, names the newest cut: a head write that failed leaves the head behind.
    for (const c of [...cuts].reverse()) {
      try {
        this.#latest = await openBackup(this.store, c.id, this.opts.key);
      } catch {
        continue;
      }
      const m = this.#latest.manifest.body;
      const end = Number(m.labels.cutEnd ?? parseCutId(c.id)!.at);
      const baseRef = [...cuts].reverse().find((x) => x.base && x.at <= c.at) ?? null;
      const sameBase = head && head.base === baseRef?.id;
      this.#head = {
        stream: this.opts.stream,
        latest: c.id,
        latestEnd: end,
        restorePoint: head?.latest === c.id && head.restorePoint ? head.restorePoint : end,
        base: baseRef?.id ?? null,
        baseSize: sameBase ? head.baseSize : 0,
        chainSize: sameBase && head.latest === c.id ? head.chainSize : 0,
        baseAt: baseRef?.at ?? null,
      };
      break;
    }
    this.#loaded = true;
  }

  /** Whether the data (and configuration) directory holds exactly what the latest cut holds. */
  async #unchanged(): Promise<boolean> {
    const latest = this.#latest;
    if (!latest) return false;
    const snap = await measure(this.opts.dataDir, this.opts.configDir);
    try {
      const files = new Map(latest.catalog.entries.filter((e) => e.type === 'file').map((e) => [`${e.root}:${e.path}`, e] as const));
      const dirs = new Set(latest.catalog.entries.filter((e) => e.type === 'dir').map((e) => `${e.root}:${e.path}`));
      if (snap.files.length !== files.size || snap.dirs.length !== dirs.size) return false;
      for (const d of snap.dirs) if (!dirs.has(`${d.root}:${d.path}`)) return false;
      // CouchDB only appends: the same file (device, inode, birth time) at the same size is the same bytes.
      for (const f of snap.files) {
        const e = files.get(`${f.root}:${f.path}`);
        if (!e || e.type !== 'file' || e.size !== f.size || e.source.ino !== f.ino || e.source.dev !== f.dev || e.source.birthtimeMs !== f.birthtimeMs || e.mode !== f.mode) return false;
      }
      return true;
    } finally {
      snap.close();
    }
  }

  #needsBase(now: number): boolean {
    const h = this.#head;
    if (!this.#latest || !h.base || h.baseAt === null) return true;
    if (now - h.baseAt >= (this.opts.baseIntervalMs ?? 86_400_000)) return true;
    return h.baseSize > 0 && h.chainSize > (this.opts.rebaseShare ?? 0.5) * h.baseSize;
  }

  /** Takes one cut: nothing stored when nothing changed, else an incremental (or a new base). */
  async cut(): Promise<CutResult> {
    const t0 = performance.now();
    if (!this.#loaded) await this.#load();
    const checkedAt = Date.now();
    if (await this.#unchanged()) {
      this.#head.restorePoint = checkedAt;
      await this.#writeHead();
      return { kind: 'unchanged', id: null, size: 0, bytes: 0, restorePoint: checkedAt, ms: performance.now() - t0 };
    }
    const now = Date.now();
    const base = this.#needsBase(now);
    const id = `c-${String(now).padStart(13, '0')}-${base ? 'b' : 'i'}`;
    const dbs = this.#latest?.catalog.entries.find((e) => e.type === 'file' && e.root === 'data' && e.path === '_dbs.couch');
    const reuse = !base && dbs?.type === 'file' && this.#latest?.catalog.couchdb ? { meta: this.#latest.catalog.couchdb, dbs } : undefined;
    const written = await writeBackup({
      dataDir: this.opts.dataDir,
      storage: this.store,
      key: this.opts.key,
      compression: this.opts.compression,
      configDir: this.opts.configDir,
      couchdb: this.opts.couchdb,
      id,
      labels: { ...(this.opts.labels ?? {}), archive: this.opts.stream },
      ...(base ? {} : { parentOpened: this.#latest!, delta: true }),
      ...(reuse ? { couchdbReuse: reuse } : {}),
      // Small cuts are encoded on this thread: worker threads would cost more than the cut.
      workers: base ? undefined : 0,
      recordCut: true,
      noLock: true,
    });
    this.#latest = written.opened;
    const h = this.#head;
    if (base) {
      h.base = id;
      h.baseAt = now;
      h.baseSize = written.summary.size;
      h.chainSize = 0;
    } else {
      h.chainSize += written.summary.size;
    }
    h.latest = id;
    h.latestEnd = written.cut.end;
    h.restorePoint = written.cut.end;
    await this.#writeHead();
    return { kind: base ? 'base' : 'incremental', id, size: written.summary.size, bytes: written.summary.bytes, restorePoint: written.cut.end, ms: performance.now() - t0 };
  }

  async #writeHead(): Promise<void> {
    await putBuffer(this.store, HEAD, `${JSON.stringify(this.#head)}\n`);
  }

  /** The whole catalog of the latest cut (tests, single-database restore). */
  get latestCatalog(): Catalog | null {
    return this.#latest?.catalog ?? null;
  }
}

/** The restorable window of a stream: from its oldest cut to its newest restore point. */
export async function archiveWindow(storage: Backend, stream: string): Promise<{ oldest: number | null; newest: number | null; cuts: number; bases: number; latest: string | null }> {
  const s = archiveStorage(storage, stream);
  const { cuts } = await listCuts(s);
  const head = await readHead(s);
  const last = cuts.at(-1);
  return {
    oldest: cuts[0]?.at ?? null,
    newest: head?.restorePoint ?? last?.at ?? null,
    cuts: cuts.length,
    bases: cuts.filter((c) => c.base).length,
    latest: last?.id ?? null,
  };
}

/**
 * The cut a restore to `time` uses: the newest cut whose measuring pass ended at or before it. A time after
 * the newest restore point is refused (the data at that time was never archived), as is one before the
 * oldest cut.
 */
export async function findCut(storage: Backend, stream: string, time: number): Promise<CutRef & { end: number }> {
  const s = archiveStorage(storage, stream);
  const { cuts } = await listCuts(s);
  if (cuts.length === 0) throw new CouchtroveError(`archive ${stream} in ${storage.location} has no restore point`);
  const head = await readHead(s);
  const newest = Math.max(head?.restorePoint ?? 0, cuts.at(-1)!.at);
  if (time > newest) throw new CouchtroveError(`restore time ${new Date(time).toISOString()} is after the newest restore point of archive ${stream} (${new Date(newest).toISOString()})`);
  let found: (CutRef & { end: number }) | undefined;
  for (const c of [...cuts].reverse()) {
    if (c.at > time) continue;
    const end = Number((await readManifest(s, c.id)).body.labels.cutEnd ?? c.at);
    if (end <= time) {
      found = { ...c, end };
      break;
    }
  }
  if (!found) throw new CouchtroveError(`restore time ${new Date(time).toISOString()} is before the oldest restore point of archive ${stream} (${new Date(cuts[0]!.at).toISOString()})`);
  return found;
}

/** Restores the data as of the newest cut at or before `time` (RestoreOptions.id is ignored). */
export async function restoreToTime(opts: Omit<RestoreOptions, 'id'> & { stream: string; time: number }): Promise<RestoreResult & { cut: CutRef & { end: number } }> {
  const cut = await findCut(opts.storage, opts.stream, opts.time);
  const s = archiveStorage(opts.storage, opts.stream);
  // The chain as the listing has it (newest first, back to the base): read ahead in parallel.
  const { cuts } = await listCuts(s);
  const upTo = cuts.filter((c) => c.at <= cut.at).reverse();
  const baseAt = upTo.findIndex((c) => c.base);
  const chainHint = (baseAt < 0 ? upTo : upTo.slice(0, baseAt + 1)).map((c) => c.id);
  const result = await restoreBackup({ ...opts, storage: s, id: cut.id, chainHint });
  return { ...result, cut };
}

/** The catalog's CouchDB metadata of the cut a time selects (the agent checks a restore against it). */
export async function cutMetadata(storage: Backend, stream: string, id: string, key?: KeyMaterial): Promise<Catalog['couchdb']> {
  return (await openBackup(archiveStorage(storage, stream), id, key)).catalog.couchdb;
}

/**
 * Retention by time window: keeps every restore point of the last `keepMs` (and the cut in force at the
 * window's start), and so every cut back to that cut's base; deletes the cuts older than that base.
 */
export async function expireArchive(storage: Backend, stream: string, keepMs: number, now = Date.now(), dryRun = false): Promise<{ removed: string[]; kept: number }> {
  const s = archiveStorage(storage, stream);
  const { cuts, incomplete } = await listCuts(s);
  const boundary = now - keepMs;
  const inForce = [...cuts].reverse().find((c) => c.at <= boundary);
  if (!inForce) return { removed: [], kept: cuts.length };
  // Chains are linear in time (each cut's parent is the cut before it, or it is a base), so the newest
  // base at or before the cut in force is what it and every later cut reach back to.
  const base = [...cuts].reverse().find((c) => c.base && c.at <= inForce.at);
  if (!base) return { removed: [], kept: cuts.length };
  // Proof before deleting: the cut in force reaches back to this base through its parents.
  for (let id: string | null = inForce.id; id !== base.id; ) {
    const m = await readManifest(s, id!);
    id = m.body.parent;
    if (id === null) throw new CouchtroveError(`archive ${stream}: cut ${inForce.id} does not reach back to base ${base.id}; nothing deleted`);
  }
  const old = cuts.filter((c) => c.at < base.at);
  // Leftovers of failed cuts older than the base go too (newer ones may be a cut being written).
  const leftovers = incomplete.filter((id) => (parseCutId(id)?.at ?? Infinity) < base.at);
  if (!dryRun) {
    // Newest first: a child goes before its parent.
    for (const c of [...old].reverse()) await removeObjects(s, c.id);
    for (const id of leftovers) await removeObjects(s, id);
  }
  return { removed: [...old.map((c) => c.id), ...leftovers], kept: cuts.length - old.length };
}

/** Written when a stream's instance is deleted: its agent no longer applies retention, the control plane does. */
const RETIRED = 'retired.json';

export interface RetiredStream {
  /** When the instance was deleted (ISO 8601): no restore point is newer. */
  retired: string;
  keepDays: number;
}

/**
 * Marks a stream whose instance is gone; false when there is no stream (archiving never ran). Its restore
 * points stay usable (create --backup B --restore-time T) for keepDays, then expireRetired removes them.
 */
export async function retireStream(storage: Backend, stream: string, keepDays: number, now = Date.now()): Promise<boolean> {
  const s = archiveStorage(storage, stream);
  if (!(await readHead(s))) return false;
  const body: RetiredStream = { retired: new Date(now).toISOString(), keepDays };
  await putBuffer(s, RETIRED, Buffer.from(JSON.stringify(body)));
  return true;
}

/**
 * Retention of the retired streams: the agent's rule (expireArchive) while their window lasts; once keepDays
 * have passed since the retirement every restore point is older than that, and the whole stream goes
 * (its retired.json last, so an interrupted removal is taken up again by the next run).
 */
export async function expireRetired(storage: Backend, now = Date.now()): Promise<{ removed: string[]; trimmed: Record<string, number> }> {
  const retired: string[] = [];
  for await (const o of storage.list('archive/')) {
    const [, stream, name, more] = o.key.split('/');
    if (stream && name === RETIRED && more === undefined && STREAM_NAME.test(stream)) retired.push(stream);
  }
  const out: { removed: string[]; trimmed: Record<string, number> } = { removed: [], trimmed: {} };
  for (const stream of retired) {
    const s = archiveStorage(storage, stream);
    const r = JSON.parse((await readObject(s, RETIRED, 1 << 16)).toString('utf8')) as RetiredStream;
    const keepMs = r.keepDays * 86_400_000;
    if (now - Date.parse(r.retired) < keepMs) {
      const ex = await expireArchive(storage, stream, keepMs, now);
      if (ex.removed.length) out.trimmed[stream] = ex.removed.length;
      continue;
    }
    const all: string[] = [];
    for await (const o of s.list('')) if (o.key !== RETIRED) all.push(o.key);
    for (const key of all) await s.delete(key);
    await s.delete(RETIRED);
    out.removed.push(stream);
  }
  return out;
}
