// The local-process compute driver: every instance is a directory under the state dir
// (instances/<id>/), with its data directory as its volume (the size is a quota the agent enforces),
// a free loopback port for CouchDB, and its own agent process `couchtrove agent serve --config FILE`
// (AgentServeConfig; the bearer token in a 0600 file). Agents run detached, so instances keep running
// while the control plane restarts; ensureAgent starts a dead agent again.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentApi, AgentServeConfig } from '../agent/protocol.js';
import type { Row } from '../state/index.js';
import { DEFAULT_INSTANCE_UIDS, type PortRange } from '../config/server.js';
import { agentAnswers, type ComputeDriver, type EngineInfo, type InstancePaths, type Placement } from './driver.js';

export type AgentFactory = (baseUrl: string, token: string) => AgentApi | Promise<AgentApi>;

export interface LocalDriverOptions {
  stateDir: string;
  /** Apache CouchDB release directory (COUCHDB_HOME); absent: the development engine. */
  couchdbHome?: string;
  /** Ports CouchDB may be given ([couchdb] tcp_ports); empty: any free port. */
  tcpPorts?: PortRange[];
  /** Ports already given to other instances. */
  usedPorts?: () => Promise<number[]>;
  agentFactory?: AgentFactory;
  /** Command that runs the couchtrove CLI (default: this node and bin/couchtrove.js). */
  cli?: string[];
  /** How long a new agent may take to answer, ms. */
  agentStartMs?: number;
  /**
   * 'user': each instance's CouchDB runs as its own uid (and gid), taken from uidRange, owning its files
   * alone (needs root); 'none': as the control plane's user; 'auto' (default): 'user' when root.
   */
  isolation?: 'auto' | 'user' | 'none';
  uidRange?: PortRange;
  /** Said once at start (why isolation is off, say). */
  log?: (line: string) => void;
}

/** Host-wide claims of instance uids (see allocateUid). */
export const UID_CLAIMS = '/var/lib/couchtrove/uid-claims';

/**
 * The first directory on the way to dir (itself included) that other users cannot search, or null. One
 * that does not exist yet is no obstacle: the driver creates what it needs searchable.
 */
export function unsearchable(dir: string): string | null {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = fs.statSync(d, { throwIfNoEntry: false });
    if (st && (st.mode & 0o001) === 0) return d;
    if (path.dirname(d) === d) return null;
  }
}

/** uids named in /etc/passwd: never given to an instance. */
function passwdUids(): Set<number> {
  try {
    return new Set(fs.readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => Number(l.split(':')[2])).filter((n) => Number.isInteger(n)));
  } catch {
    return new Set();
  }
}

