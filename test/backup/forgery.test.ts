// Issue 22, point 5 and the head.json part of point 8: a storage operator (who can write any object of the
// repository, but has no key) forges unencrypted backups, archive cuts and archive heads. With a key, none
// of them is restored, verified or believed; without a key (an unencrypted repository trusts its storage)
// everything works as before.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createBackup, readBackupMetadata, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { removeObjects } from '../../src/backup/backup.js';
import { ArchiveStream, archiveStorage, archiveWindow, cutMetadata, findCut, listCuts, restoreToTime } from '../../src/backup/archive.js';
import { keys } from '../../src/backup/format.js';
import { readManifest, readObject } from '../../src/backup/repository.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import { openStorage, type Backend } from '../../src/storage/index.js';
import { smallDatadir, SMALL_SHARD } from '../support/small-datadir.js';
import { readTree, tempDir } from '../support/tree.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function put(storage: Backend, key: string, data: Buffer | string): Promise<void> {
  await storage.put(key, Readable.from([Buffer.from(data)]));
}

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

describe('forged unencrypted backups, cuts and heads are refused when a key is given (issue 22)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  const key = new KeyMaterial(Buffer.from(`couchtrove-key-v1:${randomBytes(32).toString('base64')}`));
  let n = 0;
  const fresh = async () => {
    const base = path.join(work.dir, `case-${n++}`);
    const live = await smallDatadir(path.join(base, 'live'));
    // What the operator wants restored: recognisable "documents".
    const forged = await smallDatadir(path.join(base, 'forged'));
    await fs.writeFile(path.join(forged, SMALL_SHARD), Buffer.from('FORGED DOCUMENTS '.repeat(1000)));
    const storage = await openStorage(`file://${base}/repo`);
    return { base, live, forged, storage };
  };
  before(async () => {
    work = await tempDir('forgery');
  });
  after(async () => work.cleanup());

  test('a forged unencrypted full backup under a real backup id: verify, restore and metadata refuse it, naming it', async () => {
    const { base, live, forged, storage } = await fresh();
    const real = await createBackup({ dataDir: live, storage, key });
    await verifyBackup({ storage, id: real.id, key });
    // The attack: the real backup's objects replaced by an unencrypted backup of the operator's data, same id.
    await removeObjects(storage, real.id);
    await createBackup({ dataDir: forged, storage, id: real.id });
    assert.equal((await readManifest(storage, real.id)).body.encryption, null, 'the forgery is in place');

    const refused = new RegExp(`backup ${real.id} is not encrypted, but a key was given`);
    await assert.rejects(verifyBackup({ storage, id: real.id, key }), refused);
    await assert.rejects(readBackupMetadata(storage, real.id, key), refused);
    const target = path.join(base, 'restored');
    await assert.rejects(restoreBackup({ storage, id: real.id, key, dataDir: target }), refused);
    assert.equal(await exists(path.join(target, SMALL_SHARD)), false, 'no forged byte reached the target');

    // Without a key (an unencrypted repository) the same backup still restores, as before.
    await restoreBackup({ storage, id: real.id, dataDir: path.join(base, 'plain') });
    assert.deepEqual(await readTree(path.join(base, 'plain')).then((t) => t.files.map((f) => f.sha256)), await readTree(forged).then((t) => t.files.map((f) => f.sha256)));
    await storage.close();
  });

  test('a forged unencrypted parent under an encrypted incremental: restore and verify fail naming the parent', async () => {
    const { base, live, forged, storage } = await fresh();
    const parent = await createBackup({ dataDir: live, storage, key });
    await fs.appendFile(path.join(live, SMALL_SHARD), randomBytes(4096));
    const child = await createBackup({ dataDir: live, storage, key, parent: parent.id });
    await verifyBackup({ storage, id: child.id, key });
    await removeObjects(storage, parent.id);
    await createBackup({ dataDir: forged, storage, id: parent.id });
    const refused = new RegExp(`backup ${parent.id} is not encrypted, but a key was given`);
    await assert.rejects(verifyBackup({ storage, id: child.id, key }), refused);
    const target = path.join(base, 'restored');
    await assert.rejects(restoreBackup({ storage, id: child.id, key, dataDir: target }), refused);
    assert.equal(await exists(path.join(target, SMALL_SHARD)), false);
    // An unencrypted incremental forged on top of a real parent is refused too.
    const forgedChild = 'forged-child';
    await createBackup({ dataDir: forged, storage, id: forgedChild });
    await assert.rejects(restoreBackup({ storage, id: forgedChild, key, dataDir: target }), new RegExp(`backup ${forgedChild} is not encrypted, but a key was given`));
    await storage.close();
  });

  /** A keyed stream of three cuts, each of a different state, with the times between them. */
  const threeCuts = async (streamName: string, k: KeyMaterial | undefined) => {
    const { base, live, forged, storage } = await fresh();
    const stream = new ArchiveStream({ storage, stream: streamName, key: k, dataDir: live, compression: 'none', rebaseShare: 1000 });
    const states: { at: number; cut: string; tree: Awaited<ReturnType<typeof readTree>> }[] = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await fs.appendFile(path.join(live, SMALL_SHARD), randomBytes(8192));
      const r = await stream.cut();
      // Its restore point: the end of its measuring pass (the next cut begins later).
      states.push({ at: r.restorePoint, cut: r.id!, tree: await readTree(live) });
      await sleep(5);
    }
    return { base, live, forged, storage, stream, states, s: archiveStorage(storage, streamName) };
  };

  test('a forged unencrypted archive cut (point-in-time) is refused: window, cut choice, metadata and restore', async () => {
    const { base, forged, storage, states, s } = await threeCuts('pitr1', key);
    // Sanity: the genuine stream restores to the newest point under the key.
    const ok = await restoreToTime({ storage, stream: 'pitr1', time: states[2]!.at, key, dataDir: path.join(base, 'ok') });
    assert.equal(ok.cut.id, states[2]!.cut);
    // The attack: the newest cut replaced by an unencrypted full backup of the operator's data, with believable labels.
    const victim = states[2]!.cut;
    const labels = (await readManifest(s, victim)).body.labels;
    await removeObjects(s, victim);
    await createBackup({ dataDir: forged, storage: s, id: victim, labels });
    const refused = new RegExp(`backup ${victim} is not encrypted, but a key was given`);
    await assert.rejects(findCut(storage, 'pitr1', states[2]!.at, key), refused);
    await assert.rejects(cutMetadata(storage, 'pitr1', victim, key), refused);
    const target = path.join(base, 'restored');
    await assert.rejects(restoreToTime({ storage, stream: 'pitr1', time: states[2]!.at, key, dataDir: target }), refused);
    assert.equal(await exists(path.join(target, SMALL_SHARD)), false, 'no forged byte reached the target');
    // A forged middle cut is refused by the restore of any later time too (its chain goes through it).
    await storage.close();
  });

  test('head.json: an edited window, a stripped seal and garbage are refused; without a key garbage is a clear error', async () => {
    const { base, storage, states, s } = await threeCuts('head1', key);
    const head = JSON.parse((await readObject(s, 'head.json')).toString('utf8')) as Record<string, unknown>;
    assert.equal((head.auth as { cut: string }).cut, states[2]!.cut, 'the head is signed for its latest cut');
    const future = Date.now() + 3_600_000;
    await assert.rejects(findCut(storage, 'head1', future, key), /after the newest restore point/, 'a time outside the genuine window is refused');

    // Edited: the window widened by an hour, seal left as it was.
    await put(s, 'head.json', JSON.stringify({ ...head, restorePoint: future }));
    await assert.rejects(findCut(storage, 'head1', future - 1000, key), /head\.json of archive head1 does not authenticate with this key/);
    await assert.rejects(restoreToTime({ storage, stream: 'head1', time: future - 1000, key, dataDir: path.join(base, 'r1') }), /does not authenticate/);
    await assert.rejects(archiveWindow(storage, 'head1', key), /does not authenticate/);
    // Stripped of its seal (as an older version's head is): not believed, the window ends at the newest cut.
    const { auth: _a, ...unsigned } = head;
    await put(s, 'head.json', JSON.stringify({ ...unsigned, restorePoint: future }));
    await assert.rejects(findCut(storage, 'head1', future - 1000, key), /after the newest restore point of archive head1/);
    assert.equal((await findCut(storage, 'head1', states[2]!.at, key)).id, states[2]!.cut, 'the authenticated cuts still restore');
    assert.ok((await archiveWindow(storage, 'head1', key)).newest! <= states[2]!.at, 'an unsigned head does not widen the window shown');
    // Signed for another (older, genuine) cut: a seal cannot be moved.
    await put(s, 'head.json', JSON.stringify({ ...head, auth: { ...(head.auth as object), cut: states[0]!.cut } }));
    await assert.rejects(findCut(storage, 'head1', states[2]!.at, key), /is signed for cut/);
    // Garbage: a clear error naming the object, with or without a key.
    await put(s, 'head.json', '{"stream": "head1", "latest": ');
    await assert.rejects(findCut(storage, 'head1', states[2]!.at, key), /head\.json of archive head1 is corrupted: not valid JSON/);
    await assert.rejects(findCut(storage, 'head1', states[2]!.at), /head\.json of archive head1 is corrupted: not valid JSON/);
    await put(s, 'head.json', JSON.stringify({ ...head, restorePoint: 'soon' }));
    await assert.rejects(findCut(storage, 'head1', states[2]!.at), /head\.json of archive head1 is corrupted: "restorePoint" is not a time/);
    // Withheld (deleted) head: the window ends at the newest authenticated cut, never later.
    await s.delete('head.json');
    assert.equal((await findCut(storage, 'head1', states[2]!.at, key)).id, states[2]!.cut);
    await assert.rejects(findCut(storage, 'head1', states[2]!.at + 60_000, key), /after the newest restore point/);
    // Put back, the genuine head works again.
    await put(s, 'head.json', JSON.stringify(head));
    assert.equal((await findCut(storage, 'head1', states[1]!.at, key)).id, states[1]!.cut);
    await storage.close();
  });

  test('a withheld cut is an error naming it, never a silent fall back to the previous cut', async () => {
    const { base, storage, states, s } = await threeCuts('withheld1', key);
    // The newest cut withheld: the signed head still names it.
    const newest = states[2]!.cut;
    const saved = await readObject(s, keys.manifest(newest));
    await s.delete(keys.manifest(newest));
    assert.deepEqual((await listCuts(s)).cuts.map((c) => c.id), [states[0]!.cut, states[1]!.cut]);
    await assert.rejects(findCut(storage, 'withheld1', states[2]!.at, key), new RegExp(`cut ${newest} of archive withheld1 is missing`));
    const target = path.join(base, 'restored');
    await assert.rejects(restoreToTime({ storage, stream: 'withheld1', time: states[2]!.at, key, dataDir: target }), new RegExp(`cut ${newest} .* is missing`));
    assert.equal(await exists(path.join(target, SMALL_SHARD)), false);
    await put(s, keys.manifest(newest), saved);

    // A middle cut withheld: the next cut's sealed link names it.
    const middle = states[1]!.cut;
    await s.delete(keys.manifest(middle));
    await assert.rejects(findCut(storage, 'withheld1', states[1]!.at, key), new RegExp(`cut ${middle} of archive withheld1 is missing .*: cut ${newest} follows it`));
    // A time the newest cut serves still restores (nothing withheld is on its path other than its chain, which then fails loudly).
    assert.equal((await findCut(storage, 'withheld1', states[2]!.at, key)).id, newest);
    await storage.close();
  });

  test('an unencrypted stream (no key) keeps working: cuts, window, restore to a time', async () => {
    const { base, storage, states } = await threeCuts('plain1', undefined);
    const w = await archiveWindow(storage, 'plain1');
    assert.equal(w.cuts, 3);
    for (const st of states) {
      const target = path.join(base, `r-${st.cut}`);
      const r = await restoreToTime({ storage, stream: 'plain1', time: st.at, dataDir: target });
      assert.equal(r.cut.id, st.cut);
      assert.deepEqual((await readTree(target)).files.map((f) => [f.path, f.sha256]), st.tree.files.map((f) => [f.path, f.sha256]));
    }
    await storage.close();
  });
});
