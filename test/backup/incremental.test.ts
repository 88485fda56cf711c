// Incremental backups on the real fixtures: the data directory evolves in place as CouchDB changed it
// (v1 -> v2 grew append-only on the same inodes, v2 -> v3 replaced files by compaction), and each
// incremental restores the exact snapshot while storing only what is new.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBackup, deleteBackup, expireBackups, listBackups, restoreBackup, verifyBackup, type BackupSummary } from '../../src/backup/index.js';
import { plan } from '../../src/backup/expire.js';
import { keys, type ManifestBody } from '../../src/backup/format.js';
import { openBackup } from '../../src/backup/repository.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import { openStorage, type Backend } from '../../src/storage/index.js';
import { expectedFiles, extractDatadir, FIXTURES, type Version } from '../support/fixtures.js';
import { readTree, tempDir } from '../support/tree.js';

interface Compare {
  path: string;
  status: string;
  size_a: number | null;
  size_b: number | null;
}

/** Turns the tree at `live` (snapshot `from`) into snapshot `to` the way CouchDB did: append, replace, create, delete. */
async function evolve(live: string, to: Version, scratch: string, from: Version): Promise<void> {
  const next = await extractDatadir(to, path.join(scratch, `${to}-source`));
  const compare = JSON.parse(await fs.readFile(path.join(FIXTURES, `compare-${from}-${to}.json`), 'utf8')) as Compare[] | Record<string, Compare>;
  const rows: Compare[] = Array.isArray(compare) ? compare : Object.entries(compare).map(([p, c]) => ({ ...c, path: c.path ?? p }));
  for (const c of rows) {
    const dst = path.join(live, c.path);
    const src = path.join(next, c.path);
    if (c.status === 'grown-append-only') {
      const all = await fs.readFile(src);
      await fs.appendFile(dst, all.subarray(c.size_a!)); // same inode, as CouchDB appends
    } else if (c.status.startsWith('replaced')) {
      await fs.copyFile(src, `${dst}.compact.data`);
      await fs.rename(`${dst}.compact.data`, dst); // new inode, as compaction swaps files
    } else if (c.status === 'new') {
      await fs.mkdir(path.dirname(dst), { recursive: true });
      await fs.copyFile(src, dst);
    } else if (c.status === 'removed') {
      await fs.rm(dst);
    }
  }
  // mtimes as in the snapshot, so that restored trees compare whole.
  for (const f of expectedFiles(to)) await fs.utimes(path.join(live, f.path), f.mtime, f.mtime);
}

async function assertSnapshot(dir: string, v: Version): Promise<void> {
  const tree = await readTree(dir);
  assert.deepEqual(
    tree.files.map((f) => [f.path, f.size, f.sha256]),
    expectedFiles(v).map((f) => [f.path, f.size, f.sha256]),
    `restored tree equals snapshot ${v}`,
  );
}

