// The agent's lifecycle against a CouchDB (real with COUCHDB_HOME, else the development engine):
// prepare, status by heartbeat, stop/start/restart, adoption by a new agent process, and the ways an
// instance fails (port taken, broken configuration, unwritable data directory, bad settings).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { Agent, instanceFiles } from '../../src/agent/agent.js';
import { adminOf, couch, Harness, http, rejectsWithCode, type TestInstance } from './helpers.js';

describe(`agent lifecycle [${couch.label}]`, () => {
  const h = new Harness();
  let inst: TestInstance;

  before(async () => {
    await h.init('agent-lifecycle');
    inst = await h.instance('main', { overrides: { 'log/level': 'info' }, volumeBytes: 1024 ** 3 });
  });
  after(() => h.cleanup());

  test('prepare starts CouchDB, ends admin party and creates the system databases', async () => {
    const st = await inst.agent.status();
    assert.equal(st.state, 'RUNNING');
    assert.match(st.version ?? '', /^3\./);
    const admin = await adminOf(inst.settings);
    const f = instanceFiles(inst.settings);
    assert.equal(fs.statSync(f.secret).mode & 0o777, 0o600, 'admin secret is 0600');
    assert.equal(fs.statSync(f.localIni).mode & 0o077, 0, 'local.ini is private');
    const ini = await fsp.readFile(f.localIni, 'utf8');
    assert.ok(!ini.includes(admin.password), 'CouchDB replaced the plain admin password by a hash');
    assert.match(ini, /^couchtrove = -pbkdf2/m);
    assert.match(await fsp.readFile(f.vmArgs, 'utf8'), /^-name couchdb@127\.0\.0\.1$/m);
    assert.equal((await http(inst.url, 'GET', '/_all_dbs')).status, 401, 'anonymous _all_dbs is refused');
    const all = await http(inst.url, 'GET', '/_all_dbs', { auth: admin });
    assert.deepEqual((all.body as string[]).filter((d) => d.startsWith('_')).sort(), ['_replicator', '_users']);
    assert.deepEqual(await inst.agent.listDatabases(), []);
  });

  test('volume usage: used bytes of the data directory, total = volumeBytes', async () => {
    const v = await inst.agent.volumeUsage();
    assert.equal(v.total, 1024 ** 3);
    assert.ok(v.used > 0 && v.used < v.total);
  });

  test('a full volume (volumeBytes reached) refuses new databases and users', async () => {
    const t = await h.instance('tiny', { volumeBytes: 4096 });
    await rejectsWithCode(t.agent.createDatabase('more'), 'VOLUME_FULL', /the volume is full: \d+ of 4096 bytes used/);
    await rejectsWithCode(t.agent.createUser({ name: 'u', password: 'p' }), 'VOLUME_FULL');
    assert.deepEqual(await t.agent.listDatabases(), []);
    await t.agent.stop();
  });

  test('stop, start, restart; data survives', async () => {
    await inst.agent.createDatabase('keep');
    const stopped = await inst.agent.stop();
    assert.equal(stopped.state, 'SHUTDOWN');
    assert.equal(inst.agent.couchdbPid, null);
    assert.equal(await inst.agent.status().then((s) => s.state), 'SHUTDOWN');
    await rejectsWithCode(inst.agent.listDatabases(), 'NOT_RUNNING');
    const started = await inst.agent.start();
    assert.equal(started.state, 'RUNNING', started.reason);
    h.track(inst.agent);
    assert.deepEqual(await inst.agent.listDatabases(), ['keep']);
    const restarted = await inst.agent.restart();
    assert.equal(restarted.state, 'RUNNING', restarted.reason);
    h.track(inst.agent);
    assert.deepEqual(await inst.agent.listDatabases(), ['keep']);
  });

  test('a new agent process adopts the running CouchDB', async () => {
    const pid = inst.agent.couchdbPid;
    assert.ok(pid);
    const again = await Agent.open(path.join(h.root, 'main', 'agent'));
    assert.equal(again.couchdbPid, pid);
    assert.equal((await again.status()).state, 'RUNNING');
    assert.deepEqual(await again.listDatabases(), ['keep']);
  });

  test('a pid that is now another process or thread is not adopted (a restarted container begins its pids again)', async () => {
    const file = path.join(h.root, 'main', 'agent', 'agent-state.json');
    const saved = await fsp.readFile(file, 'utf8');
    // A thread of this process: kill(0) answers for it, as for the agent's own threads in a new container.
    const tid = fs.readdirSync('/proc/self/task').map(Number).find((t) => t !== process.pid);
    assert.ok(tid, 'this process has a thread besides its main one');
    try {
      for (const pid of [tid, process.pid]) {
        await fsp.writeFile(file, JSON.stringify({ ...(JSON.parse(saved) as object), pid }));
        const other = await Agent.open(path.join(h.root, 'main', 'agent'));
        assert.equal(other.couchdbPid, null, `pid ${pid} (not CouchDB) was adopted`);
      }
    } finally {
      await fsp.writeFile(file, saved);
    }
    assert.equal((await Agent.open(path.join(h.root, 'main', 'agent'))).couchdbPid, inst.agent.couchdbPid, 'the real one still is');
  });

  test('heartbeat: a CouchDB killed behind the agent is FAILED with the reason', async () => {
    const pid = inst.agent.couchdbPid!;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && inst.agent.couchdbPid; i++) await new Promise((r) => setTimeout(r, 100));
    const st = await inst.agent.status();
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /not running.*SIGKILL/);
    const back = await inst.agent.start();
    assert.equal(back.state, 'RUNNING', back.reason);
    h.track(inst.agent);
  });

  test('a port taken by another program: FAILED with the reason, nothing else started', async () => {
    const blocker = net.createServer();
    const settings = await h.settings('porttaken');
    await new Promise<void>((resolve) => blocker.listen(settings.port, '127.0.0.1', () => resolve()));
    try {
      const agent = await h.open('porttaken');
      const st = await agent.prepare(settings);
      assert.equal(st.state, 'FAILED');
      assert.match(st.reason ?? '', new RegExp(`port ${settings.port} .*already in use`));
      assert.equal(agent.couchdbPid, null);
      assert.equal((await agent.status()).state, 'FAILED');
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  test('settings the agent manages are reset at start, whatever was changed over HTTP or by hand', async () => {
    const t = await h.instance('reasserted');
    const admin = await adminOf(t.settings);
    await t.agent.createDatabase('kept');
    // A server admin moves the data directory and the log over HTTP (CouchDB 3.5 lets one).
    for (const [key, value] of [['couchdb/database_dir', path.join(h.root, 'elsewhere')], ['log/writer', 'file'], ['log/file', path.join(h.root, 'any.log')]] as const) {
      const r = await http(t.url, 'PUT', `/_node/_local/_config/${key}`, { auth: admin, body: value });
      assert.equal(r.status, 200, `PUT ${key}`);
    }
    const st = await t.agent.restart();
    assert.equal(st.state, 'RUNNING', st.reason);
    const ini = await fsp.readFile(instanceFiles(t.settings).localIni, 'utf8');
    assert.match(ini, new RegExp(`^database_dir = ${t.settings.dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    assert.doesNotMatch(ini, /^file = /m);
    assert.deepEqual(await t.agent.listDatabases(), ['kept'], 'served from the instance\'s own data directory again');
    assert.match(h.logs.join('\n'), /reset to the agent's before start: couchdb\/database_dir, log\/writer, log\/file/);
    h.track(t.agent);
    await t.agent.stop();
  });

  test('local.ini is rebuilt at start: a section written into it by hand or by CouchDB is dropped', async () => {
    const t = await h.instance('rebuilt');
    await t.agent.stop();
    const ini = instanceFiles(t.settings).localIni;
    // What a server admin's log/file trick (couchdb-3.md) or a bad hand edit leaves in the file.
    await fsp.appendFile(ini, '\n[native_query_servers]\nenable_erlang_query_server = true\n[chttpd]\nserver_options = [{backlog, 128\n');
    const st = await t.agent.start();
    assert.equal(st.state, 'RUNNING', st.reason);
    h.track(t.agent);
    const text = await fsp.readFile(ini, 'utf8');
    assert.doesNotMatch(text, /native_query_servers|enable_erlang_query_server|server_options/);
    assert.match(h.logs.join('\n'), /dropped before start: .*native_query_servers\/enable_erlang_query_server/);
    const admin = await adminOf(t.settings);
    const r = await http(t.url, 'GET', '/_node/_local/_config/native_query_servers', { auth: admin });
    assert.deepEqual(r.body, {}, 'CouchDB runs without the injected section');
    await t.agent.stop();
  });

  test('a data directory that cannot be written: FAILED with the reason, CouchDB not started', async () => {
    // A path through a regular file cannot be created even by root.
    const file = path.join(h.root, 'not-a-dir');
    await fsp.writeFile(file, '');
    const settings = await h.settings('unwritable', { dataDir: path.join(file, 'data') });
    const agent = await h.open('unwritable');
    const st = await agent.prepare(settings);
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /data directory .* is not writable \((ENOTDIR|EACCES|EROFS)\)/);
    assert.equal(agent.couchdbPid, null);
  });

  test('a read-only data directory (when not root): FAILED with the reason', { skip: process.getuid?.() === 0 ? 'root can write anywhere' : false }, async () => {
    const settings = await h.settings('readonly');
    await fsp.mkdir(settings.dataDir, { recursive: true });
    await fsp.chmod(settings.dataDir, 0o500);
    const agent = await h.open('readonly');
    const st = await agent.prepare(settings);
    assert.equal(st.state, 'FAILED');
    assert.match(st.reason ?? '', /not writable \(EACCES\)/);
  });

  test('bad settings are refused before anything is written', async () => {
    const agent = await h.open('bad');
    const good = await h.settings('bad');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...good, port: 0 }, /port must be/],
      [{ ...good, port: 'x' }, /port must be/],
      [{ ...good, dataDir: 'relative/dir' }, /dataDir must be an absolute path/],
      [{ ...good, bindAddress: 'example.com' }, /bindAddress must be an IP address/],
      [{ ...good, nodeName: 'no-at-sign' }, /nodeName must look like/],
      [{ ...good, instanceId: '../x' }, /invalid instanceId/],
      [{ ...good, dataDir: good.instanceDir }, /must be separate/],
      [{ ...good, overrides: { 'couchdb/database_dir': '/tmp/x' } }, /cannot be overridden: it names a file or directory/],
      [{ ...good, overrides: { 'admins/eve': 'pw' } }, /cannot be overridden/],
      [{ ...good, overrides: { 'log/level': 'loud' } }, /invalid value "loud" for log\/level/],
      [{ ...good, restore: { storage: 'file:///tmp/x', backupId: '../../etc' } }, /invalid backup id/],
    ];
    for (const [s, re] of cases) {
      const err = await agent.prepare(s as never).then(
        () => null,
        (e: Error & { code?: string }) => e,
      );
      assert.ok(err, `refused: ${JSON.stringify(s).slice(0, 80)}`);
      assert.match(err.message, re);
      assert.ok(['INVALID_ARGUMENT', 'REFUSED'].includes(err.code ?? ''), err.code);
    }
    await rejectsWithCode(agent.prepare({ ...good, couchdbHome: h.root }), 'INVALID_ARGUMENT', /has no executable bin\/couchdb/);
    assert.equal(fs.existsSync(good.instanceDir), false, 'no instance files were written');
    assert.equal(fs.existsSync(good.dataDir), false, 'no data directory was created');
    assert.deepEqual(await agent.status(), { state: 'BUILD', reason: 'waiting for prepare' });
    await rejectsWithCode(agent.start(), 'CONFLICT', /not been prepared/);
    await rejectsWithCode(agent.listDatabases(), 'CONFLICT', /not been prepared/);
  });
});
