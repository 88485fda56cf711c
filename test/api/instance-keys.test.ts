// Per-instance backup keys end to end on the local driver (issue 22): a real server, real agents (Apache
// CouchDB with COUCHDB_HOME, else the development engine). A's backup is written with A's key, which
// B's key file cannot open; a new instance made from A's backup gets A's data; an incremental of A keeps
// A's key; the control plane (the master) still reads and deletes every backup.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandbox, basicAuth, startServer, api, waitStatus, type J, type RealServer } from '../support/server.js';
import { readManifest } from '../../src/backup/repository.js';
import { verifyBackup } from '../../src/backup/index.js';
import { readKeyFile } from '../../src/crypto/keys.js';
import { openStorage } from '../../src/storage/index.js';
import { runCli } from '../support/cli.js';

const { stateDir, track } = sandbox('couchtrove-instance-keys-');
let server: RealServer | undefined;

async function create(name: string, extra: J = {}): Promise<J> {
  const c = await api(server!.api, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, ...extra } });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const inst = await waitStatus(server!.api, 'instances', (c.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  return inst;
}

async function backup(instance: string, extra: J = {}): Promise<J> {
  const b = await api(server!.api, 'POST', '/backups', { backup: { name: `b-${Date.now()}`, instance, ...extra } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const done = await waitStatus(server!.api, 'backups', (b.json.backup as J).id as string, ['COMPLETED', 'FAILED']);
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));
  return done;
}

test("a backup of A opens only with A's key; a new instance from it works", { timeout: 300_000 }, async () => {
  server = track(await startServer(stateDir));
  const auth = basicAuth('alice', 'pw-alice-1');
  const a = await create('keys-a', { databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 'pw-alice-1', databases: [{ name: 'orders' }] }] });
  const b = await create('keys-b');
  const aId = a.id as string;
  const bId = b.id as string;
  const put = await fetch(`${a.couchdb_url as string}/orders/doc1`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: '{"n":1}' });
  assert.equal(put.status, 201);

  const full = await backup(aId);
  const inc = await backup(aId, { incremental: 1 });
  assert.equal(inc.parent_id, full.id, 'an incremental on the instance key');

  // Key files: one per instance, root's 0600 in a 0700 directory of the state directory.
  const keysDir = path.join(stateDir, 'keys');
  assert.equal(fs.statSync(keysDir).mode & 0o777, 0o700);
  for (const id of [aId, bId]) {
    const st = fs.statSync(path.join(keysDir, `${id}.key`));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, process.getuid!());
  }
  const keyA = await readKeyFile(path.join(keysDir, `${aId}.key`));
  const keyB = await readKeyFile(path.join(keysDir, `${bId}.key`));
  assert.notDeepEqual(keyA.exportBytes(), keyB.exportBytes());

  const storage = await openStorage(`file://${path.join(stateDir, 'backups')}`);
  try {
    for (const x of [full, inc]) {
      const m = await readManifest(storage, x.id as string);
      assert.equal(m.body.encryption?.keyId, `instance:${aId}`);
      await assert.rejects(verifyBackup({ storage, id: x.id as string, key: keyB }), /wrong key/, `B's key opens A's backup ${x.id as string}`);
      await assert.rejects(verifyBackup({ storage, id: x.id as string, key: await readKeyFile(path.join(stateDir, 'backup.key')) }), /wrong key/, 'the master key itself is not the backup key');
      await verifyBackup({ storage, id: x.id as string, key: keyA });
    }
  } finally {
    await storage.close();
  }
  // By hand, with only the master key (the state directory lost): --master-key derives each backup's key.
  const master = path.join(stateDir, 'backup.key');
  const repo = `file://${path.join(stateDir, 'backups')}`;
  const plain = await runCli(['agent', 'verify', '--storage', repo, '--backup', inc.id as string, '--key-file', master]);
  assert.notEqual(plain.code, 0);
  assert.match(plain.stderr, /wrong key.*names key instance:/);
  const ring = await runCli(['agent', 'verify', '--storage', repo, '--backup', inc.id as string, '--key-file', master, '--master-key']);
  assert.equal(ring.code, 0, ring.stderr);
  const listed = await runCli(['agent', 'list', '--storage', repo, '--key-file', master, '--master-key', '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual((JSON.parse(listed.stdout) as Array<{ id: string }>).map((x) => x.id).sort(), [full.id as string, inc.id as string].sort());

  // A new instance from A's incremental: it reads A's backup with A's key for the restore, then writes its own.
  const y = await create('keys-y', { restorePoint: { backupRef: inc.id } });
  const doc = await fetch(`${y.couchdb_url as string}/orders/doc1`, { headers: { authorization: auth } });
  assert.equal(doc.status, 200);
  assert.equal(((await doc.json()) as J).n, 1);
  // One database of A's backup into the running Y: Y's agent is lent A's key for that restore.
  const one = await api(server.api, 'POST', `/instances/${y.id as string}/databases/orders/restore`, { restore: { backup: full.id, as: 'orders_then' } });
  assert.equal(one.status, 200, JSON.stringify(one.json));
  const restored = (one.json.restore as J);
  assert.equal(restored.as, 'orders_then');
  assert.equal(restored.doc_count, 1, JSON.stringify(restored));
  const yb = await backup(y.id as string);
  const s2 = await openStorage(`file://${path.join(stateDir, 'backups')}`);
  try {
    assert.equal((await readManifest(s2, yb.id as string)).body.encryption?.keyId, `instance:${y.id as string}`);
  } finally {
    await s2.close();
  }

  // The control plane deletes any of them (it derives each key from the master).
  for (const x of [yb, inc, full]) {
    const d = await api(server.api, 'DELETE', `/backups/${x.id as string}`);
    assert.equal(d.status, 202, JSON.stringify(d.json));
    const end = Date.now() + 60_000;
    while ((await api(server.api, 'GET', `/backups/${x.id as string}`)).status !== 404 && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    assert.equal((await api(server.api, 'GET', `/backups/${x.id as string}`)).status, 404, `backup ${x.id as string} was deleted`);
  }
  for (const i of [aId, bId, y.id as string]) assert.equal((await api(server.api, 'DELETE', `/instances/${i}`)).status, 202);
});
