// In-memory test doubles for UNIT tests of the control plane's own logic: an AgentApi and a compute
// driver that places instances without processes. End-to-end tests use the real agent instead.
import type { AgentApi, AgentBackupRequest, ConfigurationResult, InstanceSettings, InstanceStatus, NewUser, UserInfo } from '../../src/agent/protocol.js';
import type { BackupSummary, Progress } from '../../src/backup/types.js';
import type { ComputeDriver, EngineInfo, Placement } from '../../src/compute/driver.js';
import type { BackupEngine } from '../../src/tasks/control.js';
import type { Row } from '../../src/state/index.js';
import { parseOverrides } from '../../src/agent/config-keys.js';
import { AgentError } from '../../src/agent/errors.js';

export interface Gate {
  promise: Promise<void>;
  open(): void;
}
export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

export class FakeAgent implements AgentApi {
  settings: InstanceSettings | undefined;
  state: InstanceStatus['state'] = 'SHUTDOWN';
  dbs = new Set<string>(['_users', '_replicator']);
  users = new Map<string, { password: string; databases: Set<string> }>();
  root: string | null = null;
  overrides: Record<string, string> = {};
  /** Keys written for the next restart, as the real agent reports them. */
  pendingRestart: string[] = [];
  restarts = 0;
  /** Hooks tests use to hold an operation in the middle. */
  backupGate: Gate | undefined;
  startGate: Gate | undefined;
  failStart: string | undefined;
  running: Progress | null = null;

  constructor(readonly repo: FakeRepository) {}

  async prepare(settings: InstanceSettings): Promise<InstanceStatus> {
    this.settings = settings;
    // As the real agent: the ini files are rewritten from the settings, dropping earlier overrides.
    this.overrides = { ...settings.overrides };
    if (settings.restore) {
      const b = this.repo.backups.get(settings.restore.backupId);
      if (!b) throw Object.assign(new Error(`backup ${settings.restore.backupId} not found`), { status: 404 });
      this.dbs = new Set(b.dbs);
      this.users = new Map([...b.users].map(([k, u]) => [k, { password: u.password, databases: new Set(u.databases) }]));
    }
    return { state: this.state };
  }
  async start(): Promise<InstanceStatus> {
    if (this.startGate) await this.startGate.promise;
    if (this.failStart) return { state: 'FAILED', reason: this.failStart };
    this.state = 'RUNNING';
    return { state: this.state, version: '3.5.0' };
  }
  async stop(): Promise<InstanceStatus> {
    this.state = 'SHUTDOWN';
    return { state: this.state };
  }
  restartGate: Gate | undefined;
  async restart(): Promise<InstanceStatus> {
    if (this.restartGate) await this.restartGate.promise;
    this.restarts++;
    this.pendingRestart = [];
    this.state = 'RUNNING';
    return { state: this.state };
  }
  /** The CouchDB version status() reports while RUNNING (none by default, as an agent that cannot tell). */
  reportVersion: string | undefined;
  async status(): Promise<InstanceStatus> {
    if (this.state === 'RUNNING' && this.reportVersion && !this.pendingRestart.length) return { state: this.state, version: this.reportVersion };
    if (this.state === 'RUNNING' && this.pendingRestart.length) return { state: 'RESTART_REQUIRED', reason: `configuration waiting for a restart: ${this.pendingRestart.join(', ')}`, pendingRestart: [...this.pendingRestart] };
    return { state: this.state };
  }
  /** Bytes the volume holds (a test may fill it). */
  usedBytes = 1024 * 1024;
  async volumeUsage(): Promise<{ used: number; total: number }> {
    return { used: this.usedBytes, total: this.settings?.volumeBytes ?? 0 };
  }
  async dataStats(): Promise<{ databases: number; documents: number; fileBytes: number; activeBytes: number }> {
    return { databases: this.dbs.size, documents: 7 * this.dbs.size, fileBytes: 4096 * this.dbs.size, activeBytes: 1024 * this.dbs.size };
  }
  /** Set: the agent's RPC fails as the real client does when nothing answers. */
  unreachable = false;
  async listDatabases(): Promise<string[]> {
    if (this.unreachable) throw new AgentError('UNREACHABLE', 'agent at http://127.0.0.1:1 is not reachable (GET /v1/databases): ECONNREFUSED');
    return [...this.dbs];
  }
  async createDatabase(name: string): Promise<void> {
    if (this.dbs.has(name)) throw Object.assign(new Error(`database ${name} exists`), { status: 412 });
    this.dbs.add(name);
  }
  async deleteDatabase(name: string): Promise<void> {
    this.dbs.delete(name);
    for (const u of this.users.values()) u.databases.delete(name);
  }
  async listUsers(): Promise<UserInfo[]> {
    return [...this.users].map(([name, u]) => ({ name, roles: [], databases: [...u.databases] }));
  }
  async getUser(name: string): Promise<UserInfo> {
    const u = this.users.get(name);
    if (!u) throw Object.assign(new Error(`no user ${name}`), { status: 404 });
    return { name, roles: [], databases: [...u.databases] };
  }
  async createUser(user: NewUser): Promise<void> {
    this.users.set(user.name, { password: user.password, databases: new Set(user.databases ?? []) });
  }
  async deleteUser(name: string): Promise<void> {
    this.users.delete(name);
  }
  async changePassword(name: string, password: string): Promise<void> {
    this.users.get(name)!.password = password;
  }
  async grantAccess(name: string, databases: string[]): Promise<void> {
    for (const d of databases) this.users.get(name)!.databases.add(d);
  }
  async revokeAccess(name: string, database: string): Promise<void> {
    this.users.get(name)!.databases.delete(database);
  }
  async enableRoot(password?: string): Promise<{ name: 'root'; password: string }> {
    this.root = password ?? 'generated-root-password';
    return { name: 'root', password: this.root };
  }
  async isRootEnabled(): Promise<boolean> {
    return this.root !== null;
  }
  async disableRoot(): Promise<void> {
    this.root = null;
  }
  /** The real agent's checks (the catalogue; an AgentError with its HTTP status when refused), then the change. */
  async applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult> {
    const parsed = parseOverrides(overrides, false, true);
    for (const o of parsed) {
      if (o.value === null) delete this.overrides[`${o.section}/${o.key}`];
      else this.overrides[`${o.section}/${o.key}`] = o.value;
    }
    const pending = parsed.filter((o) => o.kind === 'restart').map((o) => `${o.section}/${o.key}`);
    this.pendingRestart = [...new Set([...this.pendingRestart, ...pending])];
    return { applied: parsed.filter((o) => o.kind === 'live').map((o) => `${o.section}/${o.key}`), pending, restartRequired: pending.length > 0 };
  }
  async backup(request: AgentBackupRequest): Promise<BackupSummary & { location: string }> {
    this.running = { phase: 'backup', bytesDone: 0, bytesTotal: 1000, filesDone: 0, filesTotal: 3 };
    if (this.backupGate) {
      this.running = { ...this.running, bytesDone: 400, filesDone: 1 };
      await this.backupGate.promise;
    }
    this.running = null;
    const checksum = 'c'.repeat(64);
    const t = new Date().toISOString();
    const summary: BackupSummary = {
      id: request.id, created: t, completed: t, size: 12345, files: 3, bytes: 1000, totalBytes: 1000, checksum, compression: 'zstd', encrypted: !!request.keyFile,
      parent: null, datastore: { type: 'couchdb', version: '3.5.0' }, labels: request.labels ?? {},
    };
    this.repo.backups.set(request.id, {
      checksum, dbs: [...this.dbs], users: new Map([...this.users].map(([k, u]) => [k, { password: u.password, databases: [...u.databases] }])), summary,
    });
    return { ...summary, location: request.storage };
  }
  async progress(): Promise<Progress | null> {
    return this.running;
  }
}

