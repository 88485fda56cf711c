// The control plane's configuration: one INI file (--config-file / COUCHTROVE_CONFIG_FILE) plus
// environment variables, validated with errors that name the file, line and key. Reference:
// docs/control-plane.md. Precedence: built-in defaults < file < environment < command-line flags.
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsageError } from './catalogue.js';
import { isLoopback } from '../util/net.js';

export interface PortRange {
  from: number;
  to: number;
}

export interface FlavorConfig {
  id: string;
  name: string;
  /** MiB */
  ram: number;
  vcpus: number;
}

export interface DatastoreVersionConfig {
  name: string;
  /** Release directory for this version; absent: COUCHDB_HOME, else the development engine. */
  couchdbHome?: string;
  active: boolean;
  default: boolean;
}

export interface ProjectConfig {
  id: string;
  name: string;
  tokens: string[];
}

export interface CouchdbSection {
  tcpPorts: PortRange[];
  udpPorts: PortRange[];
  backupStrategy: 'CouchDBBackup';
  mountPoint: string;
  /** Seconds provisioning (create, create from backup) may take before the instance goes to ERROR. */
  usageTimeout: number;
  volumeSupport: boolean;
  devicePath: string;
}

export interface ServerConfig {
  configFile?: string;
  stateDir: string;
  host: string;
  port: number;
  /** Base of the links in responses (http(s)://host[:port][/prefix], no trailing slash); absent: http://<host>:<bound port>. Never the request's Host header. */
  publicUrl?: string;
  /** postgres://... instead of SQLite in stateDir/state.db */
  databaseUrl?: string;
  /** Backup repository URL. */
  repository: string;
  /** Backup encryption key file; absent and backupEncryption: stateDir/backup.key, made at first start. */
  backupKeyFile?: string;
  backupEncryption: boolean;
  /** 'local' also accepts the token `notused` for localProject; 'token' accepts configured tokens only. */
  authMode: 'local' | 'token';
  localProject: string;
  region: string;
  /** Seconds a backup may run before it expires (FAILED, deletable). */
  backupTimeout: number;
  /** Seconds restart, resize, delete and configuration tasks may take. */
  taskTimeout: number;
  /** Seconds between two health checks of every idle instance through its agent. */
  healthInterval: number;
  /** Connections each process keeps to PostgreSQL (SQLite: unused). */
  databasePool: number;
  /** Seconds a task stays its process's without a renewal (renewed every third of it); then another process takes it over. */
  taskLease: number;
  /** auto: each instance's CouchDB runs as its own uid when the control plane is root; user: always (or refuse); none: never. */
  instanceIsolation: 'auto' | 'user' | 'none';
  /** The uids (and gids) instances get. */
  instanceUids: PortRange;
  /** Largest volume, GB. */
  maxVolumeSize: number;
  /** Largest request body, bytes. */
  maxBodyBytes: number;
  projects: ProjectConfig[];
  flavors: FlavorConfig[];
  datastoreVersions: DatastoreVersionConfig[];
  couchdb: CouchdbSection;
  /** Path of an Apache CouchDB release (COUCHDB_HOME); absent: the development engine. */
  couchdbHome?: string;
  /** Where instances run: local processes, Docker containers, or Docker Swarm services (docs/compute.md). */
  computeDriver: 'local' | 'docker' | 'swarm';
  /** Swarm: node hostname -> that node's Docker API (volumes live on their node and are removed there). */
  swarmNodeHosts: Record<string, string>;
  /** Docker Engine API endpoint (unix:///path or tcp://host:port); absent: DOCKER_HOST, else the local socket. */
  dockerHost?: string;
  /** The guest image instances run (couchtrove image build). */
  dockerImage: string;
  /** Host address the containers' CouchDB and agent ports are published on. */
  dockerPublishAddress: string;
  /** Address (IP or host name) containers reach the object store on, in place of a loopback host in its endpoints. */
  dockerStorageAddress?: string;
  /** Bearer token /metrics requires when set; in token auth mode /metrics is refused without it (docs/operations.md). */
  metricsToken?: string;
}

