// A CouchDB cluster on the swarm compute driver (issue 27 item 6, docs/cluster.md "On containers"): three dockerd
// in network namespaces of the test's own joined into one swarm (test/support/docker.ts startSwarm), driven with
// the real `openstack` client. Three members, one per swarm node, on the cluster's own overlay; each member's copy
// of the cluster's secrets is a Swarm secret of its own (root, 0400), in no service spec. Root on every node, a
// database (n = 3) written through member 1 and read through member 3; then the daemon of a worker node holding a
// member is stopped (its containers die with it): reads and writes through the other two members go on. Delete
// removes every service, secret and the overlay. Needs Apache CouchDB (COUCHDB_HOME).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, startServer, tempDir, within, basicAuth, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { dockerSkip, startSwarm, type TestSwarm, tearDownAfter } from '../support/docker.js';
import { couchAs, startWriter, type Couch } from '../support/cluster-load.js';
import { CLUSTER_SECRETS, clusterNetwork } from '../../src/compute/docker/driver.js';

const skip: string | false = dockerSkip || clientsSkip || (process.env.COUCHDB_HOME ? false : 'the development engine cannot play a cluster (set COUCHDB_HOME to an Apache CouchDB 3.x release)');
if (skip) console.log(`swarm cluster test skipped: ${skip}`);

const root = tempDir('couchtrove-swcluster-');
const stateDir = path.join(root, 'state');
let swarm: TestSwarm | undefined;
let server: RealServer | undefined;

before(async () => {
  if (skip) return;
  swarm = await startSwarm(root, 3, `s${process.pid % 10000}`, `10.218.${process.pid % 250}`, 'couchtrove-guest:swcluster');
  server = await startServer(stateDir, swarm.env);
}, { timeout: 900_000 });

tearDownAfter(root, () => ({ server, host: swarm }));

const { os } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;

interface ServiceSpec {
  Spec: { Labels: Record<string, string>; TaskTemplate: { Networks?: Array<{ Target: string }>; ContainerSpec: { Secrets?: Array<{ SecretName: string; File: { Name: string; UID: string; Mode: number } }> } } };
}

