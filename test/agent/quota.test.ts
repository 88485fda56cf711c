// The volume quota holds for client writes too: once the data directory reaches it, users' writes are
// refused with a clear error (admins can still delete and compact); after a resize they work again.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { adminOf, couch, Harness, http } from './helpers.js';

const MiB = 1024 * 1024;

describe(`volume quota (${couch.label})`, () => {
  const h = new Harness();
  before(async () => {
    await h.init('quota');
  });
  after(async () => h.cleanup());

  test('writes beyond the quota are refused, and allowed again after a resize', async () => {
    const { agent, settings, url } = await h.instance('q', { volumeBytes: 64 * MiB });
    await agent.createDatabase('docs');
    await agent.createUser({ name: 'writer', password: 'writer-pass-1', databases: ['docs'] });
    const user = { username: 'writer', password: 'writer-pass-1' };
    assert.equal((await agent.enforceQuota())?.full, false);

    // Shrink the quota to what is used now (as if the volume filled up) and enforce it.
    const { used } = await agent.volumeUsage();
    const small = { ...settings, volumeBytes: used + 1 };
    assert.equal((await agent.prepare(small)).state, 'RUNNING');
    h.track(agent);
    for (let i = 0; i < 20; i++) await http(url, 'PUT', `/docs/pad-${i}`, { auth: user, body: { pad: 'x'.repeat(64 * 1024) } });
    const state = await agent.enforceQuota();
    assert.equal(state?.full, true);
    const refused = await http(url, 'PUT', '/docs/one-more', { auth: user, body: { x: 1 } });
    assert.equal(refused.status, 403);
    assert.match(JSON.stringify(refused.body), /volume full: \d+ of \d+ bytes used/);
    await assert.rejects(agent.createDatabase('more'), /volume is full/);
    // A server admin can still remove data.
    const admin = await adminOf(settings);
    const doc = (await http(url, 'GET', '/docs/pad-0', { auth: admin })).body as { _rev: string };
    assert.equal((await http(url, 'DELETE', `/docs/pad-0?rev=${doc._rev}`, { auth: admin })).status, 200);

    // Resize: the guard goes at the next check and the user writes again.
    assert.equal((await agent.prepare({ ...settings, volumeBytes: 1024 * MiB })).state, 'RUNNING');
    h.track(agent);
    assert.equal((await agent.enforceQuota())?.full, false);
    assert.equal((await http(url, 'PUT', '/docs/one-more', { auth: user, body: { x: 1 } })).status, 201);
  });
});
