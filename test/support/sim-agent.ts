// A simulated fleet of agents for the multi-process fault test and the fleet benchmark (issue 18): one HTTP
// server that speaks the agent protocol (src/agent/protocol.ts, as AgentClient sends it) for any number of
// instances under /i/<instance>/, with delays, and keeps a log of every call. It outlives the control-plane
// processes that talk to it, as real agents do, and counts what must never happen twice: a database or user
// created twice, a backup id written twice, two mutating calls on one instance at the same time.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { AgentClient } from '../../src/agent/client.js';
import type { AgentApi, InstanceState } from '../../src/agent/protocol.js';
import type { ComputeDriver, EngineInfo, Placement } from '../../src/compute/driver.js';
import type { Row } from '../../src/state/index.js';
import type { BackupEngine } from '../../src/tasks/control.js';

export interface SimDelays {
  /** ms for ordinary calls: [min, max]. */
  call: [number, number];
  /** ms a backup takes: [min, max]. */
  backup: [number, number];
}

interface SimInstance {
  state: InstanceState;
  prepared: number;
  dbs: Set<string>;
  users: Map<string, string[]>;
  backup: string | null;
  /** The mutating call in progress, if any. */
  busy: string | null;
}

export interface SimCall {
  at: number;
  instance: string;
  method: string;
  path: string;
}

const READS = new Set(['GET']);

export class SimAgents {
  readonly instances = new Map<string, SimInstance>();
  /** Backup id -> the instance it came from. */
  readonly repo = new Map<string, { instance: string; checksum: string }>();
  readonly calls: SimCall[] = [];
  readonly backupCalls = new Map<string, number>();
  readonly repoDeletes = new Map<string, number>();
  readonly destroys = new Map<string, number>();
  /** What must never happen; each entry says what happened. */
  readonly violations: string[] = [];
  #server: http.Server | undefined;
  url = '';

  constructor(private readonly delays: SimDelays = { call: [5, 30], backup: [200, 1000] }) {}

  async start(): Promise<string> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>) : {};
        this.handle(req.method ?? 'GET', req.url ?? '/', body)
          .then(([status, json]) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(json));
          })
          .catch((err: unknown) => {
            res.writeHead(500, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ error: { code: 'INTERNAL', message: String(err) } }));
          });
      });
      // A caller that was killed closes the connection: the agent goes on, as a real one does.
      res.on('error', () => undefined);
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.#server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }

  private delay([lo, hi]: [number, number]): Promise<void> {
    return new Promise((r) => setTimeout(r, lo + Math.random() * (hi - lo)));
  }

  private inst(id: string): SimInstance {
    let i = this.instances.get(id);
    if (!i) {
      i = { state: 'SHUTDOWN', prepared: 0, dbs: new Set(['_users', '_replicator']), users: new Map(), backup: null, busy: null };
      this.instances.set(id, i);
    }
    return i;
  }

  private async handle(method: string, url: string, body: Record<string, unknown>): Promise<[number, unknown]> {
    const repoM = /^\/repo\/([^/]+)$/.exec(url);
    if (repoM) {
      const id = decodeURIComponent(repoM[1]!);
      if (method === 'DELETE') {
        this.repoDeletes.set(id, (this.repoDeletes.get(id) ?? 0) + 1);
        this.repo.delete(id);
        return [204, null];
      }
      const b = this.repo.get(id);
      return b ? [200, { checksum: b.checksum }] : [404, { error: { code: 'NOT_FOUND', message: `backup ${id} not found` } }];
    }
    const m = /^\/i\/([^/]+)(\/.*)$/.exec(url);
    if (!m) return [404, { error: { code: 'NOT_FOUND', message: url } }];
    const id = decodeURIComponent(m[1]!);
    const route = m[2]!;
    this.calls.push({ at: Date.now(), instance: id, method, path: route });
    const i = this.inst(id);
    const mutating = !READS.has(method) && route !== '/v1/progress';
    if (mutating) {
      if (i.busy) this.violations.push(`instance ${id}: ${method} ${route} while ${i.busy} runs`);
      i.busy = `${method} ${route}`;
    }
    try {
      if (route === '/v1/backups' && method === 'POST') return await this.backup(id, i, body);
      await this.delay(this.delays.call);
      return this.route(id, i, method, route, body);
    } finally {
      if (mutating) i.busy = null;
    }
  }

  private async backup(id: string, i: SimInstance, body: Record<string, unknown>): Promise<[number, unknown]> {
    const bid = String(body.id);
    const n = (this.backupCalls.get(bid) ?? 0) + 1;
    this.backupCalls.set(bid, n);
    if (n > 1) this.violations.push(`backup ${bid} requested ${n} times`);
    if (this.repo.has(bid)) return [409, { error: { code: 'ALREADY_EXISTS', message: `backup ${bid} exists` } }];
    if (i.state !== 'RUNNING') return [409, { error: { code: 'NOT_RUNNING', message: 'CouchDB is not running' } }];
    if (i.backup) return [409, { error: { code: 'CONFLICT', message: `backup ${i.backup} runs` } }];
    i.backup = bid;
    const created = new Date().toISOString();
    try {
      await this.delay(this.delays.backup);
    } finally {
      i.backup = null;
    }
    const checksum = createHash('sha256').update(bid).digest('hex');
    this.repo.set(bid, { instance: id, checksum });
    return [200, {
      id: bid, created, completed: new Date().toISOString(), size: 4096, files: 3, bytes: 8192, totalBytes: 8192, checksum, compression: 'zstd',
      encrypted: false, parent: (body.parent as string | undefined) ?? null, datastore: { type: 'couchdb', version: '3.5.0' }, labels: body.labels ?? {},
      location: String(body.storage),
    }];
  }

  private route(id: string, i: SimInstance, method: string, route: string, body: Record<string, unknown>): [number, unknown] {
    const err = (status: number, code: string, message: string): [number, unknown] => [status, { error: { code, message } }];
    const key = `${method} ${route.replace(/^\/v1\/(users|databases)\/[^/]+/, '/v1/$1/X')}`;
    switch (key) {
      case 'POST /v1/prepare': i.prepared++; return [200, { state: i.state }];
      case 'POST /v1/start': case 'POST /v1/restart': i.state = 'RUNNING'; return [200, { state: i.state, version: '3.5.0' }];
      case 'POST /v1/stop': i.state = 'SHUTDOWN'; return [200, { state: i.state }];
      case 'GET /v1/status': return [200, { state: i.state, version: '3.5.0' }];
      case 'GET /v1/volume': return [200, { used: 8192, total: 1 << 30 }];
      case 'GET /v1/progress': return [200, { progress: i.backup ? { phase: 'backup', bytesDone: 1, bytesTotal: 2, filesDone: 0, filesTotal: 3 } : null }];
      case 'GET /v1/databases': return [200, [...i.dbs]];
      case 'POST /v1/databases': {
        const name = String(body.name);
        if (i.dbs.has(name)) {
          this.violations.push(`instance ${id}: database ${name} created twice`);
          return err(409, 'ALREADY_EXISTS', `database ${name} exists`);
        }
        i.dbs.add(name);
        return [201, { ok: true }];
      }
      case 'GET /v1/users': return [200, [...i.users].map(([name, databases]) => ({ name, roles: [], databases }))];
      case 'POST /v1/users': {
        const name = String(body.name);
        if (i.users.has(name)) {
          this.violations.push(`instance ${id}: user ${name} created twice`);
          return err(409, 'ALREADY_EXISTS', `user ${name} exists`);
        }
        i.users.set(name, (body.databases as string[] | undefined) ?? []);
        return [201, { ok: true }];
      }
      case 'POST /destroy': this.destroys.set(id, (this.destroys.get(id) ?? 0) + 1); i.state = 'SHUTDOWN'; return [200, { ok: true }];
      case 'POST /resize': return [200, { ok: true }];
      case 'POST /v1/configuration': return [200, { applied: Object.keys(body.overrides ?? {}), pendingRestart: [] }];
      default: return err(404, 'NOT_FOUND', `no route ${key}`);
    }
  }
}

