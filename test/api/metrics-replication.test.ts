// Volume and replication gauges of /metrics (src/tasks/usage.ts, docs/operations.md) with a real server,
// real agents and the development engine (or Apache CouchDB with COUCHDB_HOME): a primary and its replica
// get volume gauges, the replica's lag reaches 0 and it is up; its primary's CouchDB stopped, it is not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../../src/agent/client.js';
import { sandbox, startServer, api, waitStatus, basicAuth, type J, type RealServer } from '../support/server.js';

const { stateDir, track } = sandbox('couchtrove-metrics-repl-');
const GiB = 1024 ** 3;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The value of one series in a Prometheus text exposition, or undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Scrapes until ok(text) holds, within ms; the error shows the last scrape's couchtrove_ lines. */
async function scrapeUntil(server: RealServer, what: string, ok: (m: string) => boolean, ms: number): Promise<string> {
  const end = Date.now() + ms;
  let m = '';
  for (;;) {
    m = await (await fetch(`${server.url}/metrics`)).text();
    if (ok(m)) return m;
    if (Date.now() > end) throw new Error(`${what} not within ${ms} ms:\n${m.split('\n').filter((l) => /^couchtrove_(volume|replication)/.test(l)).join('\n')}`);
    await sleep(250);
  }
}

/** The instance's agent, for what the API does not offer (stopping CouchDB to simulate a failure). */
function agentOf(id: string): AgentClient {
  const dir = path.join(stateDir, 'instances', id);
  const placement = JSON.parse(fs.readFileSync(path.join(dir, 'placement.json'), 'utf8')) as { agentPort: number };
  return new AgentClient(`http://127.0.0.1:${placement.agentPort}`, fs.readFileSync(path.join(dir, 'agent.token'), 'utf8').trim());
}

test('metrics: volume use of a primary and its replica, replica lag and up; down once the primary stops', { timeout: 120_000 }, async () => {
  // A 1 s health interval: the gauges follow the agents within a second or two.
  const server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: '1' }));
  const base = server.api;
  const create = async (name: string, extra: J): Promise<string> => {
    const r = await api(base, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, ...extra } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return (r.json.instance as J).id as string;
  };
  const active = async (id: string): Promise<J> => {
    await sleep(300);
    const i = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR', 'SHUTDOWN', 'FAILED']);
    assert.equal(i.status, 'ACTIVE', JSON.stringify(i));
    return i;
  };

  const p = await create('mr-primary', { databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 'alice-pw', databases: [{ name: 'orders' }] }] });
  const P = await active(p);
  const r = await create('mr-replica', { replica_of: p });
  await active(r);
  for (let i = 0; i < 20; i++) {
    const w = await fetch(`${P.couchdb_url as string}/orders/o-${i}`, {
      method: 'PUT', headers: { authorization: basicAuth('alice', 'alice-pw'), 'content-type': 'application/json' }, body: JSON.stringify({ n: i }),
    });
    assert.equal(w.status, 201);
  }

  const lag = `couchtrove_replication_lag_documents{instance_id="${r}",database="orders"}`;
  const up = `couchtrove_replication_up{instance_id="${r}"}`;
  const m = await scrapeUntil(server, 'volume gauges for both, replica caught up and up', (t) =>
    [p, r].every((id) => (sample(t, `couchtrove_volume_used_bytes{instance_id="${id}"}`) ?? 0) > 0) && sample(t, lag) === 0 && sample(t, up) === 1, 30_000);
  for (const id of [p, r]) assert.equal(sample(m, `couchtrove_volume_size_bytes{instance_id="${id}"}`), GiB);
  // The primary is no replica: no replication series of its own.
  assert.equal(sample(m, `couchtrove_replication_up{instance_id="${p}"}`), undefined);
  assert.match(m, /^# HELP couchtrove_replication_up .*health monitor/m);

  // The primary's CouchDB stopped: the replica reports its source unreachable within a few health rounds.
  const t0 = Date.now();
  await agentOf(p).stop();
  const down = await scrapeUntil(server, 'replication_up 0', (t) => sample(t, up) === 0, 10_000);
  console.log(`replication_up went to 0 ${((Date.now() - t0) / 1000).toFixed(1)} s after the primary's CouchDB was told to stop`);
  // The replica's own volume is still read; the stopped primary's is unknown, its size still known.
  assert.ok((sample(down, `couchtrove_volume_used_bytes{instance_id="${r}"}`) ?? 0) > 0);
  assert.equal(sample(down, `couchtrove_volume_size_bytes{instance_id="${p}"}`), GiB);
  const gone = await scrapeUntil(server, 'the stopped primary\'s volume use absent', (t) => sample(t, `couchtrove_volume_used_bytes{instance_id="${p}"}`) === undefined, 10_000);
  assert.equal(sample(gone, up), 0);
});
