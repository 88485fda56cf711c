// Against a real Apache CouchDB (COUCHDB_HOME): back up a server that is being written to, restore it
// into another directory, start a second server on it, and check that every document acknowledged
// before the backup began is there and that its view answers correctly.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/tree.js';
import { ADMIN, couch, startRealCouchdb, type RealCouchdb } from '../support/real-couchdb.js';

const home = process.env.COUCHDB_HOME;
const skip = home ? false : 'COUCHDB_HOME is not set (no Apache CouchDB on this machine): set it to a CouchDB 3.x release directory to run this test';

test('live backup of a real CouchDB restores every acknowledged document and a correct view', { skip, timeout: 600_000 }, async () => {
  const { dir, cleanup } = await tempDir('real-couchdb');
  const servers: RealCouchdb[] = [];
  let writing = true;
  try {
    const primary = await startRealCouchdb(home!, path.join(dir, 'data'), path.join(dir, 'primary'));
    servers.push(primary);
    assert.equal((await couch(primary, 'PUT', '/live')).status, 201);
    await couch(primary, 'PUT', '/live/_design/v', { views: { by_n: { map: 'function (doc) { if (doc.n !== undefined) emit(doc.n, doc.tag); }' } } });

    // Writer: batches of 20 documents, acknowledged ids recorded in order.
    const acked: string[] = [];
    let n = 0;
    const writer = (async () => {
      while (writing) {
        const docs = Array.from({ length: 20 }, () => ({ _id: `doc-${String(++n).padStart(8, '0')}`, n, tag: 'x'.repeat(n % 300) }));
        const r = await couch(primary, 'POST', '/live/_bulk_docs', { docs });
        for (const row of r.json as { id: string; ok?: boolean }[]) if (row.ok) acked.push(row.id);
        if (n % 400 === 0) await couch(primary, 'GET', '/live/_design/v/_view/by_n?limit=1'); // keeps the index moving
      }
    })();
    await sleep(3000);
    const before = [...acked];
    assert.ok(before.length > 100, `the writer got going (${before.length} documents)`);

    const repo = `file://${dir}/repo`;
    const b = await runCli(['agent', 'backup', '--data-dir', path.join(dir, 'data'), '--storage', repo, '--couchdb-url', primary.url, '--json'], { COUCHDB_USER: ADMIN.username, COUCHDB_PASSWORD: ADMIN.password });
    assert.equal(b.code, 0, b.stderr);
    const summary = JSON.parse(b.stdout) as { id: string; datastore: { version: string } };
    assert.match(summary.datastore.version, /^3\./);
    await sleep(500);
    writing = false;
    await writer;

    const r = await runCli(['agent', 'restore', '--storage', repo, '--backup', summary.id, '--data-dir', path.join(dir, 'restored')]);
    assert.equal(r.code, 0, r.stderr);
    const second = await startRealCouchdb(home!, path.join(dir, 'restored'), path.join(dir, 'second'));
    servers.push(second);

    const info = (await couch(second, 'GET', '/live')).json as { doc_count: number };
    assert.ok(info.doc_count - 1 >= before.length, `restored ${info.doc_count - 1} documents, ${before.length} were acknowledged before the backup`);
    const found = (await couch(second, 'POST', '/live/_all_docs', { keys: before })).json as { rows: { id?: string; error?: string }[] };
    const missing = found.rows.filter((row) => row.error);
    assert.equal(missing.length, 0, `missing after restore: ${missing.slice(0, 5).map((m) => JSON.stringify(m)).join(', ')}`);

    const view = (await couch(second, 'GET', '/live/_design/v/_view/by_n')).json as { total_rows: number; rows: { id: string; key: number }[] };
    assert.equal(view.total_rows, info.doc_count - 1, 'one view row per document: no phantom rows, none left out');
    const ids = new Set(view.rows.map((row) => row.id));
    assert.ok(before.every((id) => ids.has(id)), 'every acknowledged document is in the view');
    const keys = view.rows.map((row) => row.key);
    assert.deepEqual(keys, [...keys].sort((a, b) => a - b));
  } finally {
    writing = false;
    for (const s of servers) await s.stop().catch(() => undefined);
    await cleanup();
  }
});
