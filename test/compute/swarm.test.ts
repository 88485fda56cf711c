// The swarm compute driver on a real two-host swarm built on this machine: two dockerd, each in a network
// namespace of the test's own (veth pairs to the test's bridge), joined into one swarm, driven with the real
// `openstack database` client. A replica lands on the other node and follows its source across the source's
// overlay; two instances land on the two nodes; a backup taken on one restores on the other through the shared
// file:// repository; stopping a node's daemon turns its instance ERROR with the node's state as the reason.
// Everything is removed after: services, daemons (by pid), namespaces, bridge.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, tempDir, api, waitStatus, killUnder, basicAuth, within, type J, type RealServer } from '../support/server.js';
import { clientsSkip, troveClients } from '../support/trove-clients.js';
import { buildTestImage, connectsFrom, dockerSkip, execIn, startDockerd, type TestDaemon } from '../support/docker.js';
import { followProgress } from '../../src/compute/docker/connect.js';
import { LABEL, STORAGE_CREDENTIALS } from '../../src/compute/docker/driver.js';
import { repoRoot } from '../support/postgres.js';
import { runFeatures } from './features.js';

const skip = dockerSkip || clientsSkip;
if (skip) console.log(`swarm tests skipped: ${skip}`);

const root = tempDir('couchtrove-swarm-');
const stateDir = path.join(root, 'state');
const IMAGE = 'couchtrove-guest:swarm';
const netns = path.join(repoRoot, 'scripts', 'docker', 'netns.sh');
const tag = `${process.pid % 100000}`;
const prefix = `10.214.${process.pid % 250}`;
const daemons: TestDaemon[] = [];
const nodeIds: string[] = [];
let server: RealServer | undefined;
let netUp = false;

