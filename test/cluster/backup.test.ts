// Cluster backups on real CouchDB 3.5 (docs/cluster.md, "Cluster backups"): one 3-member cluster, a writer
// writing through members 1 and 2 all along, member 3 down (its CouchDB killed, its agent frozen: a host that
// is gone) while `couchtrove backup create --cluster` runs. The backup holds one copy of every range, taken
// from members 1 and 2 only (about one member's share of bytes, not three); the cluster is then deleted and
// the backup restored into a new 3-member cluster (`cluster create --backup`), and an incremental cluster backup
// taken after member 3 came back into a new 5-member cluster and into a single instance (`instance create
// --backup`): every document acknowledged before the backup began is there, and the
// _security object, a design document and a user (who can log in) come back. Before the cluster goes, a
// schedule on it runs twice (one cluster backup a minute; its retention removes its first). The shard map rules (hostile
// maps refused, placement on the new nodes) are checked without CouchDB too. Without COUCHDB_HOME the cluster
// part is skipped with that reason: the development engine cannot play a cluster.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { api, basicAuth, killUnder, processesUnder, startServer, tempDir, within, type J, type RealServer } from '../support/server.js';
import { apiCli } from '../support/cli.js';
import { processesOf } from '../../src/compute/local.js';
import { beamOf, couchAs, startWriter, type Couch } from '../support/cluster-load.js';
import { chooseCopies } from '../../src/tasks/cluster-backup.js';
import { checkShardMap, placeMaps } from '../../src/agent/shard-map.js';
import type { ShardMapDoc } from '../../src/agent/couchdb.js';

const skip: string | false = process.env.COUCHDB_HOME ? false : 'the development engine cannot play a cluster (set COUCHDB_HOME to an Apache CouchDB 3.x release)';

const root = tempDir('couchtrove-cbackup-');
const stateDir = path.join(root, 'state');
let server: RealServer | undefined;
const { cli } = apiCli(() => server!.url);
const uids: number[] = [];

