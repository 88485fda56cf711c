// The fleet benchmark of issue 18: three `couchtrove server` processes (test/support/fleet-server.ts) on one
// private PostgreSQL, with N instances and M backups behind simulated agents that answer the agent protocol
// with delays (test/support/sim-agent.ts). Measures API latency (list, show, create), task throughput, the
// scheduler's lag when every instance's hourly schedule falls due at once ("top of the hour": the slot is
// set a few seconds ahead instead of waiting for the clock), and the database's size.
// Usage: npm run build && node dist/bench/fleet.js [--instances 1000] [--backups 10000] [--requests 300]
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { openState, type Row, type StateStore } from '../src/state/index.js';
import { SimAgents } from '../test/support/sim-agent.js';
import { startPostgres } from '../test/support/postgres.js';
import { ROOT } from './lib.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('instances', 1000);
const M = arg('backups', 10_000);
const REQUESTS = arg('requests', 300);
const TICK_MS = arg('tick-ms', 15_000);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const ms = (x: number): string => `${x.toFixed(1)} ms`;

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-fleet-bench-'));
  const children: ChildProcess[] = [];
  const pgServer = await startPostgres();
  const sim = new SimAgents({ call: [5, 30], backup: [200, 1000] });
  let store: StateStore | undefined;
  try {
    await sim.start();
    const env = {
      ...process.env, COUCHTROVE_DATABASE_URL: pgServer.url, SIM_URL: sim.url, STATE_DIR: dir, SCHEDULE_TICK_MS: String(TICK_MS),
      COUCHTROVE_BACKUP_ENCRYPTION: 'false',
    };
    const urls: string[] = [];
    const stderr = fs.openSync(path.join(dir, 'servers.log'), 'a');
    for (let k = 0; k < 3; k++) {
      const child = spawn(process.execPath, [path.join(ROOT, 'dist/test/support/fleet-server.js')], { env, stdio: ['ignore', 'pipe', stderr] });
      children.push(child);
      urls.push(await new Promise<string>((resolve, reject) => {
        child.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString().split('\n')[0]!) as { url: string }).url));
        child.once('exit', (c) => reject(new Error(`server exited ${c}; see ${dir}/servers.log`)));
      }));
    }
    store = await openState({ databaseUrl: pgServer.url });

    // Seed: N ACTIVE instances on the simulated agents, M COMPLETED backups, one hourly schedule each.
    const t0 = Date.now();
    const port = Number(new URL(sim.url).port);
    const now = new Date().toISOString();
    await store.upsert('projects', { id: 'local', name: 'local', created: now });
    const ids: string[] = [];
    const farSlot = '2099-01-01T00:00:00.000Z';
    const pool = new pg.Pool({ connectionString: pgServer.url, max: 4 });
    const insertMany = async (table: string, rows: Record<string, unknown>[]): Promise<void> => {
      for (let i = 0; i < rows.length; i += 500) {
        const chunk = rows.slice(i, i + 500);
        const cols = Object.keys(chunk[0]!);
        const values: unknown[] = [];
        const tuples = chunk.map((r, j) => `(${cols.map((c, k) => {
          values.push(r[c]);
          return `$${j * cols.length + k + 1}`;
        }).join(',')})`);
        await pool.query(`INSERT INTO ${table} (${cols.map((c) => `"${c}"`).join(',')}) VALUES ${tuples.join(',')}`, values);
      }
    };
    const instances: Row<'instances'>[] = [];
    for (let i = 0; i < N; i++) {
      const id = randomUUID();
      ids.push(id);
      instances.push({
        id, project_id: 'local', name: `fleet-${i}`, status: 'ACTIVE', flavor_id: '1', volume_size: 1, datastore: 'couchdb', datastore_version: '3.5',
        configuration_id: null, replica_of: null, host: '127.0.0.1', port, agent_port: port, agent_pid: null, epmd_port: 0, instance_dir: `${dir}/sim/${id}`,
        engine: 'devengine', fault: null, task_id: null, created: new Date(Date.parse(now) - (N - i) * 1000).toISOString(), updated: now,
      });
      sim.instances.set(id, { state: 'RUNNING', prepared: 1, dbs: new Set(['_users', '_replicator']), users: new Map(), backup: null, busy: null });
    }
    await insertMany('instances', instances as unknown as Record<string, unknown>[]);
    const backups: Row<'backups'>[] = [];
    for (let j = 0; j < M; j++) {
      const id = randomUUID();
      const inst = ids[j % N]!;
      backups.push({
        id, project_id: 'local', instance_id: inst, name: `seed-${j}`, description: null, status: 'COMPLETED', parent_id: null, location: 'file:///sim',
        size_bytes: 4096, data_bytes: 8192, files: 3, checksum: 'x'.repeat(64), datastore: 'couchdb', datastore_version: '3.5', progress: null, fail_reason: null,
        task_id: null, created: new Date(Date.parse(now) - (M - j) * 60_000).toISOString(), updated: now, verified_at: null, verify_result: null, cluster_id: null, cluster: null,
      });
      sim.repo.set(id, { instance: inst, checksum: 'x'.repeat(64) });
    }
    await insertMany('backups', backups as unknown as Record<string, unknown>[]);
    await insertMany('backup_schedules', ids.map((inst, i) => ({
      id: randomUUID(), project_id: 'local', instance_id: inst, name: 'hourly', description: null, pattern: '0 * * * *', incremental: 0,
      keep_last: null, keep_daily: null, keep_weekly: null, next_run: farSlot, last_run: null, last_result: null, created: instances[i]!.created, updated: now,
    })));
    await pool.end();
    console.log(`seeded ${N} instances, ${M} backups, ${N} schedules in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await sleep(3000);

    // API latency, one request at a time, spread over the three processes.
    let rr = 0;
    const call = async (method: string, url: string, body?: unknown): Promise<{ status: number; ms: number; json: Record<string, unknown> }> => {
      const base = urls[rr++ % urls.length]!;
      const s = performance.now();
      const r = await fetch(`${base}/v1.0/local${url}`, { method, headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      const text = await r.text();
      return { status: r.status, ms: performance.now() - s, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
    };
    const lat: Record<string, number[]> = { 'GET /instances (list, 20)': [], 'GET /instances/{id} (show)': [], 'GET /backups (list, 20)': [], 'POST /backups (create)': [], 'POST /instances (create)': [] };
    const check = (r: { status: number; json: unknown }, want: number[], what: string): void => {
      if (!want.includes(r.status)) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
    };
    for (let i = 0; i < REQUESTS; i++) {
      let r = await call('GET', `/instances?limit=20&marker=${ids[Math.floor(Math.random() * (N - 1))]}`);
      check(r, [200], 'list');
      lat['GET /instances (list, 20)']!.push(r.ms);
      r = await call('GET', `/instances/${ids[Math.floor(Math.random() * N)]}`);
      check(r, [200], 'show');
      lat['GET /instances/{id} (show)']!.push(r.ms);
      r = await call('GET', '/backups?limit=20');
      check(r, [200], 'backup list');
      lat['GET /backups (list, 20)']!.push(r.ms);
    }
    const createdBackups: string[] = [];
    for (let i = 0; i < Math.min(REQUESTS, N); i++) {
      const r = await call('POST', '/backups', { backup: { name: `lat-${i}`, instance: ids[i] } });
      check(r, [202], 'backup create');
      lat['POST /backups (create)']!.push(r.ms);
      createdBackups.push((r.json.backup as { id: string }).id);
    }
    for (let i = 0; i < Math.min(100, REQUESTS); i++) {
      const r = await call('POST', '/instances', { instance: { name: `new-${i}`, flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'db' }] } });
      check(r, [200], 'instance create');
      lat['POST /instances (create)']!.push(r.ms);
    }
    const waitFinal = async (what: string, limitMs: number): Promise<void> => {
      const end = Date.now() + limitMs;
      while (Date.now() < end) {
        const open = await store!.find('tasks', { status: ['NEW', 'RUNNING'] });
        if (open.length === 0) return;
        await sleep(250);
      }
      throw new Error(`${what}: tasks still open after ${limitMs} ms`);
    };
    await waitFinal('latency phase', 120_000);

    // Task throughput: one backup on each of the first K instances, submitted 16 at a time.
    const K = Math.min(N, 1000);
    const busyFree = ids.slice(0, K);
    const tp0 = Date.now();
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < busyFree.length) {
        const id = busyFree[next++]!;
        for (;;) {
          const r = await call('POST', '/backups', { backup: { name: `tp-${id}`, instance: id } });
          if (r.status === 202) break;
          check(r, [422], 'throughput backup');
          await sleep(100); // still busy with an earlier task
        }
      }
    }));
    const submitted = (Date.now() - tp0) / 1000;
    await waitFinal('throughput phase', 300_000);
    const tpSeconds = (Date.now() - tp0) / 1000;
    const tpFailed = (await store.find('tasks', { status: 'FAILED' })).length;

    // Top of the hour: every schedule's slot is set a few seconds ahead; lag = slot -> backup row, and -> COMPLETED.
    const slot = new Date(Math.ceil((Date.now() + 5000) / 1000) * 1000).toISOString();
    const upd = new pg.Client({ connectionString: pgServer.url });
    await upd.connect();
    await upd.query('UPDATE backup_schedules SET next_run = $1', [slot]);
    await upd.end();
    const slotMs = Date.parse(slot);
    const endSched = Date.now() + 240_000;
    let made: Row<'backups'>[] = [];
    while (Date.now() < endSched) {
      await sleep(1000);
      made = (await store.find('backups')).filter((b) => b.name.startsWith('hourly '));
      const runs = await store.find('tasks', { kind: 'schedule.run' });
      if (runs.length >= N && runs.every((t) => t.status === 'COMPLETED' || t.status === 'FAILED')) break;
    }
    await waitFinal('schedule phase', 120_000);
    made = (await store.find('backups')).filter((b) => b.name.startsWith('hourly '));
    const runs = await store.find('tasks', { kind: 'schedule.run' });
    const startLag = made.map((b) => (Date.parse(b.created) - slotMs) / 1000);
    const doneLag = made.filter((b) => b.status === 'COMPLETED').map((b) => (Date.parse(b.updated) - slotMs) / 1000);
    const runStart = runs.map((t) => (Date.parse(t.created) - slotMs) / 1000);
    const perSlot = new Set(runs.map((t) => (JSON.parse(t.params) as { scheduleId: string }).scheduleId)).size;

    const size = await new pg.Client({ connectionString: pgServer.url });
    await size.connect();
    const dbSize = Number((await size.query<{ s: string }>("SELECT pg_database_size('couchtrove') AS s")).rows[0]!.s);
    const tables = (await size.query<{ t: string; s: string; n: string }>(
      "SELECT relname AS t, pg_total_relation_size(relid) AS s, n_live_tup AS n FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 5")).rows;
    await size.end();

    const out: string[] = [];
    out.push(`fleet: ${N} instances, ${M} backups seeded (+ what the run adds), ${N} hourly schedules; 3 server processes; simulated agents (calls 5-30 ms, backups 200-1000 ms)`);
    out.push('| API call (sequential, round-robin over the 3 processes) | n | median | p99 |');
    out.push('|---|---|---|---|');
    for (const [k, v] of Object.entries(lat)) out.push(`| ${k} | ${v.length} | ${ms(pct(v, 50))} | ${ms(pct(v, 99))} |`);
    out.push(`task throughput: ${K} backup.create tasks (16 clients) submitted in ${submitted.toFixed(1)} s, all final after ${tpSeconds.toFixed(1)} s: ${(K / tpSeconds).toFixed(1)} tasks/s; FAILED so far: ${tpFailed}`);
    out.push(`top of the hour (${N} schedules due at one slot, scheduler tick ${TICK_MS / 1000} s): ${runs.length} schedule.run tasks for ${perSlot} schedules (one per slot: ${runs.length === perSlot}); ` +
      `run task written after the slot: median ${pct(runStart, 50).toFixed(1)} s, p99 ${pct(runStart, 99).toFixed(1)} s, max ${Math.max(...runStart).toFixed(1)} s; ` +
      `backup started: median ${pct(startLag, 50).toFixed(1)} s, p99 ${pct(startLag, 99).toFixed(1)} s (${made.length} backups); ` +
      `COMPLETED: median ${pct(doneLag, 50).toFixed(1)} s, p99 ${pct(doneLag, 99).toFixed(1)} s, max ${Math.max(...doneLag).toFixed(1)} s (${doneLag.length})`);
    out.push(`PostgreSQL database size at the end: ${(dbSize / 2 ** 20).toFixed(1)} MiB; largest tables: ${tables.map((t) => `${t.t} ${(Number(t.s) / 2 ** 20).toFixed(1)} MiB (~${t.n} rows)`).join(', ')}`);
    out.push(`simulated agent calls: ${sim.calls.length}; violations (overlapping or repeated effects): ${sim.violations.length}`);
    console.log(out.join('\n'));
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(undefined) : c.once('exit', r)))));
    await store?.close();
    await sim.stop();
    await pgServer.stop();
    if (!process.env.KEEP_FLEET_DIR) fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
