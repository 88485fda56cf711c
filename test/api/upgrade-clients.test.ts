// Instance upgrade (issue 15) through `openstack database instance upgrade`, on a real server: a backup is
// taken first, CouchDB restarts from the new version's release directory, and the instance reports the
// version; a release that does not start puts the old one back, with the reason, and keeps the data.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, sandbox, api, waitStatus, processesUnder, basicAuth, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { repoRoot } from '../support/postgres.js';

const skip = clientsSkip;
const { root, stateDir, track } = sandbox('couchtrove-upgrade-');
const release36 = path.join(root, 'release-3.6');
const broken = path.join(root, 'release-3.7');
let server: RealServer | undefined;
let id = '';
let couch = '';
before(async () => {
  if (skip) return;
  // 3.6 is the same release under another directory (the switch is what is tested): its bin/couchdb marks
  // the process's environment with the directory and runs the real one; 3.7 is a release whose CouchDB does not start.
  const real = process.env.COUCHDB_HOME ?? path.join(repoRoot, 'devengine', 'release');
  fs.mkdirSync(path.join(release36, 'bin'), { recursive: true });
  fs.symlinkSync(path.join(real, 'etc'), path.join(release36, 'etc'));
  fs.writeFileSync(path.join(release36, 'bin', 'couchdb'), `#!/bin/sh\nCOUCHTROVE_TEST_RELEASE='${release36}'\nexport COUCHTROVE_TEST_RELEASE\nexec '${real}/bin/couchdb' "$@"\n`, { mode: 0o755 });
  for (const d of [release36, path.join(release36, 'bin')]) fs.chmodSync(d, 0o755);
  fs.mkdirSync(path.join(broken, 'bin'), { recursive: true });
  fs.writeFileSync(path.join(broken, 'bin', 'couchdb'), '#!/bin/sh\necho "this release is broken on purpose" >&2\nexit 1\n', { mode: 0o755 });
  fs.chmodSync(broken, 0o755);
  const conf = path.join(root, 'couchtrove.ini');
  fs.writeFileSync(conf, `[datastore_version:3.5]\ndefault = true\n\n[datastore_version:3.6]\ncouchdb_home = ${release36}\n\n[datastore_version:3.7]\ncouchdb_home = ${broken}\n`);
  server = track(await startServer(stateDir, { COUCHTROVE_CONFIG_FILE: conf }));
  const r = await api(server.api, 'POST', '/instances', { instance: { name: 'up1', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'keep' }], users: [{ name: 'ku', password: 'keep-pw-1', databases: [{ name: 'keep' }] }] } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  id = (r.json.instance as J).id as string;
  couch = (await waitStatus(server.api, 'instances', id, ['ACTIVE'])).couchdb_url as string;
});

const { os } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;
const auth = basicAuth('ku', 'keep-pw-1');

async function settled(): Promise<J> {
  await new Promise((r) => setTimeout(r, 500));
  return waitStatus(server!.api, 'instances', id, ['ACTIVE', 'ERROR', 'FAILED', 'SHUTDOWN'], 300_000);
}

test('openstack database instance upgrade: backup first, CouchDB from the new release, version shown; a broken release rolls back', { skip, timeout: clientBudget(6, 600_000) }, async () => {
  const w = await fetch(`${couch}/keep/before-upgrade`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: '{"v":1}' });
  assert.equal(w.status, 201, await w.text());
  assert.equal(processesUnder(release36).length, 0);

  await os('instance', 'upgrade', id, '3.6');
  const up = await settled();
  assert.equal(up.status, 'ACTIVE', JSON.stringify(up.fault));
  assert.equal((up.datastore as J).version, '3.6', JSON.stringify(up));
  assert.ok(processesUnder(release36).length > 0, 'CouchDB runs from the 3.6 release directory');
  const shown = await osJson('instance', 'show', 'up1');
  assert.equal(shown.datastore_version, '3.6');
  assert.match(String(shown.datastore_version_number), /^\d+\.\d+\.\d+/);
  const backups = JSON.parse(await os('backup', 'list', '-f', 'json')) as J[];
  assert.ok(backups.some((b) => b.Name === 'pre-upgrade-3.6' && b.Status === 'COMPLETED'), JSON.stringify(backups));
  const r1 = await fetch(`${couch}/keep/before-upgrade`, { headers: { authorization: auth } });
  assert.equal(r1.status, 200, 'the data is there after the upgrade');

  await os('instance', 'upgrade', id, '3.7');
  const back = await settled();
  assert.equal(back.status, 'ACTIVE', JSON.stringify(back));
  assert.equal((back.datastore as J).version, '3.6', 'still on 3.6');
  assert.match(String((back.fault as J).message), /did not run from couchdb 3\.7's release .*the instance is back on 3\.6/);
  assert.ok(processesUnder(release36).length > 0, 'CouchDB runs from the 3.6 release again');
  const r2 = await fetch(`${couch}/keep/before-upgrade`, { headers: { authorization: auth } });
  assert.equal(r2.status, 200, 'the data is there after the rollback');
  await assert.rejects(os('instance', 'upgrade', id, '3.5'), /older than 3\.6: CouchDB does not support downgrades.*\(HTTP 400\)/);
});
