// Growing and shrinking a CouchDB cluster on real CouchDB 3.5 (docs/cluster.md, "Grow and shrink"): a
// 3-member cluster grows to 4 with the real `openstack database cluster grow` and shrinks back to 3 with
// `couchtrove cluster shrink`, while a writer keeps writing through members that stay. Every write is
// answered 201/202, every document is readable through every member afterwards, the shard map keeps each
// range on n distinct nodes and names the node that left in none; impossible shrinks are refused with 400
// naming why. One server and one cluster for the whole file. The development engine cannot play a cluster:
// without COUCHDB_HOME the test is skipped with that reason.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, basicAuth, processesUnder, sandbox, startServer, within, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { apiCli } from '../support/cli.js';
import { planGrow, planShrink } from '../../src/tasks/cluster-resize.js';

const real = Boolean(process.env.COUCHDB_HOME);
const skip: string | false = clientsSkip || (real ? false : 'the development engine cannot play a cluster (set COUCHDB_HOME to an Apache CouchDB 3.x release)');

const { root, stateDir, track } = sandbox('couchtrove-resize-');
let server: RealServer | undefined;
before(async () => {
  server = track(await startServer(stateDir));
});
const { os } = troveClients(path.join(root, 'home'), () => server!);
const { cli } = apiCli(() => server!.url);

