// Replication between two instances prepared by the agent (a real CouchDB with COUCHDB_HOME, else the
// development engine): follow, conflicts, new and deleted databases, _security, users, the read-only
// guard, status and lag, the primary stopped and restarted, detach, promote (the old primary follows).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminOf, couch, Harness, http, type TestInstance } from '../agent/helpers.js';
import { AgentClient } from '../../src/agent/client.js';
import { startAgentServer } from '../../src/agent/server.js';
import { FOLLOW_PREFIX, GUARD_ID, REPLICATION_USER } from '../../src/agent/replication.js';
import type { ReplicationStatus } from '../../src/agent/protocol.js';

type Auth = { username: string; password: string };

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(200);
  }
}

describe(`replication [${couch.label}]`, () => {
  const h = new Harness();
  let primary: TestInstance;
  let replica: TestInstance;
  let pAuth: Auth;
  let rAuth: Auth;
  const logs: string[] = [];

  const get = (inst: TestInstance, auth: Auth, p: string) => http(inst.url, 'GET', p, { auth });
  const put = (inst: TestInstance, auth: Auth, p: string, body: unknown) => http(inst.url, 'PUT', p, { auth, body });
  const docOn = (inst: TestInstance, auth: Auth, db: string, id: string) =>
    get(inst, auth, `/${db}/${encodeURIComponent(id)}`).then((r) => (r.status === 200 ? (r.body as Record<string, unknown>) : null));
  const ids = async (inst: TestInstance, auth: Auth, db: string) => {
    const r = await get(inst, auth, `/${db}/_all_docs`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body as { rows: { id: string }[] }).rows.map((x) => x.id).filter((id) => !id.startsWith('_design/'));
  };

  before(async () => {
    await h.init('replication');
    primary = await h.instance('primary');
    replica = await h.instance('replica');
    pAuth = await adminOf(primary.settings);
    rAuth = await adminOf(replica.settings);
    await primary.agent.createDatabase('alpha');
    await primary.agent.createUser({ name: 'alice', password: 'alice-secret-1', databases: ['alpha'] });
    for (let i = 0; i < 20; i++) assert.equal((await put(primary, pAuth, `/alpha/seed-${i}`, { i })).status, 201);
  });
  after(() => h.cleanup());

  test('follow: every database and _users replicate; writes on the primary show on the replica within seconds', async () => {
    const src = await primary.agent.replicationSource();
    assert.equal(src.username, REPLICATION_USER);
    const st = await replica.agent.followPrimary({ primaryUrl: primary.url, username: src.username, password: src.password, primaryName: 'primary-1' });
    assert.equal(st.role, 'replica');
    assert.deepEqual(st.databases.map((d) => d.database).sort(), ['_users', 'alpha']);
    assert.equal(JSON.stringify(st).includes(src.password), false, 'status never shows a password');
    // Deterministic _replicator documents, continuous, create_target, credentials in auth objects.
    const doc = (await get(replica, rAuth, `/_replicator/${FOLLOW_PREFIX}alpha`)).body as Record<string, unknown>;
    assert.equal(doc.continuous, true);
    assert.equal(doc.create_target, true);
    assert.equal((doc.source as { url: string }).url, `${primary.url}/alpha`);
    await waitFor('the seed documents on the replica', async () => (await ids(replica, rAuth, 'alpha')).length === 20);
    const t0 = Date.now();
    assert.equal((await put(primary, pAuth, '/alpha/live', { hello: 'world' })).status, 201);
    const live = await waitFor('a new write on the replica', () => docOn(replica, rAuth, 'alpha', 'live'), 15_000);
    assert.equal(live.hello, 'world');
    assert.ok(Date.now() - t0 < 15_000);
  });

  test('users follow and _security is copied: alice reads alpha on the replica', async () => {
    await waitFor('alice in the replica _users', () => docOn(replica, rAuth, '_users', 'org.couchdb.user:alice'));
    const sec = (await get(replica, rAuth, '/alpha/_security')).body as { members?: { names?: string[] } };
    assert.deepEqual(sec.members?.names, ['alice']);
    const alice = { username: 'alice', password: 'alice-secret-1' };
    await waitFor('alice can read alpha on the replica', async () => (await get(replica, alice, '/alpha/seed-1')).status === 200);
    // A later change of _security on the primary reaches the replica at the next sync.
    await primary.agent.createUser({ name: 'bob', password: 'bob-secret-1', databases: ['alpha'] });
    const r = await replica.agent.syncReplication();
    assert.ok(r.securityUpdated.includes('alpha'), JSON.stringify(r));
    const sec2 = (await get(replica, rAuth, '/alpha/_security')).body as { members?: { names?: string[] } };
    assert.deepEqual(sec2.members?.names?.sort(), ['alice', 'bob']);
  });

  test('conflicts written on the primary (new_edits:false) are preserved on the replica', async () => {
    const r = await http(primary.url, 'POST', '/alpha/_bulk_docs', {
      auth: pAuth,
      body: {
        new_edits: false,
        docs: [
          { _id: 'conflicted', _rev: '1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', side: 'a' },
          { _id: 'conflicted', _rev: '1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', side: 'b' },
        ],
      },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const doc = await waitFor('both revisions on the replica', async () => {
      const d = (await get(replica, rAuth, '/alpha/conflicted?conflicts=true')).body as { _rev?: string; _conflicts?: string[] };
      return d._conflicts?.length === 1 ? d : null;
    });
    assert.deepEqual([doc._rev, ...doc._conflicts!].sort(), ['1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb']);
  });

  test('the replica refuses client writes with a clear error, even from its admin; the guard stays off the primary', async () => {
    for (const auth of [rAuth, { username: 'alice', password: 'alice-secret-1' }]) {
      const w = await put(replica, auth, '/alpha/client-write', { x: 1 });
      assert.equal(w.status, 403, `${auth.username}: ${JSON.stringify(w.body)}`);
      assert.deepEqual(w.body, { error: 'forbidden', reason: 'read-only replica of primary-1: writes are refused' });
    }
    const u = await put(replica, rAuth, '/_users/org.couchdb.user:mallory', { name: 'mallory', password: 'x', roles: [], type: 'user' });
    assert.equal(u.status, 403, 'users are created on the primary only');
    assert.equal((await get(primary, pAuth, `/alpha/${GUARD_ID}`)).status, 404, 'the guard never reaches the primary');
    assert.equal((await docOn(replica, rAuth, 'alpha', 'client-write')), null);
  });

  test('a database created on the primary is followed; one deleted there is dropped', async () => {
    await primary.agent.createDatabase('beta');
    assert.equal((await put(primary, pAuth, '/beta/b1', { b: 1 })).status, 201);
    const r = await replica.agent.syncReplication();
    assert.deepEqual(r.added, ['beta']);
    await waitFor('beta/b1 on the replica', () => docOn(replica, rAuth, 'beta', 'b1'));
    assert.equal((await put(replica, rAuth, '/beta/b2', {})).status, 403, 'the new database is guarded too');
    await primary.agent.deleteDatabase('beta');
    const r2 = await replica.agent.syncReplication();
    assert.deepEqual(r2.removed, ['beta']);
    assert.equal((await get(replica, rAuth, '/beta')).status, 404);
    assert.equal((await get(replica, rAuth, `/_replicator/${FOLLOW_PREFIX}beta`)).status, 404);
  });

  test('status: per database state running and lag 0 once caught up; through the agent RPC as well', async () => {
    const st = await waitFor('lag 0 everywhere', async () => {
      const s = await replica.agent.replicationStatus();
      return s.databases.every((d) => d.state === 'running' && d.lag === 0) ? s : null;
    });
    assert.equal(st.readOnly, true);
    assert.equal(st.primaryUrl, primary.url);
    assert.deepEqual(st.errors, []);
    const token = 'replication-test-token-0123456789';
    const server = await startAgentServer({ host: '127.0.0.1', port: 0, token, agent: replica.agent, log: (l) => logs.push(l) });
    try {
      const client = new AgentClient(server.url, token);
      const viaRpc = await client.replicationStatus();
      assert.equal(viaRpc.role, 'replica');
      assert.deepEqual(viaRpc.databases.map((d) => d.database), st.databases.map((d) => d.database));
      const sync = await client.syncReplication();
      assert.deepEqual(sync.errors, []);
    } finally {
      await server.close();
    }
  });

  test('primary stopped: the replica serves reads and reports the error; restarted: replication resumes, nothing lost or doubled', async () => {
    for (let i = 0; i < 10; i++) assert.equal((await put(primary, pAuth, `/alpha/before-${i}`, { i })).status, 201);
    await waitFor('before-9 on the replica', () => docOn(replica, rAuth, 'alpha', 'before-9'));
    const stopped = await primary.agent.stop();
    assert.equal(stopped.state, 'SHUTDOWN');
    assert.ok(await docOn(replica, rAuth, 'alpha', 'before-3'), 'reads keep working');
    const st = await replica.agent.replicationStatus();
    assert.ok(st.errors.some((e) => /primary .* unreachable/.test(e)), JSON.stringify(st.errors));
    const sync = await replica.agent.syncReplication();
    assert.ok(sync.errors.length > 0, 'sync reports the unreachable primary');
    assert.equal((await get(replica, rAuth, `/_replicator/${FOLLOW_PREFIX}alpha`)).status, 200, 'nothing is removed while the primary is away');
    const crashing: ReplicationStatus = await waitFor(
      'a database reporting the replication error',
      async () => {
        const s = await replica.agent.replicationStatus();
        return s.databases.some((d) => d.database === 'alpha' && (d.state === 'crashing' || d.state === 'error' || d.state === 'pending') && d.error) ? s : null;
      },
      60_000,
    );
    assert.equal(crashing.databases.find((d) => d.database === 'alpha')?.lag, null, 'lag is unknown while the primary is away');

    const started = await primary.agent.start();
    assert.equal(started.state, 'RUNNING', started.reason);
    h.track(primary.agent);
    for (let i = 0; i < 10; i++) assert.equal((await put(primary, pAuth, `/alpha/after-${i}`, { i })).status, 201);
    await waitFor(
      'after-9 on the replica',
      async () => {
        await replica.agent.syncReplication();
        return docOn(replica, rAuth, 'alpha', 'after-9');
      },
      90_000,
    );
    const [p, r] = [await ids(primary, pAuth, 'alpha'), await ids(replica, rAuth, 'alpha')];
    assert.deepEqual(r, p, 'the same documents on both sides');
    const pInfo = (await get(primary, pAuth, '/alpha')).body as { doc_count: number };
    const rInfo = (await get(replica, rAuth, '/alpha')).body as { doc_count: number };
    // The replica has one more document: its guard.
    assert.equal(rInfo.doc_count, pInfo.doc_count + 1);
    const d = (await get(replica, rAuth, '/alpha/before-3?revs=true&conflicts=true')).body as { _revisions: { start: number }; _conflicts?: string[] };
    assert.equal(d._revisions.start, 1, 'not written twice');
    assert.equal(d._conflicts, undefined);
  });

  test('detach makes the replica standalone and writable; promote: the old primary follows it', async () => {
    const st = await replica.agent.detach();
    assert.equal(st.role, 'standalone');
    assert.deepEqual(st.databases, []);
    assert.equal(st.readOnly, false);
    assert.equal((await put(replica, rAuth, '/alpha/written-after-detach', { ok: true })).status, 201);
    const all = (await get(replica, rAuth, '/_replicator/_all_docs')).body as { rows: { id: string }[] };
    assert.equal(all.rows.filter((x) => x.id.startsWith(FOLLOW_PREFIX)).length, 0);
    // Nothing more arrives from the old primary.
    assert.equal((await put(primary, pAuth, '/alpha/after-detach-on-primary', {})).status, 201);
    await sleep(3000);
    assert.equal(await docOn(replica, rAuth, 'alpha', 'after-detach-on-primary'), null);

    // Promote: the detached replica is the new primary; the old primary follows it.
    const src = await replica.agent.replicationSource();
    const follow = await primary.agent.followPrimary({ primaryUrl: replica.url, username: src.username, password: src.password, primaryName: 'replica-1' });
    assert.equal(follow.role, 'replica');
    await waitFor('the new primary\'s write on the old primary', () => docOn(primary, pAuth, 'alpha', 'written-after-detach'));
    const w = await put(primary, pAuth, '/alpha/refused', {});
    assert.equal(w.status, 403);
    assert.match((w.body as { reason: string }).reason, /read-only replica of replica-1/);
    assert.equal((await put(replica, rAuth, '/alpha/new-primary-write', {})).status, 201);
    await waitFor('new-primary-write on the old primary', () => docOn(primary, pAuth, 'alpha', 'new-primary-write'));
    // The detached guard's deletion did not travel: the old primary's guard has one live revision and no conflicts.
    const g = (await get(primary, pAuth, `/alpha/${encodeURIComponent(GUARD_ID)}?conflicts=true`)).body as Record<string, unknown>;
    assert.ok(g.validate_doc_update, JSON.stringify(g));
    assert.equal(g._conflicts, undefined);
    const leaves = (await get(primary, pAuth, `/alpha/${encodeURIComponent(GUARD_ID)}?open_revs=all`)).body as { ok?: { _rev: string; _deleted?: boolean } }[];
    assert.deepEqual(leaves.map((l) => l.ok?._deleted ?? false), [false], `one live leaf, no replicated tombstone: ${JSON.stringify(leaves)}`);
    const back = await primary.agent.detach();
    assert.equal(back.role, 'standalone');
    assert.equal((await put(primary, pAuth, '/alpha/writable-again', {})).status, 201);
  });

  test('no secret in the agent logs of this suite', () => {
    const joined = logs.join('\n');
    assert.equal(/password|Basic /i.test(joined), false);
  });
});
