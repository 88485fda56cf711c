// The API commands as openstack users type them (issue 15): positional NAME|ID, names for every
// resource kind with ambiguous names refused, --version, only each verb's own options, human sizes
// newest first, the hint of a cut listing; and the --wait renderer from the API's bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { main } from '../../src/cli/main.js';
import { WaitRenderer } from '../../src/cli/progress.js';
import { apiCli } from '../support/cli.js';
import { startPlane, type TestPlane } from '../support/plane.js';

let p: TestPlane;
let url = '';
before(async () => {
  p = await startPlane();
  url = await p.app.listen({ host: '127.0.0.1', port: 0 });
});
after(async () => p.close());

const { cli, json } = apiCli(() => url);

test('--version prints the package version', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  const r = await cli('--version');
  assert.equal(r.code, 0);
  assert.equal(r.out, `${pkg.version}\n`);
});

test('a verb refuses the options of another verb', async () => {
  for (const args of [['instance', 'restart', 'x', '--size', '7'], ['instance', 'restart', 'x', '--flavor', '4'], ['instance', 'resize-volume', 'x', '--flavor', '3'], ['instance', 'resize-flavor', 'x', '--size', '2']]) {
    const r = await cli(...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, /unknown option '--(size|flavor)'/);
  }
  const missing = await cli('instance', 'resize-volume', 'x');
  assert.equal(missing.code, 2);
  assert.match(missing.err, /missing required option --size/);
  // A schedule belongs to an instance or a cluster: one of them, named.
  const neither = await cli('schedule', 'list');
  assert.equal(neither.code, 2);
  assert.match(neither.err, /give the instance \(or --cluster ID\)/);
  const both = await cli('schedule', 'list', 'x', '--cluster', 'c');
  assert.equal(both.code, 2);
  assert.match(both.err, /give an instance or --cluster ID, not both/);
});

test('instance, backup and configuration by positional NAME or ID; flags still work; both and different is a usage error', async () => {
  const inst = (await json<{ instance: { id: string } }>('instance', 'create', '--name', 'pos-db', '--flavor', 'small', '--size', '1', '--wait')).instance;
  assert.match((await cli('instance', 'show', 'pos-db')).out, new RegExp(`id\\s+${inst.id}`));
  assert.match((await cli('instance', 'show', inst.id)).out, /name\s+pos-db/);
  assert.match((await cli('instance', 'show', '--instance', 'pos-db')).out, /name\s+pos-db/);
  assert.equal((await cli('instance', 'show', 'pos-db', '--instance', inst.id)).code, 2);
  assert.equal((await cli('instance', 'show', 'pos-db', '--instance', 'pos-db')).code, 0);
  assert.equal((await cli('instance', 'show')).code, 2);
  assert.equal((await cli('instance', 'restart', 'pos-db', '--wait')).code, 0);

  const b = (await json<{ backup: { id: string } }>('backup', 'create', '--instance', 'pos-db', '--name', 'nightly', '--wait')).backup;
  assert.match((await cli('backup', 'show', 'nightly')).out, new RegExp(`id\\s+${b.id}`));
  assert.match((await cli('backup', 'show', '--backup', 'nightly')).out, new RegExp(`id\\s+${b.id}`));
  // --parent and create --backup take names too.
  const inc = (await json<{ backup: { parent_id: string } }>('backup', 'create', '--instance', 'pos-db', '--name', 'inc', '--parent', 'nightly', '--wait')).backup;
  assert.equal(inc.parent_id, b.id);
  const copy = await cli('instance', 'create', '--name', 'pos-copy', '--flavor', 'small', '--size', '1', '--backup', 'nightly', '--wait');
  assert.equal(copy.code, 0, copy.err);

  const conf = (await json<{ configuration: { id: string } }>('configuration', 'create', '--name', 'pos-conf', '--values', '{"couchdb/max_document_size": 1000}')).configuration;
  assert.match((await cli('configuration', 'show', 'pos-conf')).out, new RegExp(`id\\s+${conf.id}`));
  const del = await cli('configuration', 'delete', 'pos-conf');
  assert.equal(del.code, 0, del.err);
  assert.match(del.out, new RegExp(`configuration pos-conf \\(${conf.id}\\) deleted`));

  const sched = (await json<{ schedule: { id: string } }>('schedule', 'create', '--instance', 'pos-db', '--name', 'hourly', '--pattern', '0 * * * *')).schedule;
  const sd = await cli('schedule', 'delete', '--instance', 'pos-db', '--schedule', 'hourly');
  assert.equal(sd.code, 0, sd.err);
  assert.match(sd.out, new RegExp(`schedule hourly \\(${sched.id}\\) deleted`));

  const bd = await cli('backup', 'delete', 'inc', '--wait');
  assert.equal(bd.code, 0, bd.err);
  assert.equal((await cli('instance', 'delete', 'pos-copy', '--wait')).code, 0);
});

