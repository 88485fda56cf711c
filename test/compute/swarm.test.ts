// The swarm compute driver on a real two-host swarm built on this machine: two dockerd, each in a network
// namespace of the test's own (veth pairs to the test's bridge), joined into one swarm, driven with the real
// `openstack database` client. A replica lands on the other node and follows its source across the source's
// overlay; promote, detach and eject move tasks between overlays; two instances land on the two nodes; a backup
// taken on one restores on the other through the shared file:// repository; stopping a node's daemon turns its
// instance ERROR with the node's state as the reason. Then swift:// and s3:// backups from tasks to a Swift on
// this host (reached through each node's masquerade: the daemons write iptables rules in their namespaces).
// Everything is removed after: services, daemons (by pid), namespaces, bridge.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { startServer, tempDir, api, waitStatus, basicAuth, within, fullAndIncremental, type J, type RealServer } from '../support/server.js';
import { rawSwiftNames, startSwift, swiftAvailable } from '../support/swift.js';
import { clientsSkip, troveClients } from '../support/trove-clients.js';
import { connectsFrom, dockerSkip, execIn, startSwarm, type TestDaemon, type TestSwarm, tearDownAfter } from '../support/docker.js';
import { LABEL, STORAGE_CREDENTIALS } from '../../src/compute/docker/driver.js';
import { runFeatures } from './features.js';

const skip = dockerSkip || clientsSkip;
if (skip) console.log(`swarm tests skipped: ${skip}`);

const root = tempDir('couchtrove-swarm-');
const stateDir = path.join(root, 'state');
const IMAGE = 'couchtrove-guest:swarm';
const prefix = `10.214.${process.pid % 250}`;
let swarm: TestSwarm | undefined;
const daemons: TestDaemon[] = [];
const nodeIds: string[] = [];
let server: RealServer | undefined;

before(async () => {
  if (skip) return;
  swarm = await startSwarm(root, 2, `${process.pid % 100000}`, prefix, IMAGE);
  daemons.push(...swarm.daemons);
  nodeIds.push(...swarm.nodeIds);
  server = await startServer(stateDir, swarm.env);
}, { timeout: 900_000 });

tearDownAfter(root, () => ({ server, host: swarm }));

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

