// Continuous archiving on a directory that changes the way CouchDB changes its files: appends on the same
// inode, a compaction that renames a new file over the old, files created and deleted. Each cut must
// restore exactly the tree of its moment; a cut with nothing new stores nothing; storage grows with the
// bytes appended, not with the number of cuts; retention never removes what a kept point needs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ArchiveStream, archiveStorage, archiveWindow, expireArchive, expireRetired, findCut, listCuts, restoreToTime, retireStream } from '../../src/backup/archive.js';
import { openBackup, readManifest } from '../../src/backup/repository.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import { openStorage, type Backend } from '../../src/storage/index.js';
import { readTree, tempDir } from '../support/tree.js';
import { runCli } from '../support/cli.js';

async function storedBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) n += (await fs.stat(path.join(e.parentPath, e.name))).size;
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('continuous archiving (engine)', () => {
  let scratch: string;
  let cleanup: () => Promise<void>;
  let storage: Backend;
  let key: KeyMaterial;
  let keyText: string;
  before(async () => {
    ({ dir: scratch, cleanup } = await tempDir('archive-'));
    storage = await openStorage(`file://${path.join(scratch, 'repo')}`);
    keyText = `couchtrove-key-v1:${randomBytes(32).toString('base64')}`;
    key = new KeyMaterial(Buffer.from(keyText));
  });
  after(async () => {
    await storage.close();
    await cleanup();
  });

  test('each cut restores its moment; unchanged cuts store nothing; compaction stores the file whole; retention keeps what is needed', async () => {
    const data = path.join(scratch, 'data');
    await fs.mkdir(path.join(data, 'shards/00-ff'), { recursive: true });
    const shard = path.join(data, 'shards/00-ff/db.1.couch');
    await fs.writeFile(shard, randomBytes(256 << 10));
    await fs.writeFile(path.join(data, '_dbs.couch'), randomBytes(8 << 10));
    const stream = new ArchiveStream({ storage, stream: 'inst1', key, dataDir: data, compression: 'none', rebaseShare: 100 });
    const trees: { time: number; tree: Awaited<ReturnType<typeof readTree>> }[] = [];
    const record = async () => {
      const tree = await readTree(data);
      await sleep(3);
      trees.push({ time: Date.now(), tree });
    };

    const first = await stream.cut();
    assert.equal(first.kind, 'base');
    await record();
    const repo = path.join(scratch, 'repo', 'archive', 'inst1');
    const afterBase = await storedBytes(repo);

    // 30 cuts with nothing new: only the head object is rewritten.
    for (let i = 0; i < 30; i++) assert.equal((await stream.cut()).kind, 'unchanged');
    assert.equal((await listCuts(archiveStorage(storage, 'inst1'))).cuts.length, 1);
    assert.ok((await storedBytes(repo)) - afterBase < 1024, 'unchanged cuts stored next to nothing');
    await record();

    // 40 cuts of 4 KiB appended each: storage grows with the bytes appended, not with the cuts.
    let appended = 0;
    for (let i = 0; i < 40; i++) {
      await sleep(2);
      const chunk = randomBytes(4096);
      await fs.appendFile(shard, chunk);
      appended += chunk.length;
      const r = await stream.cut();
      assert.equal(r.kind, 'incremental');
      assert.equal(r.bytes, 4096, 'a cut copies only what was appended');
      if (i % 10 === 9) await record();
    }
    const grown = (await storedBytes(repo)) - afterBase;
    // Per cut: the appended bytes, a record header, a manifest and a delta catalog of one file (~2 KiB).
    assert.ok(grown < appended + 40 * 4096, `40 appends of 4 KiB stored ${grown} bytes`);
    const lastManifest = await readManifest(archiveStorage(storage, 'inst1'), stream.head.latest!);
    assert.ok(lastManifest.body.objects.catalog.size < 4096, `a delta catalog stays small after 40 cuts (${lastManifest.body.objects.catalog.size} bytes)`);
    assert.deepEqual(lastManifest.body.depends.length, 1);

    // Compaction: a new file renamed over the old one is stored whole by the next cut.
    await fs.writeFile(`${shard}.compact.data`, randomBytes(100 << 10));
    await fs.rename(`${shard}.compact.data`, shard);
    await fs.writeFile(path.join(data, 'shards/00-ff/new.2.couch'), randomBytes(1000));
    await fs.rm(path.join(data, '_dbs.couch'));
    await sleep(2);
    const compacted = await stream.cut();
    assert.equal(compacted.bytes, (100 << 10) + 1000);
    await record();
    // The last moment is restorable once a cut has seen it (here: nothing new since).
    await sleep(2);
    assert.equal((await stream.cut()).kind, 'unchanged');

    // Every recorded moment restores exactly.
    for (const [i, t] of trees.entries()) {
      const out = path.join(scratch, `restore-${i}`);
      const r = await restoreToTime({ storage, stream: 'inst1', time: t.time, dataDir: out, key });
      assert.ok(r.cut.end <= t.time);
      assert.deepEqual((await readTree(out)).files.map((f) => [f.path, f.sha256]), t.tree.files.map((f) => [f.path, f.sha256]), `restore point ${i}`);
      await fs.rm(out, { recursive: true });
    }
    await assert.rejects(findCut(storage, 'inst1', Date.now() + 60_000), /after the newest restore point/);
    await assert.rejects(findCut(storage, 'inst1', trees[0]!.time - 3_600_000), /before the oldest restore point/);

    // A restarted writer continues the chain from the repository.
    const again = new ArchiveStream({ storage, stream: 'inst1', key, dataDir: data, compression: 'none', rebaseShare: 100 });
    assert.equal((await again.cut()).kind, 'unchanged');
    await fs.appendFile(shard, randomBytes(10));
    assert.equal((await again.cut()).bytes, 10);

    // Growth past the share of the base: the next cut is a new base.
    const rebasing = new ArchiveStream({ storage, stream: 'inst1', key, dataDir: data, compression: 'none', rebaseShare: 0.01 });
    await fs.appendFile(shard, randomBytes(10_000));
    const base2 = await rebasing.cut();
    assert.equal(base2.kind, 'base', 'the chain outgrew 1% of its base');
    await fs.appendFile(shard, randomBytes(10));
    assert.equal((await rebasing.cut()).kind, 'incremental', 'a new chain is small again');
    const keptTime = Date.now();
    await sleep(5);
    await fs.appendFile(shard, randomBytes(10));
    await rebasing.cut();

    // Retention keeping only from keptTime: the first chain goes, the second stays whole and restores.
    const before = (await listCuts(archiveStorage(storage, 'inst1'))).cuts;
    const ex = await expireArchive(storage, 'inst1', Date.now() - keptTime);
    assert.ok(ex.removed.length > 40 && ex.removed.length < before.length, `removed ${ex.removed.length} of ${before.length}`);
    const left = (await listCuts(archiveStorage(storage, 'inst1'))).cuts;
    assert.equal(left[0]!.id, base2.id);
    for (const c of left) await openBackup(archiveStorage(storage, 'inst1'), c.id, key);
    const w = await archiveWindow(storage, 'inst1');
    assert.equal(w.cuts, left.length);
    const out = path.join(scratch, 'restore-last');
    await restoreToTime({ storage, stream: 'inst1', time: w.newest!, dataDir: out, key });
    assert.deepEqual((await readTree(out)).files.map((f) => [f.path, f.sha256]), (await readTree(data)).files.map((f) => [f.path, f.sha256]));

    // By hand: `agent restore --stream --to-time`.
    const keyFile = path.join(scratch, 'key');
    await fs.writeFile(keyFile, keyText, { mode: 0o600 });
    const cli = path.join(scratch, 'restore-cli');
    const r = await runCli(['agent', 'restore', '--storage', `file://${path.join(scratch, 'repo')}`, '--stream', 'inst1', '--to-time', new Date(w.newest!).toISOString(), '--data-dir', cli, '--key-file', keyFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /restored archive inst1 as of .* \(cut c-\d{13}-[bi], the newest at or before/);
    assert.deepEqual((await readTree(cli)).files.map((f) => [f.path, f.sha256]), (await readTree(data)).files.map((f) => [f.path, f.sha256]));
    const usage = await runCli(['agent', 'restore', '--storage', `file://${path.join(scratch, 'repo')}`, '--stream', 'inst1', '--data-dir', cli]);
    assert.equal(usage.code, 2, 'a stream without a time is a usage error');
  });

  test('a retired stream (its instance deleted) keeps its restore points for keep_days, then goes whole; others are untouched', async () => {
    const data = path.join(scratch, 'data-retire');
    await fs.mkdir(path.join(data, 'shards/00-ff'), { recursive: true });
    await fs.writeFile(path.join(data, 'shards/00-ff/db.1.couch'), randomBytes(64 << 10));
    for (const name of ['gone', 'alive']) {
      const stream = new ArchiveStream({ storage, stream: name, key, dataDir: data, compression: 'none' });
      await stream.cut();
      await fs.appendFile(path.join(data, 'shards/00-ff/db.1.couch'), randomBytes(100));
      await stream.cut();
    }
    assert.equal(await retireStream(storage, 'never-archived', 7), false, 'no stream, nothing to retire');
    const t0 = Date.now();
    assert.equal(await retireStream(storage, 'gone', 2, t0), true);
    // Within the window: restore points stay and restore.
    const within = await expireRetired(storage, t0 + 86_400_000);
    assert.deepEqual(within.removed, []);
    const w = await archiveWindow(storage, 'gone');
    assert.equal(w.cuts, 2);
    await restoreToTime({ storage, stream: 'gone', time: w.newest!, dataDir: path.join(scratch, 'restore-retired'), key });
    // Past it: every object of the stream goes, the live stream stays.
    const past = await expireRetired(storage, t0 + 2 * 86_400_000 + 1000);
    assert.deepEqual(past.removed, ['gone']);
    const left: string[] = [];
    for await (const o of storage.list('archive/gone/')) left.push(o.key);
    assert.deepEqual(left, []);
    assert.equal((await archiveWindow(storage, 'alive')).cuts, 2);
    assert.deepEqual((await expireRetired(storage, t0 + 30 * 86_400_000)).removed, [], 'nothing retired is left');
  });
});
