// Shared pieces of the benchmarks: building the data directory, timing commands with peak RSS,
// and writing a section of docs/benchmarks.md.
import { execFileSync, spawnSync, type ChildProcessByStdio, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Readable } from 'node:stream';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { extractBenchDatadir } from '../test/support/fixtures.js';
import { listFiles } from '../test/support/tree.js';
import { randomBytes } from 'node:crypto';
import { ArchiveStream } from '../src/backup/archive.js';
import type { KeyMaterial } from '../src/crypto/keys.js';
import type { Backend } from '../src/storage/backend.js';
import { Agent, couchUrl, instanceFiles } from '../src/agent/agent.js';
import type { InstanceSettings } from '../src/agent/protocol.js';
import { killHard, newSettings, type TestCouchdb } from '../test/support/couchdb.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/couchtrove.js');

export interface Timed {
  seconds: number;
  maxRssMiB: number;
}

/** Runs a shell command under GNU time; returns wall seconds and the peak RSS of its largest process. */
export function timed(command: string, env: NodeJS.ProcessEnv = {}): Timed {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', 'bash', '-o', 'pipefail', '-c', command], { env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`benchmark command failed (${r.status}): ${command}\n${r.stderr}`);
  const last = r.stderr.trim().split('\n').pop()!;
  const [secs, kb] = last.split(' ').map(Number) as [number, number];
  return { seconds: secs, maxRssMiB: kb / 1024 };
}

/** A fresh key file made by `couchtrove agent keygen`, as a user would make one. */
export async function benchKey(file: string): Promise<string> {
  await fs.rm(file, { force: true });
  execFileSync(process.execPath, [BIN, 'agent', 'keygen', '--out', file], { stdio: 'ignore' });
  return file;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await listFiles(dir)) n += (await fs.stat(f)).size;
  return n;
}

/**
 * A data directory of at least `bytes`: the real benchmark data directory (CouchDB 3.5, 78 MB), plus
 * copies of its .couch shard files under new database names.
 */
export async function buildDatadir(dir: string, bytes: number): Promise<number> {
  const marker = path.join(dir, '.bench-size');
  const have = await fs.readFile(marker, 'utf8').catch(() => '');
  if (have && Number(have) >= bytes) return Number(have);
  await fs.rm(dir, { recursive: true, force: true });
  await extractBenchDatadir(dir);
  const shards = (await listFiles(path.join(dir, 'shards'))).filter((f) => f.endsWith('.couch'));
  let total = await dirBytes(dir);
  for (let copy = 1; total < bytes; copy++) {
    for (const s of shards) {
      const [db, ...rest] = path.basename(s).split('.');
      await fs.copyFile(s, path.join(path.dirname(s), [`${db}_copy${copy}`, ...rest].join('.')));
      total += (await fs.stat(s)).size;
    }
  }
  await fs.writeFile(marker, String(total));
  return total;
}

/**
 * A data directory holding one file, `big.couch`, of at least `bytes`: the .couch shards of the benchmark
 * data directory `from` (built by buildDatadir) concatenated, in order, as often as needed.
 */
export async function buildOneFile(dir: string, from: string, bytes: number): Promise<number> {
  // Not in the directory: it would be a second file to back up.
  const marker = `${dir}.bench-size`;
  const have = await fs.readFile(marker, 'utf8').catch(() => '');
  if (have && Number(have) >= bytes) return Number(have);
  await buildDatadir(from, bytes);
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  const shards = (await listFiles(from)).filter((f) => f.endsWith('.couch')).sort();
  const big = await fs.open(path.join(dir, 'big.couch'), 'wx');
  let total = 0;
  try {
    while (total < bytes) {
      for (const s of shards) {
        if (total >= bytes) break;
        const content = await fs.readFile(s);
        await big.write(content, 0, content.length, total);
        total += content.length;
      }
    }
  } finally {
    await big.close();
  }
  await fs.writeFile(marker, String(total));
  return total;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const zstd = /v[\d.]+/.exec(execFileSync('zstd', ['--version'], { encoding: 'utf8' }))?.[0] ?? '?';
  return `${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, ${os.type()} ${os.release()}, zstd CLI ${zstd}`;
}

