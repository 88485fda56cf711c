// Databases, users, access (_security read-modify-write), root and configuration overrides, through
// the agent against a running CouchDB (real with COUCHDB_HOME, else the development engine).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { instanceFiles } from '../../src/agent/agent.js';
import { adminOf, couch, Harness, http, rejectsWithCode, type TestInstance } from './helpers.js';

describe(`agent databases, users, root, configuration [${couch.label}]`, () => {
  const h = new Harness();
  let inst: TestInstance;
  let admin: { username: string; password: string };
  const sec = async (db: string) => (await http(inst.url, 'GET', `/${encodeURIComponent(db)}/_security`, { auth: admin })).body as Record<string, { names?: string[]; roles?: string[] }>;
  const canRead = async (db: string, username: string, password: string) => (await http(inst.url, 'GET', `/${encodeURIComponent(db)}`, { auth: { username, password } })).status === 200;

  before(async () => {
    await h.init('agent-manage');
    inst = await h.instance('main');
    admin = await adminOf(inst.settings);
  });
  after(() => h.cleanup());

  test('databases: create, list (system hidden), delete; names with / ( ) $ + -', async () => {
    for (const db of ['orders', 'a/b', 'x_($)+-1']) await inst.agent.createDatabase(db);
    assert.deepEqual(await inst.agent.listDatabases(), ['a/b', 'orders', 'x_($)+-1']);
    const s = await sec('orders');
    assert.deepEqual(s.members?.roles, ['_admin'], 'a new database is closed to everyone but admins');
    assert.equal((await http(inst.url, 'GET', '/orders')).status, 401, 'anonymous users cannot read it');
    await inst.agent.deleteDatabase('a/b');
    assert.deepEqual(await inst.agent.listDatabases(), ['orders', 'x_($)+-1']);
  });

  test('databases: invalid names, duplicates and unknown ones are refused with a clear error', async () => {
    for (const bad of ['Orders', '1abc', '_users', '', 'a b', 'é', 'a'.repeat(239)]) {
      await rejectsWithCode(inst.agent.createDatabase(bad), 'INVALID_ARGUMENT', /database name/);
    }
    await rejectsWithCode(inst.agent.createDatabase('orders'), 'ALREADY_EXISTS', /database orders already exists/);
    await rejectsWithCode(inst.agent.deleteDatabase('nosuch'), 'NOT_FOUND', /database nosuch does not exist/);
    await rejectsWithCode(inst.agent.deleteDatabase('_users'), 'INVALID_ARGUMENT');
    assert.deepEqual(await inst.agent.listDatabases(), ['orders', 'x_($)+-1']);
  });

  test('users: create with roles and databases; list and show; the user can read only its databases', async () => {
    await inst.agent.createDatabase('inventory');
    await inst.agent.createUser({ name: 'alice', password: 'alice-pw-1', roles: ['ops', 'readers'], databases: ['orders', 'inventory'] });
    await inst.agent.createUser({ name: 'bob', password: 'bob-pw-1' });
    assert.deepEqual(await inst.agent.getUser('alice'), { name: 'alice', roles: ['ops', 'readers'], databases: ['inventory', 'orders'] });
    assert.deepEqual(
      (await inst.agent.listUsers()).map((u) => [u.name, u.databases]),
      [
        ['alice', ['inventory', 'orders']],
        ['bob', []],
      ],
    );
    assert.equal(await canRead('orders', 'alice', 'alice-pw-1'), true);
    assert.equal(await canRead('orders', 'bob', 'bob-pw-1'), false);
    assert.equal(await canRead('orders', 'alice', 'wrong'), false);
  });

  test('grant and revoke keep every other _security entry', async () => {
    // Entries the agent did not write: they must survive every change it makes.
    const custom = { admins: { names: ['carol'], roles: ['db-admins'] }, members: { names: ['dave'], roles: ['_admin', 'auditors'] } };
    assert.equal((await http(inst.url, 'PUT', '/inventory/_security', { auth: admin, body: custom })).status, 200);
    await inst.agent.grantAccess('bob', ['inventory']);
    assert.deepEqual(await sec('inventory'), { admins: custom.admins, members: { names: ['dave', 'bob'], roles: ['_admin', 'auditors'] } });
    await inst.agent.grantAccess('bob', ['inventory']); // again: no duplicate
    assert.deepEqual((await sec('inventory')).members?.names, ['dave', 'bob']);
    await inst.agent.revokeAccess('bob', 'inventory');
    assert.deepEqual(await sec('inventory'), { admins: custom.admins, members: { names: ['dave'], roles: ['_admin', 'auditors'] } });
    assert.equal(await canRead('inventory', 'bob', 'bob-pw-1'), false);
  });

  test('bad user input: invalid names, unknown users and databases, duplicates; nothing half-changed', async () => {
    for (const bad of ['', '_sys', 'a:b', 'root', 'couchtrove', 'x'.repeat(200)]) {
      await rejectsWithCode(inst.agent.createUser({ name: bad, password: 'pw' }), 'INVALID_ARGUMENT');
    }
    await rejectsWithCode(inst.agent.createUser({ name: 'eve', password: '' }), 'INVALID_ARGUMENT', /password/);
    await rejectsWithCode(inst.agent.createUser({ name: 'eve', password: 'pw', roles: ['_admin'] }), 'INVALID_ARGUMENT', /role/);
    await rejectsWithCode(inst.agent.createUser({ name: 'alice', password: 'pw' }), 'ALREADY_EXISTS', /user alice already exists/);
    // One unknown database among known ones: no user is created and no _security changes.
    const before = await sec('orders');
    await rejectsWithCode(inst.agent.createUser({ name: 'eve', password: 'pw', databases: ['orders', 'nosuch'] }), 'NOT_FOUND', /database nosuch does not exist/);
    await rejectsWithCode(inst.agent.getUser('eve'), 'NOT_FOUND', /user eve does not exist/);
    assert.deepEqual(await sec('orders'), before);
    await rejectsWithCode(inst.agent.grantAccess('alice', ['orders', 'nosuch']), 'NOT_FOUND', /nosuch/);
    await rejectsWithCode(inst.agent.grantAccess('nobody', ['orders']), 'NOT_FOUND', /user nobody does not exist/);
    await rejectsWithCode(inst.agent.grantAccess('alice', []), 'INVALID_ARGUMENT');
    await rejectsWithCode(inst.agent.grantAccess('alice', ['Bad']), 'INVALID_ARGUMENT');
    await rejectsWithCode(inst.agent.revokeAccess('bob', 'orders'), 'NOT_FOUND', /bob has no access to database orders/);
    await rejectsWithCode(inst.agent.revokeAccess('nobody', 'orders'), 'NOT_FOUND', /user nobody does not exist/);
    await rejectsWithCode(inst.agent.revokeAccess('alice', 'nosuch'), 'NOT_FOUND', /database nosuch/);
    await rejectsWithCode(inst.agent.deleteUser('nobody'), 'NOT_FOUND');
    await rejectsWithCode(inst.agent.changePassword('nobody', 'x'), 'NOT_FOUND');
    await rejectsWithCode(inst.agent.changePassword('alice', ''), 'INVALID_ARGUMENT');
    assert.deepEqual(await sec('orders'), before);
  });

  test('change password: the old one stops working, the new one works, roles are kept', async () => {
    await inst.agent.changePassword('alice', 'alice-pw-2');
    assert.equal(await canRead('orders', 'alice', 'alice-pw-1'), false);
    assert.equal(await canRead('orders', 'alice', 'alice-pw-2'), true);
    assert.deepEqual((await inst.agent.getUser('alice')).roles, ['ops', 'readers']);
  });

  test('delete user: removed from every _security (members and admins), other entries kept', async () => {
    await inst.agent.grantAccess('alice', ['x_($)+-1']);
    const inv = await sec('inventory');
    await http(inst.url, 'PUT', '/inventory/_security', { auth: admin, body: { ...inv, admins: { names: ['carol', 'alice'], roles: ['db-admins'] } } });
    await inst.agent.deleteUser('alice');
    for (const db of ['orders', 'inventory', 'x_($)+-1']) {
      const s = await sec(db);
      assert.ok(!s.members?.names?.includes('alice') && !s.admins?.names?.includes('alice'), `alice gone from ${db}`);
    }
    assert.deepEqual(await sec('inventory'), { admins: { names: ['carol'], roles: ['db-admins'] }, members: { names: ['dave'], roles: ['_admin', 'auditors'] } });
    await rejectsWithCode(inst.agent.getUser('alice'), 'NOT_FOUND');
    assert.deepEqual((await inst.agent.listUsers()).map((u) => u.name), ['bob']);
  });

  test('root: enable (generated, then given password), show, disable', async () => {
    assert.equal(await inst.agent.isRootEnabled(), false);
    const r = await inst.agent.enableRoot();
    assert.equal(r.name, 'root');
    assert.ok(r.password.length >= 24);
    assert.equal(await inst.agent.isRootEnabled(), true);
    assert.equal((await http(inst.url, 'GET', '/_all_dbs', { auth: { username: 'root', password: r.password } })).status, 200);
    const ini = await fsp.readFile(instanceFiles(inst.settings).localIni, 'utf8');
    assert.ok(!ini.includes(r.password), 'the root password is stored hashed only');
    const given = await inst.agent.enableRoot('my-root-password');
    assert.equal(given.password, 'my-root-password');
    assert.equal((await http(inst.url, 'GET', '/_all_dbs', { auth: { username: 'root', password: r.password } })).status, 401);
    assert.equal((await http(inst.url, 'GET', '/_all_dbs', { auth: { username: 'root', password: 'my-root-password' } })).status, 200);
    await rejectsWithCode(inst.agent.enableRoot(''), 'INVALID_ARGUMENT');
    await inst.agent.disableRoot();
    assert.equal(await inst.agent.isRootEnabled(), false);
    assert.equal((await http(inst.url, 'GET', '/_all_dbs', { auth: { username: 'root', password: 'my-root-password' } })).status, 401);
    await rejectsWithCode(inst.agent.disableRoot(), 'NOT_FOUND', /root is not enabled/);
  });

  test('configuration: live keys applied at once, others written to local.ini and RESTART_REQUIRED', async () => {
    const r = await inst.agent.applyConfiguration({ 'log/level': 'warning', 'couchdb/max_dbs_open': '300', 'chttpd_auth_cache/max_lifetime': '120000' });
    assert.deepEqual(r, { applied: ['couchdb/max_dbs_open', 'log/level'], pending: ['chttpd_auth_cache/max_lifetime'], restartRequired: true });
    const cfg = (k: string) => http(inst.url, 'GET', `/_node/_local/_config/${k}`, { auth: admin });
    assert.deepEqual((await cfg('log/level')).body, 'warning');
    assert.deepEqual((await cfg('couchdb/max_dbs_open')).body, '300');
    assert.equal((await cfg('chttpd_auth_cache/max_lifetime')).status, 404, 'not applied live');
    const ini = await fsp.readFile(instanceFiles(inst.settings).localIni, 'utf8');
    assert.match(ini, /^max_lifetime = 120000$/m);
    assert.equal((ini.match(/^\[admins\]$/gm) ?? []).length, 1, 'one [admins] section');
    const st = await inst.agent.status();
    assert.equal(st.state, 'RESTART_REQUIRED');
    assert.match(st.reason ?? '', /chttpd_auth_cache\/max_lifetime/);
    const after = await inst.agent.restart();
    assert.equal(after.state, 'RUNNING', after.reason);
    h.track(inst.agent);
    assert.deepEqual((await cfg('chttpd_auth_cache/max_lifetime')).body, '120000');
    assert.deepEqual((await cfg('log/level')).body, 'warning', 'live changes survive the restart');
    assert.deepEqual(await inst.agent.listDatabases(), ['inventory', 'orders', 'x_($)+-1']);
    // A key taken out of a group goes back to CouchDB's default: deleted live, or from local.ini for the next restart.
    const reset = await inst.agent.applyConfiguration({ 'couchdb/max_dbs_open': null, 'chttpd_auth_cache/max_lifetime': null });
    assert.deepEqual(reset, { applied: ['couchdb/max_dbs_open'], pending: ['chttpd_auth_cache/max_lifetime'], restartRequired: true });
    assert.equal((await cfg('couchdb/max_dbs_open')).status, 404, 'deleted live');
    assert.doesNotMatch(await fsp.readFile(instanceFiles(inst.settings).localIni, 'utf8'), /^max_lifetime = /m);
    assert.equal((await inst.agent.restart()).state, 'RUNNING');
    h.track(inst.agent);
    assert.equal((await cfg('chttpd_auth_cache/max_lifetime')).status, 404);
    assert.deepEqual((await cfg('log/level')).body, 'warning', 'other keys stay');
  });

  test('configuration: keys that would break the instance are refused, and nothing is applied', async () => {
    // Issue 14: a tenant's group pointed CouchDB's log at any file of the host, and more.
    const refused: [string, RegExp][] = [
      ['log/file', /file or directory/],
      ['log/writer', /file or directory/],
      ['couchdb/database_dir', /file or directory/],
      ['couchdb/view_index_dir', /file or directory/],
      ['couchdb/uri_file', /file or directory/],
      ['chttpd/bind_address', /addresses/],
      ['chttpd/port', /ports/],
      ['prometheus/bind_address', /addresses/],
      ['ssl/enable', /ports/],
      ['admins/mallory', /server admins/],
      ['couchdb/uuid', /catalogue/],
      ['query_servers/evil', /run a program/],
      ['os_daemons/evil', /run a program/],
    ];
    for (const [key, why] of refused) {
      const err = await rejectsWithCode(inst.agent.applyConfiguration({ 'log/level': 'error', [key]: 'x' }), 'REFUSED', why);
      assert.match(err.message, new RegExp(`configuration key ${key.replace('/', '\\/')} cannot be overridden`));
    }
    const invalid = [{ 'nosection': 'x' }, { 'log/level': 'a\n[admins]\nx = y' }, { 'log/level': 'info ; comment' }, { 'couchdb/max_dbs_open': 'many' }, { 'log/level': 42 }, {}];
    for (const o of invalid) await rejectsWithCode(inst.agent.applyConfiguration(o as Record<string, string>), 'INVALID_ARGUMENT');
    assert.deepEqual((await http(inst.url, 'GET', '/_node/_local/_config/log/level', { auth: admin })).body, 'warning', 'nothing was applied');
    assert.equal((await inst.agent.status()).state, 'RUNNING');
  });
});
