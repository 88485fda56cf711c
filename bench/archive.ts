// Continuous archiving and point-in-time restore (issue 17). Three parts, written to docs/benchmarks.md:
//  A. archiving cost under a steady write load on a real CouchDB (COUCHDB_HOME): `couchtrove agent archive`
//     in its own process (its CPU time from /proc), bytes stored against bytes CouchDB wrote;
//  B. restore to a point N cuts after the base against a full restore of the same data (engine only);
//  C. one ~DB_MB MB database back (scratch CouchDB + replication) against restoring the whole backup.
// Usage: npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/archive.js [--minutes 2] [--cuts 1000]
//        [--base-mb 200] [--db-mb 100] [--work DIR]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { benchKey, BIN, buildDatadir, cutChain, dirBytes, machine, ROOT, startInstance, stopInstances, writeSection, type Started } from './lib.js';
import { instanceFiles } from '../src/agent/agent.js';
import { restoreToTime } from '../src/backup/archive.js';
import { createBackup, restoreBackup } from '../src/backup/index.js';
import { readKeyFile } from '../src/crypto/keys.js';
import { openStorage } from '../src/storage/index.js';
import { testCouchdb } from '../test/support/couchdb.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    cuts: { type: 'string', default: '1000' },
    'base-mb': { type: 'string', default: '200' },
    'db-mb': { type: 'string', default: '100' },
    'b-mb': { type: 'string', default: '1024' },
    work: { type: 'string', default: path.join(ROOT, 'bench/work') },
  },
});
const minutes = Number(values.minutes);
const cutsWanted = Number(values.cuts);
const baseMb = Number(values['base-mb']);
const dbMb = Number(values['db-mb']);
const bMb = Number(values['b-mb']);
const work = path.resolve(values.work!, 'archive');
await fs.rm(work, { recursive: true, force: true });
await fs.mkdir(work, { recursive: true });
const keyFile = await benchKey(path.join(work, 'bench.key'));
const key = await readKeyFile(keyFile);
const couch = testCouchdb();
if (couch.kind !== 'real') throw new Error('set COUCHDB_HOME to an Apache CouchDB 3.x release: parts A and C need a real CouchDB');
const started = new Date().toISOString();
const running: Started = { agents: [], pids: [] };
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const instance = (name: string) => startInstance(work, name, couch, running);

async function fill(url: string, auth: string, db: string, mb: number, docBytes = 10_000): Promise<number> {
  await fetch(`${url}/${db}`, { method: 'PUT', headers: { authorization: auth } });
  const perBatch = 200;
  const batches = Math.ceil((mb * 1e6) / docBytes / perBatch);
  let n = 0;
  for (let b = 0; b < batches; b++) {
    const docs = Array.from({ length: perBatch }, () => ({ _id: `d${String(n++).padStart(8, '0')}`, pad: randomBytes(docBytes / 2).toString('hex') }));
    const r = await fetch(`${url}/${db}/_bulk_docs`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs }) });
    if (r.status !== 201) throw new Error(`bulk: ${r.status} ${await r.text()}`);
    await r.arrayBuffer();
  }
  return n;
}

/** Bytes the process and its descendants wrote to storage (/proc/PID/io write_bytes): what CouchDB wrote, compactions included. */
async function writeBytesOf(pid: number): Promise<number> {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    const kids = await fs.readFile(`/proc/${all[i]}/task/${all[i]}/children`, 'utf8').catch(() => '');
    for (const k of kids.trim().split(/\s+/).filter(Boolean)) all.push(Number(k));
  }
  let n = 0;
  for (const p of all) {
    const io = await fs.readFile(`/proc/${p}/io`, 'utf8').catch(() => '');
    n += Number(/write_bytes: (\d+)/.exec(io)?.[1] ?? 0);
  }
  return n;
}

function cpuSecondsOf(pid: number): Promise<number> {
  return fs.readFile(`/proc/${pid}/stat`, 'utf8').then((s) => {
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (100 per second)
  });
}

