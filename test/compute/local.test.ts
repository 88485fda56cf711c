// The local driver's column of the feature matrix (docs/compute.md): the table of test/compute/features.ts
// against a real server and an isolated instance (its own uid when run as root), Apache CouchDB when
// COUCHDB_HOME is set, the development engine otherwise. The docker and swarm tests run the same table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sandbox, api, waitStatus, processesUnder, startServer, type J } from '../support/server.js';
import { runFeatures } from './features.js';

const { root, stateDir, track } = sandbox('couchtrove-local-matrix-');

test('local driver: the feature matrix', { timeout: 900_000 }, async (t) => {
  const server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '1' }));
  const c = await api(server.api, 'POST', '/instances', {
    instance: { name: 'matrix', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 'secret-1', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(server.api, 'instances', id, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst.fault));
  await runFeatures(t, { driver: 'local', api: server.api, url: server.url, id, couchdbUrl: inst.couchdb_url as string, createMs: 120_000 });
  assert.equal((await api(server.api, 'DELETE', `/instances/${id}`)).status, 202);
  for (const end = Date.now() + 60_000; (await api(server.api, 'GET', `/instances/${id}`)).status !== 404; await new Promise((r) => setTimeout(r, 250))) assert.ok(Date.now() < end, 'not deleted');
  await server.kill('SIGTERM');
  assert.deepEqual(processesUnder(root), [], 'a process outlived its instance and server');
});
