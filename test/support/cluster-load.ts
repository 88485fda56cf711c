// Load on a CouchDB cluster for the survival test and the catch-up bench (test/cluster/survive.test.ts,
// bench/cluster-catchup.ts): a writer writing new documents through a list of members, what a member's
// own shard files hold, and a member's CouchDB process.
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { processesOf } from '../../src/compute/local.js';
import type { J } from './server.js';

export type Couch = (url: string, method: string, p: string, body?: unknown) => Promise<{ status: number; json: J }>;

/** Requests with this Authorization header; every request bounded by 30 s. */
export function couchAs(auth: string): Couch {
  return async (url, method, p, body) => {
    const r = await fetch(`${url}${p}`, {
      method,
      headers: { authorization: auth, 'content-type': 'application/json' },
      signal: AbortSignal.timeout(30_000),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: r.status, json: (await r.json().catch(() => ({}))) as J };
  };
}

export interface WriterOptions {
  db: string;
  /** Writes per second in all, at most. */
  rate: number;
  /** Writers at once. */
  loops: number;
  /** A write that gets no HTTP answer at all (the member is down) goes to the next member. */
  failover: boolean;
  /** Every tenth document read back through the next member. */
  readBack: boolean;
}

export interface WriterReport {
  acknowledged: number;
  failures: string[];
  /** Writes sent on to the next member after a member did not answer (failover only). */
  failovers: number;
  perSecond: number;
}

/**
 * `loops` writers, each PUTting new documents `<prefix>-<n>` through `urls` in turn. A write not answered
 * 201/202, or a read back not answered 200, is a failure; acknowledged ids are added to `written`.
 */
export function startWriter(couch: Couch, prefix: string, urls: string[], opts: WriterOptions, written: Set<string>): { stop: () => Promise<WriterReport> } {
  let running = true;
  const failures: string[] = [];
  let acknowledged = 0;
  let failovers = 0;
  let seq = 0;
  const t0 = Date.now();
  const interval = (opts.loops * 1000) / opts.rate;
  const doc = (id: string): string => `/${opts.db}/${id}`;
  const loop = async (k: number): Promise<void> => {
    for (let n = k; running; n += opts.loops) {
      const started = Date.now();
      const id = `${prefix}-${String(seq++).padStart(7, '0')}`;
      let status = 0;
      let last = '';
      for (let attempt = 0; attempt < (opts.failover ? urls.length * 4 : 1) && status === 0; attempt++) {
        const url = urls[(n + attempt) % urls.length]!;
        try {
          status = (await couch(url, 'PUT', doc(id), { prefix, at: Date.now() })).status;
          // An earlier attempt that reached CouchDB but lost its answer: the document is there.
          if (status === 409 && attempt > 0 && (await couch(url, 'GET', doc(id))).status === 200) status = 201;
        } catch (err) {
          const cause = (err as { cause?: unknown }).cause;
          last = `${url}: ${cause ? String(cause) : (err as Error).message}`;
          if (opts.failover) {
            failovers++;
            await sleep(50, undefined, { ref: false });
          }
        }
      }
      const ok = status === 201 || status === 202;
      if (ok) {
        acknowledged++;
        written.add(id);
      } else failures.push(`${id}: ${status || last}`);
      if (ok && opts.readBack && n % 10 === 0) {
        const other = urls[(n + 1) % urls.length]!;
        try {
          const r = await couch(other, 'GET', doc(id));
          if (r.status !== 200) failures.push(`read ${id} through ${other}: ${r.status}`);
        } catch (err) {
          failures.push(`read ${id} through ${other}: ${(err as Error).message}`);
        }
      }
      const wait = interval - (Date.now() - started);
      // Unref'd: a writer a failed test never stopped does not keep its test file running for ever.
      if (wait > 0) await sleep(wait, undefined, { ref: false });
    }
  };
  const loops = Array.from({ length: opts.loops }, (_, k) => loop(k));
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return { acknowledged, failures, failovers, perSecond: acknowledged / ((Date.now() - t0) / 1000) };
    },
  };
}

/** The document ids in one member's own shard files of `db` (node-local reads: no other node answers them). */
export async function localIds(couch: Couch, url: string, db: string): Promise<{ shards: string[]; ids: Set<string> }> {
  const files = (await couch(url, 'GET', '/_node/_local/_all_dbs')).json as unknown as string[];
  const shards = files.filter((d) => d.startsWith('shards/') && d.slice(d.indexOf('/', 7) + 1, d.lastIndexOf('.')) === db);
  const ids = new Set<string>();
  for (const s of shards) {
    const r = await couch(url, 'GET', `/_node/_local/${encodeURIComponent(s)}/_all_docs`);
    if (r.status !== 200) throw new Error(`${url}: GET /_node/_local/${s}/_all_docs answered ${r.status}: ${JSON.stringify(r.json)}`);
    for (const row of r.json.rows as J[]) ids.add(row.id as string);
  }
  return { shards, ids };
}

/** The pid of the Erlang VM (CouchDB) running as this member's uid, if any. */
export function beamOf(uid: number): number | null {
  return (
    processesOf(uid).find((p) => {
      try {
        return /beam/.test(fs.readFileSync(`/proc/${p}/comm`, 'utf8'));
      } catch {
        return false;
      }
    }) ?? null
  );
}
