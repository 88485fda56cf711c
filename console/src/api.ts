// The console's API client: the same public Trove v1.0 calls the CLI makes (src/api/client.ts), with the
// token in an X-Auth-Token header (never a cookie or a URL). Types follow the API's views (src/api/views.ts).
import { formatBytes } from '../../src/util/format.js';
import type { CutView } from '../../src/tasks/recovery.js';

export interface Link {
  href: string;
  rel: string;
}

export interface Progress {
  phase?: string;
  bytes_done: number;
  bytes_total: number;
  percent: number;
}

export interface ArchiveView {
  enabled: boolean;
  interval: number;
  keep_days: number;
  restore_point: string | null;
  lag_seconds: number | null;
  behind: boolean;
  window: { from: string | null; to: string | null };
  cuts: { base: number; incremental: number; unchanged: number; failed: number };
  error?: string;
  failing_since?: string;
}

export interface ReplicationView {
  role: string;
  state: string;
  lag: number | null;
  errors: string[];
  last_sync: string | null;
  databases: Array<{ name: string; state: string; lag: number | null; error?: string; doc_count?: number }>;
}

export interface Instance {
  id: string;
  name: string;
  status: string;
  flavor: { id: string; name?: string };
  volume: { size: number; used?: number; used_bytes?: number; size_bytes?: number; full?: boolean };
  datastore: { type: string; version: string; version_number?: string };
  created?: string;
  updated?: string;
  hostname?: string;
  couchdb_url?: string;
  engine?: string;
  engine_warning?: string;
  isolation_warning?: string;
  replica_of?: { id: string };
  replicas?: Array<{ id: string }>;
  configuration?: { id: string; name: string };
  pending_restart?: string[];
  task?: { kind: string; step?: string | null };
  progress?: Progress;
  fault?: { message: string; created: string };
  last_backup?: { id: string; name: string; completed: string; size_bytes: number | null; incremental: boolean };
  data?: { databases: number; documents: number; size_bytes: number };
  archive?: ArchiveView;
  replication?: ReplicationView;
}

export interface Backup {
  id: string;
  name: string;
  description: string | null;
  status: string;
  instance_id: string;
  parent_id: string | null;
  size_bytes: number | null;
  /** The bytes of CouchDB's files the backup covers; size_bytes is what it stores. */
  data_bytes?: number | null;
  created: string;
  updated: string;
  progress?: Progress;
  fail_reason?: string;
  /** Verify (a couchtrove extension): null until first verified; "running", "ok", or "failed: why". */
  verified_at?: string | null;
  verify_result?: string | null;
}

export interface Flavor {
  id: string;
  name: string;
  ram: number;
  vcpus: number;
}

export interface Configuration {
  id: string;
  name: string;
  description: string | null;
  instance_count: number;
}

export interface UserView {
  name: string;
  databases: Array<{ name: string; role: string }>;
}

/** A backup schedule with its retention (src/tasks/schedules.ts scheduleView). */
export interface Schedule {
  id: string;
  name: string;
  description: string | null;
  instance_id: string;
  pattern: string;
  incremental: boolean;
  keep_last: number | null;
  keep_daily: number | null;
  keep_weekly: number | null;
  verify: boolean;
  paused: boolean;
  next_run: string | null;
  last_run: string | null;
  last_result: string | null;
}

/** A cut of an instance's archive (GET /instances/{id}/archive/cuts, a couchtrove extension): the server's own view type. */
export type Cut = CutView;

