// Every way a backup can be damaged or misused is refused with an error that names the problem,
// and nothing half-restored is ever left looking complete.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createBackup, deleteBackup, listBackups, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { keys, sha256Hex, type Catalog, type FileEntry } from '../../src/backup/format.js';
import { encodeCatalog, openBackup, readManifest, sealManifest } from '../../src/backup/repository.js';
import { KEY_PREFIX, KeyMaterial, readKeyFile, writeNewKeyFile } from '../../src/crypto/keys.js';
import { openStorage, type Backend } from '../../src/storage/index.js';
import { extractDatadir } from '../support/fixtures.js';
import { readTree, tempDir } from '../support/tree.js';

const key = new KeyMaterial(randomBytes(32));

describe('damaged backups and bad input', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let n = 0;
  before(async () => {
    work = await tempDir('failures');
    src = await extractDatadir('v1', path.join(work.dir, 'src'));
  });
  after(async () => work.cleanup());

  /** A fresh repository with one backup of the v1 fixture. */
  async function fresh(encrypted: boolean) {
    const root = path.join(work.dir, `repo-${n++}`);
    const storage = await openStorage(`file://${root}`);
    const s = await createBackup({ dataDir: src, storage, key: encrypted ? key : undefined, recordSize: 256 * 1024 });
    const file = (k: string) => path.join(root, ...k.split('/'));
    return { storage, id: s.id, root, file, target: path.join(work.dir, `target-${n}`) };
  }

  async function assertNothingRestored(target: string) {
    const entries = await fs.readdir(target).catch(() => []);
    assert.deepEqual(entries, [], 'the target holds nothing after a failed restore');
  }

  for (const encrypted of [false, true]) {
    const k = encrypted ? key : undefined;
    const label = encrypted ? 'encrypted' : 'unencrypted';

    test(`${label}: a flipped byte names the object and the file`, async () => {
      const b = await fresh(encrypted);
      const dataFile = b.file(keys.data(b.id));
      const buf = await fs.readFile(dataFile);
      buf[Math.floor(buf.length / 2)]! ^= 0x01;
      await fs.writeFile(dataFile, buf);
      const expected = encrypted
        ? new RegExp(`wrong key or corrupted data: object backups/${b.id}/data at offset \\d+, file \\S+`)
        : new RegExp(`(corrupted data|checksum mismatch).*(object backups/${b.id}/data).*file|file \\S+ \\(object backups/${b.id}/data`);
      await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: k }), expected);
      await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, key: k, dataDir: b.target }), expected);
      await assertNothingRestored(b.target);
    });

    test(`${label}: a truncated object is reported as truncated`, async () => {
      const b = await fresh(encrypted);
      const dataFile = b.file(keys.data(b.id));
      const st = await fs.stat(dataFile);
      await fs.truncate(dataFile, st.size - 1000);
      await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: k }), /truncated/);
      await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, key: k, dataDir: b.target }), /truncated/);
      await assertNothingRestored(b.target);
    });

    test(`${label}: a missing data or catalog object is named`, async () => {
      const b = await fresh(encrypted);
      await fs.rm(b.file(keys.data(b.id)));
      await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: k }), new RegExp(`object backups/${b.id}/data .*is missing`));
      await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, key: k, dataDir: b.target }), /is missing/);
      const c = await fresh(encrypted);
      await fs.rm(c.file(keys.catalog(c.id)));
      await assert.rejects(verifyBackup({ storage: c.storage, id: c.id, key: k }), new RegExp(`object backups/${c.id}/catalog .*is missing`));
    });

    test(`${label}: a tampered manifest is refused`, async () => {
      const b = await fresh(encrypted);
      const mfile = b.file(keys.manifest(b.id));
      const m = JSON.parse(await fs.readFile(mfile, 'utf8'));
      m.body.summary.files += 1;
      await fs.writeFile(mfile, JSON.stringify(m));
      await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: k }), encrypted ? /wrong key or corrupted data: the manifest/ : /manifest of backup .* is corrupted: its checksum does not match/);
    });
  }

  test('wrong key, and no key for an encrypted backup', async () => {
    const b = await fresh(true);
    const other = new KeyMaterial(randomBytes(32));
    await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: other }), /wrong key or corrupted data/);
    await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, key: other, dataDir: b.target }), /wrong key or corrupted data/);
    await assert.rejects(verifyBackup({ storage: b.storage, id: b.id }), /is encrypted: give its key with --key-file/);
    await assertNothingRestored(b.target);
  });

  test('a generated key is not stretched, a passphrase-like key is; neither opens the other', async () => {
    const root = path.join(work.dir, `repo-${n++}`);
    const storage = await openStorage(`file://${root}`);
    const keyFile = path.join(work.dir, `generated-${n}.key`);
    await writeNewKeyFile(keyFile);
    const generated = await readKeyFile(keyFile);
    assert.equal(generated.generated, true);
    assert.equal(key.generated, false, 'raw random bytes without the prefix are treated as a passphrase');
    const g = await createBackup({ dataDir: src, storage, key: generated });
    const p = await createBackup({ dataDir: src, storage, key });
    assert.deepEqual((await readManifest(storage, g.id)).body.encryption?.kdf, { name: 'none' });
    assert.equal((await readManifest(storage, p.id)).body.encryption?.kdf.name, 'scrypt');
    await verifyBackup({ storage, id: g.id, key: generated });
    await verifyBackup({ storage, id: p.id, key });
    await assert.rejects(verifyBackup({ storage, id: g.id, key }), /wrong key or corrupted data/);
    await assert.rejects(verifyBackup({ storage, id: p.id, key: generated }), /wrong key or corrupted data/);
    // Another generated key: same derivation, different bytes.
    const other = new KeyMaterial(Buffer.from(`${KEY_PREFIX}${randomBytes(32).toString('base64')}`));
    await assert.rejects(verifyBackup({ storage, id: g.id, key: other }), /wrong key or corrupted data/);
  });

  test('an unknown backup id is not found', async () => {
    const b = await fresh(false);
    await assert.rejects(verifyBackup({ storage: b.storage, id: 'no-such-backup', key }), /backup no-such-backup not found/);
    await assert.rejects(deleteBackup(b.storage, 'no-such-backup'), /backup no-such-backup not found/);
  });

  test('a non-empty target is refused; --force replaces it only after success', async () => {
    const b = await fresh(false);
    await fs.mkdir(b.target, { recursive: true });
    await fs.writeFile(path.join(b.target, 'old.couch'), 'old data');
    await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, dataDir: b.target }), /is not empty .*use --force/);
    assert.equal(await fs.readFile(path.join(b.target, 'old.couch'), 'utf8'), 'old data');

    // A forced restore of a damaged backup keeps the old contents.
    const dataFile = b.file(keys.data(b.id));
    const good = await fs.readFile(dataFile);
    const bad = Buffer.from(good);
    bad[bad.length - 100]! ^= 0xff;
    await fs.writeFile(dataFile, bad);
    await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, dataDir: b.target, force: true }));
    assert.deepEqual(await fs.readdir(b.target), ['old.couch']);

    await fs.writeFile(dataFile, good);
    await restoreBackup({ storage: b.storage, id: b.id, dataDir: b.target, force: true });
    const tree = await readTree(b.target);
    assert.ok(!tree.files.some((f) => f.path === 'old.couch'));
    assert.ok(tree.files.some((f) => f.path === '_dbs.couch'));
  });

  test('paths that would escape the target, and non-file entries, are refused', async () => {
    for (const evil of ['../escaped.couch', '/tmp/absolute.couch', 'shards/../../up.couch', 'a//b']) {
      const b = await fresh(false);
      await rewriteCatalog(b.storage, b.id, (c) => {
        (c.entries.find((e) => e.type === 'file') as FileEntry).path = evil;
      });
      await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, dataDir: b.target }), /unsafe entry/);
      await assert.rejects(fs.stat(path.join(work.dir, 'escaped.couch')));
      await assertNothingRestored(b.target);
    }
    const b = await fresh(false);
    await rewriteCatalog(b.storage, b.id, (c) => {
      (c.entries[0] as unknown as { type: string }).type = 'symlink';
    });
    await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, dataDir: b.target }), /unsafe entry .*symlink/);
  });

  test('an upload that fails leaves no usable backup and nothing behind', async () => {
    const root = path.join(work.dir, 'failing-repo');
    const inner = await openStorage(`file://${root}`);
    const failing: Backend = {
      ...inner,
      location: inner.location,
      list: (p) => inner.list(p),
      get: (k, r) => inner.get(k, r),
      stat: (k) => inner.stat(k),
      delete: (k) => inner.delete(k),
      close: () => inner.close(),
      put: async (k, body, o) => {
        if (!k.endsWith('/data')) return inner.put(k, body, o);
        // Accept ~1 MiB, then fail as a broken connection would.
        let seen = 0;
        const cut = Readable.from(
          (async function* () {
            for await (const c of body) {
              seen += (c as Buffer).length;
              if (seen > 1 << 20) throw new Error('connection reset by peer');
              yield c as Buffer;
            }
          })(),
        );
        return inner.put(k, cut, o);
      },
    };
    await assert.rejects(createBackup({ dataDir: src, storage: failing, recordSize: 64 * 1024, compression: 'none' }), /connection reset by peer/);
    const { backups, incomplete } = await listBackups(inner);
    assert.deepEqual(backups, []);
    assert.deepEqual(incomplete, []);
    const left: string[] = [];
    for await (const o of inner.list('backups/')) left.push(o.key);
    assert.deepEqual(left, []);
  });
});

/** Rewrites an unencrypted backup's catalog and reseals its manifest, as an attacker with write access could. */
async function rewriteCatalog(storage: Backend, id: string, edit: (c: Catalog) => void): Promise<void> {
  const { manifest, catalog } = await openBackup(storage, id, undefined);
  edit(catalog);
  const bytes = encodeCatalog(catalog, manifest.body.compression.codec, manifest.body.compression.level, null, manifest.body.recordSize);
  await storage.put(keys.catalog(id), Readable.from([bytes]));
  const body = (await readManifest(storage, id)).body;
  body.objects.catalog = { key: keys.catalog(id), size: bytes.length, sha256: sha256Hex(bytes) };
  body.checksum = body.objects.catalog.sha256;
  await storage.put(keys.manifest(id), Readable.from([Buffer.from(JSON.stringify(sealManifest(body, null)))]));
}
