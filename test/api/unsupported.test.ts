// Trove calls couchtrove does not implement (501 notImplemented naming the call), create/update options the
// compute driver cannot honour (400 naming option and driver) and instance upgrade, over the fakes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import { UNSUPPORTED } from '../../src/api/unsupported.js';

interface Fault {
  code: number;
  message: string;
}
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

let p: TestPlane;
let id = '';
before(async () => {
  p = await startPlane({ env: { COUCHTROVE_DATASTORE_VERSIONS: '3.5,3.4,3.6' } });
  const r = await call('POST', '/instances', { instance: { name: 'u1', flavorRef: '1', volume: { size: 1 }, access: { is_public: false } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  id = (r.json.instance as { id: string }).id;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
});
after(async () => p.close());

async function call(method: Method, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await p.app.inject({ method, url: `/v1.0/local${path}`, headers: H, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {} };
}

function fault(r: { status: number; json: Record<string, unknown> }, status: number, name: string, message: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.deepEqual(Object.keys(r.json), [name], JSON.stringify(r.json));
  const f = r.json[name] as Fault;
  assert.equal(f.code, status);
  assert.match(f.message, message);
}

test('every unimplemented Trove call answers 501 notImplemented naming it', async () => {
  // A floor against a list emptied by mistake (28 calls once clusters were served).
  assert.ok(UNSUPPORTED.length >= 25, `${UNSUPPORTED.length} unsupported calls`);
  for (const u of UNSUPPORTED) {
    const path = u.path.replace('{id}', id).replace(/\{\w+\}/g, 'x');
    const r = await call(u.method as Method, path, u.method === 'GET' || u.method === 'DELETE' ? undefined : {});
    const route = u.path.replace(/[{}]/g, '\\$&');
    fault(r, 501, 'notImplemented', new RegExp(`^${u.call.replace(/[()/]/g, '\\$&')} \\(${u.method} ${route}\\) is not implemented by couchtrove\\.$`));
  }
  fault(await call('GET', `/instances/${id}/modules`), 501, 'notImplemented', /^Instance module list\/query \(GET \/instances\/\{id\}\/modules\) is not implemented by couchtrove\.$/);
  fault(await call('GET', '/mgmt/instances'), 501, 'notImplemented', /Trove management API \(GET \/mgmt\/instances\)/);
  fault(await call('GET', '/mgmt/quotas/local'), 501, 'notImplemented', /^Quota show \(GET \/mgmt\/quotas\/\{user_project\}\)/);
});

test('an unknown instance is still 404, a path Trove does not have still 404, implemented calls unchanged', async () => {
  fault(await call('GET', '/instances/nope/log'), 404, 'itemNotFound', /nope/);
  fault(await call('GET', '/instances/nope/modules'), 404, 'itemNotFound', /nope/);
  fault(await call('DELETE', '/instances/nope/metadata/k'), 404, 'itemNotFound', /nope/);
  fault(await call('GET', `/instances/${id}/nothing-like-this`), 404, 'itemNotFound', /No such resource/);
  fault(await call('GET', '/no-such-collection'), 404, 'itemNotFound', /No such resource/);
  // A method the call does not have on that path is not a Trove call either.
  fault(await call('PATCH', '/modules'), 404, 'itemNotFound', /No such resource/);
  assert.equal((await call('GET', '/instances')).status, 200);
  assert.equal((await call('GET', `/instances/${id}/configuration`)).status, 200);
  assert.equal((await call('GET', '/datastores/couchdb/versions')).status, 200);
});

test('create options the compute driver cannot honour are refused with 400 naming option and driver', async () => {
  const base = { name: 'refused', flavorRef: '1', volume: { size: 1 } };
  const refused: Array<[Record<string, unknown>, RegExp]> = [
    [{ access: { is_public: true } }, /^"access"\."is_public" true is not supported by the fake compute driver: .*loopback/],
    [{ is_public: true }, /^"is_public" true is not supported by the fake compute driver/],
    [{ access: { is_public: false, allowed_cidrs: ['10.0.0.0/8'] } }, /^"access"\."allowed_cidrs" is not supported by the fake compute driver/],
    [{ allowed_cidrs: ['0.0.0.0/0'] }, /^"allowed_cidrs" is not supported by the fake compute driver/],
    [{ nics: [{ network_id: 'net-1' }] }, /^"nics" is not supported by the fake compute driver: it attaches no networks/],
    [{ availability_zone: 'nova' }, /^"availability_zone" is not supported by the fake compute driver: it has no availability zones/],
    [{ modules: [{ id: 'm1' }] }, /^"modules" is not supported by the fake compute driver/],
    [{ access: { is_public: 'yes' } }, /"access"\."is_public" must be true or false/],
  ];
  for (const [extra, message] of refused) fault(await call('POST', '/instances', { instance: { ...base, ...extra } }), 400, 'badRequest', message);
  assert.equal((await p.store.find('instances', { name: 'refused' })).length, 0, 'nothing was created');
  // What an instance already is may be asked for: openstack sends "access": {"is_public": false} on every create.
  const ok = await call('POST', '/instances', { instance: { ...base, name: 'private', is_public: false, access: { is_public: false, allowed_cidrs: [] }, nics: [], availability_zone: null, modules: [] } });
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  const pid = (ok.json.instance as { id: string }).id;
  await until('ACTIVE', async () => (await p.store.get('instances', pid))?.status, (s) => s === 'ACTIVE');
  assert.equal((await call('DELETE', `/instances/${pid}`)).status, 202);
});

test('instance update: --is-public and --allowed-cidr refused, --is-private accepted', async () => {
  fault(await call('PUT', `/instances/${id}`, { instance: { access: { is_public: true } } }), 400, 'badRequest', /"access"\."is_public" true .* fake compute driver/);
  fault(await call('PUT', `/instances/${id}`, { instance: { access: { allowed_cidrs: ['10.1.0.0/16'] } } }), 400, 'badRequest', /"access"\."allowed_cidrs" .* fake compute driver/);
  assert.equal((await call('PUT', `/instances/${id}`, { instance: { access: { is_public: false } } })).status, 202);
});

test('instance upgrade: unknown version 404, same version or older 400; a registered newer version: backup, switch, check, or back', async () => {
  fault(await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '9.9' } }), 404, 'itemNotFound', /^Datastore version 9\.9 for datastore couchdb could not be found\.$/);
  fault(await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '3.5' } }), 400, 'badRequest', /already runs couchdb 3\.5/);
  fault(await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '3.4' } }), 400, 'badRequest', /^Datastore version 3\.4 is older than 3\.5: CouchDB does not support downgrades/);
  fault(await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '3.6', name: 'x' } }), 400, 'badRequest', /cannot be combined/);
  fault(await call('PATCH', '/instances/nope', { instance: { datastore_version: '3.6' } }), 404, 'itemNotFound', /nope/);
  let inst = await p.store.get('instances', id);
  assert.equal(inst?.datastore_version, '3.5');
  assert.equal(inst?.name, 'u1');

  // The new release does not come up (here: CouchDB reports no version): back on 3.5, with the reason, and the backup kept.
  const agent = p.compute.agents.get(id)!;
  const restarts = agent.restarts;
  assert.equal((await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '3.6' } })).status, 202);
  inst = await until('the failed upgrade', async () => p.store.get('instances', id), (i) => i?.task_id === null && i.status !== 'UPGRADE');
  assert.equal(inst!.status, 'ACTIVE');
  assert.equal(inst!.datastore_version, '3.5');
  assert.match(String(inst!.fault), /did not run from couchdb 3\.6's release \(CouchDB does not report its version\); the instance is back on 3\.5 \(backup \S+ was taken first\)/);
  assert.equal(agent.restarts, restarts + 2, 'restarted on the new release, then on the old one');
  assert.equal(agent.settings?.couchdbHome, (await p.plane.settings(inst!)).couchdbHome);
  const first = (await p.store.find('backups', { instance_id: id })).filter((b) => b.name === 'pre-upgrade-3.6');
  assert.deepEqual(first.map((b) => b.status), ['COMPLETED']);

  // It comes up and says its version: the instance runs 3.6.
  agent.reportVersion = '3.6.0';
  assert.equal((await call('PATCH', `/instances/${id}`, { instance: { datastore_version: '3.6' } })).status, 202);
  inst = await until('the upgrade', async () => p.store.get('instances', id), (i) => i?.task_id === null && i.status !== 'UPGRADE');
  assert.equal(inst!.status, 'ACTIVE', String(inst!.fault));
  assert.equal(inst!.datastore_version, '3.6');
  assert.equal(inst!.fault, null);
  assert.equal((await p.store.find('backups', { instance_id: id })).filter((b) => b.name === 'pre-upgrade-3.6' && b.status === 'COMPLETED').length, 2);
  const shown = (await call('GET', `/instances/${id}`)).json.instance as { datastore: { version: string; version_number: string } };
  assert.deepEqual(shown.datastore, { type: 'couchdb', version: '3.6', version_number: '3.6.0' });
});
