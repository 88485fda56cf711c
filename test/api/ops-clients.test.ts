// Issue 15 through the real clients against a real server (development engine, or Apache CouchDB with
// COUCHDB_HOME): `show` in units people read (openstack and couchtrove), user access levels proved by
// design-document writes as the user, and Trove's guest log API (`openstack database log ...`,
// `trove log-*`, `couchtrove log tail`).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { startServer, sandbox, api, waitStatus, basicAuth, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';
import { runCli } from '../support/cli.js';

const skip = clientsSkip;
const { root, stateDir, track } = sandbox('couchtrove-ops-clients-');
let server: RealServer | undefined;
let id = '';
let couch = '';
before(async () => {
  if (skip) return;
  server = track(await startServer(stateDir));
  const r = await api(server.api, 'POST', '/instances', {
    instance: { name: 'ops1', flavorRef: '2', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'u1', password: 'pw-one-1', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  id = (r.json.instance as J).id as string;
  couch = (await waitStatus(server.api, 'instances', id, ['ACTIVE'])).couchdb_url as string;
});

const { run, os, trove } = troveClients(path.join(root, 'home'), () => server!);
const osJson = async (...args: string[]): Promise<J> => JSON.parse(await os(...args, '-f', 'json')) as J;
const ct = async (...args: string[]): Promise<string> => {
  const r = await runCli([...args, '--api-url', server!.url], { COUCHTROVE_TOKEN: undefined, COUCHTROVE_API_URL: undefined });
  assert.equal(r.code, 0, `couchtrove ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

test('show: openstack prints the CouchDB version and volume_used in GB; couchtrove prints GB, flavor name, data, last backup; locationRef exists', { skip, timeout: clientBudget(4, 300_000) }, async () => {
  for (let i = 0; i < 5; i++) {
    const w = await fetch(`${couch}/orders/doc-${i}`, { method: 'PUT', headers: { authorization: basicAuth('u1', 'pw-one-1'), 'content-type': 'application/json' }, body: '{"n":1}' });
    assert.equal(w.status, 201, await w.text());
  }
  const shown = await osJson('instance', 'show', 'ops1');
  assert.match(String(shown.datastore_version_number), /^\d+\.\d+\.\d+/, 'the running CouchDB version, not None');
  assert.equal(typeof shown.volume_used, 'number');
  assert.equal(Number((shown.volume_used as number).toFixed(2)), shown.volume_used, 'two decimals at most');
  const b = await osJson('backup', 'create', 'ops-b1', '--instance', id);
  const done = await waitStatus(server!.api, 'backups', b.id as string, ['COMPLETED', 'FAILED']);
  assert.equal(done.status, 'COMPLETED');
  const loc = new URL(done.locationRef as string);
  assert.ok(fs.existsSync(path.join(decodeURIComponent(loc.pathname), 'manifest.json')), `locationRef ${done.locationRef as string} holds the backup's manifest`);

  const out = await ct('instance', 'show', 'ops1');
  assert.match(out, /^volume\s+\d+\.\d\d of 1\.00 GB used \(\d+%\)$/m);
  assert.match(out, /^flavor\s+small \(2\)$/m);
  assert.match(out, /^datastore\s+couchdb 3\.5 \(CouchDB \d+\.\d+\.\d+.*\)$/m);
  assert.match(out, /^data\s+5 documents in 1 databases, \d+\.\d\d GB on disk$/m);
  assert.match(out, new RegExp(`^last_backup\\s+${done.id as string} ops-b1, completed \\S+, \\d+\\.\\d\\d GB$`, 'm'));
  const j = JSON.parse(await ct('instance', 'show', 'ops1', '--json')) as { instance: { volume: J; data: J } };
  assert.equal(j.instance.volume.size_bytes, 1024 ** 3);
  assert.ok((j.instance.volume.used_bytes as number) > 0);
  assert.equal(j.instance.data.documents, 5);
});

test('access levels: a member cannot write a design document, an admin can (views, Mango indexes); Trove\'s grant stays member', { skip, timeout: clientBudget(4, 300_000) }, async () => {
  await os('user', 'create', id, 'u2', 'pw-two-2', '--databases', 'orders');
  const auth = basicAuth('u2', 'pw-two-2');
  const ddoc = async (n: number): Promise<number> => {
    const r = await fetch(`${couch}/orders/_design/v${n}`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ views: { all: { map: 'function (doc) { emit(doc._id, 1); }' } } }) });
    await r.text();
    return r.status;
  };
  const doc = await fetch(`${couch}/orders/by-u2`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: '{}' });
  assert.equal(doc.status, 201, 'a member writes documents');
  assert.ok([401, 403].includes(await ddoc(1)), 'a member cannot write a design document');
  assert.match(await ct('user', 'show', 'ops1', '--user', 'u2'), /^databases\s+orders$/m);

  assert.match(await ct('user', 'grant-access', 'ops1', '--user', 'u2', '--databases', 'orders', '--role', 'admin'), /user u2 is admin of orders/);
  assert.equal(await ddoc(2), 201, 'a database admin writes design documents');
  const idx = await fetch(`${couch}/orders/_index`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ index: { fields: ['n'] }, name: 'by-n' }) });
  assert.equal(idx.status, 200, await idx.text());
  assert.match(await ct('user', 'show', 'ops1', '--user', 'u2'), /^databases\s+orders \(admin\)$/m);
  assert.match(await ct('user', 'show-access', 'ops1', '--user', 'u2'), /^orders\s+admin$/m);
  assert.match(await ct('user', 'list', 'ops1'), /^u2\s+orders \(admin\)$/m);
  // The Trove clients see the access as before (their view has no role).
  assert.match(await os('user', 'show', 'access', id, 'u2'), /orders/);
  // Trove's grant call has no role: member, which takes the admin role back.
  await trove('user-grant-access', id, 'u2', 'orders');
  assert.ok([401, 403].includes(await ddoc(3)), 'back to member: no design documents');
  assert.match(await ct('user', 'show-access', 'ops1', '--user', 'u2'), /^orders\s+member$/m);

  // A user created as database admin writes design documents at once; a role that is not one is refused.
  assert.match(await ct('user', 'create', 'ops1', '--user', 'u3', '--password', 'pw-three-3', '--databases', 'orders', '--role', 'admin'), /user u3 created on ops1 \(\S+\), admin of orders/);
  const u3 = await fetch(`${couch}/orders/_design/u3`, { method: 'PUT', headers: { authorization: basicAuth('u3', 'pw-three-3'), 'content-type': 'application/json' }, body: JSON.stringify({ views: {} }) });
  assert.equal(u3.status, 201, await u3.text());
  assert.match(await ct('user', 'show-access', 'ops1', '--user', 'u3'), /^orders\s+admin$/m);
  const bad = await api(server!.api, 'POST', `/instances/${id}/users`, { users: [{ name: 'u4', password: 'pw-four-4', databases: [{ name: 'orders', role: 'owner' }] }] });
  assert.equal(bad.status, 400);
  assert.match(JSON.stringify(bad.json), /\\"users\\"\[0\]\.databases\[0\]\.role must be \\"admin\\" or \\"member\\"/);
});

