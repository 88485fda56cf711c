// One database copied from one CouchDB into another exactly, and checked: every leaf revision of every
// document (conflicts and deleted leaves included) with its revision history, body and attachments, written
// with `new_edits: false` as a replication would. CouchDB's one-shot replication did the same at ~3.5 MB/s
// here (docs/benchmarks.md); this streams `_changes?style=all_docs` -> `_bulk_get` -> `_bulk_docs` with
// several batches in flight, reads back what can differ beyond a revision id (attachments, conflicts) and
// checks every leaf revision and the counts at the end.
import { createHash } from 'node:crypto';
import { AgentError } from './errors.js';
import { docPath, enc, type CouchClient } from './couchdb.js';

export interface CopyStats {
  /** Documents whose winning revision is live, deleted; live leaves besides the winner (conflicts). */
  docs: number;
  deleted: number;
  conflicts: number;
  /** Leaf revisions written, attachments among them (each checked by digest and length), JSON bytes read. */
  leaves: number;
  attachments: number;
  bytes: number;
}

export interface CopyOptions {
  /** Batches in flight (default 4). */
  parallel?: number;
  /** Leaf revisions in the first batch (default 10), alone in flight; later ones are sized to about `batchBytes`. */
  batch?: number;
  /** Bytes of JSON aimed at per batch (default 4 MiB): memory is bounded by parallel × this, not by the database. */
  batchBytes?: number;
}

interface Attachment {
  content_type?: string;
  digest?: string;
  length?: number;
  data?: string;
  stub?: boolean;
  revpos?: number;
  [k: string]: unknown;
}
interface Doc {
  _id: string;
  _rev: string;
  _deleted?: boolean;
  _revisions?: { start: number; ids: string[] };
  _attachments?: Record<string, Attachment>;
  [k: string]: unknown;
}
interface BulkGet {
  results: { id: string; docs: ({ ok: Doc } | { error: { id?: string; rev?: string; error?: string; reason?: string } })[] }[];
}
interface Change {
  id: string;
  changes: { rev: string }[];
}

const fail = (msg: string) => new AgentError('BACKUP_FAILED', msg);

/** A set of (id, revision) pairs as an order-independent sum of their SHA-256: memory does not grow with it. */
class LeafSet {
  count = 0;
  #sum = 0n;
  add(id: string, rev: string): void {
    this.count++;
    this.#sum = (this.#sum + BigInt(`0x${createHash('sha256').update(`${id}\n${rev}`).digest('hex')}`)) & ((1n << 256n) - 1n);
  }
  equals(o: LeafSet): boolean {
    return this.count === o.count && this.#sum === o.#sum;
  }
}

/** A leaf's body and history as read (attachments apart): what the target must hold. */
function bodyOf(d: Doc): string {
  const { _attachments: _a, ...rest } = d;
  return JSON.stringify(rest);
}

const md5 = (b: Buffer) => `md5-${createHash('md5').update(b).digest('base64')}`;

/** An attachment as read from the source: its digest there, and the MD5 and length of its bytes. */
interface AttRead {
  digest: string | undefined;
  md5: string;
  length: number;
  content_type: string | undefined;
}

/**
 * The attachments' bytes as read. CouchDB's digest is the MD5 of the bytes as it stores them: for an
 * attachment it keeps uncompressed, that is the bytes `attachments=true` hands back, and is checked here.
 * One it keeps compressed (`encoding: gzip`) is handed back decompressed: the target stores the same
 * bytes compressed at its own level, so it is compared with the target by digest, or by its bytes.
 */
function readAttachments(d: Doc): Map<string, AttRead> {
  const out = new Map<string, AttRead>();
  for (const [name, a] of Object.entries(d._attachments ?? {})) {
    if (a.data === undefined) throw fail(`document ${d._id} ${d._rev}: attachment ${name} came without its data`);
    const bytes = Buffer.from(a.data, 'base64');
    const sum = md5(bytes);
    if (a.encoding === undefined && a.digest?.startsWith('md5-') && sum !== a.digest) {
      throw fail(`document ${d._id} ${d._rev}: attachment ${name} read with digest ${sum}, the backup records ${a.digest}`);
    }
    out.set(name, { digest: a.digest, md5: sum, length: bytes.length, content_type: a.content_type });
  }
  return out;
}

async function attachmentMd5(c: CouchClient, db: string, id: string, rev: string, name: string): Promise<string> {
  const res = await fetch(`${c.baseUrl}${docPath(db, id)}/${name.split('/').map(enc).join('/')}?rev=${enc(rev)}`, { headers: c.authHeaders() });
  if (res.status !== 200) throw fail(`reading attachment ${name} of ${id} back from ${db}: ${res.status}`);
  return md5(Buffer.from(await res.arrayBuffer()));
}

