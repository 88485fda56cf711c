// A CouchDB cluster on the docker compute driver (issue 27 item 6, docs/cluster.md "On containers"), with the
// real `openstack` client, on a private dockerd in a network namespace of the test's own: three members, each a
// container, on the cluster's own internal network; node names are the containers' names; the cookie is a
// root-only 0400 file copied in (in no environment, argument list, label or `docker inspect`); the distribution
// port is published nowhere and another instance's container does not reach it. Root on every node, a database
// (n = 3) written through member 1 and read through member 3; member 2's container killed while a writer writes
// through members 1 and 3 (no write refused), started again by the health monitor, rejoined and caught up;
// delete leaves no container, volume or network. One cluster for the file; needs Apache CouchDB (COUCHDB_HOME).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, startServer, tempDir, within, basicAuth, waitStatus, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { connectsFrom, dockerSkip, execIn, startDockerHost, type TestDockerHost, tearDownAfter } from '../support/docker.js';
import { couchAs, startWriter, type Couch } from '../support/cluster-load.js';
import { CLUSTER_SECRETS, clusterAlias, clusterNetwork, LABEL } from '../../src/compute/docker/driver.js';
import { CONTAINER_DIST_PORT } from '../../src/compute/driver.js';

const skip: string | false = dockerSkip || clientsSkip || (process.env.COUCHDB_HOME ? false : 'the development engine cannot play a cluster (set COUCHDB_HOME to an Apache CouchDB 3.x release)');
if (skip) console.log(`docker cluster test skipped: ${skip}`);

const root = tempDir('couchtrove-dkcluster-');
const stateDir = path.join(root, 'state');
let host: TestDockerHost | undefined;
let server: RealServer | undefined;

before(async () => {
  if (skip) return;
  host = await startDockerHost(root, `c${process.pid % 10000}`, `10.216.${process.pid % 250}`, 'couchtrove-guest:cluster', '22000-22099');
  server = await startServer(stateDir, host.env);
}, { timeout: 900_000 });

tearDownAfter(root, () => ({ server, host: host }));

const { os } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;
const name = (id: string) => `couchtrove-${id}`;

