// Key selection in the control plane (issue 22): the key an agent is given for its own backups, and for a
// restore the key the backup's manifest names, which must be the key of the instance the backup belongs to;
// the master only for a backup written before per-instance keys, and never into a driver that refuses it.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBackup } from '../../src/backup/index.js';
import { readKeyFile, writeNewKeyFile } from '../../src/crypto/keys.js';
import { openStorage } from '../../src/storage/index.js';
import type { Row } from '../../src/state/index.js';
import type { ComputeDriver } from '../../src/compute/driver.js';
import { startPlane, type TestPlane } from '../support/plane.js';
import { smallDatadir } from '../support/small-datadir.js';

const A = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const B = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const Y = 'cccccccc-cccc-4ccc-8ccc-cccccccccccc';

function row(id: string): Row<'instances'> {
  const t = new Date().toISOString();
  return {
    id, project_id: 'local', name: id.slice(0, 4), status: 'ACTIVE', flavor_id: '1', volume_size: 1, datastore: 'couchdb', datastore_version: '3.5',
    configuration_id: null, replica_of: null, host: null, port: null, agent_port: null, agent_pid: null, epmd_port: null, instance_dir: null,
    engine: 'devengine', fault: null, task_id: null, created: t, updated: t,
  };
}

describe('control plane: which key an agent gets', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-keysel-'));
  const stateDir = path.join(dir, 'state');
  const repoUrl = `file://${path.join(dir, 'repo')}`;
  let t: TestPlane;
  const ids: Record<string, string> = {};
  before(async () => {
    fs.mkdirSync(stateDir, { mode: 0o700 });
    await writeNewKeyFile(path.join(stateDir, 'backup.key'));
    t = await startPlane({ stateDir, env: { COUCHTROVE_BACKUP_ENCRYPTION: 'true' } });
    // One backup each: written with A's key, with B's key, and with the master (before per-instance keys).
    const live = await smallDatadir(path.join(dir, 'live'));
    const storage = await openStorage(repoUrl);
    const keys = t.plane.instanceKeys!;
    ids.a = (await createBackup({ dataDir: live, storage, key: await readKeyFile(await keys.file(A), `instance:${A}`) })).id;
    ids.b = (await createBackup({ dataDir: live, storage, key: await readKeyFile(await keys.file(B), `instance:${B}`) })).id;
    ids.legacy = (await createBackup({ dataDir: live, storage, key: await readKeyFile(keys.masterFile) })).id;
    await storage.close();
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('its own backups: its own key file and key id, never the master', async () => {
    const own = await t.plane.ownKey(row(A));
    assert.deepEqual(own, { keyFile: path.join(stateDir, 'keys', `${A}.key`), keyId: `instance:${A}` });
    assert.notEqual(own.keyFile, t.plane.backupKeyFile);
  });

  test("a restore of A's backup into Y gets A's key; a manifest naming another instance's key is refused", async () => {
    assert.deepEqual(await t.plane.restoreKey(row(Y), A, repoUrl, ids.a!), { keyFile: path.join(stateDir, 'keys', `${A}.key`) });
    // B's backup claimed to be A's (a row or a repository someone tampered with): not restored with B's key.
    await assert.rejects(t.plane.restoreKey(row(Y), A, repoUrl, ids.b!), /names key instance:bbbb.*not the key of the instance it belongs to \(aaaa/);
    // A backup whose manifest cannot be read gets its owner's key, never the master.
    assert.deepEqual(await t.plane.restoreKey(row(Y), A, repoUrl, 'no-such-backup'), { keyFile: path.join(stateDir, 'keys', `${A}.key`) });
  });

  test('a backup written with the master key: the master on a driver that takes it, refused by one that does not', async () => {
    assert.deepEqual(await t.plane.restoreKey(row(Y), A, repoUrl, ids.legacy!), { keyFile: t.plane.backupKeyFile });
    const lent: Array<string | undefined> = [];
    const compute = t.compute as typeof t.compute & Pick<ComputeDriver, 'installRestoreKey'>;
    compute.installRestoreKey = async (_inst, hostFile, keyId) => {
      if (keyId === undefined) throw new Error('master refused');
      lent.push(keyId);
      return `/in/container/${path.basename(hostFile)}`;
    };
    try {
      await assert.rejects(t.plane.restoreKey(row(Y), A, repoUrl, ids.legacy!), /master refused/);
      assert.deepEqual(await t.plane.restoreKey(row(Y), A, repoUrl, ids.a!), { keyFile: `/in/container/${A}.key` });
      assert.deepEqual(lent, [`instance:${A}`]);
    } finally {
      delete compute.installRestoreKey;
    }
  });
});
