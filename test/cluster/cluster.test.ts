// A CouchDB cluster through Trove's cluster API and the real `openstack` client, on real CouchDB 3.5
// (docs/cluster.md): three members joined, root on every node, 200 documents written through member 1
// and read through member 3, show/list/list instances as the client prints them, delete with nothing left.
// One server and one cluster for the whole file. The development engine cannot play a cluster: without
// COUCHDB_HOME the cluster test is skipped with that reason, and the API is checked to refuse clearly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { api, basicAuth, killUnder, processesUnder, startServer, tempDir, within, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { apiCli } from '../support/cli.js';
import { processesOf } from '../../src/compute/local.js';

const real = Boolean(process.env.COUCHDB_HOME);
const skip: string | false = clientsSkip || (real ? false : 'the development engine cannot play a cluster (set COUCHDB_HOME to an Apache CouchDB 3.x release)');

const root = tempDir('couchtrove-cluster-');
const stateDir = path.join(root, 'state');
let server: RealServer | undefined;
before(async () => {
  server = await startServer(stateDir);
});
after(async () => {
  await server?.kill('SIGKILL');
  killUnder(root);
  fs.rmSync(root, { recursive: true, force: true });
});
const { os } = troveClients(path.join(root, 'home'), () => server!);
const { cli, json: cliJson } = apiCli(() => server!.url);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;

