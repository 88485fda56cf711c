// Configuration groups over the fakes (issue 14): only keys of the published catalogue, checked and typed
// at create; Trove's parameter endpoints serve the catalogue; names unique per project; editing an
// attached group rolls the change out (live keys at once, the others RESTART_REQUIRED naming them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startPlane, until, type TestPlane } from '../support/plane.js';
import { COUCHDB_PARAMETERS } from '../../src/config/couchdb-parameters.js';
import { stableId } from '../../src/tasks/control.js';
import { gate } from '../support/fake-agent.js';

interface J {
  [k: string]: unknown;
}
let p: TestPlane;
before(async () => {
  p = await startPlane({ env: { COUCHTROVE_TOKENS: 'alpha:token-alpha-1' } });
});
after(async () => p.close());

async function call(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await p.app.inject({ method, url: `/v1.0/local${url}`, headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {} };
}
const message = (r: { json: J }): string => String((Object.values(r.json)[0] as J | undefined)?.message);
const create = (name: string, values: unknown): Promise<{ status: number; json: J }> =>
  call('POST', '/configurations', { configuration: { name, values, datastore: { type: 'couchdb', version: '3.5' } } });

async function instance(name: string): Promise<string> {
  const r = await call('POST', '/instances', { instance: { name, flavorRef: '2', volume: { size: 1 } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const id = (r.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return id;
}
const idle = (id: string): Promise<unknown> => until('idle', async () => p.store.get('instances', id), (x) => x?.task_id === null);

test('a group naming a path, port, address, program or credential is refused at create with 400 naming the key', async () => {
  // The attack: CouchDB's log pointed at any file of the host, written as root.
  const attack = await create('logs', { 'log/writer': 'file', 'log/file': '/etc/cron.d/pwned' });
  assert.equal(attack.status, 400);
  assert.match(message(attack), /log\/(writer|file)/);
  const keys = ['log/file', 'log/writer', 'query_servers/javascript', 'native_query_servers/erlang', 'os_daemons/x', 'httpd/bind_address', 'chttpd/bind_address',
    'chttpd/port', 'prometheus/bind_address', 'prometheus/additional_port', 'prometheus/port', 'couchdb/uri_file', 'couchdb/database_dir', 'couchdb/view_index_dir',
    'ssl/enable', 'ssl/cert_file', 'admins/root', 'chttpd_auth/secret', 'replicator/password', 'smoosh/state_dir', 'couchdb/uuid', 'cluster/n', 'daemons/x', 'no/such_key'];
  for (const k of keys) {
    const r = await create(`bad ${k}`, { 'log/level': 'info', [k]: k.endsWith('port') ? 80 : '/tmp/x' });
    assert.equal(r.status, 400, k);
    assert.ok(message(r).includes(k), `${k}: ${message(r)}`);
  }
  assert.equal(((await call('GET', '/configurations')).json.configurations as J[]).length, 0, 'nothing was stored');
});

test('values are checked and typed at create: numbers stay numbers', async () => {
  const r = await create('typed', { 'couchdb/max_document_size': 8_000_000, 'couchdb/max_dbs_open': '2000', 'chttpd/admin_only_all_dbs': 'false', 'couch_peruser/enable': true, 'log/level': 'warning' });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const values = { 'couchdb/max_document_size': 8_000_000, 'couchdb/max_dbs_open': 2000, 'chttpd/admin_only_all_dbs': false, 'couch_peruser/enable': true, 'log/level': 'warning' };
  assert.deepEqual((r.json.configuration as J).values, values);
  const shown = await call('GET', `/configurations/${(r.json.configuration as J).id as string}`);
  assert.deepEqual((shown.json.configuration as J).values, values);
  for (const [k, v, why] of [
    ['couchdb/max_dbs_open', 10, /between 100 and 1000000, got 10/], ['couchdb/max_dbs_open', 1.5, /whole number/], ['couchdb/max_dbs_open', 'many', /whole number/],
    ['log/level', 'loud', /one of debug, info/], ['log/level', 3, /string/], ['chttpd/admin_only_all_dbs', 'yes', /true or false/],
    ['couchdb/file_compression', 'deflate_10', /one of/], ['attachments/compressible_types', 'text/*; rm -rf /', /MIME types/], ['couchdb/max_document_size', null, /whole number/],
  ] as Array<[string, unknown, RegExp]>) {
    const bad = await create(`bad value ${k}`, { [k]: v });
    assert.equal(bad.status, 400, `${k}=${String(v)}`);
    assert.match(message(bad), why);
    assert.ok(message(bad).includes(k));
  }
  assert.equal((await create('not an object', ['log/level'])).status, 400);
});

test('names are unique per project: 409 on a duplicate at create and on a rename', async () => {
  const a = await create('unique-a', { 'log/level': 'info' });
  assert.equal(a.status, 200);
  const dup = await create('unique-a', { 'log/level': 'error' });
  assert.equal(dup.status, 409);
  assert.match(message(dup), /unique-a.*already exists/);
  const b = await create('unique-b', {});
  assert.equal(b.status, 200);
  const bid = (b.json.configuration as J).id as string;
  const rename = await call('PATCH', `/configurations/${bid}`, { configuration: { name: 'unique-a', values: {} } });
  assert.equal(rename.status, 409);
  assert.equal(((await call('GET', `/configurations/${bid}`)).json.configuration as J).name, 'unique-b');
  assert.equal((await call('PATCH', `/configurations/${bid}`, { configuration: { name: 'unique-c' } })).status, 202);
  // Another project may use the name.
  const r = await p.app.inject({ method: 'POST', url: '/v1.0/alpha/configurations', headers: { 'x-auth-token': 'token-alpha-1', 'content-type': 'application/json' }, payload: JSON.stringify({ configuration: { name: 'unique-a', values: {} } }) });
  assert.equal(r.statusCode, 200, r.body);
});

test("Trove's parameter endpoints serve the catalogue, by version name and by version id", async () => {
  const vid = stableId('version', 'couchdb:3.5');
  for (const url of ['/datastores/couchdb/versions/3.5/parameters', `/datastores/versions/${vid}/parameters`, `/datastores/${stableId('datastore', 'couchdb')}/versions/${vid}/parameters`]) {
    const r = await call('GET', url);
    assert.equal(r.status, 200, url);
    const list = r.json['configuration-parameters'] as J[];
    assert.deepEqual(list.map((x) => x.name), COUCHDB_PARAMETERS.map((x) => x.name));
    const dbs = list.find((x) => x.name === 'couchdb/max_dbs_open')!;
    assert.deepEqual(dbs, { name: 'couchdb/max_dbs_open', type: 'integer', min: 100, max: 1_000_000, restart_required: false, datastore_version_id: vid });
    assert.deepEqual(list.find((x) => x.name === 'log/level'), { name: 'log/level', type: 'string', restart_required: false, datastore_version_id: vid });
    assert.equal(list.find((x) => x.name === 'chttpd_auth_cache/max_lifetime')!.restart_required, true);
    for (const x of list) assert.ok(!/(file|dir|port|bind_address|password|secret)$/.test(x.name as string) && !/^(query_servers|native_query_servers|os_daemons|admins|ssl|prometheus)\//.test(x.name as string), x.name as string);
  }
  // The clients send the name's slash as it is; an encoded slash works too.
  for (const url of ['/datastores/couchdb/versions/3.5/parameters/couchdb/max_dbs_open', `/datastores/versions/${vid}/parameters/couchdb%2Fmax_dbs_open`]) {
    const r = await call('GET', url);
    assert.equal(r.status, 200, url);
    assert.equal(r.json.name, 'couchdb/max_dbs_open');
    assert.equal(r.json.max, 1_000_000);
  }
  assert.equal((await call('GET', '/datastores/couchdb/versions/3.5/parameters/log/file')).status, 404);
  assert.equal((await call('GET', '/datastores/couchdb/versions/9.9/parameters')).status, 404);
  assert.equal((await call('GET', '/datastores/mysql/versions/3.5/parameters/log/level')).status, 404);
});

test('editing an attached group rolls it out: live keys at once, the others RESTART_REQUIRED naming them', async () => {
  const id = await instance('rollout');
  const agent = p.compute.agentOf(id);
  const c = await create('rollout', { 'log/level': 'warning', 'couchdb/max_dbs_open': 800 });
  const cid = (c.json.configuration as J).id as string;
  assert.equal((await call('PUT', `/instances/${id}`, { instance: { configuration: cid } })).status, 202);
  await until('attached', async () => p.store.get('instances', id), (x) => x?.configuration_id === cid && x.task_id === null);
  assert.equal((await p.store.get('instances', id))?.status, 'ACTIVE');
  assert.equal(agent.overrides['couchdb/max_dbs_open'], '800');
  const conf = await call('GET', `/instances/${id}/configuration`);
  assert.deepEqual((conf.json.instance as J).configuration, { 'couchdb/max_dbs_open': 800, 'log/level': 'warning', 'query_server_config/os_process_limit': 25 });

  // PATCH: a live change and a restart-only key.
  assert.equal((await call('PATCH', `/configurations/${cid}`, { configuration: { values: { 'log/level': 'error', 'chttpd_auth_cache/max_lifetime': 120000 } } })).status, 202);
  await idle(id);
  let inst = await p.store.get('instances', id);
  assert.equal(inst?.status, 'RESTART_REQUIRED');
  assert.match(inst?.fault ?? '', /chttpd_auth_cache\/max_lifetime/);
  assert.doesNotMatch(inst?.fault ?? '', /log\/level/);
  assert.equal(agent.overrides['log/level'], 'error');
  assert.equal(agent.overrides['chttpd_auth_cache/max_lifetime'], '120000');
  const shown = await call('GET', `/instances/${id}`);
  assert.match(((shown.json.instance as J).fault as J).message as string, /chttpd_auth_cache\/max_lifetime/);
  assert.equal((await call('POST', `/instances/${id}/action`, { restart: {} })).status, 202);
  await until('restarted', async () => p.store.get('instances', id), (x) => x?.status === 'ACTIVE' && x.task_id === null);

  // PUT replaces: removed keys go back to the flavor's value or CouchDB's default; only what changed is sent.
  assert.equal((await call('PUT', `/configurations/${cid}`, { configuration: { values: { 'log/level': 'error', 'uuids/algorithm': 'random' } } })).status, 202);
  await idle(id);
  inst = await p.store.get('instances', id);
  assert.equal(inst?.status, 'RESTART_REQUIRED', 'taking a restart-only key out needs a restart too');
  assert.match(inst?.fault ?? '', /chttpd_auth_cache\/max_lifetime/);
  assert.equal(agent.overrides['couchdb/max_dbs_open'], '512', 'the flavor (small, 1024 MiB) sets max_dbs_open');
  assert.equal(agent.overrides['chttpd_auth_cache/max_lifetime'], undefined, "CouchDB's default again");
  assert.equal(agent.overrides['uuids/algorithm'], 'random');
  assert.deepEqual(((await call('GET', `/configurations/${cid}`)).json.configuration as J).values, { 'log/level': 'error', 'uuids/algorithm': 'random' });
  assert.equal((await call('PUT', `/configurations/${cid}`, { configuration: { name: 'no values' } })).status, 400, 'PUT needs the values');
  assert.equal((await call('POST', `/instances/${id}/action`, { restart: {} })).status, 202);
  await until('restarted', async () => p.store.get('instances', id), (x) => x?.status === 'ACTIVE' && x.task_id === null);

  // A busy instance: the edit is refused (422 naming it) and nothing changes.
  agent.backupGate = gate();
  const b = await call('POST', '/backups', { backup: { name: 'busy', instance: id } });
  assert.equal(b.status, 202);
  const busy = await call('PATCH', `/configurations/${cid}`, { configuration: { values: { 'log/level': 'debug' } } });
  assert.equal(busy.status, 422);
  assert.match(message(busy), new RegExp(`not changed.*${id}`));
  assert.equal(agent.overrides['log/level'], 'error');
  assert.deepEqual(((await call('GET', `/configurations/${cid}`)).json.configuration as J).values, { 'log/level': 'error', 'uuids/algorithm': 'random' });
  agent.backupGate.open();
  await until('backup done', async () => p.store.get('backups', (b.json.backup as J).id as string), (x) => x?.status === 'COMPLETED');
  await idle(id);
  // A bad value in an edit is a 400 naming the key; the group is unchanged.
  const bad = await call('PATCH', `/configurations/${cid}`, { configuration: { values: { 'log/file': '/tmp/x' } } });
  assert.equal(bad.status, 400);
  assert.match(message(bad), /log\/file/);
});

test('defence in depth: a stored group with a key outside the catalogue is never sent to an agent', async () => {
  // A group written before the catalogue existed (or straight into the database).
  const id = randomUUID();
  const t = new Date().toISOString();
  await p.store.insert('configurations', { id, project_id: 'local', name: 'legacy', description: null, values: JSON.stringify({ 'log/file': '/etc/cron.d/x', 'log/level': 'debug' }), datastore: 'couchdb', datastore_version: '3.5', created: t, updated: t });
  const inst = await instance('legacy-target');
  const r = await call('PUT', `/instances/${inst}`, { instance: { configuration: id } });
  assert.equal(r.status, 422);
  assert.match(message(r), /log\/file/);
  const c = await call('POST', '/instances', { instance: { name: 'legacy-create', flavorRef: '1', volume: { size: 1 }, configuration: id } });
  assert.equal(c.status, 422);
  assert.match(message(c), /log\/file/);
  assert.equal(p.compute.agentOf(inst).overrides['log/file'], undefined);
  // The agent (here the fake, with the real agent's checks) refuses it too.
  await assert.rejects(p.compute.agentOf(inst).applyConfiguration({ 'log/file': '/etc/cron.d/x' }), (e: Error & { code?: string }) => e.code === 'REFUSED' && /log\/file/.test(e.message));
  // Editing the group cleans it: keys outside the catalogue are dropped.
  assert.equal((await call('PATCH', `/configurations/${id}`, { configuration: { values: { 'log/level': 'info' } } })).status, 202);
  assert.deepEqual(((await call('GET', `/configurations/${id}`)).json.configuration as J).values, { 'log/level': 'info' });
  assert.equal((await call('PUT', `/instances/${inst}`, { instance: { configuration: id } })).status, 202);
  await until('attached', async () => p.store.get('instances', inst), (x) => x?.configuration_id === id && x.task_id === null);
});

test('an instance in ERROR with a group attached can always be brought back by detaching it', async () => {
  const id = await instance('error-detach');
  const c = await create('error-detach', { 'log/level': 'warning' });
  const cid = (c.json.configuration as J).id as string;
  assert.equal((await call('PUT', `/instances/${id}`, { instance: { configuration: cid } })).status, 202);
  await until('attached', async () => p.store.get('instances', id), (x) => x?.configuration_id === cid && x.task_id === null);
  // What a group that keeps CouchDB from starting leaves behind.
  await p.store.update('instances', id, { status: 'ERROR', fault: 'CouchDB exited during start' });
  assert.equal((await call('PUT', `/instances/${id}`, { instance: { configuration: cid } })).status, 422, 'attaching is not a way out');
  assert.equal((await call('PUT', `/instances/${id}`, { instance: { configuration: null } })).status, 202, 'detaching is');
  const back = await until('detached', async () => p.store.get('instances', id), (x) => x?.task_id === null && x.configuration_id === null);
  assert.equal(back?.status, 'ACTIVE');
  assert.equal(back?.fault, null);
});