describe('incremental backups', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  const key = new KeyMaterial(randomBytes(32));
  before(async () => {
    work = await tempDir('incremental');
  });
  after(async () => work.cleanup());

  for (const encrypted of [false, true]) {
    test(`v1 -> v2 (append-only) -> v3 (compaction), chain of three${encrypted ? ', encrypted' : ''}`, async () => {
      const base = path.join(work.dir, `chain-${encrypted}`);
      const k = encrypted ? key : undefined;
      const live = await extractDatadir('v1', path.join(base, 'live'));
      const storage = await openStorage(`file://${base}/repo`);
      const b1 = await createBackup({ dataDir: live, storage, key: k });
      await evolve(live, 'v2', base, 'v1');
      const b2 = await createBackup({ dataDir: live, storage, key: k, parent: b1.id });
      await evolve(live, 'v3', base, 'v2');
      const b3 = await createBackup({ dataDir: live, storage, key: k, parent: b2.id });

      assert.equal(b2.parent, b1.id);
      assert.equal(b3.parent, b2.id);
      // v1 -> v2 appended 1,425,408 bytes to 9 files, and added 2 new shards: only that is read and stored.
      const appended = 598016 + 495616 + 114688 + 36864 + 8192;
      assert.ok(b2.bytes < 3_000_000 && b2.bytes >= appended, `incremental read ${b2.bytes} bytes, v2 is ${b2.totalBytes}`);
      assert.equal(b2.totalBytes, 10_503_653);
      assert.ok(b2.size < b1.size / 2, `incremental stored ${b2.size}, full ${b1.size}`);
      // v2 -> v3 replaced the inventory shards and JS views: those are copied whole, the rest reused.
      assert.ok(b3.bytes < b3.totalBytes / 2, `b3 read ${b3.bytes} of ${b3.totalBytes}`);

      for (const [b, v] of [[b1, 'v1'], [b2, 'v2'], [b3, 'v3']] as [BackupSummary, Version][]) {
        const dst = path.join(base, `restore-${v}`);
        await restoreBackup({ storage, id: b.id, dataDir: dst, key: k });
        await assertSnapshot(dst, v);
        const verified = await verifyBackup({ storage, id: b.id, key: k });
        assert.equal(verified.files.length, expectedFiles(v).length);
      }
      const { catalog } = await openBackup(storage, b3.id, k);
      const deps = new Set(catalog.entries.flatMap((e) => (e.type === 'file' ? e.extents.map((x) => x.backup) : [])));
      assert.deepEqual([...deps].sort(), [b1.id, b2.id, b3.id].sort(), 'the v3 catalog uses bytes of all three backups');

      // Parents cannot be deleted under their children; the newest can.
      await assert.rejects(deleteBackup(storage, b1.id, k), new RegExp(`backup ${b1.id} cannot be deleted: incremental backup .*depends on it`));
      await assert.rejects(deleteBackup(storage, b2.id, k), /cannot be deleted/);
      await storage.close();
    });
  }

  test('a missing or corrupted parent fails the child with an error naming the parent', async () => {
    const base = path.join(work.dir, 'broken-parent');
    const live = await extractDatadir('v1', path.join(base, 'live'));
    const storage = await openStorage(`file://${base}/repo`);
    const b1 = await createBackup({ dataDir: live, storage });
    await evolve(live, 'v2', base, 'v1');
    const b2 = await createBackup({ dataDir: live, storage, parent: b1.id });
    const dataFile = path.join(base, 'repo', ...keys.data(b1.id).split('/'));
    const good = await fs.readFile(dataFile);
    const bad = Buffer.from(good);
    bad[100]! ^= 0x40;
    await fs.writeFile(dataFile, bad);
    await assert.rejects(verifyBackup({ storage, id: b2.id }), new RegExp(`object backups/${b1.id}/data`));
    await assert.rejects(restoreBackup({ storage, id: b2.id, dataDir: path.join(base, 'r1') }), new RegExp(`backups/${b1.id}/data`));
    await fs.rm(path.join(base, 'repo', ...keys.manifest(b1.id).split('/')));
    await assert.rejects(verifyBackup({ storage, id: b2.id }), new RegExp(`depends on backup ${b1.id}, which cannot be read: backup ${b1.id} not found`));
    await assert.rejects(restoreBackup({ storage, id: b2.id, dataDir: path.join(base, 'r2') }), new RegExp(`depends on backup ${b1.id}`));
    await storage.close();
  });

  test('never trusting size alone: shrunk, rewritten, replaced and re-created files are copied again', async () => {
    const base = path.join(work.dir, 'edges');
    const live = await extractDatadir('v1', path.join(base, 'live'));
    const storage = await openStorage(`file://${base}/repo`);
    const b1 = await createBackup({ dataDir: live, storage });
    const files = expectedFiles('v1').filter((f) => f.path.endsWith('.couch') && f.size > 200_000);
    const [shrunk, tailRewritten, sameSizeNewInode, midRewritten] = files.map((f) => f.path);
    // A file that shrank.
    await fs.truncate(path.join(live, shrunk!), 100_000);
    // Same size, same inode, different last bytes (where any CouchDB commit changes a file).
    const fh = await fs.open(path.join(live, tailRewritten!), 'r+');
    const size = (await fh.stat()).size;
    await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, size - 4096);
    await fh.close();
    // A new file (new inode) of exactly the same size under the same path.
    const p3 = path.join(live, sameSizeNewInode!);
    const st3 = await fs.stat(p3);
    await fs.writeFile(`${p3}.new`, Buffer.alloc(st3.size, 0x33));
    await fs.rename(`${p3}.new`, p3);
    // Same size, same inode, one byte changed in the middle, between the fingerprint's samples:
    // only a full parent check sees it (CouchDB never rewrites bytes before the end of a file).
    const p4 = path.join(live, midRewritten!);
    const st4 = await fs.stat(p4);
    const fh4 = await fs.open(p4, 'r+');
    await fh4.write(Buffer.from([0xff]), 0, 1, 65536 + 1000);
    await fh4.close();
    void st4;

    const b2 = await createBackup({ dataDir: live, storage, parent: b1.id, parentCheck: 'full' });
    const dst = path.join(base, 'restored');
    await restoreBackup({ storage, id: b2.id, dataDir: dst });
    const restored = new Map((await readTree(dst)).files.map((f) => [f.path, f]));
    const now = new Map((await readTree(live)).files.map((f) => [f.path, f]));
    for (const [p, f] of now) assert.equal(restored.get(p)?.sha256, f.sha256, `${p} restored as it is on disk`);
    const { catalog } = await openBackup(storage, b2.id, undefined);
    const entry = (p: string) => catalog.entries.find((e) => e.path === p && e.type === 'file');
    for (const p of [shrunk, tailRewritten, sameSizeNewInode, midRewritten]) {
      const e = entry(p!);
      assert.ok(e && e.type === 'file' && e.extents.every((x) => x.backup === b2.id), `${p} was copied again, not taken from the parent`);
    }
    // The default sampled check also refuses the tail rewrite and the new inode without reading whole files.
    const b3 = await createBackup({ dataDir: live, storage, parent: b1.id });
    const c3 = (await openBackup(storage, b3.id, undefined)).catalog;
    for (const p of [shrunk, tailRewritten, sameSizeNewInode]) {
      const e = c3.entries.find((x) => x.path === p && x.type === 'file');
      assert.ok(e && e.type === 'file' && e.extents.every((x) => x.backup === b3.id), `${p} copied again with the sampled check`);
    }
    await storage.close();
  });

  test('retention keeps the newest, one per day and week, and every ancestor of what it keeps', async () => {
    const m = (id: string, created: string, depends: string[] = []): ManifestBody => ({ id, created, depends, parent: depends.at(-1) ?? null }) as unknown as ManifestBody;
    const backups = [
      m('full-mon', '2026-11-16T01:00:00Z'),
      m('inc-mon-2', '2026-11-16T13:00:00Z', ['full-mon']),
      m('full-tue', '2026-11-17T01:00:00Z'),
      m('inc-tue', '2026-11-17T13:00:00Z', ['full-tue']),
      m('full-sun', '2026-11-08T01:00:00Z'),
      m('full-old', '2026-10-01T01:00:00Z'),
    ];
    const last1 = plan(backups, { keepLast: 1 });
    assert.deepEqual([...last1.keep.keys()].sort(), ['full-tue', 'inc-tue']);
    assert.deepEqual(last1.keep.get('full-tue'), ['needed by inc-tue']);
    const daily = plan(backups, { keepDaily: 2 });
    assert.deepEqual([...daily.keep.keys()].sort(), ['full-mon', 'full-tue', 'inc-mon-2', 'inc-tue']);
    const weekly = plan(backups, { keepWeekly: 3 });
    assert.deepEqual([...weekly.keep.keys()].sort(), ['full-old', 'full-sun', 'full-tue', 'inc-tue']);
    assert.throws(() => plan(backups, {}), /must keep something/);
  });

  test('expire on a repository: dry run first, then only what is not needed goes', async () => {
    const base = path.join(work.dir, 'expire');
    const live = await extractDatadir('v1', path.join(base, 'live'));
    const storage: Backend = await openStorage(`file://${base}/repo`);
    const old = await createBackup({ dataDir: live, storage });
    const full = await createBackup({ dataDir: live, storage });
    const inc = await createBackup({ dataDir: live, storage, parent: full.id });
    const dry = await expireBackups(storage, { keepLast: 1 }, true);
    assert.deepEqual(dry.remove.map((b) => b.id), [old.id]);
    assert.equal((await listBackups(storage)).backups.length, 3, 'a dry run deletes nothing');
    const done = await expireBackups(storage, { keepLast: 1 }, false);
    assert.deepEqual(done.remove.map((b) => b.id), [old.id]);
    assert.deepEqual((await listBackups(storage)).backups.map((b) => b.id).sort(), [full.id, inc.id].sort());
    await restoreBackup({ storage, id: inc.id, dataDir: path.join(base, 'restored') });
    await assertSnapshot(path.join(base, 'restored'), 'v1');
    await storage.close();
  });
});
