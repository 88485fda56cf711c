// `couchtrove instance show` in units people read (issue 15): volume in GB with two decimals (bytes in
// --json), flavor name, data size and document count, last backup, the keys waiting for a restart;
// a backup's locationRef naming where its objects are (backups/<id>/ in the repository); instance upgrade.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { apiCli, runMain } from '../support/cli.js';
import { startPlane, until, type TestPlane } from '../support/plane.js';

let p: TestPlane;
let url = '';
before(async () => {
  p = await startPlane({ env: { COUCHTROVE_DATASTORE_VERSIONS: '3.5,3.6' } });
  url = await p.app.listen({ host: '127.0.0.1', port: 0 });
});
after(async () => p.close());

const { cli, json } = apiCli(() => url);

test('instance show: GB with two decimals, flavor name, data, last backup, pending restart keys; bytes in --json', async () => {
  const inst = (await json<{ instance: { id: string } }>('instance', 'create', '--name', 'readable', '--flavor', 'small', '--size', '2', '--databases', 'a,b', '--wait')).instance;
  p.compute.agents.get(inst.id)!.usedBytes = 1_610_612_736; // 1.5 GiB
  const b = (await json<{ backup: { id: string; locationRef: string } }>('backup', 'create', '--instance', 'readable', '--name', 'nightly', '--wait')).backup;
  const conf = (await json<{ configuration: { id: string } }>('configuration', 'create', '--name', 'needs-restart', '--values', '{"chttpd_auth_cache/max_lifetime": 700000}')).configuration;
  const att = await runMain(['configuration', 'attach', '--instance', 'readable', '--configuration', conf.id, '--api-url', url]);
  assert.equal(att.code, 0, att.err);
  await until('RESTART_REQUIRED', async () => (await json<{ instance: { status: string } }>('instance', 'show', 'readable')).instance.status, (s) => s === 'RESTART_REQUIRED');

  const r = await cli('instance', 'show', 'readable');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^volume\s+1\.50 of 2\.00 GB used \(75%\)$/m);
  assert.match(r.out, /^flavor\s+small \(2\)$/m);
  const n = p.compute.agents.get(inst.id)!.dbs.size; // the fake counts 7 documents and 4096 bytes per database
  assert.match(r.out, new RegExp(`^data\\s+${7 * n} documents in ${n} databases, 0\\.00 GB on disk$`, 'm'));
  assert.match(r.out, /^addresses\s+127\.0\.0\.1$/m);
  assert.match(r.out, new RegExp(`^last_backup\\s+${b.id} nightly, completed \\d{4}-\\d\\d-\\d\\dT[\\d:]+, \\d+\\.\\d\\d GB$`, 'm'));
  assert.match(r.out, /^pending_restart\s+chttpd_auth_cache\/max_lifetime \(restart the instance to apply\)$/m);

  const j = (await json<{ instance: { volume: Record<string, number>; data: Record<string, number>; last_backup: { id: string; size_bytes: number }; pending_restart: string[]; flavor: { id: string; name: string } } }>('instance', 'show', 'readable')).instance;
  assert.deepEqual(j.volume, { size: 2, size_bytes: 2 * 1024 ** 3, used: 1.5, used_bytes: 1_610_612_736 });
  assert.equal(j.data.documents, 7 * n);
  assert.equal(j.data.size_bytes, 4096 * n);
  assert.equal(j.last_backup.id, b.id);
  assert.deepEqual(j.pending_restart, ['chttpd_auth_cache/max_lifetime']);
  assert.deepEqual(j.flavor.name, 'small');
  // The repository keeps a backup's objects under backups/<id>/ (src/backup/format.ts).
  assert.ok(b.locationRef.endsWith(`/backups/${b.id}/`), b.locationRef);
});

test('instance upgrade --wait: exit 1 when the new release does not run (rolled back), 0 and the new version when it does', async () => {
  const inst = (await json<{ instance: { id: string } }>('instance', 'create', '--name', 'to-upgrade', '--flavor', 'tiny', '--size', '1', '--wait')).instance;
  const rolledBack = await cli('instance', 'upgrade', 'to-upgrade', '--datastore-version', '3.6', '--wait');
  assert.equal(rolledBack.code, 1, rolledBack.out);
  assert.match(rolledBack.out, /^datastore\s+couchdb 3\.5$/m);
  assert.match(rolledBack.out, /^fault\s+CouchDB did not run from couchdb 3\.6's release/m);
  p.compute.agents.get(inst.id)!.reportVersion = '3.6.0';
  const up = await cli('instance', 'upgrade', 'to-upgrade', '--datastore-version', '3.6', '--wait');
  assert.equal(up.code, 0, up.err);
  assert.match(up.out, /^datastore\s+couchdb 3\.6 \(CouchDB 3\.6\.0\)$/m);
  assert.doesNotMatch(up.out, /^fault/m);
  const bl = await cli('backup', 'list', '--instance', 'to-upgrade');
  assert.equal((bl.out.match(/pre-upgrade-3\.6/g) ?? []).length, 2, bl.out);
});