export class FakeRepository implements BackupEngine {
  backups = new Map<string, { checksum: string; dbs: string[]; users: Map<string, { password: string; databases: string[] }>; summary?: BackupSummary }>();
  async storedChecksum(_repository: string, id: string): Promise<string> {
    const b = this.backups.get(id);
    if (!b) throw new Error(`backup ${id} not found in the repository`);
    return b.checksum;
  }
  async delete(_repository: string, id: string): Promise<void> {
    this.backups.delete(id);
  }
  async stored(_repository: string, id: string): Promise<BackupSummary | null> {
    return this.backups.get(id)?.summary ?? null;
  }
}

export class FakeCompute implements ComputeDriver {
  readonly name = 'fake';
  readonly engine: EngineInfo = { kind: 'devengine', home: '/nonexistent/devengine', warning: 'test engine' };
  agents = new Map<string, FakeAgent>();
  destroyed: string[] = [];
  provisionGate: Gate | undefined;
  private port = 20000;
  constructor(readonly repo: FakeRepository) {}
  agentOf(id: string): FakeAgent {
    let a = this.agents.get(id);
    if (!a) {
      a = new FakeAgent(this.repo);
      this.agents.set(id, a);
    }
    return a;
  }
  async provision(instance: Row<'instances'>): Promise<Placement> {
    if (this.provisionGate) await this.provisionGate.promise;
    this.agentOf(instance.id);
    return { host: '127.0.0.1', port: instance.port ?? this.port++, agentPort: instance.agent_port ?? this.port++, epmdPort: this.port++, agentPid: null, instanceDir: `/fake/${instance.id}`, engine: 'devengine' };
  }
  async ensureAgent(instance: Row<'instances'>): Promise<Placement> {
    return this.provision(instance);
  }
  async agent(instance: Row<'instances'>): Promise<AgentApi> {
    return this.agentOf(instance.id);
  }
  paths(instance: Row<'instances'>): { dataDir: string; agentDir: string } {
    return { dataDir: `/fake/${instance.id}/data`, agentDir: `/fake/${instance.id}/agent` };
  }
  async resizeVolume(): Promise<void> {}
  async destroy(instance: Row<'instances'>): Promise<void> {
    this.agents.delete(instance.id);
    this.destroyed.push(instance.id);
  }
  livePids(): number[] {
    return [];
  }
}
