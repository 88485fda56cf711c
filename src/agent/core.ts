// The state every part of the agent shares: the instance's persisted settings and lifecycle state, the
// CouchDB process, the admin credentials, and the two locks (one lifecycle operation at a time; one
// change of CouchDB's configuration at a time). The parts (lifecycle.ts, configuration.ts, backups.ts,
// archiving.ts, operations.ts) each hold this core; agent.ts puts them behind the AgentApi contract.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { AgentError } from './errors.js';
import { CouchClient, type Credentials } from './couchdb.js';
import { CouchManager } from './manage.js';
import { instanceFiles, writePrivateFile } from './files.js';
import { CouchProcess } from './process.js';
import { directPrivileged, type Privileged } from './privileged.js';
import type { ArchiveSettings, InstanceSettings } from './protocol.js';
import { LOG_KEEP, LOG_MAX_BYTES } from './logs.js';
import type { Progress } from '../backup/index.js';
import { describeError } from '../util/errors.js';

export interface AgentOptions {
  /** How long CouchDB may take to answer /_up after a start (default 120 s). */
  startTimeoutMs?: number;
  /** How long a graceful stop may take before SIGKILL (default 60 s). */
  stopTimeoutMs?: number;
  /** One line per lifecycle event; never given a secret. */
  log?: (line: string) => void;
  /** Cap of each log file before it is rotated (default 10 MiB), and rotated files kept (default 3). */
  logMaxBytes?: number;
  logKeep?: number;
  /** Who gives files to the instance's uid (privileged.ts); the agent itself unless it runs in a container. */
  privileged?: Privileged;
}

export interface PersistedState {
  version: 1;
  settings: InstanceSettings;
  uuid: string;
  /** What the operator asked for last. */
  desired: 'RUNNING' | 'SHUTDOWN';
  /** Sticky failure (start or prepare failed); cleared by a successful start or prepare. */
  failure: string | null;
  /** A restore did not complete: the data is not what was asked for; only prepare clears it. */
  restoreFailed: boolean;
  /** prepare was under way when the agent stopped. */
  building: boolean;
  /** Overrides written to local.ini while CouchDB ran: applied at the next restart. */
  pendingRestart: string[];
  pid: number | null;
  /** The kernel's start time of that pid (process.ts processStart): adopted only when it matches. */
  pidStarted?: string | null;
  logOffset: number;
  /** Continuous archiving, as last switched (kept across agent restarts). */
  archive?: ArchiveSettings;
  /** Quota guards may be up (quota.ts): the next agent process removes them once usage falls. */
  quotaGuarded?: boolean;
}

const STATE_FILE = 'agent-state.json';

/** The URL the agent uses to reach its CouchDB (loopback when CouchDB listens on every address). */
export function couchUrl(s: InstanceSettings): string {
  const host = s.bindAddress === 'any' || s.bindAddress === '0.0.0.0' ? '127.0.0.1' : s.bindAddress === '::' ? '::1' : s.bindAddress;
  return `http://${host.includes(':') ? `[${host}]` : host}:${s.port}`;
}

export async function freeLoopbackPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export async function checkWritableDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
    const probe = path.join(dir, `.couchtrove-probe-${randomBytes(4).toString('hex')}`);
    await fsp.writeFile(probe, '');
    await fsp.unlink(probe);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    throw new AgentError('INVALID_ARGUMENT', `data directory ${dir} is not writable${code ? ` (${code})` : ''}: ${describeError(err)}`);
  }
}

export async function usedBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await fsp.lstat(p).catch(() => null);
        if (st) total += st.blocks * 512;
      }
    }
  };
  await walk(dir);
  return total;
}

export class AgentCore {
  state: PersistedState | null = null;
  proc: CouchProcess | null = null;
  /** The lifecycle operation under way, if any. */
  busy: string | null = null;
  progress: Progress | null = null;
  admin: Credentials | null = null;
  manager: CouchManager | null = null;
  version: string | undefined;
  configLock: Promise<unknown> = Promise.resolve();
  /** Set by the supervisor while CouchDB is down and a restart is due. */
  restartNote: string | null = null;
  readonly startTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly log: (line: string) => void;
  readonly privileged: Privileged;
  readonly logMaxBytes: number;
  readonly logKeep: number;

