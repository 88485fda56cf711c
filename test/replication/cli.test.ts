// `couchtrove agent replica source|follow|sync|status|detach` against two CouchDBs prepared by the agent
// (real with COUCHDB_HOME, else the development engine): credentials from the environment only.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminOf, couch, Harness, http, type TestInstance } from '../agent/helpers.js';
import { runCli } from '../support/cli.js';
import type { ReplicationStatus } from '../../src/agent/protocol.js';

describe(`agent replica commands [${couch.label}]`, () => {
  const h = new Harness();
  let primary: TestInstance;
  let replica: TestInstance;

  before(async () => {
    await h.init('replica-cli');
    primary = await h.instance('p');
    replica = await h.instance('r');
    await primary.agent.createDatabase('gamma');
  });
  after(() => h.cleanup());

  test('source, follow, status, sync, detach', async () => {
    const pAdmin = await adminOf(primary.settings);
    const rAdmin = await adminOf(replica.settings);
    const pState = path.join(h.root, 'p-replication.json');
    const rState = path.join(h.root, 'r-replication.json');
    const src = await runCli(['agent', 'replica', 'source', '--couchdb-url', primary.url, '--replication-state', pState], { COUCHDB_USER: pAdmin.username, COUCHDB_PASSWORD: pAdmin.password });
    assert.equal(src.code, 0, src.stderr);
    assert.equal(fs.statSync(pState).mode & 0o777, 0o600);
    const password = (JSON.parse(await fsp.readFile(pState, 'utf8')) as { user: { password: string } }).user.password;
    assert.equal(src.stdout.includes(password), false, 'the password is not printed');

    const env = { COUCHDB_USER: rAdmin.username, COUCHDB_PASSWORD: rAdmin.password, COUCHTROVE_PRIMARY_USER: 'couchtrove-replicator', COUCHTROVE_PRIMARY_PASSWORD: password };
    const follow = await runCli(['agent', 'replica', 'follow', '--couchdb-url', replica.url, '--replication-state', rState, '--primary-url', primary.url, '--json'], env);
    assert.equal(follow.code, 0, follow.stderr);
    assert.deepEqual((JSON.parse(follow.stdout) as { added: string[] }).added, ['_users', 'gamma']);
    assert.equal(`${follow.stdout}${follow.stderr}`.includes(password), false);
    const noCreds = await runCli(['agent', 'replica', 'follow', '--couchdb-url', replica.url, '--replication-state', rState, '--primary-url', primary.url], { COUCHDB_USER: rAdmin.username, COUCHDB_PASSWORD: rAdmin.password });
    assert.equal(noCreds.code, 2, noCreds.stderr);
    assert.match(noCreds.stderr, /COUCHTROVE_PRIMARY_USER/);

    assert.equal((await http(primary.url, 'PUT', '/gamma/g1', { auth: pAdmin, body: { g: 1 } })).status, 201);
    let status: ReplicationStatus | null = null;
    for (let i = 0; i < 100 && !(status && status.databases.every((d) => d.lag === 0)); i++) {
      const r = await runCli(['agent', 'replica', 'status', '--couchdb-url', replica.url, '--replication-state', rState, '--json'], env);
      status = JSON.parse(r.stdout) as ReplicationStatus;
      if (!status.databases.every((d) => d.lag === 0)) await sleep(300);
    }
    assert.ok(status && status.databases.every((d) => d.lag === 0 && d.state === 'running'), JSON.stringify(status));
    assert.equal((await http(replica.url, 'GET', '/gamma/g1', { auth: rAdmin })).status, 200);

    const sync = await runCli(['agent', 'replica', 'sync', '--couchdb-url', replica.url, '--replication-state', rState], env);
    assert.equal(sync.code, 0, sync.stderr);
    assert.match(sync.stdout, /nothing to change/);

    const detach = await runCli(['agent', 'replica', 'detach', '--couchdb-url', replica.url, '--replication-state', rState], env);
    assert.equal(detach.code, 0, detach.stderr);
    assert.match(detach.stdout, /standalone/);
    assert.equal((await http(replica.url, 'PUT', '/gamma/after', { auth: rAdmin, body: {} })).status, 201);
  });
});
