// Instances against each other, the host and local users (docs/security.md), and status that follows what
// really runs: on a real server with real agents (Apache CouchDB with COUCHDB_HOME, else the development
// engine). Isolation needs root (to switch uids); without it the isolation tests say so and skip.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandbox, basicAuth, startServer, api, waitStatus, processesUnder, createInstance, type J, type MadeInstance, type RealServer } from '../support/server.js';
import { processesOf } from '../../src/compute/local.js';

const root = process.getuid?.() === 0;
const engine = process.env.COUCHDB_HOME ? `Apache CouchDB at ${process.env.COUCHDB_HOME}` : 'development engine';
const { root: dir, stateDir, track } = sandbox('couchtrove-isolation-');

type Made = MadeInstance;
const create = (base: string, name: string): Promise<Made> => createInstance(base, stateDir, name);

/** The instance's CouchDB: the beam.smp (or development engine) running as its uid, or from its directory. */
function couchdbPid(m: Made): number {
  const pids = m.uid !== null ? processesOf(m.uid) : processesUnder(m.instanceDir);
  const pid = pids.find((p) => /beam\.smp|devengine/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8')));
  assert.ok(pid, `the CouchDB of ${m.id} runs`);
  return pid;
}

async function statusWithin(base: string, id: string, want: string[], ms: number): Promise<J> {
  const end = Date.now() + ms;
  for (;;) {
    const inst = (await api(base, 'GET', `/instances/${id}`)).json.instance as J;
    if (want.includes(inst.status as string) || Date.now() > end) return inst;
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe(`isolation and health [${engine}]`, () => {
  let server: RealServer;
  let a: Made;
  let b: Made;

  before(async () => {
    server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '2' }));
    a = await create(server.api, 'alpha');
    b = await create(server.api, 'beta');
  });
  after(async () => {
    await server.kill('SIGTERM');
  });

  test('each instance runs CouchDB as its own uid, owning its files alone', { skip: root ? false : 'needs root to switch uids' }, () => {
    assert.ok(a.uid !== null && b.uid !== null && a.uid !== b.uid, `uids ${a.uid} and ${b.uid}`);
    for (const m of [a, b]) {
      const st = fs.statSync(path.join(m.instanceDir, 'data'));
      assert.equal(st.uid, m.uid);
      assert.equal(st.mode & 0o077, 0, 'the data directory is private');
      const status = fs.readFileSync(`/proc/${couchdbPid(m)}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\s+${m.uid}\\s`, 'm'), 'CouchDB does not run as root');
      assert.equal(fs.statSync(path.join(m.instanceDir, 'agent', 'admin.secret')).uid, 0, "the agent's admin password is not the instance's to read");
    }
  });

  test('no cookie on any command line; a local user cannot read it', { skip: root ? false : 'needs root to run a command as another user' }, () => {
    for (const m of [a, b]) {
      const pids = m.uid !== null ? processesOf(m.uid) : [];
      assert.ok(pids.length > 0);
      for (const p of pids) assert.doesNotMatch(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' '), /setcookie/);
      const cookie = path.join(m.instanceDir, 'agent', 'home', '.erlang.cookie');
      assert.equal(fs.statSync(cookie).mode & 0o777, 0o400);
      // As nobody (65534), as another instance's uid: no read.
      for (const uid of [65534, m === a ? b.uid! : a.uid!]) {
        const r = spawnSync('cat', [cookie], { uid, gid: uid, encoding: 'utf8' });
        assert.notEqual(r.status, 0, `uid ${uid} cannot read the cookie`);
        assert.match(r.stderr, /Permission denied/);
      }
    }
  });

  test("a tenant's root cannot point its CouchDB at another instance's data; the agent resets it at restart", async () => {
    const rootPw = 'alpha-root-pw-1';
    assert.equal((await api(server.api, 'POST', `/instances/${a.id}/root`, { password: rootPw })).status, 200, 'root enable with a given password');
    const auth = basicAuth('root', rootPw);
    // Beta's secret.
    const bRoot = await api(server.api, 'POST', `/instances/${b.id}/root`, {});
    const bAuth = basicAuth('root', ((bRoot.json.user as J).password as string));
    assert.equal((await fetch(`${b.url}/payroll/salary`, { method: 'PUT', headers: { authorization: bAuth, 'content-type': 'application/json' }, body: JSON.stringify({ ceo: 1 }) })).status, 201);
    const put = await fetch(`${a.url}/_node/_local/_config/couchdb/database_dir`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(path.join(b.instanceDir, 'data')) });
    // CouchDB lets a server admin change database_dir in memory; an isolated one cannot write local.ini to keep it.
    if (a.uid !== null) assert.deepEqual([put.status, ((await put.json()) as J).reason], [400, 'eacces']);
    else assert.equal(put.status, 200);
    assert.equal((await api(server.api, 'POST', `/instances/${a.id}/action`, { restart: {} })).status, 202);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await waitStatus(server.api, 'instances', a.id, ['ACTIVE', 'ERROR'])).status, 'ACTIVE');
    const read = await fetch(`${a.url}/payroll/salary`, { headers: { authorization: auth } });
    assert.equal(read.status, 404, "alpha does not see beta's document");
    // Not isolated, CouchDB wrote the change into local.ini and the agent reset it there.
    if (a.uid === null) assert.match(fs.readFileSync(path.join(a.instanceDir, 'agent.log'), 'utf8'), /reset to the agent's before start: couchdb\/database_dir/);
  });

  test('CouchDB killed: SHUTDOWN with the reason within 15 s, started again by its agent, ACTIVE again', async () => {
    process.kill(couchdbPid(b), 'SIGKILL');
    const down = await statusWithin(server.api, b.id, ['SHUTDOWN', 'ERROR'], 15_000);
    assert.equal(down.status, 'SHUTDOWN', JSON.stringify(down));
    assert.match(((down.fault as J).message as string), /CouchDB/);
    const back = await statusWithin(server.api, b.id, ['ACTIVE'], 60_000);
    assert.equal(back.status, 'ACTIVE', JSON.stringify(back));
    assert.equal(back.fault, undefined);
    assert.match(fs.readFileSync(path.join(b.instanceDir, 'agent.log'), 'utf8'), /the agent starts it again/);
  });

  test('agent killed: ERROR with the reason within 15 s, a clear 503 for its databases, then started again', async () => {
    const agentPid = Number(fs.readFileSync(path.join(b.instanceDir, 'agent.pid'), 'utf8'));
    process.kill(agentPid, 'SIGKILL');
    const down = await statusWithin(server.api, b.id, ['ERROR'], 15_000);
    assert.equal(down.status, 'ERROR', JSON.stringify(down));
    assert.match(((down.fault as J).message as string), /agent does not answer/);
    const back = await statusWithin(server.api, b.id, ['ACTIVE'], 60_000);
    assert.equal(back.status, 'ACTIVE', JSON.stringify(back));
    assert.equal((await api(server.api, 'GET', `/instances/${b.id}/databases`)).status, 200);
  });

  test('delete: nothing of the instance keeps running, its uid is free again', async () => {
    const uid = a.uid;
    assert.equal((await api(server.api, 'DELETE', `/instances/${a.id}`)).status, 202);
    const end = Date.now() + 60_000;
    while (Date.now() < end && (await api(server.api, 'GET', `/instances/${a.id}`)).status !== 404) await new Promise((r) => setTimeout(r, 250));
    assert.equal((await api(server.api, 'GET', `/instances/${a.id}`)).status, 404);
    assert.deepEqual(processesUnder(a.instanceDir), [], 'no agent, CouchDB or epmd started from its directory');
    if (uid !== null) {
      assert.deepEqual(processesOf(uid), [], 'nothing runs as its uid');
      assert.equal(fs.existsSync(`/var/lib/couchtrove/uid-claims/${uid}`), false, 'its uid claim is released');
    }
    assert.ok(fs.existsSync(dir));
  });
});
