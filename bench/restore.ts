// The restores users reach for when something went wrong (issue 24, targets 1 and 2), each measured side
// by side against a full restore in one run, the contenders alternating round by round, medians:
//  one-db: one ~DB_MB MB database out of an ~INSTANCE_MB MB real CouchDB instance back (`database restore`:
//          its shard files and the shard maps into a scratch CouchDB, then the files placed under the live
//          node, and for comparison copied document by document) against a whole restore of that instance
//          into a new one (prepare: restore, start, check);
//  pitr:   a restore to the newest point of an archive stream of a PITR_MB MB tree with CUTS cuts after its
//          base against a full backup of the same tree.
// Usage: npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/restore.js [--part one-db|pitr|all]
//        [--runs 3] [--db-mb 100] [--instance-mb 1024] [--pitr-mb 300] [--cuts 1000] [--work DIR]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, buildDatadir, cutChain, dirBytes, machine, median, ROOT, startInstance, stopInstances, writeSection, type Started } from './lib.js';
import type { DatabaseRestoreResult } from '../src/agent/protocol.js';
import { restoreToTime } from '../src/backup/archive.js';
import { createBackup, restoreBackup } from '../src/backup/index.js';
import { readKeyFile } from '../src/crypto/keys.js';
import { openStorage } from '../src/storage/index.js';
import { testCouchdb } from '../test/support/couchdb.js';

const { values } = parseArgs({
  options: {
    part: { type: 'string', default: 'all' },
    runs: { type: 'string', default: '3' },
    'db-mb': { type: 'string', default: '100' },
    'instance-mb': { type: 'string', default: '1024' },
    'pitr-mb': { type: 'string', default: '300' },
    cuts: { type: 'string', default: '1000' },
    work: { type: 'string', default: path.join(ROOT, 'bench/work') },
  },
});
const part = values.part!;
const runs = Number(values.runs);
const dbMb = Number(values['db-mb']);
const instanceMb = Number(values['instance-mb']);
const pitrMb = Number(values['pitr-mb']);
const cutsWanted = Number(values.cuts);
const work = path.resolve(values.work!, 'restore');
await fs.rm(work, { recursive: true, force: true });
await fs.mkdir(work, { recursive: true });
const keyFile = await benchKey(path.join(work, 'bench.key'));
const key = await readKeyFile(keyFile);
const started = new Date().toISOString();
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const s2 = (ms: number) => (ms / 1000).toFixed(2);
const load = () => os.loadavg()[0]!.toFixed(1);

/** Each part has a section of its own (a run of one part leaves the other's as it was). */
async function write(name: 'one-db' | 'pitr', title: string, loads: string[], options: string, body: string): Promise<void> {
  await writeSection(`restore-${name}`, `## ${title}

Measured ${started.slice(0, 10)} on ${machine()}, load average at the start of each round: ${loads.join(', ')}
(the machine may be shared with other work: read the ratios, each contender measured beside the other, round
by round, the order reversed every round, not the absolute times). Page cache warm, \`sync\` before every restore.
Command: \`npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/restore.js --part ${name} --runs ${runs} ${options}\` (bench/restore.ts).

${body}
`);
}

