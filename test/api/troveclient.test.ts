// The real clients (Debian's python3-troveclient 8 with python3-openstackclient) against a real server:
// every command of the trove-api.md table through `openstack --os-auth-type none --os-endpoint ...
// database ...` and the legacy `trove --bypass-url ...`, output checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, tempDir, api, waitStatus, killUnder, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';

const skip = clientsSkip;

const root = tempDir('couchtrove-clients-');
const home = path.join(root, 'home');
let server: RealServer | undefined;
let base = '';
before(async () => {
  if (skip) return;
  server = await startServer(path.join(root, 'state'));
  base = server.api;
});
after(async () => {
  await server?.kill('SIGKILL');
  killUnder(root);
  fs.rmSync(root, { recursive: true, force: true });
});

const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;
const { os, trove } = troveClients(home, () => server!);

async function idle(id: string): Promise<J> {
  await new Promise((r) => setTimeout(r, 300));
  return waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR', 'RESTART_REQUIRED']);
}

test('openstack database ...', { skip, timeout: clientBudget(45, 300_000) }, async () => {
  assert.match(await os('flavor', 'list'), /tiny[\s\S]*small/);
  assert.match(await os('flavor', 'show', '2'), /small/);
  const created = await osJson('instance', 'create', 'os-one', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5', '--databases', 'db1', '--users', 'u1:pw-one');
  const id = created.id as string;
  assert.equal(created.status, 'BUILD');
  assert.equal((await idle(id)).status, 'ACTIVE');
  assert.match(await os('instance', 'list'), new RegExp(`${id}[\\s\\S]*os-one[\\s\\S]*ACTIVE`));
  const shown = await osJson('instance', 'show', 'os-one'); // by name: 404 on the name, then the list
  assert.equal(shown.id, id);
  assert.match(shown.couchdb_url as string, /^http:\/\/127\.0\.0\.1:\d+$/);
  await os('db', 'create', id, 'db2');
  assert.match(await os('db', 'list', id), /db1[\s\S]*db2/);
  await os('db', 'delete', id, 'db2');
  assert.doesNotMatch(await os('db', 'list', id), /db2/);
  await os('user', 'create', id, 'u2', 'pw-two', '--databases', 'db1');
  assert.match(await os('user', 'list', id), /u1[\s\S]*u2/);
  const us = await os('user', 'show', id, 'u2');
  assert.match(us, /name \s*\| u2/);
  assert.match(us, /db1/);
  await os('user', 'revoke', 'access', id, 'u2', 'db1');
  assert.doesNotMatch(await os('user', 'show', 'access', id, 'u2'), /db1/);
  await os('user', 'grant', 'access', id, 'u2', 'db1');
  assert.match(await os('user', 'show', 'access', id, 'u2'), /db1/);
  await os('user', 'delete', id, 'u2');
  assert.doesNotMatch(await os('user', 'list', id), /u2/);
  assert.match(await os('root', 'show', id), /False/);
  assert.match(await os('root', 'enable', id), /root/);
  assert.match(await os('root', 'show', id), /True/);
  await os('root', 'disable', id);
  const b = await osJson('backup', 'create', 'os-backup', '--instance', id, '--description', 'from openstack');
  const bid = b.id as string;
  assert.equal((await waitStatus(base, 'backups', bid, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');
  assert.match(await os('backup', 'list'), new RegExp(`${bid}[\\s\\S]*COMPLETED`));
  assert.match(await os('backup', 'list', 'instance', id), new RegExp(bid));
  const bs = await osJson('backup', 'show', bid);
  assert.equal(bs.status, 'COMPLETED');
  assert.match(String(bs.checksum), /^[0-9a-f]{64}$/);
  const r = await osJson('instance', 'create', 'os-restored', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5', '--backup', bid);
  const rid = r.id as string;
  assert.equal((await idle(rid)).status, 'ACTIVE');
  assert.match(await os('db', 'list', rid), /db1/);
  await os('instance', 'resize', 'volume', id, '2');
  assert.equal(((await idle(id)).volume as J).size, 2);
  await os('instance', 'resize', 'flavor', id, '2');
  await idle(id);
  assert.equal(((await api(base, 'GET', `/instances/${id}`)).json.instance as J & { flavor: J }).flavor.id, '2');
  await os('instance', 'restart', id);
  assert.equal((await idle(id)).status, 'ACTIVE');
  const conf = await osJson('configuration', 'create', 'os-conf', '{"couchdb/max_document_size": 8000000}', '--datastore', 'couchdb', '--datastore-version', '3.5');
  const cid = conf.id as string;
  assert.match(await os('configuration', 'list'), /os-conf/);
  assert.match(await os('configuration', 'show', cid), /max_document_size/);
  await os('configuration', 'attach', id, cid);
  await idle(id);
  assert.match(await os('configuration', 'instances', cid), new RegExp(id));
  await os('configuration', 'detach', id);
  await idle(id);
  await os('configuration', 'delete', cid);
  await os('backup', 'delete', bid);
  await os('instance', 'delete', rid);
  await os('instance', 'delete', id);
});

test('trove (legacy client, GET /auth)', { skip, timeout: clientBudget(40, 300_000) }, async () => {
  assert.match(await trove('flavor-list'), /tiny/);
  assert.match(await trove('flavor-show', '1'), /tiny/);
  const out = await trove('create', 'tv-one', '1', '--size', '1', '--datastore', 'couchdb', '--datastore_version', '3.5', '--databases', 'db1', '--users', 'u1:pw-one');
  const id = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/.exec(out)![1]!;
  assert.match(out, /BUILD/);
  assert.equal((await idle(id)).status, 'ACTIVE');
  assert.match(await trove('list'), new RegExp(`${id}[\\s\\S]*tv-one`));
  assert.match(await trove('show', id), /couchdb_url/);
  await trove('database-create', id, 'db2');
  assert.match(await trove('database-list', id), /db2/);
  await trove('database-delete', id, 'db2');
  await trove('user-create', id, 'u2', 'pw-two', '--databases', 'db1');
  assert.match(await trove('user-list', id), /u2/);
  assert.match(await trove('user-show', id, 'u2'), /u2/);
  await trove('user-revoke-access', id, 'u2', 'db1');
  await trove('user-grant-access', id, 'u2', 'db1');
  assert.match(await trove('user-show-access', id, 'u2'), /db1/);
  await trove('user-delete', id, 'u2');
  assert.match(await trove('root-enable', id), /root/);
  assert.match(await trove('root-show', id), /True/);
  const bout = await trove('backup-create', id, 'tv-backup', '--description', 'legacy');
  const bid = /\|\s*id\s*\|\s*(?:b')?([0-9a-f-]{36})/.exec(bout)![1]!;
  assert.equal((await waitStatus(base, 'backups', bid, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');
  assert.match(await trove('backup-list'), new RegExp(bid));
  assert.match(await trove('backup-list-instance', id), new RegExp(bid));
  assert.match(await trove('backup-show', bid), /COMPLETED/);
  const rout = await trove('create', 'tv-restored', '1', '--size', '1', '--datastore', 'couchdb', '--datastore_version', '3.5', '--backup', bid);
  const rid = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/.exec(rout)![1]!;
  assert.equal((await idle(rid)).status, 'ACTIVE');
  await trove('resize-volume', id, '2');
  assert.equal(((await idle(id)).volume as J).size, 2);
  await trove('resize-instance', id, '2');
  await idle(id);
  await trove('restart', id);
  assert.equal((await idle(id)).status, 'ACTIVE');
  const cout = await trove('configuration-create', 'tv-conf', '{"couchdb/max_document_size": 8000000}', '--datastore', 'couchdb', '--datastore_version', '3.5');
  const cid = /\|\s*id\s*\|\s*(?:b')?([0-9a-f-]{36})/.exec(cout)![1]!;
  assert.match(await trove('configuration-list'), /tv-conf/);
  assert.match(await trove('configuration-show', cid), /max_document_size/);
  await trove('configuration-attach', id, cid);
  await idle(id);
  await trove('configuration-detach', id);
  await idle(id);
  await trove('configuration-delete', cid);
  await trove('backup-delete', bid);
  await trove('delete', rid);
  await trove('delete', id);
  // A 404 is a real itemNotFound the client reports.
  await assert.rejects(trove('show', 'no-such-instance'), /No instance with a name or ID of 'no-such-instance' exists|not found/i);
});
