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