/** A configuration parameter of the published allow-list (GET /datastores/versions/{v}/parameters). */
export interface Parameter {
  name: string;
  type: 'integer' | 'boolean' | 'string';
  restart_required: boolean;
  min?: number;
  max?: number;
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface Session {
  project: string;
  token: string;
  /** Signed in with local mode's "notused" token: no secret at all. */
  local: boolean;
}

const KEY = 'couchtrove.session';

/** The session lives in sessionStorage (this tab only, gone when it closes), never localStorage or a cookie. */
export function loadSession(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) ?? 'null') as Session | null;
    return s && typeof s.project === 'string' && typeof s.token === 'string' ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null): void {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

export class Api {
  constructor(readonly session: Session) {}

  get base(): string {
    return `/v1.0/${encodeURIComponent(this.session.project)}`;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'x-auth-token': this.session.token, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? null : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    if (text) {
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        throw new ApiError(res.status, `HTTP ${res.status}: ${text.slice(0, 200)}`);
      }
    }
    if (!res.ok) {
      // Trove's error body: {"badRequest": {"code": 400, "message": "..."}}.
      const fault = Object.values(json)[0] as { message?: string } | undefined;
      throw new ApiError(res.status, fault?.message ?? `HTTP ${res.status}`);
    }
    return json as T;
  }

  /** Every page of a list (links rel "next"). */
  async list<T>(path: string, key: string): Promise<T[]> {
    const rows: T[] = [];
    let marker: string | null = null;
    for (let i = 0; i < 1000; i++) {
      const sep = path.includes('?') ? '&' : '?';
      const page: Record<string, unknown> = await this.request<Record<string, unknown>>('GET', `${path}${sep}limit=1000${marker ? `&marker=${encodeURIComponent(marker)}` : ''}`);
      rows.push(...((page[key] as T[] | undefined) ?? []));
      const next = (page.links as Link[] | undefined)?.find((l) => l.rel === 'next');
      marker = next ? new URL(next.href).searchParams.get('marker') : null;
      if (!marker) break;
    }
    return rows;
  }

  /** The listing without live facts (no agent asked): names, status, flavor, archive as last seen; fast. */
  instancesBrief = (): Promise<Instance[]> => this.list<Instance>('/instances', 'instances');
  /** With each instance's live facts (volume used, engine, last backup, replication): one agent call each. */
  instances = (): Promise<Instance[]> => this.list<Instance>('/instances/detail', 'instances');
  instance = async (id: string): Promise<Instance> => (await this.request<{ instance: Instance }>('GET', `/instances/${encodeURIComponent(id)}`)).instance;
  backups = (instanceId?: string): Promise<Backup[]> => this.list<Backup>(instanceId ? `/backups?instance_id=${encodeURIComponent(instanceId)}` : '/backups', 'backups');
  backup = async (id: string): Promise<Backup> => (await this.request<{ backup: Backup }>('GET', `/backups/${encodeURIComponent(id)}`)).backup;
  flavors = async (): Promise<Flavor[]> => (await this.request<{ flavors: Flavor[] }>('GET', '/flavors')).flavors;
  configurations = (): Promise<Configuration[]> => this.list<Configuration>('/configurations', 'configurations');
  databases = async (id: string): Promise<string[]> => (await this.list<{ name: string }>(`/instances/${encodeURIComponent(id)}/databases`, 'databases')).map((d) => d.name);
  users = (id: string): Promise<UserView[]> => this.list<UserView>(`/instances/${encodeURIComponent(id)}/users`, 'users');
  schedules = async (id: string): Promise<Schedule[]> => (await this.request<{ schedules: Schedule[] }>('GET', `/instances/${encodeURIComponent(id)}/schedules`)).schedules;
  /** One page of an archive's cuts whose restore point is in [from, to]; `more`: another page follows. */
  cuts = async (id: string, q: { from?: string | null; to?: string | null; sort: 'asc' | 'desc'; limit: number }): Promise<{ cuts: Cut[]; more: boolean }> => {
    const p = new URLSearchParams({ sort: q.sort, limit: String(q.limit) });
    if (q.from) p.set('from', q.from);
    if (q.to) p.set('to', q.to);
    const r = await this.request<{ cuts: Cut[]; links?: Link[] }>('GET', `/instances/${encodeURIComponent(id)}/archive/cuts?${p.toString()}`);
    return { cuts: r.cuts, more: (r.links ?? []).some((l) => l.rel === 'next') };
  };
  parameters = async (version: string): Promise<Parameter[]> => (await this.request<{ 'configuration-parameters': Parameter[] }>('GET', `/datastores/versions/${encodeURIComponent(version)}/parameters`))['configuration-parameters'];
  action = (id: string, body: unknown): Promise<unknown> => this.request('POST', `/instances/${encodeURIComponent(id)}/action`, body);
}

// ---- formatting -------------------------------------------------------------------------------

export function bytes(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : formatBytes(n);
}

/** The API's times are UTC without a zone (Trove's format). */
export function parseTime(t: string | null | undefined): number {
  if (!t) return NaN;
  return Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(t) ? t : `${t}Z`);
}

export function ago(t: string | null | undefined, now = Date.now()): string {
  const ms = now - parseTime(t);
  if (Number.isNaN(ms)) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function when(t: string | null | undefined): string {
  const ms = parseTime(t);
  return Number.isNaN(ms) ? '—' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export const FINAL_INSTANCE = new Set(['ACTIVE', 'ERROR', 'FAILED', 'SHUTDOWN', 'RESTART_REQUIRED']);
export const FINAL_BACKUP = new Set(['COMPLETED', 'FAILED', 'DELETE_FAILED']);