export const DEFAULT_FLAVORS: FlavorConfig[] = [
  { id: '1', name: 'tiny', ram: 512, vcpus: 1 },
  { id: '2', name: 'small', ram: 1024, vcpus: 1 },
  { id: '3', name: 'medium', ram: 2048, vcpus: 2 },
  { id: '4', name: 'large', ram: 4096, vcpus: 4 },
];

/** The uids (and gids) isolated instances get, unless instance_uids says otherwise. */
export const DEFAULT_INSTANCE_UIDS: PortRange = { from: 700000, to: 799999 };

export const DEFAULT_COUCHDB: CouchdbSection = {
  tcpPorts: [],
  udpPorts: [],
  backupStrategy: 'CouchDBBackup',
  mountPoint: '/var/lib/couchdb',
  usageTimeout: 400,
  volumeSupport: true,
  devicePath: '/dev/vdb',
};

/** Keys of [DEFAULT] and [couchdb], with their environment variables. */
const DEFAULT_KEYS = ['state_dir', 'host', 'port', 'public_url', 'database_url', 'repository', 'backup_key_file', 'backup_encryption', 'auth_mode', 'local_project',
  'region', 'backup_timeout', 'task_timeout', 'health_interval', 'task_lease', 'database_pool', 'instance_isolation', 'instance_uids', 'max_volume_size', 'max_body_bytes', 'couchdb_home', 'metrics_token',
  'compute_driver', 'docker_host', 'docker_image', 'docker_publish_address', 'docker_storage_address', 'swarm_node_hosts'] as const;
const COUCHDB_KEYS = ['tcp_ports', 'udp_ports', 'backup_strategy', 'mount_point', 'usage_timeout', 'volume_support', 'device_path'] as const;

/**
 * ~/.couchtrove; as root /var/lib/couchtrove, a service's place: instances then run as their own uids,
 * which must pass through every directory above their files, and /root lets nobody through.
 */
export function defaultStateDir(): string {
  return process.getuid?.() === 0 ? '/var/lib/couchtrove' : path.join(os.homedir(), '.couchtrove');
}

export function envName(section: 'DEFAULT' | 'couchdb', key: string): string {
  return section === 'DEFAULT' ? `COUCHTROVE_${key.toUpperCase()}` : `COUCHTROVE_COUCHDB_${key.toUpperCase()}`;
}

interface IniEntry {
  value: string;
  where: string;
}
type IniSection = Map<string, IniEntry>;

/** A small INI reader: [section], key = value, # or ; comments on their own lines. */
export function parseIni(text: string, file: string): Map<string, IniSection> {
  const sections = new Map<string, IniSection>([['DEFAULT', new Map()]]);
  let current = sections.get('DEFAULT')!;
  let currentName = 'DEFAULT';
  text.split(/\r?\n/).forEach((raw, i) => {
    const where = `${file}:${i + 1}`;
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const sec = /^\[([^\]]+)\]$/.exec(line);
    if (sec) {
      currentName = sec[1]!.trim();
      if (sections.has(currentName) && currentName !== 'DEFAULT') throw new UsageError(`${where}: section [${currentName}] appears twice`);
      current = sections.get(currentName) ?? new Map();
      sections.set(currentName, current);
      return;
    }
    const kv = /^([A-Za-z0-9_.-]+)\s*[=:]\s*(.*)$/.exec(line);
    if (!kv) throw new UsageError(`${where}: expected "key = value" or "[section]", got ${JSON.stringify(line.slice(0, 80))}`);
    const key = kv[1]!.toLowerCase();
    if (current.has(key)) throw new UsageError(`${where}: ${key} set twice in [${currentName}]`);
    current.set(key, { value: kv[2]!.trim(), where });
  });
  return sections;
}

