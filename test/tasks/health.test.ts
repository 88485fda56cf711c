// The health monitor's rules on faults it did not write (issue 22, point 7), over the fakes: a dead agent is
// started again whatever the instance's fault says; an ERROR or SHUTDOWN a task's end left follows the agent
// again, back to ACTIVE with the task's own reason once the agent answers RUNNING; a failed create or delete
// stays ERROR. Rounds are run here, not on the monitor's timer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import type { Placement } from '../../src/compute/driver.js';
import type { Row } from '../../src/state/index.js';

async function activeInstance(p: TestPlane): Promise<string> {
  const r = await p.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'h', flavorRef: '1', volume: { size: 1 } } }) });
  assert.equal(r.statusCode, 200, r.body);
  const id = (JSON.parse(r.body) as { instance: { id: string } }).instance.id;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return id;
}

test('faults a task left: the agent started again whatever they say; ACTIVE again with the task\'s reason; a failed create stays ERROR', async () => {
  const p = await startPlane();
  try {
    const id = await activeInstance(p);
    const agent = p.compute.agentOf(id);
    const set = async (status: Row<'instances'>['status'], fault: string | null): Promise<void> => {
      assert.ok(await p.store.update('instances', id, { status, fault }));
    };
    const row = async (): Promise<Row<'instances'>> => (await p.store.get('instances', id))!;

    // The agent killed mid-backup: the backup task's release wrote ERROR with what the agent said then.
    const starts: string[] = [];
    let dead = true;
    const ensure = p.compute.ensureAgent.bind(p.compute);
    p.compute.ensureAgent = async (inst: Row<'instances'>): Promise<Placement> => {
      starts.push(inst.id);
      dead = false;
      return ensure(inst);
    };
    const status = agent.status.bind(agent);
    agent.status = async () => {
      if (dead) throw new Error('connect ECONNREFUSED 127.0.0.1:20001');
      return status();
    };
    await set('ERROR', 'agent: fetch failed');
    await p.plane.health.checkAll();
    assert.deepEqual(starts, [id], 'the dead agent is started again although the fault is not the monitor\'s');
    assert.equal((await row()).fault, 'agent: fetch failed', 'the task\'s fault is kept while the agent starts');
    await until('ACTIVE again', async () => {
      await p.plane.health.checkAll();
      return row();
    }, (i) => i.status === 'ACTIVE');
    assert.equal((await row()).fault, null, 'nothing but the agent\'s state was said: no fault left');

    // A failed restart whose agent then answered SHUTDOWN: back to ACTIVE with the task's own reason.
    await set('SHUTDOWN', 'restart failed: CouchDB did not come back; agent: CouchDB exited with 1');
    await p.plane.health.checkAll();
    assert.deepEqual({ status: (await row()).status, fault: (await row()).fault }, { status: 'ACTIVE', fault: 'restart failed: CouchDB did not come back' });
    // ... and kept there: the monitor clears only what it wrote.
    await p.plane.health.checkAll();
    assert.equal((await row()).fault, 'restart failed: CouchDB did not come back');

    // The agent answers SHUTDOWN (its supervisor restarts CouchDB): a task's SHUTDOWN or ERROR, and its
    // reason, wait for it.
    agent.state = 'SHUTDOWN';
    await set('ERROR', 'configure failed: bad value; agent: CouchDB exited with 1');
    await p.plane.health.checkAll();
    assert.deepEqual({ status: (await row()).status, fault: (await row()).fault }, { status: 'ERROR', fault: 'configure failed: bad value; agent: CouchDB exited with 1' });
    await set('SHUTDOWN', 'agent: CouchDB is not running');
    await p.plane.health.checkAll();
    assert.equal((await row()).status, 'SHUTDOWN');
    agent.state = 'RUNNING';
    await p.plane.health.checkAll();
    assert.deepEqual({ status: (await row()).status, fault: (await row()).fault }, { status: 'ACTIVE', fault: null });

    // A failed create is the task's verdict: it stays ERROR though the agent runs; a dead agent is still started.
    await set('ERROR', 'create failed: the password of user u was lost in the interruption');
    await p.plane.health.checkAll();
    assert.equal((await row()).status, 'ERROR');
    dead = true;
    starts.length = 0;
    await p.plane.health.checkAll();
    assert.deepEqual(starts, [id]);
    assert.deepEqual({ status: (await row()).status, fault: (await row()).fault }, { status: 'ERROR', fault: 'create failed: the password of user u was lost in the interruption' });

    // An ACTIVE instance whose agent dies: ERROR with the monitor's own fault, then ACTIVE without it.
    await set('ACTIVE', null);
    dead = true;
    await p.plane.health.checkAll();
    assert.match(String((await row()).fault), /^health check: the agent does not answer/);
    await until('ACTIVE again', async () => {
      await p.plane.health.checkAll();
      return row();
    }, (i) => i.status === 'ACTIVE' && i.fault === null);
  } finally {
    await p.close();
  }
});