test('guest log API: openstack database log list/show/set --publish/--discard, trove log-*, couchtrove log tail', { skip, timeout: clientBudget(16, 300_000) }, async () => {
  const list = await os('log', 'list', 'ops1');
  assert.match(list, /\| couchdb \| SYS\s+\| Enabled/);
  const shown = await osJson('log', 'show', id, 'couchdb');
  assert.equal(shown.type, 'SYS');
  assert.equal(shown.published, 0);
  assert.ok((shown.pending as number) > 0, 'CouchDB has written its log');
  assert.equal(shown.prefix, `logs/${id}/couchdb/`);

  const published = await osJson('log', 'set', id, 'couchdb', '--publish');
  assert.equal(published.status, 'Published');
  assert.ok((published.published as number) > 0);
  const repo = path.join(server!.stateDir, 'backups');
  const copy = path.join(repo, `logs/${id}/couchdb/log`);
  assert.ok(fs.existsSync(copy), 'the published copy is in the backup repository');
  assert.equal(fs.statSync(copy).size, published.published);
  assert.match(await trove('log-show', id, 'couchdb'), /Published|Partial/);
  assert.match(await trove('log-list', id), /couchdb/);

  const discarded = await osJson('log', 'set', id, 'couchdb', '--discard');
  assert.equal(discarded.status, 'Enabled');
  assert.equal(discarded.published, 0);
  assert.ok(!fs.existsSync(copy), 'discard removes the published copy');
  assert.match(await trove('log-publish', id, 'couchdb'), /Published|Partial/);
  assert.ok(fs.existsSync(copy));

  await assert.rejects(os('log', 'set', id, 'couchdb', '--disable'), /SYS log: CouchDB always writes it, it cannot be disabled.*\(HTTP 400\)/);
  assert.match((await osJson('log', 'set', id, 'couchdb', '--enable')).status as string, /Published|Partial|Enabled/);

  const tail = await ct('log', 'tail', 'ops1', '--lines', '3');
  const lines = tail.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 1 && lines.length <= 3, tail);
  assert.ok(fs.readFileSync(copy, 'utf8').length > 0);
  assert.match(await ct('log', 'list', 'ops1'), /^couchdb\s+SYS\s+(Published|Partial)/m);

  // log tail and save: both clients log in through the Keystone v3 facade and read the published copy
  // through the Swift view its catalog names (they do not go through the Trove API for the contents).
  const published2 = fs.readFileSync(copy, 'utf8');
  const keystone = ['--os-auth-url', `${server!.url}/v3`, '--os-username', 'tester', '--os-password', 'anything', '--os-project-name', 'local', '--os-user-domain-name', 'Default', '--os-project-domain-name', 'Default'];
  const osTail = await run('openstack', ['--os-auth-type', 'password', ...keystone, 'database', 'log', 'tail', id, 'couchdb', '--lines', '2']);
  assert.equal(osTail, `${published2.trimEnd().split('\n').slice(-2).join('\n')}\n`);
  const saved = path.join(root, 'os-saved.log');
  assert.match(await run('openstack', ['--os-auth-type', 'password', ...keystone, 'database', 'log', 'save', id, 'couchdb', '--file', saved]), /written to/);
  assert.equal(fs.readFileSync(saved, 'utf8'), published2);
  const saved2 = path.join(root, 'trove-saved.log');
  await run('trove', [...keystone, 'log-save', id, 'couchdb', '--file', saved2]);
  assert.equal(fs.readFileSync(saved2, 'utf8'), published2);
  assert.match(await run('trove', [...keystone, 'log-tail', id, 'couchdb', '--lines', '1']), new RegExp(`${published2.trimEnd().split('\n').pop()!.slice(0, 40).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  // Another project's account, a missing token and a key outside the published logs are refused.
  const swift = `${server!.url}/swift/v1`;
  assert.equal((await fetch(`${swift}/AUTH_local/database_logs?format=json`)).status, 401);
  assert.equal((await fetch(`${swift}/AUTH_other/database_logs`, { headers: { 'x-auth-token': 'notused' } })).status, 403);
  assert.equal((await fetch(`${swift}/AUTH_local/database_logs/logs/${id}/couchdb.metafile.json`, { headers: { 'x-auth-token': 'notused' } })).status, 404);
  await assert.rejects(run('openstack', ['--os-auth-type', 'password', ...keystone.map((a) => (a === 'local' ? 'other' : a)), 'database', 'instance', 'list']), /token is for project local, not other/);
});

test('show of an instance being restored gives its task and the restore\'s bytes, which only grow', { skip, timeout: clientBudget(2, 300_000) }, async () => {
  // Random bytes: compression cannot shrink them, so the restore takes long enough for several polls. In
  // 16 MiB attachments: the development engine (JavaScript) is too busy to answer health checks while it
  // takes in one large body, and the instance then shows SHUTDOWN for a round.
  const total = 96 * 1024 * 1024;
  for (let i = 0; i < 6; i++) {
    const put = await fetch(`${couch}/orders/blob-${i}/data`, { method: 'PUT', headers: { authorization: basicAuth('u1', 'pw-one-1'), 'content-type': 'application/octet-stream' }, body: crypto.randomBytes(16 * 1024 * 1024) });
    assert.equal(put.status, 201, await put.text());
  }
  await waitStatus(server!.api, 'instances', id, ['ACTIVE']);
  const b = await api(server!.api, 'POST', '/backups', { backup: { name: 'ops-big', instance: id } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const bid = (b.json.backup as J).id as string;
  assert.equal((await waitStatus(server!.api, 'backups', bid, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');
  const r = await api(server!.api, 'POST', '/instances', { instance: { name: 'ops-restored', flavorRef: '2', volume: { size: 1 }, restorePoint: { backupRef: bid } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const rid = (r.json.instance as J).id as string;
  const seen: J[] = [];
  let last: J;
  for (;;) {
    last = (await api(server!.api, 'GET', `/instances/${rid}`)).json.instance as J;
    if (last.status !== 'BUILD') break;
    seen.push(last);
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(last.status, 'ACTIVE', JSON.stringify(last));
  assert.equal(last.task, undefined, 'no task once ACTIVE');
  assert.ok(seen.every((s) => (s.task as J | undefined)?.kind === undefined || (s.task as J).kind === 'instance.create'), JSON.stringify(seen.map((s) => s.task)));
  const restoring = seen.map((s) => s.progress as J | undefined).filter((p): p is J => p?.phase === 'restore');
  assert.ok(restoring.length > 0, `a poll every 100 ms saw the restore: ${JSON.stringify(seen.map((s) => [s.task, s.progress]))}`);
  for (const p of restoring) assert.ok((p.bytes_done as number) <= (p.bytes_total as number), JSON.stringify(p));
  // Before the backup's manifest is read the total is 0; after, it holds the attachments.
  assert.ok(restoring.some((p) => (p.bytes_total as number) >= total), JSON.stringify(restoring));
  const done = restoring.map((p) => p.bytes_done as number);
  assert.deepEqual(done, [...done].sort((x, y) => x - y));
  assert.equal((await api(server!.api, 'DELETE', `/instances/${rid}`)).status, 202);
});