after(async () => {
  await server?.kill('SIGKILL');
  for (const pid of processesUnder(root)) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  killUnder(root);
  for (const uid of uids) for (const pid of processesOf(uid)) process.kill(pid, 'SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

const suffix = [...'.1765000000'].map((c) => c.charCodeAt(0));
const doc = (id: string, byRange: Record<string, string[]>, extra: Record<string, unknown> = {}): ShardMapDoc => ({ _id: id, _rev: '1-x', shard_suffix: suffix, by_range: byRange, ...extra });

test('shard maps read from CouchDB are checked as hostile; restore places every range on min(3, nodes) new nodes', () => {
  const half = { '00000000-7fffffff': ['a@h', 'b@h', 'c@h'], '80000000-ffffffff': ['a@h', 'b@h', 'c@h'] };
  const ok = checkShardMap(doc('orders', half, { props: { partitioned: true, evil: 1 }, by_node: { 'x@h': ['00000000-ffffffff'] } }));
  assert.deepEqual(ok.by_node, { 'a@h': Object.keys(half), 'b@h': Object.keys(half), 'c@h': Object.keys(half) }, 'by_node is made from by_range, never taken');
  assert.deepEqual(ok.props, { partitioned: true });
  for (const [bad, why] of [
    [doc('../etc', half), /not a database name/],
    [doc('orders', half, { shard_suffix: [...'/../x'].map((c) => c.charCodeAt(0)) }), /shard_suffix/],
    [doc('orders', { '00000000-7fffffff': ['a@h'] }), /do not reach ffffffff/],
    [doc('orders', { '00000000-8fffffff': ['a@h'], '80000000-ffffffff': ['a@h'] }), /does not continue/],
    [doc('orders', { '00000000-ffffffff': ['a@h/../../x'] }), /names no valid nodes/],
  ] as const) assert.throws(() => checkShardMap(bad), why);

  const maps = [checkShardMap(doc('orders', half)), checkShardMap(doc('_users', half))];
  // Copies on a and b answer (c is down); the fuller copy is taken, ties go to the member given fewer ranges.
  const states = [
    { node: 'a@h', allNodes: [], clusterNodes: [], backlog: 0, shards: { 'shards/00000000-7fffffff/orders.1765000000': 10, 'shards/80000000-ffffffff/orders.1765000000': 7, 'shards/00000000-7fffffff/_users.1765000000': 1, 'shards/80000000-ffffffff/_users.1765000000': 1 } },
    { node: 'b@h', allNodes: [], clusterNodes: [], backlog: 0, shards: { 'shards/00000000-7fffffff/orders.1765000000': 9, 'shards/80000000-ffffffff/orders.1765000000': 8, 'shards/00000000-7fffffff/_users.1765000000': 1, 'shards/80000000-ffffffff/_users.1765000000': 1 } },
  ];
  const given = chooseCopies(maps, states);
  assert.deepEqual(given.get('a@h'), [{ db: 'orders', range: '00000000-7fffffff' }, { db: '_users', range: '00000000-7fffffff' }]);
  assert.deepEqual(given.get('b@h'), [{ db: 'orders', range: '80000000-ffffffff' }, { db: '_users', range: '80000000-ffffffff' }]);
  assert.throws(() => chooseCopies(maps, states.slice(1).map((s) => ({ ...s, shards: {} }))), /no member that answers holds a copy of orders 00000000-7fffffff/);

  for (const nodes of [['x@h', 'y@h', 'z@h'], ['x@h', 'y@h', 'z@h', 'v@h', 'w@h'], ['couchdb@127.0.0.1']]) {
    for (const m of placeMaps(maps, nodes)) {
      for (const [range, holders] of Object.entries(m.by_range)) {
        assert.equal(new Set(holders).size, Math.min(3, nodes.length), `${m._id} ${range} on ${nodes.length} nodes`);
        assert.ok(holders.every((h) => nodes.includes(h)));
      }
      assert.deepEqual(m.changelog.length, Math.min(3, nodes.length) * 2);
    }
  }
});

interface Member {
  id: string;
  url: string;
  uid: number;
}

const clusterOf = async (id: string): Promise<J> => (await api(server!.api, 'GET', `/clusters/${id}`)).json.cluster as J;

async function built(id: string): Promise<Member[]> {
  const c = await within(`cluster ${id} to be built`, 300_000, async () => {
    const c = await clusterOf(id);
    assert.notEqual((c.task as J).name, 'ERROR', JSON.stringify(c.fault));
    return (c.task as J).name === 'NONE' ? c : null;
  });
  return (c.instances as J[]).map((m) => {
    const uid = (JSON.parse(fs.readFileSync(path.join(stateDir, 'instances', m.id as string, 'placement.json'), 'utf8')) as { uid: number }).uid;
    uids.push(uid);
    return { id: m.id as string, url: m.couchdb_url as string, uid };
  });
}

/** Bytes of a member's own shard files (what one node holds of every range it has). */
function shardBytes(m: Member): number {
  let n = 0;
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.name.endsWith('.couch')) n += fs.statSync(path.join(d, e.name)).size;
    }
  };
  walk(path.join(stateDir, 'instances', m.id, 'data', 'shards'));
  return n;
}

const SECURITY = { admins: { names: [], roles: ['ops'] }, members: { names: ['alice'], roles: [] } };
const DDOC = { _id: '_design/totals', views: { all: { map: 'function (doc) { emit(doc._id, 1); }', reduce: '_count' } } };

