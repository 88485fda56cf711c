import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forEachBackend } from '../support/backends.js';
import { openState, MarkerNotFoundError, type StateStore, type Row } from '../../src/state/index.js';

function instance(id: string, created: string, extra: Partial<Row<'instances'>> = {}): Row<'instances'> {
  return {
    id, project_id: 'p1', name: `n-${id}`, status: 'ACTIVE', flavor_id: '1', volume_size: 1, datastore: 'couchdb',
    datastore_version: '3.5', configuration_id: null, replica_of: null, host: '127.0.0.1', port: 5984, agent_port: null,
    agent_pid: null, epmd_port: null, instance_dir: null, engine: 'devengine', fault: null, task_id: null, created, updated: created, ...extra,
  };
}

forEachBackend('state store', (backend) => {
  let store: StateStore;
  test('open runs migrations, twice is harmless', async () => {
    const opts = await backend.options();
    store = await openState(opts);
    assert.equal(store.kind, backend.name);
    await store.close();
    store = await openState(opts); // migrations already applied
  });

  test('insert, get, update with expect (compare-and-set), remove', async () => {
    await store.insert('instances', instance('a', '2024-01-01T00:00:00.000Z'));
    const got = await store.get('instances', 'a');
    assert.equal(got?.name, 'n-a');
    assert.equal(got?.port, 5984);
    assert.equal(got?.configuration_id, null);
    assert.equal(await store.get('instances', 'nope'), undefined);
    // Claim: only one of two concurrent claims wins.
    const claims = await Promise.all([
      store.update('instances', 'a', { task_id: 't1', status: 'BACKUP' }, { task_id: null }),
      store.update('instances', 'a', { task_id: 't2', status: 'REBOOT' }, { task_id: null }),
    ]);
    assert.deepEqual(claims.sort(), [false, true]);
    assert.equal(await store.update('instances', 'a', { status: 'ACTIVE' }, { status: ['BUILD', 'ERROR'] }), false);
    assert.equal(await store.update('instances', 'a', { status: 'ACTIVE', task_id: null }, { status: ['BACKUP', 'REBOOT'] }), true);
    assert.equal((await store.get('instances', 'a'))?.task_id, null);
    assert.equal(await store.remove('instances', 'a', { project_id: 'other' }), false);
    assert.equal(await store.remove('instances', 'a'), true);
    assert.equal(await store.get('instances', 'a'), undefined);
  });

  test('find filters and pages in created order with a marker', async () => {
    for (let i = 0; i < 7; i++) {
      await store.insert('instances', instance(`i${6 - i}`, `2024-01-0${1 + Math.floor(i / 2)}T00:00:00.000Z`, { project_id: i % 3 === 0 ? 'p2' : 'p1' }));
    }
    const all = await store.find('instances', { project_id: 'p1' });
    assert.equal(all.length, 4);
    const sorted = [...all].sort((x, y) => (x.created + x.id).localeCompare(y.created + y.id));
    assert.deepEqual(all.map((r) => r.id), sorted.map((r) => r.id));
    const p1 = await store.find('instances', { project_id: 'p1' }, { limit: 3 });
    const p2 = await store.find('instances', { project_id: 'p1' }, { limit: 3, marker: p1[2]!.id });
    assert.deepEqual([...p1, ...p2].map((r) => r.id), all.map((r) => r.id));
    await assert.rejects(store.find('instances', { project_id: 'p2' }, { marker: p1[0]!.id }), MarkerNotFoundError);
    assert.equal((await store.find('instances', { status: [] })).length, 0);
    assert.equal((await store.find('instances', { configuration_id: null })).length, 7);
  });

  test('big numbers, odd text and upsert', async () => {
    const b: Row<'backups'> = {
      id: 'b1', project_id: 'p1', instance_id: null, name: "odd 'name' \"quoted\" ☃ \\ ; DROP TABLE backups; --", description: null,
      status: 'NEW', parent_id: null, location: null, size_bytes: 5 * 1024 ** 4, data_bytes: 0, files: 0, checksum: null,
      datastore: 'couchdb', datastore_version: '3.5', progress: null, fail_reason: null, task_id: null, verified_at: null, verify_result: null, cluster_id: null, cluster: null,
      created: '2024-01-01T00:00:00.000Z', updated: '2024-01-01T00:00:00.000Z',
    };
    await store.insert('backups', b);
    assert.deepEqual(await store.get('backups', 'b1'), b);
    await store.upsert('flavors', { id: '1', name: 'small', ram: 1024, vcpus: 1 });
    await store.upsert('flavors', { id: '1', name: 'small2', ram: 2048, vcpus: 2 });
    assert.deepEqual(await store.find('flavors'), [{ id: '1', name: 'small2', ram: 2048, vcpus: 2 }]);
    await store.insert('configurations', {
      id: 'c1', project_id: 'p1', name: 'c', description: null, values: '{"a/b":"1"}', datastore: 'couchdb', datastore_version: '3.5',
      created: '2024-01-01T00:00:00.000Z', updated: '2024-01-01T00:00:00.000Z',
    });
    assert.equal((await store.get('configurations', 'c1'))?.values, '{"a/b":"1"}');
  });

  test('close', async () => {
    await store.close();
  });
});
