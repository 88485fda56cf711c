// The `couchtrove instance|database|user|root|backup|flavor|configuration` commands against an API
// served over the fakes: tables by default, --json, --wait.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runMain } from '../support/cli.js';
import { startPlane, type TestPlane } from '../support/plane.js';

let p: TestPlane;
let url = '';
before(async () => {
  p = await startPlane();
  url = await p.app.listen({ host: '127.0.0.1', port: 0 });
});
after(async () => p.close());

const cli = (...args: string[]): ReturnType<typeof runMain> => runMain([...args, '--api-url', url]);

test('instance, database, user, root, backup, flavor, configuration commands', async () => {
  const fl = await cli('flavor', 'list');
  assert.equal(fl.code, 0);
  assert.match(fl.out, /^ID\s+NAME\s+RAM\s+VCPUS\n1\s+tiny\s+512\s+1/);
  const c = await cli('instance', 'create', '--name', 'cli-one', '--flavor', 'small', '--size', '1', '--databases', 'db1', '--users', 'ann:pw-ann:db1', '--wait', '--json');
  assert.equal(c.code, 0, c.err);
  const inst = (JSON.parse(c.out) as { instance: { id: string; status: string } }).instance;
  assert.equal(inst.status, 'ACTIVE');
  assert.match(c.err, /ACTIVE/);
  assert.match((await cli('instance', 'list')).out, /cli-one\s+ACTIVE/);
  assert.match((await cli('instance', 'show', '--instance', 'cli-one')).out, /couchdb_url\s+http:\/\/127\.0\.0\.1:\d+/);
  assert.equal((await cli('database', 'create', '--instance', inst.id, '--database', 'db2')).code, 0);
  assert.match((await cli('database', 'list', '--instance', inst.id)).out, /db1\ndb2/);
  assert.equal((await cli('user', 'grant-access', '--instance', inst.id, '--user', 'ann', '--databases', 'db2')).code, 0);
  assert.match((await cli('user', 'show-access', '--instance', inst.id, '--user', 'ann')).out, /db1\s+member\ndb2\s+member/);
  assert.match((await cli('root', 'enable', '--instance', inst.id)).out, /name\s+root/);
  assert.match((await cli('root', 'show', '--instance', inst.id)).out, /^root is enabled on cli-one \(/);
  const b = await cli('backup', 'create', '--instance', inst.id, '--name', 'cli-b', '--wait', '--json');
  assert.equal(b.code, 0, b.err);
  const bid = (JSON.parse(b.out) as { backup: { id: string; status: string } }).backup;
  assert.equal(bid.status, 'COMPLETED');
  assert.match((await cli('backup', 'list', '--instance', inst.id)).out, new RegExp(`${bid.id}\\s+cli-b\\s+COMPLETED`));
  assert.equal((await cli('instance', 'resize-volume', '--instance', inst.id, '--size', '3', '--wait')).code, 0);
  const conf = await cli('configuration', 'create', '--name', 'cc', '--values', '{"couchdb/max_document_size": 1000}', '--json');
  assert.equal(conf.code, 0, conf.err);
  assert.match((await cli('configuration', 'list')).out, /cc/);
  assert.match((await cli('configuration', 'parameters')).out, /^NAME\s+TYPE\s+MIN\s+MAX\s+RESTART_REQUIRED\ncouchdb\/max_dbs_open\s+integer\s+100\s+1000000\s+false/);
  assert.match((await cli('configuration', 'parameters', '--datastore-version', '3.5')).out, /chttpd_auth_cache\/max_lifetime\s+integer\s+1000\s+86400000\s+true/);
  const refused = await cli('configuration', 'create', '--name', 'evil', '--values', '{"log/file": "/etc/cron.d/x"}');
  assert.equal(refused.code, 1);
  assert.match(refused.err, /log\/file.*HTTP 400/);
  const bad = await cli('instance', 'resize-volume', '--instance', inst.id, '--size', '1');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /only grow.*HTTP 400/);
  const usage = await cli('configuration', 'create', '--name', 'x', '--values', 'nope');
  assert.equal(usage.code, 2);
  assert.match(usage.err, /--values: not JSON/);
  assert.equal((await cli('instance', 'delete', '--instance', inst.id, '--wait')).code, 0);
  assert.match((await cli('instance', 'list')).out, /^ID\s+NAME\s+STATUS/);
});
