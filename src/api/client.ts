// The CLI's client for the couchtrove (Trove v1.0) API, and its output helpers: tables by default,
// JSON with --json, a progress bar while --wait follows a task.
import cliProgress from 'cli-progress';
import type { CommandIO } from '../cli/command.js';
import { CouchtroveError } from '../util/errors.js';

export type JsonObject = { [k: string]: unknown };

export class ApiError extends CouchtroveError {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ClientOptions {
  apiUrl?: string;
  apiToken?: string;
  apiProject?: string;
}

export class TroveApiClient {
  readonly base: string;
  private readonly token: string;
  constructor(options: ClientOptions) {
    const url = (options.apiUrl ?? 'http://127.0.0.1:8779').replace(/\/+$/, '');
    this.base = `${url}/v1.0/${encodeURIComponent(options.apiProject ?? 'local')}`;
    this.token = options.apiToken ?? 'notused';
  }

  async request(method: string, path: string, body?: unknown): Promise<JsonObject> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: { 'x-auth-token': this.token, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(120_000),
      });
    } catch (err) {
      throw new CouchtroveError(`cannot reach the couchtrove API at ${this.base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
    }
    const text = await res.text();
    let json: JsonObject = {};
    if (text) {
      try {
        json = JSON.parse(text) as JsonObject;
      } catch {
        throw new ApiError(res.status, `${method} ${path}: HTTP ${res.status}: ${text.slice(0, 200)}`);
      }
    }
    if (!res.ok) {
      const fault = Object.values(json)[0] as { message?: string } | undefined;
      throw new ApiError(res.status, `${fault?.message ?? `HTTP ${res.status}`} (HTTP ${res.status})`);
    }
    return json;
  }

  get(path: string): Promise<JsonObject> {
    return this.request('GET', path);
  }

  /** Every page of a list, following links rel next. */
  async list(path: string, key: string, limit?: number, marker?: string): Promise<JsonObject[]> {
    const q = new URLSearchParams();
    if (limit) q.set('limit', String(limit));
    if (marker) q.set('marker', marker);
    const first = await this.get(`${path}${q.size ? (path.includes('?') ? '&' : '?') + q.toString() : ''}`);
    const rows = [...((first[key] as JsonObject[] | undefined) ?? [])];
    if (limit) return rows; // one page asked for
    let links = first.links as Array<{ rel: string; href: string }> | undefined;
    for (let i = 0; i < 10_000; i++) {
      const next = links?.find((l) => l.rel === 'next');
      if (!next) break;
      const u = new URL(next.href);
      // The link's base is the server's public URL, which may have a path prefix (a proxy).
      const page = await this.get(u.pathname.replace(/^.*?\/v1\.0\/[^/]+/, '') + u.search);
      rows.push(...((page[key] as JsonObject[] | undefined) ?? []));
      links = page.links as Array<{ rel: string; href: string }> | undefined;
    }
    return rows;
  }

  /** An instance by id, or by name through the list (as the Trove clients do). */
  async instanceId(ref: string): Promise<string> {
    try {
      const r = await this.get(`/instances/${encodeURIComponent(ref)}`);
      return (r.instance as JsonObject).id as string;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      const matches = (await this.list('/instances', 'instances')).filter((i) => i.name === ref);
      if (matches.length === 1) return matches[0]!.id as string;
      if (matches.length > 1) throw new CouchtroveError(`more than one instance is named ${ref}: use the id`);
      throw err;
    }
  }
}

// ---- output -----------------------------------------------------------------------------------

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') {
    if (Array.isArray(v)) return v.map((x) => (typeof x === 'object' && x !== null && 'name' in x ? String((x as JsonObject).name) : cell(x))).join(', ');
    const o = v as JsonObject;
    if ('type' in o && 'version' in o) return `${String(o.type)} ${String(o.version)}`;
    if ('id' in o) return String(o.id);
    if ('size' in o) return 'used' in o ? `${String(o.size)} (used ${String(o.used)})` : String(o.size);
    return JSON.stringify(o);
  }
  return String(v);
}

export function table(rows: JsonObject[], columns: string[]): string {
  const data = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...data.map((d) => d[i]!.length)));
  const line = (cells: string[]): string => cells.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...data.map(line)].join('\n') + '\n';
}

/** A key/value listing of one object. */
export function details(o: JsonObject): string {
  const keys = Object.keys(o).filter((k) => k !== 'links');
  const w = Math.max(...keys.map((k) => k.length));
  return keys.map((k) => `${k.padEnd(w)}  ${cell(o[k])}`).join('\n') + '\n';
}

export function print(io: CommandIO, json: boolean | undefined, value: unknown, text: () => string): void {
  io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text());
}

const FINAL_INSTANCE = new Set(['ACTIVE', 'ERROR', 'FAILED', 'SHUTDOWN', 'RESTART_REQUIRED']);
const FINAL_BACKUP = new Set(['COMPLETED', 'FAILED', 'DELETE_FAILED']);

/**
 * Polls an instance or backup until it reaches a final state (or disappears, for deletes), showing a
 * progress bar on a terminal. Returns the last view (undefined when it was deleted).
 */
export async function waitFor(client: TroveApiClient, io: CommandIO, kind: 'instance' | 'backup', id: string, opts: { gone?: boolean; intervalMs?: number; timeoutMs?: number } = {}): Promise<JsonObject | undefined> {
  const bar = io.stderr.isTTY ? new cliProgress.SingleBar({ format: `${kind} ${id.slice(0, 8)} [{bar}] {percentage}% {state}`, stream: io.stderr, hideCursor: true }, cliProgress.Presets.shades_classic) : undefined;
  bar?.start(100, 0, { state: '' });
  const end = Date.now() + (opts.timeoutMs ?? 3600_000);
  let last = '';
  let fake = 0;
  try {
    for (;;) {
      let view: JsonObject;
      try {
        view = (await client.get(`/${kind}s/${encodeURIComponent(id)}`))[kind] as JsonObject;
      } catch (err) {
        if (opts.gone && err instanceof ApiError && err.status === 404) {
          bar?.update(100, { state: 'deleted' });
          return undefined;
        }
        throw err;
      }
      const state = String(view.status);
      const p = view.progress as { percent?: number } | undefined;
      fake = Math.min(95, fake + 3);
      const pct = typeof p?.percent === 'number' ? p.percent : fake;
      if (bar) bar.update(pct, { state });
      else if (state !== last) io.stderr.write(`${kind} ${id}: ${state}\n`);
      last = state;
      if (!opts.gone && (kind === 'instance' ? FINAL_INSTANCE : FINAL_BACKUP).has(state)) {
        bar?.update(100, { state });
        return view;
      }
      if (Date.now() > end) throw new CouchtroveError(`${kind} ${id} is still ${state} after the wait`);
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 1000));
    }
  } finally {
    bar?.stop();
  }
}
