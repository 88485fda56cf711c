// The Docker compute driver end to end, with the real `openstack` client, on a private dockerd this test
// starts (and stops by pid): create with databases and users -> ACTIVE -> write -> backup -> create
// --backup -> resize flavor (the container's limits change, data kept) -> a killed container shows in
// ERROR with the reason -> restart -> the control plane restarts and picks the containers up -> delete,
// no container or volume left. Apache CouchDB when COUCHDB_HOME is set, the development engine otherwise.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, tempDir, api, waitStatus, basicAuth, within, createInstance, fullAndIncremental, type J, type RealServer } from '../support/server.js';
import { clientsSkip, troveClients } from '../support/trove-clients.js';
import { connectsFrom, dockerSkip, execIn, startDockerHost, type TestDaemon, type TestDockerHost, tearDownAfter } from '../support/docker.js';
import { AGENT_CAPS, INSTANCE_KEY, LABEL, STORAGE_CREDENTIALS, VOLUME_MOUNT } from '../../src/compute/docker/driver.js';
import { rawSwiftNames, startSwift, swiftAvailable } from '../support/swift.js';
import { readManifest } from '../../src/backup/repository.js';
import { openStorage } from '../../src/storage/index.js';
import { runFeatures } from './features.js';

const skip = dockerSkip || clientsSkip;
if (skip) console.log(`docker tests skipped: ${skip}`);

const root = tempDir('couchtrove-docker-');
const stateDir = path.join(root, 'state');
const IMAGE = 'couchtrove-guest:test';
// The daemon runs in a network namespace of its own (startDockerHost); the test reaches it over a bridge of its own.
const prefix = `10.215.${process.pid % 250}`;
const PUBLISH = `${prefix}.2`;
let host: TestDockerHost | undefined;
let daemon: TestDaemon | undefined;
let server: RealServer | undefined;
let env: Record<string, string> = {};

before(async () => {
  if (skip) return;
  host = await startDockerHost(root, `k${process.pid % 10000}`, prefix, IMAGE, '21000-21099');
  daemon = host.daemon;
  env = host.env;
  server = await startServer(stateDir, env);
}, { timeout: 900_000 });

tearDownAfter(root, () => ({ server, host: host }));

