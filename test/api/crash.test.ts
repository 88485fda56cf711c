// The server is killed (SIGKILL) in the middle of a backup and in the middle of a create; after a
// restart on the same state every task ends in a true state: the interrupted backup, which its agent
// completed meanwhile, kept as COMPLETED (and deletable), the instance ACTIVE, the create resumed to ACTIVE;
// nothing stays BUILD/NEW.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openState } from '../../src/state/index.js';
import { sandbox, startServer, api, waitStatus, processesUnder, type J, type RealServer } from '../support/server.js';

const { root, stateDir, track } = sandbox('couchtrove-crash-');
let server: RealServer | undefined;

test('crash mid-backup and mid-create, then restart', { timeout: 300_000 }, async () => {
  server = track(await startServer(stateDir));
  let base = server.api;
  const c = await api(base, 'POST', '/instances', { instance: { name: 'crash', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'blobs' }], users: [{ name: 'bob', password: 'pw-bob-1', databases: [{ name: 'blobs' }] }] } });
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  // Some megabytes so that the backup takes a moment.
  const auth = `Basic ${Buffer.from('bob:pw-bob-1').toString('base64')}`;
  for (let i = 0; i < 6; i++) {
    const r = await fetch(`${inst.couchdb_url as string}/blobs/blob-${i}/data`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/octet-stream' }, body: randomBytes(4 << 20) });
    assert.ok(r.status === 201 || r.status === 200, `attachment ${r.status}`);
  }

  // Kill the server as soon as the backup runs.
  const b = await api(base, 'POST', '/backups', { backup: { name: 'crashy', instance: id } });
  assert.equal(b.status, 202);
  const bid = (b.json.backup as J).id as string;
  const atKill = await waitStatus(base, 'backups', bid, ['BUILDING', 'SAVING', 'COMPLETED'], 30_000);
  // The agent has begun writing it (BUILDING is set before the agent is asked).
  const written = path.join(stateDir, 'backups', 'backups', bid);
  for (let i = 0; i < 600 && !fs.existsSync(written); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(fs.existsSync(written), 'the agent began the backup');
  // ... and a create that is under way.
  const c2 = await api(base, 'POST', '/instances', { instance: { name: 'mid-create', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'x' }], users: [{ name: 'carol', password: 'pw-carol', databases: [{ name: 'x' }] }] } });
  assert.equal(c2.status, 200);
  const cid = (c2.json.instance as J).id as string;
  await server.kill('SIGKILL');
  // The agent outlives the server and completes the backup (issue 22: recovery used to delete it).
  const manifest = path.join(written, 'manifest.json');
  for (let i = 0; i < 600 && !fs.existsSync(manifest); i++) await new Promise((r) => setTimeout(r, 100));
  if (!fs.existsSync(manifest)) {
    const agentLog = path.join(stateDir, 'instances', id, 'agent.log');
    const tail = fs.existsSync(agentLog) ? fs.readFileSync(agentLog, 'utf8').split('\n').slice(-15).join('\n') : '(no agent log)';
    assert.fail(`the agent did not complete the backup while the server was down; repository: ${JSON.stringify(fs.readdirSync(path.join(stateDir, 'backups'), { recursive: true }))}; agent log:\n${tail}`);
  }

  server = track(await startServer(stateDir));
  base = server.api;
  // Recovery fails the task (it cannot be resumed), then finds the backup complete: kept and recorded.
  const backup = await waitStatus(base, 'backups', bid, ['COMPLETED'], 60_000);
  process.stderr.write(`interrupted backup ended ${String(backup.status)}: ${String(backup.fail_reason)}\n`);
  assert.equal(backup.status, 'COMPLETED', JSON.stringify(backup));
  assert.ok(fs.existsSync(manifest), 'still in the repository');
  process.stderr.write(`the backup was ${String(atKill.status)} when the server was killed\n`);
  if (atKill.status !== 'COMPLETED') assert.match(server.log(), new RegExp(`backup ${bid}: its agent completed it after its task failed: kept, COMPLETED`));
  const created = await waitStatus(base, 'instances', cid, ['ACTIVE', 'ERROR'], 120_000);
  assert.equal(created.status, 'ACTIVE', JSON.stringify(created));
  const first = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR', 'SHUTDOWN'], 60_000);
  assert.equal(first.status, 'ACTIVE', JSON.stringify(first));
  // carol was created by the resumed task and can log in.
  const s = await fetch(`${created.couchdb_url as string}/_session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'carol', password: 'pw-carol' }) });
  assert.equal(s.status, 200);

  // A new backup works once the agent is free again; the interrupted one can be deleted.
  let nb: J | undefined;
  for (let i = 0; i < 60 && !nb; i++) {
    const r = await api(base, 'POST', '/backups', { backup: { name: 'after', instance: id } });
    if (r.status === 202) nb = r.json.backup as J;
    else await new Promise((res) => setTimeout(res, 500));
  }
  assert.ok(nb, 'a backup after the restart');
  const after2 = await waitStatus(base, 'backups', nb.id as string, ['COMPLETED', 'FAILED']);
  if (after2.status === 'FAILED') {
    // The agent may still have been finishing the interrupted backup: one retry.
    await waitStatus(base, 'instances', id, ['ACTIVE']);
    const r = await api(base, 'POST', '/backups', { backup: { name: 'after-2', instance: id } });
    assert.equal((await waitStatus(base, 'backups', (r.json.backup as J).id as string, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');
  }
  assert.equal((await api(base, 'DELETE', `/backups/${bid}`)).status, 202);

  // Every task ended in a final state.
  for (const i of [id, cid]) assert.equal((await api(base, 'DELETE', `/instances/${i}`)).status, 202);
  const end = Date.now() + 60_000;
  while (Date.now() < end && ((await api(base, 'GET', '/instances')).json.instances as J[]).length > 0) await new Promise((r) => setTimeout(r, 250));
  await server.kill('SIGTERM');
  const store = await openState({ stateDir });
  try {
    const open = await store.find('tasks', { status: ['NEW', 'RUNNING'] });
    assert.deepEqual(open.map((t) => `${t.kind} ${t.status}`), []);
    assert.deepEqual(await store.find('instances'), []);
  } finally {
    await store.close();
  }
  assert.deepEqual(processesUnder(root), []);
});