async function couch(url: string, auth: string, method: string, p: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await fetch(`${url}${p}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }), signal: AbortSignal.timeout(30_000) });
  return { status: r.status, json: (await r.json()) as J };
}

const cluster = async (id: string): Promise<J> => (await api(server!.api, 'GET', `/clusters/${id}`)).json.cluster as J;
const taskOf = (c: J): string => (c.task as J).name as string;

/** Waits for the cluster's task to be NONE, having seen `busy` on the way (it may be quick). */
async function settle(id: string, busy: string, ms: number): Promise<J> {
  let seen = false;
  const c = await within(`cluster ${id} to finish ${busy}`, ms, async () => {
    const c = await cluster(id);
    assert.notEqual(taskOf(c), 'ERROR', JSON.stringify(c.fault));
    if (taskOf(c) === busy) seen = true;
    return taskOf(c) === 'NONE' ? c : null;
  });
  assert.ok(seen, `task ${busy} was shown while it ran`);
  return c;
}

/** Each range on `n` distinct nodes, all of them current members. */
function checkShards(shards: Record<string, string[]>, n: number, nodes: string[]): void {
  for (const [range, holders] of Object.entries(shards)) {
    assert.equal(new Set(holders).size, n, `range ${range} on ${n} distinct nodes: ${holders.join(', ')}`);
    for (const h of holders) assert.ok(nodes.includes(h), `range ${range} is on ${h}, not a member`);
  }
}

test('shard moves are planned evenly and never two copies of a range on one node', () => {
  const m = { db: 'd', byRange: { '00000000-7fffffff': ['a', 'b', 'c'], '80000000-ffffffff': ['a', 'b', 'c'] } };
  const grow = planGrow(m, ['a', 'b', 'c', 'd'], ['d']);
  assert.equal(grow.length, 1, 'six copies over four nodes: the new node takes one, no node has two more than another');
  assert.equal(grow[0]!.to, 'd');
  const shrink = planShrink({ db: 'd', byRange: { '00000000-7fffffff': ['a', 'b', 'd'], '80000000-ffffffff': ['b', 'c', 'd'] } }, ['a', 'b', 'c'], ['d']);
  assert.deepEqual(shrink.map((x) => [x.range, x.from, x.to]), [['00000000-7fffffff', 'd', 'c'], ['80000000-ffffffff', 'd', 'a']]);
  assert.throws(() => planShrink(m, ['a', 'b'], ['c']), /keeps 3 copies of range 00000000-7fffffff, each on its own node, and only 2 members would remain/);
});

test('cluster actions on an unknown cluster: 404 whatever the action (the 400s and 501s: survive.test on a real cluster)', async () => {
  for (const body of [{ grow: [{ flavorRef: '1', volume: { size: 1 } }] }, { shrink: [{ id: 'x' }] }, { upgrade: { datastore_version: '3.5' } }, { explode: true }]) {
    const r = await api(server!.api, 'POST', '/clusters/nope', body);
    assert.equal(r.status, 404, JSON.stringify(body));
    assert.match(JSON.stringify(r.json), /Cluster nope could not be found/);
  }
});

test('grow 3 -> 4 (openstack) and shrink back to 3 (couchtrove) while writes go on: nothing lost', { skip, timeout: clientBudget(4, 600_000) }, async (t) => {
  const created = await api(server!.api, 'POST', '/clusters', { cluster: { name: 'c1', datastore: { type: 'couchdb', version: '3.5' }, instances: [1, 2, 3].map(() => ({ flavorRef: '1', volume: { size: 1 } })) } });
  assert.equal(created.status, 200, JSON.stringify(created.json));
  const id = (created.json.cluster as J).id as string;
  let c = await within('cluster c1 to be built', 300_000, async () => {
    const c = await cluster(id);
    assert.notEqual(taskOf(c), 'ERROR', JSON.stringify(c.fault));
    return taskOf(c) === 'NONE' ? c : null;
  });
  const first = c.instances as J[];
  const urls = first.map((m) => m.couchdb_url as string);
  const rootUser = (await api(server!.api, 'POST', `/clusters/${id}/root`)).json.user as J;
  const auth = basicAuth('root', rootUser.password as string);
  assert.equal((await couch(urls[0]!, auth, 'PUT', '/orders')).status, 201);
  const before = Array.from({ length: 100 }, (_, i) => ({ _id: `before-${i}`, i }));
  assert.equal((await couch(urls[0]!, auth, 'POST', '/orders/_bulk_docs', { docs: before })).status, 201);

  // A writer through members 1 and 2 (neither leaves) for the whole grow and shrink, and a reader through
  // every member: a streamed read (_all_docs) takes one copy per range, the node's own copy first, so an
  // empty or partial new copy that served it would list about half the documents. Internal replication
  // lags a little behind a 201 (w = 2 of 3 copies), so a read may miss a few of the newest: more than a
  // tenth missing is a copy half-made. The new member may refuse reads (401, 404) until it has joined and
  // taken root; the first three members must answer every read.
  const written: string[] = [];
  const refused: string[] = [];
  const shortReads: string[] = [];
  let confirmed = before.length;
  let reads = 0;
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const docId = `during-${i}`;
      const r = await couch(urls[i % 2]!, auth, 'PUT', `/orders/${docId}`, { i }).catch((e: Error) => ({ status: 0, json: { error: e.message } as J }));
      if (r.status === 201 || r.status === 202) written.push(docId);
      else refused.push(`${docId}: ${r.status} ${JSON.stringify(r.json)}`);
      if (r.status === 201) confirmed++;
      await sleep(50);
    }
  })();
  const reader = (async () => {
    while (writing) {
      const floor = confirmed;
      for (const m of (((await cluster(id)).instances as J[] | undefined) ?? []).filter((x) => x.couchdb_url)) {
        const u = m.couchdb_url as string;
        const r = await couch(u, auth, 'GET', '/orders/_all_docs?limit=0').catch((e: Error) => ({ status: 0, json: { error: e.message } as J }));
        reads++;
        if (r.status === 200 ? (r.json.total_rows as number) < floor * 0.9 : urls.includes(u)) shortReads.push(`${m.name as string}: ${r.status} ${JSON.stringify(r.json)} with ${floor} acknowledged`);
      }
      await sleep(100);
    }
  })();

  try {
    // Grow with the real client; the new member is made like the others and takes its share of copies.
    const t0 = Date.now();
    await os('cluster', 'grow', 'c1', '--instance', 'flavor=1,volume=1');
    c = await settle(id, 'GROWING_CLUSTER', 300_000);
    t.diagnostic(`grow 3 -> 4 -> task NONE: ${((Date.now() - t0) / 1000).toFixed(1)} s (with one openstack command)`);
    const grown = c.instances as J[];
    assert.deepEqual(grown.map((m) => [m.name, m.status, (m.flavor as J).id, (m.volume as J).size]), [1, 2, 3, 4].map((i) => [`c1-member-${i}`, 'ACTIVE', '1', 1]));
    const newcomer = grown[3]!;
    const node4 = `couchdb-${newcomer.id as string}@127.0.0.1`;
    const nodes4 = grown.map((m) => `couchdb-${m.id as string}@127.0.0.1`);
    for (const m of grown) {
      const ms = (await couch(m.couchdb_url as string, auth, 'GET', '/_membership')).json;
      assert.deepEqual([...(ms.cluster_nodes as string[])].sort(), [...nodes4].sort(), `${m.name as string} sees the 4 nodes`);
    }
    const map4 = (await couch(urls[2]!, auth, 'GET', '/orders/_shards')).json.shards as Record<string, string[]>;
    checkShards(map4, 3, nodes4);
    assert.ok(Object.values(map4).some((h) => h.includes(node4)), `the new node holds a copy of orders: ${JSON.stringify(map4)}`);
    const root4 = (await couch(newcomer.couchdb_url as string, auth, 'GET', '/_session')).json;
    assert.ok(((root4.userCtx as J).roles as string[]).includes('_admin'), 'root reaches the new member too');

    // Refused with 400, naming why: not a member, fewer than n nodes left, fewer than 2 members left.
    const shrink = (ids: string[]) => api(server!.api, 'POST', `/clusters/${id}`, { shrink: ids.map((x) => ({ id: x })) });
    const notMember = await shrink(['00000000-0000-0000-0000-000000000000']);
    assert.equal(notMember.status, 400);
    assert.match(JSON.stringify(notMember.json), /is not a member of cluster c1/);
    const belowN = await os('cluster', 'shrink', 'c1', grown[2]!.id as string, newcomer.id as string).then((o) => `succeeded: ${o}`, (e: Error) => e.message);
    assert.match(belowN, /Cannot shrink cluster c1 to 2 members: it keeps n = 3 copies of every shard range, each on its own node, so at least 3 members must remain\. \(HTTP 400\)/);
    const belowTwo = await shrink(grown.slice(1).map((m) => m.id as string));
    assert.equal(belowTwo.status, 400);
    assert.match(JSON.stringify(belowTwo.json), /keeps at least 2 members/);
    // couchtrove's grow takes the members' flavor and size unless told: another size is refused, naming them.
    const growOther = await cli('cluster', 'grow', 'c1', '--size', '2');
    assert.equal(growOther.code, 1);
    assert.match(growOther.err, /"grow"\[0\]: a new member has the flavor and volume size of the others \(1, 1 GB\)\..*HTTP 400/);
    assert.equal(((await cluster(id)).instances as J[]).length, 4, 'a refused grow makes no member');
    // The member whose CouchDB started the cluster's epmd (it runs as that member's uid) cannot leave.
    const holder = grown.find((m) => processesUnder(path.join(stateDir, 'instances', m.id as string)).some((pid) => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'epmd'));
    assert.ok(holder && holder !== newcomer, 'the epmd of the cluster was started by one of the first members');
    const epmdHolder = await shrink([holder.id as string]);
    assert.equal(epmdHolder.status, 400);
    assert.match(JSON.stringify(epmdHolder.json), /runs the cluster's Erlang port mapper/);
    assert.equal(taskOf(await cluster(id)), 'NONE', 'a refused shrink changes nothing');

    // Shrink back with couchtrove's CLI: every copy moves off member 4 first, then it goes.
    const t1 = Date.now();
    const out = await cli('cluster', 'shrink', 'c1', '--instance', newcomer.id as string, '--wait');
    assert.equal(out.code, 0, `${out.out}\n${out.err}`);
    assert.match(out.err, /SHRINKING_CLUSTER/);
    t.diagnostic(`shrink 4 -> 3 -> task NONE: ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    c = await cluster(id);
    assert.equal(taskOf(c), 'NONE');
    assert.deepEqual((c.instances as J[]).map((m) => m.name), ['c1-member-1', 'c1-member-2', 'c1-member-3']);
    assert.equal((await api(server!.api, 'GET', `/instances/${newcomer.id as string}`)).status, 404, 'the member that left is deleted');
    assert.deepEqual(processesUnder(path.join(stateDir, 'instances', newcomer.id as string)), [], 'nothing of it runs');
    const nodes3 = first.map((m) => `couchdb-${m.id as string}@127.0.0.1`);
    for (const u of urls) {
      const ms = (await couch(u, auth, 'GET', '/_membership')).json;
      assert.deepEqual([...(ms.cluster_nodes as string[])].sort(), [...nodes3].sort(), `${u} sees the 3 nodes left`);
    }
    for (const db of ['orders', '_users', '_replicator']) checkShards((await couch(urls[1]!, auth, 'GET', `/${db}/_shards`)).json.shards as Record<string, string[]>, 3, nodes3);
    // Every node holds the shard files its map gives it, no more: replaced copies were dropped from disk.
    const suffix = ((await couch(urls[0]!, auth, 'GET', '/_node/_local/_dbs/orders')).json.shard_suffix as number[]).map((x) => String.fromCharCode(x)).join('');
    const map3 = (await couch(urls[0]!, auth, 'GET', '/orders/_shards')).json.shards as Record<string, string[]>;
    for (const [i, u] of urls.entries()) {
      const files = ((await couch(u, auth, 'GET', '/_node/_local/_all_dbs')).json as unknown as string[]).filter((f) => f.endsWith(`/orders${suffix}`)).sort();
      const want = Object.entries(map3).filter(([, h]) => h.includes(nodes3[i]!)).map(([r]) => `shards/${r}/orders${suffix}`).sort();
      assert.deepEqual(files, want, `the shard files of orders on ${nodes3[i]!}`);
    }
  } finally {
    writing = false;
    await writer;
    await reader;
  }

  assert.deepEqual(refused, [], 'every write during grow and shrink was answered 201/202');
  assert.deepEqual(shortReads, [], `every _all_docs during grow and shrink listed the acknowledged documents (${reads} reads)`);
  t.diagnostic(`${reads} _all_docs reads through the members during grow and shrink`);
  assert.ok(written.length > 20, `the writer wrote throughout (${written.length} documents)`);
  t.diagnostic(`${written.length} documents written during grow and shrink`);
  for (const line of server!.log().split('\n').filter((l) => /cluster \S+: (grown|shrunk)/.test(l))) t.diagnostic(line.trim());
  const all = [...before.map((d) => d._id), ...written];
  for (const u of urls) {
    const r = await couch(u, auth, 'POST', '/orders/_all_docs', { keys: all });
    const missing = (r.json.rows as J[]).filter((row) => row.error !== undefined || row.value === undefined).map((row) => row.key);
    assert.deepEqual(missing, [], `every document is readable through ${u}`);
    const listed = (await couch(u, auth, 'GET', '/orders/_all_docs')).json.rows as J[];
    assert.equal(listed.length, all.length, `_all_docs through ${u} lists every document`);
  }

  // The client's force delete: reset-status (nothing to reset on a ready cluster: 202), then the delete.
  await os('cluster', 'force', 'delete', 'c1');
  await within('cluster c1 to be deleted', 180_000, async () => ((await api(server!.api, 'GET', `/clusters/${id}`)).status === 404 ? true : null));
  assert.deepEqual(processesUnder(path.join(stateDir, 'instances')), [], 'no process of the members is left');
});
