// Backup through the agent and restore into new instances (prepare with `restore`), under the same and
// under another Erlang node name, and restores that cannot complete (FAILED with the reason, never
// RUNNING with data missing). Real CouchDB with COUCHDB_HOME, else the development engine; with the
// development engine the source is quiesced first (LevelDB is not safe to copy while it is written).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminOf, couch, Harness, http, rejectsWithCode, type TestInstance } from './helpers.js';
import { createBackup } from '../../src/backup/index.js';
import { openStorage } from '../../src/storage/index.js';

const SOURCE_NODE = 'couchdb@127.0.0.2';

describe(`agent backup and restore [${couch.label}]`, () => {
  const h = new Harness();
  let src: TestInstance;
  let admin: { username: string; password: string };
  let repo: string;
  let storage: string;
  const counts: Record<string, number> = { orders: 120, 'media/images': 35 };

  before(async () => {
    await h.init('agent-backup');
    repo = path.join(h.root, 'repo');
    storage = `file://${repo}`;
    src = await h.instance('src', { nodeName: SOURCE_NODE });
    admin = await adminOf(src.settings);
    for (const [db, n] of Object.entries(counts)) {
      await src.agent.createDatabase(db);
      const docs = Array.from({ length: n }, (_, i) => ({ _id: `doc-${String(i).padStart(4, '0')}`, i, text: `document ${i} of ${db}` }));
      const r = await http(src.url, 'POST', `/${encodeURIComponent(db)}/_bulk_docs`, { auth: admin, body: { docs } });
      assert.equal(r.status, 201);
    }
    await src.agent.createUser({ name: 'alice', password: 'alice-pw', roles: ['ops'], databases: ['orders'] });
    // Quiesce: no writes from here on (the development engine's LevelDB settles its compactions).
    await sleep(couch.kind === 'devengine' ? 1000 : 100);
  });
  after(() => h.cleanup());

  test('backup of the running instance returns size, checksum and location', async () => {
    const b = await src.agent.backup({ storage, id: 'full-1', compression: 'gzip', labels: { purpose: 'test' } });
    assert.equal(b.id, 'full-1');
    assert.equal(b.location, storage);
    assert.ok(b.size > 0 && b.files > 0);
    assert.match(b.checksum, /^[0-9a-f]{64}$/);
    assert.equal(b.labels.purpose, 'test');
    assert.equal(b.labels.instanceId, 'src');
    assert.equal(await src.agent.progress(), null);
    assert.equal((await src.agent.status()).state, 'RUNNING');
  });

  test('bad backup requests are refused with a clear error', async () => {
    await rejectsWithCode(src.agent.backup({ storage, id: 'full-1' }), 'ALREADY_EXISTS', /already exists/);
    await rejectsWithCode(src.agent.backup({ storage, id: '../escape' }), 'INVALID_ARGUMENT', /invalid backup id/);
    await rejectsWithCode(src.agent.backup({ storage: 'not a url', id: 'x1' }), 'INVALID_ARGUMENT', /not a URL/);
    await rejectsWithCode(src.agent.backup({ storage: 's3://key:secret@bucket/prefix', id: 'x1' }), 'INVALID_ARGUMENT', /credentials/);
    await rejectsWithCode(src.agent.backup({ storage, id: 'x1', compression: 'lz4' as never }), 'INVALID_ARGUMENT', /compression/);
  });

  async function checkRestored(t: TestInstance, extra: string[] = []): Promise<void> {
    const a = await adminOf(t.settings);
    assert.deepEqual(await t.agent.listDatabases(), [...Object.keys(counts), ...extra].sort());
    for (const [db, n] of Object.entries(counts)) {
      const info = await http(t.url, 'GET', `/${encodeURIComponent(db)}`, { auth: a });
      assert.equal(info.status, 200, `${db} opens: ${JSON.stringify(info.body)}`);
      assert.equal((info.body as { doc_count: number }).doc_count, n);
    }
    const doc = await http(t.url, 'GET', '/orders/doc-0042', { auth: a });
    assert.equal((doc.body as { text: string }).text, 'document 42 of orders');
    // Users and their access travel with the data; the agent's own admin is the new instance's.
    assert.deepEqual(await t.agent.getUser('alice'), { name: 'alice', roles: ['ops'], databases: ['orders'] });
    assert.equal((await http(t.url, 'GET', '/orders', { auth: { username: 'alice', password: 'alice-pw' } })).status, 200);
    assert.notEqual(a.password, admin.password);
  }

  test('restore into a new instance with the same node name', async () => {
    const t = await h.instance('same', { nodeName: SOURCE_NODE, restore: { storage, backupId: 'full-1' } });
    assert.equal((await t.agent.status()).state, 'RUNNING');
    await checkRestored(t);
    await t.agent.stop();
  });

  test('restore into a new instance under another node name: shard maps moved to the new node', async () => {
    const t = await h.instance('renamed', { nodeName: 'couchdb@127.0.0.1', restore: { storage, backupId: 'full-1' } });
    await checkRestored(t);
    const a = await adminOf(t.settings);
    const map = (await http(t.url, 'GET', '/_node/_local/_dbs/orders', { auth: a })).body as { by_node: Record<string, unknown>; by_range: Record<string, string[]> };
    assert.deepEqual(Object.keys(map.by_node), ['couchdb@127.0.0.1']);
    assert.ok(Object.values(map.by_range).every((nodes) => nodes.every((n) => n === 'couchdb@127.0.0.1')));
    const nodes = (await http(t.url, 'GET', '/_node/_local/_nodes/_all_docs', { auth: a })).body as { rows: { id: string }[] };
    assert.ok(!nodes.rows.some((r) => r.id === SOURCE_NODE), 'the old node is gone from _nodes');
    // The restored instance works as any other: new writes, restart.
    await t.agent.createDatabase('after-restore');
    assert.equal((await t.agent.restart()).state, 'RUNNING');
    h.track(t.agent);
    await checkRestored(t, ['after-restore']).catch((err: unknown) => {
      throw new Error(`after restart: ${(err as Error).message}`);
    });
    await t.agent.stop();
  });

  test('an unknown backup is refused before anything changes', async () => {
    const settings = await h.settings('unknown', { restore: { storage, backupId: 'no-such-backup' } });
    const agent = await h.open('unknown');
    await rejectsWithCode(agent.prepare(settings), 'NOT_FOUND', /backup no-such-backup not found/);
    assert.equal(fs.existsSync(settings.instanceDir), false);
    assert.equal((await agent.status()).state, 'BUILD');
  });

  test('a restore that cannot complete (damaged backup) leaves the instance FAILED, never RUNNING', async () => {
    await src.agent.backup({ storage, id: 'damaged', compression: 'none' });
    const data = path.join(repo, 'backups', 'damaged', 'data');
    const buf = await fsp.readFile(data);
    for (let i = Math.floor(buf.length / 3); i < buf.length; i += 97) buf[i] = buf[i]! ^ 0xff;
    await fsp.writeFile(data, buf);

    const settings = await h.settings('damaged', { restore: { storage, backupId: 'damaged' } });
    const agent = await h.open('damaged');
    const st = await agent.prepare(settings);
    h.track(agent);
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /restore of backup damaged did not complete/);
    assert.equal(agent.couchdbPid, null, 'CouchDB is not left running');
    assert.equal((await agent.status()).state, 'FAILED');
    await rejectsWithCode(agent.start(), 'CONFLICT', /restore .*did not complete/);
    await rejectsWithCode(agent.restart(), 'CONFLICT');
    await rejectsWithCode(agent.listDatabases(), 'CONFLICT');
    assert.equal((await agent.status()).state, 'FAILED');

    // Preparing again with a good backup replaces the data and clears the failure.
    const again = await agent.prepare({ ...settings, restore: { storage, backupId: 'full-1' } });
    h.track(agent);
    assert.equal(again.state, 'RUNNING', again.reason);
    assert.deepEqual(await agent.listDatabases(), Object.keys(counts).sort());
    await agent.stop();
  });

  test('a restore into a data directory that holds something is refused on a first prepare (wrong volume?)', async () => {
    const settings = await h.settings('occupied', { restore: { storage, backupId: 'full-1' } });
    await fsp.mkdir(settings.dataDir, { recursive: true });
    await fsp.writeFile(path.join(settings.dataDir, 'precious.txt'), 'keep me');
    const agent = await h.open('occupied');
    const st = await agent.prepare(settings);
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /did not complete/);
    assert.equal(await fsp.readFile(path.join(settings.dataDir, 'precious.txt'), 'utf8'), 'keep me');
    assert.equal(agent.couchdbPid, null);
  });

  test('a restore whose files lack a database the backup recorded: FAILED naming it', async () => {
    // The manifest records the source's databases but the files are those of an empty instance: the
    // check after the start must catch what is missing.
    const empty = await h.instance('empty-source', { nodeName: SOURCE_NODE });
    await sleep(couch.kind === 'devengine' ? 500 : 100);
    const repoBackend = await openStorage(storage);
    try {
      await createBackup({ dataDir: empty.settings.dataDir, storage: repoBackend, couchdb: { url: src.url, username: admin.username, password: admin.password }, id: 'mismatch', compression: 'none' });
    } finally {
      await repoBackend.close();
    }
    await empty.agent.stop();
    const settings = await h.settings('mismatch', { nodeName: SOURCE_NODE, restore: { storage, backupId: 'mismatch' } });
    const agent = await h.open('mismatch');
    const st = await agent.prepare(settings);
    h.track(agent);
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /restore of backup mismatch did not complete: \d+ of \d+ databases did not come back: /);
    assert.match(st.reason ?? '', /orders: missing/);
    assert.match(st.reason ?? '', /media\/images: missing/);
    assert.equal(agent.couchdbPid, null, 'CouchDB is stopped, not left RUNNING with data missing');
    assert.equal((await agent.status()).state, 'FAILED');
    await rejectsWithCode(agent.start(), 'CONFLICT');
  });

  test('backup needs a running CouchDB', async () => {
    await src.agent.stop();
    await rejectsWithCode(src.agent.backup({ storage, id: 'stopped' }), 'NOT_RUNNING');
  });
});
