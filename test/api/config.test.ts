// The control plane's configuration file and environment: every option validated with a clear error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadServerConfig, flavorOverrides } from '../../src/config/server.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-conf-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const file = (text: string): string => {
  const f = path.join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
  fs.writeFileSync(f, text);
  return f;
};

test('defaults', () => {
  const c = loadServerConfig({ env: {}, overrides: { stateDir: '/tmp/x' } });
  assert.equal(c.port, 8779);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.repository, 'file:///tmp/x/backups');
  assert.equal(c.authMode, 'local');
  assert.equal(c.couchdb.usageTimeout, 400);
  assert.equal(c.couchdb.backupStrategy, 'CouchDBBackup');
  assert.equal(c.couchdb.volumeSupport, true);
  assert.equal(c.flavors.length, 4);
  assert.deepEqual(c.datastoreVersions, [{ name: '3.5', active: true, default: true }]);
});

test('a full file', () => {
  const f = file(`
# comment
repository = file:///srv/backups
database_url = postgres://ct@127.0.0.1:5432/ct
auth_mode = token
[couchdb]
tcp_ports = 5984, 15984-15990
udp_ports =
backup_strategy = CouchDBBackup
mount_point = /var/lib/couchdb
usage_timeout = 120
volume_support = true
device_path = /dev/vdb
[flavor:small]
name = small
ram = 1024
vcpus = 2
[project:alpha]
tokens = token-alpha-1, token-alpha-2
[datastore_version:3.5]
couchdb_home = /opt/couchdb
default = true
[datastore_version:3.4]
active = false
`);
  const c = loadServerConfig({ configFile: f, env: { COUCHTROVE_COUCHDB_USAGE_TIMEOUT: '90' } });
  assert.equal(c.repository, 'file:///srv/backups');
  assert.equal(c.databaseUrl, 'postgres://ct@127.0.0.1:5432/ct');
  assert.deepEqual(c.couchdb.tcpPorts, [{ from: 5984, to: 5984 }, { from: 15984, to: 15990 }]);
  assert.equal(c.couchdb.usageTimeout, 90, 'the environment wins over the file');
  assert.deepEqual(c.flavors, [{ id: 'small', name: 'small', ram: 1024, vcpus: 2 }]);
  assert.deepEqual(c.projects, [{ id: 'alpha', name: 'alpha', tokens: ['token-alpha-1', 'token-alpha-2'] }]);
  assert.equal(c.datastoreVersions.find((v) => v.name === '3.5')?.couchdbHome, '/opt/couchdb');
  assert.equal(c.datastoreVersions.find((v) => v.name === '3.4')?.active, false);
  assert.deepEqual(flavorOverrides({ ram: 1024, vcpus: 2 }), { 'couchdb/max_dbs_open': '512', 'query_server_config/os_process_limit': '50' });
});

test('errors name the place and the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['[couchdb]\nusage_timeout = soon\n', /:2: usage_timeout: expected a whole number/],
    ['[couchdb]\ntcp_ports = 70000\n', /tcp_ports: invalid port range/],
    ['[couchdb]\nbackup_strategy = Tar\n', /only strategy is CouchDBBackup/],
    ['[couchdb]\nmount_point = relative\n', /mount_point: expected an absolute path/],
    ['[couchdb]\nvolume_support = maybe\n', /volume_support: expected true or false/],
    ['[couchdb]\nfoo = 1\n', /unknown key in \[couchdb\]/],
    ['[nonsense]\n', /unknown section \[nonsense\]/],
    ['repository = ftp://x/y\n', /unsupported scheme ftp:/],
    ['repository = s3://key:secret@bucket/p\n', /credentials do not belong in the URL/],
    ['database_url = mysql://x\n', /expected postgres:\/\//],
    ['[flavor:x]\nname = x\nram = 12\nvcpus = 1\n', /ram: must be between 128/],
    ['[flavor:x]\nname = x\n', /needs ram/],
    ['[project:p]\ntokens = short\n', /tokens are 8 to 256/],
    ['[project:p]\ntokens = notused\n', /tokens are 8 to 256|notused/],
    ['auth_mode = token\n', /needs at least one \[project:ID\]/],
    ['just words\n', /:1: expected "key = value"/],
    ['port = 1\nport = 2\n', /port set twice/],
  ];
  for (const [text, re] of cases) assert.throws(() => loadServerConfig({ configFile: file(text), env: {} }), re, text);
  assert.throws(() => loadServerConfig({ env: { COUCHTROVE_FLAVORS: '1:tiny:512' } }), /COUCHTROVE_FLAVORS.*ID:NAME:RAM_MB:VCPUS/);
  assert.throws(() => loadServerConfig({ env: { COUCHTROVE_TOKENS: 'nocolon' } }), /PROJECT:TOKEN/);
  assert.throws(() => loadServerConfig({ env: { COUCHTROVE_COUCHDB_TCP_PORTS: 'x' } }), /environment COUCHTROVE_COUCHDB_TCP_PORTS: tcp_ports/);
  assert.throws(() => loadServerConfig({ configFile: path.join(dir, 'missing.conf'), env: {} }), /missing\.conf: ENOENT/);
});

test('environment lists', () => {
  const c = loadServerConfig({ env: { COUCHTROVE_FLAVORS: 'a:alpha:512:1,b:beta:2048:4', COUCHTROVE_DATASTORE_VERSIONS: '3.5,3.4', COUCHTROVE_TOKENS: 'p1:tok-p1-xxxx,p2:tok-p2-xxxx', COUCHTROVE_AUTH_MODE: 'token' } });
  assert.deepEqual(c.flavors.map((f) => f.id), ['a', 'b']);
  assert.deepEqual(c.datastoreVersions.map((v) => [v.name, v.default]), [['3.5', true], ['3.4', false]]);
  assert.deepEqual(c.projects.map((p) => [p.id, p.tokens]), [['p1', ['tok-p1-xxxx']], ['p2', ['tok-p2-xxxx']]]);
});
