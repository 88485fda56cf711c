// Faults that heal by themselves (issue 22, point 7): an instance's agent killed with -9 in the middle of a
// backup. The backup ends FAILED and its partial objects leave the repository; the health monitor starts the
// agent again although the fault is the backup task's, and the instance is ACTIVE again; a new backup works.
// Real server and agent (the development engine, or real CouchDB with COUCHDB_HOME).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandbox, startServer, api, waitStatus, within, type J } from '../support/server.js';

const { stateDir, track } = sandbox('couchtrove-agent-kill-');
const HEALTH_S = 1;
const MiB = 1 << 20;

/** Files under dir (recursively) whose path names the backup. */
function objectsOf(dir: string, id: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.includes(id) && fs.statSync(path.join(dir, f)).isFile());
}


test('agent killed -9 mid-backup: the backup FAILED and its objects removed; the agent started again, the instance ACTIVE', { timeout: 600_000 }, async () => {
  const server = track(await startServer(stateDir, { COUCHTROVE_HEALTH_INTERVAL: String(HEALTH_S) }));
  const base = server.api;
  const repo = path.join(stateDir, 'backups');
  const c = await api(base, 'POST', '/instances', { instance: { name: 'k', flavorRef: '1', volume: { size: 2 }, databases: [{ name: 'blobs' }], users: [{ name: 'bob', password: 'pw-bob-1', databases: [{ name: 'blobs' }] }] } });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  // Incompressible megabytes, so that the backup is still writing when its first objects appear.
  const auth = `Basic ${Buffer.from('bob:pw-bob-1').toString('base64')}`;
  const blobs = 24;
  for (let i = 0; i < blobs; i++) {
    const r = await fetch(`${inst.couchdb_url as string}/blobs/blob-${i}/data`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/octet-stream' }, body: randomBytes(4 * MiB) });
    assert.ok(r.status === 201 || r.status === 200, `attachment ${r.status}`);
  }
  // The development engine can be too busy taking the bodies in to answer a health check (SHUTDOWN a moment).
  assert.equal((await waitStatus(base, 'instances', id, ['ACTIVE'], 120_000)).status, 'ACTIVE');
  const instanceDir = path.join(stateDir, 'instances', id);
  const agentPid = Number(fs.readFileSync(path.join(instanceDir, 'agent.pid'), 'utf8'));

  const b = await api(base, 'POST', '/backups', { backup: { name: 'killed', instance: id } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const bid = (b.json.backup as J).id as string;
  // Killed once the backup has put objects in the repository (its lock and data), not before.
  const seen = await within('the backup writing objects', 60_000, () => (objectsOf(repo, bid).length >= 2 ? objectsOf(repo, bid) : null));
  process.kill(agentPid, 'SIGKILL');
  process.stderr.write(`agent ${agentPid} killed with ${seen.length} objects of backup ${bid} written\n`);

  const failed = await waitStatus(base, 'backups', bid, ['FAILED', 'COMPLETED'], 60_000);
  assert.equal(failed.status, 'FAILED', 'the agent died before the backup completed');
  // The partial backup leaves the repository once it is known failed (its writer is gone).
  await within('the partial backup removed', 60_000, () => (objectsOf(repo, bid).length === 0 ? true : null));

  // The fault is the backup task's, not the monitor's: the agent is started again all the same.
  const back = await waitStatus(base, 'instances', id, ['ACTIVE'], 60_000 + 10 * HEALTH_S * 1000);
  assert.equal(back.status, 'ACTIVE', JSON.stringify(back));
  const newPid = Number(fs.readFileSync(path.join(instanceDir, 'agent.pid'), 'utf8'));
  assert.notEqual(newPid, agentPid, 'a new agent');
  assert.doesNotMatch(JSON.stringify(back.fault ?? null), /agent/, 'no fault about an agent that answers');
  const dbs = await api(base, 'GET', `/instances/${id}/databases`);
  assert.equal(dbs.status, 200);

  // The instance works: a new backup completes, and holds the data.
  const nb = await api(base, 'POST', '/backups', { backup: { name: 'after', instance: id } });
  assert.equal(nb.status, 202, JSON.stringify(nb.json));
  const done = await waitStatus(base, 'backups', (nb.json.backup as J).id as string, ['COMPLETED', 'FAILED'], 120_000);
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));

  assert.equal((await api(base, 'DELETE', `/instances/${id}`)).status, 202);
  const end = Date.now() + 60_000;
  while (Date.now() < end && (await api(base, 'GET', `/instances/${id}`)).status !== 404) await new Promise((r) => setTimeout(r, 250));
  assert.equal((await api(base, 'GET', `/instances/${id}`)).status, 404);
});
