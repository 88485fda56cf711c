// One database back (`database restore`) of a database that exercises what a copy can get wrong: many
// conflicts (live and deleted branches), deletions with history, attachments on every kind of leaf (text,
// which CouchDB stores compressed, and binary, which it does not), a design document with a large
// attachment. The restored database must hold the same leaves, histories, bodies and attachment bytes;
// the result's counts must be the source's. One real instance for all cases (COUCHDB_HOME), or the
// development engine.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminOf, couch, Harness, http, type TestInstance } from './helpers.js';

type Auth = { username: string; password: string };

/** Every leaf of every document: id, rev, deleted, history, body and each attachment's bytes (MD5). */
async function snapshot(url: string, auth: Auth, db: string): Promise<string[]> {
  const authz = { authorization: `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}` };
  const changes = (await http(url, 'GET', `/${db}/_changes?style=all_docs`, { auth })).body as { results: { id: string; changes: { rev: string }[] }[] };
  const out: string[] = [];
  for (const c of changes.results) {
    for (const { rev } of c.changes) {
      const doc_ = c.id.startsWith('_design/') ? c.id : encodeURIComponent(c.id);
      const r = await http(url, 'GET', `/${db}/${doc_}?rev=${rev}&revs=true`, { auth });
      assert.equal(r.status, 200, `${db}/${c.id}@${rev}: ${JSON.stringify(r.body)}`);
      const doc = r.body as Record<string, unknown> & { _attachments?: Record<string, { content_type: string; length: number }> };
      const atts: string[] = [];
      for (const [name, a] of Object.entries(doc._attachments ?? {})) {
        const res = await fetch(`${url}/${db}/${doc_}/${encodeURIComponent(name)}?rev=${rev}`, { headers: authz });
        assert.equal(res.status, 200);
        atts.push(`${name}:${a.content_type}:${a.length}:${createHash('md5').update(Buffer.from(await res.arrayBuffer())).digest('hex')}`);
      }
      delete doc._attachments;
      out.push(`${JSON.stringify(doc)} ${atts.sort().join(',')}`);
    }
  }
  return out.sort();
}

