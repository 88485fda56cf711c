// Per-instance keys (issue 22): each instance's backups are written with a key derived from the master,
// recorded by id in the sealed manifest; one instance's key opens none of another's backups; the control
// plane's ring (the master) opens every one, choosing the key by that id, and backups written with the
// master key before (no key id) stay readable.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createBackup, deleteBackup, listBackups, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { keys, type Manifest } from '../../src/backup/format.js';
import { readManifest, readObject } from '../../src/backup/repository.js';
import { KEY_PREFIX, KeyMaterial, KeyRing, readKeyFile, writeNewKeyFile } from '../../src/crypto/keys.js';
import { InstanceKeys } from '../../src/crypto/instance-keys.js';
import { openStorage } from '../../src/storage/index.js';
import { smallDatadir } from '../support/small-datadir.js';
import { readTree, tempDir } from '../support/tree.js';

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';

describe('per-instance backup keys', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let masterFile: string;
  let ik: InstanceKeys;
  before(async () => {
    work = await tempDir('instance-keys');
    masterFile = path.join(work.dir, 'backup.key');
    await writeNewKeyFile(masterFile);
    ik = new InstanceKeys(masterFile, path.join(work.dir, 'state', 'keys'));
  });
  after(async () => work.cleanup());

  test('derivation: deterministic, one key per instance, a generated key, independent of the master bytes it shows', async () => {
    const master = await readKeyFile(masterFile);
    const a1 = await master.deriveInstanceKey(A);
    const a2 = await (await readKeyFile(masterFile)).deriveInstanceKey(A);
    const b = await master.deriveInstanceKey(B);
    assert.equal(a1.id, `instance:${A}`);
    assert.ok(a1.generated, 'an instance key is a generated key (no scrypt per backup)');
    assert.deepEqual(a1.exportBytes(), a2.exportBytes());
    assert.notDeepEqual(a1.exportBytes(), b.exportBytes());
    assert.notDeepEqual(a1.exportBytes(), master.exportBytes());
    // Another master gives other instance keys.
    const other = new KeyMaterial(Buffer.from(`${KEY_PREFIX}${randomBytes(32).toString('base64')}`));
    assert.notDeepEqual((await other.deriveInstanceKey(A)).exportBytes(), a1.exportBytes());
    // A passphrase master works too (stretched once, reproducibly).
    const pass = new KeyMaterial(Buffer.from('correct horse battery staple, and more words'));
    assert.deepEqual((await pass.deriveInstanceKey(A)).exportBytes(), (await new KeyMaterial(Buffer.from('correct horse battery staple, and more words')).deriveInstanceKey(A)).exportBytes());
  });

  test('instance key files: 0600 in a 0700 directory, the derived key, rewritten when they differ', async () => {
    const file = await ik.file(A);
    assert.equal(path.dirname(file), ik.dir);
    assert.equal((await fs.stat(ik.dir)).mode & 0o777, 0o700);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    const k = await readKeyFile(file);
    assert.ok(k.generated);
    assert.deepEqual(k.exportBytes(), (await (await readKeyFile(masterFile)).deriveInstanceKey(A)).exportBytes());
    await fs.writeFile(file, `${KEY_PREFIX}${randomBytes(32).toString('base64')}\n`);
    await fs.chmod(file, 0o644);
    await ik.file(A);
    assert.deepEqual((await readKeyFile(file)).exportBytes(), k.exportBytes());
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    await assert.rejects(ik.file('../escape'), /invalid instance id/);
  });

  test("A's backup: its key id sealed in the manifest; B's key cannot open it; A's key and the master's ring can", async () => {
    const live = await smallDatadir(path.join(work.dir, 'live-a'));
    const storage = await openStorage(`file://${work.dir}/repo-a`);
    const keyA = await readKeyFile(await ik.file(A), `instance:${A}`);
    const keyB = await readKeyFile(await ik.file(B), `instance:${B}`);
    const ring = new KeyRing(await readKeyFile(masterFile));
    const b = await createBackup({ dataDir: live, storage, key: keyA });
    const m = await readManifest(storage, b.id);
    assert.equal(m.body.encryption?.keyId, `instance:${A}`);
    assert.deepEqual(m.body.encryption?.kdf, { name: 'none' });

    await assert.rejects(restoreBackup({ storage, id: b.id, dataDir: path.join(work.dir, 'never'), key: keyB }), /wrong key.*names key instance:1111.*this is key instance:2222/);
    await assert.rejects(verifyBackup({ storage, id: b.id, key: keyB }), /wrong key/);
    await assert.rejects(restoreBackup({ storage, id: b.id, dataDir: path.join(work.dir, 'never'), key: await readKeyFile(masterFile) }), /wrong key/);
    // B's key file bytes given without an id fail the same way: the seal decides, not the id.
    await assert.rejects(verifyBackup({ storage, id: b.id, key: await readKeyFile(await ik.file(B)) }), /wrong key/);

    for (const [name, key] of [['A', keyA], ['ring', ring]] as const) {
      const dst = path.join(work.dir, `restored-${name}`);
      await restoreBackup({ storage, id: b.id, dataDir: dst, key });
      assert.deepEqual((await readTree(dst)).files.map((f) => [f.path, f.sha256]), (await readTree(live)).files.map((f) => [f.path, f.sha256]));
    }

    // The key id is sealed: pointing it at B (whose key an attacker might hold) breaks the seal under every key.
    const raw = JSON.parse((await readObject(storage, keys.manifest(b.id))).toString('utf8')) as Manifest;
    raw.body.encryption!.keyId = `instance:${B}`;
    await storage.put(keys.manifest(b.id), Readable.from([Buffer.from(JSON.stringify(raw))]));
    await assert.rejects(verifyBackup({ storage, id: b.id, key: ring }), /wrong key/);
    await assert.rejects(verifyBackup({ storage, id: b.id, key: keyB }), /wrong key/);
    await storage.close();
  });

  test('one repository, three keys: the ring lists, verifies and deletes every backup; a chain keeps one key', async () => {
    const live = await smallDatadir(path.join(work.dir, 'live-mixed'));
    const storage = await openStorage(`file://${work.dir}/repo-mixed`);
    const master = await readKeyFile(masterFile);
    const keyA = await readKeyFile(await ik.file(A), `instance:${A}`);
    const keyB = await readKeyFile(await ik.file(B), `instance:${B}`);
    const legacy = await createBackup({ dataDir: live, storage, key: master });
    assert.equal((await readManifest(storage, legacy.id)).body.encryption?.keyId, undefined, 'the master writes no key id (as before)');
    const ofA = await createBackup({ dataDir: live, storage, key: keyA });
    const ofB = await createBackup({ dataDir: live, storage, key: keyB });
    // An incremental on another key's backup is refused: a chain is restored with one key.
    await assert.rejects(createBackup({ dataDir: live, storage, key: keyA, parent: legacy.id }), /./);
    await assert.rejects(createBackup({ dataDir: live, storage, key: keyA, parent: ofB.id }), /wrong key|written with key/);
    const ring = new KeyRing(master);
    await assert.rejects(createBackup({ dataDir: live, storage, key: ring, parent: ofA.id }), /written with key instance:1111.*not master/);
    const incA = await createBackup({ dataDir: live, storage, key: keyA, parent: ofA.id });

    const all = await listBackups(storage, ring);
    assert.deepEqual(all.backups.map((x) => x.id).sort(), [legacy.id, ofA.id, ofB.id, incA.id].sort());
    assert.deepEqual(all.unverified, []);
    for (const id of [legacy.id, ofA.id, ofB.id, incA.id]) await verifyBackup({ storage, id, key: ring });
    // A's key sees only A's backups as trusted.
    const mine = await listBackups(storage, keyA);
    assert.deepEqual(mine.backups.map((x) => x.id).sort(), [ofA.id, incA.id].sort());
    assert.deepEqual(mine.unverified.map((x) => x.id).sort(), [legacy.id, ofB.id].sort());
    // The control plane deletes with the ring: other keys' backups do not hold it up.
    await deleteBackup(storage, ofB.id, ring);
    await deleteBackup(storage, incA.id, ring);
    await deleteBackup(storage, ofA.id, ring);
    assert.deepEqual((await listBackups(storage, ring)).backups.map((x) => x.id), [legacy.id]);
    await storage.close();
  });
});
