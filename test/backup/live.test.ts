// A backup taken while files are appended to, replaced by rename (as compaction does), created and
// deleted: every restored file is exactly the prefix measured at the cut, a replaced file is the file
// that was measured (never the new one read through the old path), and no index is ahead of its shard.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createBackup, restoreBackup } from '../../src/backup/index.js';
import { openBackup } from '../../src/backup/repository.js';
import type { FileEntry } from '../../src/backup/format.js';
import { openStorage } from '../../src/storage/index.js';
import { expectedFiles, extractDatadir } from '../support/fixtures.js';
import { readTree, tempDir } from '../support/tree.js';

const BLOCK = 4096;

// Appends numbered 4 KiB blocks, each first to a shard and then to the index of that shard, as CouchDB
// commits a document before its view is updated. Runs until killed.
const WRITER = `
import { openSync, writeSync } from 'node:fs';
const [shard, view] = process.argv.slice(2).map((p) => openSync(p, 'a'));
const block = (n, tag) => { const b = Buffer.alloc(${BLOCK}, tag); b.write('block ' + n + ' ', 0); return b; };
process.send?.('ready');
for (let n = 0; ; n++) {
  writeSync(shard, block(n, 's'));
  writeSync(view, block(n, 'v'));
  if (n % 64 === 0) await new Promise((r) => setImmediate(r));
}
`;

test('live writes, compaction swap, creation and deletion during a backup', async () => {
  const { dir, cleanup } = await tempDir('live');
  const writer = { proc: undefined as ReturnType<typeof spawn> | undefined };
  try {
    const src = await extractDatadir('v1', path.join(dir, 'src'));
    const original = new Map(expectedFiles('v1').map((f) => [f.path, f]));
    const pick = (re: RegExp) => [...original.keys()].find((p) => re.test(p))!;
    const liveShard = pick(/^shards\/00000000-7fffffff\/inventory\.\d+\.couch$/);
    const liveView = pick(/^\.shards\/00000000-7fffffff\/inventory\.\d+_design\/mrview\/8ab0.*\.view$/);
    const compacted = pick(/^shards\/80000000-ffffffff\/inventory\.\d+\.couch$/);
    const deleted = pick(/^shards\/00000000-7fffffff\/conflicts\.\d+\.couch$/);
    const appendedAfterCut = '_users.couch';
    const created = 'shards/00000000-7fffffff/orders.1795239999.couch';

    await fs.writeFile(path.join(dir, 'writer.mjs'), WRITER);
    writer.proc = spawn(process.execPath, [path.join(dir, 'writer.mjs'), path.join(src, liveShard), path.join(src, liveView)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise((r) => writer.proc!.once('message', r));
    await sleep(200);

    const storage = await openStorage(`file://${dir}/repo`);
    const summary = await createBackup({
      dataDir: src,
      storage,
      recordSize: 128 * 1024,
      afterMeasure: async () => {
        // Everything below happens after the cut and before the first byte is copied.
        await fs.appendFile(path.join(src, appendedAfterCut), Buffer.alloc(1 << 20, 'x'));
        const replacement = path.join(src, `${compacted}.compact.data`);
        await fs.writeFile(replacement, Buffer.alloc(original.get(compacted)!.size * 2, 'C'));
        await fs.rename(replacement, path.join(src, compacted));
        await fs.writeFile(path.join(src, created), Buffer.alloc(8192, 'n'));
        await fs.rm(path.join(src, deleted));
        await sleep(100);
      },
    });
    writer.proc.kill('SIGKILL');
    const { catalog } = await openBackup(storage, summary.id, undefined);
    const recorded = new Map(catalog.entries.filter((e): e is FileEntry => e.type === 'file').map((e) => [e.path, e]));

    const dst = path.join(dir, 'restored');
    await restoreBackup({ storage, id: summary.id, dataDir: dst });
    const restored = new Map((await readTree(dst)).files.map((f) => [f.path, f]));

    // Untouched, appended-after-cut, replaced and deleted files are exactly the originals.
    for (const [p, f] of original) {
      if (p === liveShard || p === liveView) continue;
      assert.equal(restored.get(p)?.sha256, f.sha256, `${p} is the file measured at the cut`);
    }
    assert.ok(!restored.has(created), 'a file created after the cut is not in the backup');

    // Appended files: the restored bytes are a prefix of the final file, of the size recorded at the cut.
    const blocksAfter = async (p: string): Promise<number> => {
      const live = await fs.readFile(path.join(src, p));
      const got = await fs.readFile(path.join(dst, p));
      assert.equal(got.length, recorded.get(p)!.size);
      assert.ok(live.subarray(0, got.length).equals(got), `${p}: restored bytes are a prefix of the live file`);
      const orig = original.get(p)!;
      assert.equal(createHash('sha256').update(got.subarray(0, orig.size)).digest('hex'), orig.sha256);
      return Math.floor((got.length - orig.size) / BLOCK);
    };
    const shardBlocks = await blocksAfter(liveShard);
    const viewBlocks = await blocksAfter(liveView);
    assert.ok(shardBlocks > 0, 'the writer was appending while the pass ran');
    assert.ok(viewBlocks <= shardBlocks, `index (${viewBlocks} blocks) is never ahead of its shard (${shardBlocks})`);
    await storage.close();
  } finally {
    writer.proc?.kill('SIGKILL');
    await cleanup();
  }
});
