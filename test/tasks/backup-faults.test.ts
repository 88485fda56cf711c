// Backups under faults (issue 22, points 7 and 8), over the fakes: a failed backup's partial objects are
// removed by a durable backup.discard task, retried while the engine refuses (a writer whose lock still looks
// alive); a server killed mid-backup fails the task with the step it was at, and a backup its agent then
// completes is kept and recorded COMPLETED, never deleted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import { gate } from '../support/fake-agent.js';
import { discardTaskId } from '../../src/tasks/backups.js';
import type { AgentBackupRequest } from '../../src/agent/protocol.js';

async function activeInstance(p: TestPlane): Promise<string> {
  const r = await p.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'b', flavorRef: '1', volume: { size: 1 } } }) });
  assert.equal(r.statusCode, 200, r.body);
  const id = (JSON.parse(r.body) as { instance: { id: string } }).instance.id;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return id;
}

async function startBackup(p: TestPlane, id: string): Promise<string> {
  const r = await p.app.inject({ method: 'POST', url: '/v1.0/local/backups', headers: H, payload: JSON.stringify({ backup: { name: 'x', instance: id } }) });
  assert.equal(r.statusCode, 202, r.body);
  return (JSON.parse(r.body) as { backup: { id: string } }).backup.id;
}

test('the agent dies mid-backup: FAILED, and its partial objects removed though the engine first refuses', async () => {
  const p = await startPlane();
  try {
    const id = await activeInstance(p);
    const partial = new Set<string>();
    const agent = p.compute.agentOf(id);
    agent.backup = async (r: AgentBackupRequest) => {
      partial.add(r.id);
      throw new Error('fetch failed: other side closed');
    };
    let refusals = 2;
    p.repo.storedChecksum = async (_repo: string, bid: string) => {
      throw new Error(`backup ${bid} has no manifest${partial.has(bid) ? ' (incomplete)' : ''}`);
    };
    p.repo.delete = async (_repo: string, bid: string) => {
      if (refusals-- > 0) throw new Error(`backup ${bid} cannot be deleted: it is still being written (pid 1 on elsewhere, last heartbeat 3 s ago)`);
      partial.delete(bid);
    };
    const bid = await startBackup(p, id);
    const b = await until('FAILED', async () => p.store.get('backups', bid), (x) => x?.status === 'FAILED');
    assert.match(String(b?.fail_reason), /other side closed/);
    const t = await until('the discard task', async () => p.store.get('tasks', discardTaskId(bid)), (x) => x?.status === 'COMPLETED' || x?.status === 'FAILED');
    assert.equal(t?.status, 'COMPLETED', t?.error ?? '');
    assert.equal(partial.size, 0, 'the partial backup is gone from the repository');
    assert.equal(refusals, -1, 'tried again after each refusal');
    assert.equal((await p.store.get('backups', bid))?.status, 'FAILED');
  } finally {
    await p.close();
  }
});

test('the server killed mid-backup: FAILED naming the step it was at; the backup its agent then completes is kept, COMPLETED', async () => {
  const p = await startPlane();
  let p2: TestPlane | undefined;
  try {
    const id = await activeInstance(p);
    const agent = p.compute.agentOf(id);
    agent.backupGate = gate(); // the fake reports 400 of 1000 bytes while held
    const bid = await startBackup(p, id);
    const row = await p.store.get('backups', bid);
    await until('the step recorded', async () => (await p.store.get('tasks', row!.task_id!))?.step, (s) => s === 'SAVING 40%');
    await p.crash();
    p2 = await startPlane({ stateDir: p.stateDir, compute: p.compute, repo: p.repo });
    const failed = await until('FAILED', async () => p2!.store.get('backups', bid), (x) => x?.status === 'FAILED');
    assert.match(String(failed?.fail_reason), /interrupted: the control plane stopped while the task was at step SAVING 40%/);
    assert.equal(p.repo.backups.has(bid), false, 'not written yet');
    // The agent was never stopped: it completes the backup after the control plane gave up on it.
    agent.backupGate.open();
    const kept = await until('kept', async () => p2!.store.get('backups', bid), (x) => x?.status === 'COMPLETED');
    assert.equal(kept?.checksum, 'c'.repeat(64));
    assert.equal(kept?.fail_reason, null);
    assert.ok(p.repo.backups.has(bid), 'still in the repository');
    assert.equal((await p2.store.get('tasks', discardTaskId(bid)))?.status, 'COMPLETED');
  } finally {
    await p2?.close();
    await p.close();
    fs.rmSync(p.stateDir, { recursive: true, force: true });
  }
});
