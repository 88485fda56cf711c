// Recovery as an operator does it under pressure (issue 23, items 1 and 3), end to end with a real server,
// real agents and the development engine (or Apache CouchDB with COUCHDB_HOME), through the couchtrove CLI as
// a user types it: an archived instance that is broken (SHUTDOWN) still shows its window; `database restore
// --to-time now`; delete says what it keeps; `instance list --deleted`; `instance create --from-instance
// <deleted name> --restore-time latest|<typed time>` holding exactly the documents written before it, with
// `restored_from`; bad times refused naming the forms; another project's instance as missing as none.
// Then eject of a replica source that hangs (SIGSTOP: a black-holed host) succeeds and names when it was
// last seen.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../../src/agent/client.js';
import { sandbox, basicAuth, startServer, api, waitStatus, processesUnder, within, type J, type RealServer } from '../support/server.js';
import { runCli } from '../support/cli.js';

const { stateDir, track } = sandbox('couchtrove-recovery-');
const OTHER_TOKEN = 'other-project-token-0123456789';
let server: RealServer;
let base = '';
let env: NodeJS.ProcessEnv = {};
const auth = basicAuth('alice', 's3cret-pw');
const stopped: number[] = [];
// A test that fails half way must not leave a stopped process behind: it would never be reaped by SIGKILL alone.
after(() => {
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
});

async function started(): Promise<void> {
  if (base) return;
  // A fast health monitor: SHUTDOWN is seen within seconds. A second project proves isolation.
  server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '1', COUCHTROVE_TOKENS: `other:${OTHER_TOKEN}` }));
  base = server.api;
  env = { COUCHTROVE_API_URL: server.url, COUCHTROVE_TOKEN: 'notused' };
}

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(args, env);
}
async function cliJson<T = J>(...args: string[]): Promise<T> {
  const r = await cli(...args, '--json');
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}
async function bulk(url: string, ids: string[]): Promise<void> {
  const r = await fetch(`${url}/orders/_bulk_docs`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs: ids.map((_id) => ({ _id })) }) });
  assert.equal(r.status, 201, await r.text());
}
async function ids(url: string, db = 'orders'): Promise<string[]> {
  const r = await fetch(`${url}/${db}/_all_docs`, { headers: { authorization: auth } });
  assert.equal(r.status, 200, `${url}/${db}`);
  return ((await r.json()) as { rows: { id: string }[] }).rows.map((x) => x.id).filter((d) => !d.startsWith('_design/')).sort();
}
const show = async (id: string): Promise<J> => (await api(base, 'GET', `/instances/${id}`)).json.instance as J;
/** Waits for the archive's newest restore point to pass t (ms); returns it. */
async function restorePointAfter(id: string, t: number): Promise<number> {
  return within(`a restore point after ${new Date(t).toISOString()}`, 30_000, async () => {
    const a = (await show(id)).archive as J | undefined;
    const rp = typeof a?.restore_point === 'string' ? Date.parse(a.restore_point) : 0;
    await sleep(200);
    return rp > t ? rp : null;
  });
}
/** "2026-12-07 04:01:49.123": the form people type, without a zone (UTC). */
const typed = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

