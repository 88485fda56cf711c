// Issue 23, items 2, 8, 9 and 10, as deployed: a real server, real agents, real CouchDB with COUCHDB_HOME
// (else the development engine), the `couchtrove` CLI as a user types it.
// - verify as a service: a good backup verifies ok; one corrupted object is named in verify_result; a
//   verifying schedule verifies what it takes;
// - /metrics names each instance (couchtrove_instance_status{instance_id,name,status});
// - the server logs one line per task that ends; CLI name lookups are no 404s; agents log no polling at info;
// - the tenant's CouchDB log after a minute of idle running holds no couchtrove polling.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, sandbox, api, waitStatus, type J, type RealServer } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { requestLineOf } from '../../src/agent/logs.js';

const { stateDir, track } = sandbox('couchtrove-verify-');
let server: RealServer;
/** Instance "va" (backups, a verifying schedule) and "vb" (left idle: its CouchDB log is read). */
let A = '';
let B = '';
let bActive = 0;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const cli = (...args: string[]): ReturnType<typeof runCli> => runCli([...args, '--api-url', server.url], { COUCHTROVE_API_URL: undefined });

before(async () => {
  server = track(await startServer(stateDir));
  const create = async (name: string): Promise<string> => {
    const r = await api(server.api, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'd1' }, { name: 'd2' }] } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return (r.json.instance as J).id as string;
  };
  [A, B] = await Promise.all([create('va'), create('vb')]);
  for (const id of [A, B]) assert.equal((await waitStatus(server.api, 'instances', id, ['ACTIVE', 'ERROR', 'FAILED'])).status, 'ACTIVE');
  bActive = Date.now();
});

/** The file of an instance's CouchDB log (under its instance directory, wherever the driver put it). */
function couchLogOf(id: string): string {
  const walk = (d: string): string | undefined => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isFile() && e.name === 'couchdb.log') return p;
      if (e.isDirectory() && !e.isSymbolicLink()) {
        const f = walk(p);
        if (f) return f;
      }
    }
    return undefined;
  };
  const f = walk(path.join(stateDir, 'instances', id));
  assert.ok(f, `no couchdb.log under the instance directory of ${id}`);
  return f;
}

const jsonLines = (text: string): J[] => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as J);

test('backup verify: a good backup verifies ok; a corrupted object is named; a verifying schedule', { timeout: 240_000 }, async () => {
  const made = await cli('backup', 'create', '--instance', 'va', '--name', 'vb1', '--wait', '--json');
  assert.equal(made.code, 0, made.stderr);
  const id = (JSON.parse(made.stdout) as { backup: J }).backup.id as string;

  const ok = await cli('backup', 'verify', 'vb1', '--wait', '--json');
  assert.equal(ok.code, 0, ok.stderr + ok.stdout);
  const good = (JSON.parse(ok.stdout) as { backup: J }).backup;
  assert.equal(good.verify_result, 'ok');
  assert.match(String(good.verified_at), /^\d{4}-\d\d-\d\dT/);
  const shown = await api(server.api, 'GET', `/backups/${id}`);
  assert.equal((shown.json.backup as J).verify_result, 'ok');
  const listed = await cli('backup', 'list', '--instance', 'va');
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /VERIFY_RESULT/);
  assert.match(listed.stdout.split('\n').find((l) => l.startsWith(id)) ?? '', /\bok\s*$/);

  // One byte of the backup's data object flipped in the repository: verify names the object.
  const data = path.join(stateDir, 'backups', 'backups', id, 'data');
  const bytes = fs.readFileSync(data);
  assert.ok(bytes.length > 64, `the data object ${data} holds ${bytes.length} bytes`);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  fs.writeFileSync(data, bytes);
  const bad = await cli('backup', 'verify', id, '--wait', '--json');
  assert.equal(bad.code, 1, `verify of a corrupted backup exits 1: ${bad.stderr}`);
  const result = String((JSON.parse(bad.stdout) as { backup: J }).backup.verify_result);
  assert.match(result, new RegExp(`^failed: .*object backups/${id}/data\\b`), result);
  assert.match((await cli('backup', 'show', 'vb1')).stdout, /verify_result\s+failed: /);

  // What cannot be verified is refused with the reason, nothing started.
  assert.equal((await api(server.api, 'POST', '/backups/no-such-backup/verify')).status, 404);

  // A verifying schedule (every minute): the last test of this file checks what it verified.
  const s = await cli('schedule', 'create', '--instance', 'va', '--name', 'minutely', '--pattern', '* * * * *', '--verify', '--json');
  assert.equal(s.code, 0, s.stderr);
  assert.equal((JSON.parse(s.stdout) as { schedule: J }).schedule.verify, true);
});