/** The repository root (holds package.json), from this module's place in src/ or dist/src/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'bin'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the couchtrove package root');
    dir = up;
  }
}

export function engineInfo(couchdbHome?: string): EngineInfo {
  if (couchdbHome) return { kind: 'couchdb', home: couchdbHome };
  return {
    kind: 'devengine',
    home: path.join(packageRoot(), 'devengine', 'release'),
    warning: 'COUCHDB_HOME is not set: instances run on the development engine (a CouchDB stand-in for development and tests), not on Apache CouchDB',
  };
}

export async function defaultAgentFactory(baseUrl: string, token: string): Promise<AgentApi> {
  // The agent client is another component's module; loaded at run time so this driver builds without it.
  const mod = (await import(new URL('../agent/client.js', import.meta.url).href)) as { AgentClient: new (u: string, t: string) => AgentApi };
  return new mod.AgentClient(baseUrl, token);
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

async function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

function alive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class LocalProcessDriver implements ComputeDriver {
  readonly name = 'local';
  readonly engine: EngineInfo;
  private readonly cli: string[];
  private readonly factory: AgentFactory;
  private readonly clients = new Map<string, Promise<AgentApi>>();
  private readonly allocating = new Set<number>();
  /** Instance id -> its uid, remembered past destroy so that livePids can still look for its processes. */
  private readonly uids = new Map<string, number>();

  /** Whether instances get their own uid (resolved once from options.isolation). */
  readonly isolated: boolean;
  isolationWarning?: string;

  constructor(private readonly options: LocalDriverOptions) {
    this.engine = engineInfo(options.couchdbHome);
    this.cli = options.cli ?? [process.execPath, path.join(packageRoot(), 'bin', 'couchtrove.js')];
    this.factory = options.agentFactory ?? defaultAgentFactory;
    this.isolated = this.resolveIsolation(options.isolation ?? 'auto');
  }

  /**
   * Fails closed: as root, `auto` isolates or refuses to start naming the directory to fix; running tenants as
   * root takes an explicit `none`, and then says so in every show and in /health. Without root there is no
   * other uid to give (a laptop): `auto` runs instances as the control plane's user, and says so at start.
   */
  private resolveIsolation(mode: 'auto' | 'user' | 'none'): boolean {
    const root = process.getuid?.() === 0;
    if (mode === 'none') {
      if (root) this.isolationWarning = 'instance_isolation = none: every instance\'s CouchDB runs as root, so a tenant with root on its instance can reach the host and other tenants';
      if (root) this.options.log?.(`WARNING: ${this.isolationWarning}`);
      return false;
    }
    // The instance's uid must reach the engine's release directory (and the development engine's code),
    // and pass through every directory above the state directory (which is ours to open).
    const blocked = unsearchable(path.join(this.engine.home, 'bin')) ?? unsearchable(path.dirname(path.resolve(this.options.stateDir)));
    if (!root) {
      if (mode === 'user') throw new Error('instance_isolation = user: the control plane does not run as root');
      this.options.log?.('instances run as the control plane\'s own user, not each as its own: the control plane does not run as root');
      return false;
    }
    if (blocked) {
      throw new Error(`instance_isolation = ${mode}: ${blocked} is not searchable by other users, so instances cannot run each as its own uid. ` +
        `Make it searchable (chmod o+x ${blocked}), choose a state_dir outside it, or set instance_isolation = none to run every instance as root`);
    }
    return true;
  }

  private dir(id: string): string {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`invalid instance id ${JSON.stringify(id)}`);
    return path.join(this.options.stateDir, 'instances', id);
  }

  paths(instance: Row<'instances'>): InstancePaths {
    const d = instance.instance_dir ?? this.dir(instance.id);
    const uid = this.isolated ? readPlacement(d).uid : undefined;
    if (uid !== undefined) this.uids.set(instance.id, uid);
    return { dataDir: path.join(d, 'data'), agentDir: path.join(d, 'agent'), ...(uid !== undefined ? { runAs: { uid, gid: uid } } : {}) };
  }

  /**
   * The lowest uid of the range that no user of /etc/passwd has and no instance on this host holds. Claims
   * are host-wide (UID_CLAIMS, one file per uid naming the instance directory), since every control plane
   * on the host, whatever its state directory, draws from the same uids; a claim whose directory is gone
   * (an instance removed without its control plane) is taken over.
   */
  private allocateUid(dir: string): number {
    const range = this.options.uidRange ?? DEFAULT_INSTANCE_UIDS;
    const used = passwdUids();
    fs.mkdirSync(UID_CLAIMS, { recursive: true, mode: 0o700 });
    for (let uid = range.from; uid <= range.to; uid++) {
      if (used.has(uid)) continue;
      const claim = path.join(UID_CLAIMS, String(uid));
      try {
        fs.writeFileSync(claim, dir, { flag: 'wx', mode: 0o600 });
        return uid;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = fs.readFileSync(claim, 'utf8');
      // Taken over only when nothing runs as it any more (a test or crash may have removed the directory only).
      if (holder === dir || (!fs.existsSync(holder) && processesOf(uid).length === 0)) {
        fs.writeFileSync(claim, dir, { mode: 0o600 });
        return uid;
      }
    }
    throw new Error(`no free uid left in instance_uids (${range.from}-${range.to})`);
  }

  /** The state dir and instances/ are searchable (not listable) by instance uids; what is above them must be too. */
  private prepareTree(): void {
    const root = path.join(this.options.stateDir, 'instances');
    fs.mkdirSync(root, { recursive: true, mode: 0o711 });
    for (const d of [this.options.stateDir, root]) if ((fs.statSync(d).mode & 0o001) === 0) fs.chmodSync(d, fs.statSync(d).mode | 0o111);
    const blocked = unsearchable(root);
    if (blocked) throw new Error(`instances run as their own users, who cannot reach ${root}: ${blocked} is not searchable by other users (chmod o+x it, or choose a state_dir such as /var/lib/couchtrove)`);
  }

  private async allocatePort(): Promise<number> {
    const ranges = this.options.tcpPorts ?? [];
    if (ranges.length === 0) return this.allocateFreePort();
    const used = new Set([...(await this.options.usedPorts?.()) ?? [], ...this.allocating]);
    for (const r of ranges) {
      for (let p = r.from; p <= r.to; p++) {
        if (!used.has(p) && (await portFree(p))) {
          this.allocating.add(p);
          return p;
        }
      }
    }
    throw new Error(`no free port left in [couchdb] tcp_ports (${ranges.map((r) => (r.from === r.to ? r.from : `${r.from}-${r.to}`)).join(', ')})`);
  }

  /** A free loopback port that no instance holds and no provisioning in this process is about to take. */
  private async allocateFreePort(): Promise<number> {
    const used = new Set([...(await this.options.usedPorts?.()) ?? [], ...this.allocating]);
    for (let i = 0; i < 50; i++) {
      const p = await freePort();
      if (!used.has(p)) {
        this.allocating.add(p);
        return p;
      }
    }
    throw new Error('no free loopback port');
  }

  async provision(instance: Row<'instances'>): Promise<Placement> {
    const dir = this.dir(instance.id);
    if (this.isolated) this.prepareTree();
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(dir, 'agent'), { recursive: true, mode: 0o700 });
    // CouchDB (as the instance's uid) passes through the instance directory to its data and ini files.
    if (this.isolated) fs.chmodSync(dir, 0o711);
    // A provisioning interrupted by a crash left its choices in placement.json: reuse them (and adopt the agent).
    const placementFile = path.join(dir, 'placement.json');
    const saved = readPlacement(dir);
    const port = instance.port ?? saved.port ?? (await this.allocatePort());
    // The kernel may hand a port just released to the next free-port probe, and ports saved in placement.json are
    // not in this process's allocating set: each must differ from the others.
    const distinct = async (taken: number[]): Promise<number> => {
      for (;;) {
        const p = await this.allocateFreePort();
        if (!taken.includes(p)) return p;
      }
    };
    const agentPort = instance.agent_port ?? saved.agentPort ?? (await distinct([port]));
    const epmdPort = instance.epmd_port ?? saved.epmdPort ?? (await distinct([port, agentPort]));
    // A cluster member's peers reach it on one fixed distribution port (the cluster's epmd names it).
    const distPort = instance.dist_port ?? saved.distPort ?? (instance.cluster_id ? await distinct([port, agentPort, epmdPort]) : undefined);
    const uid = this.isolated ? (saved.uid ?? this.allocateUid(dir)) : undefined;
    if (uid !== undefined) this.uids.set(instance.id, uid);
    fs.writeFileSync(placementFile, JSON.stringify({ port, agentPort, epmdPort, ...(distPort !== undefined ? { distPort } : {}), ...(uid !== undefined ? { uid } : {}) }) + '\n', { mode: 0o600 });
    if (instance.agent_pid === null) {
      const pid = Number(fs.existsSync(path.join(dir, 'agent.pid')) ? fs.readFileSync(path.join(dir, 'agent.pid'), 'utf8').trim() : NaN);
      if (Number.isInteger(pid) && pid > 0) instance = { ...instance, agent_pid: pid };
    }
    const tokenFile = path.join(dir, 'agent.token');
    if (!fs.existsSync(tokenFile)) fs.writeFileSync(tokenFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    const config: AgentServeConfig = { host: '127.0.0.1', port: agentPort, tokenFile, instanceDir: path.join(dir, 'agent') };
    fs.writeFileSync(path.join(dir, 'agent.json'), JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
    const placement: Placement = { host: '127.0.0.1', port, agentPort, epmdPort, ...(distPort !== undefined ? { distPort } : {}), agentPid: instance.agent_pid, instanceDir: dir, engine: instance.engine === 'couchdb' || instance.engine === 'devengine' ? instance.engine : this.engine.kind };
    return this.ensureAgent({ ...instance, instance_dir: dir, port, agent_port: agentPort, epmd_port: epmdPort }, placement);
  }

  async ensureAgent(instance: Row<'instances'>, placement?: Placement): Promise<Placement> {
    const dir = instance.instance_dir ?? this.dir(instance.id);
    const p: Placement = placement ?? {
      host: instance.host ?? '127.0.0.1', port: instance.port ?? 0, agentPort: instance.agent_port ?? 0, epmdPort: instance.epmd_port ?? 0,
      agentPid: instance.agent_pid, instanceDir: dir, engine: (instance.engine as EngineInfo['kind'] | null) ?? this.engine.kind,
    };
    if (alive(p.agentPid) && (await this.answers(instance))) return p;
    if (!fs.existsSync(path.join(dir, 'agent.json'))) throw new Error(`instance ${instance.id} has no agent configuration in ${dir}`);
    const log = fs.openSync(path.join(dir, 'agent.log'), 'a', 0o600);
    const [cmd, ...args] = this.cli;
    const child = spawn(cmd!, [...args, 'agent', 'serve', '--config', path.join(dir, 'agent.json')], {
      detached: true,
      stdio: ['ignore', log, log],
      cwd: dir,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    fs.closeSync(log);
    child.unref();
    const pid = child.pid ?? null;
    if (pid) fs.writeFileSync(path.join(dir, 'agent.pid'), `${pid}\n`, { mode: 0o600 });
    this.clients.delete(instance.id);
    const until = Date.now() + (this.options.agentStartMs ?? 20_000);
    let exited: number | null = null;
    child.once('exit', (code) => (exited = code ?? -1));
    while (Date.now() < until) {
      if (exited !== null) throw new Error(`the agent of instance ${instance.id} exited with ${exited} at start: see ${path.join(dir, 'agent.log')}`);
      if (await this.answers({ ...instance, instance_dir: dir, agent_port: p.agentPort })) return { ...p, agentPid: pid };
      await new Promise((r) => setTimeout(r, 100));
    }
    if (pid) killGroup(pid, 'SIGKILL');
    throw new Error(`the agent of instance ${instance.id} did not answer within ${(this.options.agentStartMs ?? 20_000) / 1000} s: see ${path.join(dir, 'agent.log')}`);
  }

  private async answers(instance: Row<'instances'>): Promise<boolean> {
    if (!instance.agent_port) return false;
    if (await agentAnswers(() => this.agent(instance))) return true;
    this.clients.delete(instance.id);
    return false;
  }

  async agent(instance: Row<'instances'>): Promise<AgentApi> {
    let c = this.clients.get(instance.id);
    if (!c) {
      if (!instance.agent_port) throw new Error(`instance ${instance.id} has no agent yet`);
      const dir = instance.instance_dir ?? this.dir(instance.id);
      const token = fs.readFileSync(path.join(dir, 'agent.token'), 'utf8').trim();
      c = Promise.resolve(this.factory(`http://127.0.0.1:${instance.agent_port}`, token));
      this.clients.set(instance.id, c);
    }
    return c;
  }

  async resizeVolume(): Promise<void> {
    // A directory has no size of its own: the new quota reaches the agent through prepare().
  }

  livePids(instance: Row<'instances'>): number[] {
    const dir = instance.instance_dir ?? this.dir(instance.id);
    const uid = this.uids.get(instance.id);
    const pids = [...(alive(instance.agent_pid) ? [instance.agent_pid!] : []), ...processesUsing(dir), ...(uid !== undefined ? processesOf(uid) : [])];
    return [...new Set(pids)];
  }

  async destroy(instance: Row<'instances'>): Promise<void> {
    // CouchDB outlives its agent; a dead agent is started again so that it stops CouchDB.
    if (instance.agent_port && !alive(instance.agent_pid) && fs.existsSync(path.join(instance.instance_dir ?? this.dir(instance.id), 'agent.json'))) {
      try {
        const p = await this.ensureAgent(instance);
        instance = { ...instance, agent_pid: p.agentPid };
      } catch {
        // nothing more can be done through the agent
      }
    }
    if (instance.agent_port && alive(instance.agent_pid)) {
      try {
        const a = await this.agent(instance);
        await Promise.race([a.stop(), new Promise((r) => setTimeout(r, 30_000))]);
      } catch {
        // The agent may already be gone; the process group is killed below.
      }
    }
    if (instance.agent_pid) {
      killGroup(instance.agent_pid, 'SIGTERM');
      const until = Date.now() + 10_000;
      while (alive(instance.agent_pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      if (alive(instance.agent_pid)) killGroup(instance.agent_pid, 'SIGKILL');
    }
    this.clients.delete(instance.id);
    if (instance.port) this.allocating.delete(instance.port);
    // Safety net: CouchDB outlives its agent by design, and an agent that could not stop it (busy,
    // or gone) would leave it running. Anything still started from the instance's directory goes.
    const dir = instance.instance_dir ?? this.dir(instance.id);
    await killProcessesUsing(dir);
    // An isolated instance's uid owns nothing else: whatever still runs as it (an epmd, a couchjs) goes too.
    const uid = readPlacement(dir).uid;
    if (uid !== undefined) {
      for (const pid of processesOf(uid)) killGroup(pid, 'SIGKILL');
      const until = Date.now() + 10_000;
      while (processesOf(uid).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    }
    fs.rmSync(dir, { recursive: true, force: true });
    if (uid !== undefined) releaseUid(uid, dir);
  }
}

function releaseUid(uid: number, dir: string): void {
  const claim = path.join(UID_CLAIMS, String(uid));
  try {
    if (fs.readFileSync(claim, 'utf8') === dir) fs.rmSync(claim);
  } catch {
    // not claimed, or by another instance now
  }
}

interface SavedPlacement {
  port?: number;
  agentPort?: number;
  epmdPort?: number;
  distPort?: number;
  /** The instance's own uid (and gid), when instances are isolated. */
  uid?: number;
}

function readPlacement(dir: string): SavedPlacement {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'placement.json'), 'utf8')) as SavedPlacement;
  } catch {
    return {};
  }
}

/** Pids whose command line or environment names dir (Linux /proc; nothing elsewhere). */
export function processesUsing(dir: string): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return pids;
  }
  const needle = dir.endsWith('/') ? dir : `${dir}/`;
  for (const p of entries) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      let env = '';
      try {
        env = fs.readFileSync(`/proc/${p}/environ`, 'utf8');
      } catch {
        // not ours to read
      }
      if (cmd.includes(needle) || env.includes(needle) || cmd.includes(`${dir}\0`)) pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}

/** Pids running as uid, zombies left out (Linux /proc; nothing elsewhere). */
export function processesOf(uid: number): number[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  return entries.filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      const status = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      return new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status) && !/^State:\s+Z/m.test(status);
    } catch {
      return false;
    }
  }).map(Number);
}

async function killProcessesUsing(dir: string): Promise<void> {
  let pids = processesUsing(dir);
  if (pids.length === 0) return;
  for (const pid of pids) killGroup(pid, 'SIGTERM');
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    pids = pids.filter((pid) => alive(pid));
    if (pids.length === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const pid of pids) killGroup(pid, 'SIGKILL');
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}