// ---- one database -----------------------------------------------------------------------------------
async function oneDatabase(): Promise<void> {
  const loads: string[] = [];
  const couch = testCouchdb();
  if (couch.kind !== 'real') throw new Error('set COUCHDB_HOME to an Apache CouchDB 3.x release: the one-db part needs a real CouchDB');
  const running: Started = { agents: [], pids: [] };
  const instance = (name: string) => startInstance(work, name, couch, running);
  try {
    const src = await instance('src');
    const req = async (method: string, p: string, body?: string) => {
      const r = await fetch(`${src.url}${p}`, { method, headers: { authorization: src.auth, 'content-type': 'application/json' }, body });
      const text = await r.text();
      if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${text.slice(0, 200)}`);
      return JSON.parse(text) as Record<string, unknown>;
    };
    // The database brought back: 10 KB documents (random hex), as in docs/benchmarks.md before.
    await req('PUT', '/shop');
    let n = 0;
    for (let b = 0; b < Math.ceil((dbMb * 1e6) / 10_000 / 200); b++) {
      const docs = Array.from({ length: 200 }, () => ({ _id: `d${String(n++).padStart(8, '0')}`, pad: randomBytes(5000).toString('hex') }));
      await req('POST', '/shop/_bulk_docs', JSON.stringify({ docs }));
    }
    // The rest of the instance: documents with 1 MiB attachments in another database (random hex as
    // application/octet-stream: stored as they are, compressible ~2x as real data is).
    await req('PUT', '/rest');
    for (let i = 0; (await dirBytes(src.settings.dataDir)) < instanceMb * 2 ** 20; i++) {
      const blob = () => Buffer.from(randomBytes(2 ** 19).toString('hex')).toString('base64');
      const docs = Array.from({ length: 16 }, (_, k) => ({ _id: `r${i}-${k}`, _attachments: { 'blob.bin': { content_type: 'application/octet-stream', data: blob() } } }));
      await req('POST', '/rest/_bulk_docs', JSON.stringify({ docs }));
    }
    const shop = (await req('GET', '/shop')) as { sizes: { file: number; external: number }; doc_count: number };
    const repo = `file://${path.join(work, 'repo-one')}`;
    await src.agent.backup({ storage: repo, id: 'whole', keyFile });
    const wholeBytes = await dirBytes(src.settings.dataDir);
    console.log(`one-db: instance ${mib(wholeBytes)}, shop ${mib(shop.sizes.file)} on disk (${shop.doc_count} documents)`);

    const whole: number[] = [];
    const one: DatabaseRestoreResult[] = [];
    const copied: DatabaseRestoreResult[] = [];
    const runWhole = async (i: number) => {
      const w = await instance(`whole-${i}`);
      execFileSync('sync');
      const t = performance.now();
      const st = await w.agent.prepare({ ...w.settings, restore: { storage: repo, backupId: 'whole', keyFile } });
      if (st.state !== 'RUNNING') throw new Error(`whole restore: ${st.reason ?? st.state}`);
      whole.push(performance.now() - t);
      await w.agent.stop();
      await fs.rm(path.join(work, `whole-${i}`), { recursive: true, force: true });
    };
    const runOne = async (i: number) => {
      execFileSync('sync');
      one.push(await src.agent.restoreDatabase({ database: 'shop', storage: repo, keyFile, backupId: 'whole', as: `shop_r${i}` }));
      await req('DELETE', `/shop_r${i}`);
      execFileSync('sync');
      copied.push(await src.agent.restoreDatabase({ database: 'shop', storage: repo, keyFile, backupId: 'whole', as: `shop_c${i}`, copy: true }));
      await req('DELETE', `/shop_c${i}`);
    };
    for (let i = 0; i < runs; i++) {
      loads.push(load());
      if (i % 2 === 0) {
        await runWhole(i);
        await runOne(i);
      } else {
        await runOne(i);
        await runWhole(i);
      }
      console.log(`one-db run ${i}: whole ${s2(whole[i]!)} s, one ${s2(one[i]!.totalMs)} s (${one[i]!.method}; scratch ${s2(one[i]!.restoreMs)}, then ${s2(one[i]!.copyMs)}), copied ${s2(copied[i]!.totalMs)} s`);
    }
    const mid = median(one.map((r) => r.totalMs));
    const r = one.find((x) => x.totalMs === mid)!;
    const wholeMs = median(whole);
    const rate = (shop.sizes.external / 1e6) / (r.copyMs / 1000);
    const c = copied.find((x) => x.totalMs === median(copied.map((y) => y.totalMs)))!;
    await write('one-db', 'One database back (issue 24, target 1)', loads, `--db-mb ${dbMb} --instance-mb ${instanceMb}`, `Database \`shop\`, ${shop.doc_count} documents of 10 KB, ${mib(shop.sizes.file)} on disk
(${(shop.sizes.external / 1e6).toFixed(1)} MB of documents), out of a ${mib(wholeBytes)} instance (the rest: 1 MiB attachments in another
database); real Apache CouchDB at /opt/couchdb, encrypted backup (generated key), zstd-1, \`file://\` repository on the same disk.

| | median of ${runs} | runs |
|---|---|---|
| \`database restore\`: shard files and shard maps restored, scratch CouchDB started | ${s2(r.restoreMs)} s | ${one.map((x) => s2(x.restoreMs)).join(', ')} |
| ${r.method === 'placed' ? 'scratch stopped, its shard files placed under the live node with a shard map, counts and _security checked' : 'copied'} | ${s2(r.copyMs)} s | ${one.map((x) => s2(x.copyMs)).join(', ')} |
| **total** (scratch removed) | **${s2(mid)} s** | ${one.map((x) => s2(x.totalMs)).join(', ')} |
| the same, copied document by document instead (\`copy: true\`: every leaf written, attachments and conflicts read back): copy | ${s2(c.copyMs)} s | ${copied.map((x) => s2(x.copyMs)).join(', ')} |
| the same, copied: total | ${s2(c.totalMs)} s | ${copied.map((x) => s2(x.totalMs)).join(', ')} |
| whole restore of the instance into a new one (prepare: restore, start, check) | ${s2(wholeMs)} s | ${whole.map(s2).join(', ')} |

- ratio **${(mid / wholeMs).toFixed(2)}×** the whole restore (target ≤ 0.5; copied: ${(c.totalMs / wholeMs).toFixed(2)}×); rate **${rate.toFixed(1)} MB/s** of documents
  in the step after the scratch is up, to the database served and checked (${((r.copiedBytes / 1e6) / (r.copyMs / 1000)).toFixed(1)} MB/s of shard files; copied: ${((shop.sizes.external / 1e6) / (c.copyMs / 1000)).toFixed(1)} MB/s; target ≥ 20);
  checked: ${r.docCount} documents, ${r.docDelCount} deleted (copied: ${c.conflicts} conflicts, ${c.attachments} attachments).`);
  } finally {
    await stopInstances(running);
  }
}

// ---- point in time ----------------------------------------------------------------------------------
async function pointInTime(): Promise<void> {
  const loads: string[] = [];
  const data = path.join(work, 'datadir-pitr');
  const total = await buildDatadir(data, pitrMb * 2 ** 20);
  const storage = await openStorage(`file://${path.join(work, 'repo-pitr')}`);
  try {
    const { stream, appended, seconds: cutsSeconds } = await cutChain(storage, key, data, cutsWanted);
    await createBackup({ dataDir: data, storage, key, id: 'full' });
    const pitr: number[] = [];
    const full: number[] = [];
    let same = true;
    const runPitr = async (i: number) => {
      const dir = path.join(work, `pitr-${i}`);
      execFileSync('sync');
      const t = performance.now();
      await restoreToTime({ storage, stream: 'b', time: stream.head.restorePoint!, dataDir: dir, key });
      pitr.push(performance.now() - t);
    };
    const runFull = async (i: number) => {
      const dir = path.join(work, `full-${i}`);
      execFileSync('sync');
      const t = performance.now();
      await restoreBackup({ storage, id: 'full', dataDir: dir, key });
      full.push(performance.now() - t);
    };
    for (let i = 0; i < runs; i++) {
      loads.push(load());
      if (i % 2 === 0) {
        await runPitr(i);
        await runFull(i);
      } else {
        await runFull(i);
        await runPitr(i);
      }
      same &&= execFileSync('bash', ['-c', `diff -r ${path.join(work, `pitr-${i}`)} ${path.join(work, `full-${i}`)} >/dev/null && echo same || echo differ`], { encoding: 'utf8' }).trim() === 'same';
      await fs.rm(path.join(work, `pitr-${i}`), { recursive: true, force: true });
      await fs.rm(path.join(work, `full-${i}`), { recursive: true, force: true });
      console.log(`pitr run ${i}: pitr ${s2(pitr[i]!)} s, full ${s2(full[i]!)} s`);
    }
    await write('pitr', 'Point-in-time restore (issue 24, target 2)', loads, `--pitr-mb ${pitrMb} --cuts ${cutsWanted}`, `A ${mib(total)} data directory from the CouchDB 3.5 benchmark fixture, an archive
stream with ${cutsWanted} cuts after its base (each appended 3 × 4 KiB to shards, ${mib(appended)} in all; taking them took
${cutsSeconds.toFixed(1)} s), engine only, encrypted, zstd-1, \`file://\` repository on the same disk.

| restore | median of ${runs} | runs |
|---|---|---|
| to the newest point, ${cutsWanted} cuts after the base (${cutsWanted + 1} manifests and catalogs, extents in ${cutsWanted + 1} data objects) | ${s2(median(pitr))} s | ${pitr.map(s2).join(', ')} |
| a full backup of the same tree | ${s2(median(full))} s | ${full.map(s2).join(', ')} |

- ratio **${(median(pitr) / median(full)).toFixed(2)}×** (target ≤ 1.5); restored trees ${same ? 'identical' : 'DIFFER'} (diff -r).`);
  } finally {
    await storage.close();
  }
}

if (part === 'one-db' || part === 'all') await oneDatabase();
if (part === 'pitr' || part === 'all') await pointInTime();
console.log('written to docs/benchmarks.md');
