// Issue 22, point 3 and readiness: the files a real `couchtrove server` keeps in its state directory are
// readable by no other user (state.db and its WAL were 0644: every project's instances, ports and user
// names, for any local user or instance uid), also when an older version left them 0644; and
// /health/ready says not ready, with the reason, while the state directory's disk is full.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandbox, startServer, killUnder, tempDir, type RealServer } from '../support/server.js';

const { stateDir, track } = sandbox('couchtrove-state-files-');

/** Every file and directory under dir (instances/ left out: the agents' files are another table), with its mode. */
function modes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (r === 'instances') continue;
      const st = fs.lstatSync(path.join(d, e.name));
      out.set(r, st.mode & 0o7777);
      if (e.isDirectory()) walk(path.join(d, e.name), r);
    }
  };
  walk(dir, '');
  return out;
}

/** The narrowest mode each file the server makes can have; anything not listed must be private too. */
const EXPECTED: Record<string, number> = {
  'state.db': 0o600,
  'state.db-wal': 0o600,
  'state.db-shm': 0o600,
  'server.lock': 0o600,
  'server.lock-journal': 0o600,
  'server.pid': 0o600,
  'backup.key': 0o600,
  backups: 0o700,
  secrets: 0o700,
};

function checkModes(where: string): void {
  const found = modes(stateDir);
  for (const must of ['state.db', 'server.lock', 'server.pid', 'backup.key']) assert.ok(found.has(must), `${where}: ${must} exists (found ${[...found.keys()].join(', ')})`);
  const table = [...found].map(([f, m]) => `${f} ${m.toString(8)}`).join(', ');
  for (const [file, mode] of found) {
    const want = EXPECTED[file];
    if (want !== undefined) assert.equal(mode.toString(8), want.toString(8), `${where}: ${file} (all: ${table})`);
    else assert.equal(mode & 0o077, 0, `${where}: ${file} has mode ${mode.toString(8)}: readable or writable by others (all: ${table})`);
  }
}

let server: RealServer | undefined;

test('the state directory holds nothing other users can read, also after an older version left state.db 0644', { timeout: 120_000 }, async () => {
  server = track(await startServer(stateDir));
  // A write or two, so that the WAL and shared-memory files exist.
  const r = await fetch(`${server.api}/configurations`, {
    method: 'POST',
    headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' },
    body: JSON.stringify({ configuration: { name: 'modes', values: {}, datastore: { type: 'couchdb', version: '3.5' } } }),
  });
  assert.ok(r.status < 300, `create configuration: ${r.status} ${await r.text()}`);
  assert.ok(fs.existsSync(path.join(stateDir, 'state.db-wal')), 'the WAL exists while the server runs');
  checkModes('first start');
  await server.kill('SIGKILL');

  // What an older version left: every file 0644 (a SIGKILL leaves the WAL and shm behind).
  for (const f of ['state.db', 'state.db-wal', 'state.db-shm', 'server.lock', 'server.pid']) {
    if (fs.existsSync(path.join(stateDir, f))) fs.chmodSync(path.join(stateDir, f), 0o644);
  }
  server = track(await startServer(stateDir));
  checkModes('restart over 0644 files');
  const list = await fetch(`${server.api}/configurations`, { headers: { 'x-auth-token': 'notused' } });
  assert.equal(list.status, 200);
  assert.equal(((await list.json()) as { configurations: unknown[] }).configurations.length, 1, 'the state survived');
  await server.kill('SIGTERM');
});

test('the state database is never opened through a symbolic link', { timeout: 60_000 }, async () => {
  const dir = tempDir('couchtrove-state-link-');
  try {
    const st = path.join(dir, 'state');
    fs.mkdirSync(st, { mode: 0o700 });
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'not a database', { mode: 0o644 });
    fs.symlinkSync(victim, path.join(st, 'state.db'));
    await assert.rejects(startServer(st), /exited 1/);
    assert.equal(fs.statSync(victim).mode & 0o777, 0o644, 'the link target was not touched');
    assert.equal(fs.readFileSync(victim, 'utf8'), 'not a database');
  } finally {
    killUnder(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Readiness on a full disk: a small tmpfs as the state directory, filled. Needs root (mount).
const isRoot = process.getuid?.() === 0;
let mounted: string | undefined;
let diskServer: RealServer | undefined;
let diskRoot: string | undefined;
after(async () => {
  await diskServer?.kill('SIGKILL');
  if (diskRoot) killUnder(diskRoot);
  if (mounted) execFileSync('umount', [mounted]);
  if (diskRoot) fs.rmSync(diskRoot, { recursive: true, force: true });
});

test('/health/ready is not ready, naming the full state disk, and ready again once space is freed', { timeout: 120_000 }, async (t) => {
  if (!isRoot) {
    t.skip('needs root to mount a small tmpfs as the state directory');
    process.stderr.write('skipped: the full-disk readiness test needs root (mount -t tmpfs)\n');
    return;
  }
  diskRoot = tempDir('couchtrove-state-disk-');
  const st = path.join(diskRoot, 'state');
  fs.mkdirSync(st, { mode: 0o700 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'tmpfs', st]);
  mounted = st;
  diskServer = await startServer(st);
  const ready = async () => {
    const r = await fetch(`${diskServer!.url}/health/ready`);
    return { status: r.status, body: (await r.json()) as { status: string; checks: Record<string, string>; failing?: string[] } };
  };
  const before = await ready();
  assert.equal(before.status, 200, JSON.stringify(before.body));
  assert.equal(before.body.checks.state_disk, 'ok');

  // Fill the file system until it refuses a write.
  const filler = path.join(st, 'filler');
  const fd = fs.openSync(filler, 'w', 0o600);
  const chunk = Buffer.alloc(1 << 20, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    fs.closeSync(fd);
  }
  const full = await ready();
  assert.equal(full.status, 503, JSON.stringify(full.body));
  assert.equal(full.body.status, 'not ready');
  assert.deepEqual(full.body.failing, ['state_disk']);
  assert.match(full.body.checks.state_disk!, /^full: \d+ bytes free of \d+/);
  assert.match(diskServer.log(), /not ready: state_disk full/);

  fs.rmSync(filler);
  const again = await ready();
  assert.equal(again.status, 200, JSON.stringify(again.body));
  await diskServer.kill('SIGTERM');
  diskServer = undefined;
});