/** Writes a document as alice; the response status. */
async function putDoc(url: string, doc: string, body: J): Promise<number> {
  const r = await fetch(`${url}/orders/${doc}`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await r.arrayBuffer();
  return r.status;
}

/** The document as alice reads it on url once it is there. */
const arrives = (url: string, doc: string) => within(`${doc} on ${url}`, 60_000, async () => {
  const g = await fetch(`${url}/orders/${doc}`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
  return g.status === 200 ? ((await g.json()) as J) : null;
});

/** The URL a replica follows, from its show (which gives its agent 5 s: asked again while it does not answer). */
const primaryUrl = (id: string) => within(`the primary_url of ${id}`, 120_000, async () => {
  const rep = ((await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J).replication as J | undefined;
  return typeof rep?.primary_url === 'string' ? rep.primary_url : null;
});

/** The instance once ACTIVE with no task running on it and, when given, done holds. */
const settled = (id: string, done: (i: J) => boolean = () => true) => within(`${id} ACTIVE and idle`, 180_000, async () => {
  const i = (await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J;
  return i.status === 'ACTIVE' && !i.task && done(i) ? i : null;
});

/**
 * Issue 26 item 3 on Swarm: two replicas of `aid` (created without a flavor): one (R) lands on the other node and
 * follows its source across the source's overlay, which its task joins (at tasks.couchtrove-<source>, not the
 * node's publish address); read-only for the tenant. Promote R: the old source and the other replica (S) follow R
 * on R's overlay. Detach S: writable, off R's overlay, no longer following. Eject R, paused (its agent and CouchDB
 * never answer): `aid` is the source again, writable, on its own overlay only. Deleted, no replica's overlay is left.
 */
async function replicasAcrossNodes(aid: string, url: string): Promise<void> {
  const t0 = Date.now();
  const made = await Promise.all([create('sw-replica', '--replica-of', aid), create('sw-replica-2', '--replica-of', aid)]);
  for (const x of made) assert.equal(x.status, 'ACTIVE', JSON.stringify(x));
  console.log(`two replicas create -> ACTIVE (swarm driver): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  // R: one on the other node (made at once, both may land there; one may land on the source's node).
  const home = await nodeOf(aid);
  const away = await Promise.all(made.map(async (x) => (await nodeOf(x.id as string)) !== home));
  assert.ok(away.some(Boolean), 'both replicas landed on their source\'s node');
  const [R, S] = away[0] ? [made[0]!, made[1]!] : [made[1]!, made[0]!];
  const [rid, sid] = [R.id as string, S.id as string];
  for (const x of made) assert.equal((x.flavor as J).id, '1', "a replica takes its source's flavor");
  const svc = (x: string) => `couchtrove-${x}`;
  const portOf = (u: string) => new URL(u).port;
  assert.equal(await primaryUrl(rid), `http://tasks.${svc(aid)}:${portOf(url)}`);
  const netsOf = async (x: string) => Object.keys((await task(x)).nets).sort();
  assert.deepEqual(await netsOf(rid), [svc(aid), svc(rid)].sort(), "the replica's task is on its own overlay and its source's");
  const [rUrl, sUrl] = [R.couchdb_url as string, S.couchdb_url as string];
  assert.equal(await putDoc(url, 'across', { n: 8 }), 201);
  for (const u of [rUrl, sUrl]) assert.equal((await arrives(u, 'across')).n, 8, `the write on the source on ${u}`);
  assert.equal(await putDoc(rUrl, 'on-replica', {}), 403, 'the replica is read-only for the tenant');

  // Promote R: the old source and S follow it on R's overlay (new tasks, same nodes), A's overlay has R no more.
  const t1 = Date.now();
  await os('instance', 'promote', rid);
  const newSource = await settled(rid, (i) => !i.replica_of);
  assert.deepEqual(((newSource.replicas as J[] | undefined) ?? []).map((x) => x.id).sort(), [aid, sid].sort(), JSON.stringify(newSource.replicas));
  for (const x of [aid, sid]) {
    assert.equal(((await settled(x, (i) => (i.replica_of as J | undefined)?.id === rid)).replica_of as J).id, rid);
    assert.equal(await primaryUrl(x), `http://tasks.${svc(rid)}:${portOf(rUrl)}`, `${x} follows the promoted replica on its overlay`);
    assert.deepEqual(await netsOf(x), [svc(rid), svc(x)].sort(), `${x}'s task is on its own overlay and the new source's`);
  }
  assert.deepEqual(await netsOf(rid), [svc(rid)], 'the promoted replica left its old source\'s overlay');
  assert.equal(await putDoc(rUrl, 'promoted', { n: 9 }), 201, 'the promoted replica is writable');
  for (const u of [url, sUrl]) assert.equal((await arrives(u, 'promoted')).n, 9, `the write on the promoted replica on ${u}`);
  assert.equal(await putDoc(url, 'on-old-source', {}), 403, 'the old source is read-only now');
  console.log(`promote across nodes (two followers moved): ${((Date.now() - t1) / 1000).toFixed(1)} s`);

  // Detach S: standalone and writable, off R's overlay; a write on R reaches the old source but not S.
  const t2 = Date.now();
  await os('instance', 'detach', sid);
  const detached = await settled(sid, (i) => i.replica_of === undefined);
  assert.equal(detached.replication, undefined, JSON.stringify(detached.replication));
  assert.deepEqual(await netsOf(sid), [svc(sid)], 'the detached replica is off its source\'s overlay');
  assert.equal(await putDoc(sUrl, 'on-detached', { n: 10 }), 201, 'the detached replica is writable');
  assert.equal(await putDoc(rUrl, 'after-detach', { n: 11 }), 201);
  assert.equal((await arrives(url, 'after-detach')).n, 11, 'the remaining follower follows');
  assert.equal((await fetch(`${sUrl}/orders/after-detach`, { headers: { authorization: basicAuth('alice', 'secret-1') } })).status, 404, 'the detached replica still follows');
  assert.deepEqual(((await settled(rid)).replicas as J[]).map((x) => x.id), [aid]);
  console.log(`detach on swarm: ${((Date.now() - t2) / 1000).toFixed(1)} s`);

  // Eject R, its task paused on its node: A (its only follower) takes over, writable, on its own overlay only.
  const t3 = Date.now();
  const paused = await task(rid);
  await paused.d.docker.getContainer(paused.container).pause();
  try {
    await os('instance', 'eject', rid);
    // The eject task (on rid) ends after the new source is off the ejected one's overlay.
    const ejected = await within(`${rid} ejected`, 180_000, async () => {
      const i = (await api(server!.api, 'GET', `/instances/${rid}`)).json.instance as J;
      return !i.task && /ejected from its replication set/.test(JSON.stringify(i.fault)) ? i : null;
    });
    assert.match(JSON.stringify(ejected.fault), new RegExp(`instance ${aid} is the new replica source`));
    const A = await settled(aid, (i) => i.replica_of === undefined);
    assert.deepEqual(A.replicas ?? [], [], JSON.stringify(A.replicas));
    assert.equal(await putDoc(url, 'after-eject', { n: 12 }), 201, 'the new source is writable');
    assert.deepEqual(await netsOf(aid), [svc(aid)], "the new source left the ejected one's overlay");
  } finally {
    await paused.d.docker.getContainer(paused.container).unpause();
  }
  console.log(`eject on swarm: ${((Date.now() - t3) / 1000).toFixed(1)} s`);
  for (const x of [rid, sid]) await remove(x);
  const left = (await daemons[0]!.docker.listNetworks({ filters: JSON.stringify({ label: [LABEL] }) })).map((n) => n.Name);
  assert.deepEqual(left, [svc(aid)], 'overlays left');
  console.log(`replicas on swarm: create, follow, promote, detach, eject, delete: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
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

  await replicasAcrossNodes(aid, url);

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

const swiftSkip = skip || (swiftAvailable() ? false : 'OpenStack Swift is not installed (scripts/install-test-deps.sh)');
if (swiftSkip && !skip) console.log(`swarm swift:// and s3:// test skipped: ${swiftSkip}`);

// After the test above (its worker is stopped: the tasks run on the manager). Swift on this host, its proxy on
// every address: a task reaches it on the host's address on the test's bridge (docker_storage_address), out of
// its node's docker_gwbridge, masqueraded to the node's address (the daemons write iptables rules in their own
// namespaces); the control plane on 127.0.0.1. Tempauth answers with a storage URL on the host the request named,
// so the agent's Swift requests go to the bridge address too. Servers of their own, one per repository: a
// service's credentials secret is fixed at its creation (docs/compute.md).
test("swarm driver: swift:// and s3:// from tasks: the credentials a secret of the instance's own (0400, removed with it), full and incremental backups, create --backup (swift://)", { skip: swiftSkip, timeout: 900_000 }, async () => {
  const d1 = daemons[0]!;
  const swift = await startSwift({ proxyIp: '0.0.0.0' });
  const hostAddress = `${prefix}.1`;
  const proxy = `${hostAddress}:${swift.ports.proxy}`;
  const base = { ...swarm!.env, COUCHTROVE_DOCKER_STORAGE_ADDRESS: hostAddress };
  const alice = basicAuth('alice', 'secret-1');
  const put = async (url: string, doc: string, n: number) => {
    const r = await fetch(`${url}/payroll/${doc}`, { method: 'PUT', headers: { authorization: alice, 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(r.status, 201, `PUT ${doc}: ${r.status}`);
  };
  const readN = async (url: string, doc: string) => {
    const r = await fetch(`${url}/payroll/${doc}`, { headers: { authorization: alice } });
    assert.equal(r.status, 200, `GET ${url}/payroll/${doc}: ${r.status}`);
    return ((await r.json()) as J).n;
  };
  const make = async (s: RealServer, name: string, extra: J): Promise<{ id: string; url: string }> => {
    const r = await api(s.api, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, datastore: { type: 'couchdb', version: '3.5' }, ...extra } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const id = (r.json.instance as J).id as string;
    const i = await waitStatus(s.api, 'instances', id, ['ACTIVE', 'ERROR'], 240_000);
    assert.equal(i.status, 'ACTIVE', JSON.stringify(i.fault));
    return { id, url: i.couchdb_url as string };
  };
  const users = { databases: [{ name: 'payroll' }], users: [{ name: 'alice', password: 'secret-1', databases: [{ name: 'payroll' }] }] };
  const removeAll = async (s: RealServer, ids: string[]) => {
    for (const id of ids) {
      assert.equal((await api(s.api, 'DELETE', `/instances/${id}`)).status, 202);
      await within(`instance ${id} deleted`, 120_000, async () => ((await api(s.api, 'GET', `/instances/${id}`)).status === 404 ? true : null));
    }
  };
  let s: RealServer | undefined;
  try {
    const t0 = Date.now();
    s = await startServer(path.join(root, 'state-swift'), { ...base, COUCHTROVE_REPOSITORY: 'swift://ct-swarm/p', ...swift.swiftEnv() } as Record<string, string>);
    const a = await make(s, 'sw-swift-a', users);
    await put(a.url, 'd1', 1);
    const secretName = `couchtrove-${a.id}-storage`;
    assert.equal(((await d1.docker.getSecret(secretName).inspect()) as { Spec: { Labels: Record<string, string> } }).Spec.Labels[LABEL], a.id);
    const svc = (await d1.docker.getService(`couchtrove-${a.id}`).inspect()) as { Spec: { TaskTemplate: { ContainerSpec: { Secrets: Array<{ SecretName: string; File: { Name: string; UID: string; Mode: number } }> } } } };
    assert.ok(svc.Spec.TaskTemplate.ContainerSpec.Secrets.some((x) => x.SecretName === secretName && x.File.Name === STORAGE_CREDENTIALS && x.File.UID === '0' && x.File.Mode === 0o400), JSON.stringify(svc.Spec.TaskTemplate.ContainerSpec.Secrets));
    assert.equal(JSON.stringify(svc).includes(swift.key), false, 'the Swift key shows in the service spec');
    const ta = await task(a.id);
    assert.equal(JSON.stringify(await ta.d.docker.getContainer(ta.container).inspect()).includes(swift.key), false, 'the Swift key shows in docker inspect');
    assert.equal((await execIn(ta.d.docker, ta.container, '0:0', ['stat', '-L', '-c', '%u:%g %a', STORAGE_CREDENTIALS])).out.trim(), '0:0 400');
    assert.notEqual((await execIn(ta.d.docker, ta.container, '5984:5984', ['cat', STORAGE_CREDENTIALS])).code, 0, `uid 5984 reads ${STORAGE_CREDENTIALS}`);
    // The endpoint on 127.0.0.1 moved to docker_storage_address.
    assert.deepEqual(JSON.parse((await execIn(ta.d.docker, ta.container, '0:0', ['cat', STORAGE_CREDENTIALS])).out), { ...swift.swiftEnv(), ST_AUTH: `http://${proxy}/auth/v1.0` });

    // swift://: a full backup and an incremental on it, written by the agent in the task; restored into a new instance.
    const [, inc] = await fullAndIncremental(s.api, a.id, ['sw-swift-full', 'sw-swift-inc'], () => put(a.url, 'd2', 2), () => rawSwiftNames(swift, 'ct-swarm', 'p/'));
    const b = await make(s, 'sw-swift-b', { restorePoint: { backupRef: inc.id } });
    assert.deepEqual([await readN(b.url, 'd1'), await readN(b.url, 'd2')], [1, 2]);
    console.log(`swift:// from swarm tasks (create, full + incremental backup, create --backup): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await removeAll(s, [b.id, a.id]);
    await assert.rejects(d1.docker.getSecret(secretName).inspect(), (err: { statusCode?: number }) => err.statusCode === 404, `secret ${secretName} left`);
    await s.kill('SIGTERM');
    s = undefined;

    // s3:// (Swift's S3 API).
    const t1 = Date.now();
    s = await startServer(path.join(root, 'state-s3'), { ...base, COUCHTROVE_REPOSITORY: 's3://ct-swarm-s3/p', ...swift.s3Env() } as Record<string, string>);
    const c = await make(s, 'sw-s3-c', users);
    const tc = await task(c.id);
    const s3creds = JSON.parse((await execIn(tc.d.docker, tc.container, '0:0', ['cat', STORAGE_CREDENTIALS])).out) as Record<string, string>;
    assert.equal(s3creds.AWS_ENDPOINT_URL, `http://${proxy}/`);
    assert.equal(JSON.stringify(await tc.d.docker.getContainer(tc.container).inspect()).includes(swift.secretAccessKey), false, 'the S3 secret key shows in docker inspect');
    await put(c.url, 'd3', 3);
    await fullAndIncremental(s.api, c.id, ['sw-s3-full', 'sw-s3-inc'], () => put(c.url, 'd4', 4), () => rawSwiftNames(swift, 'ct-swarm-s3', 'p/'));
    // Restoring from s3:// runs the same agent code as from swift:// (above) and from containers (docker.test).
    console.log(`s3:// from swarm tasks (create, full + incremental backup): ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    await removeAll(s, [c.id]);
    // Only this test's instances: the test above, failed, may have left its own.
    const mine = new Set([a.id, b.id, c.id]);
    assert.deepEqual((await d1.docker.listServices({ filters: JSON.stringify({ label: [LABEL] }) })).map((x) => x.Spec?.Labels?.[LABEL]).filter((x) => mine.has(x!)), []);
  } finally {
    await s?.kill('SIGKILL');
    await swift.stop();
  }
});
