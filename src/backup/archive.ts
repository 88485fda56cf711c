// Continuous archiving (docs/backup-format.md, "Continuous archiving"): a stream of consistent cuts of a
// running CouchDB, each an incremental backup on the previous cut with a delta catalog, stored as a
// repository of its own under `archive/<stream>/` of the instance's repository. A cut in which no file
// changed stores nothing but the stream's small head object; a base (a full backup) starts a new chain
// when the chain has grown past a share of its base or the base is older than the base interval.
import { hkdfSync } from 'node:crypto';
import type { Backend } from '../storage/backend.js';
import { ObjectNotFoundError } from '../storage/backend.js';
import { PrefixedBackend } from '../storage/prefixed.js';
import { equalHex, hmac, type BackupKeys, type KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import { writeBackup, removeObjects } from './backup.js';
import { measure } from './snapshot.js';
import { canonicalJson, keys, type Catalog, type Manifest } from './format.js';
import { BackupNotFoundError, openBackup, openManifest, putBuffer, readManifest, readObject, type OpenedBackup } from './repository.js';
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
  /**
   * With a key: HMAC-SHA256 of the rest of the head under a subkey of the seal key of cut `cut` (= `latest`),
   * so that a storage operator can neither widen the window nor hide the newest cut (issue 22).
   */
  auth?: { alg: 'hmac-sha256'; cut: string; value: string };
}

/** The head's HMAC key: its own subkey of the latest cut's manifest seal key (no new key derivation to pay for). */
function headKey(k: BackupKeys): Buffer {
  return Buffer.from(hkdfSync('sha256', k.seal, Buffer.alloc(0), 'couchtrove/v2/archive-head', 32));
}

function headText(h: ArchiveHead): string {
  const { auth: _a, ...rest } = h;
  return `couchtrove/v2/archive-head\n${canonicalJson(rest)}`;
}

function signHead(h: ArchiveHead, k: BackupKeys | null | undefined): ArchiveHead {
  const { auth: _a, ...rest } = h;
  if (!k || !h.latest) return rest;
  return { ...rest, auth: { alg: 'hmac-sha256', cut: h.latest, value: hmac(headKey(k), headText(rest)) } };
}

const NUM_OR_NULL = ['latestEnd', 'restorePoint', 'baseAt'] as const;

/** Reads the stream's head; a garbled one is refused with an error that says so, never a raw parse error. */
export async function readHead(stream: Backend, streamName?: string): Promise<ArchiveHead | null> {
  const name = streamName === undefined ? 'the archive' : `archive ${streamName}`;
  let raw: Buffer;
  try {
    raw = await readObject(stream, HEAD, 1 << 20);
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  }
  let h: ArchiveHead;
  try {
    h = JSON.parse(raw.toString('utf8')) as ArchiveHead;
  } catch {
    throw new CouchtroveError(`${HEAD} of ${name} is corrupted: not valid JSON`);
  }
  const bad = (what: string) => new CouchtroveError(`${HEAD} of ${name} is corrupted: ${what}`);
  if (!h || typeof h !== 'object' || Array.isArray(h)) throw bad('not an object');
  if (streamName !== undefined && h.stream !== streamName) throw bad(`it names stream ${JSON.stringify(h.stream)}`);
  if (h.latest !== null && (typeof h.latest !== 'string' || !parseCutId(h.latest))) throw bad('"latest" is not a cut id');
  if (h.base !== null && (typeof h.base !== 'string' || !parseCutId(h.base))) throw bad('"base" is not a cut id');
  for (const f of NUM_OR_NULL) if (h[f] !== null && !Number.isFinite(h[f])) throw bad(`"${f}" is not a time`);
  if (!Number.isFinite(h.baseSize) || !Number.isFinite(h.chainSize)) throw bad('"baseSize" or "chainSize" is not a number');
  return h;
}

/**
 * Checks a head against the key: it must name its latest cut, that cut must exist and authenticate, and the
 * head's HMAC must check under that cut's keys. Throws naming what is wrong.
 */
export async function authenticateHead(stream: Backend, name: string, head: ArchiveHead, key: KeyMaterial): Promise<void> {
  if (!head.auth || head.auth.alg !== 'hmac-sha256' || typeof head.auth.value !== 'string') throw new CouchtroveError(`${HEAD} of ${name} is not authenticated, but a key was given: refused`);
  if (!head.latest || head.auth.cut !== head.latest) throw new CouchtroveError(`${HEAD} of ${name} is not authenticated: it is signed for cut ${JSON.stringify(head.auth.cut)}, not its latest cut ${JSON.stringify(head.latest)}`);
  let m: Manifest;
  try {
    m = await readManifest(stream, head.latest);
  } catch (err) {
    if (err instanceof BackupNotFoundError) throw new CouchtroveError(`cut ${head.latest} of ${name} is missing: ${HEAD} names it as the newest cut (withheld or deleted)`);
    throw err;
  }
  const k = await openManifest(m, key);
  if (!k || !equalHex(hmac(headKey(k), headText(head)), head.auth.value)) throw new CouchtroveError(`${HEAD} of ${name} does not authenticate with this key (edited or forged)`);
}

/**
 * The head as far as it may be believed. Without a key, as read. With a key, a sealed head must authenticate
 * (else this throws); a head without a seal (from a version that did not seal heads, or stripped) is not
 * believed (null): the window then ends at the newest cut's own authenticated end, which can only narrow it.
 */