const bad = (where: string, key: string, msg: string): never => {
  throw new UsageError(`${where}: ${key}: ${msg}`);
};

export const check = {
  int(where: string, key: string, v: string, min: number, max: number): number {
    if (!/^\d+$/.test(v)) bad(where, key, `expected a whole number, got ${JSON.stringify(v)}`);
    const n = Number(v);
    if (n < min || n > max) bad(where, key, `must be between ${min} and ${max}, got ${n}`);
    return n;
  },
  bool(where: string, key: string, v: string): boolean {
    const l = v.toLowerCase();
    if (['true', 'yes', '1', 'on'].includes(l)) return true;
    if (['false', 'no', '0', 'off'].includes(l)) return false;
    return bad(where, key, `expected true or false, got ${JSON.stringify(v)}`);
  },
  ports(where: string, key: string, v: string): PortRange[] {
    if (v.trim() === '') return [];
    return v.split(',').map((part) => {
      const m = /^\s*(\d+)\s*(?:[-:]\s*(\d+))?\s*$/.exec(part);
      if (!m) return bad(where, key, `expected ports and ranges such as "5984, 15984-15999", got ${JSON.stringify(part.trim())}`);
      const from = Number(m[1]);
      const to = m[2] ? Number(m[2]) : from;
      if (from < 1 || to > 65535 || from > to) bad(where, key, `invalid port range ${JSON.stringify(part.trim())} (1-65535, low-high)`);
      return { from, to };
    });
  },
  uidRange(where: string, key: string, v: string): PortRange {
    const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(v);
    const from = Number(m?.[1]);
    const to = Number(m?.[2]);
    // Above the usual ranges of system and login accounts, below 2^31 (some tools read uids as signed).
    if (!m || from < 1000 || to >= 2 ** 31 || from > to) return bad(where, key, `expected a uid range low-high within 1000-2147483647, got ${JSON.stringify(v)}`);
    return { from, to };
  },
  absolute(where: string, key: string, v: string): string {
    const p = expandHome(v);
    if (!path.isAbsolute(p)) bad(where, key, `expected an absolute path, got ${JSON.stringify(v)}`);
    return p;
  },
  name(where: string, key: string, v: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(v)) bad(where, key, `expected letters, digits, '.', '_', '-' (at most 64), got ${JSON.stringify(v)}`);
    return v;
  },
  token(where: string, key: string, v: string): string {
    if (!/^[\x21-\x7e]{8,256}$/.test(v)) bad(where, key, 'tokens are 8 to 256 printable characters without spaces');
    return v;
  },
  repository(where: string, key: string, v: string): string {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return bad(where, key, `not a URL: ${JSON.stringify(v)} (file:///path, swift://container/prefix, s3://bucket/prefix)`);
    }
    if (!['file:', 'swift:', 's3:'].includes(u.protocol)) bad(where, key, `unsupported scheme ${u.protocol} (file:, swift:, s3:)`);
    if (u.username || u.password) bad(where, key, 'credentials do not belong in the URL: use the storage driver\'s environment variables');
    return v;
  },
  database(where: string, key: string, v: string): string {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return bad(where, key, `not a URL: expected postgres://user@host:port/database`);
    }
    if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') bad(where, key, `expected postgres://user@host:port/database, got scheme ${u.protocol}`);
    return v;
  },
};

/** What is wrong with a public URL, or null: http(s), a host, no credentials, query or fragment. */
export function publicUrlProblem(v: string): string | null {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return `not a URL: ${JSON.stringify(v)} (expected http(s)://host[:port][/prefix])`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `expected an http:// or https:// URL, got ${u.protocol}`;
  if (u.username || u.password) return 'credentials do not belong in a URL that every response shows';
  if (u.search || u.hash || v.includes('?') || v.includes('#')) return 'expected no query or fragment: links are built on it';
  return null;
}

/** The public URL as links use it: without a trailing slash. */
export function normalizePublicUrl(v: string): string {
  return v.replace(/\/+$/, '');
}

