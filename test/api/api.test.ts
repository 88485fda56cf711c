// The API over the fakes: Trove shapes, errors, paging, auth and project isolation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPlane, until, type TestPlane } from '../support/plane.js';

interface J {
  [k: string]: unknown;
}
let p: TestPlane;
const TOKEN_A = 'token-aaaaaaaa';
const TOKEN_B = 'token-bbbbbbbb';

before(async () => {
  p = await startPlane({ env: { COUCHTROVE_TOKENS: `alpha:${TOKEN_A},beta:${TOKEN_B}` } });
});
after(async () => p.close());

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown, token = 'notused'): Promise<{ status: number; json: J; headers: Record<string, unknown> }> {
  const r = await p.app.inject({ method, url, headers: { 'x-auth-token': token, 'content-type': 'application/json' }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {}, headers: r.headers };
}

async function instance(project: string, token: string, name: string): Promise<string> {
  const r = await call('POST', `/v1.0/${project}/instances`, { instance: { name, flavorRef: '2', volume: { size: 2 }, datastore: { type: 'couchdb', version: '3.5' }, databases: [{ name: 'db1' }] } }, token);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const inst = r.json.instance as J;
  assert.equal(inst.status, 'BUILD');
  await until('ACTIVE', async () => (await p.store.get('instances', inst.id as string))?.status, (s) => s === 'ACTIVE');
  return inst.id as string;
}

test('versions and legacy /auth', async () => {
  const v = await p.app.inject({ method: 'GET', url: '/' });
  assert.equal((JSON.parse(v.body) as { versions: J[] }).versions[0]!.id, 'v1.0');
  const a = await p.app.inject({ method: 'GET', url: '/auth', headers: { 'x-auth-user': 'u', 'x-auth-key': TOKEN_A } });
  assert.equal(a.statusCode, 204);
  assert.equal(a.headers['x-auth-token'], TOKEN_A);
  assert.match(String(a.headers['x-server-management-url']), /\/v1\.0\/alpha$/);
  const l = await p.app.inject({ method: 'GET', url: '/auth', headers: { 'x-auth-user': 'u', 'x-auth-key': 'whatever' } });
  assert.equal(l.headers['x-auth-token'], 'notused');
  assert.match(String(l.headers['x-server-management-url']), /\/v1\.0\/local$/);
});

test('auth: unknown token 401, wrong project 403, isolation between projects', async () => {
  assert.equal((await call('GET', '/v1.0/alpha/instances', undefined, 'bad-token-xx')).status, 401);
  const noToken = await p.app.inject({ method: 'GET', url: '/v1.0/alpha/instances' });
  assert.equal(noToken.statusCode, 401);
  assert.equal((JSON.parse(noToken.body) as { unauthorized: J }).unauthorized.code, 401);
  assert.equal((await call('GET', '/v1.0/beta/instances', undefined, TOKEN_A)).status, 403);
  assert.equal((await call('GET', '/v1.0/alpha/instances', undefined, 'notused')).status, 403);
  const a = await instance('alpha', TOKEN_A, 'a1');
  const b = await instance('beta', TOKEN_B, 'b1');
  const la = await call('GET', '/v1.0/alpha/instances', undefined, TOKEN_A);
  assert.deepEqual((la.json.instances as J[]).map((i) => i.id), [a]);
  // beta cannot see, touch or back up alpha's instance
  for (const [m, u, body] of [
    ['GET', `/v1.0/beta/instances/${a}`], ['DELETE', `/v1.0/beta/instances/${a}`], ['POST', `/v1.0/beta/instances/${a}/action`, { restart: {} }],
    ['GET', `/v1.0/beta/instances/${a}/databases`], ['POST', '/v1.0/beta/backups', { backup: { name: 'x', instance: a } }],
  ] as Array<['GET' | 'POST' | 'DELETE', string, unknown]>) {
    const r = await call(m, u, body, TOKEN_B);
    assert.equal(r.status, 404, `${m} ${u}`);
    assert.equal((r.json.itemNotFound as J).code, 404);
  }
  const bk = await call('POST', '/v1.0/alpha/backups', { backup: { name: 'ab', instance: a } }, TOKEN_A);
  assert.equal(bk.status, 202);
  const bid = (bk.json.backup as J).id as string;
  await until('COMPLETED', async () => (await p.store.get('backups', bid))?.status, (s) => s === 'COMPLETED');
  assert.equal((await call('GET', `/v1.0/beta/backups/${bid}`, undefined, TOKEN_B)).status, 404);
  assert.equal((await call('DELETE', `/v1.0/beta/backups/${bid}`, undefined, TOKEN_B)).status, 404);
  assert.deepEqual(((await call('GET', '/v1.0/beta/backups', undefined, TOKEN_B)).json.backups as J[]).length, 0);
  // create-from-backup across projects is a 404 too
  const x = await call('POST', '/v1.0/beta/instances', { instance: { name: 'steal', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: bid } } }, TOKEN_B);
  assert.equal(x.status, 404);
  assert.ok(b);
});