describe(`database restore of conflicts, deletions and attachments [${couch.label}]`, () => {
  const h = new Harness();
  let src: TestInstance;
  let admin: Auth;
  let storage: string;
  const db = 'ledger';
  const counts = { docs: 0, deleted: 0, conflicts: 0, attachments: 0 };

  before(async () => {
    await h.init('agent-restore-db');
    storage = `file://${path.join(h.root, 'repo')}`;
    src = await h.instance('src');
    admin = await adminOf(src.settings);
    await src.agent.createDatabase(db);
    await src.agent.createDatabase('other');
    const post = async (d: string, body: unknown) => {
      const r = await http(src.url, 'POST', `/${d}/_bulk_docs`, { auth: admin, body });
      assert.equal(r.status, 201, JSON.stringify(r.body).slice(0, 300));
      return r.body as { id: string; rev: string; error?: string }[];
    };
    const b64 = (b: Buffer) => b.toString('base64');
    // 60 plain documents, 20 of them edited twice (history of 3), 10 of those deleted afterwards.
    const docs = Array.from({ length: 60 }, (_, i) => ({ _id: `doc-${i}`, n: i, pad: 'p'.repeat(i * 50) }));
    let revs = await post(db, { docs });
    for (let round = 0; round < 2; round++) {
      revs = await post(db, { docs: revs.slice(0, 20).map((r, i) => ({ _id: r.id, _rev: r.rev, n: i, round })) });
    }
    await post(db, { docs: revs.slice(0, 10).map((r) => ({ _id: r.id, _rev: r.rev, _deleted: true })) });
    counts.docs += 50;
    counts.deleted += 10;
    // 15 documents with three branches each (two conflicts), written as a replication would; on five, one
    // branch is a deleted leaf (one conflict left); attachments differ per branch: text (stored compressed)
    // and random binary (stored as is).
    const branches = [];
    for (let i = 0; i < 15; i++) {
      for (const [k, tag] of ['a', 'b', 'c'].entries()) {
        const deletedLeaf = i < 5 && tag === 'c';
        branches.push({
          _id: `conflicted-${i}`,
          _rev: `2-${tag.repeat(32)}`,
          _revisions: { start: 2, ids: [tag.repeat(32), 'f'.repeat(32)] },
          ...(deletedLeaf
            ? { _deleted: true }
            : {
                branch: tag,
                _attachments: {
                  'notes.txt': { content_type: 'text/plain', data: b64(Buffer.from(`branch ${tag} of ${i}\n`.repeat(200 + k))) },
                  'blob.bin': { content_type: 'application/octet-stream', data: b64(randomBytes(3000 + i * 100 + k)) },
                },
              }),
        });
        if (!deletedLeaf) counts.attachments += 2;
      }
    }
    assert.deepEqual((await post(db, { new_edits: false, docs: branches })).filter((r) => r.error), []);
    counts.docs += 15;
    counts.conflicts += 10 * 2 + 5 * 1;
    // A document deleted on every branch: counted as deleted.
    await post(db, {
      new_edits: false,
      docs: ['d', 'e'].map((t) => ({ _id: 'all-deleted', _rev: `3-${t.repeat(32)}`, _revisions: { start: 3, ids: [t.repeat(32), '1'.repeat(32), '0'.repeat(32)] }, _deleted: true })),
    });
    counts.deleted += 1;
    // A design document and one large attachment (several batches' worth of bytes in one document).
    const big = randomBytes(3 * 2 ** 20);
    const ddoc = await http(src.url, 'PUT', `/${db}/_design/v`, { auth: admin, body: { views: { n: { map: 'function (doc) { emit(doc.n, null); }' } }, _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: b64(big) } } } });
    assert.equal(ddoc.status, 201);
    counts.docs += 1;
    counts.attachments += 1;
    await post('other', { docs: [{ _id: 'x', v: 1 }] });
    if (couch.kind !== 'real') await sleep(1000);
    await src.agent.backup({ storage, id: 'b1' });
  });
  after(async () => {
    await h.cleanup();
  });

  test('every leaf, history, body and attachment comes back; the counts are the source database\'s', async (t) => {
    const before = await snapshot(src.url, admin, db);
    const res = await src.agent.restoreDatabase({ database: db, storage, backupId: 'b1', as: 'ledger_back' });
    t.diagnostic(`restored: ${JSON.stringify(res)}`);
    // Apache CouchDB's shard files become the database; the development engine's are not shard files.
    assert.equal(res.method, couch.kind === 'real' ? 'placed' : 'copied');
    assert.equal(res.docCount, counts.docs);
    assert.equal(res.docDelCount, counts.deleted);
    if (res.method === 'copied') assert.deepEqual([res.conflicts, res.attachments], [counts.conflicts, counts.attachments]);
    const info = (await http(src.url, 'GET', '/ledger_back', { auth: admin })).body as { doc_count: number; doc_del_count: number };
    assert.equal(info.doc_count, counts.docs);
    if (couch.kind === 'real') assert.equal(info.doc_del_count, counts.deleted);
    assert.deepEqual(await snapshot(src.url, admin, 'ledger_back'), before, 'the same leaves, histories, bodies and attachment bytes');
    const conflicts = (await http(src.url, 'GET', '/ledger_back/conflicted-7?conflicts=true&deleted_conflicts=true', { auth: admin })).body as { _conflicts?: string[] };
    assert.equal(conflicts._conflicts?.length, 2);
    // Only the database asked for was copied; no scratch is left.
    assert.equal((await http(src.url, 'GET', '/other_back', { auth: admin })).status, 404);
    assert.deepEqual((await fsp.readdir(src.settings.instanceDir)).filter((n) => n.startsWith('scratch-')), []);
  });

  test('copied document by document (copy: true): the same leaves, and the counts of conflicts and attachments', async () => {
    const res = await src.agent.restoreDatabase({ database: db, storage, backupId: 'b1', as: 'ledger_copied', copy: true });
    assert.equal(res.method, 'copied');
    assert.deepEqual([res.docCount, res.docDelCount, res.conflicts, res.attachments], [counts.docs, counts.deleted, counts.conflicts, counts.attachments]);
    assert.deepEqual(await snapshot(src.url, admin, 'ledger_copied'), await snapshot(src.url, admin, 'ledger_back'));
  });

  test('replace: the database as the backup held it, and a changes feed from the replaced database\'s newer sequence starts over', async (t) => {
    const before = await snapshot(src.url, admin, 'ledger_back');
    assert.equal((await http(src.url, 'PUT', `/${db}/after-backup`, { auth: admin, body: { n: 1 } })).status, 201);
    const since = ((await http(src.url, 'GET', `/${db}/_changes?limit=0`, { auth: admin })).body as { last_seq: string }).last_seq;
    const res = await src.agent.restoreDatabase({ database: db, storage, backupId: 'b1', replace: true });
    assert.equal(res.as, db);
    assert.equal((await http(src.url, 'GET', `/${db}/after-backup`, { auth: admin })).status, 404, 'a write after the backup is gone');
    assert.deepEqual(await snapshot(src.url, admin, db), before);
    if (couch.kind !== 'real') {
      t.diagnostic('changes-feed sequences are checked on Apache CouchDB only (the development engine\'s are plain numbers)');
      return;
    }
    // The restored files are the database of a new shard suffix: CouchDB does not take the replaced database's
    // sequence as theirs (which would skip every change up to it) but starts from the beginning.
    const changes = (await http(src.url, 'GET', `/${db}/_changes?since=${encodeURIComponent(since)}`, { auth: admin })).body as { results: unknown[] };
    assert.equal(changes.results.length, counts.docs + counts.deleted);
  });

  test('a database the backup does not hold: NOT_FOUND, nothing created', async () => {
    await assert.rejects(src.agent.restoreDatabase({ database: 'nosuch', storage, backupId: 'b1' }), (err: Error & { code?: string }) => err.code === 'NOT_FOUND' && /nosuch/.test(err.message));
    assert.equal((await http(src.url, 'GET', '/nosuch', { auth: admin })).status, 404);
  });
});
