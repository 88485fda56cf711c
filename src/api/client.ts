// The CLI's client for the couchtrove (Trove v1.0) API, and its output helpers: tables by default,
// JSON with --json, a progress bar while --wait follows a task.
import type { CommandIO } from '../cli/command.js';
import { WaitRenderer } from '../cli/progress.js';
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

  /** One page of a list, and the marker of the next one when the server says more exist. */
  async page(path: string, key: string, limit?: number, marker?: string): Promise<{ rows: JsonObject[]; next?: string }> {
    const q = new URLSearchParams();
    if (limit) q.set('limit', String(limit));
    if (marker) q.set('marker', marker);
    const first = await this.get(`${path}${q.size ? (path.includes('?') ? '&' : '?') + q.toString() : ''}`);
    const rows = [...((first[key] as JsonObject[] | undefined) ?? [])];
    const href = (first.links as Array<{ rel: string; href: string }> | undefined)?.find((l) => l.rel === 'next')?.href;
    const next = href ? new URL(href).searchParams.get('marker') ?? undefined : undefined;
    return next === undefined ? { rows } : { rows, next };
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

  /**
   * A resource's id and name from its id or its name. A name is looked up with the list filtered by name
   * (`?name=`), and only what no name matches is taken as an id: a name never shows up as a 404 in the
   * server's request log. An ambiguous name is refused with the candidates, never guessed.
   */
  async find(kind: 'instance' | 'backup' | 'configuration', ref: string): Promise<Named> {
    // An id-shaped ref is tried as an id first (one request), a name with the filtered list.
    if (UUID.test(ref)) {
      try {
        return named((await this.get(`/${kind}s/${encodeURIComponent(ref)}`))[kind] as JsonObject);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err;
      }
    }
    const rows = await this.list(`/${kind}s?name=${encodeURIComponent(ref)}`, `${kind}s`);
    if (rows.some((r) => r.name === ref)) return named(pick(kind, ref, rows, new ApiError(404, '')));
    if (UUID.test(ref)) throw new ApiError(404, `${kind[0]!.toUpperCase()}${kind.slice(1)} ${ref} could not be found. (HTTP 404)`);
    return named((await this.get(`/${kind}s/${encodeURIComponent(ref)}`))[kind] as JsonObject);
  }

  async resolve(kind: 'instance' | 'backup' | 'configuration', ref: string): Promise<string> {
    return (await this.find(kind, ref)).id;
  }

  /** An instance by id, or by name through the list. */
  instanceId(ref: string): Promise<string> {
    return this.resolve('instance', ref);
  }

  /** A schedule by id or name among those listed at `at` (an instance's or a cluster's schedules endpoint). */
  async findSchedule(at: string, ref: string): Promise<Named> {
    const rows = ((await this.get(at)).schedules ?? []) as JsonObject[];
    const byId = rows.find((s) => s.id === ref);
    return named(byId ?? pick('schedule', ref, rows, new ApiError(404, `Schedule ${ref} could not be found. (HTTP 404)`)));
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A resource as messages name it: the name the user knows, with the id. */
export interface Named {
  id: string;
  name: string;
}

function named(r: JsonObject): Named {
  return { id: String(r.id), name: String(r.name ?? r.id) };
}

/** "nightly (5f1c…)": the name, then the id; the id alone when there is no other name. */
export function label(r: Named): string {
  return r.name === r.id ? r.id : `${r.name} (${r.id})`;
}

function pick(kind: string, ref: string, rows: JsonObject[], notFound: Error): JsonObject {
  const matches = rows.filter((r) => r.name === ref);
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) {
    const list = matches.map((m) => `${String(m.id)}${m.created ? ` (created ${String(m.created)})` : ''}`).join(', ');
    throw new CouchtroveError(`more than one ${kind} is named ${ref}: use the id, one of ${list}`);
  }
  throw notFound;
}

// ---- output -----------------------------------------------------------------------------------

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') {
    if (Array.isArray(v)) return v.map((x) => (typeof x === 'object' && x !== null && 'name' in x ? String((x as JsonObject).name) : cell(x))).join(', ');
    const o = v as JsonObject;
    if ('type' in o && 'version' in o) return `${String(o.type)} ${String(o.version)}`;
    if ('id' in o) return 'name' in o && o.name !== o.id ? `${String(o.name)} (${String(o.id)})` : String(o.id);
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

/**
 * A key/value listing of one object. A nested object (archive, replication, task) gives one line per
 * field, its keys joined with dots (archive.window.from), never raw JSON; one that names a resource
 * (id and name) or a datastore (type and version) stays on one line.
 */
export function details(o: JsonObject): string {
  const rows: Array<[string, string]> = [];
  const walk = (prefix: string, x: JsonObject): void => {
    for (const [k, v] of Object.entries(x)) {
      if (k === 'links') continue;
      const key = prefix ? `${prefix}.${k}` : k;
      if (typeof v === 'object' && v !== null && !Array.isArray(v) && !oneLine(v as JsonObject) && Object.keys(v).length > 0) walk(key, v as JsonObject);
      else if (Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === 'object' && e !== null && 'name' in e && Object.keys(e).some((f) => !['id', 'name', 'links'].includes(f)))) {
        // Named entries with more to say (a replica's databases): a line each, "state running, lag 0".
        for (const e of v as JsonObject[]) rows.push([`${key}.${String(e.name)}`, Object.entries(e).filter(([f]) => f !== 'name' && f !== 'links').map(([f, x]) => `${f} ${cell(x)}`).join(', ')]);
      } else rows.push([key, cell(v)]);
    }
  };
  walk('', o);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join('\n') + '\n';
}