test('instance show: Trove shape, where to connect, engine warning', async () => {
  const id = await instance('local', 'notused', 'shown');
  const r = await call('GET', `/v1.0/local/instances/${id}`);
  const i = r.json.instance as J;
  assert.equal(i.status, 'ACTIVE');
  assert.deepEqual(i.datastore, { type: 'couchdb', version: '3.5' });
  assert.deepEqual(i.ip, ['127.0.0.1']);
  assert.equal(i.hostname, '127.0.0.1');
  assert.match(i.couchdb_url as string, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((i.volume as J).size, 2);
  assert.equal(typeof (i.volume as J).used, 'number');
  assert.equal((i.volume as J).full, undefined);
  // Over its size (client writes are refused then): show says so.
  p.compute.agents.get(id)!.usedBytes = 2 * 1024 ** 3 + 1;
  assert.equal((((await call('GET', `/v1.0/local/instances/${id}`)).json.instance as J).volume as J).full, true);
  p.compute.agents.get(id)!.usedBytes = 1024 * 1024;
  // An agent that does not answer: 503 with the reason, never a 500.
  p.compute.agents.get(id)!.unreachable = true;
  const down = await call('GET', `/v1.0/local/instances/${id}/databases`);
  assert.equal(down.status, 503, JSON.stringify(down.json));
  assert.match(((down.json.serviceUnavailable as J).message as string), /not reachable/);
  p.compute.agents.get(id)!.unreachable = false;
  assert.equal(i.engine, 'devengine');
  assert.equal(i.engine_warning, 'test engine');
  assert.equal((i.flavor as J).id, '2');
  assert.ok(Array.isArray(i.links));
  assert.match(i.created as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
  const nf = await call('GET', '/v1.0/local/instances/no-such-name');
  assert.deepEqual(Object.keys(nf.json), ['itemNotFound']);
});

test('paging with limit, marker and links rel next', async () => {
  for (let i = 0; i < 4; i++) await instance('gamma', 'notused', `g${i}`).catch(() => undefined);
  // gamma is not the local project: 403. Use local instead.
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await instance('local', 'notused', `p${i}`));
  const all: string[] = [];
  let url: string | undefined = '/v1.0/local/instances?limit=2';
  let pages = 0;
  while (url) {
    const r = await call('GET', url);
    assert.equal(r.status, 200);
    all.push(...(r.json.instances as J[]).map((x) => x.id as string));
    const next = (r.json.links as J[] | undefined)?.find((l) => l.rel === 'next');
    url = next ? new URL(next.href as string).pathname + new URL(next.href as string).search : undefined;
    pages++;
  }
  assert.ok(pages >= 3);
  for (const id of ids) assert.ok(all.includes(id));
  assert.equal(new Set(all).size, all.length);
  const bad = await call('GET', '/v1.0/local/instances?marker=nope');
  assert.equal(bad.status, 400);
  assert.equal((await call('GET', '/v1.0/local/instances?limit=0')).status, 400);
});

test('databases, users, access, root', async () => {
  const id = await instance('local', 'notused', 'dbs');
  const base = `/v1.0/local/instances/${id}`;
  assert.equal((await call('POST', `${base}/databases`, { databases: [{ name: 'db2' }, { name: 'db3' }] })).status, 202);
  assert.deepEqual(((await call('GET', `${base}/databases`)).json.databases as J[]).map((d) => d.name), ['db1', 'db2', 'db3']);
  assert.equal((await call('POST', `${base}/databases`, { databases: [{ name: 'db2' }] })).status, 400);
  assert.equal((await call('POST', `${base}/databases`, { databases: [{ name: 'Bad Name' }] })).status, 400);
  assert.equal((await call('DELETE', `${base}/databases/db3`)).status, 202);
  assert.equal((await call('DELETE', `${base}/databases/db3`)).status, 404);
  assert.equal((await call('POST', `${base}/users`, { users: [{ name: 'alice', password: 'pw', databases: [{ name: 'db1' }] }] })).status, 202);
  const u = await call('GET', `${base}/users/alice`);
  assert.deepEqual(u.json.user, { name: 'alice', host: '%', databases: [{ name: 'db1', role: 'member' }] }); // couchtrove adds the role (admin or member)
  assert.equal((await call('PUT', `${base}/users/alice/databases`, { databases: [{ name: 'db2' }] })).status, 202);
  assert.deepEqual(((await call('GET', `${base}/users/alice/databases`)).json.databases as J[]).map((d) => d.name).sort(), ['db1', 'db2']);
  assert.equal((await call('DELETE', `${base}/users/alice/databases/db1`)).status, 202);
  assert.deepEqual(((await call('GET', `${base}/users/alice/databases`)).json.databases as J[]).map((d) => d.name), ['db2']);
  assert.equal((await call('GET', `${base}/users/bob`)).status, 404);
  assert.equal((await call('DELETE', `${base}/users/alice`)).status, 202);
  assert.deepEqual((await call('GET', `${base}/users`)).json.users, []);
  assert.deepEqual((await call('GET', `${base}/root`)).json, { rootEnabled: false });
  const root = await call('POST', `${base}/root`);
  assert.equal((root.json.user as J).name, 'root');
  assert.deepEqual((await call('GET', `${base}/root`)).json, { rootEnabled: true });
  assert.equal((await call('DELETE', `${base}/root`)).status, 204);
});

test('backups: shapes, filters, create-from-backup checks', async () => {
  const id = await instance('local', 'notused', 'bk');
  const r = await call('POST', '/v1.0/local/backups', { backup: { name: 'b1', instance: id, description: 'd' } });
  assert.equal(r.status, 202);
  const b = r.json.backup as J;
  assert.equal(b.status, 'NEW');
  await until('COMPLETED', async () => (await p.store.get('backups', b.id as string))?.status, (s) => s === 'COMPLETED');
  const s = (await call('GET', `/v1.0/local/backups/${b.id as string}`)).json.backup as J;
  assert.equal(s.size_bytes, 12345);
  assert.equal(s.checksum, 'c'.repeat(64));
  assert.equal(typeof s.size, 'number');
  assert.deepEqual(Object.keys(s.datastore as J).sort(), ['type', 'version', 'version_id']);
  assert.equal(((await call('GET', `/v1.0/local/backups?instance_id=${id}`)).json.backups as J[]).length, 1);
  assert.equal(((await call('GET', `/v1.0/local/instances/${id}/backups`)).json.backups as J[]).length, 1);
  assert.equal(((await call('GET', '/v1.0/local/backups?datastore=mysql')).json.backups as J[]).length, 0);
  // Trove's restore checks: too small a volume; checksum mismatch
  await p.store.update('backups', b.id as string, { data_bytes: 3 * 1024 ** 3 });
  const small = await call('POST', '/v1.0/local/instances', { instance: { name: 'r', flavorRef: '1', volume: { size: 2 }, restorePoint: { backupRef: b.id } } });
  assert.equal(small.status, 422);
  assert.match((small.json.unprocessableEntity as J).message as string, /does not fit/);
  await p.store.update('backups', b.id as string, { data_bytes: 1000, checksum: 'd'.repeat(64) });
  const bad = await call('POST', '/v1.0/local/instances', { instance: { name: 'r', flavorRef: '1', volume: { size: 2 }, restorePoint: { backupRef: b.id } } });
  assert.equal(bad.status, 422);
  assert.match((bad.json.unprocessableEntity as J).message as string, /checksum/);
  await p.store.update('backups', b.id as string, { checksum: 'c'.repeat(64) });
  const ok = await call('POST', '/v1.0/local/instances', { instance: { name: 'r', flavorRef: '1', volume: { size: 2 }, restorePoint: { backupRef: b.id } } });
  assert.equal(ok.status, 200);
  const rid = (ok.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', rid))?.status, (x) => x === 'ACTIVE');
  assert.ok(p.compute.agentOf(rid).dbs.has('db1'), 'restored databases');
});

test('resize: volume grows only; flavor; configurations attach/detach', async () => {
  const id = await instance('local', 'notused', 'rs');
  const act = `/v1.0/local/instances/${id}/action`;
  const shrink = await call('POST', act, { resize: { volume: { size: 1 } } });
  assert.equal(shrink.status, 400);
  assert.match((shrink.json.badRequest as J).message as string, /only grow/);
  assert.equal((await call('POST', act, { resize: { volume: { size: 5 } } })).status, 202);
  await until('grown', async () => p.store.get('instances', id), (x) => x?.volume_size === 5 && x.status === 'ACTIVE');
  assert.equal(p.compute.agentOf(id).settings?.volumeBytes, 5 * 1024 ** 3);
  assert.equal((await call('POST', act, { resize: { flavorRef: '3' } })).status, 202);
  await until('resized', async () => p.store.get('instances', id), (x) => x?.flavor_id === '3' && x.status === 'ACTIVE');
  assert.deepEqual(p.compute.agentOf(id).settings?.flavor, { ramMb: 2048, vcpus: 2 });
  assert.equal((await call('POST', act, { resize: { flavorRef: '99' } })).status, 404);
  const c = await call('POST', '/v1.0/local/configurations', { configuration: { name: 'c1', values: { 'couchdb/max_document_size': 1000, 'chttpd_auth_cache/max_lifetime': '70000' }, datastore: { type: 'couchdb', version: '3.5' } } });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const cid = (c.json.configuration as J).id as string;
  assert.equal((await call('POST', '/v1.0/local/configurations', { configuration: { name: 'x', values: { 'admins/root': 'x' } } })).status, 400);
  assert.equal((await call('PUT', `/v1.0/local/instances/${id}`, { instance: { configuration: cid } })).status, 202);
  await until('attached', async () => p.store.get('instances', id), (x) => x?.configuration_id === cid && x.task_id === null);
  assert.equal((await p.store.get('instances', id))?.status, 'RESTART_REQUIRED');
  assert.equal(p.compute.agentOf(id).overrides['couchdb/max_document_size'], '1000');
  assert.equal(((await call('GET', `/v1.0/local/configurations/${cid}/instances`)).json.instances as J[]).length, 1);
  assert.equal((await call('DELETE', `/v1.0/local/configurations/${cid}`)).status, 422);
  assert.equal((await call('PUT', `/v1.0/local/instances/${id}`, { instance: { configuration: null } })).status, 202);
  await until('detached', async () => p.store.get('instances', id), (x) => x?.configuration_id === null && x.task_id === null);
  // Detaching restarts CouchDB on the flavor's settings: nothing is left pending.
  assert.equal((await p.store.get('instances', id))?.status, 'ACTIVE');
  assert.equal(p.compute.agentOf(id).overrides['couchdb/max_document_size'], undefined);
  assert.equal((await call('POST', act, { restart: {} })).status, 202);
  await until('restarted', async () => p.store.get('instances', id), (x) => x?.status === 'ACTIVE');
  assert.equal((await call('DELETE', `/v1.0/local/configurations/${cid}`)).status, 202);
});

test('flavors and datastores', async () => {
  const f = await call('GET', '/v1.0/local/flavors');
  assert.deepEqual((f.json.flavors as J[]).map((x) => x.name), ['tiny', 'small', 'medium', 'large']);
  assert.equal(((await call('GET', '/v1.0/local/flavors/2')).json.flavor as J).ram, 1024);
  assert.equal((await call('GET', '/v1.0/local/flavors/77')).status, 404);
  const d = await call('GET', '/v1.0/local/datastores');
  const ds = (d.json.datastores as J[])[0]!;
  assert.equal(ds.name, 'couchdb');
  const vs = await call('GET', '/v1.0/local/datastores/couchdb/versions');
  const ver = (vs.json.versions as J[])[0]!;
  assert.equal(ver.name, '3.5');
  assert.equal(ds.default_version, ver.id);
  assert.equal(((await call('GET', `/v1.0/local/datastores/versions/${ver.id as string}`)).json.version as J).name, '3.5');
  assert.equal((await call('GET', '/v1.0/local/datastores/mysql/versions')).status, 404);
});

test('delete instance removes it; errors are Trove bodies', async () => {
  const id = await instance('local', 'notused', 'del');
  assert.equal((await call('DELETE', `/v1.0/local/instances/${id}`)).status, 202);
  await until('gone', async () => p.store.get('instances', id), (x) => x === undefined);
  assert.ok(p.compute.destroyed.includes(id));
  const e = await p.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, payload: '{"instance":' });
  assert.equal(e.statusCode, 400);
  assert.match((JSON.parse(e.body) as { badRequest: J }).badRequest.message as string, /Malformed/);
  const big = await p.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, payload: JSON.stringify({ instance: { name: 'x'.repeat(2 << 20) } }) });
  assert.equal(big.statusCode, 413);
  const nv = await call('POST', '/v1.0/local/instances', { instance: { name: 'nv', flavorRef: '1' } });
  assert.equal(nv.status, 400);
  assert.match((nv.json.badRequest as J).message as string, /Volume size is required/);
  const np = await call('POST', '/v1.0/local/instances', { instance: { name: 'r', flavorRef: '1', volume: { size: 1 }, replica_of: 'nope' } });
  assert.equal(np.status, 404);
});
