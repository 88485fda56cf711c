// `agent backup --parent` and `agent expire` as a user runs them.
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { extractDatadir } from '../support/fixtures.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/tree.js';

test('incremental with --parent latest, then expire with a dry run', async () => {
  const { dir, cleanup } = await tempDir('cli-inc');
  try {
    const src = await extractDatadir('v1', path.join(dir, 'src'));
    const repo = `file://${dir}/repo`;
    const none = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--parent', 'latest']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /--parent latest: .* holds no backup yet/);

    const full = JSON.parse((await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--json'])).stdout) as { id: string; size: number };
    await fs.appendFile(path.join(src, '_dbs.couch'), Buffer.alloc(8192, 1));
    const inc = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--parent', 'latest', '--json']);
    assert.equal(inc.code, 0, inc.stderr);
    const s = JSON.parse(inc.stdout) as { parent: string; bytes: number; totalBytes: number; size: number };
    assert.equal(s.parent, full.id);
    assert.equal(s.bytes, 8192);
    assert.equal(s.totalBytes, 8_340_863 + 8192);
    assert.ok(s.size < 20_000, `stored ${s.size} bytes`);

    const dry = await runCli(['agent', 'expire', '--storage', repo, '--keep-last', '1', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`keep +${full.id} .*needed by`));
    assert.match(dry.stdout, /2 kept, 0 would be deleted \(dry run\)/);
    const bad = await runCli(['agent', 'expire', '--storage', repo]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /must keep something/);
    const del = await runCli(['agent', 'delete', '--storage', repo, '--backup', full.id]);
    assert.equal(del.code, 1);
    assert.match(del.stderr, /cannot be deleted: incremental backup .* depends on it/);
  } finally {
    await cleanup();
  }
});