before(async () => {
  if (skip) return;
  execFileSync('bash', [netns, 'up', tag, prefix]);
  netUp = true;
  for (const n of [1, 2]) {
    const ns = execFileSync('bash', [netns, 'add', tag, String(n), prefix]).toString().trim();
    daemons.push(await startDockerd(path.join(root, `dockerd-${n}`), ns));
  }
  const [d1, d2] = daemons as [TestDaemon, TestDaemon];
  const built = await buildTestImage(d1.docker, IMAGE);
  console.log(`guest image ${built.tag} (${built.engine}) built in ${built.seconds.toFixed(1)} s`);
  const t0 = Date.now();
  await followProgress(d2.docker, await d2.docker.loadImage(await d1.docker.getImage(IMAGE).get()));
  console.log(`image copied to the second node in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await d1.docker.swarmInit({ ListenAddr: `${prefix}.2:2377`, AdvertiseAddr: `${prefix}.2` });
  const tokens = ((await d1.docker.swarmInspect()) as { JoinTokens: { Worker: string } }).JoinTokens;
  await d2.docker.swarmJoin({ ListenAddr: `${prefix}.3:2377`, AdvertiseAddr: `${prefix}.3`, RemoteAddrs: [`${prefix}.2:2377`], JoinToken: tokens.Worker });
  for (const d of daemons) nodeIds.push(((await d.docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID);
  const end = Date.now() + 60_000;
  while (((await d1.docker.listNodes()) as Array<{ Status: { State: string } }>).filter((n) => n.Status.State === 'ready').length < 2) {
    if (Date.now() > end) throw new Error('the second node never became ready');
    await new Promise((r) => setTimeout(r, 500));
  }
  server = await startServer(stateDir, {
    COUCHTROVE_COMPUTE_DRIVER: 'swarm', COUCHTROVE_DOCKER_HOST: d1.host, COUCHTROVE_DOCKER_IMAGE: IMAGE, COUCHTROVE_HEALTH_INTERVAL: '1',
    COUCHTROVE_SWARM_NODE_HOSTS: daemons.map((d, i) => `${nodeIds[i]}=${d.host}`).join(','),
  });
}, { timeout: 900_000 });

after(async () => {
  await server?.kill('SIGKILL');
  try {
    for (const d of daemons.reverse()) {
      if (!fs.existsSync(d.dir)) continue;
      await d.docker.swarmLeave({ force: true }).catch(() => undefined);
      await d.stop();
    }
  } finally {
    // The namespaces and the bridge go whatever happened to the daemons.
    if (netUp) execFileSync('bash', [netns, 'down', tag, '1', '2']);
    killUnder(root);
    fs.rmSync(root, { recursive: true, force: true });
  }
}, { timeout: 900_000 });

const { os } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;

/** `openstack database instance create`, then its state once the build is over. */
async function create(name: string, ...args: string[]): Promise<J> {
  const base = args.includes('--replica-of') ? [] : ['--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5'];
  const id = (await osJson('instance', 'create', name, ...base, ...args)).id as string;
  await new Promise((res) => setTimeout(res, 300));
  return waitStatus(server!.api, 'instances', id, ['ACTIVE', 'ERROR'], 240_000);
}

/** `openstack database instance delete`, then waits until the instance is gone. */
async function remove(id: string): Promise<void> {
  await os('instance', 'delete', id);
  await within(`${id} deleted`, 120_000, async () => ((await api(server!.api, 'GET', `/instances/${id}`)).status === 404 ? true : null));
}

async function nodeOf(id: string): Promise<string> {
  const svc = (await daemons[0]!.docker.getService(`couchtrove-${id}`).inspect()) as { Spec: { Labels: Record<string, string> } };
  return svc.Spec.Labels['org.couchtrove.node']!;
}

/** The running task of an instance: its node's daemon, its container, its networks but docker_gwbridge. */
async function task(id: string): Promise<{ d: TestDaemon; container: string; nets: Record<string, { IPAddress: string }> }> {
  const d = daemons[nodeIds.indexOf(await nodeOf(id))]!;
  const [c] = await d.docker.listContainers({ filters: JSON.stringify({ label: [`com.docker.swarm.service.name=couchtrove-${id}`] }) });
  assert.ok(c, `no running task of ${id}`);
  const nets = { ...(await d.docker.getContainer(c.Id).inspect()).NetworkSettings.Networks };
  delete nets.docker_gwbridge;
  return { d, container: c.Id, nets };
}

/**
 * Issue 26 item 3 on Swarm: a replica of `aid` (created without a flavor) lands on the other node and follows
 * its source across the source's overlay, which its task joins (at tasks.couchtrove-<source>, not the node's
 * publish address); read-only for the tenant; deleted, the source's task and overlay are as before.
 */
async function replicaAcrossNodes(aid: string, url: string): Promise<void> {
  const t0 = Date.now();
  const R = await create('sw-replica', '--replica-of', aid);
  assert.equal(R.status, 'ACTIVE', JSON.stringify(R));
  console.log(`replica create -> ACTIVE (swarm driver, other node): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const rid = R.id as string;
  assert.notEqual(await nodeOf(rid), await nodeOf(aid), 'the replica landed on its source\'s node');
  // From its show, which gives the replica's agent 5 s: asked again while it does not answer.
  const followed = await within('the primary_url of the replica', 120_000, async () => {
    const rep = ((await api(server!.api, 'GET', `/instances/${rid}`)).json.instance as J).replication as J | undefined;
    return typeof rep?.primary_url === 'string' ? rep.primary_url : null;
  });
  assert.equal(followed, `http://tasks.couchtrove-${aid}:${new URL(url).port}`);
  assert.deepEqual(Object.keys((await task(rid)).nets).sort(), [`couchtrove-${aid}`, `couchtrove-${rid}`].sort(), "the replica's task is on its own overlay and its source's");
  const rUrl = R.couchdb_url as string;
  const put = await fetch(`${url}/orders/across`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: '{"n":8}' });
  assert.equal(put.status, 201);
  const doc = await within('the write on the source on the replica', 60_000, async () => {
    const g = await fetch(`${rUrl}/orders/across`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
    return g.status === 200 ? ((await g.json()) as J) : null;
  });
  assert.equal(doc.n, 8);
  const refused = await fetch(`${rUrl}/orders/on-replica`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: '{}' });
  assert.equal(refused.status, 403, 'the replica is read-only for the tenant');
  await remove(rid);
  console.log(`replica on the other node: create, follow, delete: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

test('swarm driver: two nodes, a backup restored on the other node, a lost node', { skip, timeout: 1_800_000 }, async (t) => {
  const t0 = Date.now();
  const a = await create('sw-a', '--databases', 'orders', '--users', 'alice:secret-1');
  assert.equal(a.status, 'ACTIVE', JSON.stringify(a));
  console.log(`create -> ACTIVE (swarm driver, image present): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const aid = a.id as string;
  const url = a.couchdb_url as string;
  assert.match(url, new RegExp(`^http://${prefix.replace(/\./g, '\\.')}\\.[23]:\\d+$`));
  const put = await fetch(`${url}/orders/doc1`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: '{"n":7}' });
  assert.equal(put.status, 201);

  await replicaAcrossNodes(aid, url);

  const bid = (await osJson('backup', 'create', 'sw-backup', '--instance', aid)).id as string;
  assert.equal((await waitStatus(server!.api, 'backups', bid, ['COMPLETED', 'FAILED'], 180_000)).status, 'COMPLETED');
  const r = await create('sw-b', '--backup', bid);
  assert.equal(r.status, 'ACTIVE', JSON.stringify(r));
  const rid = r.id as string;
  const [na, nb] = [await nodeOf(aid), await nodeOf(rid)];
  assert.notEqual(na, nb, 'both instances landed on one node');
  assert.deepEqual([na, nb].sort(), [...nodeIds].sort());
  const doc = await fetch(`${r.couchdb_url as string}/orders/doc1`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
  assert.equal(((await doc.json()) as J).n, 7, 'the restored instance on the other node lacks the document');

  // Each task alone on an overlay network of its own (issue 22): from inside a's task, as CouchDB's uid, its own
  // CouchDB answers on its overlay address, b's does not on b's.
  const ownOnly = async (id: string) => {
    const t = await task(id);
    assert.deepEqual(Object.keys(t.nets), [`couchtrove-${id}`], `networks of ${id}'s task`);
    return { ...t, ip: t.nets[`couchtrove-${id}`]!.IPAddress };
  };
  const [ta, tb] = [await ownOnly(aid), await ownOnly(rid)];
  const reaches = (ip: string, port: number) => connectsFrom(ta.d.docker, ta.container, '5984:5984', ip, port);
  assert.equal(await reaches(ta.ip, Number(new URL(url).port)), true, "a's task reaches its own CouchDB on its overlay address (the probe works)");
  assert.equal(await reaches(tb.ip, Number(new URL(r.couchdb_url as string).port)), false, "a's task reaches b's CouchDB on b's overlay address");

  // The swarm column of the feature matrix (docs/compute.md): the same table as the local and docker drivers.
  await runFeatures(t, { driver: 'swarm', api: server!.api, url: server!.url, id: aid, couchdbUrl: url, createMs: 240_000 });

  // The worker (the second daemon) is lost: its instance turns ERROR with the node's state.
  const lost = na === nodeIds[1] ? aid : rid;
  const kept = lost === aid ? rid : aid;
  await daemons[1]!.stop();
  // The agent stops answering at once; the manager marks the node down a few heartbeats later, and the
  // next health check then gives that as the reason.
  const nodeDown = /node \S+ \([0-9a-z]+\) is (down|unknown|disconnected)/;
  let e: J = {};
  for (const end = Date.now() + 120_000; Date.now() < end; await new Promise((res) => setTimeout(res, 500))) {
    e = (await api(server!.api, 'GET', `/instances/${lost}`)).json.instance as J;
    if (e.status === 'ERROR' && nodeDown.test(JSON.stringify(e.fault))) break;
  }
  assert.equal(e.status, 'ERROR');
  assert.match(JSON.stringify(e.fault), nodeDown);
  assert.equal((await api(server!.api, 'GET', `/instances/${kept}`)).json.instance && ((await api(server!.api, 'GET', `/instances/${kept}`)).json.instance as J).status, 'ACTIVE');

  for (const id of [kept, lost]) await remove(id);
  assert.deepEqual(await daemons[0]!.docker.listServices({ filters: JSON.stringify({ label: [LABEL] }) }), []);
  assert.deepEqual((await daemons[0]!.docker.listVolumes({ filters: JSON.stringify({ label: [LABEL] }) })).Volumes ?? [], []);
  assert.deepEqual((await daemons[0]!.docker.listNetworks({ filters: JSON.stringify({ label: [LABEL] }) })).map((n) => n.Name), [], 'networks left');
});

// After the test above. Its own server, with a swift://
// repository: the credentials only, no backup (this test's tasks have no route to a Swift on this host; the docker
// test takes swift:// and s3:// backups from containers).
test("swarm driver: a swift:// repository's credentials are a secret of the instance's own, 0400, removed with it", { skip, timeout: 300_000 }, async () => {
  const d1 = daemons[0]!;
  const creds = { ST_AUTH: 'http://192.0.2.10:8080/auth/v1.0', ST_USER: 'acct:swarm-user', ST_KEY: 'swarm-secret-key-1' };
  const s = await startServer(path.join(root, 'state-objstore'), {
    COUCHTROVE_COMPUTE_DRIVER: 'swarm', COUCHTROVE_DOCKER_HOST: d1.host, COUCHTROVE_DOCKER_IMAGE: IMAGE, COUCHTROVE_HEALTH_INTERVAL: '1',
    COUCHTROVE_SWARM_NODE_HOSTS: daemons.map((d, i) => `${nodeIds[i]}=${d.host}`).join(','), COUCHTROVE_REPOSITORY: 'swift://ct-swarm/p', ...creds,
  });
  try {
    const r = await api(s.api, 'POST', '/instances', { instance: { name: 'sw-objstore', flavorRef: '1', volume: { size: 1 }, datastore: { type: 'couchdb', version: '3.5' } } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const id = (r.json.instance as J).id as string;
    assert.equal((await waitStatus(s.api, 'instances', id, ['ACTIVE', 'ERROR'], 240_000)).status, 'ACTIVE');
    const name = `couchtrove-${id}-storage`;
    assert.equal(((await d1.docker.getSecret(name).inspect()) as { Spec: { Labels: Record<string, string> } }).Spec.Labels[LABEL], id);
    const svc = (await d1.docker.getService(`couchtrove-${id}`).inspect()) as { Spec: { TaskTemplate: { ContainerSpec: { Secrets: Array<{ SecretName: string; File: { Name: string; UID: string; Mode: number } }> } } } };
    assert.ok(svc.Spec.TaskTemplate.ContainerSpec.Secrets.some((x) => x.SecretName === name && x.File.Name === STORAGE_CREDENTIALS && x.File.UID === '0' && x.File.Mode === 0o400), JSON.stringify(svc.Spec.TaskTemplate.ContainerSpec.Secrets));
    assert.equal(JSON.stringify(svc).includes(creds.ST_KEY), false, 'the Swift key shows in the service spec');
    // The task runs on the node the instance was placed on (the manager when the worker is down).
    const node = daemons[nodeIds.indexOf(await nodeOf(id))]!;
    const [c] = await node.docker.listContainers({ filters: JSON.stringify({ label: [`com.docker.swarm.service.name=couchtrove-${id}`] }) });
    assert.ok(c, 'no running task');
    assert.equal(JSON.stringify(await node.docker.getContainer(c.Id).inspect()).includes(creds.ST_KEY), false, 'the Swift key shows in docker inspect');
    assert.equal((await execIn(node.docker, c.Id, '0:0', ['stat', '-L', '-c', '%u:%g %a', STORAGE_CREDENTIALS])).out.trim(), '0:0 400');
    assert.notEqual((await execIn(node.docker, c.Id, '5984:5984', ['cat', STORAGE_CREDENTIALS])).code, 0, `uid 5984 reads ${STORAGE_CREDENTIALS}`);
    assert.deepEqual(JSON.parse((await execIn(node.docker, c.Id, '0:0', ['cat', STORAGE_CREDENTIALS])).out), creds);
    await api(s.api, 'DELETE', `/instances/${id}`);
    for (const end = Date.now() + 120_000; (await api(s.api, 'GET', `/instances/${id}`)).status !== 404 && Date.now() < end;) await new Promise((res) => setTimeout(res, 250));
    await assert.rejects(d1.docker.getSecret(name).inspect(), (err: { statusCode?: number }) => err.statusCode === 404, `secret ${name} left`);
  } finally {
    await s.kill('SIGKILL');
  }
});
