// --couchdb-url and --config-dir on a running CouchDB (the development engine in CI, a real CouchDB with
// COUCHDB_HOME): the catalog records version, node, databases and their document counts; the ini files
// travel with the backup and come back with restore --config-dir; no password is stored anywhere.
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { createBackup, restoreBackup } from '../../src/backup/index.js';
import { openBackup } from '../../src/backup/repository.js';
import { instanceFiles } from '../../src/agent/agent.js';
import { openStorage } from '../../src/storage/index.js';
import { adminOf, couch, Harness, http } from '../agent/helpers.js';
import { listFiles } from '../support/tree.js';

describe(`backup metadata from a running server (${couch.label})`, () => {
  const h = new Harness();
  before(async () => {
    await h.init('backup-meta');
  });
  after(async () => h.cleanup());

  test('version, node, databases and configuration are recorded; passwords are not', async () => {
    const { settings, url } = await h.instance('meta');
    const admin = await adminOf(settings);
    for (const db of ['orders', 'customers']) assert.equal((await http(url, 'PUT', `/${db}`, { auth: admin })).status, 201);
    for (let i = 0; i < 5; i++) await http(url, 'PUT', `/orders/o${i}`, { auth: admin, body: { i } });

    const storage = await openStorage(`file://${h.root}/repo`);
    const s = await createBackup({
      dataDir: settings.dataDir,
      storage,
      compression: 'gzip',
      configDir: instanceFiles(settings).etcDir,
      couchdb: { url, username: admin.username, password: admin.password },
    });
    assert.match(s.datastore.version ?? '', /^\d+\.\d+/);
    const { catalog, manifest } = await openBackup(storage, s.id, undefined);
    assert.equal(catalog.couchdb?.node, settings.nodeName);
    const dbs = new Map(catalog.couchdb!.databases.map((d) => [d.name, d]));
    assert.equal(dbs.get('orders')?.docCount, 5);
    assert.equal(dbs.get('customers')?.docCount, 0);
    assert.ok(catalog.entries.some((e) => e.root === 'config' && e.path.endsWith('local.ini')), 'local.ini is in the backup');

    // The admin password appears in no stored object, decompressed or not.
    const repoFiles = await listFiles(path.join(h.root, 'repo'));
    assert.ok(repoFiles.length >= 4);
    for (const f of repoFiles) {
      const raw = await fs.readFile(f);
      assert.ok(!raw.includes(admin.password), `${f} does not hold the password`);
      assert.ok(!inflateAll(raw).includes(admin.password), `${f} does not hold the password once decompressed`);
    }
    assert.ok(!JSON.stringify(manifest).includes(admin.password));

    const configOut = path.join(h.root, 'restored-etc');
    const r = await restoreBackup({ storage, id: s.id, dataDir: path.join(h.root, 'restored-data'), configDir: configOut });
    assert.ok(r.configFiles >= 1);
    assert.equal(await fs.readFile(path.join(configOut, 'local.ini'), 'utf8'), await fs.readFile(path.join(instanceFiles(settings).etcDir, 'local.ini'), 'utf8'));
    await storage.close();
  });
});

/** Every gzip member found in a buffer, decompressed and concatenated (records are gzip members here). */
function inflateAll(buf: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let i = buf.indexOf(Buffer.from([0x1f, 0x8b])); i >= 0; i = buf.indexOf(Buffer.from([0x1f, 0x8b]), i + 2)) {
    try {
      out.push(gunzipSync(buf.subarray(i), { finishFlush: 2 }));
    } catch {
      // not a member start
    }
  }
  return Buffer.concat(out);
}
