// The measuring pass: what is left out, and the order that keeps a live copy consistent.
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { measure, passRank } from '../../src/backup/snapshot.js';
import { extractDatadir } from '../support/fixtures.js';
import { tempDir } from '../support/tree.js';

test('pass order: _dbs.couch, then indexes, then shards, then the rest', async () => {
  const { dir, cleanup } = await tempDir('snapshot');
  try {
    await extractDatadir('v1', dir);
    const snap = await measure(dir);
    try {
      const ranks = snap.files.map((f) => passRank(f.root, f.path));
      assert.deepEqual(ranks, [...ranks].sort((a, b) => a - b), 'ranks never decrease');
      assert.equal(snap.files[0]!.path, '_dbs.couch');
      const lastView = snap.files.findLastIndex((f) => f.path.endsWith('.view'));
      const firstShard = snap.files.findIndex((f) => f.path.startsWith('shards/'));
      assert.ok(lastView < firstShard, 'every index is measured before every shard');
      assert.ok(snap.files.every((f) => f.fd !== null), 'every file is opened in the pass');
    } finally {
      snap.close();
    }
  } finally {
    await cleanup();
  }
});

test('compaction files and .delete/ content are left out and reported', async () => {
  const { dir, cleanup } = await tempDir('snapshot');
  try {
    await extractDatadir('v1', dir);
    const shard = (await fs.readdir(path.join(dir, 'shards/00000000-7fffffff'))).find((n) => n.startsWith('inventory.'))!;
    await fs.writeFile(path.join(dir, 'shards/00000000-7fffffff', `${shard}.compact.data`), 'partial');
    await fs.writeFile(path.join(dir, 'shards/00000000-7fffffff', `${shard}.compact.meta`), 'partial');
    await fs.writeFile(path.join(dir, '.delete', 'old.couch'), 'deleted');
    const snap = await measure(dir);
    snap.close();
    const paths = snap.files.map((f) => f.path);
    assert.ok(!paths.some((p) => p.includes('.compact.')));
    assert.ok(!paths.some((p) => p.startsWith('.delete/')));
    assert.ok(snap.dirs.some((d) => d.path === '.delete'));
    const reasons = Object.fromEntries(snap.skipped.map((s) => [s.path, s.reason]));
    assert.match(reasons[`shards/00000000-7fffffff/${shard}.compact.data`]!, /compaction/);
  } finally {
    await cleanup();
  }
});