try {
  // ---- A. archiving cost under load ---------------------------------------------------------------
  const src = await instance('src');
  const filled = await fill(src.url, src.auth, 'base', baseMb);
  const repoA = path.join(work, 'repo-a');
  const before = await dirBytes(src.dataDir);
  const admin = JSON.parse(await fs.readFile(instanceFiles(src.settings).secret, 'utf8')) as { username: string; password: string };
  const proc = spawn(process.execPath, [BIN, 'agent', 'archive', '--data-dir', src.dataDir, '--storage', `file://${repoA}`, '--stream', 'src', '--key-file', keyFile, '--couchdb-url', src.url, '--interval', '5'], {
    env: { ...process.env, COUCHDB_USER: admin.username, COUCHDB_PASSWORD: admin.password },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await sleep(8000); // the base
  const baseStored = await dirBytes(repoA);
  const cpu0 = await cpuSecondsOf(proc.pid!);
  const disk0 = await dirBytes(src.dataDir);
  const io0 = await writeBytesOf(src.agent.couchdbPid!);
  const t0 = Date.now();
  let writes = 0;
  let stop = false;
  const loop = async () => {
    while (!stop) {
      const docs = Array.from({ length: 5 }, () => ({ v: randomBytes(100).toString('hex') }));
      const r = await fetch(`${src.url}/load/_bulk_docs`, { method: 'POST', headers: { authorization: src.auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs }) });
      await r.arrayBuffer();
      if (r.status === 201) writes += 5;
      else if (r.status === 404) await fetch(`${src.url}/load`, { method: 'PUT', headers: { authorization: src.auth } });
    }
  };
  const loops = Array.from({ length: 4 }, loop);
  await sleep(minutes * 60_000);
  stop = true;
  await Promise.all(loops);
  const wall = (Date.now() - t0) / 1000;
  await sleep(6000); // the last cut
  const cpu = (await cpuSecondsOf(proc.pid!)) - cpu0;
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  const written = (await dirBytes(src.dataDir)) - disk0;
  const ioWritten = (await writeBytesOf(src.agent.couchdbPid!)) - io0;
  const stored = (await dirBytes(repoA)) - baseStored;
  const perHour = (x: number) => (x * 3600) / wall;
  const a = {
    dataMiB: before / 2 ** 20, filled, wall, writes, rate: writes / wall, cpu, cpuShare: cpu / (wall + 6), written, ioWritten, stored, baseStored,
  };
  console.log('A', JSON.stringify(a));

  // ---- C. one database back against the whole restore ---------------------------------------------
  await fill(src.url, src.auth, 'shop', dbMb);
  const repoC = `file://${path.join(work, 'repo-c')}`;
  await src.agent.backup({ storage: repoC, id: 'whole', keyFile });
  const wholeBytes = await dirBytes(src.dataDir);
  const tWhole = performance.now();
  const whole = await instance('whole-restore').catch((err: Error) => {
    throw err;
  });
  void whole;
  // `instance()` prepared an empty one; prepare it again from the backup: restore, start, check.
  const wholeSettings = { ...whole.settings, restore: { storage: repoC, backupId: 'whole', keyFile } };
  const t1 = performance.now();
  const st = await whole.agent.prepare(wholeSettings);
  if (st.state !== 'RUNNING') throw new Error(`whole restore: ${st.reason ?? st.state}`);
  const wholeSeconds = (performance.now() - t1) / 1000;
  void tWhole;
  const one = await src.agent.restoreDatabase({ database: 'shop', storage: repoC, keyFile, backupId: 'whole', as: 'shop_restored' });
  const shopInfo = (await (await fetch(`${src.url}/shop`, { headers: { authorization: src.auth } })).json()) as { sizes: { file: number; external: number } };
  console.log('C', JSON.stringify({ wholeSeconds, one, shopInfo }));

  // ---- B. restore N cuts after the base against a full restore ------------------------------------
  const dataB = path.join(work, 'datadir-b');
  const totalB = await buildDatadir(dataB, bMb * 2 ** 20);
  const storageB = await openStorage(`file://${path.join(work, 'repo-b')}`);
  const { stream, appended: appendedB, seconds: cutsSeconds } = await cutChain(storageB, key, dataB, cutsWanted);
  const pitrDir = path.join(work, 'restore-pitr');
  const tp = performance.now();
  await restoreToTime({ storage: storageB, stream: 'b', time: stream.head.restorePoint!, dataDir: pitrDir, key });
  const pitrSeconds = (performance.now() - tp) / 1000;
  const full = await createBackup({ dataDir: dataB, storage: storageB, key, id: 'full-b' });
  const fullDir = path.join(work, 'restore-full');
  execFileSync('sync');
  const tf = performance.now();
  await restoreBackup({ storage: storageB, id: 'full-b', dataDir: fullDir, key });
  const fullSeconds = (performance.now() - tf) / 1000;
  const same = execFileSync('bash', ['-c', `diff -r ${pitrDir} ${fullDir} >/dev/null && echo same || echo differ`], { encoding: 'utf8' }).trim();
  await storageB.close();
  console.log('B', JSON.stringify({ totalB, pitrSeconds, fullSeconds, cutsSeconds, same, fullSize: full.size }));

  const date = started.slice(0, 10);
  await writeSection(
    'archive',
    `## Continuous archiving and point-in-time restore (issue 17)

Measured ${date} on ${machine()} (Debian 12, shared with other work: the load average was 6-12 during the runs).
Command: \`npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/archive.js --minutes ${minutes} --cuts ${cutsWanted} --base-mb ${baseMb} --db-mb ${dbMb} --b-mb ${bMb}\`
(bench/archive.ts). Real Apache CouchDB 3.5.0 for A and C; encrypted (generated key), zstd-1, \`file://\` repository on the same disk.
**Scaled down** to fit the time available: a ${mib(a.dataMiB * 2 ** 20)} data directory instead of 1 GiB, ${minutes} minutes of load instead of an hour (per-hour figures are extrapolated).

**A. Archiving cost under load** (\`couchtrove agent archive --interval 5\` in its own process; a writer of 4 loops of \`_bulk_docs\` of 5 small documents):

| | |
|---|---|
| writes | ${a.writes} documents in ${a.wall.toFixed(0)} s (${a.rate.toFixed(0)}/s) |
| archiver CPU | ${a.cpu.toFixed(2)} s: **${(a.cpuShare * 100).toFixed(1)}% of one core** on average (its whole process: cuts, zstd, AES, fsyncs, Node) |
| bytes CouchDB wrote (its processes' write_bytes: appends and compactions) | ${mib(a.ioWritten)}, ${mib(perHour(a.ioWritten))} per hour |
| data directory growth (net of what compactions freed) | ${mib(a.written)}, ${mib(perHour(a.written))} per hour |
| bytes stored by the cuts (repository growth after the base) | ${mib(a.stored)}, ${mib(perHour(a.stored))} per hour: **${(a.stored / Math.max(1, a.ioWritten)).toFixed(2)} of what CouchDB wrote** (zstd-1 on random hex documents; base ${mib(a.baseStored)}) |

**B. Restore ${cutsWanted} cuts after the base against a full restore of the same data** (engine only, ${mib(totalB)} data directory from the
CouchDB 3.5 benchmark fixture; each cut appended 3 × 4 KiB to shards, ${mib(appendedB)} in all; taking the ${cutsWanted} cuts took ${cutsSeconds.toFixed(1)} s):

| restore | time |
|---|---|
| to the newest point, ${cutsWanted} cuts after the base (${cutsWanted + 1} catalogs, extents in ${cutsWanted + 1} data objects) | ${pitrSeconds.toFixed(2)} s |
| a full backup of the same tree | ${fullSeconds.toFixed(2)} s |
| ratio | **${(pitrSeconds / fullSeconds).toFixed(2)}×** (target ≤ 1.5); restored trees ${same === 'same' ? 'identical' : 'DIFFER'} |

**C. One database back against the whole restore** (real CouchDB; database \`shop\` of ${mib(shopInfo.sizes.file)} on disk, ${one.docCount} documents of 10 KB; whole data directory ${mib(wholeBytes)}):

| | time |
|---|---|
| \`database restore\`: the database's shard files restored into a scratch CouchDB, started | ${(one.restoreMs / 1000).toFixed(1)} s |
| copy into the live instance (the agent's checked copy, docs/agent.md), _security, counts | ${(one.copyMs / 1000).toFixed(1)} s |
| total (scratch removed) | **${(one.totalMs / 1000).toFixed(1)} s** |
| whole restore into a new instance (prepare: restore, start, check) | ${wholeSeconds.toFixed(1)} s |
`,
  );
  console.log('written to docs/benchmarks.md');
} finally {
  await stopInstances(running);
}