test('swarm driver: a 3-member cluster, one member per node, serves on when a node\'s daemon stops', { skip, timeout: clientBudget(6, 900_000) }, async (t) => {
  const manager = swarm!.daemons[0]!.docker;
  const t0 = Date.now();
  const one = ['--instance', 'flavor=1,volume=1'];
  const id = (await osJson('cluster', 'create', 'c1', 'couchdb', '3.5', ...one, ...one, ...one)).id as string;
  const shown = await within('cluster c1 to finish building', 480_000, async () => {
    const c = (await api(server!.api, 'GET', `/clusters/${id}`)).json.cluster as J;
    assert.notEqual((c.task as J).name, 'ERROR', JSON.stringify(c.fault));
    return (c.task as J).name === 'NONE' ? c : null;
  });
  t.diagnostic(`cluster create -> task NONE, 3 members on 3 swarm nodes: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const members = (shown.instances as J[]).map((m) => ({ id: m.id as string, url: m.couchdb_url as string }));
  assert.equal(members.length, 3);

  // One member per node, each on the cluster's overlay, its secrets copy a secret of its own.
  const overlay = (await manager.getNetwork(clusterNetwork(id)).inspect()) as { Id: string; Driver: string; Internal: boolean };
  assert.equal(overlay.Driver, 'overlay');
  assert.equal(overlay.Internal, true);
  const secrets = JSON.parse(fs.readFileSync(path.join(stateDir, 'clusters', id, 'secrets.json'), 'utf8')) as { cookie: string };
  const nodeOf = new Map<string, string>();
  for (const m of members) {
    const svc = (await manager.getService(`couchtrove-${m.id}`).inspect()) as ServiceSpec;
    nodeOf.set(m.id, svc.Spec.Labels['org.couchtrove.node']!);
    assert.ok((svc.Spec.TaskTemplate.Networks ?? []).some((n) => n.Target === overlay.Id), `member ${m.id} is on the cluster's overlay`);
    const secret = (svc.Spec.TaskTemplate.ContainerSpec.Secrets ?? []).find((s) => s.File.Name === CLUSTER_SECRETS);
    assert.deepEqual(secret && { name: secret.SecretName, uid: secret.File.UID, mode: secret.File.Mode }, { name: `couchtrove-${m.id}-cluster`, uid: '0', mode: 0o400 });
    assert.ok(!JSON.stringify(svc).includes(secrets.cookie), 'the service spec shows the cookie');
  }
  assert.deepEqual(new Set(nodeOf.values()).size, 3, `one member per node: ${JSON.stringify([...nodeOf.values()])}`);

  const rootUser = await osJson('root', 'enable', 'c1');
  const couch: Couch = couchAs(basicAuth('root', rootUser.password as string));
  for (const m of members) {
    const ms = (await couch(m.url, 'GET', '/_membership')).json;
    assert.deepEqual((ms.all_nodes as string[]).sort(), members.map((x) => `couchdb@tasks.couchtrove-${x.id}`).sort());
  }
  const [m1, , m3] = members as [typeof members[0], typeof members[0], typeof members[0]];
  assert.equal((await couch(m1.url, 'PUT', '/orders?n=3')).status, 201);
  const docs = Array.from({ length: 100 }, (_, i) => ({ _id: `order-${String(i).padStart(3, '0')}`, n: i }));
  // w = 3: the 201 waits for every copy, so the read through member 3 that follows at once sees them all
  // (with the default w = 2 it may answer from the copy internal replication has not reached yet).
  assert.equal((await couch(m1.url, 'POST', '/orders/_bulk_docs?w=3', { docs })).status, 201);
  assert.equal(((await couch(m3.url, 'GET', '/orders/_all_docs')).json.rows as J[]).length, 100);

  // A worker node's daemon stops, with the member it holds: the two others keep serving reads and writes.
  const victim = members.find((m) => nodeOf.get(m.id) !== swarm!.nodeIds[0])!;
  const alive = members.filter((m) => m !== victim);
  const written = new Set<string>(docs.map((x) => x._id));
  const w = startWriter(couch, 'during', alive.map((m) => m.url), { db: 'orders', rate: 50, loops: 2, failover: false, readBack: true }, written);
  await sleep(1000);
  await swarm!.daemons[swarm!.nodeIds.indexOf(nodeOf.get(victim.id)!)]!.stop();
  await within('the stopped node\'s member to show the node is down', 90_000, async () => {
    const i = (await api(server!.api, 'GET', `/instances/${victim.id}`)).json.instance as J;
    return i.status === 'ERROR' && /node .* is down/.test(JSON.stringify(i.fault)) ? i : null;
  });
  await sleep(3000);
  const report = await w.stop();
  t.diagnostic(`writer through the two members left: ${report.acknowledged} writes acknowledged`);
  assert.deepEqual(report.failures.slice(0, 10), [], `${report.failures.length} writes or reads failed`);
  assert.ok(report.acknowledged > 50, `the writer wrote (${report.acknowledged})`);
  // A write acknowledged by the victim and one survivor reaches the other survivor by internal replication.
  for (const m of alive) {
    await within(`every acknowledged document through ${m.url}`, 60_000, async () => {
      const all = await couch(m.url, 'GET', '/orders/_all_docs');
      return (all.json.rows as J[]).length === written.size ? true : null;
    });
  }

  await os('cluster', 'delete', 'c1');
  await within('cluster c1 to be deleted', 240_000, async () => ((await api(server!.api, 'GET', `/clusters/${id}`)).status === 404 ? true : null));
  assert.deepEqual((await manager.listServices()).map((s) => s.Spec?.Name), []);
  assert.deepEqual((await manager.listSecrets()).map((s) => s.Spec?.Name), []);
  await within('the cluster\'s overlay to be gone', 60_000, async () => ((await manager.listNetworks()).some((n) => n.Name === clusterNetwork(id)) ? null : true));
  assert.ok(!fs.existsSync(path.join(stateDir, 'clusters', id)), 'the cluster secrets are gone');
});
