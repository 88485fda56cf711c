// Unit tests of the agent's pure parts: ini editing, configuration key rules, name checks, the
// files it writes (local.ini, vm.args) and the reason it reads from a CouchDB log.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import fc from 'fast-check';
import { IniFile, mergeIni } from '../../src/agent/ini.js';
import { parseOverride, parseOverrides } from '../../src/agent/config-keys.js';
import { COUCHDB_PARAMETERS, type CouchdbParameter } from '../../src/config/couchdb-parameters.js';
import { checkDatabaseName, checkSettings, checkUserName } from '../../src/agent/validate.js';
import { buildLocalIni, renderVmArgs } from '../../src/agent/local-ini.js';
import { reasonFromLog } from '../../src/agent/process.js';
import { removeDir, tempDir } from '../support/couchdb.js';

describe('ini files', () => {
  test('edits keep every other line and never add a second section', () => {
    const text = '; top comment\n[couchdb]\nuuid = abc ; inline\n\n[admins]\n; admins here\nadmin = -pbkdf2-x,y,10\n\n[log]\nlevel = info\n';
    const ini = IniFile.parse(text);
    assert.equal(ini.toString(), text, 'round trip');
    assert.equal(ini.get('couchdb', 'uuid'), 'abc');
    ini.set('admins', 'root', 'pw');
    ini.set('log', 'level', 'debug');
    ini.set('new', 'key', 'v');
    assert.equal(
      ini.toString(),
      '; top comment\n[couchdb]\nuuid = abc ; inline\n\n[admins]\n; admins here\nadmin = -pbkdf2-x,y,10\nroot = pw\n\n[log]\nlevel = debug\n\n[new]\nkey = v\n',
    );
    assert.equal(ini.delete('admins', 'root'), true);
    assert.equal(ini.delete('admins', 'root'), false);
    assert.equal((ini.toString().match(/\[admins\]/g) ?? []).length, 1);
  });

  test('problems are reported, later files win', () => {
    assert.deepEqual(IniFile.parse('[ok]\na = 1\n[broken\nb = 2\n').problems, [{ line: 3, text: '[broken' }]);
    assert.deepEqual(IniFile.parse('no section = 1\n').problems.length, 1);
    const merged = mergeIni([IniFile.parse('[a]\nx = 1\ny = 2\n'), IniFile.parse('[a]\ny = 3\n[b]\nz = 4\n')]);
    assert.deepEqual(Object.fromEntries([...merged].map(([k, v]) => [k, Object.fromEntries(v)])), { a: { x: '1', y: '3' }, b: { z: '4' } });
  });

  test('property: set then get returns the value, and other keys are unchanged', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9_.]{0,11}$/);
    const value = fc.stringMatching(/^[A-Za-z0-9_./:{}[\],-]{1,20}$/);
    fc.assert(
      fc.property(fc.array(fc.tuple(name, name, value), { maxLength: 12 }), name, name, value, (entries, s, k, v) => {
        const ini = IniFile.empty();
        for (const [a, b, c] of entries) ini.set(a, b, c);
        const before = mergeIni([ini]);
        const again = IniFile.parse(ini.toString());
        again.set(s, k, v);
        const after = mergeIni([IniFile.parse(again.toString())]);
        assert.equal(after.get(s)?.get(k), v);
        for (const [sec, kv] of before) for (const [key, val] of kv) if (sec !== s || key !== k) assert.equal(after.get(sec)?.get(key), val);
        assert.equal(IniFile.parse(again.toString()).problems.length, 0);
      }),
      { numRuns: 200 },
    );
  });
});

