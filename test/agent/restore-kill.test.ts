// Faults that heal by themselves (issue 22, point 7): the agent killed with -9 in the middle of a `database
// restore`. The restore's scratch CouchDB outlives it and its copy in the live instance is partial (no
// _security yet). The next restore cleans first: scratch processes stopped, directory removed, the partial
// copy deleted, and the retry completes; the next agent's start does the same without a retry.
// Real CouchDB with COUCHDB_HOME (then the scratch's epmd too), else the development engine.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminOf, couch, Harness, http, type TestInstance } from './helpers.js';
import { processesUsing } from '../../src/compute/local.js';
import { within } from '../support/server.js';

const CHILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/restore-child.js');
const DOCS = 3000;


describe(`database restore killed with its agent [${couch.label}]`, () => {
  const h = new Harness();
  let src: TestInstance;
  let admin: { username: string; password: string };
  let storage = '';
  const children: ChildProcess[] = [];

  before(async () => {
    await h.init('restore-kill');
    storage = `file://${path.join(h.root, 'repo')}`;
    src = await h.instance('src');
    admin = await adminOf(src.settings);
    await src.agent.createDatabase('shop');
    // Enough documents that the copy is still running when the test kills it.
    for (let i = 0; i < DOCS; i += 500) {
      const docs = Array.from({ length: 500 }, (_, k) => ({ _id: `doc-${String(i + k).padStart(6, '0')}`, pad: 'x'.repeat(512) }));
      assert.equal((await http(src.url, 'POST', '/shop/_bulk_docs', { auth: admin, body: { docs } })).status, 201);
    }
    assert.equal((await http(src.url, 'PUT', '/shop/_security', { auth: admin, body: { admins: { names: [], roles: ['shop-admins'] }, members: { names: ['alice'], roles: [] } } })).status, 200);
    if (couch.kind !== 'real') await new Promise((r) => setTimeout(r, 1000));
    await src.agent.backup({ storage, id: 'shop-backup' });
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // The safety net: nothing started from a scratch directory outlives the test.
    for (const pid of processesUsing(h.root)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await h.cleanup();
  });

  const scratches = (): string[] => fs.readdirSync(src.settings.instanceDir).filter((n) => /^scratch-[0-9a-f]{8}$/.test(n));
  const markers = (): string[] => fs.readdirSync(src.settings.instanceDir).filter((n) => n.endsWith('.restore.json'));

  /**
   * Starts a restore into `as` in another agent process, copying document by document (where the files are
   * placed instead, see the last test), and kills it (-9) once the copy has begun; returns the scratch left.
   */
  async function killMidCopy(as: string): Promise<string> {
    const child = spawn(process.execPath, [CHILD, path.join(h.root, 'src', 'agent'), JSON.stringify({ database: 'shop', storage, backupId: 'shop-backup', as, copy: true })], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    // The copy has begun: the live database exists and the restore's marker says it is unverified.
    await within(`the copy into ${as} under way`, 120_000, async () => {
      if (child.exitCode !== null) throw new Error(`the restore ended before it could be killed (copy too fast?): ${out}`);
      return markers().length > 0 && (await http(src.url, 'GET', `/${as}`, { auth: admin })).status === 200 ? true : null;
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const left = scratches();
    assert.equal(left.length, 1, `one scratch left: ${left.join(', ')}`);
    const dir = path.join(src.settings.instanceDir, left[0]!);
    // The fault as seen: the scratch server outlives its agent, and the copy is partial.
    assert.ok(processesUsing(dir).length > 0, 'the scratch CouchDB still runs');
    const sec = (await http(src.url, 'GET', `/${as}/_security`, { auth: admin })).body as { members?: { names?: string[] } };
    const info = (await http(src.url, 'GET', `/${as}`, { auth: admin })).body as { doc_count: number };
    assert.ok(info.doc_count < DOCS || !sec.members?.names?.includes('alice'), `the copy is unverified (${info.doc_count} documents, _security ${JSON.stringify(sec)})`);
    return dir;
  }

  test('a retry cleans the killed restore (scratch server, directory, partial copy) and completes', { timeout: 600_000 }, async () => {
    const dir = await killMidCopy('shop_copy');
    const res = await src.agent.restoreDatabase({ database: 'shop', storage, backupId: 'shop-backup', as: 'shop_copy' });
    assert.equal(res.docCount, DOCS);
    assert.deepEqual(processesUsing(dir), [], 'nothing runs from the killed restore\'s scratch');
    assert.equal(fs.existsSync(dir), false, 'its directory is removed');
    assert.deepEqual(scratches(), [], 'no scratch left by the retry either');
    assert.deepEqual(fs.readdirSync(src.settings.instanceDir).filter((n) => n.startsWith('.removing-')), [], 'nor a directory being removed');
    assert.deepEqual(markers(), []);
    const info = (await http(src.url, 'GET', '/shop_copy', { auth: admin })).body as { doc_count: number };
    assert.equal(info.doc_count, DOCS);
    const sec = (await http(src.url, 'GET', '/shop_copy/_security', { auth: admin })).body as { members: { names: string[] } };
    assert.deepEqual(sec.members.names, ['alice']);
  });

  test('the next agent\'s start cleans it without a retry: the partial copy is deleted', { timeout: 600_000 }, async () => {
    const dir = await killMidCopy('shop_again');
    // What `agent serve` runs at start (src/cli/commands/agent/serve.ts), from a new agent on the directory.
    const next = await h.open('src');
    const r = await next.recoverRestores();
    assert.deepEqual(r.deleted, ['shop_again']);
    assert.deepEqual(r.kept, []);
    assert.deepEqual(processesUsing(dir), []);
    assert.equal(fs.existsSync(dir), false);
    assert.deepEqual(markers(), []);
    assert.equal((await http(src.url, 'GET', '/shop_again', { auth: admin })).status, 404, 'the unverified copy is gone');
    assert.equal((await http(src.url, 'GET', '/shop', { auth: admin })).status, 200, 'the live database is untouched');
  });

  test('a restore killed after placing shard files, before a shard map named them: the next start removes the files', async () => {
    // The state such a kill leaves (place-db.ts): files under the live data directory, the instance's, that no
    // database owns, and the marker naming them (the window is too short to hit with a kill).
    const dir = path.join(src.settings.dataDir, 'shards', '00000000-7fffffff');
    fs.mkdirSync(dir, { recursive: true });
    const files = [path.join(dir, 'shop_orphan.1700000000.couch'), path.join(dir, 'shop_orphan.1700000001.couch')];
    for (const f of files) {
      fs.writeFileSync(f, 'x'.repeat(4096), { mode: 0o644 });
      if (src.settings.runAs) fs.chownSync(f, src.settings.runAs.uid, src.settings.runAs.gid);
    }
    fs.writeFileSync(path.join(src.settings.instanceDir, 'scratch-0badf00d.restore.json'), JSON.stringify({ database: 'shop_orphan', started: new Date().toISOString(), files }), { mode: 0o600 });
    const r = await (await h.open('src')).recoverRestores();
    assert.deepEqual(r.deleted, ['shop_orphan']);
    assert.deepEqual(files.filter((f) => fs.existsSync(f)), [], 'the placed files are removed');
    assert.deepEqual(markers(), []);
    assert.equal((await http(src.url, 'GET', '/shop', { auth: admin })).status, 200, 'the live database is untouched');
  });
});