async function couch(url: string, auth: string, method: string, p: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await fetch(`${url}${p}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: r.status, json: (await r.json()) as J };
}

test('without Apache CouchDB a cluster is refused with the reason', { skip: real ? 'runs on the development engine only' : false }, async () => {
  const r = await api(server!.api, 'POST', '/clusters', { cluster: { name: 'c0', datastore: { type: 'couchdb', version: '3.5' }, instances: [1, 2, 3].map(() => ({ flavorRef: '1', volume: { size: 1 } })) } });
  assert.equal(r.status, 400);
  assert.match(JSON.stringify(r.json), /development engine cannot play a cluster/);
  assert.deepEqual((await api(server!.api, 'GET', '/clusters')).json.clusters, []);
  assert.deepEqual((await api(server!.api, 'GET', '/instances')).json.instances, [], 'no member was made');
});

test('openstack database cluster create/show/list/list instances, root enable, data through any node, delete', { skip, timeout: clientBudget(8, 420_000) }, async (t) => {
  const t0 = Date.now();
  const one = ['--instance', 'flavor=1,volume=1'];
  const created = await osJson('cluster', 'create', 'c1', 'couchdb', '3.5', ...one, ...one, ...one);
  const id = created.id as string;
  assert.equal(created.task_name, 'BUILDING_INITIAL');
  assert.equal(created.instance_count, 3);
  // ACTIVE only once every node is in _membership, the system databases exist and a probe went through each node.
  const shown = await within('cluster c1 to finish building', 300_000, async () => {
    const c = (await api(server!.api, 'GET', `/clusters/${id}`)).json.cluster as J;
    const task = (c.task as J).name;
    assert.notEqual(task, 'ERROR', JSON.stringify(c.fault));
    return task === 'NONE' ? c : null;
  });
  // Reported, not asserted (docs/benchmarks.md): includes one `openstack` command's start.
  t.diagnostic(`cluster create -> task NONE: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.deepEqual(shown.shards, { n: 3, q: 2 });
  const members = shown.instances as J[];
  assert.equal(members.length, 3);
  assert.deepEqual(members.map((m) => m.name), ['c1-member-1', 'c1-member-2', 'c1-member-3']);
  for (const m of members) assert.equal(m.status, 'ACTIVE');

  const show = await osJson('cluster', 'show', 'c1');
  assert.equal(show.id, id);
  assert.equal(show.task_name, 'NONE');
  assert.equal(show.datastore, 'couchdb');
  assert.equal(show.instance_count, 3);
  assert.match(await os('cluster', 'list'), new RegExp(`${id}[\\s\\S]*c1[\\s\\S]*NONE`));
  const listed = (await osJson('cluster', 'list', 'instances', 'c1')) as unknown as J[];
  assert.deepEqual(listed.map((m) => [m.Name, m.Status, m['Flavor ID'], m.Size]), [1, 2, 3].map((i) => [`c1-member-${i}`, 'ACTIVE', '1', 1]));
  // couchtrove's own CLI: the same cluster, its members and where to connect.
  const mine = await cliJson<{ cluster: J }>('cluster', 'show', 'c1');
  assert.equal(mine.cluster.id, id);
  assert.equal((mine.cluster.couchdb_urls as string[]).length, 3);
  const text = await cli('cluster', 'list');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, new RegExp(`${id}\\s+c1\\s+NONE\\s+3\\s+3`));
  // Each member is an instance of its own, naming its cluster; it is deleted only with the cluster.
  const inst = (await api(server!.api, 'GET', `/instances/${members[0]!.id as string}`)).json.instance as J;
  assert.equal(inst.cluster_id, id);
  assert.equal(inst.status, 'ACTIVE');
  const refused = await api(server!.api, 'DELETE', `/instances/${members[0]!.id as string}`);
  assert.equal(refused.status, 400);
  assert.match(JSON.stringify(refused.json), /member of cluster/);

  // The cluster's cookie is on no command line of any member's processes.
  const secrets = JSON.parse(fs.readFileSync(path.join(stateDir, 'clusters', id, 'secrets.json'), 'utf8')) as { cookie: string };
  assert.equal(fs.statSync(path.join(stateDir, 'clusters', id, 'secrets.json')).mode & 0o777, 0o600);
  const uids = members.map((m) => (JSON.parse(fs.readFileSync(path.join(stateDir, 'instances', m.id as string, 'placement.json'), 'utf8')) as { uid?: number }).uid);
  for (const pid of [...processesUnder(root), ...uids.flatMap((u) => (u === undefined ? [] : processesOf(u)))]) {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    assert.ok(!cmd.includes(secrets.cookie), `pid ${pid} has the cookie in its arguments`);
  }

  // Root: one admin, on every node.
  const rootUser = await osJson('root', 'enable', 'c1');
  assert.equal(rootUser.name, 'root');
  const auth = basicAuth('root', rootUser.password as string);
  const urls = members.map((m) => m.couchdb_url as string);
  for (const u of urls) {
    const s = await couch(u, auth, 'GET', '/_session');
    assert.ok(((s.json.userCtx as J).roles as string[]).includes('_admin'), `root is a server admin on ${u}`);
    const m = await couch(u, auth, 'GET', '/_membership');
    assert.equal((m.json.cluster_nodes as string[]).length, 3);
    assert.equal((m.json.all_nodes as string[]).length, 3);
  }
  assert.equal((await couch(urls[0]!, auth, 'PUT', '/orders')).status, 201);
  const docs = Array.from({ length: 200 }, (_, i) => ({ _id: `order-${String(i).padStart(3, '0')}`, n: i }));
  // w = 3: the 201 waits for every copy, so the read through member 3 below cannot miss one still replicating.
  const bulk = await couch(urls[0]!, auth, 'POST', '/orders/_bulk_docs?w=3', { docs });
  assert.equal(bulk.status, 201);
  const info = await couch(urls[2]!, auth, 'GET', '/orders');
  assert.deepEqual(info.json.cluster, { q: 2, n: 3, w: 2, r: 2 });
  const all = await couch(urls[2]!, auth, 'GET', '/orders/_all_docs?include_docs=true');
  assert.equal((all.json.rows as J[]).length, 200);
  assert.deepEqual((all.json.rows as J[]).map((r) => (r.doc as J).n).sort((a, b) => Number(a) - Number(b)), docs.map((d) => d.n));
  // Every shard range has a copy on every node (n = 3 of 3): losing one node loses no range.
  const shards = await couch(urls[2]!, auth, 'GET', '/orders/_shards');
  for (const nodes of Object.values(shards.json.shards as Record<string, string[]>)) assert.equal(new Set(nodes).size, 3);

  await os('cluster', 'delete', 'c1');
  await within('cluster c1 to be deleted', 180_000, async () => ((await api(server!.api, 'GET', `/clusters/${id}`)).status === 404 ? true : null));
  assert.deepEqual((await api(server!.api, 'GET', '/instances')).json.instances, []);
  assert.deepEqual(processesUnder(path.join(stateDir, 'instances')), [], 'no process of the members is left');
  for (const u of uids) if (u !== undefined) assert.deepEqual(processesOf(u), [], `nothing runs as member uid ${u}`);
  assert.ok(!fs.existsSync(path.join(stateDir, 'clusters', id)), 'the cluster secrets are gone');
});