describe('configuration overrides', () => {
  test('live and restart keys come from the catalogue', () => {
    assert.equal(parseOverride('log/level', 'debug').kind, 'live');
    assert.equal(parseOverride('couchdb/max_dbs_open', '1000').kind, 'live');
    assert.equal(parseOverride('chttpd_auth_cache/max_lifetime', '60000').kind, 'restart');
    for (const p of COUCHDB_PARAMETERS) assert.equal(parseOverride(p.name, sample(p)).kind, p.restartRequired ? 'restart' : 'live', p.name);
  });

  test('the agent refuses every key outside the catalogue (issue 14: paths, ports, addresses, programs, credentials)', () => {
    const attacks: Array<[string, string, RegExp]> = [
      ['log/file', '/etc/cron.d/evil', /file or directory/], ['log/writer', 'file', /file or directory/],
      ['query_servers/evil', '/bin/sh', /run a program/], ['native_query_servers/erlang', '{couch_native_process, start_link, []}', /run a program/],
      ['os_daemons/x', '/bin/sh', /run a program/], ['daemons/x', '{x, start_link, []}', /run a program/],
      ['httpd/bind_address', '0.0.0.0', /addresses/], ['chttpd/bind_address', '0.0.0.0', /addresses/], ['chttpd/port', '80', /ports/],
      ['prometheus/additional_port', 'true', /ports/], ['prometheus/bind_address', '0.0.0.0', /addresses/], ['ssl/enable', 'true', /ports/],
      ['couchdb/uri_file', '/tmp/x', /file or directory/], ['couchdb/database_dir', '/var/lib/other', /file or directory/],
      ['couchdb/view_index_dir', '/var/lib/other', /file or directory/], ['smoosh/state_dir', '/tmp', /file or directory/],
      ['admins/mallory', 'pw', /server admins/], ['chttpd_auth/secret', 'x', /credential/], ['replicator/password', 'x', /credential/],
      ['couchdb/uuid', 'x', /catalogue/], ['cluster/n', '3', /catalogue/], ['couchdb/single_node', 'false', /catalogue/],
      ['chttpd/require_valid_user', 'true', /catalogue/], ['x/y', 'a', /catalogue/],
    ];
    for (const [k, v, why] of attacks) {
      assert.throws(() => parseOverride(k, v), (e: Error & { code?: string }) => e.code === 'REFUSED' && e.message.includes(k) && why.test(e.message), k);
      assert.throws(() => parseOverride(k, null, true), (e: Error & { code?: string }) => e.code === 'REFUSED', `reset of ${k}`);
    }
  });

  test('invalid keys and values, checked before anything is applied', () => {
    for (const [k, v] of [['log', 'x'], ['/x', 'y'], ['a/b/c', 'x'], ['log/level', 'loud'], ['log/level', ''], ['log/level', 'info\n[admins]\nx = y'], ['log/level', 'info ;x'],
      ['couchdb/max_dbs_open', '-1'], ['couchdb/max_dbs_open', '99'], ['couchdb/max_dbs_open', '1e3'], ['chttpd/admin_only_all_dbs', 'yes'], ['attachments/compressible_types', 'text/*;x']]) {
      assert.throws(() => parseOverride(k!, v), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT', `${k}=${v}`);
    }
    assert.throws(() => parseOverride('log/level', null), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT', 'a reset only where allowed');
    assert.deepEqual(parseOverride('log/level', null, true), { section: 'log', key: 'level', value: null, kind: 'live' });
    assert.throws(() => parseOverrides({ 'log/level': 'info', 'chttpd/port': '1' }), /chttpd\/port cannot be overridden/);
    assert.throws(() => parseOverrides({}), /no configuration overrides/);
    assert.deepEqual(parseOverrides({}, true), []);
  });
});

/** A valid ini value of a catalogue entry. */
function sample(p: CouchdbParameter): string {
  if (p.type === 'integer') return String(p.min);
  if (p.type === 'boolean') return 'true';
  return p.values?.[0] ?? 'text/*, application/json';
}

describe('names and settings', () => {
  test("database names follow CouchDB's rule", () => {
    for (const ok of ['a', 'abc', 'a/b', 'x_($)+-1', 'a'.repeat(238)]) assert.equal(checkDatabaseName(ok), ok);
    for (const bad of ['', 'A', '1a', '_users', 'a b', 'a.b', 'a'.repeat(239), 42]) assert.throws(() => checkDatabaseName(bad));
    fc.assert(fc.property(fc.string(), (s) => {
      const valid = /^[a-z][a-z0-9_$()+/-]*$/.test(s) && s.length <= 238;
      let accepted = true;
      try {
        checkDatabaseName(s);
      } catch {
        accepted = false;
      }
      assert.equal(accepted, valid);
    }));
  });

  test('user names: no reserved or system names', () => {
    assert.equal(checkUserName('alice.b@example'), 'alice.b@example');
    for (const bad of ['', '_x', 'a:b', 'root', 'couchtrove', 'a b']) assert.throws(() => checkUserName(bad));
  });

  test('settings are normalised and checked', () => {
    const s = checkSettings({ instanceId: 'i1', port: 5984, bindAddress: '127.0.0.1', dataDir: '/v/data/', instanceDir: '/var/lib/x', nodeName: 'couchdb@127.0.0.1', epmdPort: 4369, couchdbHome: '/opt/couchdb', extra: 'ignored' });
    assert.equal(s.dataDir, '/v/data');
    assert.equal((s as unknown as Record<string, unknown>).extra, undefined);
    assert.throws(() => checkSettings({ ...s, epmdPort: 5984 }), /must differ/);
    assert.throws(() => checkSettings({ ...s, instanceDir: '/v/data/inst' }), /separate/);
    assert.throws(() => checkSettings(null), /JSON object/);
  });
});

describe('files the agent writes', () => {
  const settings = checkSettings({ instanceId: 'i1', port: 15984, bindAddress: '127.0.0.1', dataDir: '/v/data', instanceDir: '/var/lib/i1', nodeName: 'couchdb@127.0.0.1', epmdPort: 14369, couchdbHome: '/opt/couchdb', flavor: { ramMb: 2048, vcpus: 2 } });

  test('local.ini holds the instance settings, the admin and the overrides, once each', () => {
    const { text } = buildLocalIni({ settings, uuid: 'u1', agentAdmin: { username: 'couchtrove', password: 'secret-pw' }, overrides: [parseOverride('log/level', 'debug')], existing: null });
    const ini = IniFile.parse(text);
    assert.equal(ini.problems.length, 0);
    assert.equal(ini.get('couchdb', 'database_dir'), '/v/data');
    assert.equal(ini.get('couchdb', 'view_index_dir'), '/v/data');
    assert.equal(ini.get('couchdb', 'uuid'), 'u1');
    assert.equal(ini.get('couchdb', 'single_node'), 'true');
    assert.equal(ini.get('chttpd', 'port'), '15984');
    assert.equal(ini.get('chttpd', 'bind_address'), '127.0.0.1');
    assert.equal(ini.get('admins', 'couchtrove'), 'secret-pw');
    assert.equal(ini.get('log', 'level'), 'debug');
    assert.match(ini.get('chttpd_auth', 'secret') ?? '', /^[0-9a-f]{32}$/);
    assert.equal((text.match(/^\[admins\]$/gm) ?? []).length, 1);
  });

  test('local.ini is rebuilt from the allow-list: what a tenant injected through the log file is dropped', () => {
    const hash = '-pbkdf2:sha256-8b1a9953c4611296a827abf8c47804d7,b5e2a5f0c1d7d1c4b5e2a5f0c1d7d1c4,600000';
    // What CouchDB wrote into local.ini once a server admin pointed log/file at it and a view logged newlines.
    const found = IniFile.parse([
      '[couchdb]', 'database_dir = /elsewhere', 'uuid = u1', 'max_document_size = 4000000',
      '[log]', 'writer = file', 'file = /var/lib/i1/etc/local.ini', 'level = info',
      '[native_query_servers]', 'enable_erlang_query_server = true',
      '[query_servers]', 'evil = /bin/sh -c id',
      '[os_daemons]', 'x = /bin/true',
      '[chttpd]', 'server_options = [{backlog, 128}]', 'port = 1',
      '[chttpd_auth]', 'secret = 0123456789abcdef0123456789abcdef', 'timeout = 1200',
      '[admins]', `couchtrove = ${hash}`, `root = ${hash}`, 'plain = not-a-hash', 'bad[name = x',
      '[couch_httpd_auth]', 'authentication_handlers = {chttpd_auth, proxy_authentication_handler}',
      '',
    ].join('\n'));
    const built = buildLocalIni({ settings, uuid: 'u1', agentAdmin: { username: 'couchtrove', password: 'pw' }, overrides: [parseOverride('couchdb/max_document_size', '9000000')], existing: found });
    const ini = IniFile.parse(built.text);
    const all = ini.sections();
    for (const section of ['native_query_servers', 'query_servers', 'os_daemons', 'couch_httpd_auth']) assert.equal(all.get(section), undefined, `[${section}] dropped`);
    assert.equal(ini.get('couchdb', 'database_dir'), '/v/data', 'managed settings win');
    assert.equal(ini.get('chttpd', 'port'), '15984');
    assert.equal(ini.get('chttpd', 'server_options'), undefined, 'not in the catalogue');
    assert.equal(ini.get('log', 'writer'), 'stderr');
    assert.equal(ini.get('log', 'file'), undefined);
    assert.equal(ini.get('log', 'level'), 'info', 'a catalogue key with a valid value is kept');
    assert.equal(ini.get('chttpd_auth', 'timeout'), '1200');
    assert.equal(ini.get('chttpd_auth', 'secret'), '0123456789abcdef0123456789abcdef', 'the cookie secret is kept');
    assert.equal(ini.get('couchdb', 'max_document_size'), '9000000', 'the configuration group wins');
    assert.equal(ini.get('admins', 'couchtrove'), hash, "the agent's known hash is kept");
    assert.equal(ini.get('admins', 'root'), hash);
    assert.equal(ini.get('admins', 'plain'), undefined, 'an admin whose password is not a hash is dropped');
    for (const k of ['chttpd/port', 'couchdb/database_dir', 'log/file', 'log/writer']) assert.ok(built.reset.includes(k), `${k} reset`);
    assert.ok(!built.reset.includes('couchdb/uuid'), 'an unchanged managed setting is not reported');
    assert.deepEqual(built.dropped.sort(), ['admins/bad[name', 'admins/plain', 'chttpd/server_options', 'couch_httpd_auth/authentication_handlers', 'native_query_servers/enable_erlang_query_server', 'os_daemons/x', 'query_servers/evil']);
    assert.doesNotMatch(built.text, /\[(native_)?query_servers\]|os_daemons|erlang/);
  });

  test('vm.args: node name, no cookie (it would show in ps), loopback distribution, schedulers from the flavor', () => {
    const text = renderVmArgs(settings);
    assert.match(text, /^-name couchdb@127\.0\.0\.1$/m);
    assert.doesNotMatch(text, /^-setcookie/m);
    assert.match(text, /^-kernel inet_dist_use_interface \{127,0,0,1\}$/m);
    assert.match(text, /^\+S 2:2$/m);
  });

  test('the reason from a log: the last error lines, secrets masked', async () => {
    const dir = await tempDir('agent-reason');
    try {
      const log = path.join(dir, 'couchdb.log');
      await fsp.writeFile(log, 'old [error] from an earlier start\n');
      const offset = (await fsp.stat(log)).size;
      await fsp.appendFile(log, '[info] starting\n[error] chttpd failed: {error,eaddrinuse} password=hunter22\n[info] bye\n');
      assert.equal(await reasonFromLog(log, offset, ['hunter22']), '[error] chttpd failed: {error,eaddrinuse} password=***');
      assert.equal(await reasonFromLog(path.join(dir, 'none'), 0), 'no log output');
    } finally {
      await removeDir(dir);
    }
  });
});
