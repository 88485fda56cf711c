// A tenant with root on its own instance (a CouchDB server admin), against a real server deployed as by
// default: as root, each instance's CouchDB under its own uid, real agents, Apache CouchDB with COUCHDB_HOME
// (else the development engine). Each test plays one attack of issue 22 (docs/security.md) and shows that it
// does no harm. Without root there is no other uid to attack from: the suite says so and skips.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { api, basicAuth, createInstance, sandbox, startServer, waitStatus, type J, type MadeInstance, type RealServer } from '../support/server.js';
import { repoRoot } from '../support/postgres.js';

const root = process.getuid?.() === 0;
const realCouchdb = Boolean(process.env.COUCHDB_HOME);
const engine = realCouchdb ? `Apache CouchDB at ${process.env.COUCHDB_HOME}` : 'development engine';
const { root: dir, stateDir, track } = sandbox('couchtrove-tenant-');

/** Runs a command as the instance's uid: what code running as its CouchDB could do. */
function asInstance(m: MadeInstance, script: string): { status: number | null; stderr: string } {
  const r = spawnSync('sh', ['-c', script], { uid: m.uid!, gid: m.uid!, encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, stderr: r.stderr };
}

async function couch(m: MadeInstance, auth: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: unknown; json: J }> {
  const r = await fetch(`${m.url}${p}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: kept as text
  }
  return { status: r.status, body: parsed, json: parsed !== null && typeof parsed === 'object' ? (parsed as J) : {} };
}

async function idle(base: string, id: string): Promise<J> {
  const end = Date.now() + 120_000;
  for (;;) {
    const inst = (await api(base, 'GET', `/instances/${id}`)).json.instance as J;
    if (!inst.task || Date.now() > end) return inst;
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function restart(base: string, id: string): Promise<J> {
  assert.equal((await api(base, 'POST', `/instances/${id}/action`, { restart: {} })).status, 202);
  await new Promise((r) => setTimeout(r, 300));
  return waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR', 'SHUTDOWN']);
}

describe(`a tenant's root against the host, other tenants and itself [${engine}]`, { skip: root ? false : 'needs root: instances run under their own uids only when the server runs as root' }, () => {
  let server: RealServer;
  let a: MadeInstance;
  let b: MadeInstance;
  let aRoot: string;
  const aIni = (): string => path.join(a.instanceDir, 'agent', 'etc', 'local.ini');

  before(async () => {
    server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '2' }));
    a = await createInstance(server.api, stateDir, 'alpha');
    b = await createInstance(server.api, stateDir, 'beta');
    assert.ok(a.uid !== null && b.uid !== null, 'both instances are isolated');
    const r = await api(server.api, 'POST', `/instances/${a.id}/root`, { password: 'alpha-root-pw-1' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    aRoot = basicAuth('root', 'alpha-root-pw-1');
  });
  after(async () => {
    await server.kill('SIGTERM');
  });

  test('attack 1: what CouchDB reads cannot be written by it, so a log-file injection lands nowhere and is never read', async () => {
    // As the instance's uid directly: the files CouchDB reads are not its to change, nor the directories holding them.
    for (const script of [`echo '[native_query_servers]' >> ${aIni()}`, `touch ${path.dirname(aIni())}/x.ini`, `echo '-setcookie x' >> ${path.join(a.instanceDir, 'agent', 'vm.args')}`]) {
      const r = asInstance(a, script);
      assert.notEqual(r.status, 0, script);
      assert.match(r.stderr, /Permission denied/, script);
    }
    // Through CouchDB, as the issue played it: the log pointed at local.ini, a view logging a section.
    for (const [key, value] of [['log/file', aIni()], ['log/writer', 'file']] as const) {
      const r = await couch(a, aRoot, 'PUT', `/_node/_local/_config/${key}`, value);
      assert.deepEqual([r.status, r.json.reason], [400, 'eacces'], `PUT ${key}: CouchDB cannot keep it (${JSON.stringify(r.json)})`);
    }
    const injected = 'x\n[native_query_servers]\nenable_erlang_query_server = true\n;';
    await couch(a, aRoot, 'PUT', '/payroll/_design/inject', { views: { v: { map: `function (doc) { log(${JSON.stringify(injected)}); emit(doc._id, 1); }` } } });
    await couch(a, aRoot, 'PUT', '/payroll/doc1', { x: 1 });
    await couch(a, aRoot, 'GET', '/payroll/_design/inject/_view/v');
    // In memory CouchDB uses such a change until its next start: the agent sets it back within seconds.
    const wanted = (await couch(a, aRoot, 'GET', '/_node/_local/_config/couchdb/database_dir')).body;
    assert.equal((await couch(a, aRoot, 'PUT', '/_node/_local/_config/couchdb/database_dir', path.join(b.instanceDir, 'data'))).status, 400);
    const end = Date.now() + 30_000;
    let now: unknown;
    while ((now = (await couch(a, aRoot, 'GET', '/_node/_local/_config/couchdb/database_dir')).body) !== wanted && Date.now() < end) await new Promise((r) => setTimeout(r, 250));
    assert.equal(now, wanted, 'database_dir set back live');
    // The agent logs the reset as it makes it; the line may reach agent.log a moment after CouchDB shows the value.
    const logged = /reset to the agent's while running: .*couchdb\/database_dir/;
    const logEnd = Date.now() + 10_000;
    while (!logged.test(fs.readFileSync(path.join(a.instanceDir, 'agent.log'), 'utf8')) && Date.now() < logEnd) await new Promise((r) => setTimeout(r, 250));
    assert.match(fs.readFileSync(path.join(a.instanceDir, 'agent.log'), 'utf8'), logged);
    // CouchDB re-reads its ini files without the agent: on _reload, and on _restart (init:restart).
    await couch(a, aRoot, 'POST', '/_node/_local/_config/_reload');
    const text = fs.readFileSync(aIni(), 'utf8');
    assert.doesNotMatch(text, /native_query_servers|enable_erlang_query_server/);
    assert.equal((await restart(server.api, a.id)).status, 'ACTIVE');
    const nqs = await couch(a, aRoot, 'GET', '/_node/_local/_config/native_query_servers');
    assert.equal(nqs.status, 200);
    assert.equal(nqs.json.enable_erlang_query_server, undefined, 'no Erlang query server');
    assert.equal((await couch(a, aRoot, 'GET', '/_node/_local/_config/log/writer')).body, 'stderr', 'the log goes where the agent says');
    if (realCouchdb) {
      // The payoff the attacker wanted: an Erlang map function running os:cmd. It must not run.
      const ddoc = await couch(a, aRoot, 'PUT', '/payroll/_design/erl', { language: 'erlang', views: { v: { map: 'fun({Doc}) -> Emit(list_to_binary(os:cmd("id")), 1) end.' } } });
      if (ddoc.status < 300) {
        const q = await couch(a, aRoot, 'GET', '/payroll/_design/erl/_view/v');
        assert.notEqual(q.status, 200, `the Erlang view ran: ${JSON.stringify(q.json).slice(0, 200)}`);
        assert.doesNotMatch(JSON.stringify(q.json), /uid=/);
      }
    }
  });

  test("attack 2: links the instance plants are never followed by the root agent; nothing of the host changes owner", async () => {
    const target = path.join(dir, 'host-secret');
    fs.writeFileSync(target, 'root only\n', { mode: 0o600 });
    const home = path.join(a.instanceDir, 'agent', 'home');
    // The plant: the cookie replaced by a link. home/ is the agent's now: no name can be added or replaced.
    const cookie = asInstance(a, `ln -sf ${target} ${home}/.erlang.cookie`);
    assert.notEqual(cookie.status, 0);
    assert.match(cookie.stderr, /Permission denied|cannot/);
    // In what the instance owns (its data directory), links and, where the kernel allows, hard links.
    const data = path.join(a.instanceDir, 'data');
    assert.equal(asInstance(a, `ln -s ${target} ${data}/evil-link.couch && ln -s ${target} ${data}/shards/evil.couch 2>/dev/null; true`).status, 0);
    asInstance(a, `ln ${target} ${data}/evil-hard.couch`);
    // Everything that used to chown: a configuration change needing a restart, the restart, a backup, a restore of it.
    const c = await api(server.api, 'POST', '/configurations', { configuration: { name: 'links', values: { 'chttpd_auth_cache/max_lifetime': 120000 }, datastore: { type: 'couchdb', version: '3.5' } } });
    assert.equal(c.status, 200, JSON.stringify(c.json));
    const cid = (c.json.configuration as J).id as string;
    assert.equal((await api(server.api, 'PUT', `/instances/${a.id}`, { instance: { configuration: cid } })).status, 202);
    await idle(server.api, a.id);
    assert.equal((await restart(server.api, a.id)).status, 'ACTIVE');
    const bk = await api(server.api, 'POST', '/backups', { backup: { name: 'with-links', instance: a.id } });
    assert.equal(bk.status, 202, JSON.stringify(bk.json));
    const done = await waitStatus(server.api, 'backups', (bk.json.backup as J).id as string, ['COMPLETED', 'FAILED']);
    // A backup never reads through a link: it refuses one in the data directory, naming it.
    assert.equal(done.status, 'FAILED', JSON.stringify(done));
    assert.match(String(done.fail_reason), /symbolic links? .*evil-link\.couch/);
    const st = fs.statSync(target);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [0, 0, 0o600], 'the host file keeps its owner and mode');
    assert.equal(fs.readFileSync(target, 'utf8'), 'root only\n');
    assert.equal(fs.lstatSync(path.join(home, '.erlang.cookie')).isSymbolicLink(), false);
    assert.equal((await api(server.api, 'PUT', `/instances/${a.id}`, { instance: { configuration: null } })).status, 202);
    await idle(server.api, a.id);
    assert.equal((await restart(server.api, a.id)).status, 'ACTIVE');
  });

  test('a restart-only configuration key on an isolated instance: RESTART_REQUIRED, root works before and after, the restart applies it', async () => {
    const c = await api(server.api, 'POST', '/configurations', { configuration: { name: 'restart-key', values: { 'chttpd_auth_cache/max_lifetime': 90000, 'log/level': 'warning' }, datastore: { type: 'couchdb', version: '3.5' } } });
    assert.equal(c.status, 200, JSON.stringify(c.json));
    const cid = (c.json.configuration as J).id as string;
    assert.equal((await api(server.api, 'PUT', `/instances/${b.id}`, { instance: { configuration: cid } })).status, 202);
    const waiting = await idle(server.api, b.id);
    assert.equal(waiting.status, 'RESTART_REQUIRED', JSON.stringify(waiting));
    // The issue saw any _config write crash the node here (local.ini made unreadable by CouchDB).
    const r1 = await api(server.api, 'POST', `/instances/${b.id}/root`, { password: 'beta-root-pw-1' });
    assert.equal(r1.status, 200, JSON.stringify(r1.json));
    const bRoot = basicAuth('root', 'beta-root-pw-1');
    assert.equal((await couch(b, bRoot, 'GET', '/_node/_local/_config/log/level')).body, 'warning', 'the live key is applied at once');
    const after1 = await restart(server.api, b.id);
    assert.equal(after1.status, 'ACTIVE', JSON.stringify(after1));
    const lifetime = await fetch(`${b.url}/_node/_local/_config/chttpd_auth_cache/max_lifetime`, { headers: { authorization: bRoot } });
    assert.equal(lifetime.status, 200, 'root still logs in after the restart: its hash was kept in local.ini');
    assert.equal(await lifetime.json(), '90000');
    // Root disabled stays disabled across a restart; the group detached goes back to CouchDB's default.
    assert.equal((await api(server.api, 'DELETE', `/instances/${b.id}/root`)).status, 204);
    assert.equal((await api(server.api, 'PUT', `/instances/${b.id}`, { instance: { configuration: null } })).status, 202);
    await idle(server.api, b.id);
    assert.equal((await restart(server.api, b.id)).status, 'ACTIVE');
    assert.equal((await fetch(`${b.url}/_all_dbs`, { headers: { authorization: bRoot } })).status, 401, 'root is gone');
    assert.doesNotMatch(fs.readFileSync(path.join(b.instanceDir, 'agent', 'etc', 'local.ini'), 'utf8'), /^root = |max_lifetime/m);
  });

  test('every file the agent lays out for an instance has the owner and mode of docs/security.md', () => {
    const uid = a.uid!;
    const agent = path.join(a.instanceDir, 'agent');
    // [path, owner uid, group, mode]: the agent's (0), readable by the instance's group, or the instance's own.
    const table: Array<[string, number, number, number]> = [
      [agent, 0, 0, 0o711],
      [path.join(agent, 'etc'), 0, uid, 0o750],
      [path.join(agent, 'etc', 'local.ini'), 0, uid, 0o640],
      [path.join(agent, 'vm.args'), 0, uid, 0o640],
      [path.join(agent, 'home'), 0, uid, 0o750],
      [path.join(agent, 'home', '.erlang.cookie'), uid, uid, 0o400],
      [path.join(agent, 'smoosh'), uid, uid, 0o700],
      [path.join(agent, 'admin.secret'), 0, 0, 0o600],
      [path.join(agent, 'agent-state.json'), 0, 0, 0o600],
      [path.join(agent, 'log'), 0, 0, 0o700],
      [path.join(agent, 'log', 'couchdb.log'), 0, 0, 0o600],
      [path.join(a.instanceDir, 'data'), uid, uid, 0o700],
    ];
    const seen = table.map(([p]) => {
      const st = fs.lstatSync(p);
      return [p, st.uid, st.gid, st.mode & 0o7777];
    });
    assert.deepEqual(seen, table);
    // Nothing else in the instance's directories is writable by the instance, except what it owns.
    for (const name of fs.readdirSync(agent)) {
      const st = fs.lstatSync(path.join(agent, name));
      if (st.uid === uid) assert.ok(['smoosh'].includes(name), `${name} belongs to the instance`);
      else assert.equal(st.mode & 0o022, 0, `${name} is not writable by group or others`);
    }
  });

  test('as root, auto isolation fails closed: a state directory the instances cannot reach is refused, naming it; none says so', async () => {
    const closed = path.join(dir, 'closed');
    fs.mkdirSync(closed, { mode: 0o700 });
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'couchtrove.js'), 'server', '--port', '0', '--state-dir', path.join(closed, 'state')], {
      encoding: 'utf8', timeout: 30_000, env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COUCHTROVE_'))) },
    });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr + r.stdout, new RegExp(`${closed.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not searchable by other users.*instance_isolation = none`));
    const none = track(await startServer(path.join(closed, 'state'), { COUCHTROVE_INSTANCE_ISOLATION: 'none' }));
    try {
      const health = (await (await fetch(`${none.url}/health`)).json()) as J;
      assert.match(String(health.isolation_warning), /instance_isolation = none/);
    } finally {
      await none.kill('SIGTERM');
      track(server);
    }
  });
});