/** Everything the backup must bring back, through `url` as root `auth`. */
async function checkRestored(couch: Couch, url: string, acknowledged: string[], what: string): Promise<void> {
  const found = await couch(url, 'POST', '/orders/_all_docs', { keys: acknowledged });
  assert.equal(found.status, 200, `${what}: ${JSON.stringify(found.json)}`);
  const missing = (found.json.rows as J[]).filter((r) => r.error !== undefined || (r.value as J | undefined)?.deleted).map((r) => r.key);
  assert.deepEqual(missing.slice(0, 5), [], `${what}: ${missing.length} of ${acknowledged.length} acknowledged documents missing`);
  assert.deepEqual((await couch(url, 'GET', '/orders/_security')).json, SECURITY, `${what}: _security`);
  assert.equal((await couch(url, 'GET', `/orders/${DDOC._id}`)).json.views !== undefined, true, `${what}: the design document`);
  const view = await couch(url, 'GET', '/orders/_design/totals/_view/all');
  assert.ok(((view.json.rows as J[])[0]?.value as number) >= acknowledged.length, `${what}: the view counts every document: ${JSON.stringify(view.json)}`);
  // The user is back and can log in.
  const session = await fetch(`${url}/_session`, { headers: { authorization: basicAuth('alice', 'alice-pw-1') } });
  assert.equal(((await session.json()) as J & { userCtx: J }).userCtx.name, 'alice', `${what}: user alice logs in`);
}

