// A cluster backup against backing up each member separately, and its restore into a new cluster (issue 27).
// A 3-member cluster on Apache CouchDB (COUCHDB_HOME), `n = 3`, `q = 2`, one database loaded with --mb MB of
// documents (random text: compression gains little); then one cluster backup (`POST /backups {"cluster"}`),
// then a backup of each member (`POST /backups {"instance"}`, the three at once), then the cluster backup
// restored into a new 3-member cluster (`POST /clusters` with `restorePoint`, from the request until task
// NONE: the members' creation included). Not a test: it writes its section of docs/benchmarks.md. Needs root
// (members run under their own uids). Usage:
//   npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/cluster-backup.js [--mb 100]
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { BIN, call, machine, serverUrl, writeSection, type J } from './lib.js';
import { couchAs } from '../test/support/cluster-load.js';
import { killUnder } from '../test/support/server.js';
import { processesOf } from '../src/compute/local.js';

const { values } = parseArgs({ options: { mb: { type: 'string', default: '100' } } });
const mb = Number(values.mb);
if (!process.env.COUCHDB_HOME) throw new Error('set COUCHDB_HOME to an Apache CouchDB 3.x release: the development engine cannot play a cluster');

async function until<T>(what: string, ms: number, f: () => Promise<T | null>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(200);
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-bench-cbackup-'));
fs.chmodSync(root, 0o711);
const proc = spawn(process.execPath, [BIN, 'server', '--port', '0', '--state-dir', path.join(root, 'state')], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, COUCHTROVE_HEALTH_INTERVAL: '1' } });
const uids: number[] = [];
const one = { flavorRef: '1', volume: { size: 4 } };
const out = { cluster: { seconds: 0, stored: 0, data: 0 }, members: { seconds: 0, stored: 0, data: 0 }, restore: { seconds: 0 }, loaded: 0 };
try {
  const base = `${await serverUrl(proc)}/v1.0/local`;
  const ready = async (id: string): Promise<J> => until(`cluster ${id} to be ready`, 900_000, async () => {
    const c = (await call(base, 'GET', `/clusters/${id}`)).json.cluster as J;
    if ((c.task as J).name === 'ERROR') throw new Error(JSON.stringify(c.fault));
    return (c.task as J).name === 'NONE' ? c : null;
  });
  const done = async (id: string): Promise<J> => until(`backup ${id}`, 900_000, async () => {
    const b = (await call(base, 'GET', `/backups/${id}`)).json.backup as J;
    if (b.status === 'FAILED') throw new Error(JSON.stringify(b.fail_reason));
    return b.status === 'COMPLETED' ? b : null;
  });
  const made = (await call(base, 'POST', '/clusters', { cluster: { name: 'bench', datastore: { type: 'couchdb' }, instances: [one, one, one] } })).json.cluster as J;
  const cluster = await ready(made.id as string);
  const members = cluster.instances as J[];
  for (const m of [...members]) uids.push((JSON.parse(fs.readFileSync(path.join(root, 'state', 'instances', m.id as string, 'placement.json'), 'utf8')) as { uid: number }).uid);
  const pw = ((await call(base, 'POST', `/clusters/${String(made.id)}/root`, {})).json.user as J).password as string;
  const couch = couchAs(`Basic ${Buffer.from(`root:${pw}`).toString('base64')}`);
  const url = members[0]!.couchdb_url as string;
  if ((await couch(url, 'PUT', '/bench')).status !== 201) throw new Error('cannot create the database');
  // 4 KiB of random text per document, 256 per request.
  for (let n = 0; out.loaded < mb * 2 ** 20; n++) {
    const docs = Array.from({ length: 256 }, (_, i) => ({ _id: `d${n}-${i}`, text: randomBytes(3072).toString('base64') }));
    const r = await couch(url, 'POST', '/bench/_bulk_docs', { docs });
    if (r.status !== 201) throw new Error(`bulk write answered ${r.status}`);
    out.loaded += 256 * 4096;
  }
  let t = Date.now();
  const cb = await done(((await call(base, 'POST', '/backups', { backup: { name: 'cb', cluster: made.id } })).json.backup as J).id as string);
  out.cluster = { seconds: (Date.now() - t) / 1000, stored: cb.size_bytes as number, data: cb.data_bytes as number };
  t = Date.now();
  const each = await Promise.all(members.map(async (m, i) => (await call(base, 'POST', '/backups', { backup: { name: `m${i + 1}`, instance: m.id } })).json.backup as J));
  const ends = await Promise.all(each.map((b) => done(b.id as string)));
  out.members = { seconds: (Date.now() - t) / 1000, stored: ends.reduce((n, b) => n + (b.size_bytes as number), 0), data: ends.reduce((n, b) => n + (b.data_bytes as number), 0) };
  t = Date.now();
  const c2 = (await call(base, 'POST', '/clusters', { cluster: { name: 'restored', datastore: { type: 'couchdb' }, instances: [one, one, one], restorePoint: { backupRef: cb.id } } })).json.cluster as J;
  if (!c2.id) throw new Error(`restore refused: ${JSON.stringify(c2)}`);
  const restored = await ready(c2.id as string);
  out.restore = { seconds: (Date.now() - t) / 1000 };
  for (const m of restored.instances as J[]) uids.push((JSON.parse(fs.readFileSync(path.join(root, 'state', 'instances', m.id as string, 'placement.json'), 'utf8')) as { uid: number }).uid);
  console.error(JSON.stringify(out));
} finally {
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  // The agents (root) and the members' CouchDBs (their uids) go with the server's state directory.
  killUnder(root);
  for (const u of uids) for (const pid of processesOf(u)) process.kill(pid, 'SIGKILL');
  fs.rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 500 });
}

const MiB = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
const load = os.loadavg().map((l) => l.toFixed(1)).join(', ');
await writeSection('cluster-backup', `
## A cluster backup against backing up each member (issue 27)

3 members, local driver, Apache CouchDB 3.5.0 (\`n = 3\`, \`q = 2\`), one database of ${MiB(out.loaded)} of
documents (4 KiB of random text each, so compression gains little), ${new Date().toISOString().slice(0, 10)}:

| | time | shard bytes read | bytes stored |
| --- | --- | --- | --- |
| one cluster backup (\`backup create --cluster\`: one copy of each range) | ${out.cluster.seconds.toFixed(1)} s | ${MiB(out.cluster.data)} | **${MiB(out.cluster.stored)}** |
| a backup of each of the 3 members (the three at once) | ${out.members.seconds.toFixed(1)} s | ${MiB(out.members.data)} | ${MiB(out.members.stored)} |
| the cluster backup restored into a new 3-member cluster (request → task \`NONE\`, members' creation included) | ${out.restore.seconds.toFixed(1)} s | | |

The cluster backup stores one copy of each range (a third of what the three member backups store); its
time includes what the member backups do not do: internal replication asked to push and waited for until
idle, the shard maps and every member's copy counts read (docs/cluster.md, "Cluster backups").
Machine: ${machine()}; load average at the end ${load} (the machine is shared with other work running in
parallel: every figure is slower than on an idle machine). Command: \`npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/cluster-backup.js --mb ${mb}\`.
`);
console.error('wrote docs/benchmarks.md');
