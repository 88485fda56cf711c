#!/usr/bin/env node
// The engine's job end to end on embedded defaults: back up a real CouchDB 3.5 data directory (from the
// project's test fixtures) into a local encrypted repository, list and verify it, restore it into a
// new directory and check every file against the fixture's list. Usage: npm run demo [-- --keep]
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';

const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test/fixtures/couchdb-3.5');
const work = mkdtempSync(join(tmpdir(), 'couchtrove-demo-'));
const data = join(work, 'couchdb-data');
const repo = `file://${join(work, 'repository')}`;
const key = join(work, 'backup.key');
const restored = join(work, 'restored-data');

const run = (...args) => {
  console.log(`\n$ couchtrove ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [join(root, 'bin/couchtrove.js'), ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  process.stdout.write(r.stdout);
  if (r.status !== 0) {
    console.error(`demo: couchtrove ${args[1]} failed (exit ${r.status})`);
    process.exit(1);
  }
  return r.stdout;
};

console.log(`demo: a real CouchDB 3.5 data directory (fixture datadir-v3) in ${data}`);
await import('node:fs').then((fs) => fs.mkdirSync(data, { recursive: true }));
await tar.x({ file: join(fixtures, 'datadir-v3.tar.gz'), cwd: data });

run('agent', 'keygen', '--out', key);
const summary = JSON.parse(run('agent', 'backup', '--data-dir', data, '--storage', repo, '--key-file', key, '--json'));
run('agent', 'list', '--storage', repo);
run('agent', 'verify', '--storage', repo, '--backup', summary.id, '--key-file', key);
run('agent', 'restore', '--storage', repo, '--backup', summary.id, '--key-file', key, '--data-dir', restored);

const expected = readFileSync(join(fixtures, 'files-v3.txt'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split('\t'));
let bad = 0;
for (const [path, size, , , sha] of expected) {
  const bytes = readFileSync(join(restored, path));
  if (bytes.length !== Number(size) || createHash('sha256').update(bytes).digest('hex') !== sha) {
    console.error(`demo: ${path} differs from the original`);
    bad++;
  }
}
console.log(`\ndemo: ${expected.length - bad} of ${expected.length} restored files are byte-identical to what CouchDB wrote`);
if (!process.argv.includes('--keep')) rmSync(work, { recursive: true, force: true });
else console.log(`demo: left everything in ${work}`);
process.exit(bad === 0 ? 0 : 1);