test('docker driver: a 3-member cluster over its own network, a member killed, delete leaves nothing', { skip, timeout: clientBudget(8, 900_000) }, async (t) => {
  const d = host!.daemon.docker;
  const t0 = Date.now();
  const one = ['--instance', 'flavor=1,volume=1'];
  const id = (await osJson('cluster', 'create', 'c1', 'couchdb', '3.5', ...one, ...one, ...one)).id as string;
  const shown = await within('cluster c1 to finish building', 420_000, async () => {
    const c = (await api(server!.api, 'GET', `/clusters/${id}`)).json.cluster as J;
    assert.notEqual((c.task as J).name, 'ERROR', JSON.stringify(c.fault));
    return (c.task as J).name === 'NONE' ? c : null;
  });
  // Reported, not asserted (docs/benchmarks.md): includes one `openstack` command's start.
  console.log(`cluster create -> task NONE, 3 members (docker driver, image present): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const members = (shown.instances as J[]).map((m) => ({ id: m.id as string, url: m.couchdb_url as string }));
  assert.equal(members.length, 3);
  const [m1, m2, m3] = members as [typeof members[0], typeof members[0], typeof members[0]];

  // The cluster's network: internal, and only the three members on it.
  const net = (await d.getNetwork(clusterNetwork(id)).inspect()) as { Internal: boolean; Containers?: Record<string, { Name: string; IPv4Address: string }> };
  assert.equal(net.Internal, true);
  assert.deepEqual(Object.values(net.Containers ?? {}).map((c) => c.Name).sort(), members.map((m) => name(m.id)).sort());
  const secrets = JSON.parse(fs.readFileSync(path.join(stateDir, 'clusters', id, 'secrets.json'), 'utf8')) as { cookie: string };
  for (const m of members) {
    const info = await d.getContainer(name(m.id)).inspect();
    // The distribution port is published nowhere; nothing of the cookie is in what Docker shows.
    assert.deepEqual(Object.keys(info.HostConfig.PortBindings ?? {}).filter((p) => p.startsWith(`${CONTAINER_DIST_PORT}/`)), []);
    assert.ok(!JSON.stringify(info).includes(secrets.cookie), `docker inspect ${name(m.id)} shows the cookie`);
    // Its copy of the secrets: root's, 0400, unreadable by CouchDB's uid; the cookie in no process's arguments or environment.
    assert.equal((await execIn(d, name(m.id), '0:0', ['stat', '-c', '%u %a', CLUSTER_SECRETS])).out.trim(), '0 400');
    assert.notEqual((await execIn(d, name(m.id), '5984:5984', ['cat', CLUSTER_SECRETS])).code, 0, 'uid 5984 reads the cluster secrets');
    const procs = await execIn(d, name(m.id), '0:0', ['sh', '-c', 'cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null; true']);
    assert.ok(procs.out.length > 0 && !procs.out.includes(secrets.cookie), `a process of ${name(m.id)} has the cookie in its arguments or environment`);
  }

  const rootUser = await osJson('root', 'enable', 'c1');
  const auth = basicAuth('root', rootUser.password as string);
  const couch: Couch = couchAs(auth);
  const nodes = members.map((m) => `couchdb@${clusterAlias(m.id)}`).sort();
  for (const m of members) {
    const ms = (await couch(m.url, 'GET', '/_membership')).json;
    assert.deepEqual((ms.cluster_nodes as string[]).sort(), nodes, 'node names are the members\' aliases on the cluster\'s network');
    assert.deepEqual((ms.all_nodes as string[]).sort(), nodes);
  }
  // Member 3 reaches member 1's distribution port by its name; another instance's container does not, even by address.
  assert.equal(await connectsFrom(d, name(m3.id), '5984:5984', clusterAlias(m1.id), CONTAINER_DIST_PORT), true);
  const other = (await osJson('instance', 'create', 'outsider', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5')).id as string;
  assert.equal((await waitStatus(server!.api, 'instances', other, ['ACTIVE', 'ERROR'], 180_000)).status, 'ACTIVE');
  const m1Ip = Object.values(net.Containers ?? {}).find((c) => c.Name === name(m1.id))!.IPv4Address.split('/')[0]!;
  assert.equal(await connectsFrom(d, name(other), '5984:5984', m1Ip, CONTAINER_DIST_PORT), false, 'an instance outside the cluster reaches a member\'s distribution port');
  assert.equal(await connectsFrom(d, name(other), '5984:5984', clusterAlias(m1.id), CONTAINER_DIST_PORT), false);
  await os('instance', 'delete', other);

  // A database with n = 3: written through member 1 (w = 3: every copy before the 201), read through member 3.
  assert.equal((await couch(m1.url, 'PUT', '/orders?n=3')).status, 201);
  const docs = Array.from({ length: 200 }, (_, i) => ({ _id: `order-${String(i).padStart(3, '0')}`, n: i }));
  assert.equal((await couch(m1.url, 'POST', '/orders/_bulk_docs?w=3', { docs })).status, 201);
  assert.deepEqual((await couch(m3.url, 'GET', '/orders')).json.cluster, { q: 2, n: 3, w: 2, r: 2 });
  const all = await couch(m3.url, 'GET', '/orders/_all_docs');
  assert.equal((all.json.rows as J[]).length, 200);

  // Member 2's container killed while a writer writes through members 1 and 3: no write refused.
  const written = new Set<string>(docs.map((x) => x._id));
  const w = startWriter(couch, 'during', [m1.url, m3.url], { db: 'orders', rate: 50, loops: 2, failover: false, readBack: true }, written);
  await sleep(1000);
  const killedAt = Date.now();
  await d.getContainer(name(m2.id)).kill();
  await within('member 2 to show its container is down', 30_000, async () => {
    const i = (await api(server!.api, 'GET', `/instances/${m2.id}`)).json.instance as J;
    return i.status === 'ERROR' || i.status === 'SHUTDOWN' ? i : null;
  });
  // The health monitor starts the container again; its CouchDB comes back under the same node name and rejoins.
  await within('member 2 to be ACTIVE again', 120_000, async () => (((await api(server!.api, 'GET', `/instances/${m2.id}`)).json.instance as J).status === 'ACTIVE' ? true : null));
  await within('member 2 to be connected to every node', 60_000, async () => {
    const ms = (await couch(m2.url, 'GET', '/_membership').catch(() => ({ json: {} as J }))).json;
    return JSON.stringify(((ms.all_nodes as string[] | undefined) ?? []).sort()) === JSON.stringify(nodes) ? true : null;
  });
  await sleep(2000);
  const report = await w.stop();
  t.diagnostic(`writer through members 1 and 3: ${report.acknowledged} writes acknowledged; member 2 back ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
  assert.deepEqual(report.failures.slice(0, 10), [], `${report.failures.length} writes or reads failed`);
  assert.ok(report.acknowledged > 50, `the writer wrote (${report.acknowledged})`);
  // Caught up: everything acknowledged is readable through member 2.
  await within('member 2 to serve every document', 60_000, async () => {
    const r = await couch(m2.url, 'GET', '/orders/_all_docs');
    return r.status === 200 && (r.json.rows as J[]).length === written.size ? true : null;
  });

  await os('cluster', 'delete', 'c1');
  await within('cluster c1 to be deleted', 180_000, async () => ((await api(server!.api, 'GET', `/clusters/${id}`)).status === 404 ? true : null));
  await within('the outsider to be deleted', 60_000, async () => ((await api(server!.api, 'GET', `/instances/${other}`)).status === 404 ? true : null));
  assert.deepEqual((await d.listContainers({ all: true })).map((c) => c.Names), []);
  assert.deepEqual(((await d.listVolumes()).Volumes ?? []).map((v) => v.Name), []);
  assert.deepEqual((await d.listNetworks()).map((n) => n.Name).filter((n) => n.startsWith('couchtrove-')), []);
  assert.deepEqual((await d.listContainers({ all: true, filters: JSON.stringify({ label: [LABEL] }) })).length, 0);
  assert.ok(!fs.existsSync(path.join(stateDir, 'clusters', id)), 'the cluster secrets are gone');
});