  constructor(
    readonly agentDir: string,
    options: AgentOptions,
  ) {
    this.startTimeoutMs = options.startTimeoutMs ?? 120_000;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 60_000;
    this.log = options.log ?? (() => undefined);
    this.logMaxBytes = options.logMaxBytes ?? LOG_MAX_BYTES;
    this.logKeep = options.logKeep ?? LOG_KEEP;
    this.privileged = options.privileged ?? directPrivileged;
  }

  async load(): Promise<void> {
    let text: string;
    try {
      text = await fsp.readFile(path.join(this.agentDir, STATE_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const st = JSON.parse(text) as PersistedState;
    this.state = st;
    if (st.pid) this.proc = CouchProcess.adopt(st.pid, st.logOffset, st.pidStarted);
    await this.loadSecret().catch(() => undefined);
    if (st.building) {
      // An agent that died during prepare leaves an instance nobody can vouch for.
      st.building = false;
      st.failure = 'the agent stopped while preparing the instance; prepare it again';
      if (st.settings.restore) st.restoreFailed = true;
      await this.persist();
    }
  }

  async loadSecret(): Promise<void> {
    const s = this.requireState().settings;
    const c = JSON.parse(await fsp.readFile(instanceFiles(s).secret, 'utf8')) as Credentials;
    this.admin = { username: c.username, password: c.password };
    this.manager = null;
  }

  async persist(): Promise<void> {
    if (this.state) await writePrivateFile(path.join(this.agentDir, STATE_FILE), `${JSON.stringify(this.state, null, 2)}\n`);
  }

  requireState(): PersistedState {
    if (!this.state) throw new AgentError('CONFLICT', 'the instance has not been prepared');
    return this.state;
  }

  /** One lifecycle operation at a time; a second one is refused while the first runs. */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy) throw new AgentError('CONFLICT', `the agent is busy (${this.busy}); try again when it has finished`);
    this.busy = name;
    try {
      return await fn();
    } finally {
      this.busy = null;
    }
  }

  /** Date.now() of CouchDB's last answer to a periodic check (the managed settings watch, or /_up). */
  lastAnswer = 0;
  answered(): void {
    this.lastAnswer = Date.now();
  }
  /**
   * CouchDB answered a periodic check within ms and its process still runs: status needs no /_up of its
   * own (every probe is a line in the tenant's CouchDB log).
   */
  answeredWithin(ms: number): boolean {
    return this.proc?.running === true && Date.now() - this.lastAnswer <= ms;
  }

  client(timeoutMs?: number): CouchClient {
    const st = this.requireState();
    return new CouchClient(couchUrl(st.settings), this.admin ?? undefined, timeoutMs);
  }

  /** For operations that need a usable CouchDB. */
  requireUsable(): PersistedState {
    const st = this.requireState();
    if (st.restoreFailed) throw new AgentError('CONFLICT', `the instance is FAILED: ${st.failure ?? 'restore did not complete'}`);
    if (this.busy === 'prepare') throw new AgentError('CONFLICT', 'the instance is being prepared');
    if (!this.admin) throw new AgentError('CONFLICT', 'the instance has no admin credentials; prepare it again');
    return st;
  }

  mgr(): CouchManager {
    this.requireUsable();
    return this.managerNoCheck();
  }

  managerNoCheck(): CouchManager {
    if (!this.manager) this.manager = new CouchManager(this.client(), { beforeGrowth: () => this.checkQuota() });
    return this.manager;
  }

  async checkQuota(): Promise<void> {
    const st = this.requireState();
    const quota = st.settings.volumeBytes;
    if (quota === undefined) return;
    const used = await usedBytes(st.settings.dataDir);
    if (used >= quota) throw new AgentError('VOLUME_FULL', `the volume is full: ${used} of ${quota} bytes used`);
  }

  /** Runs fn every intervalMs, never two at once; a failure is logged. Returns the stop function. */
  every(intervalMs: number, what: string, fn: () => Promise<unknown>): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      fn()
        .catch((err: unknown) => this.log(`${what} failed: ${describeError(err)}`))
        .finally(() => (running = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** CouchDB and the agent both write local.ini: one change at a time. */
  withConfigLock<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.configLock.then(fn, fn);
    this.configLock = next.catch(() => undefined);
    return next;
  }
}
