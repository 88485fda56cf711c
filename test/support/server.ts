// A real `couchtrove server` child process (real agents, development engine or COUCHDB_HOME) on a free
// loopback port with a private state directory. Tests kill it and clean up every process it started.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after } from 'node:test';
import { repoRoot } from './postgres.js';

export interface RealServer {
  url: string;
  api: string;
  stateDir: string;
  proc: ChildProcess;
  log(): string;
  /** SIGKILL (a crash) or SIGTERM (a stop); waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A temporary directory that isolated instances (their own uids, as root) can pass through: 0711. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o711);
  return dir;
}

/**
 * A test file's private root with a state directory. After the file's tests it kills the last server
 * given to track() and every process started under the root, and removes the root.
 */
export function sandbox(prefix: string): { root: string; stateDir: string; track: (s: RealServer) => RealServer } {
  const root = tempDir(prefix);
  let server: RealServer | undefined;
  after(async () => {
    await server?.kill('SIGKILL');
    killUnder(root);
    fs.rmSync(root, { recursive: true, force: true });
  });
  return { root, stateDir: path.join(root, 'state'), track: (s) => (server = s) };
}

export const basicAuth = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

export async function startServer(stateDir: string, env: Record<string, string> = {}): Promise<RealServer> {
  const logFile = path.join(stateDir, `..`, `${path.basename(stateDir)}-server.log`);
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, [path.join(repoRoot, 'bin', 'couchtrove.js'), 'server', '--port', '0', '--state-dir', stateDir], {
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COUCHTROVE_'))), ...env },
    stdio: ['ignore', 'pipe', out],
  });
  fs.closeSync(out);
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const logText = (): string => {
      try {
        return fs.readFileSync(logFile, 'utf8');
      } catch {
        return '(no log)';
      }
    };
    // A server's start is a node process reading its state: seconds, but minutes on a machine shared with much
    // else. One that does not start goes, rather than outliving its test.
    const timer = setTimeout(() => {
      proc.removeAllListeners('exit');
      proc.kill('SIGKILL');
      reject(new Error(`server did not start in 120 s: ${logText()}`));
    }, 120_000);
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited ${code}: ${logText()}`));
    });
  });
  proc.stdout!.resume();
  return {
    url, api: `${url}/v1.0/local`, stateDir, proc,
    log: () => fs.readFileSync(logFile, 'utf8'),
    kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await exited;
    },
  };
}

/** Pids of processes whose command line mentions dir (agents, CouchDB/dev engine of its instances). */
export function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      const envs = (() => {
        try {
          return fs.readFileSync(`/proc/${p}/environ`, 'utf8');
        } catch {
          return '';
        }
      })();
      if (cmd.includes(dir) || envs.includes(dir)) pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}

/** Kills whatever still runs from dir (the safety net after a test). */
export function killUnder(dir: string): void {
  for (const pid of processesUnder(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export interface J {
  [k: string]: unknown;
}

export async function api(base: string, method: string, p: string, body?: unknown, token = 'notused'): Promise<{ status: number; json: J }> {
  const r = await fetch(`${base}${p}`, {
    method,
    headers: { 'x-auth-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const t = await r.text();
  return { status: r.status, json: t ? (JSON.parse(t) as J) : {} };
}

export async function waitStatus(base: string, kind: 'instances' | 'backups', id: string, want: string[], ms = 120_000): Promise<J> {
  const end = Date.now() + ms;
  let last: J = {};
  while (Date.now() < end) {
    const r = await api(base, 'GET', `/${kind}/${id}`);
    last = r.json;
    const v = (r.json.instance ?? r.json.backup) as J | undefined;
    if (v && want.includes(v.status as string)) return v;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`${kind} ${id} never reached ${want.join('/')}: ${JSON.stringify(last)}`);
}

/** An instance created through the API and ACTIVE, with where its files are and the uid it runs as (null: not isolated). */
export interface MadeInstance {
  id: string;
  url: string;
  uid: number | null;
  instanceDir: string;
}

export async function createInstance(base: string, stateDir: string, name: string, extra: J = {}): Promise<MadeInstance> {
  const c = await api(base, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'payroll' }], ...extra } });
  if (c.status !== 200) throw new Error(`create ${name}: ${c.status} ${JSON.stringify(c.json)}`);
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
  if (inst.status !== 'ACTIVE') throw new Error(`instance ${name} is ${String(inst.status)}: ${JSON.stringify(inst.fault)}`);
  const instanceDir = path.join(stateDir, 'instances', id);
  const placement = JSON.parse(fs.readFileSync(path.join(instanceDir, 'placement.json'), 'utf8')) as { uid?: number };
  return { id, url: inst.couchdb_url as string, uid: placement.uid ?? null, instanceDir };
}

/** A backup through the API (incremental on the last one when asked), waited for: its row. */
export async function backupOf(base: string, id: string, name: string, incremental = false): Promise<J> {
  const b = await api(base, 'POST', '/backups', { backup: { name, instance: id, ...(incremental ? { incremental: 1 } : {}) } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const done = await waitStatus(base, 'backups', (b.json.backup as J).id as string, ['COMPLETED', 'FAILED'], 180_000);
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));
  return done;
}

/**
 * A full backup, `between` (a write), then an incremental on it (its parent the full), both found among the names
 * the repository `stored` (what the agent wrote, read back from the object store itself).
 */
export async function fullAndIncremental(base: string, id: string, names: [string, string], between: () => Promise<void>, stored: () => Promise<string[]>): Promise<[J, J]> {
  const full = await backupOf(base, id, names[0]);
  assert.equal(full.parent_id ?? null, null);
  await between();
  const inc = await backupOf(base, id, names[1], true);
  assert.equal(inc.parent_id, full.id);
  const objects = await stored();
  for (const b of [full, inc]) assert.ok(objects.some((n) => n.includes(b.id as string)), `no object of backup ${String(b.id)} in the repository: ${objects.slice(0, 5).join(', ')}`);
  return [full, inc];
}

/** Polls f until it gives something other than null; throws naming what after ms. */
export async function within<T>(what: string, ms: number, f: () => Promise<T | null> | T | null): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