/** Places instances on the simulated agents: no processes, no ports of their own. */
export class SimCompute implements ComputeDriver {
  readonly name = 'simulated';
  readonly engine: EngineInfo = { kind: 'devengine', home: '/nonexistent', warning: 'simulated agents (test and benchmark only)' };
  constructor(private readonly simUrl: string, private readonly dir = '/tmp/couchtrove-sim') {}

  private placement(inst: Row<'instances'>): Placement {
    const port = Number(new URL(this.simUrl).port);
    return { host: '127.0.0.1', port, agentPort: port, epmdPort: 0, agentPid: null, instanceDir: `${this.dir}/${inst.id}`, engine: 'devengine' };
  }

  private async post(path: string): Promise<void> {
    const r = await fetch(`${this.simUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    if (!r.ok) throw new Error(`simulated agent: ${r.status} for ${path}`);
  }

  async provision(inst: Row<'instances'>): Promise<Placement> {
    return this.placement(inst);
  }
  async ensureAgent(inst: Row<'instances'>): Promise<Placement> {
    return this.placement(inst);
  }
  async agent(inst: Row<'instances'>): Promise<AgentApi> {
    return new AgentClient(`${this.simUrl}/i/${encodeURIComponent(inst.id)}`, 'simulated', { timeoutMs: 30_000, longTimeoutMs: 120_000 });
  }
  paths(inst: Row<'instances'>): { dataDir: string; agentDir: string } {
    return { dataDir: `${this.dir}/${inst.id}/data`, agentDir: `${this.dir}/${inst.id}/agent` };
  }
  async resizeVolume(inst: Row<'instances'>): Promise<void> {
    await this.post(`/i/${encodeURIComponent(inst.id)}/resize`);
  }
  async destroy(inst: Row<'instances'>): Promise<void> {
    await this.post(`/i/${encodeURIComponent(inst.id)}/destroy`);
  }
  livePids(): number[] {
    return [];
  }
}

/** The repository behind the simulated agents, as the control plane's backup engine sees it. */
export function simBackupEngine(simUrl: string): BackupEngine {
  return {
    async storedChecksum(_repository, id) {
      const r = await fetch(`${simUrl}/repo/${encodeURIComponent(id)}`);
      if (!r.ok) throw new Error(`backup ${id} not found`);
      return ((await r.json()) as { checksum: string }).checksum;
    },
    async delete(_repository, id) {
      const r = await fetch(`${simUrl}/repo/${encodeURIComponent(id)}`, { method: 'DELETE' });
      if (!r.ok) throw new Error(`simulated repository: ${r.status}`);
    },
  };
}