test("the tenant's CouchDB log after a minute idle: no couchtrove polling; metrics and logs name the instance", { timeout: 180_000 }, async () => {
  // A minute of idle running of vb, from when it turned ACTIVE.
  const wait = bActive + 62_000 - Date.now();
  if (wait > 0) await sleep(wait);
  const since = new Date(bActive).toISOString();
  const file = couchLogOf(B);
  const idle = fs.readFileSync(file, 'utf8').split('\n').filter((l) => (l.split(' ')[1] ?? '') >= since);
  const requests = idle.filter((l) => /^\[notice\] .* (GET|HEAD|PUT|POST|DELETE) \/\S* \d{3}\b/.test(l));
  // On disk (the operator's copy): no quota guard probes, no database polled, no config section by section.
  assert.deepEqual(requests.filter((l) => /couchtrove-quota| \/d[12]\b|_config\/\w/.test(l)), [], 'no per-database or per-section polling');
  // What is still asked: the managed settings watch's one request every 5 s (it also stands for /_up);
  // /_up itself only when that watch did not answer lately. Bounded: at most 2 a 5 s round, plus slack.
  const ours = requests.filter((l) => requestLineOf('couchtrove').test(l));
  const ups = requests.filter((l) => / GET \/_up /.test(l));
  assert.ok(ours.length + ups.length <= 2 * 13 + 2, `couchtrove's requests in a minute: ${ours.length} + ${ups.length} /_up:\n${[...ours, ...ups].join('\n')}`);
  console.log(`vb's CouchDB log over ${Math.round((Date.now() - bActive) / 1000)} s idle: ${requests.length} request lines, ${ours.length} by couchtrove, ${ups.length} GET /_up`);
  // What the tenant reads (the guest log API, as `couchtrove log tail` shows it): none of them, and the
  // tenant's own requests (here an anonymous one) all the same.
  const url = String(((await api(server.api, 'GET', `/instances/${B}`)).json.instance as J).couchdb_url);
  await (await fetch(`${url}/_all_dbs`)).text();
  await sleep(500);
  const tail = await cli('log', 'tail', 'vb', '--lines', '500');
  assert.equal(tail.code, 0, tail.stderr);
  const tenantLines = tail.stdout.split('\n');
  assert.ok(tenantLines.some((l) => /undefined GET \/_all_dbs \d{3} /.test(l)), `the tenant's own requests are kept:\n${tail.stdout.slice(-2000)}`);
  assert.deepEqual(tenantLines.filter((l) => requestLineOf('couchtrove').test(l)).slice(0, 5), [], "no couchtrove request line in the tenant's log");
  assert.deepEqual(tenantLines.filter((l) => /couchtrove-quota/.test(l)), []);

  // /metrics: one series per instance with its id, name and status.
  const m = await (await fetch(`${server.url}/metrics`)).text();
  // (va may be in BACKUP: its schedule runs every minute.)
  assert.match(m, new RegExp(`^couchtrove_instance_status\\{instance_id="${B}",name="vb",status="ACTIVE"\\} 1$`, 'm'));
  assert.match(m, new RegExp(`^couchtrove_instance_status\\{instance_id="${A}",name="va",status="(ACTIVE|BACKUP)"\\} 1$`, 'm'));

  // The server log: one line per task that ended, naming the instance; no 404 from the CLI's name lookups.
  const lines = jsonLines(server.log());
  const created = lines.filter((l) => l.task_id && /\(instance\.create\) of instance \S+ \(vb\) completed in \d+\.\d s$/.test(String(l.msg)));
  assert.equal(created.length, 1, 'one end line for the create of vb');
  assert.equal(created[0]!.instance_id, B);
  assert.equal(created[0]!.level, 30);
  const verified = lines.filter((l) => /\(backup\.verify\) of instance \S+ \(va\), backup \S+ \(vb1\) (completed|FAILED) in /.test(String(l.msg)));
  assert.deepEqual(verified.map((l) => l.level), [30, 50], 'the good verify at info, the failed one at error');
  assert.equal(verified[1]!.instance_id, A);
  const notFound = lines.filter((l) => l.msg === 'request' && l.status === 404);
  assert.deepEqual(notFound.map((l) => `${String(l.method)} ${String(l.path)}`), ['POST /v1.0/local/backups/no-such-backup/verify'], 'the only 404 is the one asked for');

  // The agent of the idle instance logs the control plane's polling of it (status, volume, archive, the
  // log read above) at debug, not at info.
  const agentInfo = jsonLines(fs.readFileSync(path.join(stateDir, 'instances', B, 'agent.log'), 'utf8'))
    .filter((l) => Number(l.level) >= 30 && String(l.time) > new Date(bActive + 2000).toISOString());
  assert.deepEqual(agentInfo.map((l) => String(l.msg)).filter((msg) => /^GET \/v1\//.test(msg)), [], 'no polling at info');
});

test('a verifying schedule verifies the backup it took; a dead agent or a deleted instance leaves no stale series', { timeout: 240_000 }, async () => {
  const end = Date.now() + 150_000;
  let verified: J | undefined;
  while (!verified && Date.now() < end) {
    const r = await api(server.api, 'GET', `/backups?instance_id=${A}`);
    verified = (r.json.backups as J[]).find((b) => String(b.name).startsWith('minutely ') && b.verify_result === 'ok');
    if (!verified) await sleep(1000);
  }
  assert.ok(verified, 'the scheduled backup was verified');
  const s = (await api(server.api, 'GET', `/instances/${A}/schedules`)).json.schedules as J[];
  assert.match(String(s[0]!.last_result), /COMPLETED; verifying /);

  // Archive gauges follow a live agent only: stopped (SIGSTOP: it holds its port, answers nothing), its
  // instance's series go once its last answer is older than max(3 health intervals, 15 s).
  const on = await api(server.api, 'POST', `/instances/${B}/action`, { archive: { enabled: true, interval: 5 } });
  assert.equal(on.status, 200, JSON.stringify(on.json));
  const behind = new RegExp(`^couchtrove_archive_behind\\{instance_id="${B}"\\} `, 'm');
  const scrape = async (): Promise<string> => (await fetch(`${server.url}/metrics`)).text();
  assert.match(await scrape(), behind);
  const pid = Number(fs.readFileSync(path.join(stateDir, 'instances', B, 'agent.pid'), 'utf8').trim());
  process.kill(pid, 'SIGSTOP');
  try {
    const until = Date.now() + 40_000;
    let m = await scrape();
    while (behind.test(m) && Date.now() < until) {
      await sleep(500);
      m = await scrape();
    }
    assert.doesNotMatch(m, behind, 'the archive gauges of an instance whose agent does not answer are dropped');
    assert.match(m, new RegExp(`couchtrove_instance_status\\{instance_id="${B}",name="vb",status="ERROR"\\} 1`));
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  assert.equal((await api(server.api, 'DELETE', `/instances/${B}`)).status, 202);
  const gone = Date.now() + 60_000;
  while ((await api(server.api, 'GET', `/instances/${B}`)).status !== 404 && Date.now() < gone) await sleep(500);
  const m = await (await fetch(`${server.url}/metrics`)).text();
  assert.doesNotMatch(m, new RegExp(`instance_id="${B}"`), 'no series of a deleted instance');
  assert.match(m, new RegExp(`couchtrove_instance_status\\{instance_id="${A}",name="va"`));
});