test('cluster backup with writes going on and a member down, and on a schedule; restored into new clusters of 3 and 5 members and into a single instance', { skip, timeout: 900_000 }, async (t) => {
  server = await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '1' });
  const one = { flavorRef: '1', volume: { size: 1 } };
  const made = await api(server.api, 'POST', '/clusters', { cluster: { name: 'c1', datastore: { type: 'couchdb', version: '3.5' }, instances: [one, one, one] } });
  assert.equal(made.status, 200, JSON.stringify(made.json));
  const c1 = (made.json.cluster as J).id as string;
  const members = await built(c1);
  const pw = ((await api(server.api, 'POST', `/clusters/${c1}/root`, {})).json.user as J).password as string;
  const couch = couchAs(basicAuth('root', pw));
  const [m1, m2, m3] = members as [Member, Member, Member];
  assert.equal((await couch(m1.url, 'PUT', '/orders')).status, 201);
  assert.equal((await couch(m1.url, 'PUT', '/orders/_security', SECURITY)).status, 200);
  assert.equal((await couch(m1.url, 'PUT', `/orders/${DDOC._id}`, DDOC)).status, 201);
  assert.equal((await couch(m1.url, 'PUT', '/_users/org.couchdb.user:alice', { name: 'alice', password: 'alice-pw-1', roles: [], type: 'user' })).status, 201);
  const first = Array.from({ length: 300 }, (_, i) => ({ _id: `first-${i}`, i }));
  assert.equal((await couch(m1.url, 'POST', '/orders/_bulk_docs', { docs: first })).status, 201);

  const written = new Set<string>(first.map((d) => d._id));
  const w = startWriter(couch, 'during', [m1.url, m2.url], { db: 'orders', rate: 60, loops: 2, failover: false, readBack: false }, written);
  // Member 3 is gone: its agent frozen (it neither answers nor starts CouchDB again), its CouchDB killed.
  const agent3 = processesUnder(path.join(stateDir, 'instances', m3.id)).filter((p) => fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'node');
  assert.ok(agent3.length > 0, 'member 3 has an agent process');
  for (const p of agent3) process.kill(p, 'SIGSTOP');
  process.kill(beamOf(m3.uid)!, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 2000));
  const acknowledged = [...written];
  const r = await cli('backup', 'create', '--cluster', 'c1', '--name', 'cb', '--wait', '--json');
  const report = await w.stop();
  for (const p of agent3) process.kill(p, 'SIGCONT');
  assert.equal(r.code, 0, r.err + r.out);
  assert.deepEqual(report.failures.slice(0, 3), [], 'every write through members 1 and 2 answered 201/202 during the backup');
  const b = JSON.parse(r.out).backup as J;
  t.diagnostic(`backup ${String(b.id)}: ${String(b.data_bytes)} bytes of shard files, ${String(b.size_bytes)} stored, ${acknowledged.length} documents acknowledged before it, ${report.acknowledged} written during it`);
  assert.equal(b.status, 'COMPLETED');
  assert.equal(b.cluster_id, c1, 'the backup names its cluster');
  const parts = b.cluster_parts as Array<{ node: string; ranges: number }>;
  assert.ok(parts.length >= 1 && parts.every((p) => !p.node.includes(m3.id)), `no part from the member that was down: ${JSON.stringify(parts)}`);
  assert.equal(parts.reduce((n, p) => n + p.ranges, 0), 3 * 2, 'one copy of each of the 2 ranges of orders, _users and _replicator');
  // One copy of the data, not three: at most what one member holds (plus what was written meanwhile).
  const oneMember = shardBytes(m1);
  assert.ok((b.data_bytes as number) <= oneMember * 1.25, `${String(b.data_bytes)} bytes backed up, one member holds ${oneMember}`);
  const listed = await cli('backup', 'list', '--json');
  assert.ok((JSON.parse(listed.out).backups as J[]).some((x) => x.id === b.id && x.cluster_id === c1), 'backup list shows it with its cluster');
  assert.match((await cli('backup', 'list')).out.split('\n')[0]!, /\bCLUSTER_ID\b/, 'the table has a cluster column once a cluster backup is listed');

  assert.equal((await cli('backup', 'verify', 'cb', '--wait')).code, 0, 'every part reads back whole under its member\'s key');

  // An incremental cluster backup on it (member 3 back meanwhile): each member's part builds on its part of cb.
  const second = Array.from({ length: 100 }, (_, i) => ({ _id: `second-${i}`, i }));
  assert.equal((await couch(m1.url, 'POST', '/orders/_bulk_docs', { docs: second })).status, 201);
  const acknowledged2 = [...written, ...second.map((d) => d._id)];
  const r2 = await cli('backup', 'create', '--cluster', 'c1', '--name', 'cb2', '--parent', 'latest', '--wait', '--json');
  assert.equal(r2.code, 0, r2.err + r2.out);
  const b2 = JSON.parse(r2.out).backup as J;
  assert.equal(b2.parent_id, b.id, 'cb2 builds on cb');
  t.diagnostic(`incremental backup: ${String(b2.size_bytes)} bytes stored (full: ${String(b.size_bytes)}), parts ${JSON.stringify(b2.cluster_parts)}`);
  const refused = await cli('backup', 'delete', 'cb');
  assert.notEqual(refused.code, 0, 'cb stays while cb2 builds on it');
  assert.match(refused.err, new RegExp(`incremental backup ${String(b2.id)} depends on it`));

  // A schedule on the cluster: every minute, full, keep_last 1. Its second run's retention deletes its first
  // backup (parts and all); cb and cb2, not the schedule's, stay.
  const sc = await cli('schedule', 'create', '--cluster', 'c1', '--name', 'minutely', '--pattern', '* * * * *', '--keep-last', '1', '--json');
  assert.equal(sc.code, 0, sc.err + sc.out);
  const sched = JSON.parse(sc.out).schedule as J;
  assert.deepEqual([sched.cluster_id, sched.instance_id], [c1, null]);
  const shown = await within('the schedule\'s second run to complete and remove the first', 300_000, async () => {
    const r = JSON.parse((await cli('schedule', 'show', '--cluster', 'c1', '--schedule', 'minutely', '--json')).out).schedule as J;
    return /COMPLETED; retention removed 1: /.test(String(r.last_result)) ? r : null;
  });
  const [, kept, gone] = /^backup (\S+) COMPLETED; retention removed 1: (\S+)$/.exec(String(shown.last_result)) ?? [];
  t.diagnostic(`cluster schedule: ${String(shown.last_result)}`);
  assert.equal((await api(server!.api, 'GET', `/backups/${gone!}`)).status, 404, 'the first run\'s backup is deleted');
  const run = (await api(server!.api, 'GET', `/backups/${kept!}`)).json.backup as J;
  assert.deepEqual([run.status, run.cluster_id, (run.cluster_parts as J[]).length > 0], ['COMPLETED', c1, true], JSON.stringify(run));
  assert.match(String(run.name), /^minutely /);
  for (const b of ['cb', 'cb2']) assert.equal((await cli('backup', 'show', b)).code, 0, `${b} stays`);
  assert.equal((await cli('schedule', 'delete', '--cluster', 'c1', '--schedule', 'minutely')).code, 0);
  await within('cluster c1 to be idle', 120_000, async () => (((await clusterOf(c1)).task as J).name === 'NONE' ? true : null));

  // The cluster goes: the backup alone brings the data back.
  assert.equal((await cli('cluster', 'delete', 'c1')).code, 0);
  await within('cluster c1 to be deleted', 120_000, async () => ((await api(server!.api, 'GET', `/clusters/${c1}`)).status === 404 ? true : null));

  const c2r = await cli('cluster', 'create', 'c2', '--backup', 'cb', '--nodes', '3', '--flavor', '1', '--size', '1', '--wait', '--json');
  assert.equal(c2r.code, 0, c2r.err + c2r.out);
  const c2 = (JSON.parse(c2r.out).cluster as J).id as string;
  const restored = await built(c2);
  const pw2 = ((await api(server.api, 'POST', `/clusters/${c2}/root`, {})).json.user as J).password as string;
  const couch2 = couchAs(basicAuth('root', pw2));
  const map = (await couch2(restored[0]!.url, 'GET', '/_node/_local/_dbs/orders')).json as J & { by_range: Record<string, string[]> };
  const nodes = restored.map((m) => `couchdb-${m.id}@127.0.0.1`);
  for (const holders of Object.values(map.by_range)) assert.deepEqual([...holders].sort(), [...nodes].sort(), 'every range of orders on the 3 new nodes');
  for (const m of restored) await checkRestored(couch2, m.url, acknowledged, `cluster c2 through ${m.id}`);
  assert.equal((await cli('cluster', 'delete', 'c2')).code, 0);

  // The incremental cb2 into 5 members: each range on 3 of the 5 new nodes, every document through each.
  const c3r = await cli('cluster', 'create', 'c3', '--backup', 'cb2', '--nodes', '5', '--flavor', '1', '--size', '1', '--wait', '--json');
  assert.equal(c3r.code, 0, c3r.err + c3r.out);
  const c3 = (JSON.parse(c3r.out).cluster as J).id as string;
  const five = await built(c3);
  assert.equal(five.length, 5);
  const couch5 = couchAs(basicAuth('root', ((await api(server.api, 'POST', `/clusters/${c3}/root`, {})).json.user as J).password as string));
  const nodes5 = five.map((m) => `couchdb-${m.id}@127.0.0.1`);
  const map5 = (await couch5(five[0]!.url, 'GET', '/_node/_local/_dbs/orders')).json as J & { by_range: Record<string, string[]> };
  for (const holders of Object.values(map5.by_range)) assert.ok(new Set(holders).size === 3 && holders.every((h) => nodes5.includes(h)), `a range of orders on 3 of the 5 new nodes: ${JSON.stringify(holders)}`);
  for (const m of five) await checkRestored(couch5, m.url, acknowledged2, `cluster c3 (5 members, from the incremental cb2) through ${m.id}`);
  assert.equal((await cli('cluster', 'delete', 'c3')).code, 0);

  const s1r = await cli('instance', 'create', 's1', '--backup', 'cb2', '--flavor', '1', '--size', '1', '--wait', '--json');
  assert.equal(s1r.code, 0, s1r.err + s1r.out);
  const s1 = JSON.parse(s1r.out).instance as J;
  uids.push((JSON.parse(fs.readFileSync(path.join(stateDir, 'instances', s1.id as string, 'placement.json'), 'utf8')) as { uid: number }).uid);
  const pw3 = ((await api(server.api, 'POST', `/instances/${String(s1.id)}/root`, {})).json.user as J).password as string;
  const couch3 = couchAs(basicAuth('root', pw3));
  const url = ((await api(server.api, 'GET', `/instances/${String(s1.id)}`)).json.instance as J).couchdb_url as string;
  await checkRestored(couch3, url, acknowledged2, 'single instance s1 (from the incremental cb2)');
});
