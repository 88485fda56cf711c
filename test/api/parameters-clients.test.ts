// The real clients (python3-troveclient 8 with python3-openstackclient) read the configuration parameter
// catalogue and are refused, with the key named, a group that would reach the host (issue 14). A server
// child process without instances: quick.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, tempDir, killUnder, api, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { COUCHDB_PARAMETERS } from '../../src/config/couchdb-parameters.js';
import { stableId } from '../../src/tasks/control.js';

const skip = clientsSkip;
const root = tempDir('couchtrove-params-');
let server: RealServer | undefined;
before(async () => {
  if (!skip) server = await startServer(path.join(root, 'state'));
});
after(async () => {
  await server?.kill('SIGKILL');
  killUnder(root);
  fs.rmSync(root, { recursive: true, force: true });
});
const { os, trove } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<unknown> => JSON.parse(await os(...args, '-f', 'json')) as unknown;
const versionId = stableId('version', 'couchdb:3.5');

test('openstack database configuration parameter list/show return the catalogue', { skip, timeout: clientBudget(5, 120_000) }, async () => {
  for (const args of [['3.5', '--datastore', 'couchdb'], [versionId]]) {
    const list = (await osJson('configuration', 'parameter', 'list', ...args)) as J[];
    assert.deepEqual(list.map((p) => p.Name), COUCHDB_PARAMETERS.map((p) => p.name));
    assert.deepEqual(list.find((p) => p.Name === 'couchdb/max_dbs_open'), { Name: 'couchdb/max_dbs_open', Type: 'integer', 'Min Size': 100, 'Max Size': 1_000_000, 'Restart Required': false });
  }
  const shown = (await osJson('configuration', 'parameter', 'show', '3.5', 'chttpd_auth_cache/max_lifetime', '--datastore', 'couchdb')) as J;
  assert.deepEqual(shown, { datastore_version_id: versionId, max: 86_400_000, min: 1000, name: 'chttpd_auth_cache/max_lifetime', restart_required: true, type: 'integer' });
  const byId = (await osJson('configuration', 'parameter', 'show', versionId, 'log/level')) as J;
  assert.equal(byId.type, 'string');
  await assert.rejects(os('configuration', 'parameter', 'show', '3.5', 'log/file', '--datastore', 'couchdb'), /log\/file[\s\S]*404/);
});

test('trove configuration-parameter-list/show return the catalogue', { skip, timeout: clientBudget(4, 120_000) }, async () => {
  const list = await trove('configuration-parameter-list', '3.5', '--datastore', 'couchdb');
  for (const p of COUCHDB_PARAMETERS) assert.match(list, new RegExp(`\\| (b')?${p.name.replace('/', '\\/')}'? `), p.name);
  assert.doesNotMatch(list, /log\/file|bind_address|query_servers/);
  assert.match(await trove('configuration-parameter-list', versionId), /couchdb\/max_dbs_open/);
  const shown = await trove('configuration-parameter-show', '3.5', 'couchdb/max_document_size', '--datastore', 'couchdb');
  assert.match(shown, /max\s*\|\s*4294967296/);
  assert.match(shown, /type\s*\|\s*integer/);
});

test('both clients are refused a group that writes a host file or moves CouchDB, with the key named; typed values come back typed', { skip, timeout: clientBudget(9, 120_000) }, async () => {
  await assert.rejects(os('configuration', 'create', 'evil', '{"log/writer": "file", "log/file": "/etc/cron.d/x"}', '--datastore', 'couchdb', '--datastore-version', '3.5'), /log\/(writer|file)[\s\S]*HTTP 400/);
  await assert.rejects(trove('configuration-create', 'evil', '{"couchdb/database_dir": "/var/lib/other"}', '--datastore', 'couchdb', '--datastore_version', '3.5'), /couchdb\/database_dir[\s\S]*400/);
  const created = (await osJson('configuration', 'create', 'good', '{"couchdb/max_document_size": 4000000, "log/level": "warning"}', '--datastore', 'couchdb', '--datastore-version', '3.5')) as J;
  const id = created.id as string;
  await os('configuration', 'set', id, '{"couchdb/max_document_size": 5000000}');
  // `configuration set` is a PUT: the values become exactly those given, numbers as numbers.
  assert.deepEqual(((await api(server!.api, 'GET', `/configurations/${id}`)).json.configuration as J).values, { 'couchdb/max_document_size': 5_000_000 });
  await trove('configuration-patch', id, '{"log/level": "error"}');
  await assert.rejects(trove('configuration-patch', id, '{"query_servers/javascript": "/bin/sh"}'), /query_servers\/javascript/);
  assert.match(await os('configuration', 'show', id), /5000000[\s\S]*error|error[\s\S]*5000000/);
  await assert.rejects(osJson('configuration', 'create', 'good', '{}', '--datastore', 'couchdb', '--datastore-version', '3.5'), /already exists[\s\S]*409/);
});
