// Starting and stopping one CouchDB: `$COUCHDB_HOME/bin/couchdb` with the instance's own ini chain
// (COUCHDB_INI_FILES), VM arguments (COUCHDB_ARGS_FILE) and Erlang port mapper (ERL_EPMD_PORT on
// loopback). Output goes to the instance's log file, which is where the reason comes from when
// CouchDB will not start. Stop is SIGTERM (CouchDB shuts down cleanly), SIGKILL after a timeout.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface LaunchSpec {
  couchdbHome: string;
  iniFiles: string[];
  argsFile: string;
  epmdPort: number;
  logFile: string;
  /** CouchDB's HOME: Erlang reads its distribution cookie from $HOME/.erlang.cookie there. */
  home: string;
  /** Run as this identity instead of the agent's. */
  runAs?: { uid: number; gid: number };
}

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

/** Environment variables passed on to CouchDB: nothing else of the agent's (which may hold secrets). */
const PASS_ENV = ['PATH', 'LANG', 'LC_ALL', 'TZ'];

export class CouchProcess {
  #exit: ExitInfo | null = null;

  private constructor(
    readonly pid: number,
    readonly child: ChildProcess | null,
    /** Size of the log file when this process started: its own output begins there. */
    readonly logOffset: number,
    /** When the kernel started it (processStart): a pid alone is reused, by another container's processes too. */
    readonly started: string | null,
  ) {}

  static async launch(spec: LaunchSpec): Promise<CouchProcess> {
    const bin = path.join(spec.couchdbHome, 'bin', 'couchdb');
    await fsp.access(bin, fs.constants.X_OK).catch(() => {
      throw new Error(`${bin} is missing or not executable (is couchdbHome an Apache CouchDB release directory?)`);
    });
    await fsp.mkdir(path.dirname(spec.logFile), { recursive: true, mode: 0o700 });
    const fd = fs.openSync(spec.logFile, 'a', 0o600);
    let offset = 0;
    try {
      offset = fs.fstatSync(fd).size;
      const env: NodeJS.ProcessEnv = {};
      for (const k of PASS_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
      Object.assign(env, {
        HOME: spec.home,
        COUCHDB_INI_FILES: spec.iniFiles.join(' '),
        COUCHDB_ARGS_FILE: spec.argsFile,
        ERL_EPMD_PORT: String(spec.epmdPort),
        ERL_EPMD_ADDRESS: '127.0.0.1',
        // No erl_crash.dump in the working directory (the release's): the reason is in the log.
        ERL_CRASH_DUMP_SECONDS: '0',
      });
      fs.writeSync(fd, `\n--- couchtrove agent: starting ${bin} at ${new Date().toISOString()} ---\n`);
      offset = fs.fstatSync(fd).size;
      // Own process group: a signal to the agent's group does not reach CouchDB, and a forced stop
      // reaches CouchDB's children too. CouchDB may outlive the agent (the agent adopts it again).
      const child = spawn(bin, [], { cwd: spec.couchdbHome, env, stdio: ['ignore', fd, fd], detached: true, ...(spec.runAs ?? {}) });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid!));
        child.once('error', reject);
      });
      const p = new CouchProcess(pid, child, offset, processStart(pid));
      child.once('exit', (code, signal) => {
        p.#exit = { code, signal };
      });
      child.unref();
      return p;
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * A CouchDB started by an earlier agent process, if that very process is still alive: the pid must
   * have the start time recorded with it. After a container restart the old pid is some other process
   * or thread of the new container (often the agent's own), which would pass for a CouchDB that never answers.
   */
  static adopt(pid: number, logOffset: number, started: string | null | undefined): CouchProcess | null {
    if (!isAlive(pid)) return null;
    const now = processStart(pid);
    // Without /proc (not Linux) or a start time recorded by an older agent, the pid is all there is.
    if (now !== null && started != null && now !== started) return null;
    return new CouchProcess(pid, null, logOffset, now);
  }

  exitInfo(): ExitInfo | null {
    if (this.#exit) return this.#exit;
    if (!this.child && !isAlive(this.pid)) this.#exit = { code: null, signal: null };
    return this.#exit;
  }

  get running(): boolean {
    return this.exitInfo() === null;
  }

  async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.running) {
      if (Date.now() >= deadline) return false;
      await sleep(50);
    }
    return true;
  }

  /** SIGTERM, then SIGKILL (to the whole process group) after timeoutMs. */
  async stop(timeoutMs: number): Promise<{ forced: boolean }> {
    if (!this.running) return { forced: false };
    signal(this.pid, 'SIGTERM');
    if (await this.waitExit(timeoutMs)) return { forced: false };
    signal(-this.pid, 'SIGKILL');
    signal(this.pid, 'SIGKILL');
    await this.waitExit(10_000);
    return { forced: true };
  }
}

/**
 * The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22), or null without /proc.
 * A thread id answers kill(0) too, but only a process's own start time matches the one recorded.
 */
function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: count the fields after its last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Stops the instance's own Erlang port mapper, if the release has one (best effort, real CouchDB only). */
export async function stopEpmd(couchdbHome: string, epmdPort: number): Promise<void> {
  let entries: string[];
  try {
    entries = await fsp.readdir(couchdbHome);
  } catch {
    return;
  }
  for (const e of entries.filter((n) => n.startsWith('erts-'))) {
    const epmd = path.join(couchdbHome, e, 'bin', 'epmd');
    if (!fs.existsSync(epmd)) continue;
    await new Promise<void>((resolve) => {
      execFile(epmd, ['-kill'], { env: { PATH: process.env.PATH ?? '', ERL_EPMD_PORT: String(epmdPort) }, timeout: 5000 }, () => resolve());
    });
  }
}

/** Resolves when nothing listens on host:port; throws with the reason (EADDRINUSE, EADDRNOTAVAIL...). */
export async function checkPortFree(host: string, port: number): Promise<void> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host: host === 'any' ? '0.0.0.0' : host, port, exclusive: true }, () => resolve());
  });
  await new Promise<void>((resolve) => srv.close(() => resolve()));
}

const INTERESTING = /error|crash|terminated|eaddrinuse|eacces|enoent|enotdir|erofs|badarg|abort|failed|invalid|cannot|no admin/i;

/**
 * The reason CouchDB gave, from its log since `offset`: the last few error lines (or, failing
 * that, the last lines), one line of at most 600 characters, with every given secret masked.
 */
export async function reasonFromLog(logFile: string, offset: number, secrets: string[] = []): Promise<string> {
  let text = '';
  try {
    const h = await fsp.open(logFile, 'r');
    try {
      const size = (await h.stat()).size;
      // A log rotated since (./logs.ts) is shorter than the offset: read what it holds now.
      const start = Math.max(offset > size ? 0 : offset, size - 256 * 1024);
      const buf = Buffer.alloc(Math.max(0, size - start));
      await h.read(buf, 0, buf.length, start);
      text = buf.toString('utf8');
    } finally {
      await h.close();
    }
  } catch {
    return 'no log output';
  }
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('--- couchtrove agent'));
  const picked = lines.filter((l) => INTERESTING.test(l)).slice(-3);
  let reason = (picked.length ? picked : lines.slice(-3)).join(' | ') || 'no log output';
  for (const s of secrets) if (s.length >= 4) reason = reason.split(s).join('***');
  return reason.length > 600 ? `${reason.slice(0, 597)}...` : reason;
}