test('an ambiguous name is refused with the candidates', async () => {
  await json('instance', 'create', '--name', 'twin', '--flavor', 'small', '--size', '1', '--wait');
  await json('instance', 'create', '--name', 'twin', '--flavor', 'small', '--size', '1', '--wait');
  const ids = (await json<{ instances: Array<{ id: string; name: string }> }>('instance', 'list')).instances.filter((i) => i.name === 'twin').map((i) => i.id);
  assert.equal(ids.length, 2);
  const r = await cli('instance', 'show', 'twin');
  assert.equal(r.code, 1);
  assert.match(r.err, /more than one instance is named twin: use the id, one of/);
  for (const id of ids) assert.ok(r.err.includes(id), r.err);

  const b1 = (await json<{ backup: { id: string } }>('backup', 'create', '--instance', ids[0]!, '--name', 'same', '--wait')).backup;
  const b2 = (await json<{ backup: { id: string } }>('backup', 'create', '--instance', ids[0]!, '--name', 'same', '--wait')).backup;
  const rb = await cli('backup', 'delete', 'same');
  assert.equal(rb.code, 1);
  assert.match(rb.err, /more than one backup is named same/);
  assert.ok(rb.err.includes(b1.id) && rb.err.includes(b2.id), rb.err);
  const nf = await cli('backup', 'show', 'no-such-backup');
  assert.equal(nf.code, 1);
  assert.match(nf.err, /HTTP 404/);
});

test('backup list: human sizes, newest first, raw numbers in --json, and a hint when --limit cuts it', async () => {
  const inst = (await json<{ instance: { id: string } }>('instance', 'create', '--name', 'sizes', '--flavor', 'small', '--size', '1', '--wait')).instance;
  const made: string[] = [];
  for (const name of ['old', 'mid', 'new']) made.push((await json<{ backup: { id: string } }>('backup', 'create', '--instance', inst.id, '--name', name, '--wait')).backup.id);
  // Distinct times and sizes, set in the store: backups made within one second tie on `created`.
  await p.store.update('backups', made[0]!, { created: '2024-01-01T00:00:00.000Z', size_bytes: 1_260_571_345 });
  await p.store.update('backups', made[1]!, { created: '2024-06-01T00:00:00.000Z', size_bytes: 2048 });
  await p.store.update('backups', made[2]!, { created: '2025-01-01T00:00:00.000Z', size_bytes: 12 });

  const r = await cli('backup', 'list', '--instance', 'sizes');
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trim().split('\n');
  assert.match(lines[0]!, /^ID\s+NAME\s+STATUS\s+INSTANCE_ID\s+PARENT_ID\s+SIZE\s+CREATED\s+VERIFY_RESULT$/);
  assert.deepEqual(lines.slice(1).map((l) => l.split(/\s+/)[1]), ['new', 'mid', 'old']);
  assert.match(lines[1]!, /\s12 B\s/);
  assert.match(lines[2]!, /\s2\.0 KiB\s/);
  assert.match(lines[3]!, /\s1\.2 GiB\s/);
  assert.doesNotMatch(r.out, /c{64}/); // no checksum in the table
  assert.equal(r.err, '');

  const raw = await json<{ backups: Array<{ name: string; size_bytes: number }> }>('backup', 'list', '--instance', inst.id);
  assert.deepEqual(raw.backups.map((b) => [b.name, b.size_bytes]), [['new', 12], ['mid', 2048], ['old', 1_260_571_345]]);

  const cut = await cli('backup', 'list', '--instance', inst.id, '--limit', '2');
  assert.equal(cut.code, 0, cut.err);
  assert.equal(cut.out.trim().split('\n').length, 3);
  const marker = /^more exist: use --marker (\S+)$/m.exec(cut.err)?.[1];
  assert.ok(marker, cut.err);
  const rest = await cli('backup', 'list', '--instance', inst.id, '--limit', '2', '--marker', marker);
  assert.equal(rest.out.trim().split('\n').length, 2);
  assert.equal(rest.err, '');

  const icut = await cli('instance', 'list', '--limit', '1');
  assert.match(icut.err, /^more exist: use --marker \S+\n$/);
});