/** Replaces the section between <!-- NAME:start --> and <!-- NAME:end --> in docs/benchmarks.md. */
export async function writeSection(name: string, markdown: string): Promise<void> {
  const file = path.join(ROOT, 'docs/benchmarks.md');
  let doc = await fs.readFile(file, 'utf8').catch(() => '# Benchmarks\n\nWritten by the benchmark scripts in bench/ (see the README). Each section says the machine, the date and the command.\n');
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  doc = i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${block}\n`;
  await fs.writeFile(file, doc);
}

export type J = Record<string, unknown>;

/** One Trove API call on a local-mode server (the token is not checked there). */
export async function call(base: string, method: string, p: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await fetch(`${base}${p}`, { method, headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, json: text ? (JSON.parse(text) as J) : {} };
}

/** The URL a spawned `couchtrove server` prints once it listens; rejects if it exits first. */
export function serverUrl(proc: ChildProcessWithoutNullStreams | ChildProcessByStdio<null, Readable, null>): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(buf);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}

/**
 * An archive stream of `dataDir` with a base and `cuts` cuts after it, each after appending 3 × 4 KiB to a
 * few shards (what CouchDB does between two cuts of a busy database), then one more cut: the newest restore
 * point is now. Returns the stream, the bytes appended and the seconds the cuts took.
 */
export async function cutChain(storage: Backend, key: KeyMaterial, dataDir: string, cuts: number): Promise<{ stream: ArchiveStream; appended: number; seconds: number }> {
  const shards = (await listFiles(path.join(dataDir, 'shards'))).filter((f) => f.endsWith('.couch'));
  const stream = new ArchiveStream({ storage, stream: 'b', key, dataDir, rebaseShare: 1000, baseIntervalMs: 86_400_000 });
  await stream.cut();
  let appended = 0;
  const t0 = performance.now();
  for (let i = 0; i < cuts; i++) {
    for (let k = 0; k < 3; k++) {
      const chunk = randomBytes(4096);
      await fs.appendFile(shards[(i * 3 + k) % shards.length]!, chunk);
      appended += chunk.length;
    }
    const r = await stream.cut();
    if (r.kind !== 'incremental') throw new Error(`cut ${i} was ${r.kind}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 5));
  await stream.cut();
  return { stream, appended, seconds };
}

/** Agents and CouchDB processes a benchmark started: stopped, then killed, by stopInstances. */
export interface Started {
  agents: Agent[];
  pids: number[];
}

/** A new instance on a real CouchDB (COUCHDB_HOME) under `work/name`, running, with its admin's Authorization header. */
export async function startInstance(work: string, name: string, couch: TestCouchdb, started: Started): Promise<{ agent: Agent; url: string; auth: string; dataDir: string; settings: InstanceSettings }> {
  const settings = await newSettings(work, name, couch);
  await fs.mkdir(settings.dataDir, { recursive: true });
  const agent = await Agent.open(path.join(work, name, 'agent'), { startTimeoutMs: 120_000 });
  started.agents.push(agent);
  const st = await agent.prepare(settings);
  if (agent.couchdbPid) started.pids.push(agent.couchdbPid);
  if (st.state !== 'RUNNING') throw new Error(`${name}: ${st.state} ${st.reason ?? ''}`);
  const admin = JSON.parse(await fs.readFile(instanceFiles(settings).secret, 'utf8')) as { username: string; password: string };
  return { agent, url: couchUrl(settings), auth: `Basic ${Buffer.from(`${admin.username}:${admin.password}`).toString('base64')}`, dataDir: settings.dataDir, settings };
}

export async function stopInstances(started: Started): Promise<void> {
  for (const ag of started.agents) {
    if (ag.couchdbPid) started.pids.push(ag.couchdbPid);
    await ag.stop().catch(() => undefined);
  }
  for (const pid of started.pids) killHard(pid);
}