export { isLoopback };

export function expandHome(p: string): string {
  if (p === '~') return os.homedir();
  if (p.startsWith('~/')) return path.join(os.homedir(), p.slice(2));
  return p;
}

export interface LoadOptions {
  configFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Command-line values, which win over file and environment. */
  overrides?: { stateDir?: string; host?: string; port?: number; publicUrl?: string };
}

/** Reads and validates the configuration; throws UsageError naming the place and the problem. */
export function loadServerConfig(options: LoadOptions = {}): ServerConfig {
  const env = options.env ?? process.env;
  let sections = new Map<string, IniSection>([['DEFAULT', new Map()]]);
  if (options.configFile) {
    let text: string;
    try {
      text = fs.readFileSync(options.configFile, 'utf8');
    } catch (err) {
      throw new UsageError(`configuration file ${options.configFile}: ${(err as Error).message}`);
    }
    sections = parseIni(text, options.configFile);
  }
  const def = sections.get('DEFAULT')!;
  const couch = sections.get('couchdb') ?? new Map<string, IniEntry>();
  for (const [name, sec] of sections) {
    const known = name === 'DEFAULT' ? DEFAULT_KEYS : name === 'couchdb' ? COUCHDB_KEYS : null;
    if (known) {
      for (const [k, e] of sec) if (!(known as readonly string[]).includes(k)) bad(e.where, k, `unknown key in [${name}]; known: ${known.join(', ')}`);
    } else if (!/^(flavor|project|datastore_version):/.test(name)) {
      throw new UsageError(`${options.configFile}: unknown section [${name}]; expected [DEFAULT], [couchdb], [flavor:ID], [project:ID], [datastore_version:NAME]`);
    }
  }
  // Environment variables override the file, key by key.
  const pick = (sec: IniSection, section: 'DEFAULT' | 'couchdb', key: string): IniEntry | undefined => {
    const e = env[envName(section, key)];
    if (e !== undefined && e !== '') return { value: e, where: `environment ${envName(section, key)}` };
    return sec.get(key);
  };
  const get = <T>(key: string, parse: (where: string, key: string, v: string) => T, dflt: T, sec: IniSection = def, section: 'DEFAULT' | 'couchdb' = 'DEFAULT'): T => {
    const e = pick(sec, section, key);
    return e ? parse(e.where, key, e.value) : dflt;
  };
  const stateDir = options.overrides?.stateDir ?? get('state_dir', check.absolute, defaultStateDir());
  const cfg: ServerConfig = {
    stateDir,
    host: options.overrides?.host ?? get('host', (_w, _k, v) => v, '127.0.0.1'),
    port: options.overrides?.port ?? get('port', (w, k, v) => check.int(w, k, v, 1, 65535), 8779),
    repository: get('repository', check.repository, pathToFileURL(path.join(stateDir, 'backups')).toString()),
    backupEncryption: get('backup_encryption', check.bool, true),
    authMode: get('auth_mode', (w, k, v) => (v === 'local' || v === 'token' ? v : bad(w, k, `expected local or token, got ${JSON.stringify(v)}`)), 'local' as 'local' | 'token'),
    localProject: get('local_project', check.name, 'local'),
    region: get('region', check.name, 'RegionOne'),
    backupTimeout: get('backup_timeout', (w, k, v) => check.int(w, k, v, 5, 7 * 86400), 3600),
    taskTimeout: get('task_timeout', (w, k, v) => check.int(w, k, v, 5, 86400), 600),
    healthInterval: get('health_interval', (w, k, v) => check.int(w, k, v, 1, 300), 5),
    taskLease: get('task_lease', (w, k, v) => check.int(w, k, v, 2, 3600), 15),
    databasePool: get('database_pool', (w, k, v) => check.int(w, k, v, 2, 200), 5),
    instanceIsolation: get('instance_isolation', (w, k, v) => (v === 'auto' || v === 'user' || v === 'none' ? v : bad(w, k, `expected auto, user or none, got ${JSON.stringify(v)}`)), 'auto' as 'auto' | 'user' | 'none'),
    instanceUids: get('instance_uids', check.uidRange, DEFAULT_INSTANCE_UIDS),
    maxVolumeSize: get('max_volume_size', (w, k, v) => check.int(w, k, v, 1, 1 << 20), 1024),
    maxBodyBytes: get('max_body_bytes', (w, k, v) => check.int(w, k, v, 1024, 64 << 20), 1 << 20),
    computeDriver: get('compute_driver', (w, k, v) => (v === 'local' || v === 'docker' || v === 'swarm' ? v : bad(w, k, `expected local, docker or swarm, got ${JSON.stringify(v)}`)), 'local' as 'local' | 'docker' | 'swarm'),
    swarmNodeHosts: get('swarm_node_hosts', (w, k, v) => Object.fromEntries(v.split(',').map((x) => x.trim()).filter((x) => x !== '').map((x) => {
      const m = /^([A-Za-z0-9._-]+)=((?:unix|tcp|http|https):\/\/\S+)$/.exec(x);
      return m ? [m[1]!, m[2]!] : bad(w, k, `expected HOSTNAME=unix:///path or HOSTNAME=tcp://host:port, comma separated, got ${JSON.stringify(x)}`);
    })), {} as Record<string, string>),
    dockerImage: get('docker_image', (w, k, v) => (/^[a-z0-9][a-z0-9._/:@-]*$/i.test(v) ? v : bad(w, k, `not an image reference: ${JSON.stringify(v)}`)), 'couchtrove-guest:latest'),
    dockerPublishAddress: get('docker_publish_address', (w, k, v) => (isIP(v) ? v : bad(w, k, `expected an IP address, got ${JSON.stringify(v)}`)), '127.0.0.1'),
    projects: [],
    flavors: [],
    datastoreVersions: [],
    couchdb: {
      tcpPorts: get('tcp_ports', check.ports, DEFAULT_COUCHDB.tcpPorts, couch, 'couchdb'),
      udpPorts: get('udp_ports', check.ports, DEFAULT_COUCHDB.udpPorts, couch, 'couchdb'),
      backupStrategy: get('backup_strategy', (w, k, v) => (v === 'CouchDBBackup' ? v : bad(w, k, `the only strategy is CouchDBBackup (couchtrove's physical backup), got ${JSON.stringify(v)}`)), DEFAULT_COUCHDB.backupStrategy, couch, 'couchdb'),
      mountPoint: get('mount_point', check.absolute, DEFAULT_COUCHDB.mountPoint, couch, 'couchdb'),
      usageTimeout: get('usage_timeout', (w, k, v) => check.int(w, k, v, 5, 86400), DEFAULT_COUCHDB.usageTimeout, couch, 'couchdb'),
      volumeSupport: get('volume_support', check.bool, DEFAULT_COUCHDB.volumeSupport, couch, 'couchdb'),
      devicePath: get('device_path', check.absolute, DEFAULT_COUCHDB.devicePath, couch, 'couchdb'),
    },
  };
  if (options.configFile) cfg.configFile = options.configFile;
  const publicUrl = options.overrides?.publicUrl ?? get<string | undefined>('public_url', (w, k, v) => {
    const problem = publicUrlProblem(v);
    return problem ? bad(w, k, problem) : v;
  }, undefined);
  if (publicUrl) cfg.publicUrl = normalizePublicUrl(publicUrl);
  const dbUrl = get<string | undefined>('database_url', check.database, undefined);
  if (dbUrl) cfg.databaseUrl = dbUrl;
  const keyFile = get<string | undefined>('backup_key_file', check.absolute, undefined);
  if (keyFile) cfg.backupKeyFile = keyFile;
  const home = get<string | undefined>('couchdb_home', check.absolute, undefined) ?? (env.COUCHDB_HOME ? check.absolute('environment COUCHDB_HOME', 'COUCHDB_HOME', env.COUCHDB_HOME) : undefined);
  if (home) cfg.couchdbHome = home;
  const dockerHost = get<string | undefined>('docker_host', (w, k, v) => (/^(unix|tcp|http|https):\/\//.test(v) ? v : bad(w, k, `expected unix:///path/docker.sock or tcp://host:port, got ${JSON.stringify(v)}`)), undefined);
  if (dockerHost) cfg.dockerHost = dockerHost;
  const storageAddress = get<string | undefined>('docker_storage_address', (w, k, v) => (isIP(v) || /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(v)
    ? (isLoopback(v) ? bad(w, k, `${v} is a container's own loopback: give an address of the object store (or of this host) that containers reach`) : v)
    : bad(w, k, `expected an IP address or a host name, got ${JSON.stringify(v)}`)), undefined);
  if (storageAddress) cfg.dockerStorageAddress = storageAddress;
  const metricsToken = get<string | undefined>('metrics_token', check.token, undefined);
  if (metricsToken) cfg.metricsToken = metricsToken;

  // Sections with an id: flavors, projects, datastore versions.
  for (const [name, sec] of sections) {
    const m = /^(flavor|project|datastore_version):(.*)$/.exec(name);
    if (!m) continue;
    const [, kind, id] = m as unknown as [string, string, string];
    const first = [...sec.values()][0]?.where ?? options.configFile ?? 'configuration';
    const allowed: Record<string, string[]> = { flavor: ['name', 'ram', 'vcpus'], project: ['name', 'tokens'], datastore_version: ['couchdb_home', 'active', 'default'] };
    for (const [k, e] of sec) if (!allowed[kind]!.includes(k)) bad(e.where, k, `unknown key in [${name}]; known: ${allowed[kind]!.join(', ')}`);
    const req = (k: string): IniEntry => sec.get(k) ?? bad(first, k, `[${name}] needs ${k}`);
    if (kind === 'flavor') {
      check.name(first, `[${name}]`, id);
      const n = req('name'), r = req('ram'), c = req('vcpus');
      cfg.flavors.push({ id, name: check.name(n.where, 'name', n.value), ram: check.int(r.where, 'ram', r.value, 128, 4 << 20), vcpus: check.int(c.where, 'vcpus', c.value, 1, 1024) });
    } else if (kind === 'project') {
      check.name(first, `[${name}]`, id);
      const t = req('tokens');
      const tokens = t.value.split(',').map((x) => check.token(t.where, 'tokens', x.trim()));
      const nm = sec.get('name');
      cfg.projects.push({ id, name: nm ? nm.value : id, tokens });
    } else {
      check.name(first, `[${name}]`, id);
      const h = sec.get('couchdb_home'), a = sec.get('active'), d = sec.get('default');
      const v: DatastoreVersionConfig = { name: id, active: a ? check.bool(a.where, 'active', a.value) : true, default: d ? check.bool(d.where, 'default', d.value) : false };
      if (h) v.couchdbHome = check.absolute(h.where, 'couchdb_home', h.value);
      cfg.datastoreVersions.push(v);
    }
  }
  // Environment lists.
  if (env.COUCHTROVE_FLAVORS) {
    cfg.flavors = env.COUCHTROVE_FLAVORS.split(',').map((item) => {
      const where = 'environment COUCHTROVE_FLAVORS';
      const p = item.trim().split(':');
      if (p.length !== 4) return bad(where, 'flavor', `expected ID:NAME:RAM_MB:VCPUS, got ${JSON.stringify(item.trim())}`);
      return { id: check.name(where, 'id', p[0]!), name: check.name(where, 'name', p[1]!), ram: check.int(where, 'ram', p[2]!, 128, 4 << 20), vcpus: check.int(where, 'vcpus', p[3]!, 1, 1024) };
    });
  }
  if (env.COUCHTROVE_DATASTORE_VERSIONS) {
    cfg.datastoreVersions = env.COUCHTROVE_DATASTORE_VERSIONS.split(',').map((v, i) => ({ name: check.name('environment COUCHTROVE_DATASTORE_VERSIONS', 'version', v.trim()), active: true, default: i === 0 }));
  }
  if (env.COUCHTROVE_TOKENS) {
    for (const item of env.COUCHTROVE_TOKENS.split(',')) {
      const where = 'environment COUCHTROVE_TOKENS';
      const i = item.indexOf(':');
      if (i <= 0) bad(where, 'token', 'expected PROJECT:TOKEN[,PROJECT:TOKEN...]');
      const id = check.name(where, 'project', item.slice(0, i).trim());
      const token = check.token(where, 'token', item.slice(i + 1).trim());
      const p = cfg.projects.find((x) => x.id === id);
      if (p) p.tokens.push(token);
      else cfg.projects.push({ id, name: id, tokens: [token] });
    }
  }
  if (cfg.flavors.length === 0) cfg.flavors = DEFAULT_FLAVORS.map((f) => ({ ...f }));
  if (cfg.datastoreVersions.length === 0) cfg.datastoreVersions = [{ name: '3.5', active: true, default: true }];
  if (!cfg.datastoreVersions.some((v) => v.default)) cfg.datastoreVersions[0]!.default = true;
  if (cfg.datastoreVersions.filter((v) => v.default).length > 1) throw new UsageError('configuration: more than one datastore version has default = true');
  const seen = new Map<string, string>();
  for (const p of cfg.projects) {
    for (const t of p.tokens) {
      if (t === 'notused') throw new UsageError(`configuration: project ${p.id}: the token "notused" is what clients send without auth; local mode maps it to local_project`);
      const other = seen.get(t);
      if (other && other !== p.id) throw new UsageError(`configuration: the same token is given to projects ${other} and ${p.id}`);
      seen.set(t, p.id);
    }
  }
  // The metrics token sees every project's counts: one that is also a project's token would hand a tenant
  // the others' instance ids, and "notused" is no secret at all.
  if (cfg.metricsToken !== undefined) {
    if (cfg.metricsToken === 'notused') throw new UsageError('configuration: metrics_token must not be "notused", which clients send without auth');
    const owner = seen.get(cfg.metricsToken);
    if (owner) throw new UsageError(`configuration: metrics_token is also a token of project ${owner}: give metrics its own token`);
  }
  const ids = new Set<string>();
  for (const f of cfg.flavors) {
    if (ids.has(f.id)) throw new UsageError(`configuration: flavor id ${f.id} defined twice`);
    ids.add(f.id);
  }
  if (cfg.authMode === 'token' && cfg.projects.length === 0) {
    throw new UsageError('configuration: auth_mode = token needs at least one [project:ID] with tokens (or COUCHTROVE_TOKENS)');
  }
  // Local mode accepts "notused", which every client sends without credentials: anyone who can reach the
  // port would own the local project. Only this host may reach it.
  if (cfg.authMode === 'local' && !isLoopback(cfg.host)) {
    throw new UsageError(`configuration: auth_mode = local accepts the token "notused" without any credential, so the API may only listen on a loopback address ` +
      `(127.0.0.1, ::1, localhost), not ${JSON.stringify(cfg.host)}: set auth_mode = token with [project:ID] tokens (or COUCHTROVE_TOKENS) to listen there`);
  }
  return cfg;
}

/** CouchDB ini settings a flavor implies (the Erlang VM's schedulers follow vcpus in the agent). */
export function flavorOverrides(f: { ram: number; vcpus: number }): Record<string, string> {
  return {
    'couchdb/max_dbs_open': String(Math.max(100, Math.min(50_000, Math.floor(f.ram / 2)))),
    'query_server_config/os_process_limit': String(Math.max(10, f.vcpus * 25)),
  };
}