test('the --wait renderer shows bytes, rate and ETA from the API and never moves backwards', () => {
  let now = 0;
  const r = new WaitRenderer('backup 1234abcd', () => now);
  const GiB = 1024 ** 3;
  const first = r.update({ state: 'BUILDING' });
  assert.equal(first.percent, undefined); // no bytes yet: no percent is made up
  assert.ok(first.changed);
  assert.match(first.line, /^backup 1234abcd BUILDING elapsed 0s$/);
  now = 1000;
  const a = r.update({ state: 'SAVING', progress: { bytesDone: 0.1 * GiB, bytesTotal: 1.2 * GiB } });
  assert.equal(a.percent, 8);
  assert.match(a.line, /SAVING \[=+-+\] 8% 102\.4 MiB\/1\.2 GiB elapsed 1s$/); // one sample: no rate yet
  now = 3000;
  const b = r.update({ state: 'SAVING', progress: { bytesDone: 0.3 * GiB, bytesTotal: 1.2 * GiB } });
  assert.equal(b.percent, 25);
  assert.ok(!b.changed);
  assert.match(b.line, /25% 307\.2 MiB\/1\.2 GiB 102\.4 MiB\/s ETA 9s elapsed 3s$/);
  // An older figure, or a total that grew, must not pull the bar back.
  now = 4000;
  const c = r.update({ state: 'SAVING', progress: { bytesDone: 0.2 * GiB, bytesTotal: 1.2 * GiB } });
  assert.equal(c.percent, 25);
  assert.match(c.line, /307\.2 MiB\/1\.2 GiB/);
  const d = r.update({ state: 'SAVING', progress: { bytesDone: 0.3 * GiB, bytesTotal: 2.4 * GiB } });
  assert.equal(d.percent, 25);
  now = 6000;
  const e = r.update({ state: 'COMPLETED' }, true);
  assert.equal(e.percent, 100);
  assert.ok(e.changed);
  assert.match(e.line, /COMPLETED \[=+\] 100% 2\.4 GiB\/2\.4 GiB .*MiB\/s elapsed 6s$/);
  assert.doesNotMatch(e.line, /ETA/);
  const seen = [a, b, c, d, e].map((x) => x.percent ?? 0);
  assert.deepEqual(seen, [...seen].sort((x, y) => x - y));

  // An instance whose restore is over while its task goes on: the bar stays, no stale rate or ETA.
  now = 0;
  const i = new WaitRenderer('instance 1234abcd', () => now);
  i.update({ state: 'BUILD (restore)', progress: { bytesDone: 0.1 * GiB, bytesTotal: 1 * GiB } });
  now = 1000;
  assert.match(i.update({ state: 'BUILD (restore)', progress: { bytesDone: 0.5 * GiB, bytesTotal: 1 * GiB } }).line, /50% .* MiB\/s ETA 1s/);
  now = 2000;
  const after = i.update({ state: 'BUILD (started)' });
  assert.ok(after.changed);
  assert.match(after.line, /^instance 1234abcd BUILD \(started\) \[=+-+\] 50% 512\.0 MiB\/1\.0 GiB elapsed 2s$/);
});

test('--wait on a terminal redraws one line from the API; without a terminal, one line per state', async () => {
  const inst = (await json<{ instance: { id: string } }>('instance', 'create', '--name', 'waiter', '--flavor', 'small', '--size', '1', '--wait')).instance;
  const stdout = new PassThrough();
  const stderr = Object.assign(new PassThrough(), { isTTY: true });
  let err = '';
  stderr.on('data', (x: Buffer) => (err += x.toString()));
  stdout.resume();
  assert.equal(await main(['backup', 'create', '--instance', inst.id, '--name', 'tty', '--wait', '--api-url', url], { stdout, stderr, env: {} }), 0, err);
  assert.ok(err.endsWith('\u001b[K\n'), JSON.stringify(err)); // the line is cleared to its end, then left
  assert.match(err, /\rbackup [0-9a-f]{8} COMPLETED .*elapsed \d+s\S+\n$/);
  const pcts = [...err.matchAll(/\] (\d+)%/g)].map((m) => Number(m[1]));
  assert.deepEqual(pcts, [...pcts].sort((x, y) => x - y));
  const plain = await cli('backup', 'create', '--instance', inst.id, '--name', 'plain', '--wait');
  const states = plain.err.trim().split('\n');
  assert.ok(states.length >= 1 && states.length <= 3, plain.err);
  assert.match(states[states.length - 1]!, /^backup \S+: COMPLETED$/);
  assert.equal(new Set(states).size, states.length); // one line per state, never repeated
});