test('recover an instance to a time: broken, then deleted; --restore-time latest and a typed time; restored_from', { timeout: 300_000 }, async () => {
  await started();
  const c = await api(base, 'POST', '/instances', {
    instance: { name: 'rec', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 's3cret-pw', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  const url = inst.couchdb_url as string;
  assert.equal((await cli('instance', 'archive', 'rec', '--on', '--interval', '1')).code, 0);

  await bulk(url, ['a1', 'a2', 'a3']);
  // The development engine (LevelDB) settles before it may be copied; CouchDB's files need no pause.
  await sleep(1500);
  const T = await restorePointAfter(id, Date.now());
  await sleep(1200);
  await bulk(url, ['b1', 'b2']);
  await sleep(1500);
  await restorePointAfter(id, Date.now());

  // "now" is the newest restore point (it failed before: "after the newest restore point").
  const now = (await cliJson<{ restore: J }>('database', 'restore', '--instance', 'rec', '--database', 'orders', '--to-time', 'now', '--as', 'orders_now')).restore;
  assert.deepEqual(await ids(url, 'orders_now'), ['a1', 'a2', 'a3', 'b1', 'b2']);
  const nowFrom = now.restored_from as J;
  assert.equal(nowFrom.requested_time, 'latest');
  assert.match(nowFrom.cut as string, /^c-\d{13}-[bi]$/);
  assert.match(nowFrom.base_backup as string, /^c-\d{13}-b$/);
  assert.ok(Date.parse(nowFrom.cut_time as string) > T, JSON.stringify(nowFrom));
  const text = await cli('database', 'restore', '--instance', 'rec', '--database', 'orders', '--to-time', 'latest', '--as', 'orders_latest');
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /restored from: archive cut c-\d+-[bi], data as of \d{4}-.*Z, base backup c-\d+-b; asked: latest/);

  // Times people type are taken; a bad one is refused naming the forms, by the CLI and by the API.
  const badCli = await cli('database', 'restore', '--instance', 'rec', '--database', 'orders', '--to-time', 'yesterday', '--as', 'x');
  assert.equal(badCli.code, 2, badCli.stderr);
  assert.match(badCli.stderr, /"latest" or "now".*2026-12-07 04:01:49.*no zone: UTC/);
  const badApi = await api(base, 'POST', '/instances', { instance: { name: 'bad', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: id, restoreTime: '07/12/2026 4pm' } } });
  assert.equal(badApi.status, 400, JSON.stringify(badApi.json));
  assert.match(JSON.stringify(badApi.json), /"restoreTime\\" must be one of .*latest.*2026-12-07T04:01:49Z/);
  const feb30 = await api(base, 'POST', `/instances/${id}/databases/orders/restore`, { restore: { restore_time: '2026-02-30 10:00:00', as: 'x' } });
  assert.equal(feb30.status, 400, JSON.stringify(feb30.json));

  // A replica of another project's instance: the same 404 as a missing one (issue 26), nothing created.
  const other = `${server.url}/v1.0/other`;
  const noSource = await api(other, 'POST', '/instances', { instance: { name: 'spy', replica_of: '00000000-0000-4000-8000-000000000000' } }, OTHER_TOKEN);
  const spy = await api(other, 'POST', '/instances', { instance: { name: 'spy', replica_of: id } }, OTHER_TOKEN);
  assert.equal(spy.status, 404, JSON.stringify(spy.json));
  assert.equal(JSON.stringify(spy.json).replace(id, 'X'), JSON.stringify(noSource.json).replace('00000000-0000-4000-8000-000000000000', 'X'));
  assert.deepEqual((await api(other, 'GET', '/instances', undefined, OTHER_TOKEN)).json.instances, []);

  // Broken: CouchDB stopped, the instance turns SHUTDOWN; show still gives the archive's window, from the repository.
  const dir = path.join(stateDir, 'instances', id);
  const placement = JSON.parse(fs.readFileSync(path.join(dir, 'placement.json'), 'utf8')) as { agentPort: number };
  await new AgentClient(`http://127.0.0.1:${placement.agentPort}`, fs.readFileSync(path.join(dir, 'agent.token'), 'utf8').trim()).stop();
  await waitStatus(base, 'instances', id, ['SHUTDOWN'], 30_000);
  const broken = (await show(id)).archive as J;
  assert.equal(broken.read_from, 'repository', JSON.stringify(broken));
  const bw = broken.window as J;
  assert.ok(Date.parse(bw.from as string) <= T && Date.parse(bw.to as string) > T, JSON.stringify(broken));

  // Deleted: the answer says what is kept and until when; list --deleted shows it with its window.
  const del = await cli('instance', 'delete', 'rec', '--wait');
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleted: its archive \(restorable .* \.\. .*\) is kept 7 days, until \d{4}-.*--from-instance/);
  const listed = (await cliJson<{ instances: J[] }>('instance', 'list', '--deleted')).instances;
  const gone = listed.find((d) => d.id === id);
  assert.ok(gone, JSON.stringify(listed));
  assert.equal(gone.name, 'rec');
  const window = gone.restorable as J;
  assert.ok(Date.parse(window.from as string) <= T && Date.parse(window.to as string) > T, JSON.stringify(gone));
  const expires = Date.parse(window.expires as string);
  assert.ok(Math.abs(expires - (Date.parse(gone.deleted as string) + 7 * 86_400_000)) < 1000, JSON.stringify(gone));
  const table = await cli('instance', 'list', '--deleted');
  console.log(`${del.stdout}${table.stdout}`);
  assert.match(table.stdout, new RegExp(`${id} +rec +\\S+ +\\S+ \\.\\. \\S+ +archive \\d{4}-`));
  assert.doesNotMatch((await cli('instance', 'list')).stdout, new RegExp(id), 'a deleted instance is not in the live listing');

  // Another project sees nothing of it: by id or name, the same 404 as an instance that never was.
  const missing = await api(other, 'POST', '/instances', { instance: { name: 'steal', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: '00000000-0000-4000-8000-000000000000' } } }, OTHER_TOKEN);
  for (const ref of [id, 'rec']) {
    const r = await api(other, 'POST', '/instances', { instance: { name: 'steal', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: ref, restoreTime: 'latest' } } }, OTHER_TOKEN);
    assert.equal(r.status, 404, JSON.stringify(r.json));
    assert.equal(JSON.stringify(r.json).replace(ref, 'X'), JSON.stringify(missing.json).replace('00000000-0000-4000-8000-000000000000', 'X'));
  }
  assert.deepEqual((await api(other, 'GET', '/instances?deleted=true', undefined, OTHER_TOKEN)).json.instances, []);

  // Back from the deleted instance, by its name: latest holds everything; the typed time only what came before it.
  const latest = (await cliJson<{ instance: J }>('instance', 'create', '--name', 'rec-latest', '--flavor', '1', '--size', '1', '--from-instance', 'rec', '--restore-time', 'latest', '--wait')).instance;
  assert.equal(latest.status, 'ACTIVE', JSON.stringify(latest));
  assert.deepEqual(await ids(latest.couchdb_url as string), ['a1', 'a2', 'a3', 'b1', 'b2']);
  const lf = latest.restored_from as J;
  assert.equal(lf.instance_id, id);
  assert.equal(lf.instance_name, 'rec');
  assert.equal(lf.instance_deleted, gone.deleted);
  assert.equal(lf.from, 'archive');
  assert.match(lf.base_backup as string, /^c-\d{13}-b$/);

  const then = (await cliJson<{ instance: J }>('instance', 'create', '--name', 'rec-then', '--flavor', '1', '--size', '1', '--from-instance', 'rec', '--restore-time', typed(T), '--wait')).instance;
  assert.equal(then.status, 'ACTIVE', JSON.stringify(then));
  assert.deepEqual(await ids(then.couchdb_url as string), ['a1', 'a2', 'a3'], 'the data of T, without what was written after');
  const tf = then.restored_from as J;
  assert.equal(tf.requested_time, new Date(T).toISOString());
  assert.match(tf.time_zone_note as string, /UTC/);
  assert.ok(Date.parse(tf.cut_time as string) <= T, JSON.stringify(tf));
  const shown = await cli('instance', 'show', 'rec-then');
  console.log(shown.stdout.split('\n').filter((l) => l.startsWith('restored_from')).join('\n'));
  assert.match(shown.stdout, new RegExp(`restored_from +archive cut c-\\d+-[bi] of rec \\(${id}, deleted .*\\), data as of .*Z, base backup c-\\d+-b; asked: .*\\(no zone was given: read as UTC\\)`));

  // A time outside the window: 422 naming the window, nothing created.
  const early = await cli('instance', 'create', '--name', 'too-early', '--flavor', '1', '--size', '1', '--from-instance', id, '--restore-time', '2000-01-01T00:00:00Z');
  assert.equal(early.code, 1);
  assert.match(early.stderr, /before the oldest restore point.*HTTP 422/);
  for (const n of ['rec-latest', 'rec-then']) assert.equal((await cli('instance', 'delete', n)).code, 0);
});

