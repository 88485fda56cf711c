// The agent's hand commands (`couchtrove agent status|database|user|root`) run as a user would, against
// a prepared instance's CouchDB URL; credentials from COUCHDB_USER/COUCHDB_PASSWORD, passwords from stdin.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort } from '../support/couchdb.js';
import { adminOf, couch, Harness, http, type TestInstance } from './helpers.js';
import { runCli, type CliResult } from '../support/cli.js';

// Admin credentials come only from what each test passes, never from the runner's environment.
const cli = (args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliResult> =>
  runCli(args, { COUCHDB_USER: undefined, COUCHDB_PASSWORD: undefined, ...env }, input);

describe(`agent hand commands [${couch.label}]`, () => {
  const h = new Harness();
  let inst: TestInstance;
  let env: NodeJS.ProcessEnv;
  const url = () => ['--couchdb-url', inst.url];

  before(async () => {
    await h.init('agent-cli');
    inst = await h.instance('main');
    const a = await adminOf(inst.settings);
    env = { COUCHDB_USER: a.username, COUCHDB_PASSWORD: a.password };
  });
  after(() => h.cleanup());

  test('status', async () => {
    const r = await cli(['agent', 'status', ...url(), '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { up: boolean; version: string; node: string };
    assert.equal(s.up, true);
    assert.equal(s.node, 'couchdb@127.0.0.1');
    const down = await cli(['agent', 'status', '--couchdb-url', `http://127.0.0.1:${await freePort()}`], env);
    assert.equal(down.code, 1);
    assert.match(down.stdout, /not answering/);
  });

  test('database create, list, delete; a bad name is a clear error', async () => {
    const created = await cli(['agent', 'database', 'create', ...url(), '--database', 'sales/2024'], env);
    assert.equal(created.code, 0, created.stderr);
    const list = await cli(['agent', 'database', 'list', ...url(), '--json'], env);
    assert.deepEqual(JSON.parse(list.stdout), ['sales/2024']);
    const bad = await cli(['agent', 'database', 'create', ...url(), '--database', 'Sales'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /couchtrove: invalid database name "Sales"/);
    const dup = await cli(['agent', 'database', 'create', ...url(), '--database', 'sales/2024'], env);
    assert.match(dup.stderr, /already exists/);
    assert.equal((await cli(['agent', 'database', 'create', ...url(), '--database', 'tmp'], env)).code, 0);
    assert.equal((await cli(['agent', 'database', 'delete', ...url(), '--database', 'tmp'], env)).code, 0);
    assert.match((await cli(['agent', 'database', 'delete', ...url(), '--database', 'tmp'], env)).stderr, /database tmp does not exist/);
  });

  test('user create (password from stdin), grant, show, revoke, password, delete', async () => {
    const c = await cli(['agent', 'user', 'create', ...url(), '--user', 'alice', '--roles', 'ops,readers', '--databases', 'sales/2024', '--password-stdin'], env, 'alice-secret\n');
    assert.equal(c.code, 0, c.stderr);
    assert.ok(!c.stdout.includes('alice-secret'));
    assert.equal((await http(inst.url, 'GET', '/sales%2F2024', { auth: { username: 'alice', password: 'alice-secret' } })).status, 200);
    const show = await cli(['agent', 'user', 'show', ...url(), '--user', 'alice', '--json'], env);
    assert.deepEqual(JSON.parse(show.stdout), { name: 'alice', roles: ['ops', 'readers'], databases: ['sales/2024'] });
    const gen = await cli(['agent', 'user', 'create', ...url(), '--user', 'bob'], env);
    const bobPw = /password: (\S+)/.exec(gen.stdout)?.[1];
    assert.ok(bobPw, gen.stdout);
    assert.equal((await cli(['agent', 'user', 'grant', ...url(), '--user', 'bob', '--databases', 'sales/2024'], env)).code, 0);
    assert.equal((await http(inst.url, 'GET', '/sales%2F2024', { auth: { username: 'bob', password: bobPw } })).status, 200);
    assert.equal((await cli(['agent', 'user', 'revoke', ...url(), '--user', 'bob', '--database', 'sales/2024'], env)).code, 0);
    assert.notEqual((await http(inst.url, 'GET', '/sales%2F2024', { auth: { username: 'bob', password: bobPw } })).status, 200);
    assert.equal((await cli(['agent', 'user', 'password', ...url(), '--user', 'alice', '--password-stdin'], env, 'new-secret\n')).code, 0);
    assert.equal((await http(inst.url, 'GET', '/sales%2F2024', { auth: { username: 'alice', password: 'new-secret' } })).status, 200);
    const list = await cli(['agent', 'user', 'list', ...url()], env);
    assert.match(list.stdout, /^alice\troles: ops,readers\tdatabases: sales\/2024$/m);
    assert.match(list.stdout, /^bob\troles: -\tdatabases: -$/m);
    assert.equal((await cli(['agent', 'user', 'delete', ...url(), '--user', 'bob'], env)).code, 0);
    assert.match((await cli(['agent', 'user', 'show', ...url(), '--user', 'bob'], env)).stderr, /user bob does not exist/);
    const empty = await cli(['agent', 'user', 'create', ...url(), '--user', 'carol', '--password-stdin'], env, '');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /standard input holds no password/);
  });

  test('root enable, show, disable', async () => {
    const en = await cli(['agent', 'root', 'enable', ...url()], env);
    const pw = /password: (\S+)/.exec(en.stdout)?.[1];
    assert.ok(pw, en.stdout);
    assert.equal((await http(inst.url, 'GET', '/_all_dbs', { auth: { username: 'root', password: pw } })).status, 200);
    assert.match((await cli(['agent', 'root', 'show', ...url()], env)).stdout, /root is enabled/);
    assert.equal((await cli(['agent', 'root', 'disable', ...url()], env)).code, 0);
    assert.match((await cli(['agent', 'root', 'show', ...url()], env)).stdout, /root is not enabled/);
  });

  test('credentials only from the environment; none in the URL', async () => {
    const r = await cli(['agent', 'database', 'list', ...url()], {});
    assert.equal(r.code, 2);
    assert.match(r.stderr, /set COUCHDB_USER and COUCHDB_PASSWORD/);
    const inUrl = await cli(['agent', 'database', 'list', '--couchdb-url', inst.url.replace('http://', 'http://u:p@')], env);
    assert.equal(inUrl.code, 2);
    assert.match(inUrl.stderr, /credentials must not be given in the URL/);
    const wrong = await cli(['agent', 'database', 'list', ...url()], { ...env, COUCHDB_PASSWORD: 'Wr0ng-S3cret-pw' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /CouchDB answered 401/);
    assert.ok(!wrong.stderr.includes('Wr0ng-S3cret-pw') && !wrong.stderr.includes('Basic'), 'no secret in the error');
  });
});
