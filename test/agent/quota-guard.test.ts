// The quota guard's own logic (src/agent/quota.ts) over a recording stand-in for CouchDB: it asks CouchDB
// nothing while the volume has room and no guard is up, never probes for the guard (no GET of it, so no
// 404 in the tenant's log), guards new databases while full, and removes guards once usage falls, also
// those an earlier agent process (or a restore) left. test/agent/quota.test.ts runs it on real CouchDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuotaGuard, QUOTA_GUARD_ID } from '../../src/agent/quota.js';
import type { CouchClient } from '../../src/agent/couchdb.js';

/** A CouchDB of databases, each holding the guard or not; every call is recorded. */
function fakeCouch(dbs: string[], guarded: string[] = []): { couch: CouchClient; calls: string[]; dbs: string[]; guards: Set<string> } {
  const calls: string[] = [];
  const guards = new Set(guarded);
  const couch = {
    allDbs: async () => (calls.push('allDbs'), ['_users', ...dbs]),
    putDoc: async (db: string, doc: { _id: string }) => {
      calls.push(`put ${db}/${doc._id}`);
      if (guards.has(db)) return 'conflict';
      guards.add(db);
      return 'ok';
    },
    allDocs: async (db: string, q: Record<string, unknown>) => {
      calls.push(`allDocs ${db} ${String(q.key)}`);
      return guards.has(db) ? [{ id: QUOTA_GUARD_ID, doc: { _rev: '1-a' } }] : [];
    },
    deleteDoc: async (db: string, id: string) => {
      calls.push(`delete ${db}/${id}`);
      guards.delete(db);
      return 'ok';
    },
    getDoc: async () => assert.fail('the guard is never probed for'),
  } as unknown as CouchClient;
  return { couch, calls, dbs, guards };
}

test('nothing is asked while the volume has room; full: the guard on every database, new ones included; room again: removed once', async () => {
  const f = fakeCouch(['a', 'b']);
  const g = new QuotaGuard();
  assert.deepEqual(await g.enforce(f.couch, 50, 100, false), { used: 50, quota: 100, full: false, guarded: false });
  assert.deepEqual(f.calls, [], 'no request while there is room');

  assert.equal((await g.enforce(f.couch, 100, 100, false)).guarded, true);
  assert.deepEqual(f.calls, ['allDbs', `put a/${QUOTA_GUARD_ID}`, `put b/${QUOTA_GUARD_ID}`]);
  f.calls.length = 0;
  f.dbs.push('c');
  await g.enforce(f.couch, 101, 100, true);
  assert.deepEqual(f.calls, ['allDbs', `put c/${QUOTA_GUARD_ID}`], 'only the new database is guarded');

  f.calls.length = 0;
  assert.equal((await g.enforce(f.couch, 97, 100, true)).guarded, true, 'between 95 % and the quota the guards stay');
  assert.deepEqual(f.calls, []);
  assert.equal((await g.enforce(f.couch, 90, 100, true)).guarded, false);
  assert.deepEqual([...f.guards], []);
  assert.ok((f.calls as string[]).every((c) => !c.startsWith('put')), 'removing puts nothing');
  f.calls.length = 0;
  await g.enforce(f.couch, 90, 100, false);
  assert.deepEqual(f.calls, [], 'nothing once they are gone');
});

test('a new agent process removes the guards its state file says may be up, and asks nothing when it says none', async () => {
  const left = fakeCouch(['a', 'b'], ['a']);
  assert.equal((await new QuotaGuard().enforce(left.couch, 10, 100, true)).guarded, false);
  assert.deepEqual([...left.guards], []);
  assert.ok(left.calls.includes(`delete a/${QUOTA_GUARD_ID}`));

  const clean = fakeCouch(['a'], ['a']);
  await new QuotaGuard().enforce(clean.couch, 10, 100, false);
  assert.deepEqual(clean.calls, []);
  // Full after a start: a guard an earlier process left is a conflict, and counts as up.
  await new QuotaGuard().enforce(clean.couch, 100, 100, false);
  assert.deepEqual([...clean.guards], ['a']);
});
