// How long a killed cluster member takes to catch up after it returns (issue 27), with a writer writing
// through the two other members. A 3-member cluster on Apache CouchDB (COUCHDB_HOME), `n = 3`, `q = 2`;
// each run kills member 2's CouchDB (kill -9 of its Erlang VM) while the writer writes, and measures: until
// its agent has it answering again (the writer stops then), and from then until its own shard files hold
// every document acknowledged
// (node-local `_all_docs` of each shard file through member 2). Not a test: it writes its section of
// docs/benchmarks.md. Needs root (members run under their own uids). Usage:
//   npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/cluster-catchup.js [--runs 3] [--rate 200] [--loops 32] [--down 10]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { BIN, call, machine, median, serverUrl, writeSection, type J } from './lib.js';
import { beamOf, couchAs, localIds, startWriter } from '../test/support/cluster-load.js';
import { processesOf } from '../src/compute/local.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, rate: { type: 'string', default: '200' }, loops: { type: 'string', default: '32' }, down: { type: 'string', default: '10' } } });
const runs = Number(values.runs);
const rate = Number(values.rate);
const loops = Number(values.loops);
/** Seconds of writing before the kill. */
const downFor = Number(values.down);
if (!process.env.COUCHDB_HOME) throw new Error('set COUCHDB_HOME to an Apache CouchDB 3.x release: the development engine cannot play a cluster');

async function until<T>(what: string, ms: number, f: () => Promise<T | null>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(100);
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-bench-catchup-'));
fs.chmodSync(root, 0o711);
const proc = spawn(process.execPath, [BIN, 'server', '--port', '0', '--state-dir', path.join(root, 'state')], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, COUCHTROVE_HEALTH_INTERVAL: '1' } });
const uids: number[] = [];
interface Member { url: string; uid: number }
interface Run { writesPerSecond: number; writtenWhileDown: number; backSeconds: number; catchUpSeconds: number }
const results: Run[] = [];
try {
  const base = `${await serverUrl(proc)}/v1.0/local`;
  const one = { flavorRef: '1', volume: { size: 1 } };
  const id = ((await call(base, 'POST', '/clusters', { cluster: { name: 'bench', datastore: { type: 'couchdb' }, instances: [one, one, one] } })).json.cluster as J).id as string;
  const cluster = await until('the cluster to be ready', 600_000, async () => {
    const c = (await call(base, 'GET', `/clusters/${id}`)).json.cluster as J;
    if ((c.task as J).name === 'ERROR') throw new Error(JSON.stringify(c.fault));
    return (c.task as J).name === 'NONE' ? c : null;
  });
  const members: Member[] = (cluster.instances as J[]).map((m) => ({ url: m.couchdb_url as string, uid: (JSON.parse(fs.readFileSync(path.join(root, 'state', 'instances', m.id as string, 'placement.json'), 'utf8')) as { uid: number }).uid }));
  uids.push(...members.map((m) => m.uid));
  const pw = ((await call(base, 'POST', `/clusters/${id}/root`, {})).json.user as J).password as string;
  const couch = couchAs(`Basic ${Buffer.from(`root:${pw}`).toString('base64')}`);
  const [m1, m2, m3] = members as [Member, Member, Member];
  if ((await couch(m1.url, 'PUT', '/orders')).status !== 201) throw new Error('cannot create the database');
  const written = new Set<string>();
  for (let run = 0; run < runs; run++) {
    const writer = startWriter(couch, `run${run}`, [m1.url, m3.url], { db: 'orders', rate, loops, failover: false, readBack: false }, written);
    await sleep(downFor * 1000);
    const beam = beamOf(m2.uid);
    if (!beam) throw new Error('member 2 runs no CouchDB');
    const before = written.size;
    process.kill(beam, 'SIGKILL');
    const killedAt = Date.now();
    const backAt = await until('member 2 to answer again', 120_000, async () => ((await fetch(`${m2.url}/_up`)).ok ? Date.now() : null));
    const writtenWhileDown = written.size - before;
    const report = await writer.stop();
    if (report.failures.length > 0) throw new Error(`writes failed: ${report.failures.slice(0, 5).join('; ')}`);
    const caughtAt = await until('member 2 to hold every document', 300_000, async () => {
      const { ids } = await localIds(couch, m2.url, 'orders');
      return [...written].every((d) => ids.has(d)) ? Date.now() : null;
    });
    const r: Run = { writesPerSecond: report.perSecond, writtenWhileDown, backSeconds: (backAt - killedAt) / 1000, catchUpSeconds: (caughtAt - backAt) / 1000 };
    results.push(r);
    console.error(`run ${run + 1}: ${r.writesPerSecond.toFixed(0)} writes/s, ${r.writtenWhileDown} documents written while member 2 was down, back after ${r.backSeconds.toFixed(1)} s, caught up ${r.catchUpSeconds.toFixed(1)} s later`);
  }
  await call(base, 'DELETE', `/clusters/${id}`);
  await until('the cluster to be deleted', 300_000, async () => ((await call(base, 'GET', `/clusters/${id}`)).status === 404 ? true : null));
} finally {
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  for (const u of uids) for (const pid of processesOf(u)) process.kill(pid, 'SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
}

const load = os.loadavg().map((l) => l.toFixed(1)).join(', ');
await writeSection('cluster-catchup', `
## A killed cluster member catching up (issue 27)

3 members, local driver, Apache CouchDB 3.5.0 (\`n = 3\`, \`q = 2\`), a writer PUTting new documents through
members 1 and 3 (${loops} at once, at most ${rate}/s in all); member 2's CouchDB killed (\`kill -9\` of its Erlang
VM) after ${downFor} s of writing; its agent starts it again; **catch-up** is the time from member 2 answering
\`/_up\` again until its own shard files hold every document the writer had acknowledged (node-local
\`_all_docs\` of each shard file through member 2). Medians of ${runs} runs, one after the other on the same
cluster, ${new Date().toISOString().slice(0, 10)}:

| writes/s reached | documents written while member 2 was down | kill → answering again | answering → caught up |
| --- | --- | --- | --- |
| ${median(results.map((r) => r.writesPerSecond)).toFixed(0)} | ${median(results.map((r) => r.writtenWhileDown))} | ${median(results.map((r) => r.backSeconds)).toFixed(1)} s | **${median(results.map((r) => r.catchUpSeconds)).toFixed(1)} s** |

Runs: ${results.map((r) => `${r.writesPerSecond.toFixed(0)}/s, ${r.writtenWhileDown} docs, ${r.backSeconds.toFixed(1)} s, ${r.catchUpSeconds.toFixed(1)} s`).join('; ')}.
Machine: ${machine()}; load average at the end ${load} (the machine is shared with other work running in
parallel: the writer reaches less than its target when the cores are busy, and every figure here is slower
than on an idle machine). Command: \`npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/cluster-catchup.js --runs ${runs} --rate ${rate} --loops ${loops} --down ${downFor}\`.
`);
console.error('wrote docs/benchmarks.md');