const home = path.join(root, 'home');
const { os } = troveClients(home, () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;

async function idle(id: string, want = ['ACTIVE', 'ERROR', 'RESTART_REQUIRED']): Promise<J> {
  await new Promise((r) => setTimeout(r, 300));
  return waitStatus(server!.api, 'instances', id, want, 180_000);
}

async function container(id: string) {
  return daemon!.docker.getContainer(`couchtrove-${id}`).inspect();
}

/** Runs a command in the instance's container as user; its exit code and output. */
const execAs = (id: string, user: string, cmd: string[]) => execIn(daemon!.docker, `couchtrove-${id}`, user, cmd);
/** Whether a TCP connection from inside the instance's container, as user, to host:port succeeds. */
const connects = (id: string, user: string, host: string, port: number) => connectsFrom(daemon!.docker, `couchtrove-${id}`, user, host, port);

/** The container's address on its own network. */
async function addressOf(id: string): Promise<{ ip: string; gateway: string }> {
  const nets = (await container(id)).NetworkSettings.Networks;
  const n = nets[`couchtrove-${id}`];
  assert.ok(n, `container of ${id} is on its own network: ${JSON.stringify(Object.keys(nets))}`);
  return { ip: n.IPAddress, gateway: n.Gateway };
}

async function readDoc(url: string): Promise<J> {
  const r = await fetch(`${url}/orders/doc1`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
  assert.equal(r.status, 200, `GET ${url}/orders/doc1: ${r.status}`);
  return (await r.json()) as J;
}

/** Writes a document as alice; the response status. */
async function putDoc(url: string, doc: string, body: J): Promise<number> {
  const r = await fetch(`${url}/orders/${doc}`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await r.arrayBuffer();
  return r.status;
}

/** The URL a replica follows, from its show (which gives its agent 5 s: asked again while it does not answer). */
async function primaryUrl(id: string): Promise<string> {
  return within(`the primary_url of ${id}`, 120_000, async () => {
    const rep = ((await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J).replication as J | undefined;
    return typeof rep?.primary_url === 'string' ? rep.primary_url : null;
  });
}

/** The names of the containers on a network, or null when it does not exist. */
async function onNetwork(name: string): Promise<string[] | null> {
  try {
    return Object.values(((await daemon!.docker.getNetwork(name).inspect()) as { Containers?: Record<string, { Name: string }> }).Containers ?? {}).map((c) => c.Name).sort();
  } catch {
    return null;
  }
}

/**
 * Issue 26 item 3, replicas across containers: a replica of the instance `id` (created without a flavor) follows it
 * over the replication network only the two share, is read-only for the tenant, is promoted (the old source now
 * follows it over the promoted one's network), then, paused, is ejected: `id` is the source again, alone, and
 * every replication network is gone once the replica is deleted. `other` (another instance of the tenant, not in
 * the set) reaches neither.
 */
async function replicaChecks(id: string, url: string, other: string): Promise<void> {
  const t0 = Date.now();
  const made = await osJson('instance', 'create', 'dk-replica', '--replica-of', id);
  const rid = made.id as string;
  const R = await idle(rid);
  assert.equal(R.status, 'ACTIVE', JSON.stringify(R));
  console.log(`replica create -> ACTIVE (docker driver): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.equal((R.flavor as J).id, '1', "the replica takes its source's flavor");
  const rUrl = R.couchdb_url as string;
  const name = (x: string) => `couchtrove-${x}`;
  const net = (x: string) => `couchtrove-${x}-replication`;
  const port = Number(new URL(url).port);
  // It follows its source at the source's container name on the network the two share, not at the publish address.
  assert.equal(await primaryUrl(rid), `http://${name(id)}:${port}`);
  assert.deepEqual(await onNetwork(net(id)), [name(id), name(rid)].sort());
  assert.equal(await connects(rid, '5984:5984', name(id), port), true, 'the replica reaches its source on their network');
  const srcIp = (await container(id)).NetworkSettings.Networks[net(id)]!.IPAddress;
  assert.equal(await connects(other, '5984:5984', srcIp, port), false, `${other}, not in the set, reaches the source on the replication network`);
  const arrives = (u: string, doc: string) => within(`${doc} on ${u}`, 60_000, async () => {
    const r = await fetch(`${u}/orders/${doc}`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
    return r.status === 200 ? ((await r.json()) as J) : null;
  });
  assert.equal((await arrives(rUrl, 'doc1')).n, 1, 'the seed');
  assert.equal(await putDoc(url, 'rep-1', { n: 11 }), 201);
  assert.equal((await arrives(rUrl, 'rep-1')).n, 11, 'a write on the source reaches the replica');
  assert.equal(await putDoc(rUrl, 'on-replica', { n: 0 }), 403, 'the replica is read-only for the tenant');

  // Promote: the replica is the source; the old source follows it on the promoted one's network, the old network goes.
  await os('instance', 'promote', rid);
  assert.equal((await idle(rid)).status, 'ACTIVE');
  const old = await idle(id);
  assert.equal((old.replica_of as J | undefined)?.id, rid, JSON.stringify(old));
  assert.equal(await primaryUrl(id), `http://${name(rid)}:${Number(new URL(rUrl).port)}`);
  assert.deepEqual(await onNetwork(net(rid)), [name(id), name(rid)].sort());
  assert.equal(await onNetwork(net(id)), null, "the old source's replication network is gone with its last follower");
  assert.equal(await putDoc(rUrl, 'rep-2', { n: 12 }), 201);
  assert.equal((await arrives(url, 'rep-2')).n, 12, 'the old source follows the promoted replica');
  assert.equal(await putDoc(url, 'on-old-source', { n: 0 }), 403);

  // Eject: the source (rid) hangs (paused: its agent and CouchDB never answer); `id` takes over and is writable again.
  await daemon!.docker.getContainer(name(rid)).pause();
  try {
    await os('instance', 'eject', rid);
    await within(`${id} standalone after the eject`, 120_000, async () => {
      const s = (await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J;
      return s.status === 'ACTIVE' && s.replica_of === undefined ? s : null;
    });
    assert.equal(await putDoc(url, 'after-eject', { n: 13 }), 201);
  } finally {
    await daemon!.docker.getContainer(name(rid)).unpause();
  }
  assert.deepEqual((await container(id)).NetworkSettings.Networks[net(rid)], undefined, 'the new source is off the ejected one\'s network');

  // Detach: a new replica of `id` leaves the set; it keeps what it had, is writable, follows no more, and the
  // replication network goes with `id`'s last follower.
  const did = (await osJson('instance', 'create', 'dk-detach', '--replica-of', id)).id as string;
  assert.equal((await idle(did)).status, 'ACTIVE');
  const dUrl = (await idle(did)).couchdb_url as string;
  assert.equal((await arrives(dUrl, 'after-eject')).n, 13, 'the second replica follows');
  assert.deepEqual(await onNetwork(net(id)), [name(did), name(id)].sort());
  await os('instance', 'detach', did);
  const detached = await within(`${did} detached`, 120_000, async () => {
    const s = (await api(server!.api, 'GET', `/instances/${did}`)).json.instance as J;
    return s.status === 'ACTIVE' && s.replica_of === undefined ? s : null;
  });
  assert.equal(detached.replication, undefined, JSON.stringify(detached.replication));
  assert.equal(await onNetwork(net(id)), null, "the source's replication network is gone with its only follower");
  assert.equal(await putDoc(dUrl, 'on-detached', { n: 14 }), 201, 'the detached replica is writable');
  assert.equal(await putDoc(url, 'after-detach', { n: 15 }), 201);
  // Give a replication that wrongly went on the time it takes the first write to arrive (above), then look.
  await sleep(5_000);
  assert.equal((await fetch(`${dUrl}/orders/after-detach`, { headers: { authorization: basicAuth('alice', 'secret-1') } })).status, 404, 'the detached replica still follows');

  for (const x of [rid, did]) await os('instance', 'delete', x);
  for (const x of [rid, did]) await within(`${x} deleted`, 120_000, async () => ((await api(server!.api, 'GET', `/instances/${x}`)).status === 404 ? true : null));
  for (const x of [id, rid, did]) assert.equal(await onNetwork(net(x)), null, `${net(x)} is left`);
  console.log(`replica: create, follow, promote, eject, detach, delete (docker driver): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

test('docker driver: create, backup, restore, resize, a dead container started again, control plane restart, delete', { skip, timeout: 1_500_000 }, async (t) => {
  const t0 = Date.now();
  const created = await osJson('instance', 'create', 'dk-one', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5', '--databases', 'orders', '--users', 'alice:secret-1');
  const id = created.id as string;
  const shown = await idle(id);
  assert.equal(shown.status, 'ACTIVE', JSON.stringify(shown));
  console.log(`create -> ACTIVE (docker driver, image present): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const url = shown.couchdb_url as string;
  assert.equal(new URL(url).hostname, PUBLISH);

  // One container and one volume, labelled; flavor 1 (512 MiB, 1 vCPU) as limits; unprivileged; no secret in inspect.
  const c = await container(id);
  assert.equal(c.Config.Labels[LABEL], id);
  assert.equal(c.HostConfig.Memory, 512 * 1024 * 1024);
  assert.equal(c.HostConfig.NanoCpus, 1e9);
  assert.equal(c.Config.User, '0:0');
  assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
  assert.deepEqual(c.HostConfig.CapAdd, AGENT_CAPS);
  // CouchDB runs as uid 5984; the agent's token, the backup key and the repository are out of its reach.
  const top = (await daemon!.docker.getContainer(`couchtrove-${id}`).top({ ps_args: '-o pid,uid,args' })) as { Processes: string[][] };
  const couch = top.Processes.filter((p) => /beam\.smp|devengine|couchdb\.js/.test(p.join(' ')));
  assert.ok(couch.length > 0, `no CouchDB process in ${JSON.stringify(top.Processes)}`);
  for (const p of couch) assert.equal(p[1], '5984', `CouchDB runs as uid ${p[1]}: ${p.join(' ')}`);
  assert.equal((await execAs(id, '0:0', ['cat', '/etc/couchtrove/agent.token'])).code, 0, 'the probe itself does not work');
  for (const file of ['/etc/couchtrove/agent.token', INSTANCE_KEY]) assert.notEqual((await execAs(id, '5984:5984', ['cat', file])).code, 0, `uid 5984 can read ${file}`);
  // The container holds its own instance's key, and neither the master key nor any other key file.
  const repoDir = path.join(stateDir, 'backups');
  const part = (x: string) => path.join(repoDir, 'instances', x);
  const ownKey = fs.readFileSync(path.join(stateDir, 'keys', `${id}.key`), 'utf8');
  assert.equal((await execAs(id, '0:0', ['cat', INSTANCE_KEY])).out, ownKey);
  assert.equal((await execAs(id, '0:0', ['ls', '/etc/couchtrove'])).out.split('\n').filter(Boolean).sort().join(' '), 'agent.json agent.token backup.key');
  assert.notEqual((await execAs(id, '0:0', ['test', '-e', path.join(stateDir, 'backup.key')])).code, 0, 'the master key is in the container');
  // Only its own part of the repository is mounted (even root in the container sees no other).
  assert.equal((await execAs(id, '0:0', ['ls', path.join(repoDir, 'instances')])).out.trim(), id);
  assert.notEqual((await execAs(id, '5984:5984', ['ls', part(id)])).code, 0, 'uid 5984 can list its part of the backup repository');
  const token = fs.readFileSync(path.join(stateDir, 'instances', id, 'agent.token'), 'utf8').trim();
  assert.equal(JSON.stringify(c).includes(token), false, 'the agent token shows in docker inspect');
  const volumes = (await daemon!.docker.listVolumes({ filters: JSON.stringify({ label: [`${LABEL}=${id}`] }) })).Volumes ?? [];
  assert.equal(volumes.length, 1);
  const mounts = c.Mounts.map((m) => `${m.Type}:${m.Destination}`).sort();
  assert.deepEqual(mounts, [`bind:${part(id)}`, 'volume:/srv/couchtrove']);
  assert.equal(shown.engine, process.env.COUCHDB_HOME ? 'couchdb' : 'devengine');
  // The agent itself cannot chown or chmod what is not its own (issue 22): CHOWN, FOWNER and SETPCAP are out of
  // its bounding set; only its parent (`agent entry`) has them, to give files to uid 5984 inside the volume.
  const caps = async (args: string) => {
    const js = `const fs=require('fs');for(const p of fs.readdirSync('/proc')){if(!/^\\d+$/.test(p))continue;let c='';try{c=fs.readFileSync('/proc/'+p+'/cmdline','utf8')}catch{continue}if(c.startsWith('/usr/local/bin/node')&&c.includes(${JSON.stringify(args)}))console.log(fs.readFileSync('/proc/'+p+'/status','utf8').match(/^CapBnd:\\s*(\\w+)/m)[1])}`;
    const lines = (await execAs(id, '0:0', ['/usr/local/bin/node', '-e', js])).out.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `one process with ${args}: ${JSON.stringify(lines)}`);
    return BigInt(`0x${lines[0]!}`);
  };
  const CAP = { CHOWN: 0n, DAC_OVERRIDE: 1n, FOWNER: 3n, KILL: 5n, SETGID: 6n, SETUID: 7n, SETPCAP: 8n };
  const has = (set: bigint, cap: bigint) => ((set >> cap) & 1n) === 1n;
  const agentCaps = await caps('agent\0serve');
  const entryCaps = await caps('agent\0entry');
  for (const cap of ['CHOWN', 'FOWNER', 'SETPCAP'] as const) {
    assert.equal(has(agentCaps, CAP[cap]), false, `the agent has CAP_${cap}`);
    assert.equal(has(entryCaps, CAP[cap]), true, `agent entry lacks CAP_${cap}`);
  }
  for (const cap of ['DAC_OVERRIDE', 'KILL', 'SETGID', 'SETUID'] as const) assert.equal(has(agentCaps, CAP[cap]), true, `the agent lacks CAP_${cap}`);

  const put = await fetch(`${url}/orders/doc1`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: '{"n":1}' });
  assert.equal(put.status, 201);

  const b = await osJson('backup', 'create', 'dk-backup', '--instance', id);
  const bid = b.id as string;
  assert.equal((await waitStatus(server!.api, 'backups', bid, ['COMPLETED', 'FAILED'], 180_000)).status, 'COMPLETED');
  const r = await osJson('instance', 'create', 'dk-restored', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5', '--backup', bid);
  const rid = r.id as string;
  const restored = await idle(rid);
  assert.equal(restored.status, 'ACTIVE', JSON.stringify(restored));
  assert.equal((await readDoc(restored.couchdb_url as string)).n, 1);

  // One database back into the live instance: its scratch CouchDB's files are given to uid 5984 by agent entry.
  const one = await api(server!.api, 'POST', `/instances/${id}/databases/orders/restore`, { restore: { backup: bid, as: 'orders_then' } });
  assert.equal(one.status, 200, JSON.stringify(one.json));
  assert.equal((one.json.restore as J).doc_count, 1, JSON.stringify(one.json));
  const copy = await fetch(`${url}/orders_then/doc1`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
  assert.equal(copy.status, 200, `the restored copy: GET orders_then/doc1 answered ${copy.status}`);

  // The backup is in the instance's part, under its own key; the restored instance kept nothing of it.
  const st = await openStorage(`file://${part(id)}`);
  try {
    assert.equal((await readManifest(st, bid)).body.encryption?.keyId, `instance:${id}`);
  } finally {
    await st.close();
  }
  const rc = await container(rid);
  assert.deepEqual(rc.Mounts.map((m) => `${m.Type}:${m.Destination}:${m.RW ? 'rw' : 'ro'}`).sort(), [`bind:${part(rid)}:rw`, 'volume:/srv/couchtrove:rw'], 'the lent part of the repository is gone after the restore');
  assert.equal((await execAs(rid, '0:0', ['ls', '/etc/couchtrove'])).out.split('\n').filter(Boolean).sort().join(' '), 'agent.json agent.token backup.key', 'the lent key is gone after the restore');
  assert.equal((await execAs(rid, '0:0', ['cat', INSTANCE_KEY])).out, fs.readFileSync(path.join(stateDir, 'keys', `${rid}.key`), 'utf8'));
  // As uid 5984 in the restored instance's container (a tenant running code), and even as its root:
  // the first instance's backup objects are out of reach, and so are its CouchDB and agent ports.
  const manifest = path.join(part(id), 'backups', bid, 'manifest.json');
  assert.ok(fs.existsSync(manifest));
  for (const user of ['5984:5984', '0:0']) assert.notEqual((await execAs(rid, user, ['cat', manifest])).code, 0, `${user} in another container reads ${manifest}`);
  const target = await addressOf(id);
  const own = await addressOf(rid);
  assert.equal(await connects(rid, '5984:5984', own.ip, Number(new URL(restored.couchdb_url as string).port)), true, 'the probe reaches its own CouchDB (the probe works)');
  const ports = { couchdb: Number(new URL(url).port), agent: Number(fs.readFileSync(path.join(stateDir, 'instances', id, 'placement.json'), 'utf8').match(/"agentPort":(\d+)/)![1]) };
  for (const [what, port] of Object.entries(ports)) {
    assert.equal(await connects(id, '5984:5984', target.ip, port), true, `the first instance's own ${what} port answers inside it`);
    for (const host of [target.ip, own.gateway, '127.0.0.1']) {
      // Its container address (another network: Docker's isolation drops it), its own gateway (the daemon's
      // side of its network, where nothing is published) and its own loopback.
      assert.equal(await connects(rid, '5984:5984', host, port), false, `uid 5984 in ${rid} reaches ${what} port ${port} of ${id} at ${host}`);
    }
  }

  // Issue 22 in a container, as its CouchDB's uid: the files CouchDB reads are not its to write or replace
  // (a log-file injection lands nowhere; no link for the root agent to follow), and a configuration key that
  // needs a restart, with root enabled, ends ACTIVE with the key in effect (it bricked instances before).
  const agentDir = `${VOLUME_MOUNT}/agent`;
  for (const script of [`echo '[native_query_servers]' >> ${agentDir}/etc/local.ini`, `touch ${agentDir}/etc/x.ini`, `ln -sf /etc/couchtrove/agent.token ${agentDir}/home/.erlang.cookie`]) {
    assert.notEqual((await execAs(rid, '5984:5984', ['sh', '-c', script])).code, 0, `uid 5984 could: ${script}`);
  }
  const cfg = await osJson('configuration', 'create', 'dk-restart-key', JSON.stringify({ 'chttpd_auth_cache/max_lifetime': 90000 }), '--datastore', 'couchdb', '--datastore-version', '3.5');
  await os('root', 'enable', rid);
  await os('configuration', 'attach', rid, cfg.id as string);
  assert.equal((await idle(rid)).status, 'RESTART_REQUIRED');
  await os('instance', 'restart', rid);
  assert.equal((await idle(rid)).status, 'ACTIVE');
  assert.match((await execAs(rid, '0:0', ['cat', `${agentDir}/etc/local.ini`])).out, /^max_lifetime = 90000$/m);

  await replicaChecks(id, url, rid);

  // Resize: the running container's limits follow flavor 3 (2 GiB, 2 vCPUs), same container, data kept.
  await os('instance', 'resize', 'flavor', id, '3');
  assert.equal((await idle(id)).status, 'ACTIVE');
  const resized = await container(id);
  assert.equal(resized.Id, c.Id);
  assert.equal(resized.HostConfig.Memory, 2048 * 1024 * 1024);
  assert.equal(resized.HostConfig.NanoCpus, 2e9);
  assert.equal(((await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J & { flavor: J }).flavor.id, '3');
  assert.equal((await readDoc(url)).n, 1);

  // A container that dies shows so, with the reason, and the health monitor starts it again by itself; one that
  // dies again soon after is counted (a restart loop shows in the log and in fault), with a longer back-off.
  const starts = (): string[] => server!.log().match(new RegExp(`instance ${id}: starting it again \\(start \\d+ since [^)]+\\): [^\\n]*`, 'g')) ?? [];
  /** What the next run needs to know when a wait fails: the instance as the API shows it, its container, the log. */
  const howItLooks = async (err: unknown): Promise<never> => {
    const shown = (await api(server!.api, 'GET', `/instances/${id}`)).json.instance as J;
    const said = server!.log().split('\n').filter((l) => l.includes(id) || l.includes('health')).slice(-8).join('\n  ');
    throw new Error(`${String(err)}; instance ${String(shown.status)} ${JSON.stringify(shown.fault)}; container ${JSON.stringify((await container(id)).State)}; the server last said:\n  ${said}`);
  };
  /** After the container ended: the health monitor says it starts it again, and it is back (CouchDB up, ACTIVE). */
  const startedAgain = async (before: number): Promise<string> => {
    const line = await within('the health monitor starting the container again', 120_000, () => starts()[before] ?? null).catch(howItLooks);
    await within('CouchDB back', 180_000, async () => ((await fetch(`${url}/_up`).catch(() => null))?.status === 200 ? true : null)).catch(howItLooks);
    assert.equal((await idle(id, ['ACTIVE'])).status, 'ACTIVE');
    return line;
  };
  for (const n of [1, 2]) {
    const before = starts().length;
    await daemon!.docker.getContainer(`couchtrove-${id}`).kill();
    assert.match(await startedAgain(before), new RegExp(`\\(start ${n} since .*container couchtrove-${id} is exited, exit code 137`));
    assert.equal((await readDoc(url)).n, 1);
  }
  await os('instance', 'restart', id);
  assert.equal((await idle(id)).status, 'ACTIVE');

  // Issue 22, point 7, in a container: the agent killed with -9 mid-backup ends its container; the backup ends
  // FAILED, the container is started again, and a new backup works.
  for (let i = 0; i < 40; i++) {
    const r = await fetch(`${url}/orders/blob-${i}/data`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/octet-stream' }, body: randomBytes(4 << 20) });
    assert.ok(r.status === 201 || r.status === 200, `attachment ${r.status}`);
  }
  // Only the backup's own directory: the instance's whole part (its archive of many cuts) takes longer to walk than this backup takes.
  const objectsOf = (bid: string) => {
    const dir = path.join(part(id), 'backups', bid);
    return fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.isFile() === true) : [];
  };
  const restartsBefore = starts().length;
  // The agent's pid as this host sees it (found before the backup starts): killed from here the moment the
  // backup has written objects, with no `docker exec` in between that a busy machine makes slower than the backup.
  const procs = ((await daemon!.docker.getContainer(`couchtrove-${id}`).top({ ps_args: '-o pid,args' })) as { Processes: string[][] }).Processes;
  const agentPid = Number(procs.find((p) => /node .*agent serve/.test(p.join(' ')))?.[0]);
  assert.ok(agentPid > 1, `the agent in ${JSON.stringify(procs)}`);
  const kb = await osJson('backup', 'create', 'dk-killed', '--instance', id);
  const kbid = kb.id as string;
  await within('the backup writing objects', 120_000, () => (objectsOf(kbid).length >= 2 ? true : null));
  process.kill(agentPid, 'SIGKILL');
  assert.equal((await waitStatus(server!.api, 'backups', kbid, ['FAILED', 'COMPLETED'], 120_000)).status, 'FAILED', 'the agent died before the backup completed');
  // Its partial objects go once the dead writer's lock is stale (STALE_MS, 5 min: a writer in a container is not
  // in this host's process table); test/api/agent-kill sees them removed for a local agent.
  process.stderr.write(`backup ${kbid} FAILED with ${objectsOf(kbid).length} partial objects, removed by its backup.discard task once its lock is stale\n`);
  assert.match(await startedAgain(restartsBefore), /exited, exit code/);
  const after = await osJson('backup', 'create', 'dk-after', '--instance', id);
  assert.equal((await waitStatus(server!.api, 'backups', after.id as string, ['COMPLETED', 'FAILED'], 180_000)).status, 'COMPLETED');
  assert.equal((await readDoc(url)).n, 1);

  // The control plane restarts without touching the containers, and picks them up.
  const startedAt = (await container(id)).State.StartedAt;
  await server!.kill('SIGTERM');
  server = await startServer(stateDir, env);
  assert.equal((await idle(id)).status, 'ACTIVE');
  assert.equal((await container(id)).State.StartedAt, startedAt);
  assert.equal((await readDoc(url)).n, 1);

  // A lower memory limit than the container holds, with nothing the kernel can reclaim (1.2 GB of a process's
  // own, no swap): the resize stops CouchDB, still cannot lower it, and makes the container again with the new
  // limits on the same volume and ports. The data is kept and the stray process is gone with the old container.
  const big = (await container(id)).Id;
  await execAs(id, '0:0', ['sh', '-c', 'nohup /usr/local/bin/node -e "globalThis.b = Buffer.alloc(1200 * 1048576, 1); setInterval(() => {}, 1e9)" > /dev/null 2>&1 &']);
  await within('the container holding 1.2 GB', 60_000, async () => ((await daemon!.docker.getContainer(`couchtrove-${id}`).stats({ stream: false })).memory_stats.usage > 1150 * 1048576 ? true : null));
  await os('instance', 'resize', 'flavor', id, '2');
  const shrunk = await idle(id);
  assert.equal(shrunk.status, 'ACTIVE', JSON.stringify(shrunk.fault));
  assert.equal((shrunk.flavor as J).id, '2');
  const small = await container(id);
  assert.notEqual(small.Id, big, 'a new container');
  assert.equal(small.HostConfig.Memory, 1024 * 1024 * 1024);
  assert.match(server!.log(), new RegExp(`instance ${id}: 1024 MiB refused while the container holds .*made again with the new limits`));
  assert.equal((await readDoc(url)).n, 1);

  // The docker column of the feature matrix (docs/compute.md): the same table as the local and swarm drivers.
  await runFeatures(t, { driver: 'docker', api: server!.api, url: server!.url, id, couchdbUrl: url, createMs: 180_000 });

  await os('instance', 'delete', rid);
  await os('instance', 'delete', id);
  for (const x of [id, rid]) {
    const end = Date.now() + 120_000;
    while ((await api(server!.api, 'GET', `/instances/${x}`)).status !== 404 && Date.now() < end) await new Promise((res) => setTimeout(res, 250));
    assert.equal((await api(server!.api, 'GET', `/instances/${x}`)).status, 404);
  }
  assert.deepEqual(await daemon!.docker.listContainers({ all: true, filters: JSON.stringify({ label: [LABEL] }) }), []);
  assert.deepEqual((await daemon!.docker.listVolumes({ filters: JSON.stringify({ label: [LABEL] }) })).Volumes ?? [], []);
  assert.deepEqual(await daemon!.docker.listNetworks({ filters: JSON.stringify({ label: [LABEL] }) }), []);
  // Backups are kept.
  assert.equal((await waitStatus(server!.api, 'backups', bid, ['COMPLETED'])).status, 'COMPLETED');
});

/** As the tenant would check it: the document's n, with alice's password, on the instance's couchdb_url. */
async function readN(url: string, doc: string): Promise<unknown> {
  const r = await fetch(`${url}/payroll/${doc}`, { headers: { authorization: basicAuth('alice', 'secret-1') } });
  assert.equal(r.status, 200, `GET ${url}/payroll/${doc}: ${r.status}`);
  return ((await r.json()) as J).n;
}

/**
 * The repository's credentials in an instance's container: root's, 0400, unreadable as CouchDB's uid, the
 * endpoint moved to docker_storage_address; no secret in `docker inspect` (environment, arguments, labels).
 */
async function assertCredentials(id: string, secrets: string[], endpoint: [string, string]): Promise<void> {
  assert.equal((await execAs(id, '0:0', ['stat', '-c', '%u:%g %a', STORAGE_CREDENTIALS])).out.trim(), '0:0 400');
  assert.notEqual((await execAs(id, '5984:5984', ['cat', STORAGE_CREDENTIALS])).code, 0, `uid 5984 can read ${STORAGE_CREDENTIALS}`);
  const creds = JSON.parse((await execAs(id, '0:0', ['cat', STORAGE_CREDENTIALS])).out) as Record<string, string>;
  assert.equal(creds[endpoint[0]], endpoint[1]);
  const c = await container(id);
  const shown = [...(c.Config.Env ?? []), ...(c.Config.Cmd ?? []), ...(c.Config.Entrypoint ?? []), ...c.Args, c.Path, ...Object.entries(c.Config.Labels ?? {}).flat()].join('\n');
  for (const v of secrets) {
    assert.equal(shown.includes(v), false, `${v} shows in docker inspect's environment, arguments or labels`);
    assert.equal(JSON.stringify(c).includes(JSON.stringify(v)), false, `${v} shows in docker inspect`);
  }
}

const swiftSkip = skip || (swiftAvailable() ? false : 'OpenStack Swift is not installed (scripts/install-test-deps.sh)');
if (swiftSkip && !skip) console.log(`docker swift:// and s3:// test skipped: ${swiftSkip}`);

test('docker driver: swift:// and s3:// repositories from containers: credentials as a 0400 file, full and incremental backups, create --backup', { skip: swiftSkip, timeout: 900_000 }, async () => {
  // Swift on this host, its proxy on every address: the containers reach it on the host's address on the test's
  // bridge (docker_storage_address), the control plane on 127.0.0.1 (its own environment's endpoints).
  const swift = await startSwift({ proxyIp: '0.0.0.0' });
  const hostAddress = `${prefix}.1`;
  const proxy = `${hostAddress}:${swift.ports.proxy}`;
  const objState = path.join(root, 'state-objstore');
  const base = { ...env, COUCHTROVE_COUCHDB_TCP_PORTS: '21100-21199' };
  const swiftEnv = { ...base, COUCHTROVE_REPOSITORY: 'swift://ct-docker/p', ...swift.swiftEnv() } as Record<string, string>;
  let s: RealServer | undefined;
  const t0 = Date.now();
  try {
    // Endpoints on 127.0.0.1 with no docker_storage_address: refused at start, naming both.
    await assert.rejects(startServer(path.join(root, 'state-refused'), swiftEnv), /ST_AUTH names 127\.0\.0\.1, which an instance's container cannot reach: set docker_storage_address/);
    s = await startServer(objState, { ...swiftEnv, COUCHTROVE_DOCKER_STORAGE_ADDRESS: hostAddress });
    const put = async (url: string, doc: string, n: number) => {
      const r = await fetch(`${url}/payroll/${doc}`, { method: 'PUT', headers: { authorization: basicAuth('alice', 'secret-1'), 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
      assert.equal(r.status, 201, `PUT ${doc}: ${r.status}`);
    };
    const users = { users: [{ name: 'alice', password: 'secret-1', databases: [{ name: 'payroll' }] }] };
    const a = await createInstance(s.api, objState, 'os-a', users);
    await put(a.url, 'd1', 1);
    await assertCredentials(a.id, [swift.key, swift.user], ['ST_AUTH', `http://${proxy}/auth/v1.0`]);
    assert.equal((await execAs(a.id, '0:0', ['ls', '/etc/couchtrove'])).out.split('\n').filter(Boolean).sort().join(' '), 'agent.json agent.token backup.key storage.json');

    // swift://: a full backup and an incremental on it, written by the agent in the container; restored into a new one.
    const [, inc] = await fullAndIncremental(s.api, a.id, ['os-swift-full', 'os-swift-inc'], () => put(a.url, 'd2', 2), () => rawSwiftNames(swift, 'ct-docker', 'p/'));
    const b = await createInstance(s.api, objState, 'os-b', { restorePoint: { backupRef: inc.id } });
    assert.deepEqual([await readN(b.url, 'd1'), await readN(b.url, 'd2')], [1, 2]);
    await assertCredentials(b.id, [swift.key, swift.user], ['ST_AUTH', `http://${proxy}/auth/v1.0`]);
    console.log(`swift:// from containers (create, full + incremental backup, create --backup): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await api(s.api, 'DELETE', `/instances/${b.id}`);

    // s3:// (Swift's S3 API) after a control-plane restart with the new repository: the running container gets the
    // new credentials copied in before its next backup (the agent reads the file at each open).
    await s.kill('SIGTERM');
    s = await startServer(objState, { ...base, COUCHTROVE_REPOSITORY: 's3://ct-docker-s3/p', COUCHTROVE_DOCKER_STORAGE_ADDRESS: hostAddress, ...swift.s3Env() } as Record<string, string>);
    const t1 = Date.now();
    await put(a.url, 'd3', 3);
    const [, s3inc] = await fullAndIncremental(s.api, a.id, ['os-s3-full', 'os-s3-inc'], () => put(a.url, 'd4', 4), () => rawSwiftNames(swift, 'ct-docker-s3', 'p/'));
    await assertCredentials(a.id, [swift.secretAccessKey, swift.accessKeyId], ['AWS_ENDPOINT_URL', `http://${proxy}/`]);
    const c = await createInstance(s.api, objState, 'os-c', { restorePoint: { backupRef: s3inc.id } });
    assert.deepEqual([await readN(c.url, 'd1'), await readN(c.url, 'd3'), await readN(c.url, 'd4')], [1, 3, 4]);
    await assertCredentials(c.id, [swift.secretAccessKey, swift.accessKeyId], ['AWS_ENDPOINT_URL', `http://${proxy}/`]);
    console.log(`s3:// from containers (full + incremental backup, create --backup): ${((Date.now() - t1) / 1000).toFixed(1)} s`);

    for (const x of [a.id, c.id, b.id]) {
      await api(s.api, 'DELETE', `/instances/${x}`);
      await within(`instance ${x} deleted`, 120_000, async () => ((await api(s!.api, 'GET', `/instances/${x}`)).status === 404 ? true : null));
    }
    // Only this test's instances: another test of the file that failed may have left its own.
    const mine = new Set([a.id, c.id, b.id]);
    assert.deepEqual((await daemon!.docker.listContainers({ all: true, filters: JSON.stringify({ label: [LABEL] }) })).filter((x) => mine.has(x.Labels[LABEL]!)), []);
  } finally {
    await s?.kill('SIGKILL');
    await swift.stop();
  }
});
