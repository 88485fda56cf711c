// Issue 14: what someone who can write to the repository (or a crash, or another tool) can make the
// backup tools do. Each test plays the attack or the fault, then checks that it did no harm.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createBackup, deleteBackup, expireBackups, listBackups, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { removeObjects } from '../../src/backup/backup.js';
import { canonicalJson, keys, sha256Hex, type Manifest } from '../../src/backup/format.js';
import { readManifest, readObject, sealManifest } from '../../src/backup/repository.js';
import { measure } from '../../src/backup/snapshot.js';
import { KeyMaterial, readKeyFile } from '../../src/crypto/keys.js';
import { openStorage, type Backend } from '../../src/storage/index.js';
import { smallDatadir, SMALL_SHARD } from '../support/small-datadir.js';
import { readTree, tempDir } from '../support/tree.js';

async function rawManifest(storage: Backend, id: string): Promise<Buffer> {
  return readObject(storage, keys.manifest(id));
}

async function putManifest(storage: Backend, id: string, m: Manifest | Buffer): Promise<void> {
  await storage.put(keys.manifest(id), Readable.from([Buffer.isBuffer(m) ? m : Buffer.from(JSON.stringify(m))]));
}

/** Edits a manifest's body in place, leaving its seal as it was (the attacker has no key). */
async function editManifest(storage: Backend, id: string, edit: (body: Record<string, unknown>) => void): Promise<void> {
  const m = JSON.parse((await rawManifest(storage, id)).toString('utf8')) as Manifest;
  edit(m.body as unknown as Record<string, unknown>);
  await putManifest(storage, id, m);
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

describe('backup tools trust only what authenticates (issue 14)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  const key = new KeyMaterial(randomBytes(32));
  let n = 0;
  const fresh = async () => {
    const base = path.join(work.dir, `case-${n++}`);
    const live = await smallDatadir(path.join(base, 'live'));
    const storage = await openStorage(`file://${base}/repo`);
    return { base, live, storage };
  };
  before(async () => {
    work = await tempDir('trust');
  });
  after(async () => work.cleanup());

  test('an edited `created` does not make expire --keep-last 1 delete the only good backup', async () => {
    const { live, storage } = await fresh();
    const oldest = await createBackup({ dataDir: live, storage, key });
    const edited = await createBackup({ dataDir: live, storage, key });
    const good = await createBackup({ dataDir: live, storage, key });
    // The attack: the middle backup claims to be the newest.
    await editManifest(storage, edited.id, (b) => (b.created = '2099-01-01T00:00:00.000Z'));

    const listed = await listBackups(storage, key);
    assert.deepEqual(listed.backups.map((b) => b.id), [oldest.id, good.id]);
    assert.deepEqual(listed.unverified.map((u) => u.id), [edited.id]);
    assert.match(listed.unverified[0]!.reason, /does not authenticate with this key/);

    const r = await expireBackups(storage, { keepLast: 1 }, false, key);
    assert.equal(r.held, null);
    assert.deepEqual(r.keep.map((k) => [k.backup.id, k.reasons]), [[good.id, ['last 1']]], 'the good backup is the one kept');
    assert.deepEqual(r.remove.map((b) => b.id), [oldest.id], 'the policy still applies to what authenticates');
    assert.deepEqual(r.unverified.map((u) => u.id), [edited.id]);
    const after = await listBackups(storage, key);
    assert.deepEqual(after.backups.map((b) => b.id), [good.id]);
    assert.deepEqual(after.unverified.map((u) => u.id), [edited.id], 'the unverified one is kept, never deleted by the policy');
    await verifyBackup({ storage, id: good.id, key });
    await storage.close();
  });

  test('a forged manifest resealed without the key (plain SHA-256) is not trusted when a key is given', async () => {
    const { live, storage } = await fresh();
    const good = await createBackup({ dataDir: live, storage, key });
    const victim = await createBackup({ dataDir: live, storage, key });
    // Whoever can write to the repository can always compute a plain seal: an "unencrypted" newest backup.
    const body = (await readManifest(storage, victim.id)).body;
    body.encryption = null;
    body.created = '2099-01-01T00:00:00.000Z';
    await putManifest(storage, victim.id, sealManifest(body, null));
    const r = await expireBackups(storage, { keepLast: 1 }, false, key);
    assert.deepEqual(r.keep.map((k) => k.backup.id), [good.id]);
    assert.match(r.unverified[0]!.reason, /not encrypted/);
    await verifyBackup({ storage, id: good.id, key });
    await storage.close();
  });

  test('an edited `depends` does not get an incremental\'s parents deleted', async () => {
    const { live, storage } = await fresh();
    const parent = await createBackup({ dataDir: live, storage, key });
    await fs.appendFile(path.join(live, SMALL_SHARD), randomBytes(4096));
    const inc = await createBackup({ dataDir: live, storage, key, parent: parent.id });
    const newer = await createBackup({ dataDir: live, storage, key });
    const original = await rawManifest(storage, inc.id);
    // The attack: the incremental no longer admits needing its parent.
    await editManifest(storage, inc.id, (b) => {
      b.depends = [];
      b.parent = null;
    });

    const dry = await expireBackups(storage, { keepLast: 1 }, true, key);
    assert.deepEqual(dry.remove, [], 'nothing is to be deleted');
    const r = await expireBackups(storage, { keepLast: 1 }, false, key);
    assert.deepEqual(Object.fromEntries(r.keep.map((k) => [k.backup.id, k.reasons])), { [newer.id]: ['last 1'], [parent.id]: [`needed by unverified ${inc.id}`] });
    assert.deepEqual(r.remove, []);
    await assert.rejects(deleteBackup(storage, parent.id, key), new RegExp(`backup ${parent.id} cannot be deleted: backup ${inc.id}, which does not authenticate .*, depends on it`));

    // Its manifest put back, the incremental restores: nothing it needs was lost.
    await putManifest(storage, inc.id, original);
    const dst = path.join(work.dir, 'depends-restored');
    await restoreBackup({ storage, id: inc.id, dataDir: dst, key });
    const restored = await readTree(dst);
    const source = await readTree(live);
    assert.deepEqual(restored.files.map((f) => [f.path, f.sha256]), source.files.map((f) => [f.path, f.sha256]));
    await storage.close();
  });

  test('an unverified backup whose catalog cannot be read either holds the policy and refuses deletes', async () => {
    const { live, storage } = await fresh();
    const parent = await createBackup({ dataDir: live, storage, key });
    const inc = await createBackup({ dataDir: live, storage, key, parent: parent.id });
    await createBackup({ dataDir: live, storage, key });
    // Its key salt changed too, so its catalog no longer opens: what it needs is unknown.
    await editManifest(storage, inc.id, (b) => {
      b.depends = [];
      b.parent = null;
      (b.encryption as { keySalt: string }).keySalt = randomBytes(32).toString('base64');
    });
    const r = await expireBackups(storage, { keepLast: 1 }, false, key);
    assert.match(r.held ?? '', new RegExp(`backup ${inc.id} does not authenticate .* nothing is deleted`));
    assert.deepEqual((await listBackups(storage, key)).backups.length, 2, 'nothing was deleted');
    await assert.rejects(deleteBackup(storage, parent.id, key), new RegExp(`backup ${inc.id} does not authenticate .* so it may depend on ${parent.id}`));
    // Named explicitly, the unverified backup itself can be deleted; then the policy applies again.
    await deleteBackup(storage, inc.id, key);
    const again = await expireBackups(storage, { keepLast: 1 }, false, key);
    assert.deepEqual(again.remove.map((b) => b.id), [parent.id]);
    await storage.close();
  });

  test('without the key nothing encrypted authenticates: nothing is counted or deleted', async () => {
    const { live, storage } = await fresh();
    const a = await createBackup({ dataDir: live, storage, key });
    await createBackup({ dataDir: live, storage, key });
    const listed = await listBackups(storage);
    assert.deepEqual(listed.backups, []);
    assert.match(listed.unverified[0]!.reason, /is encrypted: give its key with --key-file/);
    const r = await expireBackups(storage, { keepLast: 1 }, false);
    assert.match(r.held ?? '', /give --key-file/);
    assert.equal((await listBackups(storage, key)).backups.length, 2);
    await assert.rejects(deleteBackup(storage, a.id), /give --key-file/);
    await storage.close();
  });

  test('huge scrypt parameters in a manifest fail at once, naming the parameter', async () => {
    const base = path.join(work.dir, 'scrypt');
    const live = await smallDatadir(path.join(base, 'live'));
    const storage = await openStorage(`file://${base}/repo`);
    // A passphrase-like key file: its backups use scrypt.
    const keyFile = path.join(base, 'pass.key');
    await fs.writeFile(path.join(base, 'pass.key'), 'correct horse battery staple, and more of it\n', { mode: 0o600 });
    const pass = await readKeyFile(keyFile);
    const b = await createBackup({ dataDir: live, storage, key: pass });
    const original = await rawManifest(storage, b.id);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ N: 2 ** 30 }, /scrypt parameter N = 1073741824 is out of bounds \(2 to 1048576\)/],
      [{ N: 2 ** 20, r: 32 }, /scrypt parameters N = 1048576, r = 32 need 4096 MiB, more than the 256 MiB allowed/],
      [{ p: 1000 }, /scrypt parameter p = 1000 is out of bounds \(1 to 16\)/],
      [{ r: 0 }, /scrypt parameter r = 0 is out of bounds/],
      [{ N: 3000 }, /scrypt parameter N = 3000 is not a power of 2/],
      [{ N: 2 ** 17, r: 8, p: 4 }, /scrypt parameters N = 131072, r = 8, p = 4 ask for 512 MiB of work, more than the 256 MiB allowed/],
    ];
    for (const [params, message] of cases) {
      await putManifest(storage, b.id, original);
      await editManifest(storage, b.id, (body) => Object.assign((body.encryption as { kdf: object }).kdf, params));
      const started = performance.now();
      await assert.rejects(verifyBackup({ storage, id: b.id, key: pass }), message);
      await assert.rejects(restoreBackup({ storage, id: b.id, key: pass, dataDir: path.join(base, 'never') }), message);
      const listed = await listBackups(storage, pass);
      assert.match(listed.unverified[0]!.reason, message);
      const ms = performance.now() - started;
      assert.ok(ms < 1000, `refused in ${ms.toFixed(0)} ms`);
    }
    await putManifest(storage, b.id, original);
    await verifyBackup({ storage, id: b.id, key: pass });
    await storage.close();
  });

  test('an incremental whose parent is deleted while it runs fails instead of completing', async () => {
    const { live, storage } = await fresh();
    const parent = await createBackup({ dataDir: live, storage, key });
    await fs.appendFile(path.join(live, '_dbs.couch'), randomBytes(4096));
    let refused: Error | undefined;
    await assert.rejects(
      createBackup({
        dataDir: live,
        storage,
        key,
        parent: parent.id,
        id: 'inc-racing',
        afterMeasure: async () => {
          // delete sees the incremental's lock, and refuses ...
          refused = await deleteBackup(storage, parent.id, key).then(() => undefined, (e: unknown) => e as Error);
          // ... but another tool, or a delete that read the repository before the lock existed, removes it.
          await removeObjects(storage, parent.id);
        },
      }),
      new RegExp(`backup inc-racing depends on backup ${parent.id}, which was deleted or damaged while it was written .*not completed`),
    );
    assert.match(refused?.message ?? '', new RegExp(`backup ${parent.id} cannot be deleted: backup inc-racing, still being written, builds on it \\(being written by pid ${process.pid}`));
    const listed = await listBackups(storage, key);
    assert.deepEqual([listed.backups, listed.unverified, listed.incomplete], [[], [], []], 'nothing is listed as usable, nothing left');
    await storage.close();
  });

  test('delete refuses a backup still being written; a dead or stale lock holds nothing', async () => {
    const { live, storage } = await fresh();
    let refused: Error | undefined;
    let beats: string[] = [];
    const s = await createBackup({
      dataDir: live,
      storage,
      key,
      id: 'being-written',
      heartbeatMs: 20,
      afterMeasure: async () => {
        refused = await deleteBackup(storage, 'being-written', key).then(() => undefined, (e: unknown) => e as Error);
        const first = JSON.parse((await readObject(storage, keys.lock('being-written'))).toString('utf8')) as { heartbeat: string };
        await new Promise((r) => setTimeout(r, 150));
        const later = JSON.parse((await readObject(storage, keys.lock('being-written'))).toString('utf8')) as { heartbeat: string };
        beats = [first.heartbeat, later.heartbeat];
        const listed = await listBackups(storage, key);
        assert.equal(listed.incomplete[0]?.writing, true);
      },
    });
    assert.match(refused?.message ?? '', /backup being-written cannot be deleted: it is still being written \(being written by pid \d+ on .*, last heartbeat \d+ s ago\)/);
    assert.ok(beats[1]! > beats[0]!, `the heartbeat moves on: ${beats.join(' -> ')}`);
    assert.equal(await storage.stat(keys.lock(s.id)), undefined, 'the lock is gone once the backup completes');

    // Locks left by writers that are gone: on this host a dead pid; elsewhere, a heartbeat too old.
    const lock = async (id: string, body: object) => storage.put(keys.lock(id), Readable.from([Buffer.from(JSON.stringify({ id, started: new Date().toISOString(), depends: [], ...body }))]));
    await lock('dead-pid', { host: hostname(), pid: await deadPid(), heartbeat: new Date().toISOString() });
    await lock('stale', { host: 'elsewhere', pid: 1, heartbeat: new Date(Date.now() - 3600_000).toISOString() });
    await lock('alive-elsewhere', { host: 'elsewhere', pid: 1, heartbeat: new Date().toISOString() });
    // A backup of this process that failed while the storage was down could not remove its lock.
    await lock('given-up', { host: hostname(), pid: process.pid, heartbeat: new Date().toISOString() });
    const listed = await listBackups(storage, key);
    assert.deepEqual(listed.incomplete.map((i) => [i.id, i.writing]).sort(), [['alive-elsewhere', true], ['dead-pid', false], ['given-up', false], ['stale', false]]);
    assert.match(listed.incomplete.find((i) => i.id === 'dead-pid')!.reason, /has exited/);
    assert.match(listed.incomplete.find((i) => i.id === 'given-up')!.reason, /this process\) gave it up/);
    await deleteBackup(storage, 'given-up', key);
    await deleteBackup(storage, 'dead-pid', key);
    await deleteBackup(storage, 'stale', key);
    await assert.rejects(deleteBackup(storage, 'alive-elsewhere', key), /still being written \(being written by pid 1 on elsewhere/);
    await storage.close();
  });

  test('verify notices bytes appended to a data object', async () => {
    const { live, storage } = await fresh();
    const b = await createBackup({ dataDir: live, storage, key });
    const data = await readObject(storage, keys.data(b.id));
    await storage.put(keys.data(b.id), Readable.from([Buffer.concat([data, Buffer.from('extra')])]));
    await assert.rejects(verifyBackup({ storage, id: b.id, key }), new RegExp(`object backups/${b.id}/data of backup ${b.id} has 5 bytes more than its manifest records`));

    // Unencrypted, the manifest can be rewritten to match: then the catalog does not account for them.
    const plain = await createBackup({ dataDir: live, storage });
    const pdata = await readObject(storage, keys.data(plain.id));
    await storage.put(keys.data(plain.id), Readable.from([Buffer.concat([pdata, randomBytes(100)])]));
    const body = (await readManifest(storage, plain.id)).body;
    body.objects.data.size += 100;
    await putManifest(storage, plain.id, { body, seal: { alg: 'sha256', value: sha256Hex(canonicalJson(body)) } });
    await assert.rejects(verifyBackup({ storage, id: plain.id }), new RegExp(`bytes ${pdata.length} to ${pdata.length + 100} belong to no file of the catalog`));
    await storage.close();
  });

  test('a symbolic link in the data directory fails the backup, naming it; --follow-symlinks backs up what it points to', async () => {
    const { base, live, storage } = await fresh();
    // A shard directory moved to another disk, a symlink left in its place.
    const moved = path.join(base, 'other-disk/shards-00000000-7fffffff');
    await fs.mkdir(path.dirname(moved), { recursive: true });
    await fs.rename(path.join(live, 'shards/00000000-7fffffff'), moved);
    await fs.symlink(moved, path.join(live, 'shards/00000000-7fffffff'));
    await assert.rejects(measure(live), /a symbolic link in .* would not be backed up: shards\/00000000-7fffffff\. .*--follow-symlinks/);
    await assert.rejects(createBackup({ dataDir: live, storage, key }), /symbolic link .*shards\/00000000-7fffffff/);
    assert.deepEqual(await listBackups(storage, key), { backups: [], unverified: [], incomplete: [] }, 'nothing left in the repository');

    const s = await createBackup({ dataDir: live, storage, key, followSymlinks: true });
    assert.deepEqual(s.followedSymlinks, [`shards/00000000-7fffffff -> ${moved}`]);
    const dst = path.join(base, 'restored');
    await restoreBackup({ storage, id: s.id, dataDir: dst, key });
    assert.ok((await fs.lstat(path.join(dst, 'shards/00000000-7fffffff'))).isDirectory(), 'restored as a real directory');
    const restored = await readTree(dst);
    assert.deepEqual(restored.files.map((f) => f.path), ['_dbs.couch', SMALL_SHARD]);
    await storage.close();
  });

  test('restore --config-dir refuses to overwrite files without force and never writes through a link', async () => {
    const { base, live, storage } = await fresh();
    const etc = path.join(base, 'etc');
    await fs.mkdir(path.join(etc, 'local.d'), { recursive: true });
    await fs.writeFile(path.join(etc, 'local.ini'), '[admins]\nadmin = -pbkdf2-hash\n');
    await fs.writeFile(path.join(etc, 'local.d/extra.ini'), '[log]\nlevel = info\n');
    const b = await createBackup({ dataDir: live, storage, key, configDir: etc });

    // An existing file: refused without --force, before anything is written.
    const target = path.join(base, 'config-target');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'local.ini'), 'mine\n');
    const data1 = path.join(base, 'data-1');
    await assert.rejects(restoreBackup({ storage, id: b.id, dataDir: data1, key, configDir: target }), new RegExp(`configuration directory: ${target}/local.ini already exists; use --force to replace it`));
    assert.equal(await fs.readFile(path.join(target, 'local.ini'), 'utf8'), 'mine\n');
    assert.equal(await fs.stat(data1).catch(() => null), null, 'the data directory was not touched');
    const r = await restoreBackup({ storage, id: b.id, dataDir: data1, key, configDir: target, force: true });
    assert.equal(r.configFiles, 2);
    assert.equal(await fs.readFile(path.join(target, 'local.ini'), 'utf8'), '[admins]\nadmin = -pbkdf2-hash\n');

    // A subdirectory that is a link out of the target: refused even with --force; the outside is untouched.
    const outside = path.join(base, 'outside');
    await fs.mkdir(outside);
    const linked = path.join(base, 'config-linked');
    await fs.mkdir(linked);
    await fs.symlink(outside, path.join(linked, 'local.d'));
    for (const force of [false, true]) {
      await assert.rejects(
        restoreBackup({ storage, id: b.id, dataDir: path.join(base, `data-link-${force}`), key, configDir: linked, force }),
        new RegExp(`configuration directory: ${linked}/local.d is a symbolic link: refusing to write through it`),
      );
    }
    assert.deepEqual(await fs.readdir(outside), []);
    await storage.close();
  });

  test('a restore removes the staging directories killed restores left, and nothing else', async () => {
    const { base, live, storage } = await fresh();
    const b = await createBackup({ dataDir: live, storage, key });
    const target = path.join(base, 'target');
    // What a killed restore leaves: its staging directory, with or without its writer file.
    const killed = path.join(target, '.couchtrove-restore-old-backup');
    await fs.mkdir(path.join(killed, 'data/shards'), { recursive: true });
    await fs.writeFile(path.join(killed, 'data/shards/half.couch'), randomBytes(1000));
    await fs.writeFile(path.join(killed, 'writer.json'), JSON.stringify({ host: hostname(), pid: await deadPid() }));
    const early = path.join(target, `.couchtrove-restore-${b.id}`);
    await fs.mkdir(path.join(early, 'data'), { recursive: true });
    const r = await restoreBackup({ storage, id: b.id, dataDir: target, key });
    assert.deepEqual(r.removedStaging.sort(), [early, killed].sort());
    assert.deepEqual((await fs.readdir(target)).sort(), ['.delete', '_dbs.couch', 'shards']);

    // Look-alikes are not ours: a directory with other content, a link. The target is then not empty.
    const other = path.join(base, 'other');
    const lookalike = path.join(other, '.couchtrove-restore-mine');
    await fs.mkdir(lookalike, { recursive: true });
    await fs.writeFile(path.join(lookalike, 'notes.txt'), 'keep me');
    await fs.symlink(work.dir, path.join(other, '.couchtrove-restore-link'));
    await assert.rejects(restoreBackup({ storage, id: b.id, dataDir: other, key }), /is not empty/);
    assert.equal(await fs.readFile(path.join(lookalike, 'notes.txt'), 'utf8'), 'keep me');
    assert.ok((await fs.lstat(path.join(other, '.couchtrove-restore-link'))).isSymbolicLink());

    // A staging directory whose writer is alive belongs to a restore in progress.
    const busy = path.join(base, 'busy');
    await fs.mkdir(path.join(busy, '.couchtrove-restore-x/data'), { recursive: true });
    await fs.writeFile(path.join(busy, '.couchtrove-restore-x/writer.json'), JSON.stringify({ host: hostname(), pid: process.ppid }));
    await assert.rejects(restoreBackup({ storage, id: b.id, dataDir: busy, key }), new RegExp(`being restored into by another process \\(pid ${process.ppid}`));
    assert.ok(await fs.stat(path.join(busy, '.couchtrove-restore-x/data')));
    await storage.close();
  });

  test('key files readable or writable by group or others are refused', async () => {
    const file = path.join(work.dir, 'modes.key');
    await fs.writeFile(file, `${'k'.repeat(40)}\n`);
    for (const mode of [0o666, 0o644, 0o640, 0o620, 0o604]) {
      await fs.chmod(file, mode);
      await assert.rejects(readKeyFile(file), new RegExp(`key file ${file} has mode 0${mode.toString(8)}: it must not be readable or writable by group or others \\(chmod 600 `));
    }
    for (const mode of [0o600, 0o400]) {
      await fs.chmod(file, mode);
      assert.ok(await readKeyFile(file));
    }
  });
});