test('eject a replica source that hangs (SIGSTOP): it counts as gone, the answer names when it was last seen', { timeout: 240_000 }, async () => {
  await started();
  const make = async (name: string, extra: J): Promise<J> => {
    const r = await api(base, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, ...extra } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const i = await waitStatus(base, 'instances', (r.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
    assert.equal(i.status, 'ACTIVE', JSON.stringify(i));
    return i;
  };
  const src = await make('ej-src', { databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 's3cret-pw', databases: [{ name: 'orders' }] }] });
  await bulk(src.couchdb_url as string, ['s1', 's2']);
  const rep = await make('ej-rep', { replica_of: src.id });
  await within('the replica has the documents', 30_000, async () => ((await ids(rep.couchdb_url as string)).length === 2 ? true : null));
  // A source that answers is not ejected (and this is when it was last seen).
  const refused = await cli('instance', 'eject', 'ej-src');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /cannot be ejected: it is ACTIVE and its CouchDB answers/);
  const seenBefore = Date.now();

  // A black-holed host: every process of the source stopped, not dead (connections are taken, never answered).
  const pids = processesUnder(path.join(stateDir, 'instances', src.id as string));
  assert.ok(pids.length >= 2, `the source's agent and CouchDB: ${pids.join(', ')}`);
  for (const pid of pids) {
    process.kill(pid, 'SIGSTOP');
    stopped.push(pid);
  }
  // A health round may still have seen it answer up to here (an answer on its way is stamped when it lands).
  const stoppedAt = Date.now() + 1000;
  try {
    const t0 = Date.now();
    const ej = await cli('instance', 'eject', 'ej-src', '--wait', '--json');
    assert.equal(ej.code, 0, ej.stderr + ej.stdout);
    console.log(ej.stderr.split('\n').filter((l) => l.startsWith('ejecting')).join('\n'));
    const m = /ejecting .*: it does not answer: .*; last seen (\S+)/.exec(ej.stderr);
    assert.ok(m, ej.stderr);
    assert.ok(Date.parse(m[1]!) <= stoppedAt && Date.parse(m[1]!) > seenBefore - 60_000, `last seen ${m[1]}, stopped by ${new Date(stoppedAt).toISOString()}`);
    const after = (JSON.parse(ej.stdout) as { instance: J }).instance;
    assert.match((after.fault as J).message as string, new RegExp(`ejected from its replication set \\(it does not answer: .*; last seen ${m[1]!.replace(/[.]/g, '\\.')}\\): instance ${String(rep.id)} is the new replica source`));
    const promoted = await waitStatus(base, 'instances', rep.id as string, ['ACTIVE', 'ERROR']);
    assert.equal(promoted.status, 'ACTIVE', JSON.stringify(promoted));
    assert.equal(promoted.replica_of, undefined);
    console.log(`eject of a stopped source: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // The new source takes writes.
    const w = await fetch(`${String(rep.couchdb_url)}/orders/after-eject`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(w.status, 201, await w.text());
  } finally {
    for (const pid of stopped.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
  }
  for (const n of ['ej-rep', 'ej-src']) assert.equal((await cli('instance', 'delete', n)).code, 0);
});