/** Creates `dstDb` (partitioned as the source is) and copies `srcDb` into it; throws on any difference. */
export async function copyDatabase(src: CouchClient, srcDb: string, dst: CouchClient, dstDb: string, o: CopyOptions = {}): Promise<CopyStats> {
  const parallel = o.parallel ?? 4;
  const batchBytes = o.batchBytes ?? 4 * 2 ** 20;
  let batchSize = o.batch ?? 10;
  // Until one batch has shown how big this database's documents are, one batch at a time: documents with
  // attachments of megabytes each (inline, base64) would otherwise hold parallel x 10 of them at once.
  let sized = false;
  const info = await src.json<{ doc_count: number; doc_del_count?: number; props?: { partitioned?: boolean } }>('GET', `/${enc(srcDb)}`);
  const created = await dst.raw('PUT', `/${enc(dstDb)}`, info.props?.partitioned ? { query: { partitioned: true } } : {});
  if (created.status !== 201 && created.status !== 202) throw new AgentError('COUCHDB_ERROR', `cannot create ${dstDb}: ${created.status} ${JSON.stringify(created.body).slice(0, 200)}`);
  const stats: CopyStats = { docs: 0, deleted: 0, conflicts: 0, leaves: 0, attachments: 0, bytes: 0 };
  const leaves = new LeafSet();

  const copyBatch = async (changes: Change[]): Promise<void> => {
    const wanted = changes.flatMap((c) => c.changes.map((r) => ({ id: c.id, rev: r.rev })));
    const got = await src.raw<BulkGet>('POST', `/${enc(srcDb)}/_bulk_get`, { query: { revs: true, attachments: true, att_encoding_info: true }, body: { docs: wanted } });
    if (got.status !== 200 || !got.body) throw new AgentError('COUCHDB_ERROR', `reading ${srcDb} from the scratch CouchDB: ${got.status}`);
    const docs: Doc[] = [];
    for (const r of got.body.results) {
      for (const d of r.docs) {
        if ('error' in d) throw fail(`reading ${r.id} from the backup: ${d.error.error ?? ''} ${d.error.reason ?? ''}`);
        docs.push(d.ok);
      }
    }
    if (docs.length !== wanted.length) throw fail(`${wanted.length} leaf revisions asked for, ${docs.length} read`);
    let atts = 0;
    const want = new Map<string, { body: string; atts: Map<string, AttRead> }>();
    for (const d of docs) {
      const read = readAttachments(d);
      atts += read.size;
      // Data as read, not as stored: the body must not carry the encoding the source stored it with.
      for (const a of Object.values(d._attachments ?? {})) {
        delete a.encoding;
        delete a.encoded_length;
      }
      want.set(`${d._id}\n${d._rev}`, { body: bodyOf(d), atts: read });
    }
    const body = JSON.stringify({ new_edits: false, docs });
    stats.bytes += body.length;
    // Next batches aim at batchBytes (documents of this database are about this size); one document of a
    // batch is the least, so memory grows with the largest document only, never with the database.
    batchSize = Math.max(1, Math.min(2000, Math.round((batchBytes * docs.length) / Math.max(1, body.length))));
    sized = true;
    const put = await dst.raw<{ id?: string; error?: string; reason?: string }[]>('POST', `/${enc(dstDb)}/_bulk_docs`, { rawBody: body });
    if (put.status !== 201) throw new AgentError('COUCHDB_ERROR', `writing into ${dstDb}: ${put.status} ${JSON.stringify(put.body).slice(0, 300)}`);
    const refused = (put.body ?? []).filter((r) => r.error);
    if (refused.length) throw fail(`${refused.length} revisions refused by ${dstDb}, e.g. ${refused[0]!.id}: ${refused[0]!.error} ${refused[0]!.reason ?? ''}`);
    for (const w of wanted) leaves.add(w.id, w.rev);
    // Read back and compared: the leaves of documents with attachments (stubs: digest and length as the
    // target computed them) or with more than one leaf (conflicts). Reading back every body cost as much as
    // writing it (a third of the copy); the other documents' leaves are compared at the end, by revision.
    const several = new Set(changes.filter((c) => c.changes.length > 1).map((c) => c.id));
    const check = wanted.filter((w) => several.has(w.id) || want.get(`${w.id}\n${w.rev}`)!.atts.size > 0);
    const checked = new Set(check);
    for (const w of wanted) if (!checked.has(w)) want.delete(`${w.id}\n${w.rev}`);
    const back = check.length ? await dst.raw<BulkGet>('POST', `/${enc(dstDb)}/_bulk_get`, { query: { revs: true }, body: { docs: check } }) : { status: 200, body: { results: [] } };
    if (back.status !== 200 || !back.body) throw new AgentError('COUCHDB_ERROR', `reading ${dstDb} back: ${back.status}`);
    for (const r of back.body.results) {
      for (const d of r.docs) {
        if ('error' in d) throw fail(`${r.id} is not in ${dstDb} after the copy: ${d.error.error ?? ''}`);
        const t = d.ok;
        const key = `${t._id}\n${t._rev}`;
        const w = want.get(key);
        if (!w || w.body !== bodyOf(t)) throw fail(`${t._id} ${t._rev} differs in ${dstDb} from the backup (body or revision history)`);
        const names = Object.keys(t._attachments ?? {});
        if (names.length !== w.atts.size) throw fail(`${t._id} ${t._rev} has ${names.length} attachments in ${dstDb}, ${w.atts.size} in the backup`);
        for (const [name, a] of Object.entries(t._attachments ?? {})) {
          const s = w.atts.get(name);
          if (!s || s.length !== a.length || s.content_type !== a.content_type) throw fail(`${t._id} ${t._rev}: attachment ${name} differs in ${dstDb} from the backup`);
          // Another digest only where the two servers compress differently: then the bytes themselves.
          if (s.digest !== a.digest && (await attachmentMd5(dst, dstDb, t._id, t._rev, name)) !== s.md5) {
            throw fail(`${t._id} ${t._rev}: attachment ${name} has digest ${a.digest ?? '?'} in ${dstDb}, ${s.digest ?? '?'} in the backup, and other bytes`);
          }
        }
        want.delete(key);
      }
    }
    if (want.size) throw fail(`${want.size} leaf revisions missing from ${dstDb} after the copy`);
    const liveLeaves = new Map<string, number>();
    for (const d of docs) if (!d._deleted) liveLeaves.set(d._id, (liveLeaves.get(d._id) ?? 0) + 1);
    for (const c of changes) {
      const live = liveLeaves.get(c.id) ?? 0;
      if (live > 0) stats.docs++;
      else stats.deleted++;
      stats.conflicts += Math.max(0, live - 1);
    }
    stats.leaves += docs.length;
    stats.attachments += atts;
  };

  // The changes feed in pages; batches cut from it run `parallel` at a time; the first error stops it all.
  const running = new Set<Promise<void>>();
  let failed: unknown = null;
  const launch = (batch: Change[]) => {
    const p: Promise<void> = copyBatch(batch).then(
      () => void running.delete(p),
      (err: unknown) => {
        running.delete(p);
        failed ??= err;
      },
    );
    running.add(p);
  };
  const pending: Change[] = [];
  /** Launches batches cut at the size known when a slot is free (the first batch may change it); `all`: the rest too. */
  const drain = async (all: boolean): Promise<void> => {
    while (!failed && (pending.length >= batchSize || (all && pending.length > 0))) {
      while ((running.size >= parallel || (!sized && running.size > 0)) && !failed) await Promise.race(running);
      if (!failed) launch(pending.splice(0, batchSize));
    }
  };
  let since: string | number = 0;
  for (;;) {
    const page: { results: Change[]; last_seq: string | number } = await src.json('GET', `/${enc(srcDb)}/_changes`, { query: { style: 'all_docs', since, limit: 2000 } });
    for (const c of page.results) {
      if (c.id.startsWith('_local/')) continue;
      pending.push(c);
      await drain(false);
      if (failed) break;
    }
    if (failed || page.results.length === 0) break;
    since = page.last_seq;
  }
  await drain(true);
  await Promise.all(running);
  if (failed) throw failed;

  // Every leaf revision written is in the target, and nothing else.
  const there = new LeafSet();
  since = 0;
  for (;;) {
    const page: { results: Change[]; last_seq: string | number } = await dst.json('GET', `/${enc(dstDb)}/_changes`, { query: { style: 'all_docs', since, limit: 5000 } });
    for (const c of page.results) for (const r of c.changes) there.add(c.id, r.rev);
    if (page.results.length === 0) break;
    since = page.last_seq;
  }
  if (!there.equals(leaves)) throw fail(`${dstDb} holds ${there.count} leaf revisions after the copy, ${leaves.count} were written, or other ones`);

  // The whole: as many documents, deletions as the source, and the target's own counts agree.
  // The development engine (PouchDB) keeps no count of deleted documents and reports 0.
  const root = await src.json<{ vendor?: { name?: string } }>('GET', '/');
  const delOk = (n: number | undefined) => n === undefined || n === stats.deleted || (n === 0 && /development engine/.test(root.vendor?.name ?? ''));
  if (stats.docs !== info.doc_count || !delOk(info.doc_del_count)) {
    throw fail(`copied ${stats.docs} documents and ${stats.deleted} deleted, the backup holds ${info.doc_count} and ${info.doc_del_count ?? '?'}`);
  }
  const after = await dst.json<{ doc_count: number; doc_del_count?: number }>('GET', `/${enc(dstDb)}`);
  if (after.doc_count !== info.doc_count || !delOk(after.doc_del_count)) {
    throw fail(`${dstDb} holds ${after.doc_count} documents and ${after.doc_del_count} deleted after the copy, the backup ${info.doc_count} and ${info.doc_del_count ?? '?'}`);
  }
  return stats;
}