async function trustedHead(stream: Backend, name: string, head: ArchiveHead | null, key: KeyMaterial | undefined): Promise<ArchiveHead | null> {
  if (!key || !head) return head;
  if (head.auth === undefined) return null;
  await authenticateHead(stream, name, head, key);
  return head;
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
    // With a key, a head that does not authenticate is ignored: its restore point is not believed.
    const head = await readHead(this.store, this.opts.stream)
      .then(async (h) => (h && this.opts.key ? authenticateHead(this.store, `archive ${this.opts.stream}`, h, this.opts.key).then(() => h) : h))
      .catch(() => null);
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
      // `previous` links every cut (a base too) to the one before it ('' for the first), under the seal: a
      // restore notices a cut withheld from the middle of the stream instead of silently using an older one.
      labels: { ...(this.opts.labels ?? {}), archive: this.opts.stream, previous: this.#head.latest ?? '' },
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
    await putBuffer(this.store, HEAD, `${JSON.stringify(signHead(this.#head, this.opts.key ? this.#latest?.keys : null))}\n`);
  }

  /** The whole catalog of the latest cut (tests, single-database restore). */
  get latestCatalog(): Catalog | null {
    return this.#latest?.catalog ?? null;
  }
}

/**
 * The restorable window of a stream: from its oldest cut to its newest restore point. With a key, the head
 * must authenticate (see findCut).
 */
export async function archiveWindow(storage: Backend, stream: string, key?: KeyMaterial): Promise<{ oldest: number | null; newest: number | null; cuts: number; bases: number; latest: string | null }> {
  const s = archiveStorage(storage, stream);
  const { cuts } = await listCuts(s);
  const head = await trustedHead(s, `archive ${stream}`, await readHead(s, stream), key);
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
 *
 * With a key nothing unauthenticated decides: the head (the newest restore point) must authenticate, and so
 * must every cut read on the way. The cuts are followed from the newest back through their sealed `previous`
 * (or `parent`) links, so a cut missing from the middle of the stream is an error naming it, never a silent
 * fall back to an older cut.
 */
export async function findCut(storage: Backend, stream: string, time: number, key?: KeyMaterial, listing?: CutRef[]): Promise<CutRef & { end: number }> {
  const s = archiveStorage(storage, stream);
  const name = `archive ${stream}`;
  const cuts = listing ?? (await listCuts(s)).cuts;
  if (cuts.length === 0) throw new CouchtroveError(`${name} in ${storage.location} has no restore point`);
  const head = await readHead(s, stream);
  const trusted = await trustedHead(s, name, head, key);
  const listed = new Map(cuts.map((c) => [c.id, c] as const));
  const index = new Map(cuts.map((c, i) => [c.id, i] as const));
  // The walk reads the listed cuts from the newest down: read ahead 16 at a time (a chain of small objects
  // read one after the other waits on every read).
  const reads = new Map<string, Promise<Manifest>>();
  const read = (id: string) => {
    let p = reads.get(id);
    if (!p) {
      p = readManifest(s, id);
      p.catch(() => undefined);
      reads.set(id, p);
    }
    return p;
  };
  const open = async (id: string) => {
    const i = index.get(id) ?? 0;
    for (let j = i - 1; j >= Math.max(0, i - 16); j--) void read(cuts[j]!.id);
    const m = await read(id);
    if (key) await openManifest(m, key);
    return m;
  };
  const before = () => new CouchtroveError(`restore time ${new Date(time).toISOString()} is before the oldest restore point of ${name} (${new Date(cuts[0]!.at).toISOString()})`);
  // The newest cut: the listing's (a head write that failed after its cut leaves the head one cut behind).
  let cur = cuts.at(-1)!;
  let m = await open(cur.id);
  const newest = Math.max(trusted?.restorePoint ?? 0, key ? Number(m.body.labels.cutEnd ?? cur.at) : cur.at);
  if (time > newest) throw new CouchtroveError(`restore time ${new Date(time).toISOString()} is after the newest restore point of ${name} (${new Date(newest).toISOString()})`);
  for (;;) {
    const end = Number(m.body.labels.cutEnd ?? cur.at);
    if (end <= time) return { ...cur, end };
    const link = m.body.parent ?? m.body.labels.previous;
    let prev: CutRef | undefined;
    if (link === undefined) {
      // A cut written before cuts were linked: the listing says which came before it.
      const i = cuts.indexOf(cur);
      prev = i > 0 ? cuts[i - 1] : undefined;
      if (!prev) throw before();
    } else if (link === '') {
      throw before();
    } else {
      prev = listed.get(link);
      if (!prev) {
        // Retention removes whole chains older than the window: a link to before the oldest cut kept.
        const at = parseCutId(link)?.at;
        if (at !== undefined && at < cuts[0]!.at) throw before();
        throw new CouchtroveError(`cut ${link} of ${name} is missing (withheld or deleted): cut ${cur.id} follows it; refusing to fall back to an older cut`);
      }
    }
    cur = prev;
    m = await open(cur.id);
  }
}

/** Restores the data as of the newest cut at or before `time` (RestoreOptions.id is ignored). */
export async function restoreToTime(opts: Omit<RestoreOptions, 'id'> & { stream: string; time: number }): Promise<RestoreResult & { cut: CutRef & { end: number } }> {
  const s = archiveStorage(opts.storage, opts.stream);
  // One listing (a request per thousand keys on Swift or S3, a stat per object here) for both.
  const { cuts } = await listCuts(s);
  const cut = await findCut(opts.storage, opts.stream, opts.time, opts.key, cuts);
  // The chain as the listing has it (newest first, back to the base): read ahead in parallel.
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