/** An object that reads as one value: a reference to a resource, or a datastore and its version. */
function oneLine(o: JsonObject): boolean {
  return ('type' in o && 'version' in o && Object.keys(o).length <= 3) || ('id' in o && Object.keys(o).every((k) => ['id', 'name', 'links'].includes(k)));
}

/** On stderr, so that stdout stays the listing: a page cut by --limit says how to get the next one. */
export function moreHint(io: CommandIO, next: string | undefined): void {
  if (next !== undefined) io.stderr.write(`more exist: use --marker ${next}\n`);
}

export function print(io: CommandIO, json: boolean | undefined, value: unknown, text: () => string): void {
  io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text());
}

const FINAL_INSTANCE = new Set(['ACTIVE', 'ERROR', 'FAILED', 'SHUTDOWN', 'RESTART_REQUIRED']);
const FINAL_BACKUP = new Set(['COMPLETED', 'FAILED', 'DELETE_FAILED']);

/**
 * Polls an instance or backup until it reaches a final state (or disappears, for deletes). On a
 * terminal one line is redrawn with the state and, for backups, the API's bytes, rate and ETA;
 * otherwise one line per state change. Returns the last view (undefined when it was deleted).
 */
export async function waitFor(client: TroveApiClient, io: CommandIO, kind: 'instance' | 'backup', id: string, opts: { gone?: boolean; intervalMs?: number; timeoutMs?: number } = {}): Promise<JsonObject | undefined> {
  const tty = io.stderr.isTTY === true;
  const render = new WaitRenderer(`${kind} ${tty ? id.slice(0, 8) : id}`);
  let drawn = false;
  const draw = (state: string, progress: unknown, final: boolean): void => {
    const r = render.update({ state, progress: bytesOf(progress) }, final);
    if (tty) {
      io.stderr.write(`\r${r.line}\x1b[K`);
      drawn = true;
    } else if (r.changed) io.stderr.write(`${kind} ${id}: ${state}\n`);
  };
  const end = Date.now() + (opts.timeoutMs ?? 3600_000);
  try {
    for (;;) {
      let view: JsonObject;
      try {
        view = (await client.get(`/${kind}s/${encodeURIComponent(id)}`))[kind] as JsonObject;
      } catch (err) {
        if (opts.gone && err instanceof ApiError && err.status === 404) {
          draw('deleted', undefined, true);
          return undefined;
        }
        throw err;
      }
      const state = String(view.status);
      const final = !opts.gone && (kind === 'instance' ? FINAL_INSTANCE : FINAL_BACKUP).has(state);
      draw(final || kind !== 'instance' ? state : `${state}${stepOf(view)}`, view.progress, final && (state === 'COMPLETED' || state === 'ACTIVE'));
      if (final) return view;
      if (Date.now() > end) throw new CouchtroveError(`${kind} ${id} is still ${state} after the wait`);
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 1000));
    }
  } finally {
    if (drawn) io.stderr.write('\n');
  }
}

/** " (restore)" from what the instance is doing: the agent's phase, else the task's last recorded step, else its kind. */
function stepOf(view: JsonObject): string {
  const phase = (view.progress as JsonObject | undefined)?.phase;
  const task = view.task as JsonObject | undefined;
  const what = typeof phase === 'string' ? phase : typeof task?.step === 'string' ? task.step : typeof task?.kind === 'string' ? task.kind : '';
  return what ? ` (${what})` : '';
}

function bytesOf(p: unknown): { bytesDone: number; bytesTotal: number } | undefined {
  if (typeof p !== 'object' || p === null) return undefined;
  const { bytes_done: bytesDone, bytes_total: bytesTotal } = p as { bytes_done?: unknown; bytes_total?: unknown };
  return typeof bytesDone === 'number' && typeof bytesTotal === 'number' ? { bytesDone, bytesTotal } : undefined;
}
