// The `couchtrove agent` backup commands as a user runs them: JSON output, exit codes, one-line errors.
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { extractDatadir } from '../support/fixtures.js';
import { runCli } from '../support/cli.js';
import { listFiles, readTree, tempDir } from '../support/tree.js';

describe('couchtrove agent backup|list|verify|restore|delete', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let repo: string;
  let keyFile: string;
  before(async () => {
    work = await tempDir('cli');
    src = await extractDatadir('v2', path.join(work.dir, 'src'));
    repo = `file://${work.dir}/repo`;
    keyFile = path.join(work.dir, 'backup.key');
  });
  after(async () => work.cleanup());

  test('the whole cycle with --json', async () => {
    const kg = await runCli(['agent', 'keygen', '--out', keyFile]);
    assert.equal(kg.code, 0, kg.stderr);
    assert.equal(((await fs.stat(keyFile)).mode & 0o777).toString(8), '600');

    const b = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', keyFile, '--json']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stderr, '', 'no progress bar without a terminal');
    const summary = JSON.parse(b.stdout) as { id: string; size: number; files: number; bytes: number; checksum: string };
    assert.equal(summary.files, 27);
    assert.equal(summary.bytes, 10_503_653);
    assert.ok(summary.size > 0 && summary.size < summary.bytes);
    assert.match(summary.checksum, /^[0-9a-f]{64}$/);
    const keyText = (await fs.readFile(keyFile, 'utf8')).trim();
    const stored = await listFiles(path.join(work.dir, 'repo'));
    assert.ok(stored.length >= 4);
    for (const f of stored) assert.ok(!(await fs.readFile(f)).includes(keyText), `${f} does not contain the key`);

    const l = await runCli(['agent', 'list', '--storage', repo, '--key-file', keyFile, '--json']);
    assert.equal(l.code, 0, l.stderr);
    const listed = JSON.parse(l.stdout) as { id: string; checksum: string }[];
    assert.deepEqual(listed.map((x) => [x.id, x.checksum]), [[summary.id, summary.checksum]]);

    const v = await runCli(['agent', 'verify', '--storage', repo, '--backup', summary.id, '--key-file', keyFile, '--json']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal((JSON.parse(v.stdout) as { files: unknown[] }).files.length, 27);

    const target = path.join(work.dir, 'restored');
    const r = await runCli(['agent', 'restore', '--storage', repo, '--backup', summary.id, '--key-file', keyFile, '--data-dir', target, '--owner', `${process.getuid!()}:${process.getgid!()}`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readTree(target)).files.length, 27);

    const again = await runCli(['agent', 'restore', '--storage', repo, '--backup', summary.id, '--key-file', keyFile, '--data-dir', target]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^couchtrove: restore target .* is not empty .*--force.*\n$/);

    const d = await runCli(['agent', 'delete', '--storage', repo, '--backup', summary.id]);
    assert.equal(d.code, 0, d.stderr);
    const l2 = await runCli(['agent', 'list', '--storage', repo, '--json']);
    assert.deepEqual(JSON.parse(l2.stdout), []);
  });

  const bad: [string, string[], number, RegExp][] = [
    ['missing --storage', ['agent', 'backup', '--data-dir', '/tmp'], 2, /missing required option --storage/],
    ['unknown codec', ['agent', 'backup', '--data-dir', '/tmp', '--storage', 'file:///tmp/x', '--compression', 'lzma'], 2, /--compression: expected one of zstd, gzip, none, got "lzma"/],
    ['unknown scheme', ['agent', 'list', '--storage', 'ftp://host/x'], 1, /unsupported storage URL scheme "ftp:"/],
    ['relative file URL', ['agent', 'list', '--storage', 'file:relative'], 1, /file storage URL|absolute/],
    ['bad backup id', ['agent', 'verify', '--storage', 'file:///tmp/x', '--backup', '../../etc'], 2, /--backup: invalid backup id/],
    ['data dir missing', ['agent', 'backup', '--data-dir', '/nonexistent/couchdb', '--storage', 'file:///tmp/couchtrove-cli-unused'], 1, /data directory \/nonexistent\/couchdb: does not exist/],
    ['unknown backup', ['agent', 'verify', '--storage', 'file:///tmp/couchtrove-cli-unused', '--backup', 'nope'], 1, /backup nope not found/],
    ['bad level', ['agent', 'backup', '--data-dir', '/tmp', '--storage', 'file:///tmp/x', '--compression-level', 'fast'], 2, /--compression-level: expected a whole number/],
  ];
  for (const [name, args, code, message] of bad) {
    test(`bad input: ${name}`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line on stderr: ${r.stderr}`);
    });
  }

  test('credentials in --couchdb-url are refused without echoing them', async () => {
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--couchdb-url', 'http://admin:hunter2-secret@127.0.0.1:5984']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--couchdb-url: credentials must not be given in the URL/);
    assert.ok(!r.stderr.includes('hunter2-secret'));
  });

  test('a key file that is too short is refused', async () => {
    const short = path.join(work.dir, 'short.key');
    await fs.writeFile(short, 'tooshort\n', { mode: 0o600 });
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', short]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /key file .* is too short: at least 32 bytes/);
  });
});
